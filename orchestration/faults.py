"""What went wrong, in one line an operator can act on, and the exit code that says which kind it was.

The command line (and the runs, through ``dg.Failure``) turn the faults an operator can fix — S3 down, hung
or refusing the credentials, ClickHouse unreachable or its folder held by another process, a full disk —
into one sentence; the traceback goes to the log file for the details. Anything not recognised here is a
bug and keeps its own message, with the traceback in the same log file.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Exit codes of every `tracehouse` command (README, docs/operations.md).
EXIT_FAILED = 1  # the command ran and found a problem (a migration part failed verification, ...)
EXIT_USAGE = 2  # wrong arguments (click's own code)
EXIT_S3_UNREACHABLE = 3
EXIT_S3_REFUSED = 4
EXIT_CLICKHOUSE = 5
EXIT_DISK_FULL = 6
EXIT_BUG = 70  # EX_SOFTWARE: not a known fault; the log has the traceback

_S3_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "403",
}
_DISK_FULL_MARKS = ("NOT_ENOUGH_SPACE", "No space left on device", "Cannot reserve", "Code: 243.")


@dataclass(frozen=True)
class Fault:
    code: int
    message: str


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it was raised from or during (each once)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__]


def classify(exc: BaseException) -> Fault | None:
    """The operator-facing fault behind ``exc``, or None when it is not one this module knows."""
    from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError, ReadTimeoutError

    from orchestration.clickhouse import EmbeddedClickHouseBusy
    from orchestration.settings import ConfigError

    for cause in _chain(exc):
        if isinstance(cause, ConfigError):
            return Fault(EXIT_USAGE, str(cause))
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return Fault(EXIT_DISK_FULL, f"the disk is full: {cause}")
        if any(mark in str(cause) for mark in _DISK_FULL_MARKS):
            return Fault(EXIT_DISK_FULL, f"ClickHouse ran out of disk space: {first_line(cause)}")
        if isinstance(cause, EmbeddedClickHouseBusy):
            return Fault(EXIT_CLICKHOUSE, str(cause))
        if isinstance(cause, ReadTimeoutError):
            return Fault(
                EXIT_S3_UNREACHABLE,
                f"S3 did not answer in time (hung endpoint?): {cause}; retried, then gave up",
            )
        if isinstance(cause, EndpointConnectionError | ConnectionError):
            return Fault(EXIT_S3_UNREACHABLE, f"S3 is unreachable: {cause}")
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
            if code in _S3_AUTH_CODES:
                return Fault(
                    EXIT_S3_REFUSED,
                    f"S3 refused the credentials or the permission ({code}): check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY and the bucket policy",
                )
            if code == "NoSuchBucket":
                return Fault(EXIT_S3_REFUSED, f"the raw bucket does not exist: {first_line(cause)}")
        fault = _clickhouse_server_fault(cause)
        if fault:
            return fault
    return None


def _clickhouse_server_fault(cause: BaseException) -> Fault | None:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(cause, OperationalError):
        return Fault(EXIT_CLICKHOUSE, f"the ClickHouse server is unreachable: {first_line(cause)}")
    if isinstance(cause, DatabaseError) and "AUTHENTICATION_FAILED" in str(cause):
        return Fault(EXIT_CLICKHOUSE, "the ClickHouse server refused the user or password in CLICKHOUSE_URL")
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextmanager
def run_failures(retry: bool = True) -> Iterator[None]:
    """Inside a run step: an exception leaves the block as a ``dg.Failure`` that reads as one line, its exit
    code in the metadata (``fault_code``, for the command line). A known fault always; anything else only
    with ``retry=False`` (the command line fails at once, no retry policy) — else a bug keeps its own
    traceback."""
    try:
        yield
    except Exception as exc:
        import dagster as dg

        fault = classify(exc)
        if fault is None and retry:
            raise
        code = fault.code if fault else EXIT_BUG
        message = fault.message if fault else f"unexpected {type(exc).__name__}: {first_line(exc)}"
        # a configuration the run cannot use (a schema older than the code) is not retried: retries only wait
        retryable = retry and code != EXIT_USAGE
        raise dg.Failure(description=message, metadata={"fault_code": code}, allow_retries=retryable) from exc
