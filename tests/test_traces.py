"""Traces as rows: every trace reaches trace_summaries with its name, input, output and attributes, also a
trace that has no observation; the trace's own input/output win over its root span's, which fill in when
the trace has none (the OTel case)."""

import json

import orjson

from orchestration.clickhouse import query_rows
from orchestration.loader import load_objects
from orchestration.models import load_models, rebuild
from orchestration.propagation import propagate
from orchestration.settings import CORE_TRUNCATE_CHARS
from tests.conftest import INGESTION_V2, OTLP_PB, minute_key, put

DB = "tracehouse"
V2_TRACE = "380a383c-28aa-4973-8a11-96c486e106ac"
V5_TRACE = "d3a271de1ca31c04df7197beb3bf0529"


def _trace_only() -> bytes:
    """The v2 batch's trace-create events alone, under another trace id: a trace with no observation."""
    batch = json.loads(INGESTION_V2.read_bytes())
    events = [e for e in batch["batch"] if e["type"] == "trace-create"]
    for e in events:
        e["body"]["id"] = "trace-only"
        e["id"] += "-only"
    return orjson.dumps({**batch, "batch": events})


def _summaries(ch, truncate_chars: int = CORE_TRUNCATE_CHARS) -> dict[str, dict]:
    rebuild(ch, load_models()["trace_summaries"], truncate_chars=truncate_chars)
    return {r["trace_id"]: r for r in query_rows(ch, f"SELECT * FROM {DB}.trace_summaries")}


def test_every_trace_is_a_row_with_its_input_and_output(env, s3, ch):
    keys = [
        put(s3, env, minute_key("p1", "ingestion", "v2.json"), INGESTION_V2.read_bytes()),
        put(s3, env, minute_key("p1", "ingestion", "only.json"), _trace_only()),
        put(s3, env, minute_key("p1", "otlp", "v5.binpb.gz"), OTLP_PB.read_bytes()),
    ]
    assert load_objects(ch, s3, keys, env, run_id="t").count("loaded") == 3
    propagate(ch, delay_seconds=0, interval_seconds=180)
    rows = _summaries(ch)
    assert set(rows) == {V2_TRACE, "trace-only", V5_TRACE}

    v2 = rows[V2_TRACE]  # the trace-create's own input and (later) output, its late attributes
    assert (json.loads(v2["input"]), json.loads(v2["output"])) == ({"q": "hi"}, {"a": "hello!"})
    assert (v2["name"], v2["user_id"], v2["session_id"], v2["release"]) == (
        "chat-turn",
        "user-7",
        "sess-3",
        "2.0.1",
    )
    assert v2["tags"] == ["beta"] and v2["observations"] == 3

    only = rows["trace-only"]  # no observation: still a row, with what the trace-create said
    assert (
        only["observations"] == 0 and only["name"] == "chat-turn" and json.loads(only["input"]) == {"q": "hi"}
    )
    assert only["start_time"] is not None and only["environment"] == "default"

    v5 = rows[V5_TRACE]  # OTel: no trace-level input/output, so the root span's
    root = query_rows(
        ch,
        f"SELECT input, output FROM {DB}.events_core_current WHERE trace_id = {{t:String}} "
        "AND parent_observation_id = ''",
        {"t": V5_TRACE},
    )[0]
    assert (v5["input"], v5["output"]) == (root["input"], root["output"]) and "France" in v5["input"]

    # full values by trace id, truncated in the summary like events_core
    assert _summaries(ch, truncate_chars=5)[V2_TRACE]["input"] == '{"q":'[:5]
    full = query_rows(
        ch, f"SELECT input FROM {DB}.traces_current WHERE trace_id = {{t:String}}", {"t": V2_TRACE}
    )
    assert json.loads(full[0]["input"]) == {"q": "hi"}
