"""OTLP/JSON mapped in ClickHouse (orchestration/otlp_json.py) against the Python parser, on real chDB.

The fast path may decline an object (Python then parses it), but an object it takes must give exactly the
rows parsers/otlp.py gives: the real SDK payload, generated batches, and hypothesis-made documents full of
odd types, shapes and values are run through both.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import uuid
from datetime import UTC, datetime

import orjson
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestration import otlp_json
from orchestration.clickhouse import ClickHouse, query_rows, query_scalar
from orchestration.generate import _trace_spans, encode_otlp_json, generate
from orchestration.loader import load_objects
from orchestration.parsers import BadObject, parse_object
from orchestration.parsers.common import OBSERVATION_SCHEMA, to_arrow
from orchestration.parsers.otlp import CLAIMS
from orchestration.raw_keys import build_key, parse_key
from tests.conftest import OTLP_PB, put

DB = "tracehouse"
LIMITS = {"max_object": 64 * 1024 * 1024, "max_record": 64 * 1024}
COLUMNS = [f.name for f in OBSERVATION_SCHEMA]
EXAMPLES = int(os.environ.get("TRACEHOUSE_FUZZ_EXAMPLES", "150")) // 10


def _key(name: str) -> str:
    return build_key("", "proj", "otlp", "2026-11-24T10:00", name)


def python_rows(key: str, doc: bytes) -> list[dict] | BadObject:
    """What the Python parser makes of ``doc``, as Arrow values (the form ClickHouse returns too)."""
    try:  # the loader's steps: parse, then fit the rows to their columns
        rows = to_arrow(parse_object(parse_key(key), doc, **LIMITS).observations, OBSERVATION_SCHEMA)
    except BadObject as exc:
        return exc
    return sorted(rows.to_pylist(), key=repr)  # span ids need not be unique in a batch


def sql_rows(ch: ClickHouse, docs: dict[str, bytes]) -> dict[str, list[dict]]:
    """The rows the fast path wrote per object it took."""
    load = uuid.uuid4().hex
    objects = [otlp_json.RawObject(key, "proj", doc) for key, doc in docs.items()]
    taken = otlp_json.load(ch, DB, load, LIMITS["max_record"], objects)
    rows = query_rows(
        ch,
        f"SELECT {', '.join(COLUMNS)} FROM {DB}.observations_staging WHERE load_id = {{l:String}} "
        "ORDER BY source_key, id",
        {"l": load},
    )
    out: dict[str, list[dict]] = {}
    for row in sorted(rows, key=repr):
        out.setdefault(row["source_key"], []).append(row)
    assert {k: len(v) for k, v in out.items()} == taken
    return out


def assert_same_where_taken(ch: ClickHouse, docs: dict[str, bytes]) -> set[str]:
    """Every object the fast path took is one Python parses into exactly the same rows; returns those."""
    taken = sql_rows(ch, docs)
    for key, rows in taken.items():
        expected = python_rows(key, docs[key])
        assert not isinstance(expected, BadObject), (key, str(expected), docs[key][:300])
        assert rows == expected, (key, docs[key][:300])
    return set(taken)


def otlp_json_of_protobuf(data: bytes) -> bytes:
    """An OTLP/JSON document of a protobuf request: proto3 JSON with ids in hex, as OTLP/JSON says."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(data)
    doc = MessageToDict(request)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return orjson.dumps(doc)


def test_the_langfuse_sdk_payload_as_otlp_json_is_taken_and_mapped_like_python(ch):
    doc = otlp_json_of_protobuf(gzip.decompress(OTLP_PB.read_bytes()))
    assert assert_same_where_taken(ch, {_key("sdk.json"): doc}) == {_key("sdk.json")}


def test_generated_batches_are_taken_whole(ch):
    rng = random.Random(7)
    docs = {}
    for i in range(6):
        spans = [
            s
            for _ in range(rng.randint(1, 5))
            for s in _trace_spans(rng, datetime(2026, 11, 24, tzinfo=UTC), rng.choice([64, 2000]), "proj")
        ]
        docs[_key(f"g{i}.json")] = encode_otlp_json(spans)
    assert assert_same_where_taken(ch, docs) == set(docs)


def test_what_the_fast_path_declines_python_still_loads_or_quarantines(env, s3, ch, monkeypatch):
    """A batch mixing plain, odd and bad OTLP/JSON objects ends in the same staging rows and ledger states
    with the fast path as without it."""
    plain = encode_otlp_json(_trace_spans(random.Random(1), datetime(2026, 11, 24, tzinfo=UTC), 64, "proj"))
    doc = orjson.loads(plain)
    odd = json.loads(plain)  # Python's json adds spaces after separators: not compact, so Python's
    doubles = orjson.loads(plain)
    doubles["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.5}}
    )
    broken = orjson.loads(plain)
    broken["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["status"] = "error"
    bodies = {
        "plain.json": plain,
        "spaced.json": json.dumps(odd).encode(),
        "doubles.json": orjson.dumps(doubles),
        "broken-status.json": orjson.dumps(broken),
        "truncated.json": plain[:-10],
        "gz.json.gz": gzip.compress(orjson.dumps(doc)),
    }

    def load(bucket_suffix: str, fast: bool) -> tuple[list, list]:
        monkeypatch.setenv("TRACEHOUSE_OTLP_JSON_IN_CLICKHOUSE", "1" if fast else "0")
        from orchestration.settings import load_settings

        settings = load_settings()
        keys = [
            put(s3, settings, build_key("", f"p-{bucket_suffix}", "otlp", "2026-11-24T10:00", n), b)
            for n, b in bodies.items()
        ]
        load_objects(ch, s3, keys, settings, run_id=bucket_suffix)
        ledger = query_rows(
            ch,
            "SELECT replaceOne(source_key, {p:String}, '') AS k, toString(argMax(status, recorded_at)) AS s, "
            "argMax(observations, recorded_at) AS n, argMax(reason, recorded_at) AS reason "
            f"FROM {DB}.ingest_ledger WHERE startsWith(source_key, {{p:String}}) "
            "GROUP BY source_key ORDER BY k",
            {"p": f"p-{bucket_suffix}/"},
        )
        cols = [c for c in COLUMNS if c not in ("project_id", "source_key")]
        rows = query_rows(
            ch,
            f"SELECT replaceOne(source_key, {{p:String}}, '') AS k, {', '.join(cols)} "
            f"FROM {DB}.observations_staging WHERE startsWith(source_key, {{p:String}}) ORDER BY k, id",
            {"p": f"p-{bucket_suffix}/"},
        )
        return ledger, rows

    fast_ledger, fast_rows = load("fast", True)
    python_ledger, python_rows_ = load("python", False)
    assert fast_ledger == python_ledger and fast_rows == python_rows_
    states = {r["k"].rsplit("/", 1)[-1]: r["s"] for r in fast_ledger}
    assert states == {
        "plain.json": "loaded",
        "spaced.json": "loaded",
        "doubles.json": "loaded",
        "gz.json.gz": "loaded",
        "broken-status.json": "quarantined",
        "truncated.json": "quarantined",
    }


def test_a_fast_path_failure_falls_back_to_python(env, s3, ch, monkeypatch):
    keys = generate(
        s3, env.raw_bucket, "", objects=2, traces_per_object=2, formats=("otlp_json",), seed=3
    ).keys

    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated ClickHouse error")

    monkeypatch.setattr(otlp_json, "load", broken)
    report = load_objects(ch, s3, keys, env, run_id="t")
    assert report.count("loaded") == 2 and "simulated ClickHouse error" in report.notes[0]
    assert query_scalar(ch, f"SELECT count() FROM {DB}.observations_staging") == sum(
        o.observations for o in report.outcomes
    )


# --- fuzzing: mostly well-formed documents with odd types, shapes and values mixed in ---------------------

_ODD_TEXT = [
    "", "GENERATION", "prod,beta", '["a","b"]', '["a",1]', "[", '"quoted"', "null", "true", "7", "-3", "007",
    "1.5", "1e400", '{"a":1}', " 5", "2026-11-24T10:00:00Z", '"2026-11-24T10:00:00.5+01:00"',
    "2026-02-30T00:00:00", "é/ü\\n", "chat", "a\tb", "\u2028", "\\", '"',
]  # fmt: skip
_TEXT = st.one_of(st.text(max_size=12), st.text(max_size=12), st.sampled_from(_ODD_TEXT))
_NUMBER_OBJECTS = st.sampled_from(
    ['{"input":3,"output":4}', '{"input":3,"total":9}', '{"total":0.25,"x":null}', '{"input":-1}',
     '{"a":1,"a":2}', '{"input":"3"}', '{"unit":"TOKENS","input":2}', '{"input":1.9}', "[1]", "{}", "x"]
)  # fmt: skip
# values that make sense for a claimed key, and now and then one that does not
_CLAIMED = {
    "langfuse.observation.usage_details": _NUMBER_OBJECTS,
    "langfuse.observation.cost_details": _NUMBER_OBJECTS,
    "langfuse.observation.completion_start_time": st.sampled_from(
        ['"2026-11-24T10:00:00.123456Z"', "2026-11-24T10:00:00+01:00", "2026-11-24 10:00:00.5",
         "2026-02-30T00:00:00", "1795594044", '"x"', "null", ""]
    ),
    "langfuse.observation.prompt.version": st.sampled_from(["3", "007", "-1", "4294967296", "x"]),
    "langfuse.trace.tags": st.sampled_from(['["b","a","b"]', "x,y,,x", '["a",1]', "[", ""]),
    "gen_ai.usage.input_tokens": st.sampled_from(["12", "1.5", "-2", "x", "1e3"]),
    "gen_ai.usage.cost": st.sampled_from(["0.25", "-1.5", "1e-5", "x"]),
}  # fmt: skip
_CLAIMED_KEYS = [k for keys in CLAIMS.values() for k in keys]
_OTHER_KEYS = ["http.route", "x", "", "langfuse.trace.metadata.tenant", "langfuse.observation.metadata.step",
               "gen_ai.request.max_tokens", "resource.x", "otel.span.kind"]  # fmt: skip


def _odd(draw, rate: int) -> bool:
    """True about once in ``rate`` draws (``rate`` already multiplied by the document's rarity)."""
    return draw(st.integers(0, rate - 1)) == 0


def _value(draw, key: str, rare: int) -> object:
    if key in _CLAIMED and not _odd(draw, 8 * rare):
        return {"stringValue": draw(_CLAIMED[key])}
    odd_kinds = ["i", "i", "i", "i", "b", "a", "a", "d", "k", "null", "empty", "raw", "two"]
    kind = "s" if not _odd(draw, 3 * rare) else draw(st.sampled_from(odd_kinds))
    if kind == "s":
        return {"stringValue": draw(_TEXT)}
    if kind == "i":
        odd = st.sampled_from(["12", "-4", "0x1", "1.0", 1.5, True])
        return {"intValue": draw(st.one_of(st.integers(-(2**63), 2**64 - 1), st.integers(0, 99), odd))}
    if kind == "b":
        return {"boolValue": draw(st.booleans()) if not _odd(draw, 8 * rare) else "true"}
    if kind == "d":
        return {"doubleValue": draw(st.floats(allow_nan=False, allow_infinity=False))}
    if kind == "a":
        item = st.builds(lambda t: {"stringValue": t}, _TEXT)
        items = draw(
            st.lists(st.one_of(item, item, item, st.just({"intValue": "1"}), st.just("bare")), max_size=3)
        )
        return {"arrayValue": {"values": items} if not _odd(draw, 10 * rare) else {"values": "x"}}
    if kind == "k":
        return {"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}]}}
    return {"null": None, "empty": {}, "two": {"stringValue": "s", "intValue": "5"}}.get(
        kind, draw(st.integers())
    )


def _attributes(draw, n: int, rare: int) -> list:
    keys = [draw(st.sampled_from(_CLAIMED_KEYS if draw(st.booleans()) else _OTHER_KEYS)) for _ in range(n)]
    odd = st.sampled_from([5, {"value": {}}])
    return [
        {"key": k, "value": _value(draw, k, rare)} if not _odd(draw, 40 * rare) else draw(odd) for k in keys
    ]


def _hex(draw, size: int, rare: int) -> object:
    if _odd(draw, 30 * rare):
        return draw(st.sampled_from(["not-hex", 7, "", "AB" * size, "x" * (2 * size)]))
    return draw(st.binary(min_size=size, max_size=size)).hex()


def _pick(draw, usual: list, odd: list, rare: int, rate: int = 15) -> object:
    return draw(st.sampled_from(odd if _odd(draw, rate * rare) else usual))


@st.composite
def documents(draw, rare: int = 1) -> bytes:
    """An OTLP/JSON document: well-formed but for odd values and shapes, each about 1/``rare`` as likely."""
    spans = []
    for _ in range(draw(st.integers(1, 4))):
        span = {
            "traceId": _hex(draw, 16, rare),
            "spanId": _hex(draw, 8, rare),
            "name": draw(_TEXT if not _odd(draw, 20 * rare) else st.sampled_from([5, None, True, ["n"]])),
            "kind": _pick(draw, [1, 2, 3, 0, "SPAN_KIND_CLIENT"], [9, -1, "1", 1.0, None, True, "x"], rare),
            "startTimeUnixNano": _pick(draw, ["1795594044870625024", 1795594044870625024],
                                       ["0", 0, "", None, "1.5", 1.7e18, "-5", "00", "999", "9" * 20], rare),
            "endTimeUnixNano": _pick(draw, ["1795594045870625024", None], ["0", 999, "x", 1.7e18], rare),
            "attributes": _attributes(draw, draw(st.integers(0, 6)), rare),
            "status": _pick(draw, [{}, {"code": 2, "message": "boom"}, {"code": "STATUS_CODE_ERROR"}],
                            [{"message": 5}, "error", None, {"code": "2"}, {"code": 2.0}], rare),
        }  # fmt: skip
        if draw(st.booleans()):
            span["parentSpanId"] = _hex(draw, 8, rare)
        if _odd(draw, 15 * rare):
            span["events"] = [{"name": "e", "timeUnixNano": "1", "attributes": []}]
        if _odd(draw, 20 * rare):
            span.pop(draw(st.sampled_from(["traceId", "spanId", "startTimeUnixNano", "attributes"])))
        if _odd(draw, 30 * rare):
            span["attributes"] = draw(st.sampled_from(["attrs", {}, None]))
        spans.append(span)
    scope = _pick(
        draw, [{}, {"name": "sdk", "version": "1"}], [{"name": 5}, None, "scope", {"version": True}], rare
    )
    if isinstance(scope, dict) and draw(st.booleans()):
        scope = {**scope, "attributes": _attributes(draw, 2, rare)}
    resource = {"attributes": _attributes(draw, draw(st.integers(0, 3)), rare)}
    if _odd(draw, 20 * rare):
        resource = draw(st.sampled_from([None, "r", {}]))
    doc: object = {
        "resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": spans}]}]
    }
    if _odd(draw, 20 * rare):
        doc = draw(st.sampled_from([{"resourceSpans": [5]}, {"resourceSpans": {}}, [doc], {"other": doc}]))
    if _odd(draw, 10 * rare):
        return json.dumps(doc).encode()  # spaces after separators: not the Collector's compact JSON
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=draw(st.booleans())).encode()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    # one load per example (ch is set up once: every example writes keys of its own), many documents each
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(docs=st.lists(st.one_of(documents(), documents(rare=25)), min_size=10, max_size=20))
def test_fuzzed_documents_are_mapped_like_python_or_declined(ch, docs):
    """Dense oddities hit the checks together; rare ones (rare=25: mostly one per document, or none) make
    the fast path take documents with the odd value in them."""
    batch = {_key(f"{uuid.uuid4().hex}.json"): doc for doc in docs}
    assert_same_where_taken(ch, batch)


def test_fuzzing_reaches_the_fast_path(ch):
    """The property above holds trivially if nothing is taken: documents like the fuzzer's, made well-formed,
    must be taken."""
    docs = {}
    for i in range(10):
        spans = [
            {
                "traceId": os.urandom(16).hex(),
                "spanId": os.urandom(8).hex(),
                "name": "n",
                "kind": 1,
                "startTimeUnixNano": "1795594044870625024",
                "status": {},
                "attributes": [
                    {"key": k, "value": {"stringValue": v}}
                    for k, v in [("user.id", "u"), ("langfuse.trace.metadata.tenant", '"t"'), ("x", str(i))]
                ],
            }
        ]
        docs[_key(f"w{i}.json")] = orjson.dumps(
            {
                "resourceSpans": [
                    {"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": spans}]}
                ]
            }
        )
    assert assert_same_where_taken(ch, docs) == set(docs)
