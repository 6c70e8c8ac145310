"""The `preference_list` request: which nodes are a key's replicas, as the
node's ring places them (the harness reads each of them with `local_get`,
which must not repair). One in-process node of a three-node cluster whose
peers never start: placement is the ring's alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kvnode.client import AsyncClient
from kvnode.config import ClusterSettings, NodeConfig
from kvnode.ring import Ring
from kvnode.server import Node
from tests.kvnode.cluster import free_port


def test_preference_list_names_the_rings_n_primaries_and_local_get_repairs_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        peers = {name: ("127.0.0.1", free_port()) for name in ("n1", "n2", "n3", "n4")}
        config = NodeConfig(id="n1", listen=peers["n1"], data=str(tmp_path / "n1"), peers=peers, sync="never",
                            log=str(tmp_path / "n1.log"), settings=ClusterSettings(n=3, ae_interval=0))
        node = Node(config)
        await node.start()
        try:
            ring = Ring.build(peers)
            async with AsyncClient(f"127.0.0.1:{node.port}", timeout=2.0) as kv:
                for key in ("k1", "k2", "r17", "cart-3"):
                    got = await kv.admin("preference_list", key=key.encode())
                    assert got["nodes"] == list(ring.preference_list(key, 3))
                    assert len(set(got["nodes"])) == 3
                # A replica's own copy, read twice: nothing but what it holds.
                assert (await kv.local_get(b"k1")).values == []
                assert node.coordinator.counters.read_repairs == 0
        finally:
            await node.shutdown()

    asyncio.run(main())
