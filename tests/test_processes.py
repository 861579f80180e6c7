"""Nothing a stopped or killed command started outlives it: not its process tree, not a benchmark home."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from orchestration.processes import running, stop_tree

# A parent that starts a grandchild (like `dagster dev` starts its webserver), then waits; on SIGINT it either
# stops its child and exits, stops it and exits without waiting for it ("hasty"), or ignores the signal.
_CHILD = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"
_PARENT = f"""
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {_CHILD!r}])
print(child.pid, flush=True)
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(600)
try:
    time.sleep(600)
except KeyboardInterrupt:
    child.terminate()
    if sys.argv[1] != "hasty":
        child.wait()
"""


def _start(mode: str) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, "-c", _PARENT, mode], stdout=subprocess.PIPE, text=True)
    child = int(process.stdout.readline())
    time.sleep(0.3)  # the parent reaches its wait (and its signal disposition) before the test signals it
    return process, child


def test_a_process_that_stops_on_sigint_stops_its_children_itself():
    process, child = _start("cooperative")
    assert stop_tree(process, grace=10) is True
    assert process.returncode is not None
    assert not running(child)


def test_a_child_that_exits_after_its_parent_counts_as_stopped():
    # The child dies after its parent: an orphan, a zombie until pid 1 reaps it (in this container 1.5-2 s
    # later, longer than the grace period). It holds nothing, so the tree did stop on its own.
    process, child = _start("hasty")
    assert stop_tree(process, grace=1) is True
    assert not running(child)


def test_a_process_that_ignores_sigint_is_killed_with_everything_it_started():
    process, child = _start("stubborn")
    started = time.monotonic()
    assert stop_tree(process, grace=1) is False
    assert time.monotonic() - started < 10
    assert process.returncode is not None
    assert not running(child)


def test_benchmark_homes_of_dead_runs_are_removed_and_live_ones_kept(tmp_path):
    from orchestration.cli import BENCH_HOME_PREFIX, BENCH_OWNER_FILE, clear_abandoned_bench_homes

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    homes = {}
    for name, owner in (("dead", str(dead.pid)), ("live", str(os.getpid())), ("unowned", None)):
        home = tmp_path / f"{BENCH_HOME_PREFIX}{name}"
        (home / "ch").mkdir(parents=True)
        (home / "ch" / "part.bin").write_bytes(b"x" * 1000)
        if owner:
            (home / BENCH_OWNER_FILE).write_text(owner)
        homes[name] = home
    (tmp_path / "someone-else").mkdir()

    assert clear_abandoned_bench_homes(tmp_path) >= 1000
    assert not homes["dead"].exists()
    assert homes["live"].exists() and homes["unowned"].exists() and (tmp_path / "someone-else").exists()
