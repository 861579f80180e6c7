"""The ClickHouse backends: parameter binding round trips in real chDB, embedded and via clickhouse-connect
over HTTP (tests/clickhouse_http.py), inserts, errors, threads sharing a client, the embedded lock."""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from orchestration.clickhouse import (
    format_param,
    open_clickhouse,
    query_rows,
    query_scalar,
)
from tests.clickhouse_http import ClickHouseHTTP

HOSTILE = [
    "plain",
    "O'Brien",
    "'; DROP TABLE tracehouse.events; --",
    "back\\slash and \\' escaped quote",
    "tab\tnew\nline\rreturn",
    "{curly} {x:String}",
    "ünïcødé ✓ 日本",
    "",
]


@pytest.fixture(params=["embedded", "server"])
def chdb(tmp_path, request):
    if request.param == "embedded":
        with open_clickhouse(None, tmp_path / "ch") as ch:
            yield ch
        return
    with ClickHouseHTTP.serving(tmp_path / "server") as url, open_clickhouse(url, tmp_path / "unused") as ch:
        yield ch


@pytest.mark.parametrize("value", HOSTILE)
def test_strings_round_trip_as_parameters(chdb, value):
    assert query_scalar(chdb, "SELECT {v:String}", {"v": value}) == value


def test_arrays_maps_dates_and_numbers_round_trip(chdb):
    assert query_scalar(chdb, "SELECT {v:Array(String)}", {"v": HOSTILE}) == HOSTILE
    assert query_scalar(chdb, "SELECT {v:Map(String, String)}", {"v": {"k'1": "v'1"}}) == [("k'1", "v'1")]
    pairs = [("a'", 1), ("b", 2)]
    assert query_scalar(chdb, "SELECT {v:Array(Tuple(String, UInt8))}", {"v": pairs}) == [
        {"1": "a'", "2": 1},
        {"1": "b", "2": 2},
    ]
    moment = datetime(2026, 11, 24, 12, 30, 1, 250000, tzinfo=UTC)
    got = query_scalar(chdb, "SELECT toString({v:DateTime64(6, 'UTC')})", {"v": moment})
    assert got == "2026-11-24 12:30:01.250000"
    assert query_scalar(chdb, "SELECT {v:Int64} + {w:Float64}", {"v": -5, "w": 0.5}) == -4.5
    assert query_scalar(chdb, "SELECT isNull({v:Nullable(String)})", {"v": None}) == 1
    assert format_param(True) == "true"
    with pytest.raises(TypeError):
        format_param(object())


def test_inserts_errors_and_threads_sharing_one_client(chdb):
    chdb.command("CREATE TABLE t (k String, m Map(String, UInt64), at DateTime64(6, 'UTC')) ENGINE = Memory")
    moment = datetime(2026, 11, 24, 12, 30, 1, 250000, tzinfo=UTC)
    rows = pa.table(
        {
            "k": HOSTILE,
            "m": pa.array([[("in'put", i)] for i in range(len(HOSTILE))], pa.map_(pa.string(), pa.uint64())),
            "at": pa.array([moment] * len(HOSTILE), pa.timestamp("us", tz="UTC")),
        }
    )
    assert chdb.insert_arrow("t", rows) == len(HOSTILE)
    assert chdb.insert_arrow("t", rows.slice(0, 0)) == 0
    got = query_rows(chdb, "SELECT k, m, at FROM t WHERE k = {k:String}", {"k": "O'Brien"})
    assert got == [{"k": "O'Brien", "m": [("in'put", 1)], "at": moment}]
    with pytest.raises(Exception, match="UNKNOWN_TABLE"):  # the server's own error reaches the caller
        chdb.command("SELECT * FROM no_such_table")
    # an asset and its checks share one client across threads: no "session is locked" on a server
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda _: query_scalar(chdb, "SELECT count() FROM t"), range(40)))
    assert counts == [len(HOSTILE)] * 40


def test_second_process_on_the_same_folder_gets_a_clear_error(tmp_path):
    folder = tmp_path / "ch"
    with open_clickhouse(None, folder) as ch:
        ch.command("SELECT 1")
        script = textwrap.dedent(
            f"""
            from pathlib import Path
            from orchestration.clickhouse import open_clickhouse, EmbeddedClickHouseBusy
            try:
                with open_clickhouse(None, Path({str(folder)!r}), wait_seconds=1):
                    print("opened")
            except EmbeddedClickHouseBusy as exc:
                print("busy:", exc)
            """
        )
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("busy:"), out.stdout + out.stderr
    assert str(folder) in out.stdout and f"process {os.getpid()}" in out.stdout


def test_a_cluster_name_without_a_server_is_refused(tmp_path):
    """CLICKHOUSE_CLUSTER with embedded chDB would render ON CLUSTER statements one node cannot run."""
    from orchestration.settings import ConfigError

    with pytest.raises(ConfigError, match="CLICKHOUSE_CLUSTER needs a server"):
        with open_clickhouse(None, tmp_path / "ch", cluster="prod"):
            pass
