"""Legacy Langfuse ingestion batches (the "updates" path) to staging rows.

Accepted shapes, all stored under the ``ingestion`` key kind:

* ``{"batch": [{"id", "type", "timestamp", "body"}, ...], "metadata": {...}}`` as posted to
  ``/api/public/ingestion``: trace-create, {span,generation,event,agent,tool,...}-create/update,
  observation-create/update, score-create, sdk-log;
* a score body or a list of them (``{"traceId", "name", "value", ...}``) as posted to
  ``/api/public/scores`` by SDK v3+.

Updates are patches: they are staged with ``is_update = true`` and only the fields they carry; propagation
merges them onto the create (latest non-empty value wins).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from orchestration.parsers.common import (
    OBSERVATION_DEFAULTS,
    SCORE_DEFAULTS,
    TRACE_DEFAULTS,
    BadObject,
    ParsedObject,
    check_record_size,
    iso_to_us,
    json_text,
    string_map,
    tag_list,
    total_cost_of,
)
from orchestration.parsers.conventions import (
    UNMAPPED_KEY,
    FieldError,
    cost_object,
    integer,
    timestamp,
    usage_object,
)

_OBSERVATION_TYPES = {
    "span",
    "generation",
    "event",
    "agent",
    "tool",
    "chain",
    "retriever",
    "evaluator",
    "embedding",
    "guardrail",
}
_LEGACY_USAGE = {"promptTokens": "input", "completionTokens": "output", "totalTokens": "total"}


def _str(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json_text(value)


def _bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _usage(body: dict[str, Any]) -> dict[str, int]:
    """``usageDetails`` (Langfuse's keys, or an OpenAI usage object) or the legacy ``usage`` object."""
    details = body.get("usageDetails")
    if details:
        return usage_object(details)
    legacy = body.get("usage")
    if not legacy:
        return {}
    if not isinstance(legacy, dict):
        raise FieldError("usage must be an object")
    renamed = {
        _LEGACY_USAGE.get(k, k): v
        for k, v in legacy.items()
        if k not in ("inputCost", "outputCost", "totalCost")
    }
    return usage_object(renamed)


def _cost(body: dict[str, Any]) -> dict[str, float]:
    details = body.get("costDetails")
    if details:
        return cost_object(details)
    legacy = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return cost_object({k[: -len("Cost")]: legacy.get(k) for k in ("inputCost", "outputCost", "totalCost")})


class _Lenient:
    """Reads an event's fields; one that cannot be read keeps its raw value in metadata (``body.<field>``)
    and is listed as a problem, the way span attributes are (parsers/conventions.py)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body, self.kept, self.problems = body, {}, []

    def read(self, name: str, reader: Callable[[Any], Any], default: Any = None) -> Any:
        try:
            return reader(self.body.get(name))
        except (BadObject, FieldError) as exc:
            self.kept[f"body.{name}"] = json_text(self.body.get(name))
            self.problems.append(f"{name}: {exc}")
            return default

    def metadata(self, metadata: dict[str, str]) -> dict[str, str]:
        if self.problems:
            return {**metadata, **self.kept, UNMAPPED_KEY: json_text(self.problems)}
        return metadata


def _timestamp(value: Any) -> int | None:
    return None if value in (None, "") else timestamp(value)


def _observation(event_type: str, body: dict, ts: int, project_id: str, key: str, max_record: int) -> dict:
    kind, _, action = event_type.rpartition("-")
    obs_id = body.get("id")
    if not isinstance(obs_id, str) or not obs_id:
        raise BadObject(f"{event_type} event without body.id")
    trace_id = body.get("traceId")
    if action == "create" and (not isinstance(trace_id, str) or not trace_id):
        raise BadObject(f"{event_type} {obs_id} has no traceId")
    obs_type = (body.get("type") if kind == "observation" else kind) or ""
    what = f"{event_type} {obs_id}"
    fields = _Lenient(body)
    cost = fields.read("costDetails" if body.get("costDetails") else "usage", lambda _: _cost(body), {})
    usage = fields.read("usageDetails" if body.get("usageDetails") else "usage", lambda _: _usage(body), {})
    row = dict(OBSERVATION_DEFAULTS)
    row.update(
        project_id=project_id,
        trace_id=_str(trace_id),
        id=obs_id,
        parent_observation_id=_str(body.get("parentObservationId")),
        type=str(obs_type).upper() if action == "create" or obs_type else "",
        name=_str(body.get("name")),
        start_time=fields.read("startTime", _timestamp),
        end_time=fields.read("endTime", _timestamp),
        completion_start_time=fields.read("completionStartTime", _timestamp),
        level=_str(body.get("level")).upper(),
        status_message=_str(body.get("statusMessage")),
        version=_str(body.get("version")),
        environment=_str(body.get("environment")),
        input=json_text(body.get("input")),
        output=json_text(body.get("output")),
        metadata=string_map(body.get("metadata"), "metadata"),
        provided_model_name=_str(body.get("model")),
        model_parameters=json_text(body.get("modelParameters")),
        usage_details=usage,
        cost_details=cost,
        total_cost=total_cost_of(cost),
        prompt_name=_str(body.get("promptName")),
        prompt_version=fields.read("promptVersion", lambda v: None if v in (None, "") else integer(v)),
        is_update=action == "update",
        source_format="ingestion",
        source_key=key,
        event_ts=ts,
    )
    row["metadata"] = fields.metadata(row["metadata"])
    if action == "create":
        if row["start_time"] is None:
            row["start_time"] = ts  # Langfuse defaults a missing startTime to the event time
        row["level"] = row["level"] or "DEFAULT"
        row["environment"] = row["environment"] or "default"
    check_record_size(row, max_record, what)
    return row


def _trace(body: dict, ts: int, project_id: str, key: str, max_record: int) -> dict:
    trace_id = body.get("id")
    if not isinstance(trace_id, str) or not trace_id:
        raise BadObject("trace-create event without body.id")
    row = dict(TRACE_DEFAULTS)
    row.update(
        project_id=project_id,
        trace_id=trace_id,
        name=_str(body.get("name")),
        user_id=_str(body.get("userId")),
        session_id=_str(body.get("sessionId")),
        tags=tag_list(body.get("tags"), "tags"),
        release=_str(body.get("release")),
        version=_str(body.get("version")),
        environment=_str(body.get("environment")),
        public=_bool(body.get("public")),
        bookmarked=_bool(body.get("bookmarked")),
        metadata=string_map(body.get("metadata"), "metadata"),
        input=json_text(body.get("input")),
        output=json_text(body.get("output")),
        timestamp=iso_to_us(body.get("timestamp"), f"trace {trace_id} timestamp"),
        source_format="ingestion",
        source_key=key,
        event_ts=ts,
    )
    check_record_size(row, max_record, f"trace-create {trace_id}")
    return row


def _score(body: dict, ts: int | None, project_id: str, key: str, source_format: str) -> dict:
    score_id, name = body.get("id"), body.get("name")
    if not isinstance(score_id, str) or not score_id:
        raise BadObject("score without id")
    if not isinstance(name, str) or not name:
        raise BadObject(f"score {score_id} without name")
    if not (body.get("traceId") or body.get("sessionId") or body.get("observationId")):
        raise BadObject(f"score {score_id} is attached to no trace, session or observation")
    value = body.get("value")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if value is None or not (numeric or isinstance(value, str) or isinstance(value, bool)):
        raise BadObject(f"score {score_id} value must be a number, boolean or string")
    timestamp = iso_to_us(body.get("timestamp"), f"score {score_id} timestamp") or ts
    if timestamp is None:
        raise BadObject(f"score {score_id} has no timestamp")
    data_type = body.get("dataType") or (
        "NUMERIC" if numeric else "BOOLEAN" if isinstance(value, bool) else "CATEGORICAL"
    )
    row = dict(SCORE_DEFAULTS)
    row.update(
        project_id=project_id,
        id=score_id,
        trace_id=_str(body.get("traceId")),
        observation_id=_str(body.get("observationId")),
        session_id=_str(body.get("sessionId")),
        name=name,
        value=float(value) if numeric or isinstance(value, bool) else None,
        string_value=value if isinstance(value, str) else "",
        data_type=str(data_type),
        comment=_str(body.get("comment")),
        source=_str(body.get("source")) or "API",
        environment=_str(body.get("environment")) or "default",
        metadata=string_map(body.get("metadata"), "metadata"),
        timestamp=timestamp,
        source_format=source_format,
        source_key=key,
        event_ts=ts or timestamp,
    )
    return row


def parse_ingestion(data: bytes, *, project_id: str, source_key: str, max_record: int) -> ParsedObject:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadObject(f"invalid JSON: {exc}") from None
    out = ParsedObject()
    if isinstance(doc, list) or (isinstance(doc, dict) and "batch" not in doc and "value" in doc):
        bodies = doc if isinstance(doc, list) else [doc]
        for body in bodies:
            if not isinstance(body, dict):
                raise BadObject("score list entries must be objects")
            out.scores.append(_score(body, None, project_id, source_key, "scores_api"))
    elif isinstance(doc, dict) and isinstance(doc.get("batch"), list):
        for event in doc["batch"]:
            _ingest_event(event, out, project_id, source_key, max_record)
    else:
        raise BadObject('ingestion object must be {"batch": [...]} or a list of score bodies')
    if out.rows == 0 and not (isinstance(doc, dict) and doc.get("batch") is not None and _only_logs(doc)):
        raise BadObject("ingestion batch holds no events")
    return out


def parse_langfuse_events(data: bytes, *, project_id: str, source_key: str, max_record: int) -> ParsedObject:
    """A file of a Langfuse event bucket (``{project}/{entity}/{id}/{stem}.json``): the ingestion events of
    one entity from one request, as an array (or, from servers before v3, one event object). They read as
    the same events in a tracehouse batch would; several files of one entity merge in propagation like
    the patches of a batch do (event time, then create before update)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadObject(f"invalid JSON: {exc}") from None
    events = [doc] if isinstance(doc, dict) else doc
    if not isinstance(events, list) or not events:
        raise BadObject("Langfuse event file must be an array of ingestion events (or one event object)")
    out = ParsedObject()
    for event in events:
        _ingest_event(event, out, project_id, source_key, max_record)
    if out.rows == 0:
        raise BadObject("Langfuse event file holds no events")
    return out


def _only_logs(doc: dict) -> bool:
    return bool(doc["batch"]) and all(
        isinstance(e, dict) and e.get("type") == "sdk-log" for e in doc["batch"]
    )


def _ingest_event(event: Any, out: ParsedObject, project_id: str, key: str, max_record: int) -> None:
    if not isinstance(event, dict):
        raise BadObject("batch entries must be objects")
    event_type, body = event.get("type"), event.get("body")
    if not isinstance(event_type, str):
        raise BadObject("batch entry without a type")
    if event_type == "sdk-log":
        return  # SDK diagnostics, not trace data
    if not isinstance(body, dict):
        raise BadObject(f"{event_type} event without an object body")
    ts = iso_to_us(event.get("timestamp"), f"{event_type} event timestamp")
    if ts is None:
        raise BadObject(f"{event_type} event {event.get('id', '')!s:.64} has no timestamp")
    kind, _, action = event_type.rpartition("-")
    if event_type == "trace-create":
        out.traces.append(_trace(body, ts, project_id, key, max_record))
    elif event_type == "score-create":
        out.scores.append(_score(body, ts, project_id, key, "ingestion"))
    elif (kind in _OBSERVATION_TYPES or kind == "observation") and action in ("create", "update"):
        row = _observation(event_type, body, ts, project_id, key, max_record)
        out.observations.append(row)
        if UNMAPPED_KEY in row["metadata"]:
            out.unmapped += orjson.loads(row["metadata"][UNMAPPED_KEY])
    else:
        raise BadObject(f"unknown ingestion event type {event_type[:64]!r}")
