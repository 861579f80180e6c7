"""Real parts only: a SeaweedFS process for S3 and embedded chDB for ClickHouse.

One SeaweedFS serves the whole session; every test gets its own bucket and its own chDB folder
(``TRACEHOUSE_HOME``), so tests cannot see each other's data. Data-flow tests marked ``@BOTH_BACKENDS`` run
twice: on embedded chDB, and in server mode, where ``CLICKHOUSE_URL`` points clickhouse-connect at a
ClickHouse HTTP interface in front of the test's own chDB folder (tests/clickhouse_http.py).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orchestration.clickhouse import ClickHouse, open_clickhouse
from orchestration.local_s3 import LocalS3, ensure_bucket
from orchestration.schema import apply_migrations
from orchestration.settings import Settings, load_settings
from tests.clickhouse_http import ClickHouseHTTP

FIXTURES = Path(__file__).resolve().parent / "fixtures"

OTLP_PB = FIXTURES / "langfuse-python-v5" / "otlp-traces-0000.pb.gz"
SCORES_V5 = FIXTURES / "langfuse-python-v5" / "scores-0001.json"
INGESTION_V2 = FIXTURES / "langfuse-python-v2" / "ingestion-batch-0000.json"

BOTH_BACKENDS = pytest.mark.parametrize("env", ["embedded", "server"], indirect=True)


def pytest_configure(config) -> None:
    """Start from the signal dispositions a terminal gives. Dagster's in-process runs restore SIGINT's
    handler and set SIGTERM's to the same one: in a pytest started with SIGINT ignored (a background job of
    a script) that left SIGTERM ignored as well, and every process a later test started inherited both, so
    nothing could stop it. (`tracehouse` commands do the same for SIGINT, orchestration/cli.py.)"""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# The files that take longest (`--durations`), started first: `make test` hands tests to the workers in
# collection order (`--dist loadgroup`: one test at a time, except an `xdist_group` such as test_ui's, which
# shares module fixtures), so a long test collected last would run alone at the end while the others idle.
LONGEST_FIRST = (
    "test_production_path.py",
    "test_propagation.py",
    "test_migration.py",
    "test_fault_lines.py",
    "test_ui.py",
    "test_versions.py",
    "test_langfuse_bucket.py",
    "test_bench_smoke.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory) -> Iterator[LocalS3]:
    server = LocalS3.start(tmp_path_factory.mktemp("seaweed"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    yield server
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def deployment(seaweed: LocalS3, folder: Path, mp: pytest.MonkeyPatch, backend: str) -> Iterator[Settings]:
    """A fresh home and bucket under ``folder``, with the environment a deployment would have: embedded, or
    ``server`` (clickhouse-connect to the HTTP fixture in front of its own chDB folder)."""
    bucket = "raw-" + uuid.uuid4().hex[:12]
    mp.setenv("TRACEHOUSE_HOME", str(folder / "home"))
    mp.setenv("RAW_BUCKET", bucket)
    mp.setenv("RAW_PREFIX", "")
    mp.delenv("CLICKHOUSE_URL", raising=False)
    ensure_bucket(seaweed.client(), bucket)
    if backend == "embedded":
        yield load_settings()
        return
    with ClickHouseHTTP.serving(folder / "server-clickhouse") as url:
        mp.setenv("CLICKHOUSE_URL", url)
        settings = load_settings()
        yield settings
        assert not settings.chdb_path.exists(), "server mode fell back to embedded chDB"


@pytest.fixture
def env(seaweed: LocalS3, tmp_path: Path, monkeypatch, request) -> Iterator[Settings]:
    """A deployment for one test (embedded unless parametrised to "server")."""
    with deployment(seaweed, tmp_path, monkeypatch, getattr(request, "param", "embedded")) as settings:
        yield settings


def connect(settings: Settings):
    """The test's ClickHouse, on whichever backend it runs."""
    return open_clickhouse(os.environ.get("CLICKHOUSE_URL"), settings.chdb_path)


@pytest.fixture
def s3(seaweed: LocalS3):
    return seaweed.client()


def apply_schema(settings: Settings) -> None:
    """The deployment step `tracehouse schema` runs: the pipeline refuses a schema older than the code."""
    with connect(settings) as client:
        apply_migrations(client)


@pytest.fixture
def migrated(env: Settings) -> Settings:
    """A deployment whose ClickHouse schema was applied, for tests that run jobs without the CLI."""
    apply_schema(env)
    return env


@pytest.fixture
def ch(env: Settings) -> Iterator[ClickHouse]:
    with connect(env) as client:
        apply_migrations(client)
        yield client


def put(s3, settings: Settings, key: str, body: bytes) -> str:
    s3.put_object(Bucket=settings.raw_bucket, Key=key, Body=body)
    return key


def minute_key(project: str, kind: str, name: str, minute: str = "2026-11-24T02:33") -> str:
    from orchestration.raw_keys import build_key

    return build_key("", project, kind, minute, name)
