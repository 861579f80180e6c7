"""Model prices for calculated cost: Langfuse's default list plus the user's own, in ``model_prices``.

An observation with usage but no provided cost gets a cost calculated at propagation time from the price
valid at its start (sql/propagation.sql, ``resolve_prices`` and ``price_of``): the model whose match pattern
(RE2, Langfuse's own patterns) fits the model name, a project's own price before a global one, the latest
start date not after the observation's start, then the first pricing tier whose conditions hold (Langfuse's
tiers: usage above a threshold, a model parameter in a set), else the model's default tier. Prices are
Decimal(18, 12), cost per usage key is usage × price; a price for ``total`` alone applies to total usage.

Seeds load once per content: the table holds the hash of what it was loaded from, and a changed seed
reloads it whole. A price change applies to history through a replay, never a mutation.
"""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from orchestration.clickhouse import ClickHouse, on_cluster, query_rows
from orchestration.settings import DATABASE

DEFAULT_SOURCE = "langfuse-default"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DECIMAL = pa.decimal128(18, 12)
SCHEMA = pa.schema(
    [
        ("project_id", pa.string()),
        ("model_id", pa.string()),
        ("model_name", pa.string()),
        ("match_pattern", pa.string()),
        ("start_date", pa.timestamp("us", tz="UTC")),
        ("tier_id", pa.string()),
        ("tier_name", pa.string()),
        ("tier_priority", pa.uint32()),
        ("tier_is_default", pa.bool_()),
        (
            "usage_conditions",
            pa.list_(
                pa.struct(
                    [
                        ("pattern", pa.string()),
                        ("case_sensitive", pa.bool_()),
                        ("operator", pa.string()),
                        ("value", pa.float64()),
                    ]
                )
            ),
        ),  # fmt: skip
        (
            "parameter_conditions",  # fmt: skip
            pa.list_(
                pa.struct(
                    [("key", pa.string()), ("operator", pa.string()), ("values", pa.list_(pa.string()))]
                )
            ),
        ),
        ("prices", pa.map_(pa.string(), _DECIMAL)),
        ("source", pa.string()),
        ("seed_hash", pa.string()),
    ]
)


def default_prices() -> bytes:
    return resources.files("orchestration").joinpath("prices/langfuse_default_model_prices.json").read_bytes()


def langfuse_rows(models: list[dict[str, Any]], source: str = DEFAULT_SOURCE) -> list[dict[str, Any]]:
    """Langfuse's price list (one entry per model, prices per pricing tier) as table rows, one per tier."""
    rows = []
    for model in models:
        start = model.get("startDate")
        for tier in model.get("pricingTiers") or []:
            usage, parameters = [], []
            for cond in tier.get("conditions") or []:
                if cond.get("source") == "model_parameters":
                    parameters.append({"key": cond["key"], "operator": cond["operator"],
                                       "values": [str(v) for v in cond.get("values") or []]})  # fmt: skip
                else:
                    usage.append({"pattern": cond["usageDetailPattern"],
                                  "case_sensitive": bool(cond.get("caseSensitive")),
                                  "operator": cond["operator"], "value": float(cond["value"])})  # fmt: skip
            rows.append(
                {
                    "project_id": "",
                    "model_id": model["id"],
                    "model_name": model["modelName"],
                    "match_pattern": model["matchPattern"],
                    "start_date": datetime.fromisoformat(start) if start else EPOCH,
                    "tier_id": tier["id"],
                    "tier_name": tier.get("name") or "",
                    "tier_priority": int(tier.get("priority") or 0),
                    "tier_is_default": bool(tier.get("isDefault")),
                    "usage_conditions": usage,
                    "parameter_conditions": parameters,
                    "prices": {k: Decimal(str(v)) for k, v in tier["prices"].items()},
                    "source": source,
                }
            )
    return rows


def csv_rows(text: str, source: str) -> list[dict[str, Any]]:
    """User prices: ``model_name,match_pattern,start_date,usage_key,price[,project_id]``, one line per usage
    key; lines of one model, project and start date make one price (a single default tier)."""
    grouped: dict[tuple[str, str, str, str], dict[str, Decimal]] = {}
    for line in csv.DictReader(io.StringIO(text)):
        key = (
            line.get("project_id") or "",
            line["model_name"],
            line["match_pattern"],
            line.get("start_date") or "",
        )
        grouped.setdefault(key, {})[line["usage_key"]] = Decimal(line["price"])
    rows = []
    for (project, name, pattern, start), prices in grouped.items():
        model_id = f"user:{project}:{name}:{start}"
        rows.append(
            {
                "project_id": project, "model_id": model_id, "model_name": name, "match_pattern": pattern,
                "start_date": datetime.fromisoformat(start).replace(tzinfo=UTC) if start else EPOCH,
                "tier_id": f"{model_id}:default", "tier_name": "Standard", "tier_priority": 0,
                "tier_is_default": True, "usage_conditions": [], "parameter_conditions": [], "prices": prices,
                "source": source,
            }
        )  # fmt: skip
    return rows


def load_prices(ch: ClickHouse, user_prices: Path | None = None, db: str = DATABASE) -> str:
    """Make ``model_prices`` hold the default list plus ``user_prices``; returns the seed hash (the prices'
    version). A no-op when the table already holds exactly this seed."""
    default = default_prices()
    user = user_prices.read_text() if user_prices else ""
    seed_hash = hashlib.sha256(default + b"\0" + user.encode()).hexdigest()[:16]
    held = query_rows(
        ch,
        f"SELECT countIf(seed_hash = {{h:String}}) AS ours, count() AS total FROM {db}.model_prices",  # noqa: S608
        {"h": seed_hash},
    )[0]
    if held["ours"] == held["total"] > 0:  # loaded whole from this seed (a load is one insert)
        return seed_hash
    rows = langfuse_rows(orjson.loads(default))
    if user_prices:
        rows += csv_rows(user, f"user:{user_prices.name}")
    ch.command(f"TRUNCATE TABLE {db}.model_prices{on_cluster(ch)}")
    table = pa.Table.from_pylist([{**r, "seed_hash": seed_hash} for r in rows], SCHEMA)
    ch.insert_arrow(f"{db}.model_prices", table)
    return seed_hash
