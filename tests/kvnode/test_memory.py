"""A node's resident memory stays bounded: the block cache is sized in bytes
(64 MiB by default), and nothing else keeps large values after a read.

Measured as VmRSS in /proc/PID/status of real `kvnode serve` processes on
loopback, after reading 8 values of 15 MiB, idle.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kvnode import config
from kvnode.cli import cli
from kvnode.client import Client

from .cluster import LocalCluster


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


RSS_BOUND_MB = 300  # the 64 MiB block cache, a few values in flight, and the interpreter


@pytest.mark.slow
def test_resident_memory_stays_bounded_after_reading_large_values(tmp_path: Path) -> None:
    size = 15 << 20
    c = LocalCluster(tmp_path, 3, settings={"ae_interval": 0, "request_timeout": 30.0})  # 15 MiB puts on a busy machine
    with c:
        client = Client(c.addr("n1"), cluster=c.cluster, timeout=30.0)
        try:
            for i in range(8):
                client.put(b"big%d" % i, bytes([65 + i]) * size)
            for i in range(8):
                assert client.get(b"big%d" % i).values == [bytes([65 + i]) * size]
        finally:
            client.close()
        for node in c.ids:  # flush to tables (SIGTERM) and read them back from there
            assert c.terminate(node) == 0
        c.start_all()
        client = Client(c.addr("n1"), cluster=c.cluster, timeout=30.0)
        try:
            for i in range(8):
                assert client.get(b"big%d" % i).values == [bytes([65 + i]) * size]
            for i in range(8):
                assert len(client.local_get(b"big%d" % i).values[0]) == size
        finally:
            client.close()
        rss = {node: _rss_mb(c.procs[node].pid) for node in c.ids}
        print(f"resident memory after reading 8 values of 15 MiB: {rss}")
        assert max(rss.values()) < RSS_BOUND_MB, rss


def test_the_cache_budget_is_a_node_setting() -> None:
    assert config.build({"id": "n1"}).block_cache_bytes == 64 << 20
    assert config.build({"id": "n1", "block_cache_bytes": 1 << 20}).block_cache_bytes == 1 << 20
    with pytest.raises(config.ConfigError, match="block_cache_bytes"):
        config.build({"id": "n1", "block_cache_bytes": -1})
    code = CliRunner().invoke(cli, ["serve", "--id", "n1", "--block-cache-bytes", "-1"]).exit_code
    assert code == 2


@pytest.mark.slow
def test_a_node_runs_with_a_small_cache_budget(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 1, settings={"n": 1, "w": 1, "r": 1, "block_cache_bytes": 4096})
    with c:
        client = Client(c.addr("n1"), cluster=c.cluster)
        try:
            client.put(b"k", b"v" * 10_000)
            assert client.get(b"k").values == [b"v" * 10_000]
        finally:
            client.close()
        assert c.terminate("n1") == 0
