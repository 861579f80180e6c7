"""The local SeaweedFS starts reliably: ports below the ephemeral range, a new start if one is taken."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestration import local_s3
from orchestration.local_s3 import LocalS3, free_port
from orchestration.processes import stop_tree, wait_gone


def test_free_ports_lie_below_the_ephemeral_range_and_are_bindable():
    low, _ = local_s3._ephemeral_range()
    taken: set[int] = set()
    for _ in range(50):
        port = free_port(taken)
        assert 1024 <= port < low and port not in taken
        taken.add(port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_taken_between_pick_and_bind_means_a_new_start_not_a_failure(tmp_path, monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    real_pick = local_s3._pick_ports
    picks: list[dict[str, int]] = []

    def pick_a_taken_filer_port_first() -> dict[str, int]:
        ports = real_pick()
        if not picks:
            ports["filer_grpc"] = squatter.getsockname()[1]
        picks.append(ports)
        return ports

    monkeypatch.setattr(local_s3, "_pick_ports", pick_a_taken_filer_port_first)
    try:
        with LocalS3.start(tmp_path / "s3") as server:
            assert len(picks) == 2
            assert server.endpoint_url.endswith(f":{picks[1]['s3']}")
            assert "address already in use" in (tmp_path / "s3" / "weed.log").read_text()
            server.client().put_object(Bucket="tracehouse-health", Key="again", Body=b"ok")
    finally:
        squatter.close()


def test_a_disk_too_full_to_write_is_named_as_the_reason_quickly(tmp_path):
    """SeaweedFS accepts connections but no write when its disk is low: say so, do not time out vaguely."""
    more_than_is_free = f"{shutil.disk_usage(tmp_path).free // 2**30 * 2 + 1}GiB"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="disk under .* is too full"):
        LocalS3.start(tmp_path / "s3", timeout=120, min_free_space=more_than_is_free)
    assert time.monotonic() - started < 90
    assert not (tmp_path / "s3" / "server.json").exists()


@pytest.mark.parametrize(
    "arguments",
    [["dev", "--no-demo", "--port", str(free_port())], ["generate", "--objects", "100000"]],
    ids=["dev", "generate"],
)
def test_terminating_a_command_stops_the_processes_it_started(tmp_path, arguments):
    """`kill` (SIGTERM, what systemd and Docker send) must not leave SeaweedFS or Dagster running. Started
    with SIGINT ignored, as a background job of a script is: the processes it starts must still take the
    SIGINT that asks them to stop cleanly."""
    env = {k: v for k, v in os.environ.items() if k not in ("S3_ENDPOINT_URL", "CLICKHOUSE_URL")}
    env["TRACEHOUSE_HOME"] = str(tmp_path / "home")
    tracehouse = Path(sys.executable).with_name("tracehouse")
    process = subprocess.Popen(
        ["bash", "-c", 'trap "" INT; exec "$0" "$@"', str(tracehouse), *arguments],
        env=env,
        cwd=Path(__file__).parents[1],
        stdout=subprocess.DEVNULL,
    )
    try:
        state = tmp_path / "home" / "s3" / "server.json"
        deadline = time.monotonic() + 60
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state.exists(), "SeaweedFS did not start"
        time.sleep(3)  # into the command's own work (`dagster dev` start-up, writing objects)
        assert process.poll() is None, "the command ended before it could be terminated"
        started = psutil.Process(process.pid).children(recursive=True)
        assert started, "the command started no child processes"
        assert not [p for p in started if _ignores_sigint(p.pid)], "a child inherited SIGINT ignored"
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        alive = wait_gone(started, timeout=30)
        assert not alive, alive
        assert not state.exists()
    finally:
        stop_tree(process, grace=10)  # a failed assertion must not leave the command's processes behind


def _ignores_sigint(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & 1 << (signal.SIGINT - 1))
    return False


def test_dev_on_a_busy_port_stops_at_once_with_a_hint(tmp_path):
    """`tracehouse dev` used to print the URL and run on without a UI when the port was taken."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cli = [str(Path(sys.executable).parent / "tracehouse"), "dev", "--port", str(port), "--no-demo"]
        done = subprocess.run(
            cli,
            env={**os.environ, "TRACEHOUSE_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"port {port} on 127.0.0.1 is in use" in done.stderr and f"PORT={port + 1} make dev" in done.stderr
    assert not (tmp_path / "s3").exists()  # nothing was started
