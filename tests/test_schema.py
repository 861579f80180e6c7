"""Versioned DDL: idempotent on one node, and a cluster form (ON CLUSTER, Replicated engines, Distributed
reads) rendered from the same files that ClickHouse's own parser and sqlglot accept."""

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import sqlglot
from sqlglot import exp

from orchestration.clickhouse import open_clickhouse, query_rows, query_scalar
from orchestration.columns import catalogue
from orchestration.schema import (
    SchemaBehind,
    apply_migrations,
    columns_snapshot,
    load_migrations,
    render_all,
    schema_version,
)
from tests.conftest import connect


def test_migrations_apply_once_and_are_recorded(tmp_path):
    with open_clickhouse(None, tmp_path / "ch") as ch:
        applied = apply_migrations(ch)
        assert applied == [m.version for m in load_migrations()] and len(applied) >= 2
        assert apply_migrations(ch) == []  # start-up on an up-to-date schema changes nothing
        assert query_scalar(ch, "SELECT count() FROM tracehouse.schema_migrations") == len(applied)
        # the columns the parsers, propagation and the models' lineage read are the ones the DDL creates
        assert columns_snapshot(ch) == {table: dict(columns) for table, columns in catalogue().items()}, (
            "the DDL changed: regenerate orchestration/ddl/columns.json with `python -m orchestration.schema`"
        )


def test_cluster_ddl_is_valid_clickhouse_with_replicated_engines(tmp_path):
    statements = render_all(cluster="prod")
    with open_clickhouse(None, tmp_path / "ch") as ch:
        for statement in statements:
            assert query_rows(ch, "EXPLAIN AST " + statement), statement  # ClickHouse's own parser
    for statement in statements:
        parsed = sqlglot.parse_one(statement, read="clickhouse")
        # data carried between tables by a migration runs on the node that applies it, not per node
        assert "ON CLUSTER prod" in statement or isinstance(parsed, exp.Insert), statement[:80]
        if isinstance(parsed, exp.Create) and parsed.kind == "TABLE":
            engine = re.search(r"ENGINE = (\w+)", statement).group(1)
            assert engine.startswith("Replicated") or engine == "Distributed", statement[:80]
            if engine.startswith("Replicated"):
                assert "('/clickhouse/tables/{uuid}/{shard}', '{replica}')" in statement  # path by UUID
    assert {"events_distributed", "events_core_distributed"} <= {
        m.group(1) for s in statements if (m := re.search(r"tracehouse\.(\w+_distributed)", s))
    }


def test_single_node_ddl_has_no_cluster_parts():
    for statement in render_all():
        assert (
            "ON CLUSTER" not in statement and "Replicated" not in statement and "Distributed" not in statement
        )


def test_every_schema_statement_sent_in_cluster_mode_is_on_cluster(env, s3, tmp_path, monkeypatch):
    """The pipeline in cluster mode through clickhouse-connect, every statement recorded by the HTTP fixture
    (which runs cluster SQL on one chDB node, tests/clickhouse_http.py): schema, load, propagation, whole and
    keyed model builds, a blue/green rebuild, a replay of events from raw. Every statement that creates,
    drops, renames, swaps or truncates a table or database carries ON CLUSTER, and so does every ALTER of a
    schema; ALTERs that move partitions or mutate rows of Replicated tables run on the replica holding the
    source data and the engine replicates them."""
    from orchestration.generate import generate
    from orchestration.loader import load_objects
    from orchestration.models import load_models, rebuild
    from orchestration.propagation import propagate
    from orchestration.refresh import build
    from orchestration.replay import replay_from_raw
    from tests.clickhouse_http import ClickHouseHTTP

    record = tmp_path / "statements.jsonl"
    with (
        ClickHouseHTTP.serving(tmp_path / "node", record=record, cluster="prod") as url,
        open_clickhouse(url, env.chdb_path, cluster="prod") as ch,  # CLICKHOUSE_CLUSTER=prod
    ):
        apply_migrations(ch)
        keys = generate(s3, env.raw_bucket, "", objects=2, traces_per_object=3, seed=5).keys
        load_objects(ch, s3, keys, env, run_id="t")
        propagate(ch, delay_seconds=0, interval_seconds=180)
        models = load_models()
        built: set[str] = set()
        while len(built) < len(models):  # each model after the models it reads
            for model in models.values():
                if model.name not in built and set(model.refs) <= built:
                    build(ch, model)
                    built.add(model.name)
        more = generate(s3, env.raw_bucket, "", objects=1, traces_per_object=2, seed=6).keys
        load_objects(ch, s3, more, env, run_id="t2")
        propagate(ch, delay_seconds=0, interval_seconds=180)
        for name in models:  # keyed or per-day refreshes of what changed
            build(ch, models[name])
        rebuild(ch, models["trace_summaries"])
        replay_from_raw(ch, s3, env)
        assert query_scalar(ch, "SELECT count() FROM tracehouse.events_distributed") > 0
    statements = [json.loads(line)["sql"] for line in record.read_text().splitlines()]
    schema = [s for s in statements if re.match(r"\s*(CREATE|DROP|RENAME|EXCHANGE|TRUNCATE)\b", s, re.I)]
    verbs = {s.split()[0].upper() for s in schema}
    assert verbs == {"CREATE", "DROP", "RENAME", "EXCHANGE", "TRUNCATE"}, verbs
    assert [s[:120] for s in schema if "ON CLUSTER prod" not in s] == []
    assert len(schema) > 60
    # Keeper paths by table UUID: a swapped-in shadow table keeps its path, the next shadow gets a new one
    paths = {m.group(1) for s in schema for m in re.finditer(r"Replicated\w*(\([^)]*\))", s)}
    assert paths == {"('/clickhouse/tables/{uuid}/{shard}', '{replica}')"}
    alters = [s for s in statements if s.lstrip().upper().startswith("ALTER")]
    data_moves = [s for s in alters if re.search(r"\b(PARTITION|UPDATE|DELETE)\b", s)]
    assert data_moves
    assert [s[:120] for s in alters if s not in data_moves and "ON CLUSTER prod" not in s] == []


def test_trace_attribute_states_of_0002_are_carried_into_ranked_tuples(tmp_path):
    """0005/0006 on a database that has 0002's argMax-state table: the latest values survive, and a crash
    before the bookkeeping row (simulated by forgetting 0005/0006) re-runs them without harm."""
    from orchestration.schema import _template_values, render
    from orchestration.settings import CORE_TRUNCATE_CHARS
    from orchestration.sql_macros import sql_module

    zero = "(toDateTime64(0, 6, 'UTC'), toDateTime64(0, 6, 'UTC'))"
    with open_clickhouse(None, tmp_path / "ch") as ch:
        apply_migrations(ch)
        (v2,) = [m for m in load_migrations() if m.version == 2]
        (create_old,) = [
            s
            for s in render(v2.template, **_template_values(CORE_TRUNCATE_CHARS))
            if s.startswith("CREATE TABLE IF NOT EXISTS tracehouse.trace_attributes ")
        ]
        ch.command(create_old)
        ch.command(
            "INSERT INTO tracehouse.trace_attributes (project_id, trace_id, user_id, tags, public, "
            "first_start, last_start, updated_at) SELECT 'p', 't1', argMaxState(u, if(u != '', (ts, ts), "
            + zero
            + ")), "
            "argMaxState(tags, if(notEmpty(tags), (ts, ts), "
            + zero
            + ")), argMaxState(toInt8(-1), "
            + zero
            + "), "
            "min(ts), max(ts), max(ts) FROM (SELECT arrayJoin([('alice', ['a'], 1), ('', ['b'], 2), "
            "('bob', [], 3)]) AS x, x.1 AS u, x.2 AS tags, toDateTime64(x.3, 6, 'UTC') AS ts)"
        )
        for _ in range(2):  # the second time: as if the process died before recording 0005 and 0006
            ch.command("DELETE FROM tracehouse.schema_migrations WHERE version IN (5, 6)")
            assert apply_migrations(ch) == [5, 6]
            ch.command(create_old)  # the second round finds 0002's table again (empty)
        latest = sql_module("propagation", "tracehouse").latest_attributes("SELECT 'p', 't1'")
        (row,) = query_rows(ch, latest)
        assert (row["user_id"], row["tags"], row["public"], row["name"]) == ("bob", ["b"], -1, "")
        assert query_scalar(ch, "SELECT count() FROM tracehouse.trace_attributes_ranked") in (1, 2)


def test_list_and_user_views_read_events_core_projections(tmp_path):
    """The UI's latest-N and per-user queries are served by 0008's projections, and lightweight deletes
    (superseded rows) keep working on a table that has them."""
    with open_clickhouse(None, tmp_path / "ch") as ch:
        apply_migrations(ch)
        ch.command(
            "INSERT INTO tracehouse.events (project_id, trace_id, id, name, start_time, user_id, tags, "
            "event_ts, source_version, propagated_at, propagation_id) SELECT 'p', "
            "'t' || toString(number % 97), toString(number), 'n', now64(6) - toIntervalSecond(number * 7), "
            "'u' || toString(number % 13), ['b'], now64(6), now64(6), now64(6), 'x' FROM numbers(200000)"
        )
        ch.command("OPTIMIZE TABLE tracehouse.events_core FINAL")
        latest = (
            "SELECT id, name, start_time, user_id FROM tracehouse.events_core WHERE project_id = 'p' "
            "AND start_time >= now64(6) - INTERVAL 1 DAY ORDER BY start_time DESC LIMIT 50"
        )
        per_user = (
            "SELECT count(), sum(total_cost) FROM tracehouse.events_core WHERE project_id = 'p' "
            "AND user_id = 'u3' AND has(tags, 'b') AND start_time >= now64(6) - INTERVAL 7 DAY"
        )
        for sql, projection in ((latest, "by_start_time"), (per_user, "by_user")):
            plan = "\n".join(r["explain"] for r in query_rows(ch, "EXPLAIN " + sql))
            assert f"ReadFromMergeTree ({projection})" in plan, plan
        assert query_scalar(ch, "SELECT count() FROM tracehouse.events_core WHERE user_id = 'u3'") == 15385
        ch.command("DELETE FROM tracehouse.events_core WHERE id = '3'")  # as delete_superseded does
        assert query_scalar(ch, "SELECT count() FROM tracehouse.events_core WHERE user_id = 'u3'") == 15384


def test_costs_become_decimals_on_a_populated_database(tmp_path, monkeypatch):
    """0015/0016 on events written before them: provided_cost_details reads what cost_details held, the
    columns turn Decimal(18, 12) with their values, and events_core keeps its list projections."""
    import orchestration.schema as schema

    every = schema.load_migrations()
    with open_clickhouse(None, tmp_path / "ch") as ch:
        monkeypatch.setattr(schema, "load_migrations", lambda: [m for m in every if m.version < 15])
        apply_migrations(ch)
        ch.command(
            "INSERT INTO tracehouse.events (project_id, trace_id, id, type, name, start_time, cost_details, "
            "total_cost, propagation_id) VALUES ('p', 't', 'o1', 'GENERATION', 'g', now64(6), "
            "map('input', 0.25, 'output', 0.5), 0.75, 'x'), "
            "('p', 't', 'o2', 'SPAN', 's', now64(6), map(), NULL, 'x')"
        )
        monkeypatch.setattr(schema, "load_migrations", lambda: every)
        assert apply_migrations(ch) == [m.version for m in every if m.version >= 15]
        for table in ("events_current", "events_core_current"):
            rows = {r["id"]: r for r in query_rows(ch, f"SELECT * FROM tracehouse.{table}")}
            assert dict(rows["o1"]["cost_details"]) == dict(rows["o1"]["provided_cost_details"])
            assert dict(rows["o1"]["cost_details"]) == {"input": Decimal("0.25"), "output": Decimal("0.5")}
            assert rows["o1"]["total_cost"] == Decimal("0.75") and rows["o2"]["total_cost"] is None
        columns = query_rows(
            ch,
            "SELECT name, type FROM system.columns WHERE database = 'tracehouse' AND table = 'events_core'",
        )
        assert {c["name"]: c["type"] for c in columns}["total_cost"] == "Nullable(Decimal(18, 12))"
        create = query_scalar(ch, "SHOW CREATE TABLE tracehouse.events_core")
        assert "PROJECTION by_start_time" in create and "PROJECTION by_user" in create


def test_opening_clickhouse_never_migrates_and_apply_schema_is_the_step_that_does(env):
    """The resource refuses a schema older than the code and names the step to run, creating nothing; the
    clickhouse_schema asset applies the migrations as a run, a second run applies none, and `tracehouse
    schema` is that run from a shell."""
    from assets.events import EVENTS_CHECKS, propagate_events, propagation
    from assets.schema import apply_schema, clickhouse_schema
    from orchestration.faults import EXIT_USAGE, classify
    from orchestration.resources import build_resources

    resources = build_resources()
    with pytest.raises(dg.Failure, match=r"at migration 0000 .* run `tracehouse schema`") as refused:
        with resources["clickhouse"].connect():
            pass
    assert isinstance(refused.value.__cause__, SchemaBehind) and not refused.value.allow_retries
    assert refused.value.metadata["fault_code"].value == classify(refused.value).code == EXIT_USAGE
    with connect(env) as ch:
        assert schema_version(ch) == 0  # opening it applied nothing

    instance = dg.DagsterInstance.ephemeral()
    # a scheduled propagation on the old schema fails once, with that line: its retry policy would only wait
    propagating = dg.Definitions(
        assets=[propagation], asset_checks=EVENTS_CHECKS, jobs=[propagate_events], resources=resources
    )
    run = propagating.resolve_job_def("propagate_events").execute_in_process(
        instance=instance, raise_on_error=False
    )
    assert not run.success and "run `tracehouse schema`" in str(run.failure_data_for_node("propagation"))
    assert not [e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]

    job = dg.Definitions(assets=[clickhouse_schema], jobs=[apply_schema], resources=resources)
    job = job.resolve_job_def("apply_schema")
    latest = load_migrations()[-1]

    def applied() -> dict:
        result = job.execute_in_process(instance=instance)
        assert result.success
        return {
            k: v.value
            for k, v in result.asset_materializations_for_node("clickhouse_schema")[0].metadata.items()
        }

    first = applied()
    assert first["schema_version"] == latest.version
    assert (
        first["migrations_applied"].startswith("0001_")
        and f"{latest.version:04d}_{latest.name}" in first["migrations_applied"]
    )
    assert applied()["migrations_applied"] == "none (up to date)"
    with resources["clickhouse"].connect() as ch:
        assert schema_version(ch) == latest.version

    done = subprocess.run(
        [str(Path(sys.executable).parent / "tracehouse"), "schema"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"schema at migration {latest.version:04d}; applied: none (up to date)" in done.stderr
    )  # the human line (stdout is for summaries)


def test_every_column_an_asset_reports_has_a_description():
    """dagster/column_schema describes each column in words (not its type again): the tables' columns from
    orchestration/column_docs.py, the models' from their config(columns=...)."""
    from orchestration.column_docs import describe
    from orchestration.loader import STAGING_TABLES
    from orchestration.models import load_models, output_columns

    # migration_observations copies the legacy table: test_migration checks its descriptions on a snapshot
    tables = [*STAGING_TABLES, "ingest_ledger", "quarantine", "events"]
    tables += ["events_core", "traces_current", "scores"]
    missing = [f"{t}.{c}" for t in tables for c, _ in catalogue()[t] if not describe(t, c)]
    for model in load_models().values():
        columns = output_columns(model)
        assert set(model.columns) <= set(columns), f"{model.name} describes columns it does not have"
        missing += [
            f"{model.name}.{c}" for c in columns if not (model.columns.get(c) or describe(model.name, c))
        ]
    assert not missing, f"columns without a description: {missing}"
