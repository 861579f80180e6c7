"""Configuration read from environment variables (names fixed by DESIGN.md).

Secrets (S3 keys, the ClickHouse URL with its password) are never stored here: resources read them through
``dg.EnvVar`` so they stay out of run config, logs and the UI.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

DATABASE = "tracehouse"
# The older deployment's tables the historic migration reads (same server, another database).
LEGACY_DATABASE = os.environ.get("LEGACY_DATABASE") or "legacy"


class ConfigError(ValueError):
    """Configuration tracehouse cannot run with (an environment variable, a schema older than the code): the
    message names it and says what to set or run."""


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from exc


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


@dataclass(frozen=True)
class Settings:
    home: Path
    clickhouse_url_set: bool
    dagster_postgres_url_set: bool  # Dagster's runs, events and schedules in PostgreSQL (dagster-postgres)
    s3_endpoint_url: str | None
    raw_bucket: str
    raw_prefix: str
    propagation_delay_seconds: int
    propagation_interval_seconds: int
    max_object_bytes: int
    max_record_bytes: int
    max_bytes_in_flight: int  # fetched object bytes held before the loading thread takes them
    run_max_objects: int  # raw objects one load run takes (the sensor splits a tick's objects into runs)
    core_truncate_chars: int
    user_prices: Path | None  # a CSV of the user's own model prices (orchestration/model_prices.py)

    @property
    def chdb_path(self) -> Path:
        return self.home / "clickhouse"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def s3_data_dir(self) -> Path:
        return self.home / "s3"

    @property
    def embedded(self) -> bool:
        return not self.clickhouse_url_set


def load_settings() -> Settings:
    return Settings(
        home=Path(os.environ.get("TRACEHOUSE_HOME") or ".tracehouse").resolve(),
        clickhouse_url_set=bool(os.environ.get("CLICKHOUSE_URL")),
        dagster_postgres_url_set=_postgres_url_set(),
        s3_endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
        raw_bucket=os.environ.get("RAW_BUCKET") or "tracehouse-raw",
        raw_prefix=os.environ.get("RAW_PREFIX", ""),
        propagation_delay_seconds=_int("PROPAGATION_DELAY_SECONDS", 300),
        propagation_interval_seconds=_int("PROPAGATION_INTERVAL_SECONDS", 180),
        max_object_bytes=_int("TRACEHOUSE_MAX_OBJECT_BYTES", 256 * 1024 * 1024),
        max_record_bytes=_int("TRACEHOUSE_MAX_RECORD_BYTES", 16 * 1024 * 1024),
        max_bytes_in_flight=_int("TRACEHOUSE_MAX_BYTES_IN_FLIGHT", 256 * 1024 * 1024),
        run_max_objects=_int("TRACEHOUSE_RUN_MAX_OBJECTS", 500),
        core_truncate_chars=_int("TRACEHOUSE_CORE_TRUNCATE_CHARS", 2048),
        user_prices=Path(os.environ["TRACEHOUSE_MODEL_PRICES"])
        if os.environ.get("TRACEHOUSE_MODEL_PRICES")
        else None,
    )
