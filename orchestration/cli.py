"""The ``tracehouse`` command line: dev, run-once, generate.

Every command works on the embedded defaults with nothing configured: when ``S3_ENDPOINT_URL`` is unset a
local SeaweedFS is started under ``TRACEHOUSE_HOME`` (or the one ``tracehouse dev`` runs is reused), and
when ``CLICKHOUSE_URL`` is unset ClickHouse is embedded chDB under the same folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestration.processes import running, stop_tree
from orchestration.settings import Settings, home_path, load_settings

if TYPE_CHECKING:
    from dagster import DagsterInstance

console = Console(stderr=True)


@contextmanager
def environment(start_s3: bool = True) -> Iterator[Settings]:
    """Make the embedded defaults real for the block: home folder, Dagster home, local S3 if none is set."""
    os.environ.setdefault("TRACEHOUSE_HOME", str(Path(".tracehouse").resolve()))
    settings = load_settings()
    settings.home_path.mkdir(parents=True, exist_ok=True)
    os.environ["TRACEHOUSE_HOME"] = str(settings.home_path)
    with ExitStack() as stack:
        if start_s3 and not settings.s3_endpoint_url:
            from orchestration.local_s3 import LocalS3

            server = LocalS3.attach_or_start(settings.s3_data_dir)
            stack.callback(server.stop)
            os.environ.update(server.env())
            settings = load_settings()
        from orchestration.local_s3 import ensure_bucket, raw_bucket_client

        ensure_bucket(raw_bucket_client(settings), settings.raw_bucket)
        yield settings


class _Commands(click.Group):
    """Every command ends a fault in one line on stderr and a documented exit code
    (``orchestration/faults.py``); the traceback goes to ``$TRACEHOUSE_HOME/logs/tracehouse.log``."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            from orchestration.faults import EXIT_BUG, classify, first_line

            log = _log_traceback()
            fault = classify(exc)
            # one unwrapped line (a rich console would wrap it to the terminal's width)
            if fault is None:
                click.echo(
                    f"error: unexpected {type(exc).__name__}: {first_line(exc)} (traceback in {log})",
                    err=True,
                )
                ctx.exit(EXIT_BUG)
            click.echo(f"error: {fault.message} (details in {log})", err=True)
            ctx.exit(fault.code)


def _log_traceback(details: str | None = None) -> Path:
    """Append the exception being handled (or ``details``: a failed run's errors) to the log file."""
    import traceback

    log = home_path() / "logs" / "tracehouse.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} tracehouse {' '.join(sys.argv[1:])}\n")
        out.write(details if details is not None else traceback.format_exc())
    return log


@click.group(cls=_Commands)
def main() -> None:
    """tracehouse: raw LLM-trace batches in S3 into query-ready ClickHouse tables, orchestrated by Dagster."""
    # `kill` unwinds like Ctrl-C, so every command stops the SeaweedFS and Dagster processes it started.
    # SIGINT is set too: started with it ignored (a background job of a script), the processes a command
    # starts would inherit that and ignore the SIGINT that asks them to stop cleanly (a handler is reset to
    # the default in every program started from here).
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)


# Set by SIGTERM/SIGINT. The KeyboardInterrupt a signal raises is lost when it lands in a finalizer
# ("Exception ignored in ..."), which an in-process Dagster run makes likely: commands check it.
_stop_requested = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    _stop_requested.set()
    raise KeyboardInterrupt


@main.command()
@click.option("--port", default=3000, show_default=True, help="Dagster UI port (bound to 127.0.0.1)")
@click.option("--demo/--no-demo", default=True, show_default=True, help="write demo batches while running")
@click.option("--demo-interval", default=20.0, show_default=True, help="seconds between demo batches")
def dev(port: int, demo: bool, demo_interval: float) -> None:
    """Local S3 + Dagster UI on the embedded defaults, with demo data flowing."""
    _require_free_port(port)
    with environment() as settings:
        from orchestration.dagster_runs import dagster_dev_command

        with _dagster(settings):  # writes dagster.yaml, sets the server-mode pool limits, applies the schema
            os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
        stop = threading.Event()
        if demo:
            threading.Thread(target=_demo_loop, args=(settings, demo_interval, stop), daemon=True).start()
        console.print(
            f"[bold green]tracehouse[/] UI on http://127.0.0.1:{port}  (data in {settings.home_path})"
        )
        process = None
        try:
            if _stop_requested.is_set():  # a stop that arrived during the schema run and was lost there
                raise KeyboardInterrupt
            process = subprocess.Popen(dagster_dev_command(port))
            process.wait()
        except KeyboardInterrupt:
            if process is None:
                raise
            stop_tree(process, grace=30)
        finally:
            stop.set()


def _dagster(settings: Settings) -> DagsterInstance:
    """The UI's instance, after a run of ``apply_schema`` on it: every command that does pipeline work
    applies pending ClickHouse migrations first, as a run the UI shows."""
    from orchestration.dagster_runs import instance

    dagster = instance(settings)
    _apply_schema(dagster)
    return dagster


def _apply_schema(dagster: DagsterInstance) -> dict:
    from orchestration.dagster_runs import materialized, run_job

    run = run_job("apply_schema", dagster)
    _require_success(run)
    return materialized(run, "clickhouse_schema")[0]


@main.command()
def schema() -> None:
    """Apply pending ClickHouse migrations (a run of apply_schema, shown in the Dagster UI). A deployment
    runs this after every upgrade, before starting the daemon: the pipeline refuses an older schema."""
    from orchestration.dagster_runs import instance

    with console.status("applying ClickHouse migrations (apply_schema)"), instance(load_settings()) as on:
        applied = _apply_schema(on)
    version, names = applied["schema_version"], applied["migrations_applied"]
    console.print(f"schema at migration {version:04d}; applied: {names}")


def _require_free_port(port: int) -> None:
    """Stop before starting anything when the UI port is taken: `dagster dev` would log the bind error and
    keep its daemon launching runs with no UI to see them."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise click.ClickException(
                f"port {port} on 127.0.0.1 is in use ({exc.strerror}): stop what listens there, or pick "
                f"another port: PORT={port + 1} make dev, or tracehouse dev --port {port + 1}"
            ) from None


def _demo_loop(settings: Settings, interval: float, stop: threading.Event) -> None:
    from orchestration.generate import generate
    from orchestration.local_s3 import raw_bucket_client

    client = raw_bucket_client(settings)
    while not stop.is_set():
        try:
            generate(client, settings.raw_bucket, settings.raw_prefix, objects=4, traces_per_object=25)
        except Exception as exc:  # keep the demo going through a hiccup, but say so
            console.print(f"[yellow]demo generator: {exc}[/]")
        stop.wait(interval)


@main.command("run-once")
@click.option("--no-delay", is_flag=True, help="propagate everything committed now (delay 0)")
def run_once(no_delay: bool) -> None:
    """Process every pending raw object end to end — load, propagate, derived tables — headless, and print
    a summary. Each stage is a run of the code location's jobs on the UI's instance; a fault fails at once
    (no retry policy) with its one line and exit code."""
    from orchestration.dagster_runs import materialized, run_job

    with environment() as settings:
        dagster = _dagster(settings)
        with _progress() as progress:
            stages = progress.add_task("loading raw objects (reconcile_raw_bucket)", total=4)
            load = run_job(
                "reconcile_raw_bucket",
                dagster,
                run_config={"ops": {"staging_tables": {"config": {"scan_all": True, "retry": False}}}},
            )
            _require_success(load)
            progress.update(stages, advance=1, description="propagating windows (propagate_events)")
            config = {"max_windows": 10**6, "retry": False, **({"delay_seconds": 0} if no_delay else {})}
            propagated = run_job(
                "propagate_events", dagster, run_config={"ops": {"propagation": {"config": config}}}
            )
            _require_success(propagated)
            progress.update(
                stages, advance=1, description="daily models: changed days (refresh_changed_days)"
            )
            days = run_job("refresh_changed_days", dagster)
            _require_success(days)
            progress.update(stages, advance=1, description="table models: changed keys (refresh_models)")
            tables = run_job("refresh_models", dagster)
            _require_success(tables)
            progress.advance(stages)
    _print_load_summary(materialized(load, "ingest_quarantine")[0]["load_summary"])
    events = (materialized(propagated, "events") or [{}])[0]
    delay_note = "" if no_delay else f" (windows ending ≥ {settings.propagation_delay_seconds}s ago)"
    print(
        f"propagated={events.get('observations_propagated', 0)} repaired={events.get('rows_repaired', 0)} "
        f"windows={events.get('windows', 0)} scores={events.get('scores_propagated', 0)}{delay_note}"
    )
    _print_model_builds(days, tables)


def _print_model_builds(days, tables) -> None:
    """One line per model: the rows it built and how (from the runs' materializations)."""
    from orchestration.dagster_runs import materialized
    from orchestration.models import load_models

    for name, model in load_models().items():
        if model.incremental:
            built = materialized(days, name)
            rows = sum(m["dagster/row_count"] for m in built)
            how = f"{built[0]['build']}, {len(built)} days" if built else "no day changed"
        else:
            meta = materialized(tables, name)[0]
            rows = meta["rows_built"]
            how = (
                "whole" if meta["build"] == "whole"
                else f"{meta['changed_keys']} changed keys, {meta['partitions_replaced']} partitions"
            )  # fmt: skip
        print(f"model={name} rows={rows} build={how!r}")


@main.command()
@click.argument("model")
@click.option(
    "--days", default=None, help="comma-separated YYYY-MM-DD days (incremental models); default all"
)
def replay(model: str, days: str | None) -> None:
    """Blue/green rebuild of a derived table from events, or of events itself from the raw bucket (MODEL =
    events; the derived tables are rebuilt after it) — as runs of the Dagster instance."""
    from assets.models import daily_partitions
    from orchestration.dagster_runs import (
        contiguous,
        materialized,
        partition_range,
        run_job,
    )
    from orchestration.models import load_models

    models = load_models()
    if model != "events" and model not in models:
        raise click.BadParameter(
            f"unknown model {model!r}; models: events, {', '.join(models)}", param_hint="MODEL"
        )
    selected = [date.fromisoformat(d) for d in days.split(",")] if days else None
    daily = daily_partitions(load_settings().start_date)
    outside = [d for d in selected or [] if not daily.has_partition_key(d.isoformat())]
    if outside:
        raise click.BadParameter(f"not daily partitions (TRACEHOUSE_START_DATE..tomorrow): {outside}")
    started = time.monotonic()
    # only a replay from raw needs S3 (and the local SeaweedFS when no endpoint is configured)
    with environment() if model == "events" else nullcontext(load_settings()) as settings:
        dagster = _dagster(settings)
        if model == "events":
            with console.status("loading the raw bucket into a shadow database and propagating it"):
                run = run_job("replay_events_from_raw", dagster)
            _require_success(run)
            events = materialized(run, "events")[0]
            rows = events["dagster/row_count"]
            console.print(
                f"events replayed from {events['replayed_from_raw_objects']} raw objects "
                f"({events['live_observations_merged_again']} observations committed meanwhile merged "
                f"again); {len(models)} derived tables rebuilt"
            )
        elif not models[model].incremental:
            with console.status(f"rebuilding {model} into a shadow table"):
                run = run_job(
                    "replay_models",
                    dagster,
                    assets=[model],
                    run_config={"ops": {model: {"config": {"full": True}}}},
                )
            _require_success(run)
            rows = materialized(run, model)[0]["rows_built"]
        else:
            rows = 0
            for first, last in contiguous(selected or _days_with_events(settings)):
                with console.status(f"rebuilding {model} {first}..{last} into a shadow table"):
                    run = run_job(
                        "rebuild_recent_days",
                        dagster,
                        assets=[model],
                        tags=partition_range(str(first), str(last)),
                    )
                _require_success(run)
                rows += materialized(run, model)[0]["rows_built"]
    console.print(f"{model}: {rows} rows, swapped in after {time.monotonic() - started:.1f}s")
    print(f"replayed={model} rows={rows}")


def _require_success(run) -> None:
    """A failed run ends the command like any fault: one line, the details in the log, its exit code."""
    from orchestration.dagster_runs import failure
    from orchestration.faults import EXIT_FAILED

    if run.success:
        return
    why = failure(run)
    if why.interrupted or _stop_requested.is_set():  # stopped (SIGINT/SIGTERM), not a fault: as Ctrl-C
        raise KeyboardInterrupt
    log = _log_traceback(f"run {run.run_id} of {run.job_def.name} failed\n{why.details}")
    click.echo(f"error: {why.reason} (run {run.run_id} in the Dagster UI; details in {log})", err=True)
    raise SystemExit(why.metadata.get("fault_code", EXIT_FAILED))


def _clickhouse(settings: Settings):
    """ClickHouse for the command's own reads and the legacy demo tables, opened as the code location's
    resource opens it: CLICKHOUSE_URL (else embedded chDB under the home) and CLICKHOUSE_CLUSTER."""
    from orchestration.clickhouse import open_clickhouse

    url, cluster = os.environ.get("CLICKHOUSE_URL"), os.environ.get("CLICKHOUSE_CLUSTER")
    return open_clickhouse(url, settings.chdb_path, cluster=cluster)


def _days_with_events(settings: Settings) -> list[date]:
    from assets.models import daily_partitions
    from orchestration.models import days_in_events

    daily = daily_partitions(settings.start_date)
    with _clickhouse(settings) as ch:  # after apply_schema
        return [d for d in days_in_events(ch) if daily.has_partition_key(d.isoformat())]


def _generate_legacy(observations: int) -> None:
    from orchestration.legacy import generate_legacy

    settings = load_settings()
    with _clickhouse(settings) as ch:  # legacy tables only
        with console.status(f"writing {observations:,} legacy observations"):
            written = generate_legacy(ch, observations, db=settings.legacy_database)
    console.print(
        f"legacy tables in {settings.legacy_database}: {written['observations']:,} observations, "
        f"{written['traces']:,} traces, with later versions, duplicates and deletions"
    )


@main.command()
@click.option("--rows-per-part", default=500_000, show_default=True, help="legacy rows per frozen part")
@click.option("--redo", is_flag=True, help="migrate every part again, even those already verified")
def migrate(rows_per_part: int, redo: bool) -> None:
    """Historic migration, headless: freeze the legacy tables into parts, migrate and verify each part —
    the legacy_snapshot asset and one legacy_migration partition per part, as runs of the Dagster instance."""
    from assets.migration import partition_key
    from orchestration.dagster_runs import failure, materialized, run_job
    from orchestration.migration import done_parts, parts

    settings = load_settings()
    dagster = _dagster(settings)
    with console.status("copying and freezing the legacy tables (run snapshot_legacy)"):
        snap = run_job(
            "snapshot_legacy",
            dagster,
            run_config={"ops": {"legacy_snapshot": {"config": {"rows_per_part": rows_per_part}}}},
        )
    _require_success(snap)
    with _clickhouse(settings) as ch:
        found = parts(ch)
        skip = set() if redo else done_parts(ch)
    todo = [p for p in found if p.name not in skip]
    migrated, failed = [], []
    with _progress() as progress:
        task = progress.add_task("migrating parts", total=len(found), completed=len(found) - len(todo))
        for part in todo:
            run = run_job("migrate_legacy", dagster, partition_key=partition_key(part))
            if run.success:
                migrated.extend(materialized(run, "legacy_migration"))
            else:
                failed.append(failure(run))
            progress.advance(task)
    table = Table(title="legacy parts → events")
    for column in (
        "parts",
        "migrated now",
        "skipped (done)",
        "observations",
        "superseded",
        "failed",
        "rows/s",
    ):
        table.add_column(column, justify="right")
    seconds = sum(m["seconds"] for m in migrated)
    observations = sum(m["observations"] for m in migrated)
    table.add_row(
        str(len(found)), str(len(migrated)), str(len(found) - len(todo)), str(observations),
        str(sum(m["superseded_rows_removed"] for m in migrated)), str(len(failed)),
        f"{observations / seconds:,.0f}" if seconds else "-",
    )  # fmt: skip
    console.print(table)
    print(f"parts={len(found)} migrated={len(migrated)} observations={observations} failed={len(failed)}")
    for why in failed:
        reason, metadata = why.reason, why.metadata
        figures = " ".join(
            f"{k}={metadata[k]}"
            for k in ("missing", "duplicates", "attributes_lost", "scores_missing")
            if k in metadata
        )
        console.print(f"[red]{reason}[/] {figures}")
    if failed:
        raise SystemExit(1)


@main.command()
@click.option("--scale", default=1.0, show_default=True, help="multiply data sizes (0.05: a smoke run)")
@click.option("--only", default="e2e,ingest,propagation,summaries,reads,migration", show_default=True)
@click.option(
    "--results", type=click.Path(path_type=Path), default=None, help="where to write (bench/results)"
)
def bench(scale: float, only: str, results: Path | None) -> None:
    """Measure every stage on the embedded defaults and write bench/results/latest.{json,md}."""
    import tempfile

    from bench.run import RESULTS, STAGES, markdown, run, run_e2e_stage
    from orchestration.clickhouse import open_clickhouse
    from orchestration.local_s3 import raw_bucket_client

    chosen = tuple(s for s in only.split(",") if s)
    unknown = set(chosen) - set(STAGES)
    if unknown:
        raise click.BadParameter(
            f"unknown stages {sorted(unknown)}; choose from {STAGES}", param_hint="--only"
        )
    freed = clear_abandoned_bench_homes(Path(tempfile.gettempdir()))
    if freed:
        console.log(f"removed {freed / 1e6:,.0f} MB left by benchmark runs that were killed")
    # a throw-away home: the benchmark never touches the data of `tracehouse dev`
    with tempfile.TemporaryDirectory(prefix=BENCH_HOME_PREFIX) as home:
        (Path(home) / BENCH_OWNER_FILE).write_text(str(os.getpid()))
        os.environ["TRACEHOUSE_HOME"] = home
        os.environ.pop("S3_ENDPOINT_URL", None)
        with environment() as settings, console.status("benchmarking") as status:
            client = raw_bucket_client(settings)

            def say(message: str) -> None:
                status.update(message)
                console.log(message)

            prior = run_e2e_stage(Path(home) / "e2e", client, scale, say) if "e2e" in chosen else None
            with open_clickhouse(None, settings.chdb_path) as ch:
                result = run(ch, client, settings, scale, chosen, say, results or RESULTS, prior)
    console.print(markdown(result))
    console.print(f"written: {results or RESULTS}/latest.json, latest.md")


BENCH_HOME_PREFIX = "tracehouse-bench-"
BENCH_OWNER_FILE = "owner.pid"


def clear_abandoned_bench_homes(tmp: Path) -> int:
    """Remove the homes of benchmark runs whose process is gone (a SIGKILL skips the cleanup, and one run
    leaves ~30 GB); returns the bytes freed. Homes without an owner file are left alone."""
    freed = 0
    for home in tmp.glob(f"{BENCH_HOME_PREFIX}*"):
        try:
            owner = int((home / BENCH_OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if running(owner):
            continue
        freed += sum(f.stat().st_size for f in home.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(home, ignore_errors=True)
    return freed


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _print_load_summary(summary: dict) -> None:
    """The load stage's summary (``LoadReport.summary``, as the run recorded it in its metadata)."""
    rows = summary["rows"]
    table = Table(title="raw objects → staging")
    for column in ("objects loaded", "quarantined", "observations", "traces", "scores", "MB loaded"):
        table.add_column(column, justify="right")
    table.add_row(
        str(summary["loaded"]),
        str(summary["quarantined"]),
        str(rows["observations"]),
        str(rows["traces"]),
        str(rows["scores"]),
        f"{summary['bytes_loaded'] / 1e6:.2f}",
    )
    Console().print(table)
    # one plain line for scripts and logs (the table wraps on narrow terminals)
    print(
        f"loaded={summary['loaded']} quarantined={summary['quarantined']} "
        f"observations={rows['observations']} traces={rows['traces']} scores={rows['scores']}"
    )
    for reason, count in summary["skipped_by_reason"].items():
        print(f"skipped {count}: {reason}")
    for key, reason in summary["quarantined_objects"]:
        Console().print(f"[yellow]quarantined[/] {key}: {reason}")
    for key, note in summary["loaded_with_unmapped"]:
        Console().print(f"[yellow]loaded with unmapped values[/] {key}: {note}")
    for note in summary["notes"]:
        Console().print(f"[yellow]note[/] {note}")


@main.command()
@click.argument("model", required=False)
def lineage(model: str | None) -> None:
    """Column lineage of the derived tables (dbt_like_sql/): each column and the source columns it is
    computed from, read from the SQL with sqlglot. No ClickHouse or S3 needed."""
    from orchestration.models import column_lineage, load_models

    models = load_models()
    if model is not None and model not in models:
        known = ", ".join(sorted(models))
        raise click.BadParameter(f"no model {model!r}; models: {known}", param_hint="MODEL")
    for name in [model] if model else sorted(models):
        table = Table(title=f"{name}: column lineage")
        table.add_column("column")
        table.add_column("computed from")
        for column, deps in column_lineage(models[name], models).items():
            table.add_row(column, ", ".join(f"{t}.{c}" for t, c in deps) or "(a constant)")
        Console().print(table)


@main.command()
@click.option("--objects", default=12, show_default=True, help="objects to write")
@click.option("--traces-per-object", default=20, show_default=True)
@click.option(
    "--formats",
    default="otlp_json,otlp_proto,ingestion,parquet",
    show_default=True,
    help="comma-separated, written in rotation",
)
@click.option("--projects", default="demo-a,demo-b", show_default=True, help="comma-separated project ids")
@click.option(
    "--payload-bytes", default=2000, show_default=True, help="approximate input+output size per generation"
)
@click.option("--gzip/--no-gzip", "compress", default=True, show_default=True)
@click.option(
    "--late-updates/--no-late-updates",
    default=True,
    show_default=True,
    help="ingestion batches send user/session in a second trace-create after the observations",
)
@click.option("--seed", type=int, default=None)
@click.option(
    "--layout",
    type=click.Choice(["tracehouse", "langfuse"]),
    default="tracehouse",
    show_default=True,
    help="langfuse: a self-hosted Langfuse's event bucket (otel/ requests in protobufjs shapes, events per "
    "entity, derived trace files, evals/ and media/ noise) under RAW_PREFIX",
)
@click.option(
    "--legacy",
    "legacy_observations",
    type=int,
    default=None,
    help="instead of raw batches: fill the legacy V3 tables with this many observations (+ versions)",
)
def generate(
    objects: int,
    traces_per_object: int,
    formats: str,
    projects: str,
    payload_bytes: int,
    compress: bool,
    late_updates: bool,
    seed: int | None,
    layout: str,
    legacy_observations: int | None,
) -> None:
    """Write synthetic raw batches of every format into the raw bucket (or legacy tables with --legacy)."""
    from orchestration.generate import generate as write
    from orchestration.langfuse_bucket import write_langfuse_bucket
    from orchestration.local_s3 import raw_bucket_client

    if legacy_observations is not None:
        _generate_legacy(legacy_observations)
        return
    with environment() as settings:
        client = raw_bucket_client(settings)
        project_ids = tuple(p for p in projects.split(",") if p)
        if layout == "langfuse":
            summary = write_langfuse_bucket(
                client, settings.raw_bucket, settings.raw_prefix, objects=objects,
                traces_per_object=traces_per_object, projects=project_ids, payload_bytes=payload_bytes,
                seed=seed,
            )  # fmt: skip
        else:
            with _progress() as progress:
                task = progress.add_task("writing raw objects", total=objects)
                summary = write(
                    client,
                    settings.raw_bucket,
                    settings.raw_prefix,
                    objects=objects,
                    traces_per_object=traces_per_object,
                    formats=tuple(f for f in formats.split(",") if f),
                    projects=project_ids,
                    compress=compress,
                    payload_bytes=payload_bytes,
                    late_updates=late_updates,
                    seed=seed,
                    on_object=lambda _k, _n: progress.advance(task),
                )
        Console().print(
            f"wrote {summary.objects} objects, {layout} layout ({summary.bytes / 1e6:.2f} MB): "
            f"{summary.traces} traces, {summary.observations} observations into s3://{settings.raw_bucket}/{settings.raw_prefix}"
        )
