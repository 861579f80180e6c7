"""What a data engineer sees in the Dagster UI, asked of a real ``dagster-webserver`` over the GraphQL API
the UI itself uses, and one page opened in a real headless Chromium: column lineage for every model column,
events checks evaluated by the propagation run, each partition's own row count, and quarantined objects
still outstanding after a later clean load."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from orchestration.clickhouse import open_clickhouse, query_scalar
from orchestration.local_s3 import free_port
from tests.conftest import INGESTION_V2, deployment, minute_key, put
from tests.dagster_web import graphql, wait_loaded

pytestmark = pytest.mark.xdist_group("ui")  # one worker runs both tests: they share the module fixtures

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def ran(seaweed, tmp_path_factory) -> Iterator[dict]:
    """A bad and a good object loaded, a propagation, the models built, then a clean load: all recorded in
    a Dagster instance the webserver reads (once for this file's tests: they only read it)."""
    with pytest.MonkeyPatch.context() as mp:
        with deployment(seaweed, tmp_path_factory.mktemp("ui"), mp, "embedded") as env:
            yield _run_pipeline(env, seaweed.client(), mp)


def _run_pipeline(env, s3, monkeypatch) -> dict:
    from assets.events import EVENTS_CHECKS, propagate_events, propagation
    from assets.models import MODEL_CHECKS, model_assets
    from assets.schema import clickhouse_schema
    from assets.staging import staging_tables
    from orchestration.dagster_runs import write_dagster_home
    from orchestration.resources import build_resources
    from orchestration.settings import load_settings

    home = write_dagster_home(load_settings())  # the instance config `tracehouse dev` writes
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    resources = build_resources()
    assert dg.materialize([clickhouse_schema], resources=resources, instance=instance).success

    def load(keys: list[str]) -> None:
        config = {"ops": {"staging_tables": {"config": {"keys": keys}}}}
        assert dg.materialize(
            [staging_tables], resources=resources, run_config=config, instance=instance
        ).success

    bad = put(s3, env, minute_key("proj-1", "ingestion", "bad.json"), b'{"batch": [')
    load([bad, put(s3, env, minute_key("proj-1", "ingestion", "b.json"), INGESTION_V2.read_bytes())])
    job = dg.Definitions(
        assets=[propagation], asset_checks=EVENTS_CHECKS, jobs=[propagate_events], resources=resources
    ).resolve_job_def("propagate_events")
    config = {"ops": {"propagation": {"config": {"delay_seconds": 0}}}}
    assert job.execute_in_process(run_config=config, instance=instance).success

    def model(*names: str) -> list:  # a model and its checks, as the code location's jobs hold them
        keys = {dg.AssetKey(n) for n in names}
        checks = [c for c in MODEL_CHECKS if c.check_key.asset_key in keys]
        return [a for a in model_assets(load_settings()) if a.key in keys] + checks

    day = "2026-11-24"
    assert dg.materialize(
        model("usage_daily"), resources=resources, partition_key=day, instance=instance
    ).success
    tables = model("trace_summaries", "session_summaries")
    assert dg.materialize(tables, resources=resources, instance=instance).success
    load([put(s3, env, minute_key("proj-1", "ingestion", "later.json"), INGESTION_V2.read_bytes())])
    with open_clickhouse(None, env.chdb_path) as ch:
        day_rows = query_scalar(
            ch, "SELECT count() FROM tracehouse.usage_daily WHERE day = {d:Date}", {"d": day}
        )
    return {"home": home, "day": day, "day_rows": day_rows}


@pytest.fixture(scope="module")
def webserver(ran) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": str(ran["home"])},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_loaded(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


_METADATA = """
metadataEntries {
  label
  ... on MarkdownMetadataEntry { mdStr }
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on TextMetadataEntry { text }
}
"""


def _asset(url: str, key: str, fields: str) -> dict:
    data = graphql(
        url,
        "query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode { "
        + fields
        + " } } }",
        {"key": {"path": [key]}},
    )
    return data["assetNodeOrError"]


def _entries(entries: list[dict]) -> dict:
    return {e["label"]: e for e in entries}


def test_the_ui_shows_lineage_checks_partition_rows_and_outstanding_quarantine(webserver, ran):
    from orchestration.models import load_models, output_columns

    for name, model in load_models().items():
        table = _entries(_asset(webserver, name, _METADATA)["metadataEntries"])["column_lineage"]["mdStr"]
        listed = {line.split("|")[1].strip() for line in table.splitlines()[2:]}
        assert listed == set(output_columns(model)), name  # every output column has an entry

    def checks(asset: str) -> dict:
        found = _asset(
            webserver,
            asset,
            "assetChecksOrError { ... on AssetChecks { checks { name "
            "executionForLatestMaterialization { status } } } }",
        )["assetChecksOrError"]["checks"]
        return {c["name"]: (c["executionForLatestMaterialization"] or {}).get("status") for c in found}

    assert checks("events") == {
        "events_no_duplicate_ids": "SUCCEEDED",
        "events_complete": "SUCCEEDED",
        "trace_attributes_current": "SUCCEEDED",
        "events_instrumentation_health": "SUCCEEDED",
    }
    for name in ("usage_daily", "trace_summaries"):  # evaluated with the build, not "Not evaluated"
        assert checks(name) == {"unique_not_null_keys": "SUCCEEDED", "reconciles_with_events": "SUCCEEDED"}

    # staging was appended to after the propagation (the last clean load): windows consume appends on
    # purpose, so events is not "Unsynced" for it (assets/staging.py, append_only_version)
    assert _asset(webserver, "events", "staleStatus")["staleStatus"] == "FRESH"

    usage = _asset(
        webserver,
        "usage_daily",
        f'assetMaterializations(partitions: ["{ran["day"]}"]) {{ partition {_METADATA} }}',
    )["assetMaterializations"]
    assert [m["partition"] for m in usage] == [ran["day"]]
    assert _entries(usage[0]["metadataEntries"])["dagster/row_count"]["intValue"] == ran["day_rows"] > 0

    quarantine = _asset(webserver, "ingest_quarantine", f"assetMaterializations(limit: 1) {{ {_METADATA} }}")
    latest = _entries(quarantine["assetMaterializations"][0]["metadataEntries"])
    assert latest["quarantined_outstanding"]["intValue"] == 1  # the clean load after it forgets nothing


def test_an_asset_page_shows_the_lineage_table_in_chromium(webserver):
    """One page in a real browser (Debian's chromium, installed by `make test` on a fresh machine)."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed and `make test` could not install it (see its output)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        page = browser.new_page()
        page.goto(f"{webserver}/assets/trace_summaries", timeout=60_000)
        # the metadata row of the lineage table; open-source Dagster shows markdown behind a link
        row = page.locator("tr", has_text="column_lineage").first
        row.get_by_text("Show Markdown").click(timeout=60_000)
        page.get_by_text("computed from").first.wait_for(timeout=30_000)
        assert page.get_by_text("traces.name").count() > 0
        browser.close()
