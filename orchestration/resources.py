"""Dagster resources: ClickHouse (embedded chDB or a server) and the raw bucket in S3.

Secrets reach these only through ``dg.EnvVar`` (see :func:`build_resources`), so they never appear in run
config, the UI, logs or SQL text.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from orchestration.clickhouse import ClickHouse, open_clickhouse
from orchestration.faults import run_failures
from orchestration.schema import require_current
from orchestration.settings import S3_READ_TIMEOUT_SECONDS, Settings, environment_names, load_settings


class ClickHouseResource(dg.ConfigurableResource):
    """Opens ClickHouse for the length of a block. Embedded chDB when ``url`` is empty."""

    url: str | None = Field(default=None, description="clickhouse-connect DSN; empty = embedded chDB")
    home: str = Field(
        default=".tracehouse", description="TRACEHOUSE_HOME: embedded data lives in <home>/clickhouse"
    )
    cluster: str | None = Field(
        default=None, description="CLICKHOUSE_CLUSTER: schema statements ON CLUSTER, Replicated engines"
    )
    lock_wait_seconds: float = Field(
        default=300.0, description="how long a run waits for the embedded folder"
    )

    @property
    def embedded(self) -> bool:
        return not self.url

    @contextmanager
    def connect(self, schema_checked: bool = True) -> Iterator[ClickHouse]:
        """Open ClickHouse for the block. It refuses a schema older than the code (one cheap query): the
        schema is applied by its own step (the ``clickhouse_schema`` asset, which alone passes
        ``schema_checked=False``), never as a side effect of opening a connection."""
        chdb_path = Path(self.home).resolve() / "clickhouse"
        with open_clickhouse(self.url, chdb_path, self.lock_wait_seconds, self.cluster) as ch:
            if schema_checked:
                with run_failures():  # one line, exit 2, never retried (a configuration fault)
                    require_current(ch)
            yield ch


class RawBucketS3(dg.ConfigurableResource):
    """The S3 client every tracehouse command uses: path-style addressing (SeaweedFS, MinIO and most S3
    clones need it), bounded connect/read timeouts and retries, so a hung endpoint fails a run within a
    minute instead of botocore's minutes of default retries.

    Not dagster-aws's ``S3Resource``: its only method used here was replaced by this one, and importing
    dagster-aws cost every run and step process 1.3 s (it loads Dagster's components framework).
    """

    endpoint_url: str | None = Field(default=None, description="S3_ENDPOINT_URL; empty = AWS")
    aws_access_key_id: str | None = Field(default=None, description="from the environment (dg.EnvVar)")
    aws_secret_access_key: str | None = Field(default=None, description="from the environment (dg.EnvVar)")
    region_name: str | None = Field(default=None, description="AWS_REGION")
    read_timeout_seconds: int = Field(
        default=S3_READ_TIMEOUT_SECONDS, description="TRACEHOUSE_S3_READ_TIMEOUT_SECONDS: per request"
    )

    def get_client(self) -> Any:
        from orchestration.local_s3 import s3_client

        return s3_client(
            self.endpoint_url,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.region_name,
            self.read_timeout_seconds,
        )


class SettingsResource(dg.ConfigurableResource, Settings):
    """tracehouse's settings as a resource: the fields of :class:`Settings` (one declaration), each given as
    the ``dg.EnvVar`` it comes from, so the UI shows which variable sets what and a run resolves them when
    it starts. Asset, check and sensor bodies take it as ``settings``."""


def _env(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def settings_resource(settings: Settings) -> SettingsResource:
    """``settings`` (as loaded, so a bad value fails the code location with one line), with every value
    the environment set replaced by its ``dg.EnvVar``."""
    from_env = {
        field: (dg.EnvVar.int(env) if Settings.model_fields[field].annotation is int else dg.EnvVar(env))
        for field, env in environment_names().items()
        if os.environ.get(env)
    }
    return SettingsResource(**{**settings.model_dump(), **from_env})


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """The code location's resources, read from the environment now."""
    settings = settings or load_settings()
    return {
        "settings": settings_resource(settings),
        "clickhouse": ClickHouseResource(
            url=_env("CLICKHOUSE_URL"), home=settings.home, cluster=_env("CLICKHOUSE_CLUSTER")
        ),
        "s3": RawBucketS3(
            endpoint_url=_env("S3_ENDPOINT_URL"),
            aws_access_key_id=_env("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_env("AWS_SECRET_ACCESS_KEY"),
            region_name=settings.aws_region,
            read_timeout_seconds=settings.s3_read_timeout_seconds,
        ),
    }
