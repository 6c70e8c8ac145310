"""Who may send what: every request kind against every identity, on nodes
with each way of configuring credentials, through a real in-process node
(`kvnode.server.Node`) on loopback; and a hypothesis fuzz of the dispatcher.

The expectation here is written independently of `protocol.ACCESS`: which
requests are data, peer-only or admin is spelled out below, and the cases
are generated from the table, so a request kind added to the table without
a decision here fails, and a table entry that disagrees fails too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvnode import auth, protocol
from kvnode.clock import SystemClock
from kvnode.connection import Connection
from kvnode.log import EventLog
from kvnode.server import Node

from .inprocess import ADMIN_TOKEN, CLUSTER, NODE_CONFIGS, SECRET, TOKEN, node_config, running

# The test's own view of the requests (independent of protocol.ACCESS).
DATA = {"get", "put", "delete", "local_get", "preference_list"}
STATUS = {"status"}
PEER_ONLY = {"replica_get", "replica_put", "coordinate", "ae_hashes", "ae_keys", "ae_push", "gossip",
             "ring_get", "ring_set"}
ADMIN = {"ae_round", "join", "leave"}

# Who connects: (node named in hello, secret it proves with, token presented).
IDENTITIES: dict[str, tuple[str | None, bytes | None, bytes | None]] = {
    "anonymous": (None, None, None),
    "client-with-token": (None, None, TOKEN),
    "client-wrong-token": (None, None, b"guess"),
    "names-a-peer": ("n2", None, None),  # the bypass: a hello that merely names a member
    "peer-right-secret": ("n2", SECRET, None),
    "peer-wrong-secret": ("n2", b"wrong secret", None),
    "admin-token": (None, None, ADMIN_TOKEN),
}


def expected(node_config: str, identity: str, kind: str) -> bool:
    """Whether `identity` may send `kind` to a node configured as `node_config`:
    the rules of the issue, written out case by case."""
    secret, token, admin_token = NODE_CONFIGS[node_config]
    named, proves, presents = IDENTITIES[identity]
    proved = secret is not None and proves == secret
    is_client = token is None or presents == token
    if named is not None and secret is not None and not proved:
        return False  # the node refuses the handshake
    if proves is not None and secret is None:
        return False  # the connecting side refuses a node that cannot prove the secret back
    if kind in DATA:
        return is_client
    is_admin = proved or (admin_token is not None and presents == admin_token) or (
        secret is None and admin_token is None and is_client)
    if kind in STATUS:
        return is_client or is_admin
    if kind in PEER_ONLY:
        if secret is None:  # only an open node takes a name for a peer
            return named is not None
        return proved
    if kind in ADMIN:
        return is_admin
    raise AssertionError(f"the test has no expectation for {kind}: decide who may send it")


def test_the_test_has_an_expectation_for_every_request_kind() -> None:
    assert set(protocol.REQUESTS) == DATA | STATUS | PEER_ONLY | ADMIN


def sample(kind: str) -> dict[str, Any]:
    """A well-formed request of `kind` (field values of the right types)."""
    special: dict[str, dict[str, Any]] = {
        "coordinate": {"op": "put", "key": b"k", "value": b"v", "context": None},
        "join": {"seed": "127.0.0.1:1"},
        "ring_set": {"epoch": 0, "ring": {}},
        "gossip": {"from": "n2", "members": [], "ring_epoch": 0, "ring": None},
    }
    if kind in special:
        return {"type": kind, **special[kind]}
    by_type = {bytes: b"k", str: "x", int: 0, list: [], dict: {}, type(None): None}
    return {"type": kind, **{f: by_type[types[0]] for f, types in protocol.SCHEMA[kind].items()}}


async def _connect(node: Node, identity: str) -> Connection:
    named, proves, presents = IDENTITIES[identity]
    return await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, node=named, secret=proves,
                                 token=presents, timeout=5)


# leave last: it changes the ring for what follows.
KINDS = [*sorted(protocol.REQUESTS - {"leave"}), "leave"]


@pytest.mark.parametrize("node_name", sorted(NODE_CONFIGS))
def test_every_request_kind_by_every_identity(tmp_path: Path, node_name: str) -> None:
    async def main() -> list[str]:
        wrong: list[str] = []
        for identity in IDENTITIES:
            config = node_config(tmp_path / identity, node_name)
            async with running(config) as node:
                try:
                    conn = await _connect(node, identity)
                except protocol.RemoteError as e:
                    assert e.code == "unauthorized", e
                    conn = None
                for kind in KINDS:
                    if conn is None:
                        allowed = False
                    else:
                        reply = await conn.request(sample(kind), 10)
                        allowed = not (reply["type"] == "error" and reply["code"] == "unauthorized")
                    if allowed != expected(node_name, identity, kind):
                        wrong.append(f"{identity} {kind}: {'allowed' if allowed else 'refused'}")
                if conn is not None:
                    await conn.close()
        return wrong

    assert asyncio.run(main()) == []


def test_a_hello_naming_a_member_does_not_bypass_the_client_token(tmp_path: Path) -> None:
    # A single node (no peers, so a token without a secret is allowed):
    # before the fix, any name in `node` made the connection a peer.
    config = node_config(tmp_path, "x", size=1)
    token = tmp_path / "token"
    token.write_bytes(TOKEN)
    config = dataclasses.replace(config, token_file=str(token))

    async def main() -> None:
        async with running(config) as node:
            with pytest.raises(protocol.RemoteError) as info:
                await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, node="n1", timeout=5)
            assert info.value.code == "unauthorized"
            good = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, token=TOKEN, timeout=5)
            for kind in ("replica_put", "ring_set", "gossip"):
                reply = await good.request(sample(kind), 5)
                assert reply["type"] == "error" and reply["code"] == "unauthorized", kind
            await good.close()

    asyncio.run(main())


def test_a_token_without_a_secret_on_a_node_with_peers_is_refused_at_start(tmp_path: Path) -> None:
    config = node_config(tmp_path, "open")
    token = tmp_path / "token"
    token.write_bytes(TOKEN)
    config = dataclasses.replace(config, token_file=str(token))
    with pytest.raises(auth.AuthConfigError, match="without a cluster secret protects nothing"):
        Node(config)


def test_a_client_cannot_make_a_node_with_a_secret_leave(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "secret")) as node:
            conn = await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, timeout=5)
            for kind in ("leave", "join", "ae_round"):
                reply = await conn.request(sample(kind), 5)
                assert reply["code"] == "unauthorized", reply
            await conn.close()
            assert node.ring_epoch == 0 and "n1" in node.ring.nodes

    asyncio.run(main())


def test_auth_log_lines_carry_the_nodes_own_id_and_are_rate_limited(tmp_path: Path) -> None:
    log = tmp_path / "n1.log"

    async def main() -> None:
        async with running(node_config(tmp_path, "secret"), log) as node:
            for _ in range(60):
                with pytest.raises(protocol.RemoteError):
                    await Connection.open("127.0.0.1", node.port, cluster=CLUSTER, node="n2",
                                          secret=b"wrong", timeout=5)

    asyncio.run(main())
    refused = [e for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "refused_peer"]
    assert refused and all(e["node"] == "n1" and e["claimed"] == "n2" for e in refused)
    assert len(refused) < 60  # 60 refusals within a second: not 60 lines


# ------------------------------------------------------------------ fuzzing

FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
    st.binary(max_size=70_000).filter(lambda b: len(b) < 40 or len(b) > 65_000),
    st.text(max_size=20), st.lists(st.one_of(st.integers(-3, 300), st.binary(max_size=4)), max_size=5),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=5)), max_size=3),
)


@st.composite
def requests(draw: Callable[..., Any]) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(protocol.REQUESTS - {"leave", "join"})))
    message = sample(kind)
    for name in draw(st.lists(st.sampled_from(sorted(protocol.SCHEMA[kind]) or ["x"]), max_size=3)):
        message[name] = draw(FIELD_VALUES)
    return message


def test_fuzz_of_the_dispatcher(tmp_path: Path) -> None:
    """Random request kinds, identities and field values: every
    well-framed request gets exactly one reply with its id, nothing drops the
    connection, and the node logs no internal error."""
    log = tmp_path / "n1.log"
    config = node_config(tmp_path, "open")
    identities = ["anonymous", "names-a-peer"]

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(st.tuples(st.sampled_from(identities), requests()), min_size=1, max_size=6))
    def check(batch: list[tuple[str, dict[str, Any]]]) -> None:
        asyncio.run_coroutine_threadsafe(one(batch), loop).result(60)

    async def one(batch: list[tuple[str, dict[str, Any]]]) -> None:
        for identity, message in batch:
            conn = conns[identity]
            reply = await conn.request(message, 10)
            assert reply["type"] == "error" or reply["type"] == f"{message['type']}_ok" or (
                message["type"] == "coordinate"), reply
            if reply["type"] == "error":
                assert reply["code"] != "internal", (message, reply)
            assert not conn.closed

    loop = asyncio.new_event_loop()
    conns: dict[str, Connection] = {}

    async def setup() -> Node:
        node = Node(config, log=EventLog("n1", SystemClock(),
                                         open(log, "a", encoding="utf-8")))  # noqa: SIM115
        await node.start()
        for identity in identities:
            conns[identity] = await _connect(node, identity)
        return node

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    node = asyncio.run_coroutine_threadsafe(setup(), loop).result(30)
    try:
        check()
    finally:
        async def teardown() -> None:
            for conn in conns.values():
                await conn.close()
            node.stop()
            await node.shutdown()

        asyncio.run_coroutine_threadsafe(teardown(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [e for e in events if e["event"] == "internal_error"]


def test_non_requests_get_an_error_and_keep_the_connection(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(node_config(tmp_path, "open")) as node:
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            hello = {"type": "hello", "id": 0, "version": 1, "cluster": CLUSTER, "node": None,
                     "nonce": None, "token": None}
            for i, m in enumerate(itertools.chain([hello], [{"type": "get_ok", "values": [], "context": None},
                                                            {"type": "status"}])):
                body = msgpack.packb({**m, "id": i})
                writer.write(struct.pack(">I", len(body)) + body)
            frames = protocol.FrameReader(reader)
            replies = [await frames.next() for _ in range(3)]
            assert [r["type"] for r in replies if r] == ["hello_ok", "error", "status_ok"]
            writer.close()

    asyncio.run(main())


# ------------------------------------------------ the command line (slow)


@pytest.mark.slow
def test_kvnode_admin_needs_the_admin_token_or_the_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kvnode.cli import cli

    from .cluster import LocalCluster

    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "admin").write_bytes(ADMIN_TOKEN)
    settings = {"secret_file": str(tmp_path / "secret"), "admin_token_file": str(tmp_path / "admin"),
                "ae_interval": 0}
    with LocalCluster(tmp_path, 3, settings=settings) as c:
        base = ["admin", "anti-entropy", "--addr", c.addr("n1"), "--cluster", c.cluster, "--timeout", "20"]
        for name in ("KVNODE_ADMIN_TOKEN", "KVNODE_SECRET", "KVNODE_CLIENT_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        refused = CliRunner().invoke(cli, base)
        assert refused.exit_code == 1 and "unauthorized" in refused.output, refused.output
        monkeypatch.setenv("KVNODE_ADMIN_TOKEN", ADMIN_TOKEN.decode())
        ok = CliRunner().invoke(cli, base)
        assert ok.exit_code == 0 and "partitions=" in ok.output, ok.output
        monkeypatch.delenv("KVNODE_ADMIN_TOKEN")
        monkeypatch.setenv("KVNODE_SECRET", SECRET.decode())
        ok = CliRunner().invoke(cli, base)
        assert ok.exit_code == 0 and "partitions=" in ok.output, ok.output
        leave = CliRunner().invoke(cli, ["admin", "leave", "--addr", c.addr("n2"), "--cluster", c.cluster])
        monkeypatch.delenv("KVNODE_SECRET")
        assert leave.exit_code == 0, leave.output


def test_kvnode_serve_refuses_a_token_without_a_secret_on_a_node_with_peers(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kvnode.cli import cli

    (tmp_path / "token").write_bytes(TOKEN)
    result = CliRunner().invoke(cli, ["serve", "--id", "n1", "--listen", "127.0.0.1:1", "--data",
                                      str(tmp_path / "d"), "--peers", "n1=127.0.0.1:1,n2=127.0.0.1:2",
                                      "--token-file", str(tmp_path / "token")])
    assert result.exit_code == 1
    assert "without a cluster secret protects nothing" in result.output
