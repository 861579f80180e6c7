"""Property-based tests of every parser: any input either parses into rows that fit their Arrow columns or
is rejected with a BadObject reason. Nothing else may escape (the loader would quarantine it as a parser
bug, but a fuzz failure here is the bug report). TRACEHOUSE_FUZZ_EXAMPLES raises the count for a soak."""

import gzip
import json
import math
import os
import random
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestration.generate import (
    _trace_spans,
    encode_ingestion,
    encode_otlp_json,
    encode_otlp_proto,
    encode_parquet,
)
from orchestration.parsers import parse_object
from orchestration.parsers.common import (
    OBSERVATION_SCHEMA,
    SCORE_SCHEMA,
    TRACE_SCHEMA,
    BadObject,
    ParsedObject,
    to_arrow,
)
from orchestration.raw_keys import BadKey, build_key, parse_key

EXAMPLES = int(os.environ.get("TRACEHOUSE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = {
    "otlp": ["a.json", "a.json.gz", "a.binpb", "a.binpb.gz"],
    "ingestion": ["a.json", "a.json.gz"],
    "parquet": ["a.parquet"],
}
LIMIT = 1 << 20


def _outcome(kind: str, name: str, data: bytes) -> ParsedObject | BadObject:
    raw = parse_key(build_key("", "proj", kind, "2026-11-24T10:00", name), "")
    try:
        parsed = parse_object(raw, data, max_object=LIMIT, max_record=64 * 1024)
        # the loader's next step: every row must fit its column
        to_arrow(parsed.observations, OBSERVATION_SCHEMA)
        to_arrow(parsed.traces, TRACE_SCHEMA)
        to_arrow(parsed.scores, SCORE_SCHEMA)
        return parsed
    except BadObject as exc:
        assert str(exc), "a rejection needs a reason"
        return exc


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=40,
)
# mostly well-formed values with odd ones mixed in, so both the success and the rejection paths are walked
_hex = st.binary(min_size=8, max_size=16).map(lambda b: b.hex())
ids = st.one_of(_hex, _hex, _hex, st.none(), st.integers(), st.text(max_size=40))
_odd = st.one_of(st.none(), st.integers(), st.text(max_size=40))
trace_ids = st.one_of(*[st.binary(min_size=16, max_size=16).map(bytes.hex)] * 6, _odd)
span_ids = st.one_of(*[st.binary(min_size=8, max_size=8).map(bytes.hex)] * 6, _odd)
_mostly = st.sampled_from([True] * 9 + [False])
_iso = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z"))
_nanos = st.integers(min_value=0, max_value=4_102_444_800 * 10**9).map(str)
timestamps = st.one_of(
    _iso,
    _iso,
    _nanos,
    st.none(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "not a date", ""]),
)
event_types = st.one_of(
    st.sampled_from(["trace-create", "span-create", "span-update", "generation-create", "generation-update",
                     "event-create", "score-create", "sdk-log"]),
    st.just("unknown-type") | st.text(max_size=10),
).filter(bool)  # fmt: skip


BODY_FIELDS = [
    "id", "traceId", "name", "startTime", "endTime", "input", "output", "metadata", "usage", "userId",
    "sessionId", "tags", "level", "model", "value", "observationId", "public", "costDetails",
]  # fmt: skip


@st.composite
def ingestion_batches(draw) -> bytes:
    events = []
    for _ in range(draw(st.integers(1, 6)) if draw(_mostly) else 0):
        fields = st.sampled_from(BODY_FIELDS)
        body = draw(st.dictionaries(fields, st.one_of(json_values, ids, timestamps), max_size=10))
        events.append(
            {"id": draw(ids), "type": draw(event_types), "timestamp": draw(timestamps), "body": body}
        )
    payload = {"batch": events} if draw(_mostly) else draw(json_values)
    return json.dumps(payload, allow_nan=True).encode()


@st.composite
def otlp_json_payloads(draw) -> bytes:
    def attribute() -> dict:
        value = draw(
            st.one_of(
                st.builds(lambda s: {"stringValue": s}, st.text(max_size=40)),
                st.builds(
                    lambda i: {"intValue": i}, st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5))
                ),
                st.builds(lambda f: {"doubleValue": f}, st.floats(allow_nan=True, allow_infinity=True)),
                st.builds(lambda b: {"boolValue": b}, st.booleans()),
                json_values,
            )
        )
        key = draw(st.sampled_from(
            ["langfuse.observation.type", "gen_ai.usage.input_tokens", "user.id", "session.id",
             "langfuse.trace.tags", "langfuse.observation.input", "gen_ai.request.model", "x"]
        ))  # fmt: skip
        return {"key": key, "value": value}

    spans = [
        {
            "traceId": draw(trace_ids),
            "spanId": draw(span_ids),
            "parentSpanId": draw(st.one_of(st.just(""), span_ids)),
            "name": draw(st.one_of(st.text(max_size=20), st.text(max_size=20), st.integers())),
            "kind": draw(
                st.one_of(st.integers(0, 5), st.integers(0, 5), st.integers(-5, 10), st.text(max_size=5))
            ),
            "startTimeUnixNano": draw(st.one_of(_nanos, _nanos, timestamps)),
            "endTimeUnixNano": draw(st.one_of(_nanos, _nanos, timestamps)),
            "attributes": [attribute() for _ in range(draw(st.integers(0, 5)))],
            "status": draw(st.one_of(st.just({}), st.just({"code": 2, "message": "boom"}), json_values)),
        }
        for _ in range(draw(st.integers(1, 4)) if draw(_mostly) else 0)
    ]
    doc = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    return json.dumps(doc if draw(_mostly) else draw(json_values), allow_nan=True).encode()


@FUZZ
@given(kind=st.sampled_from(sorted(NAMES)), data=st.binary(max_size=2048), pick=st.integers(0, 3))
def test_random_bytes_never_crash_a_parser(kind, data, pick):
    _outcome(kind, NAMES[kind][pick % len(NAMES[kind])], data)


@FUZZ
@given(payload=ingestion_batches(), compress=st.booleans())
def test_ingestion_batches_parse_or_are_rejected(payload, compress):
    _outcome(
        "ingestion", "a.json.gz" if compress else "a.json", gzip.compress(payload) if compress else payload
    )


@FUZZ
@given(payload=otlp_json_payloads())
def test_otlp_json_parses_or_is_rejected(payload):
    result = _outcome("otlp", "a.json", payload)
    if isinstance(result, ParsedObject):
        for row in result.observations:
            assert row["id"] == row["id"].lower()  # ids are stored as lowercase hex
            assert row["total_cost"] is None or math.isfinite(row["total_cost"])


@FUZZ
@given(payload=ingestion_batches(), cut=st.integers(1, 200))
def test_truncated_gzip_is_rejected_with_a_reason(payload, cut):
    packed = gzip.compress(payload)
    truncated = packed[: max(1, len(packed) - cut)]
    result = _outcome("ingestion", "a.json.gz", truncated)
    # a gzip stream missing its end (at least its 8-byte trailer is cut) is never taken as complete
    assert isinstance(result, BadObject), "a truncated gzip object was loaded"


def test_invalid_utf8_deep_nesting_and_huge_records():
    assert isinstance(_outcome("ingestion", "a.json", b'{"batch": [{"type": "\xff\xfe"}]}'), BadObject)
    deep = b'{"batch": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert isinstance(_outcome("ingestion", "a.json", deep), BadObject)
    huge = json.dumps(
        {"batch": [{"id": "e", "type": "span-create", "timestamp": "2026-11-24T10:00:00Z",
                    "body": {"id": "s", "traceId": "t", "input": "x" * (128 * 1024)}}]}
    ).encode()  # fmt: skip
    result = _outcome("ingestion", "a.json", huge)
    assert isinstance(result, BadObject) and "limit" in str(result)
    bomb = gzip.compress(b"0" * (LIMIT * 4))  # expands past the object limit
    assert isinstance(_outcome("ingestion", "a.json.gz", bomb), BadObject)


@FUZZ
@given(segment=st.text(min_size=1, max_size=30).filter(lambda s: "/" not in s))
def test_keys_with_odd_characters_keep_their_project_or_are_rejected(segment):
    key = build_key("", segment, "otlp", "2026-11-24T10:00", "a.json")
    try:
        parsed = parse_key(key, "")
    except BadKey as exc:
        assert str(exc)
        return
    assert parsed.project_id == segment


@FUZZ
@given(
    seed=st.integers(0, 2**32),
    text=st.text(max_size=300),
    fmt=st.sampled_from(["otlp_json", "otlp_proto", "ingestion", "parquet"]),
    compress=st.booleans(),
)
def test_valid_batches_with_any_text_load_every_span(seed, text, fmt, compress):
    """The success path under fuzz: generated batches whose names and outputs are arbitrary unicode."""
    rng = random.Random(seed)
    traces = [
        _trace_spans(rng, datetime(2026, 11, 24, tzinfo=UTC), 64, "proj") for _ in range(rng.randint(1, 3))
    ]
    for span in (s for trace in traces for s in trace):
        span["name"] = text or span["name"]
        span["attrs"]["langfuse.observation.output"] = text
    spans = [s for trace in traces for s in trace]
    body = {
        "otlp_json": lambda: encode_otlp_json(spans),
        "otlp_proto": lambda: encode_otlp_proto(spans),
        "ingestion": lambda: encode_ingestion(traces, False, rng),
        "parquet": lambda: encode_parquet(spans, "proj"),
    }[fmt]()
    kind, name = {
        "otlp_json": ("otlp", "a.json"),
        "otlp_proto": ("otlp", "a.binpb"),
        "ingestion": ("ingestion", "a.json"),
        "parquet": ("parquet", "a.parquet"),
    }[fmt]
    if compress and fmt != "parquet":
        body, name = gzip.compress(body), name + ".gz"
    result = _outcome(kind, name, body)
    assert isinstance(result, ParsedObject), result
    assert result.observation_count >= len(spans)
    rows = result.observations or result.arrow_observations.to_pylist()
    if fmt != "ingestion":  # the legacy encoding gives observations ids of its own
        assert {s["span_id"] for s in spans} <= {r["id"] for r in rows}
        assert all(r["name"] == (text or r["name"]) for r in rows)
