"""Joins and leaves on real processes: keys move to their new owners while
reads and writes go on, and no acknowledged write is lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvnode.cli import cli
from kvnode.client import Client, KvError

from .cluster import LocalCluster, free_port

pytestmark = pytest.mark.slow

FAST = {"gossip_interval": 0.1, "suspect_after": 1.0, "dead_after": 2.0, "request_timeout": 2.0}


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        threading.Event().wait(0.1)


class Writer(threading.Thread):
    """A steady load of puts, recording which were acknowledged."""

    def __init__(self, addresses: list[str], cluster: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(addresses, cluster=cluster, timeout=5)
        self.acked: dict[str, bytes] = {}
        self.failed = 0
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key, value = f"key{i}", f"v{i}".encode()
            try:
                self.client.put(key, value)
                self.acked[key] = value
            except KvError:
                self.failed += 1
            i += 1

    def finish(self) -> None:
        self.stop.set()
        self.join()
        self.client.close()


def _status(c: LocalCluster, node: str) -> dict[str, object]:
    with Client(c.addr(node), cluster=c.cluster) as client:
        return client.status()


def test_a_fourth_node_joins_under_load_and_no_acknowledged_write_is_lost(tmp_path: Path) -> None:
    # n1..n3 form the cluster; n4 starts alone (a one-node ring of itself) and joins.
    three = LocalCluster(tmp_path, 3, settings=FAST)
    lone = LocalCluster(tmp_path, 1, settings=FAST)
    lone.ids, lone.ports = ["n4"], {"n4": free_port()}
    with three:
        lone.start("n4")
        try:
            writer = Writer(three.addresses, three.cluster)
            writer.start()
            _wait_for(lambda: len(writer.acked) >= 100, 20)
            result = CliRunner().invoke(cli, ["admin", "join", "--addr", lone.addr("n4"), "--cluster",
                                              three.cluster, "--seed", three.addr("n1")])
            assert result.exit_code == 0, result.output
            # Every node adopts the new ring; the old owners hand keys over.
            _wait_for(lambda: all(_status(three, n)["ring_epoch"] == 1 for n in three.ids), 20)
            _wait_for(lambda: len(writer.acked) >= 400, 30)
            writer.finish()
            _wait_for(lambda: all(_status(three, n)["rebalance"]["misplaced"] == 0 for n in three.ids), 30)
            status4 = _status(lone, "n4")
            assert status4["ring_epoch"] == 1 and 0.2 < status4["ring_share"] < 0.3
            everyone = [*three.addresses, lone.addr("n4")]
            with Client(everyone, cluster=three.cluster) as client:
                for key, value in writer.acked.items():
                    assert client.get(key).values == [value], key
            # n4 now holds its share of the keys itself.
            with Client(lone.addr("n4"), cluster=three.cluster) as n4:
                held = sum(1 for key in writer.acked if n4.local_get(key).values)
            assert held > len(writer.acked) * 0.5  # n4 is among the 3 replicas of ~3/4 of the keys
        finally:
            lone.close()


def test_a_node_leaves_and_its_keys_stay_readable(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, 4, settings=FAST) as c:
        with Client(c.addresses, cluster=c.cluster) as client:
            for i in range(200):
                client.put(f"key{i}", f"v{i}")
        result = CliRunner().invoke(cli, ["admin", "leave", "--addr", c.addr("n4"), "--cluster", c.cluster])
        assert result.exit_code == 0, result.output
        _wait_for(lambda: _status(c, "n1")["membership"]["n4"]["status"] == "left", 30)
        c.kill("n4")
        with Client(c.addresses[:3], cluster=c.cluster) as client:
            for i in range(200):
                assert client.get(f"key{i}").values == [f"v{i}".encode()]
