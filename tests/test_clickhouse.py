"""The ClickHouse adapters: parameter binding round trips in real chDB, settings, the embedded lock."""

import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from orchestration.clickhouse import (
    ConnectClickHouse,
    _settings_clause,
    format_param,
    open_clickhouse,
    query_scalar,
)

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


@pytest.fixture
def chdb(tmp_path):
    with open_clickhouse(None, tmp_path / "ch") as ch:
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


def test_settings_clause_accepts_only_names_and_numbers():
    assert _settings_clause({"max_threads": 2, "ratio": 0.5}) == " SETTINGS max_threads=2, ratio=0.5"
    assert _settings_clause(None) == ""
    with pytest.raises(ValueError):
        _settings_clause({"x=1; DROP": 1})
    with pytest.raises(ValueError):
        _settings_clause({"max_threads": "1; DROP TABLE t"})


class _Recorder:
    """Stands in for clickhouse_connect's client to check what the thin adapter forwards (no network)."""

    def __init__(self):
        self.calls = []

    def command(self, sql, parameters=None):
        self.calls.append(("command", sql, parameters))

    def query_arrow(self, sql, parameters=None):
        self.calls.append(("query_arrow", sql, parameters))
        return pa.table({"x": [1]})

    def insert_arrow(self, table, data, settings=None):
        self.calls.append(("insert_arrow", table, settings))

    def close(self):
        self.calls.append(("close",))


def test_server_adapter_passes_parameters_and_settings_through():
    rec = _Recorder()
    ch = ConnectClickHouse(rec)
    ch.command("SELECT {v:String}", {"v": "O'Brien"})
    assert ch.query_arrow("SELECT 1").num_rows == 1
    assert ch.insert_arrow("db.t", pa.table({"a": [1, 2]}), {"async_insert": 0}) == 2
    assert ch.insert_arrow("db.t", pa.table({"a": pa.array([], pa.int64())})) == 0
    assert rec.calls == [
        ("command", "SELECT {v:String}", {"v": "O'Brien"}),
        ("query_arrow", "SELECT 1", None),
        ("insert_arrow", "db.t", {"async_insert": 0}),
    ]


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
