"""Raw object bytes to staging rows, by the format the object's key declares."""

from __future__ import annotations

import zlib

from orchestration.parsers.common import BadObject, ParsedObject
from orchestration.parsers.ingestion import parse_ingestion, parse_langfuse_events
from orchestration.parsers.otlp import parse_otlp
from orchestration.parsers.parquet import parse_parquet
from orchestration.raw_keys import RawKey

__all__ = ["BadObject", "ParsedObject", "gunzip_bounded", "parse_object"]

_GZIP_MAGIC = b"\x1f\x8b"


_CHUNK = 4 * 1024 * 1024


def gunzip_bounded(data: bytes, limit: int) -> bytes:
    """Decompress gzip (possibly multi-member) without letting a small bomb exceed ``limit`` bytes. It
    inflates in chunks, so a bomb holds at most ``limit`` plus one chunk before it is refused."""
    out = bytearray()
    remaining = data
    while remaining:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = remaining
        try:
            while pending and not d.eof:
                out += d.decompress(pending, min(_CHUNK, limit + 1 - len(out)))
                if len(out) > limit:
                    raise BadObject(f"object decompresses to more than the {limit}-byte limit")
                pending = d.unconsumed_tail
        except zlib.error as exc:
            raise BadObject(f"corrupt gzip: {exc}") from None
        if not d.eof:
            raise BadObject("truncated gzip: the stream ends before its end marker")
        remaining = d.unused_data
        if remaining and not remaining.startswith(_GZIP_MAGIC):
            break  # trailing garbage after a complete member; gzip(1) ignores it too
    return bytes(out)


def decode_object(raw: RawKey, data: bytes, max_object: int) -> bytes:
    """The object's bytes as its format reads them: gunzipped (bounded) when gzip, never empty."""
    if not data:
        raise BadObject("object is empty")
    if raw.gzip or data.startswith(_GZIP_MAGIC):
        if not data.startswith(_GZIP_MAGIC):
            raise BadObject("object is named .gz but is not gzip")
        data = gunzip_bounded(data, max_object)
        if not data:
            raise BadObject("object is empty after gunzip")
    return data


def parse_object(raw: RawKey, data: bytes, *, max_object: int, max_record: int) -> ParsedObject:
    data = decode_object(raw, data, max_object)
    common = {"project_id": raw.project_id, "source_key": raw.key, "max_record": max_record}
    if raw.format == "otlp_json":
        return parse_otlp(data, protobuf=False, **common)
    if raw.format == "otlp_proto":
        return parse_otlp(data, protobuf=True, **common)
    if raw.format == "ingestion":
        return parse_ingestion(data, **common)
    if raw.format == "langfuse_event":
        return parse_langfuse_events(data, **common)
    if raw.format == "langfuse_otel":
        return parse_otlp(data, protobuf=False, resource_spans_array=True, **common)
    return ParsedObject(arrow_observations=parse_parquet(data, **common))
