"""Configuration: one declaration per setting with the environment variable it comes from (names fixed by
DESIGN.md), read when something asks for it, never at import.

The command line reads them with :func:`load_settings`; in Dagster the same fields are the ``settings``
resource (``orchestration/resources.py``), whose values are ``dg.EnvVar`` references resolved when a run
starts. Secrets (S3 keys, the ClickHouse URL with its password) are not settings: resources read them
through ``dg.EnvVar`` so they stay out of run config, logs and the UI.

This module stays free of Dagster (the library layer and a bare ``tracehouse --help`` do not pay its
import); pydantic is the declaration both sides share.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

DATABASE = "tracehouse"
# Defaults that library functions also take when a caller does not pass the configured value
LEGACY_DATABASE = "legacy"  # LEGACY_DATABASE: the older deployment's tables the migration reads
CORE_TRUNCATE_CHARS = 2048  # TRACEHOUSE_CORE_TRUNCATE_CHARS: text events_core and truncate() keep
S3_READ_TIMEOUT_SECONDS = 15  # TRACEHOUSE_S3_READ_TIMEOUT_SECONDS: a hung S3 endpoint fails within a minute
S3_REGION = "us-east-1"  # AWS_REGION


class ConfigError(ValueError):
    """Configuration tracehouse cannot run with (an environment variable, a schema older than the code): the
    message names it and says what to set or run."""


def _postgres_url_set() -> bool:
    """Whether DAGSTER_POSTGRES_URL is set, refusing a URL Dagster would fail on deep in a run (the message
    never repeats the URL: it holds a password)."""
    url = os.environ.get("DAGSTER_POSTGRES_URL") or ""
    if not url:
        return False
    scheme = url.split("://", 1)[0] if "://" in url else ""
    driver_named = scheme.startswith("postgresql+")
    psycopg3 = scheme == "postgresql" and importlib.util.find_spec("psycopg") is not None
    if not (driver_named or psycopg3):
        raise ConfigError(
            "DAGSTER_POSTGRES_URL must be a SQLAlchemy URL naming its driver: "
            "postgresql+psycopg2://user:password@host:5432/database (SQLAlchemy 2.1 reads a bare "
            "postgresql:// as psycopg 3, which dagster-postgres does not install)"
        )
    return True


def _env(name: str, default: Any, description: str) -> Any:
    """A setting read from the environment variable ``name`` (empty or unset: ``default``)."""
    return Field(default=default, description=f"{name}: {description}", json_schema_extra={"env": name})


class Settings(BaseModel):
    """What tracehouse is configured with; ``home`` and ``user_prices`` are strings because Dagster config
    has no path type (the properties give paths)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: str = _env("TRACEHOUSE_HOME", ".tracehouse", "embedded ClickHouse, SeaweedFS data, DAGSTER_HOME")
    s3_endpoint_url: str | None = _env("S3_ENDPOINT_URL", None, "S3 endpoint; empty = AWS")
    aws_region: str = _env("AWS_REGION", S3_REGION, "region of the raw bucket")
    s3_read_timeout_seconds: int = _env(
        "TRACEHOUSE_S3_READ_TIMEOUT_SECONDS",
        S3_READ_TIMEOUT_SECONDS,
        "S3 read timeout per request (3 attempts)",
    )
    raw_bucket: str = _env("RAW_BUCKET", "tracehouse-raw", "bucket of the raw batches")
    raw_prefix: str = _env("RAW_PREFIX", "", "key prefix the sensor lists under")
    propagation_delay_seconds: int = _env(
        "PROPAGATION_DELAY_SECONDS", 300, "how far behind now a propagation window ends"
    )
    propagation_interval_seconds: int = _env(
        "PROPAGATION_INTERVAL_SECONDS", 180, "window length and schedule (rounded to minutes)"
    )
    max_object_bytes: int = _env(
        "TRACEHOUSE_MAX_OBJECT_BYTES", 256 * 1024 * 1024, "larger raw objects are quarantined"
    )
    max_record_bytes: int = _env(
        "TRACEHOUSE_MAX_RECORD_BYTES", 16 * 1024 * 1024, "larger records are quarantined"
    )
    max_bytes_in_flight: int = _env(
        "TRACEHOUSE_MAX_BYTES_IN_FLIGHT",
        256 * 1024 * 1024,
        "fetched bytes held before the loading thread takes them",
    )
    run_max_objects: int = _env(
        "TRACEHOUSE_RUN_MAX_OBJECTS",
        500,
        "raw objects one load run takes (the sensor splits a tick into runs)",
    )
    core_truncate_chars: int = _env(
        "TRACEHOUSE_CORE_TRUNCATE_CHARS", CORE_TRUNCATE_CHARS, "events_core keeps this much text"
    )
    user_prices: str | None = _env(
        "TRACEHOUSE_MODEL_PRICES",
        None,
        "a CSV of the user's own model prices (orchestration/model_prices.py)",
    )
    legacy_database: str = _env(
        "LEGACY_DATABASE", LEGACY_DATABASE, "database of the legacy tables the migration reads"
    )
    start_date: str = _env("TRACEHOUSE_START_DATE", "2026-01-01", "first daily partition of the daily models")
    models_cron: str | None = _env(
        "TRACEHOUSE_MODELS_CRON", None, "build the models on this cron after new data (unset: within a tick)"
    )
    # Facts about secrets, never the secrets: whether they are set (the command line picks backends by them).
    clickhouse_url_set: bool = Field(default=False, description="CLICKHOUSE_URL is set (a server, not chDB)")
    dagster_postgres_url_set: bool = Field(
        default=False,
        description="DAGSTER_POSTGRES_URL is set: Dagster's runs, events and schedules in PostgreSQL",
    )

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve()

    @property
    def chdb_path(self) -> Path:
        return self.home_path / "clickhouse"

    @property
    def dagster_home(self) -> Path:
        return self.home_path / "dagster"

    @property
    def s3_data_dir(self) -> Path:
        return self.home_path / "s3"

    @property
    def user_prices_path(self) -> Path | None:
        return Path(self.user_prices) if self.user_prices else None

    @property
    def embedded(self) -> bool:
        return not self.clickhouse_url_set


def environment_names() -> dict[str, str]:
    """Each setting read from the environment, by field: the one table both readers use."""
    return {
        name: field.json_schema_extra["env"]
        for name, field in Settings.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
    }


def environment_values() -> dict[str, str]:
    """The settings the environment sets (unset and empty variables keep their defaults)."""
    return {field: os.environ[env] for field, env in environment_names().items() if os.environ.get(env)}


def home_path() -> Path:
    """TRACEHOUSE_HOME alone: where the log file goes, found even when another setting is invalid."""
    return Settings(**{f: v for f, v in environment_values().items() if f == "home"}).home_path


def load_settings() -> Settings:
    """The settings as the environment holds them now (the command line, tests, benchmarks)."""
    values = environment_values()
    try:
        return Settings(
            **values,
            clickhouse_url_set=bool(os.environ.get("CLICKHOUSE_URL")),
            dagster_postgres_url_set=_postgres_url_set(),
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0])
        wanted = "an integer" if error["type"] == "int_parsing" else error["msg"]
        raise ConfigError(
            f"environment variable {environment_names()[field]} must be {wanted}, got {values[field]!r}"
        ) from None
