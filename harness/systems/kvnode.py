"""The reference adapter: `kvnode` as a system under test.

`KvnodeDB` says how to start a node (`python -m kvnode serve` with the
cluster's settings and the backend's `--peers` map), when it is ready (it
answers `status`), where its log is, and when the cluster has converged after
the faults are healed (every node sees every other alive, no hints pending,
then one anti-entropy round on each node).

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
import time
from collections.abc import Sequence
from typing import Any

from harness.systems.base import Completion, Invocation, NodeSetup
from kvnode.client import AsyncClient, KvError

CLUSTER = "harness"
WORKLOADS = ("register", "cart")
# ClusterSettings fields the harness passes through as `kvnode serve` flags.
SETTINGS = ("n", "w", "r", "resolution", "quorum", "read_repair", "partitions", "request_timeout",
            "gossip_interval", "suspect_after", "dead_after", "ae_interval", "handoff_interval")


def _text(values: Sequence[bytes]) -> list[str]:
    return sorted(v.decode("utf-8", "replace") for v in values)


def cart_items(value: bytes) -> list[str]:
    return sorted(x for x in value.decode("utf-8", "replace").split("\n") if x)


class KvnodeDB:
    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        place = node.place
        argv = [
            place.python, "-m", "kvnode", "serve", "--id", place.name, "--listen", place.listen,
            "--data", place.data_dir, "--peers", ",".join(f"{k}={v}" for k, v in sorted(place.peers.items())),
            "--cluster", CLUSTER, "--log", f"{place.log_dir}/kvnode.log", "--seed", str(node.seed),
        ]
        for key in SETTINGS:
            if key in node.settings and node.settings[key] is not None:
                argv += [f"--{key.replace('_', '-')}", str(node.settings[key])]
        return argv, {}

    async def ready(self, node: NodeSetup, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            client = AsyncClient(node.place.client, cluster=CLUSTER, timeout=1.0, connect_timeout=0.5)
            try:
                await client.status()
                return True
            except (KvError, OSError):
                if time.monotonic() > deadline:
                    return False
            finally:
                await client.close()
            await asyncio.sleep(0.05)

    def log_files(self, node: NodeSetup) -> list[str]:
        return [f"{node.place.log_dir}/kvnode.log"]

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

    async def _status(self, node: NodeSetup) -> dict[str, Any] | None:
        return await self._admin(node, "status")

    async def _admin(self, node: NodeSetup, kind: str) -> dict[str, Any] | None:
        client = AsyncClient(node.place.client, cluster=CLUSTER, timeout=10.0, connect_timeout=1.0)
        try:
            if kind == "status":
                return await client.status()
            return await client.admin(kind)
        except (KvError, OSError):
            return None
        finally:
            await client.close()


class KvnodeClient:
    def __init__(self, workload: str, timeout: float = 5.0) -> None:
        if workload not in WORKLOADS:
            raise ValueError(f"kvnode has no client for workload {workload!r} (it has: {', '.join(WORKLOADS)})")
        self._cart = workload == "cart"
        self._timeout = timeout
        self._client: AsyncClient | None = None
        self._node: str | None = None

    async def open(self, node: NodeSetup) -> None:
        self._node = node.place.name
        # An add makes two requests, and must answer (with the cart it
        # wrote) before the runner gives up on it at op_timeout.
        timeout = min(self._timeout, node.op_timeout / 2.5)
        self._client = AsyncClient(node.place.client, cluster=CLUSTER, timeout=timeout,
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
    """`--system kvnode`."""

    name = "kvnode"

    def __init__(self, timeout: float = 5.0) -> None:
        self.db = KvnodeDB()
        self._timeout = timeout

    def client(self, workload: str) -> KvnodeClient:
        return KvnodeClient(workload, self._timeout)
