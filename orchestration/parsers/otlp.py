"""OTLP traces (as the OTel Collector's awss3exporter writes them) to observation rows.

Both marshalers are supported: ``otlp_json`` (an ``ExportTraceServiceRequest`` in OTLP/JSON, ids in hex,
enums as integers or names; one document, or one per line) and ``otlp_proto`` (binary protobuf). Each is
first flattened into the same neutral span form, then ``conventions.FIELDS`` (Langfuse, OTel GenAI,
OpenInference, OpenLLMetry, Vercel AI SDK, Logfire/pydantic-ai) turns its attributes into staging columns.
Attributes no column claims are kept in ``metadata`` under their own key, resource and scope attributes
under ``resource.*`` / ``scope.*``: nothing is dropped.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from orchestration.parsers.common import (
    OBSERVATION_DEFAULTS,
    BadObject,
    ParsedObject,
    check_record_size,
    hex_id,
    json_text,
    nanos_to_us,
    total_cost_of,
)
from orchestration.parsers.conventions import UNMAPPED_KEY, SpanFacts, map_attributes

_STATUS_ERROR = 2
KIND_NAMES = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(slots=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_us: int | None
    end_us: int | None
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    context: dict[str, str]  # resource.* and scope.* values, kept in metadata


# --- protobuf -------------------------------------------------------------------------------------


def _pb_value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, which)


def _pb_attrs(attrs: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in attrs}


def spans_from_protobuf(data: bytes) -> Iterator[Span]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise BadObject(f"invalid OTLP protobuf: {exc}") from exc
    for rs in request.resource_spans:
        resource = {f"resource.{k}": v for k, v in _pb_attrs(rs.resource.attributes).items()}
        for ss in rs.scope_spans:
            context = dict(resource)
            if ss.scope.name:
                context["scope.name"] = ss.scope.name
            if ss.scope.version:
                context["scope.version"] = ss.scope.version
            context.update({f"scope.{k}": v for k, v in _pb_attrs(ss.scope.attributes).items()})
            for s in ss.spans:
                yield Span(
                    trace_id=hex_id(s.trace_id, 16, "traceId"),
                    span_id=hex_id(s.span_id, 8, "spanId"),
                    parent_span_id=s.parent_span_id.hex(),
                    name=s.name,
                    kind=KIND_NAMES.get(s.kind, str(s.kind)),
                    start_us=nanos_to_us(s.start_time_unix_nano, "startTimeUnixNano"),
                    end_us=nanos_to_us(s.end_time_unix_nano, "endTimeUnixNano"),
                    status_code=s.status.code,
                    status_message=s.status.message,
                    attributes=_pb_attrs(s.attributes),
                    events=[
                        {
                            "name": e.name,
                            "time_unix_nano": e.time_unix_nano,
                            "attributes": _pb_attrs(e.attributes),
                        }
                        for e in s.events
                    ],
                    context=context,
                )


# --- OTLP/JSON ------------------------------------------------------------------------------------

_JSON_VALUE_KEYS = ("stringValue", "boolValue", "intValue", "doubleValue")


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    for key in _JSON_VALUE_KEYS:
        if key in v:
            return _int_value(v[key]) if key == "intValue" else v[key]
    if "arrayValue" in v:
        return [_json_value(x) for x in _values_of(v["arrayValue"])]
    if "kvlistValue" in v:
        return _json_attrs(_values_of(v["kvlistValue"]))
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _long(raw: Any) -> Any:
    """A protobufjs Long (``{low, high, unsigned}``, how a Langfuse bucket stores int64 from protobuf
    requests before server v3.214) as an int; anything else as it is."""
    if isinstance(raw, dict) and isinstance(raw.get("low"), int) and isinstance(raw.get("high"), int):
        value = (raw["high"] << 32) | (raw["low"] & 0xFFFFFFFF)
        if not raw.get("unsigned") and value >= 2**63:
            value -= 2**64
        return value
    return raw


def _id(raw: Any) -> Any:
    """A protobufjs Buffer (``{"type": "Buffer", "data": [bytes]}``) as bytes; hex/base64 text as it is."""
    if isinstance(raw, dict) and raw.get("type") == "Buffer" and isinstance(raw.get("data"), list):
        try:
            return bytes(raw["data"])
        except (TypeError, ValueError):
            raise BadObject("id Buffer holds values that are not bytes") from None
    return raw


def _int_value(raw: Any) -> int:
    """OTLP/JSON carries 64-bit integers as strings (or numbers)."""
    raw = _long(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise BadObject(f"intValue has type {type(raw).__name__}")
    try:
        return int(raw)
    except ValueError:
        raise BadObject(f"intValue is not an integer: {str(raw)[:40]!r}") from None


def _values_of(container: Any) -> list:
    values = (container or {}).get("values", []) if isinstance(container, dict) else None
    if not isinstance(values, list):
        raise BadObject("arrayValue/kvlistValue must hold a values list")
    return values


def _json_attrs(attrs: Any) -> dict[str, Any]:
    if not attrs:
        return {}
    if not isinstance(attrs, list):
        raise BadObject("attributes must be a list of {key, value}")
    out = {}
    for kv in attrs:
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise BadObject("attribute without a string key")
        out[kv["key"]] = _json_value(kv.get("value"))
    return out


def _enum(value: Any, names: dict[str, int], what: str) -> int:
    if value in (None, ""):
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value in names:
        return names[value]
    raise BadObject(f"{what} is not a known enum value: {str(value)[:40]!r}")


STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
KIND_BY_NAME = {f"SPAN_KIND_{v}": k for k, v in KIND_NAMES.items()}


def _json_documents(data: bytes) -> list[Any]:
    try:
        return [orjson.loads(data)]
    except orjson.JSONDecodeError as whole_error:
        lines = [line for line in data.splitlines() if line.strip()]
        if len(lines) < 2:
            raise BadObject(f"invalid JSON: {whole_error}") from None
        try:
            return [orjson.loads(line) for line in lines]
        except orjson.JSONDecodeError as exc:
            raise BadObject(f"invalid JSON: {exc}") from None


def _obj(value: Any, what: str) -> dict:
    """An OTLP/JSON object field: absent/null is empty, anything but an object is a bad batch."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadObject(f"{what} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadObject(f"{what} must be a list, got {type(value).__name__}")
    return value


def spans_from_json(data: bytes, resource_spans_array: bool = False) -> Iterator[Span]:
    """OTLP/JSON spans. ``resource_spans_array``: the document is the bare ``resourceSpans`` list, as a
    Langfuse event bucket's ``otel/`` files hold it. Ids and int64 fields may come in any encoding those
    files use (hex or base64 text, protobufjs Buffers and Longs, decimal strings, numbers)."""
    for doc in _json_documents(data):
        if resource_spans_array:
            if not isinstance(doc, list):
                raise BadObject("a Langfuse otel file must be a JSON array of ResourceSpans")
            doc = {"resourceSpans": doc}
        if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans", []), list):
            raise BadObject("OTLP JSON must be an object with a resourceSpans list")
        if "resourceSpans" not in doc:
            raise BadObject("OTLP JSON has no resourceSpans")
        for rs in doc["resourceSpans"]:
            rs = _obj(rs, "a resourceSpans entry")
            resource = {
                f"resource.{k}": v
                for k, v in _json_attrs(_obj(rs.get("resource"), "resource").get("attributes")).items()
            }
            scopes = rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans")
            for ss in _list(scopes, "scopeSpans"):
                ss = _obj(ss, "a scopeSpans entry")
                scope = _obj(ss.get("scope") or ss.get("instrumentationLibrary"), "scope")
                context = dict(resource)
                for key in ("name", "version"):
                    if scope.get(key):
                        context[f"scope.{key}"] = scope[key]
                context.update({f"scope.{k}": v for k, v in _json_attrs(scope.get("attributes")).items()})
                for s in _list(ss.get("spans"), "spans"):
                    s = _obj(s, "span")
                    trace_id, span_id, parent = (_id(s.get(k)) for k in ("traceId", "spanId", "parentSpanId"))
                    if not trace_id or not span_id:
                        raise BadObject("span without traceId or spanId")
                    status = _obj(s.get("status"), "span status")
                    yield Span(
                        trace_id=hex_id(trace_id, 16, "traceId"),
                        span_id=hex_id(span_id, 8, "spanId"),
                        parent_span_id=hex_id(parent, 8, "parentSpanId") if parent else "",
                        name=str(s.get("name") or ""),
                        kind=KIND_NAMES.get(_enum(s.get("kind"), KIND_BY_NAME, "span kind"), "UNSPECIFIED"),
                        start_us=nanos_to_us(_long(s.get("startTimeUnixNano")), "startTimeUnixNano"),
                        end_us=nanos_to_us(_long(s.get("endTimeUnixNano")), "endTimeUnixNano"),
                        status_code=_enum(status.get("code"), STATUS_NAMES, "status code"),
                        status_message=str(status.get("message") or ""),
                        attributes=_json_attrs(s.get("attributes")),
                        events=[
                            {
                                "name": e.get("name", ""),
                                "time_unix_nano": _long(e.get("timeUnixNano")),
                                "attributes": _json_attrs(e.get("attributes")),
                            }
                            for e in (_obj(e, "span event") for e in _list(s.get("events"), "span events"))
                        ],
                        context=context,
                    )


# --- mapping onto staging columns -----------------------------------------------------------------

RESOURCE_ENVIRONMENT_KEYS = ("resource.deployment.environment.name", "resource.deployment.environment")


def _metadata_text(values: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json_text(v) for k, v in values.items()}


def span_to_row(span: Span, project_id: str, source_key: str, source_format: str, max_record: int) -> dict:
    """One staging row: the columns ``conventions.FIELDS`` fills, span structure, and the rest as metadata."""
    is_root = not span.parent_span_id
    facts = SpanFacts(span.attributes, str(span.context.get("scope.name") or ""), is_root, span.start_us)
    mapped = map_attributes(facts)
    v = mapped.values
    what = f"span {span.span_id}"
    if span.start_us is None:
        raise BadObject(f"{what} has no startTimeUnixNano")
    usage = v.get("usage") or {}
    cost = v.get("cost") or {}
    model = v.get("model", "")
    environment = v.get("environment") or next(
        (span.context[k] for k in RESOURCE_ENVIRONMENT_KEYS if span.context.get(k)), "default"
    )
    row = dict(OBSERVATION_DEFAULTS)
    row.update(
        project_id=project_id,
        trace_id=span.trace_id,
        id=span.span_id,
        parent_observation_id=span.parent_span_id,
        type=v.get("type") or ("GENERATION" if model or usage else "SPAN"),
        name=span.name,
        start_time=span.start_us,
        end_time=span.end_us,
        completion_start_time=v.get("completion_start_time"),
        level=v.get("level") or ("ERROR" if span.status_code == _STATUS_ERROR else "DEFAULT"),
        status_message=v.get("status_message") or span.status_message,
        version=v.get("version", ""),
        environment=str(environment),
        input=v.get("input", ""),
        output=v.get("output", ""),
        provided_model_name=model,
        model_parameters=v.get("model_parameters", ""),
        usage_details=usage,
        cost_details=cost,
        total_cost=total_cost_of(cost),
        prompt_name=v.get("prompt_name", ""),
        prompt_version=v.get("prompt_version"),
        trace_name=v.get("trace_name") or (span.name if is_root else ""),
        user_id=v.get("user_id", ""),
        session_id=v.get("session_id", ""),
        tags=v.get("tags", []),
        release=v.get("release", ""),
        trace_metadata=v.get("trace_metadata", {}),
        public=v.get("public"),
        is_update=False,
        source_format=source_format,
        source_key=source_key,
        event_ts=span.end_us or span.start_us,
    )
    metadata = dict(span.context)
    metadata.update(mapped.rest)  # every attribute no column claimed, as it came
    metadata.update(v.get("observation_metadata", {}))
    if span.kind not in ("INTERNAL", "UNSPECIFIED"):
        metadata["otel.span.kind"] = span.kind
    if span.events:
        metadata["otel.events"] = span.events
    if mapped.problems:
        metadata[UNMAPPED_KEY] = mapped.problems
    row["metadata"] = _metadata_text(metadata)
    check_record_size(row, max_record, what)
    return row


def parse_otlp(
    data: bytes,
    *,
    protobuf: bool,
    project_id: str,
    source_key: str,
    max_record: int,
    resource_spans_array: bool = False,
) -> ParsedObject:
    spans = spans_from_protobuf(data) if protobuf else spans_from_json(data, resource_spans_array)
    fmt = "otlp_proto" if protobuf else "otlp_json"
    out = ParsedObject()
    out.observations = [span_to_row(s, project_id, source_key, fmt, max_record) for s in spans]
    for row in out.observations:
        if UNMAPPED_KEY in row["metadata"]:
            out.unmapped += orjson.loads(row["metadata"][UNMAPPED_KEY])
    if not out.observations:
        raise BadObject("OTLP batch holds no spans")
    return out
