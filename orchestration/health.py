"""Instrumentation health: per project and instrumentation scope, how much of what an LLM trace should
carry its spans do carry (a type, a model, usage, input/output, user and session ids).

A service whose spans are nearly all bare (type SPAN, no model, no input or output) is sending spans
tracehouse cannot read as LLM work: a convention it does not know, or an instrumentation set up without
content capture. The propagation asset reports the table; the ``events_instrumentation_health`` check
warns about such scopes.
"""

from __future__ import annotations

from orchestration.clickhouse import ClickHouse, query_rows
from orchestration.settings import DATABASE

HEALTH_DAYS = 1  # spans that started in the last day
MIN_SPANS = 20  # a scope with fewer spans is not judged
BARE_SHARE = 0.9  # a scope whose spans are at least this share bare is reported

_SHARES = {
    "typed": "type != 'SPAN'",
    "model": "provided_model_name != ''",
    "usage": "notEmpty(usage_details)",
    "input_output": "input != '' OR output != ''",
    "user_id": "user_id != ''",
    "session_id": "session_id != ''",
    "bare": "type = 'SPAN' AND provided_model_name = '' AND input = '' AND output = ''",
}


def instrumentation_health(ch: ClickHouse, db: str = DATABASE, days: int = HEALTH_DAYS) -> list[dict]:
    """One row per (project, scope): span count and the share of spans with each property."""
    shares = ", ".join(f"round(avg({cond}), 3) AS {name}" for name, cond in _SHARES.items())
    return query_rows(
        ch,
        "SELECT project_id, if(metadata['scope.name'] != '', metadata['scope.name'], '(not OTLP)') AS scope, "  # noqa: S608
        f"count() AS spans, {shares} FROM {db}.events_core_current "
        "WHERE start_time >= now64(6) - toIntervalDay({days:UInt32}) "
        "GROUP BY project_id, scope ORDER BY project_id, scope",
        {"days": days},
    )


def bare_scopes(health: list[dict]) -> list[dict]:
    return [r for r in health if r["spans"] >= MIN_SPANS and r["bare"] >= BARE_SHARE]


def health_table(health: list[dict], limit: int = 50) -> str:
    """Markdown for the Dagster UI: one line per scope, shares in percent."""
    header = ["project", "scope", "spans", *(name.replace("_", " ") for name in _SHARES)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in health[:limit]:
        shares = [f"{100 * r[name]:.0f}%" for name in _SHARES]
        lines.append("| " + " | ".join([r["project_id"], r["scope"], str(r["spans"]), *shares]) + " |")
    if len(health) > limit:
        lines.append(f"| … | {len(health) - limit} more scopes | | | | | | | | | |")
    return "\n".join(lines) if health else "no spans in the last day"
