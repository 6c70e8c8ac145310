"""The reference adapter: `kvnode` as a system under test.

Options: the node's own cluster settings (`kvnode.config.ClusterSettings`:
n, w, r, resolution, quorum, read_repair and the timings), passed to every
node; `harness systems kvnode` lists them. What it promises follows from
them (`KvnodeSystem.promise`):

- `resolution=dvv`: `siblings` (DESIGN.md P1-P6 as n, w, r, quorum and read
  repair promise them); for the cart, also `no-lost-adds` (concurrent carts
  are siblings, which the next add merges);
- `resolution=lww`: `last-write-wins`; and with strict quorums that
  intersect (W+R>N) and synchronous read repair (ABD), `linearizable`
  registers, as long as the nodes' clocks agree (a clock fault shows what
  happens when they do not). The cart under lww loses concurrent adds by
  design: it promises `last-write-wins` only.

`KvnodeDB` says how to start a node (`python -m kvnode serve` with the
settings and the backend's peers), when it is ready (it answers `status`),
what time it sees (`status`'s `wall_ns`), and when the cluster has converged
(every node sees every other alive, no hints pending, then one anti-entropy
round on each node), and what each replica of a key holds by itself (`replica_reads`:
the key's preference list, then `local_get` at each, which repairs
nothing).

`KvnodeClient` maps the workloads' operations onto `kvnode.client.AsyncClient`:

- `read` -> `get`: ok with the sorted sibling values (as text) and the context;
- `write` -> `put` with the invocation's context (from this process's last
  read; none for a blind write);
- `add` (the Dynamo paper's cart) -> `get`, union the sibling carts, add the
  item, `put` with the context: ok with `extra` `obs` (the carts read) and
  `wrote` (the cart written);
- a `KvError` whose `definite` flag is set (nothing was sent, or the node
  refused before acting) is `fail`; any other error is `info`.

Values are UTF-8 text on the wire; a cart is its items joined by newlines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from contract.ops import Completion, Invocation
from contract.promise import Claim, Promise
from harness.systems.base import Deployment, NodeSetup, ReplicaRead
from kvnode.client import AsyncClient, KvError
from kvnode.config import ClusterSettings

WORKLOADS = ("register", "cart")
PORT = "client"  # kvnode serves clients and peers on one port


def _text(values: Sequence[bytes]) -> list[str]:
    return sorted(v.decode("utf-8", "replace") for v in values)


def cart_items(value: bytes) -> list[str]:
    return sorted(x for x in value.decode("utf-8", "replace").split("\n") if x)


class KvnodeDB:
    def __init__(self, settings: ClusterSettings) -> None:
        self.settings = settings

    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        place = node.place
        peers = ",".join(f"{k}={v[PORT]}" for k, v in sorted(place.peers.items()))
        argv = [
            place.python, "-m", "kvnode", "serve", "--id", place.name, "--listen", place.listen[PORT],
            "--data", place.data_dir, "--peers", peers, "--log", f"{place.log_dir}/kvnode.log",
            "--seed", str(node.seed),
        ]
        for f in dataclasses.fields(self.settings):
            argv += [f"--{f.name.replace('_', '-')}", str(getattr(self.settings, f.name))]
        return argv, {}

    async def ready(self, node: NodeSetup, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            client = self._client(node, timeout=1.0, connect_timeout=0.5)
            try:
                await client.status()
                return True
            except (KvError, OSError):
                if time.monotonic() > deadline:
                    return False
            finally:
                await client.close()
            await asyncio.sleep(0.05)

    async def node_time(self, node: NodeSetup) -> float | None:
        client = self._client(node, timeout=1.0, connect_timeout=0.5)  # a paused node must not hold a fault up
        try:
            status = await client.status()
        except (KvError, OSError):
            return None
        finally:
            await client.close()
        wall = status.get("wall_ns")
        return wall / 1e9 if isinstance(wall, int) else None

    async def node_info(self, node: NodeSetup) -> dict[str, Any] | None:
        status = await self._status(node)
        if status is None:
            return None
        info: dict[str, Any] = {}
        if isinstance(status.get("ring_share"), int | float):
            info["ring share"] = f"{status['ring_share']:.1%}"
        if isinstance(status.get("partitions_owned"), int):
            info["partitions owned"] = status["partitions_owned"]
        return info

    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        names = {n.place.name for n in nodes}
        statuses = await asyncio.gather(*(self._status(n) for n in nodes))
        for status in statuses:
            if status is None:
                return False
            members = status.get("membership", {})
            if any(members.get(p, {}).get("state") != "alive" for p in names - {status.get("node")}):
                return False
            if status.get("handoff", {}).get("pending_total", 0):
                return False
        # Everyone is up and no hint waits: one anti-entropy round per node
        # repairs whatever read repair and handoff did not.
        rounds = await asyncio.gather(*(self._admin(n, "ae_round") for n in nodes))
        return all(r is not None for r in rounds)

    async def replica_reads(self, nodes: list[NodeSetup], key: str) -> dict[str, ReplicaRead | None]:
        """The key's preference list (asked of the nodes in turn until one
        answers), then each primary's own copy (`local_get`: no quorum, no
        read repair, no anti-entropy)."""
        by_name = {n.place.name: n for n in nodes}
        replicas: list[str] | None = None
        for node in nodes:
            client = self._client(node, timeout=2.0, connect_timeout=0.5)
            try:
                replicas = [str(r) for r in (await client.admin("preference_list", key=key.encode()))["nodes"]]
                break
            except (KvError, OSError, KeyError, TypeError):
                continue
            finally:
                await client.close()
        if replicas is None:
            return {}

        async def own_copy(name: str) -> ReplicaRead | None:
            if name not in by_name:
                return None
            client = self._client(by_name[name], timeout=2.0, connect_timeout=0.5)
            try:
                return ReplicaRead(values=tuple(_text((await client.local_get(key.encode())).values)))
            except (KvError, OSError):
                return None
            finally:
                await client.close()

        reads = await asyncio.gather(*(own_copy(r) for r in replicas))
        return dict(zip(replicas, reads, strict=True))

    async def _status(self, node: NodeSetup) -> dict[str, Any] | None:
        return await self._admin(node, "status")

    def _client(self, node: NodeSetup, *, timeout: float, connect_timeout: float) -> AsyncClient:
        return AsyncClient(node.place.client[PORT], cluster=self.settings.cluster, timeout=timeout,
                           connect_timeout=connect_timeout)

    async def _admin(self, node: NodeSetup, kind: str) -> dict[str, Any] | None:
        client = self._client(node, timeout=10.0, connect_timeout=1.0)
        try:
            if kind == "status":
                return await client.status()
            return await client.admin(kind)
        except (KvError, OSError):
            return None
        finally:
            await client.close()


class KvnodeClient:
    def __init__(self, workload: str, timeout: float = 5.0, cluster: str = "kvnode") -> None:
        if workload not in WORKLOADS:
            raise ValueError(f"kvnode has no client for workload {workload!r} (it has: {', '.join(WORKLOADS)})")
        self._cart = workload == "cart"
        self._timeout = timeout
        self._client: AsyncClient | None = None
        self._node: str | None = None
        self._cluster = cluster

    async def open(self, node: NodeSetup) -> None:
        self._node = node.place.name
        # An add makes two requests, and must answer (with the cart it
        # wrote) before the runner gives up on it at op_timeout.
        timeout = min(self._timeout, node.op_timeout / 2.5)
        self._client = AsyncClient(node.place.client[PORT], cluster=self._cluster, timeout=timeout,
                                   connect_timeout=min(1.0, timeout))

    async def invoke(self, op: Invocation) -> Completion:
        assert self._client is not None, "invoke before open"
        try:
            return await self._invoke(self._client, op)
        except KvError as e:
            return Completion("fail" if e.definite else "info", error=_error(e))

    async def _invoke(self, client: AsyncClient, op: Invocation) -> Completion:
        key = str(op.key).encode()
        if op.f == "read" and self._cart:
            got = await client.get(key)
            carts = sorted({tuple(cart_items(v)) for v in got.values})
            return Completion("ok", sorted({x for c in carts for x in c}),
                              extra={"siblings": [list(c) for c in carts]}, context=got.context)
        if op.f == "read":
            got = await client.get(key)
            return Completion("ok", _text(got.values), context=got.context)
        if op.f == "write":
            await client.put(key, str(op.value).encode(), op.context)
            return Completion("ok", op.value)
        if op.f == "delete" and not self._cart:  # a tombstone, superseding what the context covers
            await client.delete(key, op.context)
            return Completion("ok")
        if op.f == "add":
            got = await client.get(key)
            carts = sorted({tuple(cart_items(v)) for v in got.values})
            cart = sorted({x for c in carts for x in c} | {str(op.value)})
            extra: dict[str, Any] = {"obs": [list(c) for c in carts], "wrote": cart}
            try:
                await client.put(key, "\n".join(cart).encode(), got.context)
            except KvError as e:
                return Completion("fail" if e.definite else "info", error=_error(e), extra=extra)
            except Exception as e:  # the cart written must be recorded whatever happened
                return Completion("info", error=f"{type(e).__name__}: {e}"[:200], extra=extra)
            return Completion("ok", op.value, extra=extra)
        return Completion("fail", error=f"unknown operation {op.f!r}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _error(e: KvError) -> str:
    code = getattr(e, "code", None) or type(e).__name__
    return f"{code}: {e}"[:200]


class KvnodeSystem:
    """`--system kvnode`; its options are the node's cluster settings."""

    name = "kvnode"
    ports = (PORT,)
    Options = ClusterSettings

    def __init__(self, **options: Any) -> None:
        self.settings = ClusterSettings(**options)  # refuses what a node would (w > n ...)
        self.db = KvnodeDB(self.settings)
        self._timeout = 5.0

    def client(self, workload: str) -> KvnodeClient:
        return KvnodeClient(workload, self._timeout, self.settings.cluster)

    def supports(self, deployment: Deployment) -> str | None:
        s = self.settings
        if deployment.workload not in WORKLOADS:
            return f"kvnode has no client for the {deployment.workload} workload (it has: {', '.join(WORKLOADS)})"
        if deployment.nodes < s.n:
            return (f"n={s.n} replicas per key need at least {s.n} nodes, not {deployment.nodes}: "
                    f"add nodes or lower --n (and --w, --r)")
        return None

    def promise(self, workload: str) -> Promise:
        s = self.settings
        params = {"n": s.n, "w": s.w, "r": s.r, "quorum": s.quorum, "read_repair": s.read_repair}
        claims: list[Claim] = []
        if s.resolution == "dvv":
            claims.append(Claim(name="siblings", params=params,
                                why="dotted version vectors keep concurrent writes as siblings"))
            if workload == "cart":
                claims.append(Claim(name="no-lost-adds",
                                    why="concurrent carts are kept as siblings, which the next add merges"))
        else:
            claims.append(Claim(name="last-write-wins", params=params,
                                why="each key keeps the write with the latest timestamp"))
            if workload == "register" and s.quorum == "strict" and s.read_repair == "sync" and s.w + s.r > s.n:
                claims.append(Claim(name="linearizable",
                                    why=f"strict quorums that intersect (W+R={s.w + s.r} > N={s.n}) and "
                                        "synchronous read repair (ABD) make each key a linearizable "
                                        "register, as long as the nodes' clocks agree"))
        return Promise(claims=tuple(claims))
