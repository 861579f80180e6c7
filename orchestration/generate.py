"""Synthetic raw batches in every supported format, shaped like what Langfuse SDKs and the Collector send.

Each trace is an agent run: a root ``agent`` span, one or two ``generation`` spans (model, usage, cost,
chat messages as input/output), a ``tool`` span, sometimes an error. Trace attributes (user, session,
tags, metadata, release, environment) ride on the spans as SDKs >= v3 propagate them. Ingestion batches
use creates followed by update patches and, with ``late_updates``, a trace-create that adds user/session
after the observations (what the v2 SDK's ``trace.update`` sends).
"""

from __future__ import annotations

import gzip
import io
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from orchestration.parsers.common import OBSERVATION_SCHEMA
from orchestration.raw_keys import build_key

FORMATS = ("otlp_json", "otlp_proto", "ingestion", "parquet")
MODELS = {"gpt-4o": (2.5e-6, 1e-5), "gpt-4o-mini": (1.5e-7, 6e-7), "claude-sonnet-4": (3e-6, 1.5e-5)}
_WORDS = (
    "the quick brown fox jumps over a lazy dog while tokens stream from the model into the trace "
    "store and engineers watch costs per project per day"
).split()


@dataclass
class GenerateSummary:
    objects: int = 0
    bytes: int = 0
    observations: int = 0
    traces: int = 0
    keys: list[str] = field(default_factory=list)


def _text(rng: random.Random, size: int) -> str:
    out, n = [], 0
    while n < size:
        word = rng.choice(_WORDS)
        out.append(word)
        n += len(word) + 1
    return " ".join(out)


def _trace_spans(rng: random.Random, start: datetime, payload_bytes: int, project: str) -> list[dict]:
    """One trace as neutral span dicts (ids hex, times in ns, attributes as Python values)."""
    trace_id = rng.randbytes(16).hex()
    root_id = rng.randbytes(8).hex()
    user, session = f"user-{rng.randint(1, 500)}", f"sess-{rng.randint(1, 2000)}"
    trace_attrs = {
        "user.id": user,
        "session.id": session,
        "langfuse.trace.tags": rng.sample(["prod", "beta", "agent", "rag", "eval"], 2),
        "langfuse.trace.metadata.tenant": orjson.dumps(f"tenant-{rng.randint(1, 20)}").decode(),
        "langfuse.release": f"1.{rng.randint(0, 9)}.0",
        "langfuse.environment": rng.choice(["production", "staging"]),
    }
    t0 = int(start.timestamp() * 1e9)
    spans = []
    cursor = t0 + rng.randint(1, 5) * 1_000_000
    for i in range(rng.choice([1, 1, 2])):
        model = rng.choice(list(MODELS))
        tin, tout = rng.randint(50, 3000), rng.randint(10, 800)
        pin, pout = MODELS[model]
        duration = rng.randint(200, 4000) * 1_000_000
        error = rng.random() < 0.03
        spans.append(
            {
                "trace_id": trace_id,
                "span_id": rng.randbytes(8).hex(),
                "parent": root_id,
                "name": f"llm-call-{i}",
                "start": cursor,
                "end": cursor + duration,
                "error": error,
                "attrs": {
                    **trace_attrs,
                    "langfuse.observation.type": "generation",
                    "langfuse.observation.model.name": model,
                    "langfuse.observation.model.parameters": orjson.dumps({"temperature": 0.2}).decode(),
                    "langfuse.observation.input": orjson.dumps(
                        [{"role": "user", "content": _text(rng, payload_bytes // 2)}]
                    ).decode(),
                    "langfuse.observation.output": _text(rng, payload_bytes // 2),
                    "langfuse.observation.usage_details": orjson.dumps(
                        {"input": tin, "output": tout}
                    ).decode(),
                    "langfuse.observation.cost_details": orjson.dumps(
                        {"input": tin * pin, "output": tout * pout, "total": tin * pin + tout * pout}
                    ).decode(),
                    "langfuse.observation.completion_start_time": orjson.dumps(
                        datetime.fromtimestamp((cursor + duration // 4) / 1e9, UTC).isoformat()
                    ).decode(),
                    **(
                        {
                            "langfuse.observation.level": "ERROR",
                            "langfuse.observation.status_message": "rate limited",
                        }
                        if error
                        else {}
                    ),
                },
            }
        )
        cursor += duration
    tool_duration = rng.randint(5, 300) * 1_000_000
    spans.append(
        {
            "trace_id": trace_id,
            "span_id": rng.randbytes(8).hex(),
            "parent": root_id,
            "name": "tool:search",
            "start": cursor,
            "end": cursor + tool_duration,
            "error": False,
            "attrs": {
                **trace_attrs,
                "langfuse.observation.type": "tool",
                "langfuse.observation.input": orjson.dumps({"q": _text(rng, 40)}).decode(),
                "langfuse.observation.output": orjson.dumps({"results": [_text(rng, 60)]}).decode(),
            },
        }
    )
    cursor += tool_duration
    spans.append(
        {
            "trace_id": trace_id,
            "span_id": root_id,
            "parent": "",
            "name": "agent-run",
            "start": t0,
            "end": cursor,
            "error": False,
            "attrs": {
                **trace_attrs,
                "langfuse.observation.type": "agent",
                "langfuse.trace.name": "agent-run",
                "langfuse.observation.input": orjson.dumps({"question": _text(rng, 80)}).decode(),
                "langfuse.observation.output": orjson.dumps({"answer": _text(rng, 80)}).decode(),
            },
        }
    )
    return spans


def _any_value_json(value) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_any_value_json(v) for v in value]}}
    return {"stringValue": str(value)}


def _any_value_pb(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(_any_value_pb(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


_RESOURCE = {
    "service.name": "demo-agent",
    "telemetry.sdk.language": "python",
    "telemetry.sdk.name": "opentelemetry",
}


def encode_otlp_json(spans: list[dict]) -> bytes:
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": k, "value": _any_value_json(v)} for k, v in _RESOURCE.items()]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "langfuse-sdk", "version": "5.0.4"},
                        "spans": [
                            {
                                "traceId": s["trace_id"],
                                "spanId": s["span_id"],
                                "parentSpanId": s["parent"],
                                "name": s["name"],
                                "kind": 1,
                                "startTimeUnixNano": str(s["start"]),
                                "endTimeUnixNano": str(s["end"]),
                                "attributes": [
                                    {"key": k, "value": _any_value_json(v)} for k, v in s["attrs"].items()
                                ],
                                "status": {"code": 2, "message": "error"} if s["error"] else {},
                            }
                            for s in spans
                        ],
                    }
                ],
            }
        ]
    }
    return orjson.dumps(doc)


def encode_otlp_proto(spans: list[dict]) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(KeyValue(key=k, value=_any_value_pb(v)) for k, v in _RESOURCE.items())
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "langfuse-sdk", "5.0.4"
    for s in spans:
        span = ss.spans.add()
        span.trace_id, span.span_id = bytes.fromhex(s["trace_id"]), bytes.fromhex(s["span_id"])
        if s["parent"]:
            span.parent_span_id = bytes.fromhex(s["parent"])
        span.name, span.kind = s["name"], 1
        span.start_time_unix_nano, span.end_time_unix_nano = s["start"], s["end"]
        span.attributes.extend(KeyValue(key=k, value=_any_value_pb(v)) for k, v in s["attrs"].items())
        if s["error"]:
            span.status.code, span.status.message = 2, "error"
    return request.SerializeToString()


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def encode_ingestion(traces: list[list[dict]], late_updates: bool, rng: random.Random) -> bytes:
    batch = []

    def event(kind: str, body: dict, ns: int) -> None:
        batch.append({"id": str(uuid.uuid4()), "type": kind, "timestamp": _iso(ns), "body": body})

    for spans in traces:
        root = next(s for s in spans if not s["parent"])
        a = root["attrs"]
        trace_body = {
            "id": root["trace_id"],
            "timestamp": _iso(root["start"]),
            "name": root["name"],
            "input": orjson.loads(a["langfuse.observation.input"]),
            "tags": a["langfuse.trace.tags"],
            "release": a["langfuse.release"],
            "environment": a["langfuse.environment"],
        }
        if not late_updates:
            trace_body.update(userId=a["user.id"], sessionId=a["session.id"])
        event("trace-create", trace_body, root["start"])
        for s in spans:
            if s is root:
                continue
            kind = s["attrs"]["langfuse.observation.type"]
            kind = "span" if kind == "tool" else kind
            body = {
                "id": s["span_id"],
                "traceId": s["trace_id"],
                "parentObservationId": s["parent"],
                "name": s["name"],
                "startTime": _iso(s["start"]),
                "input": orjson.loads(s["attrs"]["langfuse.observation.input"]),
            }
            if kind == "generation":
                body["model"] = s["attrs"]["langfuse.observation.model.name"]
            event(f"{kind}-create", body, s["start"])
            patch = {
                "id": s["span_id"],
                "traceId": s["trace_id"],
                "endTime": _iso(s["end"]),
                "output": s["attrs"]["langfuse.observation.output"],
            }
            if kind == "generation":
                patch["usageDetails"] = orjson.loads(s["attrs"]["langfuse.observation.usage_details"])
                patch["costDetails"] = orjson.loads(s["attrs"]["langfuse.observation.cost_details"])
            event(f"{kind}-update", patch, s["end"])
        event(
            "score-create",
            {
                "id": str(uuid.uuid4()),
                "traceId": root["trace_id"],
                "name": "helpfulness",
                "value": round(rng.random(), 3),
            },
            root["end"],
        )
        if late_updates:
            event(
                "trace-create",
                {
                    "id": root["trace_id"],
                    "userId": a["user.id"],
                    "sessionId": a["session.id"],
                    "metadata": {"tenant": orjson.loads(a["langfuse.trace.metadata.tenant"])},
                },
                root["end"] + 1000,
            )
    return orjson.dumps({"batch": batch, "metadata": {"sdk_name": "python", "sdk_version": "2.60.10"}})


def encode_parquet(spans: list[dict], project: str) -> bytes:
    rows = []
    for s in spans:
        a = s["attrs"]
        rows.append(
            {
                "project_id": project,
                "trace_id": s["trace_id"],
                "id": s["span_id"],
                "parent_observation_id": s["parent"],
                "type": a["langfuse.observation.type"].upper(),
                "name": s["name"],
                "start_time": s["start"] // 1000,
                "end_time": s["end"] // 1000,
                "level": a.get("langfuse.observation.level", "DEFAULT"),
                "environment": a["langfuse.environment"],
                "input": a["langfuse.observation.input"],
                "output": a["langfuse.observation.output"],
                "provided_model_name": a.get("langfuse.observation.model.name", ""),
                "usage_details": orjson.loads(a.get("langfuse.observation.usage_details", "{}")),
                "cost_details": orjson.loads(a.get("langfuse.observation.cost_details", "{}")),
                "user_id": a["user.id"],
                "session_id": a["session.id"],
                "tags": a["langfuse.trace.tags"],
                "release": a["langfuse.release"],
                "event_ts": s["end"] // 1000,
            }
        )
    schema = pa.schema([f for f in OBSERVATION_SCHEMA if f.name in rows[0]])
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink, compression="zstd")
    return sink.getvalue()


def object_traces(
    rng: random.Random, when: datetime, count: int, payload_bytes: int, project: str
) -> list[list[dict]]:
    """The traces of one raw object: ``count`` agent runs started within a minute before ``when``."""
    start = when - timedelta(seconds=rng.randint(0, 50))
    return [
        _trace_spans(rng, start + timedelta(milliseconds=10 * t), payload_bytes, project)
        for t in range(count)
    ]


def generate(
    client,
    bucket: str,
    prefix: str = "",
    *,
    objects: int = 12,
    traces_per_object: int = 20,
    projects: tuple[str, ...] = ("demo-a", "demo-b"),
    formats: tuple[str, ...] = FORMATS,
    compress: bool = True,
    payload_bytes: int = 2000,
    late_updates: bool = True,
    seed: int | None = None,
    when: datetime | None = None,
    on_object: Callable[[str, int], None] | None = None,
) -> GenerateSummary:
    """Write ``objects`` raw objects (formats in rotation) and return what was written."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    rng = random.Random(seed)
    when = when or datetime.now(UTC)
    summary = GenerateSummary()
    for i in range(objects):
        fmt, project = formats[i % len(formats)], projects[i % len(projects)]
        traces = object_traces(rng, when, traces_per_object, payload_bytes, project)
        spans = [s for t in traces for s in t]
        name = f"{uuid.UUID(int=rng.getrandbits(128)).hex}"
        if fmt == "otlp_json":
            kind, ext, body = "otlp", "json", encode_otlp_json(spans)
        elif fmt == "otlp_proto":
            kind, ext, body = "otlp", "binpb", encode_otlp_proto(spans)
        elif fmt == "ingestion":
            kind, ext, body = "ingestion", "json", encode_ingestion(traces, late_updates, rng)
        else:
            kind, ext, body = "parquet", "parquet", encode_parquet(spans, project)
        if compress and fmt != "parquet":
            body, ext = gzip.compress(body, compresslevel=1), ext + ".gz"
        key = build_key(prefix, project, kind, when.strftime("%Y-%m-%dT%H:%M"), f"{name}.{ext}")
        client.put_object(Bucket=bucket, Key=key, Body=body)
        summary.objects += 1
        summary.bytes += len(body)
        # an ingestion batch says a trace's root in its trace-create, not as an observation
        summary.observations += len(spans) - (len(traces) if fmt == "ingestion" else 0)
        summary.traces += len(traces)
        summary.keys.append(key)
        if on_object:
            on_object(key, len(body))
    return summary
