"""An in-process node (`kvnode.server.Node`) on loopback for the tests of
access rules and connection bounds: no subprocess, so a test can look at the
node's own counters. Its peers are configured but never started (nothing
listens on their ports), so peer traffic fails at once.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from kvnode.clock import SystemClock
from kvnode.config import ClusterSettings, Limits, NodeConfig
from kvnode.log import EventLog
from kvnode.server import Node

SECRET, TOKEN, ADMIN_TOKEN = b"the cluster secret", b"client token", b"admin token"
CLUSTER = "acl"

# How a node is configured: (secret, client token, admin token).
NODE_CONFIGS = {
    "open": (None, None, None),
    "secret": (SECRET, None, None),
    "secret+tokens": (SECRET, TOKEN, ADMIN_TOKEN),
    "secret+client-token": (SECRET, TOKEN, None),
}

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write(path: Path, data: bytes | None) -> str | None:
    if data is None:
        return None
    path.write_bytes(data)
    return str(path)


def node_config(tmp: Path, name: str, limits: Limits | None = None, size: int = 3) -> NodeConfig:
    secret, token, admin_token = NODE_CONFIGS.get(name, (None, None, None))
    tmp.mkdir(parents=True, exist_ok=True)
    ports = {f"n{i + 1}": _free_port() for i in range(size)}  # n2.. are never started: nothing listens there
    return NodeConfig(
        id="n1", listen=("127.0.0.1", ports["n1"]), data=str(tmp / "data"),
        peers={n: ("127.0.0.1", p) for n, p in ports.items()},
        settings=ClusterSettings(cluster=CLUSTER, n=1, w=1, r=1, request_timeout=0.5, connect_timeout=0.1,
                                 ae_interval=0, gossip_interval=3600.0),
        sync="never", log=None,
        secret_file=_write(tmp / "secret", secret), token_file=_write(tmp / "token", token),
        admin_token_file=_write(tmp / "admin", admin_token), limits=limits or Limits(),
    )


@asynccontextmanager
async def running(config: NodeConfig, log_path: Path | None = None) -> AsyncIterator[Node]:
    stream = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115
    node = Node(config, log=EventLog(config.id, SystemClock(), stream)
                if stream else None)
    await node.start()
    try:
        yield node
    finally:
        node.stop()
        await node.shutdown()
        if stream:
            stream.close()


