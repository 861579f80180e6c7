"""Write data the way a self-hosted Langfuse server stores it in its S3 event bucket
(../shared/LANGFUSE_BUCKET.md), for tests and demos: ``tracehouse generate --layout langfuse``.

* OTLP requests: ``{prefix}otel/{project}/yyyy/mm/dd/hh/mi/{uuid}.json``, a JSON array of ResourceSpans,
  protobuf requests in protobufjs' shapes (ids as ``{"type": "Buffer", "data": [...]}``, int64 as decimal
  strings or, from older servers, ``{low, high, unsigned}``, enums as numbers);
* ingestion events: ``{prefix}{project}/{trace|observation|score}/{entity id}/{event id}.json``, one array
  per entity and request; and the ``trace-create`` events the Langfuse worker derives from OTel spans,
  written under ``trace/`` too (the same trace in both kinds);
* noise a real bucket holds: ``evals/`` snapshots under the prefix, ``media/`` outside it.
"""

from __future__ import annotations

import base64
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestration.generate import GenerateSummary, encode_ingestion, encode_otlp_proto, object_traces

ENTITY_OF = {"trace-create": "trace", "score-create": "score"}  # every other event type: observation
ID_FIELDS = ("traceId", "spanId", "parentSpanId")
LONG_FIELDS = ("startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue")
TRACE_FIELDS = (("user.id", "userId"), ("session.id", "sessionId"), ("langfuse.release", "release"))
VARIANTS = ("decimal", "long", "number")  # how int64 fields are stored, by server version


def _long(value: int) -> dict[str, Any]:
    """protobufjs' Long, as servers before v3.214 stored int64 fields: two signed 32-bit halves."""
    low, high = value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF
    signed = lambda half: half - 2**32 if half >= 2**31 else half  # noqa: E731
    return {"low": signed(low), "high": signed(high), "unsigned": False}


def protobufjs_shapes(node: Any, longs: str = "decimal") -> Any:
    """An OTLP/JSON document parsed from protobuf (``MessageToDict``: base64 ids, decimal int64) in the shapes
    the Langfuse server writes it: Buffer ids, int64 per ``longs`` (one of VARIANTS)."""
    if isinstance(node, list):
        return [protobufjs_shapes(x, longs) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ID_FIELDS and isinstance(value, str):
            out[key] = {"type": "Buffer", "data": list(base64.b64decode(value))}
        elif key in LONG_FIELDS and isinstance(value, str):
            number = int(value)
            out[key] = value if longs == "decimal" else _long(number) if longs == "long" else number
        else:
            out[key] = protobufjs_shapes(value, longs)
    return out


def otel_file(request: bytes, longs: str = "decimal") -> bytes:
    """One stored OTLP request: the ``resourceSpans`` of a protobuf request body, protobufjs-shaped."""
    message = ExportTraceServiceRequest()
    message.ParseFromString(request)
    doc = MessageToDict(message, use_integers_for_enums=True)
    return orjson.dumps(protobufjs_shapes(doc.get("resourceSpans", []), longs))


def entity_files(batch: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The events of one ingestion request grouped as the server stores them: (entity type, id) -> events."""
    files: dict[tuple[str, str], list[dict]] = {}
    for event in batch:
        if event.get("type") == "sdk-log":
            continue  # never stored
        entity = ENTITY_OF.get(event["type"], "observation")
        files.setdefault((entity, event["body"]["id"]), []).append(event)
    return files


def derived_trace_events(spans: list[dict], when: datetime) -> list[dict]:
    """The trace-create events the Langfuse worker writes for OTel traces: one per trace, its attributes."""
    events = []
    for span in spans:
        if span["parent"]:
            continue
        attrs = span["attrs"]
        body = {
            "id": span["trace_id"],
            "name": attrs.get("langfuse.trace.name") or span["name"],
            "timestamp": when.isoformat(),
            "environment": attrs.get("langfuse.environment", "default"),
        }
        for key, field in (
            ("user.id", "userId"),
            ("session.id", "sessionId"),
            ("langfuse.release", "release"),
        ):
            if attrs.get(key):
                body[field] = attrs[key]
        if attrs.get("langfuse.trace.tags"):
            body["tags"] = attrs["langfuse.trace.tags"]
        stamp = when.isoformat()
        events.append({"id": str(uuid.uuid4()), "type": "trace-create", "timestamp": stamp, "body": body})
    return events


def write_langfuse_bucket(
    client,
    bucket: str,
    prefix: str = "events/",
    *,
    objects: int = 12,
    traces_per_object: int = 20,
    projects: tuple[str, ...] = ("demo-a", "demo-b"),
    payload_bytes: int = 2000,
    seed: int | None = None,
    when: datetime | None = None,
) -> GenerateSummary:
    """A Langfuse-shaped bucket: OTLP requests (in every int64 variant) with their derived trace files,
    ingestion requests split per entity, evals/ snapshots and media/ objects beside them."""
    rng = random.Random(seed)
    when = when or datetime.now(UTC)
    summary = GenerateSummary()

    def put(key: str, body: bytes, data: bool = True) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=body)
        if data:
            summary.objects += 1
            summary.bytes += len(body)
            summary.keys.append(key)

    for i in range(objects):
        project = projects[i % len(projects)]
        traces = object_traces(rng, when, traces_per_object, payload_bytes, project)
        spans = [s for t in traces for s in t]
        summary.traces += len(traces)
        if i % 2 == 0:  # an OTLP request, and the trace files the worker derives from it
            path = when.strftime("%Y/%m/%d/%H/%M")
            body = otel_file(encode_otlp_proto(spans), VARIANTS[i // 2 % len(VARIANTS)])
            summary.observations += len(spans)
            put(f"{prefix}otel/{project}/{path}/{uuid.UUID(int=rng.getrandbits(128))}.json", body)
            for event in derived_trace_events(spans, when):
                put(
                    f"{prefix}{project}/trace/{event['body']['id']}/{event['id']}.json", orjson.dumps([event])
                )
        else:  # a legacy ingestion request, stored per entity
            batch = orjson.loads(encode_ingestion(traces, True, rng))["batch"]
            files = entity_files(batch)
            summary.observations += sum(1 for entity, _id in files if entity == "observation")
            for (entity, entity_id), events in files.items():
                put(f"{prefix}{project}/{entity}/{entity_id}/{events[0]['id']}.json", orjson.dumps(events))
        trace_id, span_id = spans[0]["trace_id"], spans[0]["span_id"]
        put(f"{prefix}evals/{project}/traces/{trace_id}/observations/{span_id}.json", b"{}", False)
        put(f"media/{project}/{trace_id}.png", b"\x89PNG", False)
    return summary
