"""The raw-bucket sensor against a real SeaweedFS bucket: cursor, limits, late objects, run keys."""

import dagster as dg
import orjson

from orchestration.resources import RawBucketS3, SettingsResource
from sensors.raw_bucket import ScanLimits, plan_runs, raw_bucket_sensor, run_key_for, scan
from tests.conftest import minute_key, put


def _put_many(s3, env, project, kind, minute, names):
    return [put(s3, env, minute_key(project, kind, n, minute), b"{}") for n in names]


def test_each_object_is_taken_once_across_ticks(env, s3):
    first = _put_many(s3, env, "p1", "otlp", "2026-11-24T10:00", ["a.json", "b.json"])
    first += _put_many(s3, env, "p2", "ingestion", "2026-11-24T10:01", ["c.json"])
    tick1 = scan(s3, env.raw_bucket, "", {}, ScanLimits())
    assert sorted(f.key for f in tick1.objects) == sorted(first)

    tick2 = scan(s3, env.raw_bucket, "", tick1.cursor, ScanLimits())
    assert tick2.objects == []

    newer = _put_many(s3, env, "p1", "otlp", "2026-11-24T10:05", ["d.json"])
    tick3 = scan(s3, env.raw_bucket, "", tick2.cursor, ScanLimits())
    assert [f.key for f in tick3.objects] == newer


def test_late_object_under_an_older_minute_is_found(env, s3):
    _put_many(s3, env, "p1", "otlp", "2026-11-24T10:10", ["a.json"])
    cursor = scan(s3, env.raw_bucket, "", {}, ScanLimits()).cursor
    late = _put_many(s3, env, "p1", "otlp", "2026-11-24T10:02", ["late.json"])
    tick = scan(s3, env.raw_bucket, "", cursor, ScanLimits())
    assert [f.key for f in tick.objects] == late
    assert scan(s3, env.raw_bucket, "", tick.cursor, ScanLimits()).objects == []


def test_limits_bound_a_tick_and_the_next_tick_continues(env, s3):
    keys = _put_many(s3, env, "p1", "otlp", "2026-11-24T11:00", [f"{i:03d}.json" for i in range(7)])
    limits = ScanLimits(max_keys=3)
    taken: list[str] = []
    cursor: dict = {}
    for _ in range(3):
        tick = scan(s3, env.raw_bucket, "", cursor, limits)
        assert len(tick.objects) <= 3
        taken += [f.key for f in tick.objects]
        cursor = tick.cursor
    assert taken == keys  # all of them, in order, none twice
    assert not scan(s3, env.raw_bucket, "", {}, limits).exhausted


def test_stray_keys_are_handed_to_the_loader_once(env, s3):
    stray = put(s3, env, "not-in-layout.json", b"{}")
    tick = scan(s3, env.raw_bucket, "", {}, ScanLimits())
    assert [f.key for f in tick.objects] == [stray]  # the loader quarantines it with the reason
    assert scan(s3, env.raw_bucket, "", tick.cursor, ScanLimits()).objects == []


def test_runs_are_bounded_and_run_keys_stable():
    from sensors.raw_bucket import Found

    objects = [Found(f"k{i}", 100) for i in range(5)]
    runs = plan_runs(objects, ScanLimits(run_objects=2, run_bytes=10_000))
    assert [len(r) for r in runs] == [2, 2, 1]
    assert plan_runs(objects, ScanLimits(run_objects=100, run_bytes=250))[0] == objects[:2]
    assert run_key_for(["b", "a"]) == run_key_for(["a", "b"]) != run_key_for(["a"])


def test_sensor_requests_runs_with_run_keys_and_reports_the_raw_asset(env, s3):
    keys = _put_many(s3, env, "p1", "otlp", "2026-11-24T12:00", ["a.json", "b.json"])
    resource = RawBucketS3(endpoint_url=env.s3_endpoint_url, region_name="us-east-1")
    settings = SettingsResource(**env.model_dump())
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"s3": resource, "settings": settings})
        result = raw_bucket_sensor(context)
        assert len(result.run_requests) == 1
        request = result.run_requests[0]
        assert request.run_key == run_key_for(keys)
        assert request.run_config["ops"]["staging_tables"]["config"]["keys"] == keys
        assert result.asset_events[0].asset_key == dg.AssetKey("raw_batches")

        again = raw_bucket_sensor(
            dg.build_sensor_context(
                instance=instance, cursor=result.cursor, resources={"s3": resource, "settings": settings}
            )
        )
        assert again.run_requests == [] and again.skip_reason is not None
        assert orjson.loads(again.cursor)["prefixes"]
