"""The raw bucket's key layout (fixed by DESIGN.md; the Collector's awss3exporter writes it):

``{RAW_PREFIX}{project_id}/{kind}/year=YYYY/month=MM/day=DD/hour=HH/minute=mm/{name}.{ext}``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

KINDS = ("otlp", "ingestion", "parquet")
_EXTENSIONS = {
    "otlp": ("json", "json.gz", "binpb", "binpb.gz", "pb", "pb.gz"),
    "ingestion": ("json", "json.gz"),
    "parquet": ("parquet",),
}
_KEY_RE = re.compile(
    r"^(?P<project>[^/]+)/(?P<kind>[^/]+)/year=(?P<year>\d{4})/month=(?P<month>\d{2})/day=(?P<day>\d{2})"
    r"/hour=(?P<hour>\d{2})/minute=(?P<minute>\d{2})/(?P<name>[^/]+)$"
)


@dataclass(frozen=True)
class RawKey:
    key: str
    project_id: str
    kind: str
    extension: str
    minute: str  # "YYYY-MM-DDTHH:mm", the writer's time bucket

    @property
    def gzip(self) -> bool:
        return self.extension.endswith(".gz")

    @property
    def format(self) -> str:
        if self.kind == "otlp":
            return "otlp_json" if self.extension.startswith("json") else "otlp_proto"
        return self.kind


class BadKey(ValueError):
    pass


def parse_key(key: str, prefix: str = "") -> RawKey:
    """Parse a raw object key, or raise :class:`BadKey` saying how it breaks the layout."""
    if not key.startswith(prefix):
        raise BadKey(f"key is outside the raw prefix {prefix!r}")
    match = _KEY_RE.match(key[len(prefix) :])
    if not match:
        raise BadKey(
            "key does not match {project_id}/{kind}/year=YYYY/month=MM/day=DD/hour=HH/minute=mm/{name}.{ext}"
        )
    kind, name = match["kind"], match["name"]
    if kind not in KINDS:
        raise BadKey(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    extension = next(
        (ext for ext in sorted(_EXTENSIONS[kind], key=len, reverse=True) if name.endswith("." + ext)), None
    )
    if extension is None:
        raise BadKey(f"{kind} objects must end in one of: {', '.join('.' + e for e in _EXTENSIONS[kind])}")
    minute = f"{match['year']}-{match['month']}-{match['day']}T{match['hour']}:{match['minute']}"
    try:
        datetime.fromisoformat(minute)
    except ValueError:
        raise BadKey(f"key names an impossible time {minute!r} (year=/month=/day=/hour=/minute=)") from None
    return RawKey(key, match["project"], kind, extension, minute)


def build_key(prefix: str, project_id: str, kind: str, when_iso_minute: str, name: str) -> str:
    """The inverse of :func:`parse_key`, for writers (the generator, tests)."""
    date, hm = when_iso_minute.split("T")
    year, month, day = date.split("-")
    hour, minute = hm.split(":")[:2]
    return (
        f"{prefix}{project_id}/{kind}/year={year}/month={month}/day={day}/hour={hour}/minute={minute}/{name}"
    )
