"""Faults an operator can fix end a command in one line and a documented exit code, fast, with the
traceback in the log file; nothing is marked loaded that was not. Real processes: a SeaweedFS that is
down, hung (SIGSTOP) or given the wrong secret, and a chDB folder held by a plain chDB process."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestration import faults
from orchestration.clickhouse import open_clickhouse, query_scalar
from orchestration.generate import generate
from orchestration.local_s3 import LocalS3, ensure_bucket, free_port
from tests.conftest import OTLP_PB, minute_key, put

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "tracehouse")


def _run_once(
    env_overrides: dict[str, str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run(
        [CLI, "run-once", "--no-delay"],
        cwd=REPO,
        env={**os.environ, **env_overrides},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, time.monotonic() - started


def _one_line(done: subprocess.CompletedProcess, code: int, words: str) -> None:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == code, done.stderr[-3000:]
    assert len(errors) == 1 and words in errors[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "tracehouse.log" in errors[0]


def test_s3_down_is_one_line_and_exit_3(env):
    done, seconds = _run_once({"S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    _one_line(done, faults.EXIT_S3_UNREACHABLE, "S3 is unreachable")
    assert seconds < 60
    log = (env.home_path / "logs" / "tracehouse.log").read_text()
    assert "Traceback" in log and "EndpointConnectionError" in log  # the details are kept


def test_s3_hung_fails_within_the_read_timeout_and_its_retries(env, tmp_path):
    server = LocalS3.start(tmp_path / "s3")
    try:
        ensure_bucket(server.client(), env.raw_bucket)
        os.kill(server.process.pid, signal.SIGSTOP)
        done, seconds = _run_once({**server.env(), "TRACEHOUSE_S3_READ_TIMEOUT_SECONDS": "2"})
        _one_line(done, faults.EXIT_S3_UNREACHABLE, "did not answer in time")
        assert seconds < 30  # 3 attempts of 2 s plus backoff; the default 15 s read timeout stays under 60 s
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_wrong_s3_secret_is_one_line_and_exit_4(env, s3):
    put(s3, env, minute_key("p1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())
    done, _ = _run_once({"AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    _one_line(done, faults.EXIT_S3_REFUSED, "S3 refused the credentials")
    assert "not-the-secret" not in done.stderr + done.stdout


def test_a_chdb_folder_held_by_a_foreign_process_names_it(env, s3):
    env.chdb_path.mkdir(parents=True)
    script = (
        f"import chdb, time; c = chdb.connect({str(env.chdb_path)!r}); print(1, flush=True); time.sleep(99)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"1"
        done, seconds = _run_once({})
        _one_line(done, faults.EXIT_CLICKHOUSE, f"held by another process (pid {holder.pid})")
        assert seconds < 60
    finally:
        holder.kill()
        holder.wait()


def test_nothing_is_marked_loaded_when_s3_goes_away(env, s3, tmp_path):
    """S3 down for the whole command: no ledger row says loaded, and the next run loads everything once."""
    key = put(s3, env, minute_key("p1", "otlp", "a.binpb.gz"), OTLP_PB.read_bytes())
    done, _ = _run_once({"S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert done.returncode == faults.EXIT_S3_UNREACHABLE
    done, _ = _run_once({})
    assert done.returncode == 0 and "loaded=1 quarantined=0" in done.stdout, done.stderr[-2000:]
    with open_clickhouse(None, env.chdb_path) as ch:
        assert query_scalar(ch, "SELECT count() FROM tracehouse.ingest_ledger WHERE source_key = {k:String} "
                                "AND status = 'loaded'", {"k": key}) == 1  # fmt: skip


def test_clickhouse_server_down_is_one_line_and_exit_5(env, s3):
    done, seconds = _run_once({"CLICKHOUSE_URL": f"http://default:secret-pw@127.0.0.1:{free_port()}"})
    _one_line(done, faults.EXIT_CLICKHOUSE, "ClickHouse server is unreachable")
    assert "secret-pw" not in done.stderr + done.stdout
    assert seconds < 60


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs to fill needs root (CI runs as root)")
def test_a_full_disk_under_the_embedded_clickhouse_is_one_line_and_exit_6(env, s3, tmp_path):
    """TRACEHOUSE_HOME on a 48 MiB tmpfs: the schema fits, a load of a few hundred MB of rows does not."""
    home = tmp_path / "small"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(home)], check=True)
    try:
        keys = generate(s3, env.raw_bucket, "", objects=40, traces_per_object=40, payload_bytes=20_000,
                        formats=("ingestion",), compress=True, seed=3).keys  # fmt: skip
        done, seconds = _run_once({"TRACEHOUSE_HOME": str(home)}, timeout=300)
        _one_line(done, faults.EXIT_DISK_FULL, "disk")
        assert len(keys) == 40
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


def test_a_postgres_url_without_its_driver_is_one_line_and_exit_2(env):
    """Dagster would fail on it inside every run (SQLAlchemy 2.1 has no driver for it); the command refuses
    it at once, without repeating the URL's password."""
    done, _ = _run_once({"DAGSTER_POSTGRES_URL": "postgres://dagster:s3cret-pw@127.0.0.1:5432/dagster"})
    _one_line(done, faults.EXIT_USAGE, "DAGSTER_POSTGRES_URL must be a SQLAlchemy URL naming its driver")
    assert "s3cret-pw" not in done.stderr + (env.home_path / "logs" / "tracehouse.log").read_text()


def test_disk_full_is_recognised_from_the_os_and_from_clickhouse():
    """No test filesystem can be filled here portably; the two forms a full disk takes are classified."""
    assert faults.classify(OSError(errno.ENOSPC, "No space left on device")).code == faults.EXIT_DISK_FULL
    chdb_error = RuntimeError(
        "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"
    )
    wrapped = RuntimeError("insert failed")
    wrapped.__cause__ = chdb_error
    assert faults.classify(wrapped).code == faults.EXIT_DISK_FULL
    assert faults.classify(ValueError("a bug")) is None
