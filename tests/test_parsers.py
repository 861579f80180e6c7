"""Every raw format, real client payloads first, and every kind of bad input the loader must quarantine."""

from __future__ import annotations

import base64
import gzip
import io

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestration.generate import encode_otlp_json, encode_otlp_proto, generate
from orchestration.parsers import BadObject, gunzip_bounded, parse_object
from orchestration.raw_keys import BadKey, parse_key
from tests.conftest import INGESTION_V2, OTLP_PB, SCORES_V5, minute_key

LIMITS = {"max_object": 64 * 1024 * 1024, "max_record": 1024 * 1024}


def parse(key: str, data: bytes, **limits):
    return parse_object(parse_key(key), data, **{**LIMITS, **limits})


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_langfuse_v5_otlp_protobuf_fixture_lands_in_columns():
    key = minute_key("proj-1", "otlp", "batch.binpb.gz", "2026-11-24T01:46")
    rows = by_name(parse(key, OTLP_PB.read_bytes()).observations)
    assert set(rows) == {"agent-run", "llm-call", "tool:search"}
    trace_id = "d3a271de1ca31c04df7197beb3bf0529"
    assert {r["trace_id"] for r in rows.values()} == {trace_id}
    root, gen, tool = rows["agent-run"], rows["llm-call"], rows["tool:search"]
    assert (
        root["parent_observation_id"] == "" and root["type"] == "AGENT" and root["trace_name"] == "agent-run"
    )
    assert gen["parent_observation_id"] == root["id"] == "1b94e7fe2d2cc625"
    assert gen["type"] == "GENERATION" and gen["provided_model_name"] == "gpt-4o"
    assert orjson.loads(gen["model_parameters"]) == {"temperature": 0.2}
    assert gen["usage_details"] == {"input": 12, "output": 3, "total": 15}
    assert gen["cost_details"] == {"total": 0.00012} and gen["total_cost"] == 0.00012
    assert orjson.loads(gen["input"]) == [{"role": "user", "content": "What is the capital of France?"}]
    assert gen["output"] == "Paris"
    assert tool["type"] == "TOOL" and tool["level"] == "WARNING" and tool["status_message"] == "slow tool"
    assert orjson.loads(tool["output"]) == {"results": ["Paris"]}
    assert orjson.loads(root["output"]) == {"answer": "Paris"}
    for row in rows.values():
        assert (row["user_id"], row["session_id"], row["version"]) == ("user-42", "sess-7", "v1.2.3")
        assert row["tags"] == ["agent", "prod"]
        assert row["trace_metadata"] == {"tenant": "acme"}
        assert row["project_id"] == "proj-1" and row["source_format"] == "otlp_proto"
        assert row["metadata"]["resource.service.name"] == "unknown_service:python"
        assert row["metadata"]["scope.version"] == "5.0.4"
        assert row["start_time"] <= row["end_time"]
    assert root["start_time"] == 1795484802109748  # 1795484802109748509 ns, truncated to µs
    assert root["metadata"]["langfuse.internal.is_app_root"] == "true"


def test_langfuse_v2_ingestion_fixture_creates_patches_and_late_trace_attributes():
    key = minute_key("proj-1", "ingestion", "b.json")
    parsed = parse(key, INGESTION_V2.read_bytes())
    assert len(parsed.observations) == 5 and len(parsed.traces) == 2 and len(parsed.scores) == 1
    gen_create, gen_update = [
        o for o in parsed.observations if o["id"] == "d1e21356-1610-47d0-89d9-259327366314"
    ]
    assert not gen_create["is_update"] and gen_update["is_update"]
    assert gen_create["provided_model_name"] == "gpt-4o-mini" and gen_create["type"] == "GENERATION"
    assert orjson.loads(gen_create["model_parameters"]) == {"temperature": "0.1"}
    assert orjson.loads(gen_create["input"]) == [{"role": "user", "content": "hi"}]
    assert gen_update["output"] == "hello!" and gen_update["usage_details"] == {
        "input": 5,
        "output": 2,
        "total": 7,
    }
    assert gen_update["end_time"] is not None and gen_update["start_time"] is None
    event = next(o for o in parsed.observations if o["type"] == "EVENT")
    assert event["parent_observation_id"] == "ee1edc81-8282-44e9-a6ae-9dc0f79b1efb"
    assert event["metadata"] == {"key": "k1"}
    first, late = parsed.traces
    assert first["name"] == "chat-turn" and first["user_id"] == ""
    assert (late["user_id"], late["session_id"], late["tags"], late["release"]) == (
        "user-7",
        "sess-3",
        ["beta"],
        "2.0.1",
    )
    assert late["metadata"] == {"plan": "pro"} and orjson.loads(late["output"]) == {"a": "hello!"}
    assert late["event_ts"] > first["event_ts"]
    score = parsed.scores[0]
    assert (score["name"], score["value"], score["comment"], score["data_type"]) == (
        "thumbs",
        1.0,
        "good",
        "NUMERIC",
    )


def test_langfuse_v5_scores_api_body():
    parsed = parse(minute_key("p", "ingestion", "s.json"), SCORES_V5.read_bytes())
    [score] = parsed.scores
    assert score["trace_id"] == "d3a271de1ca31c04df7197beb3bf0529"
    assert (score["name"], score["value"], score["source_format"]) == ("correctness", 1.0, "scores_api")


def _spans():
    return [
        {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
            "parent": "",
            "name": "chat gpt-4o",
            "start": 1_795_000_000_000_000_000,
            "end": 1_795_000_001_000_000_000,
            "error": True,
            "attrs": {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
                "gen_ai.request.temperature": 0.5,
                "deployment.environment.name": "prod",
                "http.route": "/chat",
            },
        }
    ]


@pytest.mark.parametrize("fmt", ["json", "json.gz", "binpb", "binpb.gz"])
def test_otlp_genai_conventions_in_every_encoding(fmt):
    body = encode_otlp_json(_spans()) if fmt.startswith("json") else encode_otlp_proto(_spans())
    if fmt.endswith(".gz"):
        body = gzip.compress(body)
    [row] = parse(minute_key("p", "otlp", f"x.{fmt}"), body).observations
    assert row["type"] == "GENERATION"
    assert row["provided_model_name"] == "gpt-4o-2024-08-06"
    assert row["usage_details"] == {"input": 100, "output": 20, "total": 120}
    assert orjson.loads(row["model_parameters"]) == {"temperature": 0.5}
    assert row["level"] == "ERROR" and row["status_message"] == "error"
    assert row["environment"] == "prod" and row["metadata"]["http.route"] == "/chat"
    assert row["id"] == "b7ad6b7169203331" and row["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_otlp_json_accepts_base64_ids_and_enum_names():
    doc = orjson.loads(encode_otlp_json(_spans()))
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = base64.b64encode(bytes.fromhex(span["traceId"])).decode()
    span["spanId"] = base64.b64encode(bytes.fromhex(span["spanId"])).decode()
    span["kind"] = "SPAN_KIND_CLIENT"
    span["status"] = {"code": "STATUS_CODE_ERROR", "message": "boom"}
    [row] = parse(minute_key("p", "otlp", "x.json"), orjson.dumps(doc)).observations
    assert row["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and row["id"] == "b7ad6b7169203331"
    assert row["metadata"]["otel.span.kind"] == "CLIENT" and row["status_message"] == "boom"


def test_parquet_flat_observations():
    table = pa.table(
        {
            "id": ["o1", "o2"],
            "trace_id": ["t1", "t1"],
            "start_time": pa.array([1_700_000_000_000_000] * 2, pa.timestamp("us", tz="UTC")),
            "provided_model_name": ["gpt-4o", ""],
            "total_cost": [0.5, None],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    parsed = parse(minute_key("p9", "parquet", "x.parquet"), sink.getvalue())
    rows = parsed.arrow_observations.to_pylist()
    assert [r["id"] for r in rows] == ["o1", "o2"]
    assert (
        rows[0]["project_id"] == "p9"
        and rows[0]["provided_model_name"] == "gpt-4o"
        and rows[0]["total_cost"] == 0.5
    )
    assert rows[1]["level"] == "" and rows[1]["usage_details"] == []


BAD = [
    ("otlp", "x.json", b"", "empty"),
    ("otlp", "x.json.gz", b'{"resourceSpans": []}', "not gzip"),
    ("otlp", "x.json.gz", gzip.compress(b'{"resourceSpans": [' * 50)[:-12], "truncated gzip"),
    ("otlp", "x.json", b"{not json", "invalid JSON"),
    ("otlp", "x.json", b'{"resourceSpans": "nope"}', "resourceSpans"),
    ("otlp", "x.json", b'{"resourceSpans": []}', "no spans"),
    ("otlp", "x.binpb", b"\xff\xff\xff\xff garbage", "invalid OTLP protobuf"),
    ("otlp", "x.json", b'{"hello": 1}', "resourceSpans"),
    (
        "ingestion",
        "x.json",
        b'{"batch": [{"type": "trace-create", "timestamp": "2026-01-01T00:00:00Z", "body": {}}]}',
        "without body.id",
    ),
    (
        "ingestion",
        "x.json",
        b'{"batch": [{"type": "bogus-create", "timestamp": "2026-01-01T00:00:00Z", "body": {}}]}',
        "unknown ingestion event type",
    ),
    (
        "ingestion",
        "x.json",
        b'{"batch": [{"type": "span-create", "timestamp": "9999-01-01T00:00:00Z", '
        b'"body": {"id": "a", "traceId": "t"}}]}',
        "out of range",
    ),
    ("ingestion", "x.json", b'{"batch": []}', "no events"),
    ("ingestion", "x.json", b"[1, 2]", "must be objects"),
    ("ingestion", "x.json", b'"just a string"', "ingestion object must be"),
    (
        "ingestion",
        "x.json",
        b'{"batch": [{"type": "trace-create", "body": {"id": "t"}, "timestamp": "x"}]}',
        "not an ISO-8601",
    ),
    ("ingestion", "x.json", b'\xff\xfe{"batch": []}', "invalid JSON"),
    ("parquet", "x.parquet", b"PAR1 not really", "invalid Parquet"),
    (
        "otlp",
        "x.json",
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "0af7651916cd43dd8448eb211c80319c", '
        b'"spanId": "b7ad6b7169203331", "name": "s", "startTimeUnixNano": "-1000000000"}]}]}]}',
        "negative",
    ),
    (
        "ingestion",
        "x.json",
        b'{"batch": [{"type": "span-create", "timestamp": -5, "body": {"id": "a", "traceId": "t"}}]}',
        "negative epoch",
    ),
    (
        "ingestion",
        "x.json",
        b'{"batch": [{"type": "span-create", "timestamp": "1899-12-31T23:59:59Z", '
        b'"body": {"id": "a", "traceId": "t"}}]}',
        "out of range",
    ),
]


@pytest.mark.parametrize(("kind", "name", "body", "reason"), BAD, ids=[b[3] for b in BAD])
def test_bad_objects_raise_a_clear_reason(kind, name, body, reason):
    with pytest.raises(BadObject, match=reason):
        parse(minute_key("p", kind, name), body)


def test_one_oversized_record_rejects_the_object():
    body = orjson.dumps(
        {
            "batch": [
                {
                    "type": "span-create",
                    "timestamp": "2026-01-01T00:00:00Z",
                    "body": {"id": "s", "traceId": "t", "input": "x" * 5000},
                }
            ]
        }
    )
    with pytest.raises(BadObject, match="over the per-record limit"):
        parse(minute_key("p", "ingestion", "x.json"), body, max_record=4000)


def test_gzip_bomb_is_bounded():
    bomb = gzip.compress(b"\0" * 10_000_000)
    with pytest.raises(BadObject, match="more than"):
        gunzip_bounded(bomb, 1_000_000)


@pytest.mark.parametrize(
    "key",
    [
        "junk.txt",
        "p/otlp/x.json",
        "p/videos/year=2026/month=01/day=01/hour=00/minute=00/a.mp4",
        "p/otlp/year=2026/month=01/day=01/hour=00/minute=00/a.txt",
        "p/otlp/year=2026/month=13/day=45/hour=99/minute=00/a.json",
        "p/otlp/year=2026/month=02/day=30/hour=00/minute=00/a.json",
        "p/otlp/year=2026/month=01/day=01/hour=24/minute=00/a.json",
        "p/otlp/year=2026/month=01/day=01/hour=00/minute=60/a.json",
    ],
)
def test_keys_outside_the_layout_are_rejected(key):
    with pytest.raises(BadKey):
        parse_key(key)


def test_the_generator_counts_the_observations_it_writes(env, s3):
    """An ingestion batch states a trace's root in its trace-create: it is not counted as an observation."""
    from orchestration.parsers import parse_object
    from orchestration.raw_keys import parse_key

    written = generate(
        s3, env.raw_bucket, objects=4, traces_per_object=3, seed=3, formats=("ingestion", "otlp_json")
    )
    ids = set()
    for key in written.keys:
        body = s3.get_object(Bucket=env.raw_bucket, Key=key)["Body"].read()
        parsed = parse_object(parse_key(key), body, max_object=10**8, max_record=10**7)
        ids |= {(r["project_id"], r["id"]) for r in parsed.observations}
    assert len(ids) == written.observations
