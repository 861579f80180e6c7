"""Secrets never leave the environment; data values are parameters, never SQL; projects stay apart;
local services listen on loopback only."""

import json
import os

import dagster as dg
import orjson
import psutil
import pytest

from orchestration.clickhouse import ChdbClickHouse, query_rows, query_scalar
from orchestration.loader import load_objects
from orchestration.models import build_day, days_in_events, load_models, rebuild
from orchestration.propagation import propagate
from tests.conftest import INGESTION_V2, OTLP_PB, minute_key, put

DB = "tracehouse"
HOSTILE = "o'brien\\'; DROP TABLE tracehouse.events; --{x:String}"


def test_secrets_stay_out_of_sql_logs_run_config_and_metadata(env, s3, migrated, monkeypatch, caplog):
    from assets.events import EVENTS_CHECKS, propagation
    from assets.staging import staging_tables
    from orchestration.resources import build_resources

    secrets = [os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]]
    assert all(len(s) >= 8 for s in secrets)
    sent: list[str] = []
    for method in ("command", "query_arrow"):
        original = getattr(ChdbClickHouse, method)

        def spy(self, sql, params=None, _original=original):
            sent.append(sql + repr(params))
            return _original(self, sql, params)

        monkeypatch.setattr(ChdbClickHouse, method, spy)
    resources = build_resources()
    assert isinstance(resources["s3"].aws_secret_access_key, dg.EnvVar)  # read at run time, not stored
    keys = [put(s3, env, minute_key("p1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())]
    texts = []
    with dg.instance_for_test() as instance:
        loaded = dg.materialize(
            [staging_tables],
            resources=resources,
            instance=instance,
            run_config={"ops": {"staging_tables": {"config": {"keys": keys}}}},
        )
        propagated = dg.materialize(
            [propagation, *EVENTS_CHECKS],
            resources=resources,
            instance=instance,
            run_config={"ops": {"propagation": {"config": {"delay_seconds": 0}}}},
        )
        for result in (loaded, propagated):
            assert result.success
            texts.append(json.dumps(instance.get_run_by_id(result.run_id).run_config))
            texts += [str(entry) for entry in instance.all_logs(result.run_id)]  # logs, metadata, events
    texts += sent + [caplog.text]
    assert sent and len(texts) > 20
    for secret in secrets:
        assert not [t for t in texts if secret in t]


def test_hostile_project_ids_are_stored_as_data(env, s3, ch):
    batch = json.loads(INGESTION_V2.read_bytes())
    keys = [
        put(s3, env, minute_key(HOSTILE, "ingestion", "b.json"), orjson.dumps(batch)),
        put(s3, env, minute_key("plain", "ingestion", "b.json"), orjson.dumps(batch)),
    ]
    assert load_objects(ch, s3, keys, env, run_id="t").count("loaded") == 2
    propagate(ch, delay_seconds=0, interval_seconds=180)
    models = load_models()
    for day in days_in_events(ch):
        build_day(ch, models["usage_daily"], day)
    rebuild(ch, models["trace_summaries"])
    assert (
        query_scalar(ch, f"SELECT count() FROM {DB}.events WHERE project_id = {{p:String}}", {"p": HOSTILE})
        == 3
    )
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events WHERE project_id = 'plain'") == 3
    for table in ("events_core", "usage_daily", "trace_summaries", "ingest_ledger"):
        projects = {r["project_id"] for r in query_rows(ch, f"SELECT DISTINCT project_id FROM {DB}.{table}")}
        assert projects == {HOSTILE, "plain"}, table


def test_projects_never_mix_in_events_or_derived_tables(env, s3, ch):
    """The same trace, observation and session ids in two projects stay two sets of rows."""
    batch = json.loads(INGESTION_V2.read_bytes())
    keys = [put(s3, env, minute_key(p, "ingestion", "b.json"), orjson.dumps(batch)) for p in ("pa", "pb")]
    load_objects(ch, s3, keys, env, run_id="t")
    propagate(ch, delay_seconds=0, interval_seconds=180)
    models = load_models()
    rebuild(ch, models["trace_summaries"])
    rebuild(ch, models["session_summaries"])
    for day in days_in_events(ch):
        build_day(ch, models["usage_daily"], day)
    measure = {
        "events": "count()",
        "trace_summaries": "sum(observations)",
        "session_summaries": "sum(traces)",
        "usage_daily": "sum(observations)",
    }
    per_project = {
        t: f"SELECT project_id, {m} AS n FROM {DB}.{t} GROUP BY project_id" for t, m in measure.items()
    }
    expected = {"events": 3, "trace_summaries": 3, "session_summaries": 1, "usage_daily": 3}
    for table, sql in per_project.items():
        assert {r["project_id"]: r["n"] for r in query_rows(ch, sql)} == {
            "pa": expected[table],
            "pb": expected[table],
        }
    for model in models.values():  # every derived table carries the project and keys on it first
        assert model.unique_key[0] == "project_id" and "project_id" in model.config["order_by"]


def test_local_services_listen_on_loopback_only(seaweed):
    from orchestration.dagster_runs import dagster_dev_command

    process = psutil.Process(seaweed.process.pid)
    pids = {process.pid, *(c.pid for c in process.children(recursive=True))}
    try:
        listening = [
            c for c in psutil.net_connections(kind="inet") if c.pid in pids and c.status == psutil.CONN_LISTEN
        ]
    except psutil.AccessDenied:
        pytest.fail("cannot list sockets on this machine")
    assert listening, "SeaweedFS listens somewhere"
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
    command = dagster_dev_command(3000)
    assert command[command.index("-h") + 1] == "127.0.0.1"
