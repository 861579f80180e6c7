"""A real Dagster webserver for tests, asked over the GraphQL API the UI itself uses."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import requests


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    answer = requests.post(f"{url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _location_loaded(url: str) -> bool:
    data = graphql(
        url,
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename } } } } }",
    )
    entries = data["workspaceOrError"]["locationEntries"]
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


def wait_loaded(url: str, server: subprocess.Popen, log: Path | None = None, timeout: float = 120) -> None:
    """Until the webserver at ``url`` has loaded the code location; ``server`` is its process, writing to
    ``log`` (or with stderr piped), whose end an assertion shows if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok and _location_loaded(url):
                return
        except requests.ConnectionError:
            pass
        if server.poll() is not None:
            output = log.read_text() if log else server.stderr.read().decode() if server.stderr else ""
            raise AssertionError(f"{server.args} exited with {server.returncode}: {output[-3000:]}")
        assert time.monotonic() < deadline, f"the webserver did not load the code location in {timeout:.0f} s"
        time.sleep(1)
