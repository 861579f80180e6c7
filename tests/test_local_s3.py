"""The local SeaweedFS starts reliably: ports below the ephemeral range, a new start if one is taken."""

from __future__ import annotations

import socket

from orchestration import local_s3
from orchestration.local_s3 import LocalS3, free_port


def test_free_ports_lie_below_the_ephemeral_range_and_are_bindable():
    low, _ = local_s3._ephemeral_range()
    taken: set[int] = set()
    for _ in range(50):
        port = free_port(taken)
        assert 1024 <= port < low and port not in taken
        taken.add(port)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_taken_between_pick_and_bind_means_a_new_start_not_a_failure(tmp_path, monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    real_pick = local_s3._pick_ports
    picks: list[dict[str, int]] = []

    def pick_a_taken_filer_port_first() -> dict[str, int]:
        ports = real_pick()
        if not picks:
            ports["filer_grpc"] = squatter.getsockname()[1]
        picks.append(ports)
        return ports

    monkeypatch.setattr(local_s3, "_pick_ports", pick_a_taken_filer_port_first)
    try:
        with LocalS3.start(tmp_path / "s3") as server:
            assert len(picks) == 2
            assert server.endpoint_url.endswith(f":{picks[1]['s3']}")
            assert "address already in use" in (tmp_path / "s3" / "weed.log").read_text()
            server.client().put_object(Bucket="tracehouse-health", Key="again", Body=b"ok")
    finally:
        squatter.close()
