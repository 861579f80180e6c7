"""The raw bucket's key layouts.

tracehouse's own (fixed by DESIGN.md; the Collector's awss3exporter writes it):
``{RAW_PREFIX}{project_id}/{kind}/year=YYYY/month=MM/day=DD/hour=HH/minute=mm/{name}.{ext}``

and a self-hosted Langfuse's event bucket (../shared/LANGFUSE_BUCKET.md), recognised beside it with no
setting: ingestion events per entity ``{project_id}/{trace|observation|score}/{entity id}/{stem}.json``
and OTLP requests ``otel/{project_id}/yyyy/mm/dd/hh/mi/{uuid}.json``. Langfuse's evaluation snapshots
(``evals/...``) and dataset-run items are not trace data: :func:`skip_reason` names them, and they are
neither loaded nor quarantined.
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
        if self.kind in LANGFUSE_KINDS:
            return self.kind
        if self.kind == "otlp":
            return "otlp_json" if self.extension.startswith("json") else "otlp_proto"
        return self.kind


class BadKey(ValueError):
    pass


LANGFUSE_KINDS = ("langfuse_event", "langfuse_otel")
LANGFUSE_ENTITIES = ("trace", "observation", "score")
_LANGFUSE_EVENT_RE = re.compile(r"^(?P<project>[^/]+)/(?P<entity>[^/]+)/(?P<id>.+)/(?P<stem>[^/]+)\.json$")
_LANGFUSE_OTEL_RE = re.compile(
    r"^otel/(?P<project>[^/]+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/(?P<hour>\d{2})"
    r"/(?P<minute>\d{2})/(?P<name>[^/]+)\.json$"
)


def skip_reason(key: str, prefix: str = "") -> str | None:
    """Why an object under the raw prefix is deliberately not loaded (not trace data), or None."""
    rest = key[len(prefix) :] if key.startswith(prefix) else key
    if rest.startswith("evals/"):
        return "Langfuse evaluation snapshot (evals/), not an event"
    match = _LANGFUSE_EVENT_RE.match(rest)
    if match and match["entity"] == "dataset_run_item":
        return "Langfuse dataset run item, not trace data"
    return None


def _langfuse_key(key: str, rest: str) -> RawKey | None:
    otel = _LANGFUSE_OTEL_RE.match(rest)
    if otel:
        minute = f"{otel['year']}-{otel['month']}-{otel['day']}T{otel['hour']}:{otel['minute']}"
        try:
            datetime.fromisoformat(minute)
        except ValueError:
            raise BadKey(f"Langfuse otel key names an impossible time {minute!r}") from None
        return RawKey(key, otel["project"], "langfuse_otel", "json", minute)
    event = _LANGFUSE_EVENT_RE.match(rest)
    if event and event["entity"] in LANGFUSE_ENTITIES and event["project"] not in ("otel", "evals"):
        return RawKey(key, event["project"], "langfuse_event", "json", "")
    return None


def parse_key(key: str, prefix: str = "") -> RawKey:
    """Parse a raw object key, or raise :class:`BadKey` saying how it breaks the layout."""
    if not key.startswith(prefix):
        raise BadKey(f"key is outside the raw prefix {prefix!r}")
    match = _KEY_RE.match(key[len(prefix) :])
    if not match:
        langfuse = _langfuse_key(key, key[len(prefix) :])
        if langfuse is not None:
            return langfuse
        raise BadKey(
            "key does not match {project_id}/{kind}/year=YYYY/month=MM/day=DD/hour=HH/minute=mm/{name}.{ext} "
            "nor a Langfuse event bucket's {project_id}/{trace|observation|score}/{id}/{stem}.json or "
            "otel/{project_id}/yyyy/mm/dd/hh/mi/{uuid}.json"
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
