"""What each column means: the descriptions ``dagster/column_schema`` shows in the UI.

Keyed by column name where a name means the same in every table, by ``table.column`` where it does not.
The derived tables describe their own columns in their SQL file's ``config(columns=...)``, next to the SQL
that computes them. ``tests/test_schema.py`` fails when a column of an asset's table has no description.
"""

_OBSERVATION = "the observation (span, generation, event, ...)"

# Tables whose name, version, input, output, metadata and id are the trace's or the score's own.
_RECORD_OF = {
    "traces_staging": "trace",
    "traces_current": "trace",
    "scores_staging": "score",
    "scores": "score",
}

DESCRIPTIONS: dict[str, str] = {
    **{
        f"{table}.{column}": f"{column} of the {record}"
        for table, record in _RECORD_OF.items()
        for column in ("name", "version", "input", "output", "metadata", "id")
    },
    "traces_current.name": "name of the trace (latest non-empty value)",
    "scores.id": "id of the score; one current row per (project_id, id)",
    # identity and trace-level attributes
    "project_id": "Langfuse project the record belongs to (from the object key or the payload)",
    "trace_id": "trace the record belongs to",
    "id": f"id of {_OBSERVATION}; one current row per (project_id, id)",
    "parent_observation_id": "the parent observation's id; empty for a trace's root",
    "type": "observation type: SPAN, GENERATION, EVENT, AGENT, TOOL, CHAIN, RETRIEVER, EMBEDDING, ...",
    "name": f"name of {_OBSERVATION}",
    "start_time": "when the observation started (its event time when the payload has none)",
    "end_time": "when the observation ended; NULL while unknown",
    "completion_start_time": "when a generation's first token arrived (time to first token)",
    "level": "DEBUG, DEFAULT, WARNING or ERROR",
    "status_message": "status or error message the instrumentation reported",
    "version": "application version the instrumentation reported for the observation",
    "environment": "deployment environment (production, staging, ...); 'default' when none was sent",
    "input": "input as sent (JSON or text)",
    "output": "output as sent (JSON or text)",
    "metadata": "metadata as key → value (nested values as JSON text)",
    "provided_model_name": "model name as the instrumentation sent it",
    "model_parameters": "model parameters as JSON (temperature, max_tokens, ...)",
    "usage_details": "token and unit usage per kind (input, output, total, cache_read, ...)",
    "cost_details": "cost per usage kind in USD: as sent, else calculated from the model price list",
    "total_cost": "total cost in USD: as sent, else the sum of cost_details; NULL when unknown",
    "provided_cost_details": "cost per usage kind exactly as sent (empty when the cost was calculated)",
    "prompt_name": "name of the managed prompt the generation used",
    "prompt_version": "version of that prompt",
    "trace_name": "name of the observation's trace",
    "trace_version": "version of the observation's trace",
    "trace_metadata": "metadata of the observation's trace",
    "user_id": "user of the trace",
    "session_id": "session the trace belongs to",
    "tags": "tags of the trace",
    "release": "release of the application that produced the trace",
    "public": "whether the trace is shared publicly",
    "bookmarked": "whether the trace is bookmarked",
    # versions and bookkeeping
    "event_ts": "event time of this version (the batch event's timestamp): later versions win",
    "is_update": "true for a legacy *-update event, false for a create or a span",
    "source_format": "how the row was read: otlp_json, otlp_proto, ingestion, langfuse_event, parquet, ...",
    "source_key": "S3 key of the raw object the row was loaded from",
    "load_id": "id of the load that wrote the row; only a committed load's rows (ledger: loaded) count",
    "ingested_at": "when the row was written to staging (staging keeps 14 days)",
    "uploaded_at": "when the raw object was uploaded (S3 LastModified): ties in event time go to the later",
    "source_version": "version: the greatest (source_version, propagated_at, propagation_id) is current",
    "propagated_at": "when the propagation wrote the row",
    "propagation_id": "propagation (window, migrated part or replay) that wrote the row",
    "input_truncated": "whether input was cut to TRACEHOUSE_CORE_TRUNCATE_CHARS chars (whole in events)",
    "output_truncated": "whether output was cut to TRACEHOUSE_CORE_TRUNCATE_CHARS chars (whole in events)",
    "metadata_truncated": "whether a metadata value was cut to TRACEHOUSE_CORE_TRUNCATE_CHARS characters",
    # traces
    "timestamp": "the record's own timestamp as sent",
    "first_start": "earliest start seen for the trace",
    "last_start": "latest start or end seen for the trace",
    "updated_at": "when the trace's attributes last changed (commit time of the latest load)",
    # scores
    "observation_id": "observation the score is about; empty for a trace or session score",
    "value": "numeric value (booleans as 0/1)",
    "string_value": "categorical value, or the text form of a boolean",
    "data_type": "NUMERIC, BOOLEAN or CATEGORICAL",
    "comment": "comment sent with the score",
    "source": "who scored: API, ANNOTATION or EVAL",
    "is_deleted": "whether this version deletes the score",
    "key_hash": "hash of the raw object key: the last tie-breaker between versions",
    # the ingest ledger and quarantine
    "etag": "ETag of the raw object: a changed object under the same key loads again",
    "size": "size of the raw object in bytes",
    "format": "format the object was read as, from its key (otlp_json, otlp_proto, ingestion, parquet, ...)",
    "status": "started, loaded (committed) or quarantined",
    "observations": "observation rows the load wrote",
    "traces": "trace rows the load wrote",
    "scores": "score rows the load wrote",
    "reason": "why the object was quarantined",
    "run_id": "Dagster run that recorded the state",
    "recorded_at": "when the state was recorded; for loaded, the commit time propagation windows follow",
    "unmapped": "values of a loaded object no column could take (kept in metadata under tracehouse.unmapped)",
    "note": "the first unmapped value's problem, for a data engineer to find it",
    "quarantined_at": "when the object was quarantined",
    # the migration's frozen copy of the legacy observations
    "created_at": "when the legacy row was first written",
    "migration_observations.updated_at": "when the legacy row was last written",
    "migration_observations.event_ts": "event time of the legacy version (ReplacingMergeTree's version)",
    "migration_observations.is_deleted": "1 when this legacy version deletes the observation",
}


def describe(table: str, column: str) -> str | None:
    """The description of ``table.column``, or None when it has none."""
    return DESCRIPTIONS.get(f"{table}.{column}") or DESCRIPTIONS.get(column)
