"""Calculated cost: an observation with usage and no provided cost is priced at propagation time from
Langfuse's default price list or the user's own prices, valid at its start; a provided cost stays as sent.

Every expected figure is computed here, independently of the SQL: prices read from the JSON/CSV with
Python's re and Decimal.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from orchestration.clickhouse import query_rows
from orchestration.loader import load_objects
from orchestration.model_prices import default_prices, load_prices
from orchestration.propagation import propagate
from tests.conftest import FIXTURES, INGESTION_V2, minute_key, put

DB = "tracehouse"
CAPTURES = FIXTURES / "instrumentations"
GENERATION = "d1e21356-1610-47d0-89d9-259327366314"  # the v2 batch's generation


def _price(model: str, usage: dict[str, int], tier: str | None = None) -> dict[str, Decimal]:
    """Langfuse's list read with Python: the model whose pattern matches, its default tier (or ``tier``)."""
    models = [
        m
        for m in json.loads(default_prices())
        if re.match(m["matchPattern"].replace("(?i)", ""), model, re.I)
    ]
    assert len(models) == 1, [m["modelName"] for m in models]
    tiers = models[0]["pricingTiers"]
    chosen = next(t for t in tiers if (t["name"] == tier if tier else t["isDefault"]))
    return _cost(usage, {k: Decimal(str(v)) for k, v in chosen["prices"].items()})


def _cost(usage: dict[str, int], prices: dict[str, Decimal]) -> dict[str, Decimal]:
    if set(prices) - {"total"}:
        return {k: usage[k] * p for k, p in prices.items() if k != "total" and k in usage}
    return {"total": usage["total"] * prices["total"]} if "total" in usage else {}


def _events(ch) -> dict[str, dict]:
    rows = query_rows(ch, f"SELECT * FROM {DB}.events_current")
    maps = ("metadata", "usage_details", "cost_details", "provided_cost_details")
    return {r["id"]: {**r, **{m: dict(r[m]) for m in maps}} for r in rows}


def _assert_cost(row: dict, expected: dict[str, Decimal]) -> None:
    assert set(row["cost_details"]) == set(expected), (row["provided_model_name"], row["cost_details"])
    for key, value in expected.items():
        assert row["cost_details"][key] == value, (key, row["cost_details"][key], value)
    assert row["total_cost"] == sum(expected.values())  # exact: Decimal(18, 12) there, Decimal here
    assert row["provided_cost_details"] == {}


def _generation(model: str, usage: dict, start: str, suffix: str, parameters: dict | None = None) -> bytes:
    """The real v2 batch with its generation's model, usage and start changed, under fresh ids."""
    doc = orjson.loads(INGESTION_V2.read_bytes())
    for event in doc["batch"]:
        event["id"] += suffix
        body = event["body"]
        for key in ("id", "traceId", "parentObservationId"):
            if body.get(key):
                body[key] += suffix
        if body["id"] == GENERATION + suffix:
            if event["type"] == "generation-create":
                body.update(model=model, startTime=start, modelParameters=parameters or {})
            else:
                body["usage"] = usage
    return orjson.dumps(doc)


def _load(ch, s3, env, bodies: dict[str, bytes], user_prices: Path | None = None) -> None:
    keys = [
        put(s3, env, minute_key("p1", "otlp" if n.endswith("pb") else "ingestion", n), b)
        for n, b in bodies.items()
    ]
    assert load_objects(ch, s3, keys, env, run_id="t").count("loaded") == len(keys)
    propagate(ch, delay_seconds=0, interval_seconds=180, user_prices=user_prices)


def test_usage_without_cost_is_priced_from_langfuse_list_and_provided_cost_stays(env, s3, ch):
    captures = {
        f"{lib}-{p.name}": p.read_bytes()
        for lib in ("otel-genai", "pydantic-ai")
        for p in sorted((CAPTURES / lib).iterdir())
        if p.suffix == ".pb"
    }
    _load(
        ch,
        s3,
        env,
        {
            **captures,
            "unknown.json": _generation("house-model-x", {"input": 5}, "2026-11-24T02:33:25Z", "-u"),
        },
    )
    rows = _events(ch)
    service = {i: r["metadata"].get("resource.service.name") for i, r in rows.items()}
    genai = [r for i, r in rows.items() if service[i] == "weather-genai"]
    calls = [r for r in genai if r["type"] in ("GENERATION", "EMBEDDING")]
    assert len(calls) == 4
    for row in calls:  # OTel GenAI sends tokens, never a cost
        _assert_cost(row, _price(row["provided_model_name"], dict(row["usage_details"])))
    embedding = next(r for r in calls if r["type"] == "EMBEDDING")
    assert embedding["cost_details"] == {"total": 10 * Decimal("2e-08")}  # a price for total only

    pydantic = [
        r for i, r in rows.items() if r["type"] == "GENERATION" and service[i] == "weather-pydantic-ai"
    ]
    assert len(pydantic) == 2
    for row in pydantic:  # Logfire sent operation.cost: kept as sent, not recalculated
        assert row["cost_details"] == row["provided_cost_details"]  # as sent, not recalculated
        assert float(row["cost_details"]["total"]) == pytest.approx(1.035e-05, abs=1e-12)
    unknown = rows[GENERATION + "-u"]
    assert (
        dict(unknown["usage_details"])
        and dict(unknown["cost_details"]) == {}
        and unknown["total_cost"] is None
    )


def test_prices_follow_their_start_date_and_tiers_their_conditions(env, s3, ch, tmp_path):
    prices = tmp_path / "prices.csv"
    prices.write_text(
        "model_name,match_pattern,start_date,usage_key,price\n"
        "house-model,(?i)^house-model$,2026-01-01,input,0.000001\n"
        "house-model,(?i)^house-model$,2026-01-01,output,0.000002\n"
        "house-model,(?i)^house-model$,2026-11-25,input,0.000003\n"
        "house-model,(?i)^house-model$,2026-11-25,output,0.000004\n"
    )
    usage = {"input": 1000, "output": 500}
    big, small, later = (
        {"input": 250_000, "output": 10},
        {"input": 1000, "output": 10},
        "2026-11-26T10:00:00Z",
    )
    _load(
        ch, s3, env,
        {
            "old.json": _generation("house-model", usage, "2026-11-24T10:00:00Z", "-old"),
            "new.json": _generation("house-model", usage, "2026-11-26T10:00:00Z", "-new"),
            "small.json": _generation("gemini-2.5-pro", small, later, "-s"),
            "large.json": _generation("gemini-2.5-pro", big, later, "-l"),
            "fast.json": _generation("gpt-4o", usage, later, "-f", {"service_tier": "priority"}),
        },
        user_prices=prices,
    )  # fmt: skip
    rows = _events(ch)
    old, new = Decimal("0.000001"), Decimal("0.000003")
    _assert_cost(rows[GENERATION + "-old"], {"input": 1000 * old, "output": 500 * Decimal("0.000002")})
    _assert_cost(rows[GENERATION + "-new"], {"input": 1000 * new, "output": 500 * Decimal("0.000004")})
    _assert_cost(
        rows[GENERATION + "-s"], _price("gemini-2.5-pro", {"input": 1000, "output": 10, "total": 1010})
    )
    _assert_cost(
        rows[GENERATION + "-l"], _price("gemini-2.5-pro", {**big, "total": 250_010}, "Large Context")
    )
    fast = next(t["name"] for m in json.loads(default_prices()) if m["modelName"] == "gpt-4o"
                for t in m["pricingTiers"] if not t["isDefault"])  # fmt: skip
    _assert_cost(rows[GENERATION + "-f"], _price("gpt-4o", {**usage, "total": 1500}, fast))


def test_usage_arriving_in_a_later_window_is_priced_then(env, s3, ch):
    doc = orjson.loads(_generation("gpt-4o", {"input": 10, "output": 20}, "2026-11-24T02:33:25Z", "-w"))
    update = [e for e in doc["batch"] if e["type"] == "generation-update"]
    first = {**doc, "batch": [e for e in doc["batch"] if e["type"] != "generation-update"]}
    _load(ch, s3, env, {"first.json": orjson.dumps(first)})
    assert dict(_events(ch)[GENERATION + "-w"]["cost_details"]) == {}  # no usage yet
    _load(ch, s3, env, {"second.json": orjson.dumps({**doc, "batch": update})})
    _assert_cost(_events(ch)[GENERATION + "-w"], _price("gpt-4o", {"input": 10, "output": 20, "total": 30}))


def test_prices_load_once_per_seed(env, ch, tmp_path):
    version = load_prices(ch)
    assert load_prices(ch) == version  # nothing reloaded
    count = query_rows(ch, f"SELECT count() AS n FROM {DB}.model_prices")[0]["n"]
    assert count == sum(len(m["pricingTiers"]) for m in json.loads(default_prices()))
    extra = tmp_path / "p.csv"
    extra.write_text("model_name,match_pattern,start_date,usage_key,price\nm,^m$,,input,0.1\n")
    assert load_prices(ch, extra) != version
    assert query_rows(ch, f"SELECT count() AS n FROM {DB}.model_prices")[0]["n"] == count + 1
