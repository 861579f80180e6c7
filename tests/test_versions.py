"""One version order everywhere: corrections win whatever the load order, grouping or replay; overwritten
objects load again; a replay keeps the migrated history. Real SeaweedFS, real chDB, the real SDK payload."""

import gzip
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestration.clickhouse import query_rows, query_scalar
from orchestration.generate import generate
from orchestration.legacy import generate_legacy
from orchestration.loader import load_objects
from orchestration.migration import done_parts, migrate_part, prepare
from orchestration.models import load_models, rebuild
from orchestration.propagation import propagate
from orchestration.reconcile import pending_keys
from orchestration.replay import replay_from_raw
from orchestration.schema import apply_migrations
from tests.conftest import INGESTION_V2, OTLP_PB, minute_key, put

DB = "tracehouse"
# what a row says; bookkeeping (which propagation wrote it, when) is left out
CONTENT = (
    "SELECT * EXCEPT (propagated_at, propagation_id, source_version) FROM {db}.events ORDER BY project_id, id"
)
LLM_CALL = "85308cbf894bba1a"  # the generation span of the Langfuse SDK v5 capture


def _corrected(name: str, user: str, usage: str, cost: str) -> bytes:
    """The v5 capture with the generation's name, usage and cost and every span's user id changed: the same
    span ids and timestamps, as an SDK re-sending a corrected export would write it."""
    request = ExportTraceServiceRequest.FromString(gzip.decompress(OTLP_PB.read_bytes()))
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                for attribute in span.attributes:
                    if attribute.key == "user.id":
                        attribute.value.string_value = user
                if span.span_id.hex() != LLM_CALL:
                    continue
                span.name = name
                for attribute in span.attributes:
                    if attribute.key == "langfuse.observation.usage_details":
                        attribute.value.string_value = usage
                    if attribute.key == "langfuse.observation.cost_details":
                        attribute.value.string_value = cost
    return gzip.compress(request.SerializeToString())


ORIGINAL = OTLP_PB.read_bytes()
CORRECTION = _corrected(
    "llm-call (corrected)", "user-corrected", '{"input": 99, "output": 7}', '{"total": 0.5}'
)
SECOND_CORRECTION = _corrected(
    "llm-call (again)", "user-again", '{"input": 5, "output": 1}', '{"total": 0.25}'
)


def _upload_in_order(s3, env, objects: list[tuple[str, bytes]]) -> list[str]:
    """Upload one after another, each in a later second than the one before (S3 LastModified has one-second
    resolution)."""
    keys = []
    for i, (key, body) in enumerate(objects):
        if i:
            time.sleep(1.05)
        keys.append(put(s3, env, key, body))
    return keys


def _llm_call(ch, db: str = DB) -> dict:
    return query_rows(
        ch,
        f"SELECT name, usage_details, total_cost, user_id FROM {db}.events WHERE id = {{id:String}}",
        {"id": LLM_CALL},
    )[0]


def _propagate(ch, db: str = DB) -> None:
    propagate(ch, delay_seconds=0, interval_seconds=180, max_windows=10**6, db=db)


EXPECTED_CORRECTION = {
    "name": "llm-call (corrected)",
    "usage_details": [("input", 99), ("output", 7), ("total", 106)],
    "total_cost": 0.5,
    "user_id": "user-corrected",
}


@pytest.mark.parametrize("names", [("b-original", "a-correction"), ("a-original", "b-correction")])
def test_a_correction_uploaded_later_wins_loaded_apart_together_and_replayed(env, s3, ch, names):
    # the correction's key sorts first in one case and last in the other: key order and the order rows are
    # read in (staging is sorted by key) cannot be what decides
    original, correction = _upload_in_order(
        s3,
        env,
        [
            (minute_key("p1", "otlp", f"{names[0]}.binpb.gz"), ORIGINAL),
            (minute_key("p1", "otlp", f"{names[1]}.binpb.gz"), CORRECTION),
        ],
    )
    load_objects(ch, s3, [original], env, run_id="first")
    _propagate(ch)
    assert _llm_call(ch)["name"] == "llm-call"
    load_objects(ch, s3, [correction], env, run_id="second")
    _propagate(ch)
    assert _llm_call(ch) | {"usage_details": sorted(_llm_call(ch)["usage_details"])} == EXPECTED_CORRECTION
    incremental = query_rows(ch, CONTENT.format(db=DB))

    # both objects in one load (one commit time), in either order of the key list
    for n, keys in enumerate(([original, correction], [correction, original])):
        db = f"together{n}"
        apply_migrations(ch, db=db)
        load_objects(ch, s3, keys, env, run_id="together", db=db)
        _propagate(ch, db)
        assert query_rows(ch, CONTENT.format(db=db)) == incremental, keys

    replay_from_raw(ch, s3, env)
    assert query_rows(ch, CONTENT.format(db=DB)) == incremental


_OBJECTS = ["original", "correction", "second", "v2-batch"]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(_OBJECTS), cuts=st.lists(st.booleans(), min_size=3, max_size=3))
def test_any_load_order_and_grouping_gives_the_replayed_events(env, s3, ch, uploaded, order, cuts):
    """The same objects loaded in any order, cut into runs anywhere (each run propagated), give the same
    events, equal to loading them all at once and to a replay."""
    db = "o" + uuid.uuid4().hex[:12]
    apply_migrations(ch, db=db)
    runs, current = [], [uploaded[order[0]]]
    for name, cut in zip(order[1:], cuts, strict=True):
        if cut:
            runs.append(current)
            current = []
        current.append(uploaded[name])
    runs.append(current)
    for keys in runs:
        load_objects(ch, s3, keys, env, run_id="run", db=db)
        _propagate(ch, db)
    assert query_rows(ch, CONTENT.format(db=db)) == uploaded["reference"]


@pytest.fixture
def uploaded(env, s3, ch) -> dict:
    """The four objects, uploaded in a fixed order, and the events a replay of them gives."""
    keys = _upload_in_order(
        s3,
        env,
        [
            (minute_key("p1", "otlp", "c-original.binpb.gz"), ORIGINAL),
            (minute_key("p1", "ingestion", "v2.json"), INGESTION_V2.read_bytes()),
            (minute_key("p1", "otlp", "b-correction.binpb.gz"), CORRECTION),
            (minute_key("p1", "otlp", "a-second.binpb.gz"), SECOND_CORRECTION),
        ],
    )
    replay_from_raw(ch, s3, env)
    assert _llm_call(ch)["name"] == "llm-call (again)"  # the last upload
    return {
        "original": keys[0],
        "v2-batch": keys[1],
        "correction": keys[2],
        "second": keys[3],
        "reference": query_rows(ch, CONTENT.format(db=DB)),
    }


def test_an_object_overwritten_after_its_load_is_loaded_again_as_a_new_version(env, s3, ch):
    key = put(s3, env, minute_key("p1", "otlp", "span.binpb.gz"), ORIGINAL)
    [page] = list(pending_keys(ch, s3, env))
    assert load_objects(ch, s3, list(page), env, run_id="first", etags=page).count("loaded") == 1
    _propagate(ch)
    assert list(pending_keys(ch, s3, env)) == []  # nothing left to do

    put(s3, env, key, CORRECTION)  # the same key, new content
    [page] = list(pending_keys(ch, s3, env))
    assert list(page) == [key]
    report = load_objects(ch, s3, list(page), env, run_id="second", etags=page)
    assert report.count("loaded") == 1
    assert any("overwritten" in note and key in note for note in report.notes)
    _propagate(ch)
    row = _llm_call(ch)
    assert row | {"usage_details": sorted(row["usage_details"])} == EXPECTED_CORRECTION
    # the old version's staging rows are gone: one version of the object in staging, one row per span
    assert query_scalar(ch, f"SELECT uniqExact(load_id) FROM {DB}.observations_staging") == 1
    assert query_scalar(ch, f"SELECT count() - uniqExact(id) FROM {DB}.events") == 0
    assert list(pending_keys(ch, s3, env)) == []
    # a key listed without its ETag (the sensor's run config) is not reloaded
    assert load_objects(ch, s3, [key], env, run_id="third").count("skipped") == 1


def test_a_quarantined_object_fixed_by_re_uploading_it_loads(env, s3, ch):
    key = put(s3, env, minute_key("p1", "otlp", "broken.binpb.gz"), b"not gzip at all")
    [page] = list(pending_keys(ch, s3, env))
    assert load_objects(ch, s3, list(page), env, run_id="r", etags=page).count("quarantined") == 1
    put(s3, env, key, ORIGINAL)
    [page] = list(pending_keys(ch, s3, env))
    assert load_objects(ch, s3, list(page), env, run_id="r", etags=page).count("loaded") == 1


def _models_content(ch) -> dict[str, list]:
    """Every model rebuilt, its rows with Float64 sums rounded (their last bit depends on summation order;
    exact decimals for costs are issue 16)."""
    models = load_models()
    for model in models.values():
        rebuild(ch, model)
    return {
        name: [
            {k: round(v, 12) if isinstance(v, float) else v for k, v in row.items()}
            for row in query_rows(ch, f"SELECT * FROM {DB}.{name} ORDER BY ALL")
        ]
        for name in models
    }


def test_a_replay_after_the_migration_keeps_the_migrated_history(env, s3, ch):
    keys = generate(s3, env.raw_bucket, "", objects=4, traces_per_object=5, seed=5).keys
    load_objects(ch, s3, keys, env, run_id="live")
    _propagate(ch)
    generate_legacy(ch, 3_000, per_trace=5)
    found = prepare(ch, rows_per_part=1000)
    migrated = [migrate_part(ch, p.name) for p in found]
    assert len(migrated) >= 2 and all(r.verified for r in migrated)
    before_rows = query_scalar(ch, f"SELECT count() FROM {DB}.events")
    before, models_before = query_rows(ch, CONTENT.format(db=DB)), _models_content(ch)
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events WHERE propagation_id LIKE 'legacy-%'") > 2_000

    result = replay_from_raw(ch, s3, env)
    assert query_scalar(ch, f"SELECT count() FROM {DB}.events") == before_rows
    assert query_rows(ch, CONTENT.format(db=DB)) == before
    assert result.legacy_parts == len(found)
    assert _models_content(ch) == models_before
    assert done_parts(ch) == {p.name for p in found}  # the migration's record is still true
    assert query_scalar(ch, f"SELECT count() - uniqExact(project_id, id) FROM {DB}.events_core") == 0
