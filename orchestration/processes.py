"""Stopping a child process together with everything it started.

``dagster dev`` runs a webserver, a daemon and code servers as its own children. Killing only ``dagster
dev`` when it does not stop in time leaves those running (holding ports, the chDB folder and memory) with
nobody to stop them, so the fallback kills the whole tree.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psutil


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (exited, not yet reaped, as orphans stay until pid 1
    reaps them: 1.5-2 s in this container) is not."""
    try:
        return _alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def _alive(proc: psutil.Process) -> bool:
    """Still running: not exited, not a zombie, and its pid not taken by a newer process."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """The processes still alive after ``timeout`` seconds. Not ``psutil.wait_procs``: it waits for a
    process that is not our child until its pid is gone, so an orphan's zombie counts as alive until pid 1
    gets round to reaping it."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


def stop_tree(process: subprocess.Popen, grace: float) -> bool:
    """SIGINT ``process`` (a clean shutdown of its own children), then SIGKILL the whole tree if it is not
    gone after ``grace`` seconds or if this thread is interrupted while waiting.

    Returns True when the process stopped on its own.
    """
    try:
        parent = psutil.Process(process.pid)
        tree = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    if process.poll() is not None:
        _kill(tree)  # the parent is gone already; its children may not be
        return True
    deadline = time.monotonic() + grace
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
        alive = wait_gone(tree, max(0.0, deadline - time.monotonic()))
        _kill(alive)
        return not alive
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        _kill(tree + _descendants(tree))
        process.wait()
        return False


def _descendants(tree: list[psutil.Process]) -> list[psutil.Process]:
    """Children started since ``tree`` was taken (a code server restarted during shutdown)."""
    found = []
    for proc in tree:
        try:
            found += proc.children(recursive=True)
        except psutil.NoSuchProcess:
            continue
    return found


def _kill(procs: list[psutil.Process]) -> None:
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    wait_gone(procs, 10)
