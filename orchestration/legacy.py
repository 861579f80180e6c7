"""The legacy (Langfuse V3 style) tables the historic migration reads, and a generator to fill them.

``traces``, ``observations`` and ``scores`` are ReplacingMergeTree tables where an update is a new row with a
later ``event_ts``; until a merge happens to collapse them, readers need ``FINAL`` or ``LIMIT 1 BY``. The
observations carry no trace attributes: V3 joined traces at read time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from orchestration.clickhouse import ClickHouse
from orchestration.settings import LEGACY_DATABASE

_DDL = [
    """
    CREATE TABLE IF NOT EXISTS {db}.traces (
        id String, project_id String, timestamp DateTime64(3, 'UTC'), name String, user_id Nullable(String),
        metadata Map(String, String), release Nullable(String), version Nullable(String),
        environment LowCardinality(String) DEFAULT 'default', public Bool, bookmarked Bool,
        tags Array(String), input Nullable(String), output Nullable(String), session_id Nullable(String),
        created_at DateTime64(3, 'UTC'), updated_at DateTime64(3, 'UTC'), event_ts DateTime64(3, 'UTC'),
        is_deleted UInt8
    ) ENGINE = ReplacingMergeTree(event_ts, is_deleted)
    PARTITION BY toYYYYMM(timestamp) ORDER BY (project_id, toDate(timestamp), id)
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.observations (
        id String, trace_id String, project_id String, type LowCardinality(String),
        parent_observation_id Nullable(String), start_time DateTime64(3, 'UTC'),
        end_time Nullable(DateTime64(3, 'UTC')), name String, metadata Map(String, String),
        level LowCardinality(String), status_message Nullable(String), version Nullable(String),
        input Nullable(String), output Nullable(String), provided_model_name Nullable(String),
        model_parameters Nullable(String), usage_details Map(String, UInt64),
        cost_details Map(String, Float64),
        total_cost Nullable(Float64), completion_start_time Nullable(DateTime64(3, 'UTC')),
        prompt_name Nullable(String), prompt_version Nullable(UInt16),
        environment LowCardinality(String) DEFAULT 'default',
        created_at DateTime64(3, 'UTC'), updated_at DateTime64(3, 'UTC'), event_ts DateTime64(3, 'UTC'),
        is_deleted UInt8
    ) ENGINE = ReplacingMergeTree(event_ts, is_deleted)
    PARTITION BY toYYYYMM(start_time) ORDER BY (project_id, type, toDate(start_time), id)
    """,
    """
    CREATE TABLE IF NOT EXISTS {db}.scores (
        id String, project_id String, trace_id String, observation_id Nullable(String), name String,
        value Float64, string_value Nullable(String), source String, comment Nullable(String),
        timestamp DateTime64(3, 'UTC'), event_ts DateTime64(3, 'UTC'), is_deleted UInt8
    ) ENGINE = ReplacingMergeTree(event_ts, is_deleted)
    PARTITION BY toYYYYMM(timestamp) ORDER BY (project_id, toDate(timestamp), name, id)
    """,
]

_WORDS = (
    "['the','model','user','asked','about','weather','in','Paris','tool','call','returned','json','result',"
    "'with','temperature','of','degrees','and','a','summary']"
)


_USAGE = "map('input', number % 2000, 'output', number % 500, 'total', number % 2000 + number % 500)"
_COST = "(number % 2000) * 2.5e-6 + (number % 500) * 1e-5"


def create_legacy_tables(ch: ClickHouse, db: str = LEGACY_DATABASE) -> None:
    ch.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    for statement in _DDL:
        ch.command(statement.format(db=db))


def _text(seed: str, words: int) -> str:
    return (
        f"arrayStringConcat(arrayMap(i -> {_WORDS}[(cityHash64({seed}, i) % 20) + 1], range({words})), ' ')"
    )


def generate_legacy(
    ch: ClickHouse,
    observations: int,
    *,
    per_trace: int = 8,
    projects: int = 3,
    days: int = 30,
    duplicate_share: float = 0.3,
    db: str = LEGACY_DATABASE,
) -> dict[str, int]:
    """Fill the legacy tables with ``observations`` observations (plus late versions and duplicates).

    * every trace is written twice: first without user/session/tags, then a later version with them;
    * ``duplicate_share`` of observations get a second, later version (end time, output, usage, cost), and
      a few are exact duplicates (same version delivered twice), as at-least-once ingestion produces;
    * a small share of observations is deleted by a last version with ``is_deleted = 1``.
    """
    create_legacy_tables(ch, db)
    salt = uuid.uuid4().hex[:8]
    base = datetime.now(UTC)  # one clock for every version, so versions of a row share their sort key
    traces = max(1, observations // per_trace)
    span = days * 86_400_000
    trace_cols = (
        "id, project_id, timestamp, name, user_id, metadata, release, version, environment, public, "
        "bookmarked, "
        "tags, input, output, session_id, created_at, updated_at, event_ts, is_deleted"
    )
    for version in (0, 1):
        ch.command(
            f"""
            INSERT INTO {db}.traces ({trace_cols})
            SELECT 't{salt}-' || toString(number), 'legacy-' || toString(number % {projects}),
                {{base:DateTime64(3, 'UTC')}}
                    - toIntervalMillisecond(({span} * number) / {traces} + 3600000) AS ts,
                'agent-run-' || toString(number % 7),
                {"NULL" if version == 0 else "'user-' || toString(number % 997)"},
                map('tier', ['free', 'pro'][number % 2 + 1]),
                {"NULL" if version == 0 else "'v1.2.' || toString(number % 4)"},
                NULL, ['production', 'staging'][number % 2 + 1], number % 50 = 0, false,
                {"[]" if version == 0 else "['legacy', ['a', 'b', 'c'][number % 3 + 1]]"},
                {_text("number", 20)}, {"NULL" if version == 0 else _text("number + 1", 20)},
                {"NULL" if version == 0 else "'sess-' || toString(intDiv(number, 4))"},
                ts, ts + toIntervalSecond({version} * 30), ts + toIntervalSecond({version} * 30), 0
            FROM numbers({traces})
            """,  # noqa: S608
            {"base": base},
        )
    obs_cols = (
        "id, trace_id, project_id, type, parent_observation_id, start_time, end_time, name, metadata, level, "
        "status_message, version, input, output, provided_model_name, model_parameters, usage_details, "
        "cost_details, total_cost, completion_start_time, prompt_name, prompt_version, environment, "
        "created_at, updated_at, event_ts, is_deleted"
    )

    def insert_observations(where: str, version: int, deleted: int = 0) -> None:
        ch.command(
            f"""
            INSERT INTO {db}.observations ({obs_cols})
            SELECT 'o{salt}-' || toString(number), 't{salt}-' || toString(intDiv(number, {per_trace})) AS tid,
                'legacy-' || toString(intDiv(number, {per_trace}) % {projects}),
                ['GENERATION', 'SPAN', 'EVENT', 'SPAN'][number % 4 + 1],
                if(number % {per_trace} = 0, NULL, 'o{salt}-' || toString(number - number % {per_trace})),
                {{base:DateTime64(3, 'UTC')}}
                    - toIntervalMillisecond(({span} * intDiv(number, {per_trace})) / {traces} + 3600000)
                    + toIntervalMillisecond((number % {per_trace}) * 150) AS st,
                {"NULL" if version == 0 else "st + toIntervalMillisecond(200 + number % 3000)"},
                'step-' || toString(number % 11), map('attempt', toString(number % 3)),
                if(number % 97 = 0, 'ERROR', 'DEFAULT'), NULL, NULL, {_text("number", 40)},
                {"NULL" if version == 0 else _text("number + 7", 40)},
                if(number % 4 = 0, ['gpt-4o', 'claude-3-5-sonnet', 'gpt-4o-mini'][number % 3 + 1], NULL),
                NULL,
                {"map()" if version == 0 else _USAGE},
                {"map()" if version == 0 else f"map('total', {_COST})"},
                {"NULL" if version == 0 else _COST},
                {"NULL" if version == 0 else "st + toIntervalMillisecond(80 + number % 400)"}, NULL, NULL,
                'production', st, st + toIntervalSecond({version}),
                st + toIntervalSecond({version} + {deleted}),
                {deleted}
            FROM numbers({observations})
            WHERE {where}
            """,  # noqa: S608
            {"base": base},
        )

    every = max(1, round(1 / duplicate_share)) if duplicate_share > 0 else 0
    insert_observations("1", 0)
    if every:
        insert_observations(f"number % {every} = 0", 1)  # the later version
        insert_observations(f"number % {every * 10} = 0", 1)  # delivered twice
    insert_observations("number % 1000 = 999", 1, deleted=1)  # deleted at the end
    ch.command(
        f"""
        INSERT INTO {db}.scores
            (id, project_id, trace_id, name, value, source, timestamp, event_ts, is_deleted)
        SELECT 's{salt}-' || toString(number), 'legacy-' || toString(number % {projects}),
            't{salt}-' || toString(number), 'quality', (number % 10) / 10, 'API',
            {{base:DateTime64(3, 'UTC')}}, {{base:DateTime64(3, 'UTC')}}, 0
        FROM numbers({traces})
        """,  # noqa: S608
        {"base": base},
    )
    return {"observations": observations, "traces": traces}
