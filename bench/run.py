"""``tracehouse bench``: generate data, measure every stage on the embedded defaults, write bench/results/.

Stages (``--only`` picks some): ``ingest`` (S3 → staging per format, and the ``url()`` floor),
``propagation`` (window × history), ``summaries`` (keyed refresh after one window vs a whole rebuild),
``reads`` (UI queries on events_core vs the legacy V3 tables),
``migration`` (legacy parts → events, rows/s, with 1, 2 and 4 parts at once). Each stage also reports the
peak RSS of this process (chDB runs in it) while the stage ran. Ratios measured in one run matter more than
absolute figures on a shared machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench import propagation as propagation_bench
from bench import summaries as summaries_bench
from orchestration.clickhouse import ClickHouse, query_scalar
from orchestration.generate import generate
from orchestration.legacy import generate_legacy
from orchestration.loader import load_objects
from orchestration.migration import migrate_part, prepare
from orchestration.schema import apply_migrations
from orchestration.settings import DATABASE, Settings

STAGES = ("e2e", "ingest", "propagation", "summaries", "reads", "migration")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Report:
    figures: dict[str, Any] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)


@contextmanager
def peak_rss(report: Report, stage: str) -> Iterator[None]:
    """Sample this process' RSS every 50 ms while a stage runs."""
    process, peak, stop = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        report.peak_rss_mb[stage] = round(peak[0] / 2**20, 1)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


# --- ingest ------------------------------------------------------------------------------------------

_FLOOR_TABLE = "CREATE TABLE IF NOT EXISTS {db}.bench_floor AS {db}.observations_staging"
# The same objects into a table with the staging columns, with no checks and no mapping rules: the typed
# parse, one row per span, the attributes as the metadata map and the obvious columns looked up in it.
_FLOOR_INSERT = """
INSERT INTO {db}.bench_floor (project_id, trace_id, id, parent_observation_id, name, start_time, end_time,
    input, output, metadata, user_id, session_id, source_format, source_key, event_ts)
SELECT 'bench', sp.traceId, sp.spanId, sp.parentSpanId, sp.name,
       fromUnixTimestamp64Nano(toInt64OrZero(sp.startTimeUnixNano)),
       fromUnixTimestamp64Nano(toInt64OrZero(sp.endTimeUnixNano)),
       m['langfuse.observation.input'], m['langfuse.observation.output'], m, m['user.id'], m['session.id'],
       'otlp_json', _path, fromUnixTimestamp64Nano(toInt64OrZero(sp.endTimeUnixNano))
FROM (
    SELECT JSONExtract(raw, 'resourceSpans', 'Array(Tuple(scopeSpans Array(Tuple(spans Array(Tuple(
               traceId String, spanId String, parentSpanId String, name String, startTimeUnixNano String,
               endTimeUnixNano String,
               attributes Array(Tuple(key String, value Tuple(stringValue String)))))))))')
           AS resource_spans,
           _path
    FROM ({sources})
)
ARRAY JOIN resource_spans AS rs
ARRAY JOIN rs.scopeSpans AS ss
ARRAY JOIN ss.spans AS sp
ARRAY JOIN [mapFromArrays(sp.attributes.key, sp.attributes.value.stringValue)] AS m
"""


def _ingest(ch: ClickHouse, s3, settings: Settings, scale: float, report: Report) -> None:
    """Each format loaded by load_objects, and the floor for OTLP/JSON."""
    objects = max(4, int(40 * scale))
    figures = {}
    for case in ("otlp_json", "otlp_proto", "ingestion"):
        written = generate(
            s3, settings.raw_bucket, settings.raw_prefix, objects=objects, traces_per_object=200,
            projects=(f"bench-{case.replace('_', '-')}",), formats=(case,), compress=False,
            payload_bytes=2200, late_updates=False, seed=1,
        )  # fmt: skip
        loaded, seconds = _timed(lambda w=written: load_objects(ch, s3, w.keys, settings, run_id="bench"))
        rows = loaded.rows("observations")
        assert loaded.count("quarantined") == 0, [o.reason for o in loaded.quarantined][:3]
        figures[case] = {
            "objects": written.objects,
            "spans": rows,
            "mb": round(written.bytes / 1e6, 1),
            "seconds": round(seconds, 2),
            "spans_per_s": round(rows / seconds),
            "mb_per_s": round(written.bytes / 1e6 / seconds, 1),
            "bytes_per_span": round(written.bytes / max(rows, 1)),
        }
        if case == "otlp_json":
            figures["floor_otlp_json"] = _floor(ch, s3, settings, written.keys)
            figures["floor_otlp_json"]["ratio_tracehouse_to_floor"] = round(
                seconds / figures["floor_otlp_json"]["seconds"], 2
            )
    report.figures["ingest"] = figures


def _floor(ch: ClickHouse, s3, settings: Settings, keys: list[str]) -> dict[str, Any]:
    """A bare INSERT ... SELECT from the objects (url() over presigned URLs: no secret in SQL text)."""
    ch.command(_FLOOR_TABLE.format(db=DATABASE))
    ch.command(f"TRUNCATE TABLE {DATABASE}.bench_floor")
    urls = [
        s3.generate_presigned_url(
            "get_object", Params={"Bucket": settings.raw_bucket, "Key": k}, ExpiresIn=3600
        )
        for k in keys
    ]
    sources = " UNION ALL ".join(
        f"SELECT raw, _path FROM url({{u{i}:String}}, 'RawBLOB', 'raw String')"  # noqa: S608
        for i in range(len(urls))
    )
    params = {f"u{i}": u for i, u in enumerate(urls)}
    _, seconds = _timed(lambda: ch.command(_FLOOR_INSERT.format(db=DATABASE, sources=sources), params))
    rows = query_scalar(ch, f"SELECT count() FROM {DATABASE}.bench_floor")  # noqa: S608
    return {"spans": rows, "seconds": round(seconds, 2), "spans_per_s": round(rows / seconds)}


# --- propagation -------------------------------------------------------------------------------------


def _propagation(ch: ClickHouse, scale: float, report: Report, say: Callable[[str], None]) -> None:
    windows = (int(100_000 * scale), int(1_000_000 * scale))
    histories = (int(1_000_000 * scale), int(10_000_000 * scale))
    ch.command(f"TRUNCATE TABLE {DATABASE}.events")
    ch.command(f"TRUNCATE TABLE {DATABASE}.events_core")
    figures, floors = propagation_bench.run(ch, windows, histories, progress=say)
    by_window: dict[int, list] = {}
    for f in figures:
        by_window.setdefault(f.window, []).append(f)
    report.figures["propagation"] = {
        "runs": [
            {
                "window": f.window,
                "history": f.history,
                "seconds": round(f.seconds, 2),
                "obs_per_s": round(f.per_second),
                "floor_rows_per_s": round(f.floor_per_second),
            }
            for f in figures
        ],
        "history_x10_cost": {
            str(w): round(fs[-1].seconds / fs[0].seconds, 2) for w, fs in by_window.items() if len(fs) > 1
        },
        "floor_insert_copy": [
            {
                "rows": f.rows,
                "history": f.history,
                "seconds": round(f.seconds, 2),
                "rows_per_s": round(f.per_second),
            }
            for f in floors
        ],
    }


# --- reads -------------------------------------------------------------------------------------------

READS = {
    "latest_50_in_24h": (
        "SELECT id, name, type, start_time, trace_name, user_id FROM {db}.{core} "
        "WHERE project_id = {{p:String}} AND start_time >= now64(6) - INTERVAL 1 DAY "
        "ORDER BY start_time DESC LIMIT 50",
        "SELECT o.id, o.name, o.type, o.start_time, t.name, t.user_id FROM "
        "(SELECT * FROM {legacy}.observations FINAL WHERE project_id = {{p:String}} "
        " AND start_time >= now64(3) - INTERVAL 1 DAY) AS o "
        "LEFT JOIN (SELECT * FROM {legacy}.traces FINAL WHERE project_id = {{p:String}}) AS t "
        "ON o.trace_id = t.id "
        "ORDER BY o.start_time DESC LIMIT 50",
    ),
    "cost_per_user_30d": (
        "SELECT user_id, sum(total_cost) AS cost FROM {db}.{core} WHERE project_id = {{p:String}} "
        "AND start_time >= now64(6) - INTERVAL 30 DAY GROUP BY user_id ORDER BY cost DESC LIMIT 100",
        "SELECT t.user_id, sum(o.total_cost) AS cost FROM "
        "(SELECT trace_id, total_cost FROM {legacy}.observations FINAL WHERE project_id = {{p:String}} "
        " AND start_time >= now64(3) - INTERVAL 30 DAY) AS o "
        "INNER JOIN (SELECT id, user_id FROM {legacy}.traces FINAL WHERE project_id = {{p:String}}) AS t "
        "ON o.trace_id = t.id GROUP BY t.user_id ORDER BY cost DESC LIMIT 100",
    ),
    "one_trace": (
        "SELECT * FROM {db}.{core} WHERE project_id = {{p:String}} AND trace_id = {{t:String}} "
        "ORDER BY start_time",
        "SELECT o.*, t.name, t.user_id, t.session_id, t.tags FROM "
        "(SELECT * FROM {legacy}.observations FINAL WHERE project_id = {{p:String}} "
        " AND trace_id = {{t:String}}) AS o "
        "LEFT JOIN (SELECT * FROM {legacy}.traces FINAL WHERE project_id = {{p:String}} "
        " AND id = {{t:String}}) AS t "
        "ON o.trace_id = t.id ORDER BY o.start_time",
    ),
    "filter_tag_user_session_7d": (
        "SELECT count(), sum(total_cost) FROM {db}.{core} WHERE project_id = {{p:String}} "
        "AND start_time >= now64(6) - INTERVAL 7 DAY AND has(tags, 'b') AND user_id = {{u:String}}",
        "SELECT count(), sum(o.total_cost) FROM "
        "(SELECT trace_id, total_cost FROM {legacy}.observations FINAL WHERE project_id = {{p:String}} "
        " AND start_time >= now64(3) - INTERVAL 7 DAY) AS o "
        "INNER JOIN (SELECT id FROM {legacy}.traces FINAL WHERE project_id = {{p:String}} AND has(tags, 'b') "
        " AND user_id = {{u:String}}) AS t ON o.trace_id = t.id",
    ),
}

_FILL_EVENTS = """
INSERT INTO {db}.events (project_id, trace_id, id, parent_observation_id, type, name, start_time, end_time,
    level, input, output, provided_model_name, usage_details, cost_details, total_cost, trace_name, user_id,
    session_id, tags, release, event_ts, source_version, propagated_at, propagation_id)
SELECT o.project_id, o.trace_id, o.id, ifNull(o.parent_observation_id, ''), o.type, o.name, o.start_time,
    o.end_time, o.level, ifNull(o.input, ''), ifNull(o.output, ''), ifNull(o.provided_model_name, ''),
    o.usage_details, o.cost_details, o.total_cost, t.name, ifNull(t.user_id, ''), ifNull(t.session_id, ''),
    t.tags, ifNull(t.release, ''), o.event_ts, o.event_ts, o.event_ts, 'bench'
FROM (SELECT * FROM {legacy}.observations FINAL) AS o
LEFT JOIN (SELECT * FROM {legacy}.traces FINAL) AS t ON o.project_id = t.project_id AND o.trace_id = t.id
SETTINGS parallel_view_processing = 1
"""


def _median_ms(ch: ClickHouse, sql: str, params: dict, runs: int = 5) -> float:
    ch.query_arrow(sql, params)  # warm
    return round(
        statistics.median(_timed(lambda: ch.query_arrow(sql, params))[1] for _ in range(runs)) * 1000, 1
    )


HIDDEN_ROWS = 100_000  # superseded rows a window of many updates hides between its publish and its delete


def _hide_rows(ch: ClickHouse, rows: int) -> None:
    """A propagation mid-window as readers meet it: ``rows`` superseded rows listed in events_hidden."""
    ch.command(
        f"INSERT INTO {DATABASE}.events_hidden (propagation_id, kind, project_id, id, row_propagation_id) "  # noqa: S608
        f"SELECT 'bench-hidden', 'retired', project_id, id, propagation_id FROM {DATABASE}.events_core "
        f"LIMIT {int(rows)}"
    )


def _reads(ch: ClickHouse, scale: float, report: Report, say: Callable[[str], None]) -> None:
    legacy = "bench_legacy_reads"
    observations = int(10_000_000 * scale)
    say(f"legacy tables: {observations:,} observations")
    ch.command(f"DROP DATABASE IF EXISTS {legacy} SYNC")
    generate_legacy(ch, observations, per_trace=8, projects=4, db=legacy)
    ch.command(f"TRUNCATE TABLE {DATABASE}.events")
    ch.command(f"TRUNCATE TABLE {DATABASE}.events_core")
    say("events_core with the same observations")
    ch.command(_FILL_EVENTS.format(db=DATABASE, legacy=legacy))
    propagation_bench.settle(ch)  # both sides read merged tables, as a live deployment would
    rows = query_scalar(ch, f"SELECT count() FROM {DATABASE}.events_core")  # noqa: S608
    sample = ch.query_arrow(
        f"SELECT trace_id, user_id FROM {DATABASE}.events_core WHERE project_id = 'legacy-1' "  # noqa: S608
        "AND user_id != '' AND has(tags, 'b') LIMIT 1"
    ).to_pylist()[0]
    params = {"p": "legacy-1", "t": sample["trace_id"], "u": sample["user_id"]}
    figures: dict[str, Any] = {"observations": rows}
    for name, (new, old) in READS.items():
        say(f"read: {name}")
        new_ms = _median_ms(ch, new.format(db=DATABASE, core="events_core"), params)
        old_ms = _median_ms(ch, old.format(legacy=legacy), params)
        # the view readers use (in-flight and superseded rows hidden), between windows (nothing hidden) and
        # mid-window with HIDDEN_ROWS superseded rows listed
        view = new.format(db=DATABASE, core="events_core_current")
        view_ms = _median_ms(ch, view, params)
        _hide_rows(ch, HIDDEN_ROWS)
        view_busy_ms = _median_ms(ch, view, params)
        ch.command(f"ALTER TABLE {DATABASE}.events_hidden DROP PARTITION 'bench-hidden'")
        figures[name] = {
            "events_core_ms": new_ms,
            "events_core_current_ms": view_ms,
            "events_core_current_mid_window_ms": view_busy_ms,
            "legacy_v3_ms": old_ms,
            "speedup": round(old_ms / new_ms, 1),
        }
    ch.command(f"DROP DATABASE IF EXISTS {legacy} SYNC")
    report.figures["reads"] = figures


# --- migration ---------------------------------------------------------------------------------------


def _migration(ch: ClickHouse, scale: float, report: Report, say: Callable[[str], None]) -> None:
    legacy = "bench_legacy_migration"
    observations = int(2_000_000 * scale)  # ~2.7M legacy rows with their duplicate versions
    ch.command(f"DROP DATABASE IF EXISTS {legacy} SYNC")
    generate_legacy(ch, observations, per_trace=8, projects=4, db=legacy)
    source_rows = query_scalar(ch, f"SELECT count() FROM {legacy}.observations")  # noqa: S608
    figures: dict[str, Any] = {"legacy_rows": source_rows, "observations": observations, "runs": []}
    for concurrency in (1, 2, 4):
        target = f"bench_migrate_{concurrency}"
        ch.command(f"DROP DATABASE IF EXISTS {target} SYNC")
        apply_migrations(ch, db=target)
        found = prepare(ch, rows_per_part=max(50_000, source_rows // 12), db=target, legacy=legacy)
        say(f"migration: {len(found)} parts, {concurrency} at a time")
        with ThreadPoolExecutor(concurrency) as pool:
            results, seconds = _timed(
                lambda t=target, f=found, p=pool: list(p.map(lambda x: migrate_part(ch, x.name, t), f))
            )
        assert all(r.verified for r in results)
        figures["runs"].append(
            {
                "concurrency": concurrency,
                "parts": len(found),
                "seconds": round(seconds, 2),
                "legacy_rows_per_s": round(source_rows / seconds),
                "per_part_rows_per_s_median": round(
                    statistics.median(r.observations / r.seconds for r in results)
                ),
            }
        )
        ch.command(f"DROP DATABASE IF EXISTS {target} SYNC")
    ch.command(f"DROP DATABASE IF EXISTS {legacy} SYNC")
    report.figures["migration"] = figures


# --- driver ------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "chdb": version("chdb"),
        "dagster": version("dagster"),
        "platform": platform.platform(),
    }


def buffered_write(directory: Path, mib: int) -> dict[str, int]:
    """MB/s of writing a new ``mib`` MiB file without fsync: the page cache's rate, which every part write
    pays. On a virtual machine whose memory the host hands out on first touch it can be ten times lower than
    when the guest reuses pages it already has (404 MB/s vs 5.3 GB/s, same machine, same minute), so the
    results say what it was when they were measured."""
    block = bytes(8 * 2**20)
    path = directory / "bench-write-probe"
    started = time.perf_counter()
    try:
        with path.open("wb") as out:
            for _ in range(mib // 8):
                out.write(block)
        return {"mib": mib, "mb_s": round(mib * 2**20 / 1e6 / (time.perf_counter() - started))}
    finally:
        path.unlink(missing_ok=True)


def run(
    ch: ClickHouse,
    s3,
    settings: Settings,
    scale: float = 1.0,
    only: tuple[str, ...] = STAGES,
    say: Callable[[str], None] = lambda _m: None,
    results_dir: Path | None = None,
    prior: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the in-process stages; ``prior`` holds figures measured before (the e2e stage needs the chDB
    folder free, so the CLI runs it first). With ``results_dir`` the results are written after every stage."""
    apply_migrations(ch)
    write_rate = buffered_write(settings.home_path, mib=max(64, int(1024 * scale)))
    report = Report(
        figures=dict((prior or {}).get("figures", {})), peak_rss_mb=dict((prior or {}).get("rss", {}))
    )
    started = time.perf_counter()
    stages = {
        "ingest": lambda: _ingest(ch, s3, settings, scale, report),
        "propagation": lambda: _propagation(ch, scale, report, say),
        "summaries": lambda: report.figures.__setitem__(
            "summaries", summaries_bench.run(ch, int(10_000_000 * scale), int(100_000 * scale), say)
        ),
        "reads": lambda: _reads(ch, scale, report, say),
        "migration": lambda: _migration(ch, scale, report, say),
    }

    def result() -> dict[str, Any]:
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "scale": scale,
            "machine": {
                **machine(),
                "clickhouse": query_scalar(ch, "SELECT version()"),
                "buffered_write": write_rate,
            },
            "total_seconds": round(time.perf_counter() - started + (prior or {}).get("seconds", 0), 1),
            "figures": report.figures,
            "peak_rss_mb": report.peak_rss_mb,
        }

    for stage in (s for s in STAGES if s in only and s in stages):
        say(f"stage: {stage}")
        with peak_rss(report, stage):
            stages[stage]()
        if results_dir is not None:
            write_results(result(), results_dir)
    return result()


def run_e2e_stage(home: Path, s3, scale: float, say: Callable[[str], None]) -> dict[str, Any]:
    """The Dagster end-to-end stage, before the in-process stages open chDB (see ``bench/e2e.py``)."""
    from bench.e2e import run_e2e

    report = Report()
    started = time.perf_counter()
    with peak_rss(report, "e2e (bench process only)"):
        report.figures["e2e"] = run_e2e(
            home, s3, seconds=max(30.0, 60 * scale), say=say, burst=max(20, int(200 * scale))
        )
    return {"figures": report.figures, "rss": report.peak_rss_mb, "seconds": time.perf_counter() - started}


def write_results(result: dict[str, Any], directory: Path = RESULTS) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / "latest.json", directory / "latest.md"
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def markdown(result: dict[str, Any]) -> str:
    m, f = result["machine"], result["figures"]
    lines = [
        f"# tracehouse bench — {result['date']} (scale {result['scale']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; Python {m['python']}, "
        f"chDB {m['chdb']} "
        f"(ClickHouse {m['clickhouse']}), Dagster {m['dagster']}. Total {result['total_seconds']} s.",
        "",
        f"Writing a new {m['buffered_write']['mib']} MiB file (page cache, no fsync) at the start: "
        f"{m['buffered_write']['mb_s']} MB/s "
        "(bench/README.md: why this moves every figure that writes parts).",
        "",
    ]
    if "ingest" in f:
        lines += [
            "## Ingest: S3 → staging",
            "",
            "| format | spans | MB | s | spans/s | MB/s |",
            "|---|---|---|---|---|---|",
        ]
        labels = {
            "otlp_json": "otlp_json",
            "otlp_proto": "otlp_proto",
            "ingestion": "ingestion",
        }
        for case, label in labels.items():
            if case not in f["ingest"]:
                continue
            r = f["ingest"][case]
            lines.append(
                f"| {label} | {r['spans']} | {r['mb']} | {r['seconds']} | {r['spans_per_s']} | "
                f"{r['mb_per_s']} |"
            )
        fl = f["ingest"]["floor_otlp_json"]
        lines += [
            "",
            "Floor (a bare `INSERT … SELECT FROM url()` of the same OTLP JSON objects into a table with the "
            "staging columns: typed parse, attributes as the metadata map, no checks, no mapping rules): "
            f"{fl['spans_per_s']} spans/s; tracehouse takes {fl['ratio_tracehouse_to_floor']}× the floor's "
            "time.",
            "",
        ]
    if "propagation" in f:
        p = f["propagation"]
        lines += [
            "## Propagation",
            "",
            "| window | history | s | observations/s | × the floor's time |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['window']} | {r['history']} | {r['seconds']} | {r['obs_per_s']} | "
            f"{r['floor_rows_per_s'] / r['obs_per_s']:.1f} |"
            for r in p["runs"]
        ]
        lines += [
            "",
            f"History ×10 costs per window (time ratio): {p['history_x10_cost']}. Floor: the same kind of "
            "window copied from staging into events as it is (with the events_core view, no merge, no join), "
            "measured right after the windows of each history: "
            + ", ".join(
                f"{fl['rows']} rows over {fl['history']} in {fl['seconds']} s ({fl['rows_per_s']} rows/s)"
                for fl in p["floor_insert_copy"]
            )
            + ".",
            "",
        ]
    if "summaries" in f:
        sm = f["summaries"]
        lines += [
            f"## Summary refresh at {sm['history']} observations, after one window of {sm['window']}",
            "",
            "| build | model | s | rows computed | changed keys | partitions replaced |",
            "|---|---|---|---|---|---|",
        ]
        for label, figures in [("whole", sm["whole"]), *sm["refresh"].items()]:
            lines += [
                f"| {label} | {name} | {v['seconds']} | {v['rows']} | {v['changed_keys']} | "
                f"{v['partitions']} |"
                for name, v in figures.items()
            ]
        lines += ["", f"Refresh time as a share of the whole rebuild: {sm['refresh_share_of_whole']}.", ""]
    if "reads" in f:
        r = f["reads"]
        lines += [
            f"## Reads at {r['observations']} observations",
            "",
            "| query | events_core ms | events_core_current ms (view: between windows / mid-window, "
            f"{HIDDEN_ROWS:,} rows hidden) | legacy V3 (FINAL + join) ms | speed-up |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {v['events_core_ms']} | {v.get('events_core_current_ms', '-')} / "
            f"{v.get('events_core_current_mid_window_ms', '-')} | {v['legacy_v3_ms']} | {v['speedup']}× |"
            for name, v in r.items()
            if isinstance(v, dict)
        ]
        lines.append("")
    if "migration" in f:
        mg = f["migration"]
        lines += [
            f"## Migration of {mg['legacy_rows']} legacy rows ({mg['observations']} observations)",
            "",
            "| parts at once | parts | s | legacy rows/s | median per part rows/s |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['concurrency']} | {r['parts']} | {r['seconds']} | {r['legacy_rows_per_s']} | "
            f"{r['per_part_rows_per_s_median']} |"
            for r in mg["runs"]
        ]
        lines.append("")
    if "e2e" in f:
        e = f["e2e"]
        lines += [
            "## End to end through Dagster (`dagster dev`, sensor, queued runs, embedded chDB)",
            "",
            f"{e['objects']} OTLP JSON objects ({e['spans']} spans) written at {e['offered_spans_per_s']} "
            f"spans/s offered; loaded by {_runs(e['runs'])} at {e['sustained_spans_per_s']} spans/s. "
            f"Upload → `loaded`: p50 {e['latency_p50_s']} s, p95 {e['latency_p95_s']} s, max "
            f"{e['latency_max_s']} s.",
            "",
        ]
        if "burst" in e:
            b = e["burst"]
            lines += [
                f"A burst of {b['objects']} gzipped OTLP JSON objects at once ({b['spans']} spans, "
                f"{b['mb']} MB): loaded by {_runs(b['runs'])} in {b['seconds']} s from the upload, "
                f"{b['spans_per_s']} spans/s sustained (sensor tick and run start-up included).",
                "",
            ]
    lines += [
        "## Peak RSS per stage (MB)",
        "",
        *[f"- {k}: {v}" for k, v in result["peak_rss_mb"].items()],
        "",
    ]
    return "\n".join(lines)
