"""A throw-away PostgreSQL for tests: Dagster's production storage (dagster-postgres) on a real server.

Debian's ``postgresql`` package provides the server (``tests/ensure_system_packages.sh`` installs it for
``make test``). PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user
the package creates. Trust authentication on 127.0.0.1 only; the data folder is deleted on stop.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestration.local_s3 import free_port


def server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH, per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl and shutil.which("initdb") else None


@contextmanager
def postgres(database: str = "dagster") -> Iterator[str]:
    """Start a PostgreSQL cluster, create ``database`` and yield its URL; stop and delete it afterwards."""
    bindir = server_binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL's server is not installed: run tests/ensure_system_packages.sh")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="tracehouse-pg-"))
    if as_user:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {(done.stderr or done.stdout)[-2000:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "--auth=trust", "--username=postgres", "-E", "UTF8",
            "--no-sync")  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
