"""Gossip, failure detection and peer authentication on real processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kvnode import protocol
from kvnode.client import Client, KvError
from kvnode.connection import Connection

from .cluster import LocalCluster

pytestmark = pytest.mark.slow

FAST = {"gossip_interval": 0.1, "suspect_after": 0.6, "dead_after": 1.2}


def _state(c: LocalCluster, observer: str, node: str) -> str:
    with Client(c.addr(observer), cluster=c.cluster) as client:
        return str(client.status()["membership"][node]["state"])


def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        threading.Event().wait(0.05)
    return time.monotonic() - start


def test_a_paused_node_is_suspect_then_dead_then_alive_after_sigcont(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 3, settings=FAST) as c:
        _wait_for(lambda: _state(c, "n1", "n3") == "alive", 5)
        c.pause("n3")
        suspect = _wait_for(lambda: _state(c, "n1", "n3") in ("suspect", "dead"), 5)
        dead = _wait_for(lambda: _state(c, "n1", "n3") == "dead", 5)
        # Within the configured bounds, plus a gossip interval or two of slack.
        assert suspect <= FAST["suspect_after"] + 1.0
        assert suspect + dead <= FAST["dead_after"] + 1.0
        # Meanwhile writes go on: the paused node is down, a fallback or the
        # other primaries take its place instead of timing out on it.
        with Client(c.addr("n1"), cluster=c.cluster, timeout=5) as client:
            client.put("during-pause", "v")
        c.resume("n3")
        _wait_for(lambda: _state(c, "n1", "n3") == "alive" and _state(c, "n2", "n3") == "alive", 5)


def test_a_restarted_node_is_alive_with_a_higher_generation(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 3, settings=FAST) as c, Client(c.addr("n1"), cluster=c.cluster) as client:
        _wait_for(lambda: client.status()["membership"]["n2"]["generation"] >= 1, 5)
        before = client.status()["membership"]["n2"]["generation"]
        c.kill("n2")
        _wait_for(lambda: client.status()["membership"]["n2"]["state"] == "dead", 5)
        c.start("n2")
        _wait_for(lambda: client.status()["membership"]["n2"]["generation"] > before
                  and client.status()["membership"]["n2"]["state"] == "alive", 5)


def test_peers_must_prove_the_shared_secret(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("correct horse battery staple\n")
    c = LocalCluster(tmp_path, 3, settings={**FAST, "secret_file": str(secret)})
    with c:
        with Client(c.addr("n1"), cluster=c.cluster) as client:
            client.put("k", "v")  # peers authenticate each other, so quorums work
            assert client.get("k").values == [b"v"]
            _wait_for(lambda: all(m["state"] == "alive" for m in client.status()["membership"].values()), 5)

        async def impostor() -> None:
            conn = await Connection.open("127.0.0.1", c.ports["n1"], cluster=c.cluster, node="n2",
                                         secret=b"wrong secret")
            await conn.close()

        with pytest.raises(protocol.RemoteError) as info:
            asyncio.run(impostor())
        assert info.value.code == "unauthorized"

        async def client_sends_peer_request() -> dict[str, object]:
            conn = await Connection.open("127.0.0.1", c.ports["n1"], cluster=c.cluster)
            try:
                return await conn.request({"type": "replica_put", "key": b"k", "state": b"x"}, 5)
            finally:
                await conn.close()

        reply = asyncio.run(client_sends_peer_request())
        assert reply["type"] == "error" and reply["code"] == "unauthorized"
        events = [json.loads(line) for line in (tmp_path / "n1.log").read_text().splitlines()]
        assert any(e["event"] == "refused_peer" and e["reason"] == "bad_proof" for e in events)
        with Client(c.addr("n1"), cluster=c.cluster) as client:
            assert client.get("k").values == [b"v"]  # nothing the impostor sent changed it


def test_clients_may_be_required_to_present_a_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("let-me-in")
    with LocalCluster(tmp_path, 1, settings={"n": 1, "w": 1, "r": 1, "token_file": str(token)}) as c:
        with Client(c.addr("n1"), cluster=c.cluster, token=b"let-me-in") as good:
            good.put("k", "v")
        with Client(c.addr("n1"), cluster=c.cluster, token=b"guess") as bad, pytest.raises(KvError) as info:
            bad.get("k")
        assert info.value.definite
