"""A self-hosted Langfuse's event bucket (../shared/LANGFUSE_BUCKET.md) loads as it is, and gives what the
same client payloads give in tracehouse's own layout.

The Langfuse-layout bucket is built from the captured payloads (Langfuse Python SDK v5 OTLP protobuf and
scores, v2 ingestion batch) converted the way the Langfuse server stores them (orchestration/
langfuse_bucket.py), plus the variants the doc lists.
"""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest

from orchestration.clickhouse import open_clickhouse, query_rows
from orchestration.langfuse_bucket import VARIANTS, entity_files, otel_file
from orchestration.local_s3 import ensure_bucket
from orchestration.parsers import BadObject, parse_object
from orchestration.parsers.otlp import parse_otlp
from orchestration.raw_keys import BadKey, parse_key, skip_reason
from tests.conftest import INGESTION_V2, OTLP_PB, SCORES_V5, minute_key, put

REPO = Path(__file__).resolve().parents[1]
PROTOBUF = gzip.decompress(OTLP_PB.read_bytes())
STRUCTURAL = ("source_key", "source_format")


def _rows(parsed) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k not in STRUCTURAL} for r in parsed.observations),
                  key=lambda r: r["id"])  # fmt: skip


def test_langfuse_keys_are_recognised_beside_tracehouse_layout():
    event = parse_key("events/p1/observation/gen-1/evt-2.json", "events/")
    assert (event.project_id, event.format) == ("p1", "langfuse_event")
    slashed = parse_key("events/p1/trace/old/id/with/slashes/evt.json", "events/")
    assert (slashed.project_id, slashed.format) == ("p1", "langfuse_event")
    otel = parse_key("events/otel/p1/2025/06/01/10/00/5b7c.json", "events/")
    assert (otel.project_id, otel.format, otel.minute) == ("p1", "langfuse_otel", "2025-06-01T10:00")
    assert parse_key(minute_key("p1", "otlp", "a.json")).format == "otlp_json"
    with pytest.raises(BadKey, match="impossible time"):
        parse_key("otel/p1/2025/13/01/10/00/x.json")
    assert "evaluation" in skip_reason("events/evals/p1/traces/t/observations/o.json", "events/")
    assert "dataset run item" in skip_reason("events/p1/dataset_run_item/d/e.json", "events/")
    assert skip_reason("events/p1/trace/t/e.json", "events/") is None


@pytest.mark.parametrize("longs", VARIANTS)
def test_otel_files_in_every_id_and_int64_variant_give_the_protobuf_rows(longs):
    expected = _rows(parse_otlp(PROTOBUF, protobuf=True, project_id="p", source_key="k", max_record=10**7))
    raw = parse_key("otel/p/2026/11/24/02/33/x.json")
    stored = otel_file(PROTOBUF, longs)
    if longs == "long":
        assert b'"low":' in stored and b'"type":"Buffer"' in stored
    got = _rows(parse_object(raw, stored, max_object=10**8, max_record=10**7))
    assert got == expected


def test_otel_files_with_hex_or_base64_ids_as_json_requests_store_them():
    expected = _rows(parse_otlp(PROTOBUF, protobuf=True, project_id="p", source_key="k", max_record=10**7))
    doc = orjson.loads(otel_file(PROTOBUF))
    for rs in doc:
        for ss in rs["scopeSpans"]:
            for i, span in enumerate(ss["spans"]):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        data = bytes(span[key]["data"])
                        span[key] = data.hex() if i % 2 else base64.b64encode(data).decode()
    raw = parse_key("otel/p/2026/11/24/02/33/x.json")
    assert _rows(parse_object(raw, orjson.dumps(doc), max_object=10**8, max_record=10**7)) == expected


def test_bad_langfuse_files_are_bad_objects():
    event = parse_key("p/trace/t/e.json")
    for body, reason in ((b"[]", "array of ingestion events"), (b"{nope", "invalid JSON"),
                         (b'[{"type": "trace-create"}]', "without an object body")):  # fmt: skip
        with pytest.raises(BadObject, match=reason):
            parse_object(event, body, max_object=10**8, max_record=10**7)
    with pytest.raises(BadObject, match="array of ResourceSpans"):
        parse_object(parse_key("otel/p/2026/11/24/02/33/x.json"), b"{}", max_object=10**8, max_record=10**7)


def _derived_trace_file(rows: list[dict]) -> list[dict]:
    """The trace-create the Langfuse worker writes for an OTel trace, from its root span's attributes."""
    root = next(r for r in rows if not r["parent_observation_id"])
    fields = {"id": "trace_id", "name": "trace_name", "userId": "user_id", "sessionId": "session_id",
              "tags": "tags", "environment": "environment"}  # fmt: skip
    body = {field: root[column] for field, column in fields.items()}
    stamp = "2026-11-24T01:46:41.000Z"
    return [{"id": "derived-1", "type": "trace-create", "timestamp": stamp, "body": body}]


def _write_langfuse_layout(s3, bucket: str) -> None:
    def put_at(key: str, body: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    p = "events/"
    put_at(f"{p}otel/proj-1/2026/11/24/01/46/{uuid.uuid4()}.json", otel_file(PROTOBUF, "long"))
    rows = parse_otlp(
        PROTOBUF, protobuf=True, project_id="proj-1", source_key="k", max_record=10**7
    ).observations
    trace_id = rows[0]["trace_id"]
    put_at(f"{p}proj-1/trace/{trace_id}/derived-1.json", orjson.dumps(_derived_trace_file(rows)))

    batch = orjson.loads(INGESTION_V2.read_bytes())["batch"]
    for (entity, entity_id), events in entity_files(batch).items():
        if len(events) == 2:  # an entity touched by two requests: two files, the later one first in key order
            put_at(f"{p}proj-1/{entity}/{entity_id}/b-{events[0]['id']}.json", orjson.dumps(events[:1]))
            put_at(f"{p}proj-1/{entity}/{entity_id}/a-{events[1]['id']}.json", orjson.dumps(events[1:]))
        elif events[0]["type"] == "event-create":  # a server before v3: one object, and an id holding '/'
            put_at(f"{p}proj-1/{entity}/legacy/{entity_id}/{events[0]['id']}.json", orjson.dumps(events[0]))
        else:
            put_at(f"{p}proj-1/{entity}/{entity_id}/{events[0]['id']}.json", orjson.dumps(events))
    for body in orjson.loads(SCORES_V5.read_bytes()):  # the scores API's body, stored as a score-create
        event = {"id": "score-evt", "type": "score-create", "timestamp": body["timestamp"], "body": body}
        put_at(f"{p}proj-1/score/{body['id']}/score-evt.json", orjson.dumps([event]))
    put_at(f"{p}evals/proj-1/traces/{trace_id}/observations/x.json", b"{}")
    put_at(f"{p}proj-1/dataset_run_item/dri-1/e.json", b'[{"type": "dataset-run-item-create"}]')
    put_at("media/proj-1/image.png", b"\x89PNG")


def _attributes(traces: list[dict]) -> list[dict]:
    return [
        {k: t[k] for k in ("trace_id", "name", "user_id", "session_id", "tags", "release")} for t in traces
    ]


def _run_once(home: Path, bucket: str, prefix: str) -> str:
    env = {**os.environ, "TRACEHOUSE_HOME": str(home), "RAW_BUCKET": bucket, "RAW_PREFIX": prefix}
    cli = [str(Path(sys.executable).parent / "tracehouse"), "run-once", "--no-delay"]
    done = subprocess.run(cli, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _tables(home: Path) -> dict[str, list[dict]]:
    with open_clickhouse(None, home / "clickhouse") as ch:
        return {
            "events": query_rows(
                ch, "SELECT * EXCEPT (source_version, propagated_at, propagation_id) "
                "FROM tracehouse.events_current ORDER BY id",
            ),
            "scores": query_rows(
                ch, "SELECT * EXCEPT (uploaded_at, key_hash, source_version, propagated_at, propagation_id) "
                "FROM tracehouse.scores_current ORDER BY id",
            ),
            "traces": query_rows(ch, "SELECT * FROM tracehouse.traces_current ORDER BY trace_id"),
        }  # fmt: skip


def test_a_langfuse_bucket_gives_what_the_same_payloads_give_in_tracehouse_layout(env, s3, seaweed, tmp_path):
    put(s3, env, minute_key("proj-1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())
    put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes())
    put(s3, env, minute_key("proj-1", "ingestion", "s.json"), SCORES_V5.read_bytes())
    ours = _run_once(tmp_path / "ours", env.raw_bucket, "")
    assert "quarantined=0" in ours

    langfuse_bucket = "langfuse-" + uuid.uuid4().hex[:8]
    ensure_bucket(seaweed.client(), langfuse_bucket)
    _write_langfuse_layout(s3, langfuse_bucket)
    theirs = _run_once(tmp_path / "theirs", langfuse_bucket, "events/")
    assert "quarantined=0" in theirs, theirs
    assert (
        "skipped 1: Langfuse evaluation snapshot" in theirs
        and "skipped 1: Langfuse dataset run item" in theirs
    )

    mine, langfuse = _tables(tmp_path / "ours"), _tables(tmp_path / "theirs")
    assert len(mine["events"]) == 6 and len(mine["scores"]) == 2  # 3 spans; 3 observations of 5 events
    assert langfuse["events"] == mine["events"]  # every observation once, with its trace's attributes
    assert langfuse["scores"] == mine["scores"]
    assert _attributes(langfuse["traces"]) == _attributes(mine["traces"])


def test_the_generated_langfuse_bucket_loads_whole_and_the_sensor_passes_its_noise(env, s3):
    from orchestration.langfuse_bucket import write_langfuse_bucket
    from sensors.raw_bucket import ScanLimits, scan

    written = write_langfuse_bucket(s3, env.raw_bucket, "events/", objects=4, traces_per_object=3, seed=7)
    found = scan(s3, env.raw_bucket, "events/", {}, ScanLimits()).objects
    assert sorted(f.key for f in found) == sorted(
        written.keys
    )  # evals/ passed over, media/ outside the prefix
    out = _run_once(Path(os.environ["TRACEHOUSE_HOME"]), env.raw_bucket, "events/")
    assert "quarantined=0" in out and "skipped 4: Langfuse evaluation snapshot" in out, out
    with open_clickhouse(None, env.chdb_path) as ch:
        events = query_rows(
            ch, "SELECT count() AS n, uniqExact(trace_id) AS traces FROM tracehouse.events_current"
        )
    assert events == [{"n": written.observations, "traces": written.traces}]
