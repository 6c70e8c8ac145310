"""etcd as a system under test (`harness/systems/etcd.py`).

Unit tests, without etcd: the command line a member starts with, the
promises, the deployments it refuses, its options through the loader, and
the client's ok/fail/info mapping against a fake etcd JSON gateway on
127.0.0.1 (an asyncio HTTP server that answers, hangs, hangs up, or answers
with etcd's errors).

End to end (`netns`): a clock run of etcd is refused before any member
starts. Its runs under faults are rows of ci/matrix.toml (`harness ci`):
valid under partitions, kills and pauses; with `serializable_reads` the
linearizability checker finds the stale reads of a member cut off from the
leader."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from contract.ops import Completion, Invocation
from harness.backends.base import NodePlace
from harness.backends.probe import netns_problem
from harness.errors import ConfigError
from harness.runner import load_system
from harness.systems.base import Deployment, NodeSetup
from harness.systems.etcd import EtcdClient, EtcdDB, EtcdSystem

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2", "n3")


def arun(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def place(name: str, addresses: dict[str, str], *, advertise: bool = True) -> NodePlace:
    """A node's place as the netns backend makes it: client port 7000, peer
    port 7001 on the node's address."""
    ports = {m: {"client": f"{a}:7000", "peer": f"{a}:7001"} for m, a in addresses.items()}
    return NodePlace(name=name, listen=ports[name], client=ports[name], peers=ports,
                     data_dir=f"/runs/x/nodes/{name}/data", log_dir=f"/runs/x/nodes/{name}/log",
                     advertise=ports[name] if advertise else None)


def setup_of(p: NodePlace, op_timeout: float = 5.0, nodes: tuple[str, ...] = NODES) -> NodeSetup:
    return NodeSetup(place=p, nodes=nodes, seed=42, op_timeout=op_timeout)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- the command line ---------------------------------------------------------


def test_the_command_line_names_every_member_by_its_peer_url() -> None:
    addresses = {"n1": "10.78.0.2", "n2": "10.78.0.3", "n3": "10.78.0.4"}
    system = EtcdSystem(heartbeat_ms=40, election_ms=400)
    lines = {n: system.db.command(setup_of(place(n, addresses)))[0] for n in NODES}
    argv = lines["n2"]
    assert argv[0] == "etcd"
    assert flag(argv, "--name") == "n2"
    assert flag(argv, "--data-dir") == "/runs/x/nodes/n2/data"
    assert flag(argv, "--listen-client-urls") == "http://10.78.0.3:7000"
    assert flag(argv, "--advertise-client-urls") == "http://10.78.0.3:7000"
    assert flag(argv, "--listen-peer-urls") == "http://10.78.0.3:7001"
    assert flag(argv, "--initial-advertise-peer-urls") == "http://10.78.0.3:7001"
    assert flag(argv, "--initial-cluster") == ("n1=http://10.78.0.2:7001,n2=http://10.78.0.3:7001,"
                                               "n3=http://10.78.0.4:7001")
    assert flag(argv, "--initial-cluster-state") == "new"
    assert flag(argv, "--initial-cluster-token") == "harness-42"
    assert flag(argv, "--heartbeat-interval") == "40"
    assert flag(argv, "--election-timeout") == "400"
    assert flag(argv, "--log-outputs") == "stderr"
    # Every member is told the same cluster and token, or they would not form one.
    assert len({flag(a, "--initial-cluster") for a in lines.values()}) == 1
    assert len({flag(a, "--initial-cluster-token") for a in lines.values()}) == 1
    assert system.db.command(setup_of(place("n2", addresses)))[1] == {}


def test_the_binary_option_is_the_program_started() -> None:
    system = EtcdSystem(binary="/opt/etcd/bin/etcd", pre_vote=False)
    argv, _ = system.db.command(setup_of(place("n1", {"n1": "10.0.0.2", "n2": "10.0.0.3", "n3": "10.0.0.4"})))
    assert argv[0] == "/opt/etcd/bin/etcd"
    assert "--pre-vote=false" in argv


def test_a_place_without_one_advertised_address_cannot_start_a_member() -> None:
    p = place("n1", {"n1": "127.0.0.1", "n2": "127.0.0.2", "n3": "127.0.0.3"}, advertise=False)
    with pytest.raises(ValueError, match="--backend netns"):
        EtcdSystem().db.command(setup_of(p))


# -- promises, deployments, options -----------------------------------------------


def test_what_etcd_promises() -> None:
    register = EtcdSystem().promise("register")
    assert register.names() == ("linearizable",)
    assert "raft" in register.claims[0].why
    assert EtcdSystem().promise("cart").names() == ("linearizable", "no-lost-adds")
    # Serializable reads are the bug the harness must find: the promise stays.
    stale = EtcdSystem(serializable_reads=True).promise("register")
    assert stale.names() == ("linearizable",)
    assert "serializable" in stale.claims[0].why
    with pytest.raises(ValueError, match="no client for workload 'queue'"):
        EtcdSystem().client("queue")


def deployment(backend: str, faults: tuple[str, ...] = ("partition",)) -> Deployment:
    return Deployment(backend=backend, nodes=3, workload="register", faults=faults)


def test_it_refuses_the_local_and_docker_backends_and_nothing_else() -> None:
    system = EtcdSystem()
    local = system.supports(deployment("local"))
    assert local is not None and "peer URLs" in local and "--backend netns" in local
    docker = system.supports(deployment("docker"))
    assert docker is not None and "no etcd" in docker and "--backend netns" in docker
    assert system.supports(deployment("netns")) is None
    assert system.supports(deployment("ssh")) is None
    # Clock skew is the backends' to refuse (they see etcd is a Go binary).
    assert system.supports(deployment("netns", ("clock", "kill", "pause", "packet"))) is None


def test_options_are_converted_and_checked_by_the_loader() -> None:
    system, name, values = load_system("etcd", {"serializable_reads": "true", "heartbeat-ms": "20"})
    assert name == "etcd"
    assert isinstance(system, EtcdSystem)
    assert values == {"serializable_reads": True, "heartbeat_ms": 20}
    assert system.serializable_reads is True
    assert isinstance(system.db, EtcdDB) and system.db.options.heartbeat_ms == 20
    default, _, _ = load_system("etcd", {})
    assert isinstance(default, EtcdSystem) and default.serializable_reads is False
    with pytest.raises(ConfigError, match="etcd's option serializable_reads: 'maybe' is not true or false"):
        load_system("etcd", {"serializable_reads": "maybe"})
    with pytest.raises(ConfigError, match="etcd has no option 'n'"):
        load_system("etcd", {"n": "3"})
    with pytest.raises(ConfigError, match="at least 5 heartbeats"):
        load_system("etcd", {"heartbeat_ms": "100", "election_ms": "300"})


def test_the_local_backend_is_refused_on_the_command_line_in_one_line(tmp_path: Path) -> None:
    got = subprocess.run([sys.executable, "-m", "harness", "run", "--system", "etcd", "--backend", "local",
                          "--nemesis", "partition", "--store", str(tmp_path / "store")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert got.returncode == 254, got.stderr
    said = [line for line in got.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and "etcd cannot run here" in said[0] and "peer URLs" in said[0], got.stderr


# -- a fake etcd gateway ------------------------------------------------------------

Behaviour = Callable[[str, dict[str, Any]], Any]  # (path, request) -> an answer, or one of the actions


HANG, HANG_UP = "hang", "hang-up"


@dataclass
class FakeEtcd:
    """An etcd JSON gateway on 127.0.0.1 keeping one revisioned key space.
    `behave[path]` overrides a path: HANG (read the request, never answer),
    HANG_UP (read it, close), `(status, json)` (answer that), or a function
    of the request returning one of those (None: behave normally)."""

    behave: dict[str, Any] = field(default_factory=dict)
    data: dict[str, tuple[str, int]] = field(default_factory=dict)  # key -> (value, mod_revision)
    revision: int = 1
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    chunked: bool = False
    address: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            _, path, _ = line.decode().split(" ", 2)
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            request = json.loads(await reader.readexactly(length)) if length else {}
            self.requests.append((path, request))
            action = self.behave.get(path)
            if callable(action):
                action = action(path, request)
            if action == HANG:
                await asyncio.sleep(3600)
            if action == HANG_UP:
                return
            status, answer = action if action is not None else (200, self.answer(path, request))
            body = json.dumps(answer).encode()
            if self.chunked:
                head = f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
                half = len(body) // 2
                payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
                writer.write(head.encode() + payload + b"0\r\nX-T: 1\r\n\r\n")
            else:
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def answer(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        header = {"revision": str(self.revision)}
        if path == "/v3/kv/range":
            key = _text(request["key"])
            if key not in self.data:
                return {"header": header}
            value, mod = self.data[key]
            return {"header": header, "count": "1",
                    "kvs": [{"key": request["key"], "value": _b64(value), "mod_revision": str(mod)}]}
        if path == "/v3/kv/put":
            self._put(_text(request["key"]), _text(request["value"]))
            return {"header": {"revision": str(self.revision)}}
        if path == "/v3/kv/txn":
            compare = request["compare"][0]
            key = _text(compare["key"])
            if self.data.get(key, ("", 0))[1] != int(compare.get("mod_revision", 0)):
                return {"header": header}  # `succeeded` left out when false, as the gateway does
            put = request["success"][0]["request_put"]
            self._put(_text(put["key"]), _text(put["value"]))
            return {"header": {"revision": str(self.revision)}, "succeeded": True}
        if path == "/v3/kv/deleterange":
            gone = self.data.pop(_text(request["key"]), None)
            if gone is not None:
                self.revision += 1
            return {"header": {"revision": str(self.revision)}, "deleted": "1" if gone else "0"}
        return {"error": "Not Found", "code": 5}

    def _put(self, key: str, value: str) -> None:
        self.revision += 1
        self.data[key] = (value, self.revision)

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _text(data: str) -> str:
    return base64.b64decode(data).decode()


@contextlib.asynccontextmanager
async def serving(fake: FakeEtcd) -> AsyncIterator[FakeEtcd]:
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    fake.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield fake
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (it refuses)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fake_setup(address: str, op_timeout: float = 0.5) -> NodeSetup:
    ports = {"client": address, "peer": address}
    p = NodePlace(name="n1", listen=ports, client=ports, peers={"n1": ports}, data_dir="/d", log_dir="/l",
                  advertise=ports)
    return NodeSetup(place=p, nodes=("n1",), seed=1, op_timeout=op_timeout)


async def invoke(address: str, workload: str, op: Invocation, *, serializable: bool = False,
                 op_timeout: float = 0.5) -> Completion:
    client = EtcdClient(workload, serializable)
    await client.open(fake_setup(address, op_timeout))
    try:
        # The client must answer before the runner would give up on it.
        return await asyncio.wait_for(client.invoke(op), op_timeout)
    finally:
        await client.close()


READ, WRITE, ADD = Invocation("read", "k"), Invocation("write", "k", "1.1"), Invocation("add", "k", "1.1")


# -- the client: what happened ---------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_register_reads_and_writes(chunked: bool) -> None:
    async def main() -> None:
        async with serving(FakeEtcd(chunked=chunked)) as fake:
            assert await invoke(fake.address, "register", READ) == Completion("ok", [])
            assert await invoke(fake.address, "register", WRITE) == Completion("ok", "1.1")
            assert await invoke(fake.address, "register", READ) == Completion("ok", ["1.1"])
            assert fake.data["k"][0] == "1.1"
            assert all("serializable" not in r for p, r in fake.requests if p == "/v3/kv/range")
            await invoke(fake.address, "register", READ, serializable=True)
            assert fake.requests[-1] == ("/v3/kv/range", {"key": _b64("k"), "serializable": True})
            assert await invoke(fake.address, "register", Invocation("delete", "k")) == Completion("ok")
            assert await invoke(fake.address, "register", READ) == Completion("ok", [])
            assert "k" not in fake.data

    arun(main())


def test_cart_adds_compare_and_swap_the_cart() -> None:
    async def main() -> None:
        async with serving(FakeEtcd()) as fake:
            first = await invoke(fake.address, "cart", ADD)
            assert first == Completion("ok", "1.1", extra={"obs": [], "wrote": ["1.1"]})
            revision = fake.data["k"][1]
            second = await invoke(fake.address, "cart", Invocation("add", "k", "0.1"))
            assert second == Completion("ok", "0.1", extra={"obs": [["1.1"]], "wrote": ["0.1", "1.1"]})
            assert fake.data["k"][0] == "0.1\n1.1"
            read = await invoke(fake.address, "cart", READ)
            assert read == Completion("ok", ["0.1", "1.1"], extra={"siblings": [["0.1", "1.1"]]})
            assert await invoke(fake.address, "cart", Invocation("read", "none")) == Completion(
                "ok", [], extra={"siblings": []})
            txns = [r for p, r in fake.requests if p == "/v3/kv/txn"]
            # An absent cart is compared at mod_revision 0; a present one at its own.
            assert [t["compare"][0]["mod_revision"] for t in txns] == ["0", str(revision)]

    arun(main())


def test_a_cart_add_retries_a_failed_compare_then_fails() -> None:
    async def main() -> None:
        fake = FakeEtcd()
        interfered = 0

        def meddle(path: str, request: dict[str, Any]) -> None:
            nonlocal interfered  # someone else adds between the read and the txn, once
            if interfered < 1:
                interfered += 1
                fake._put("k", "9.9")
            return None

        fake.behave["/v3/kv/txn"] = meddle
        async with serving(fake):
            got = await invoke(fake.address, "cart", ADD)
            assert got == Completion("ok", "1.1", extra={"obs": [["9.9"]], "wrote": ["1.1", "9.9"]})
            assert fake.paths() == ["/v3/kv/range", "/v3/kv/txn", "/v3/kv/range", "/v3/kv/txn"]

            def always(path: str, request: dict[str, Any]) -> None:
                fake._put("k", "8.8")  # someone else adds first, every time

            fake.behave["/v3/kv/txn"] = always
            fake.requests.clear()
            got = await invoke(fake.address, "cart", Invocation("add", "k", "1.2"))
            assert got.type == "fail" and "changed since it was read" in (got.error or "")
            assert fake.paths().count("/v3/kv/txn") == 3

    arun(main())


# -- the client: fail or info ---------------------------------------------------------


def test_nothing_sent_is_fail() -> None:
    async def main() -> None:
        refused = f"127.0.0.1:{free_port()}"
        for workload, op in (("register", READ), ("register", WRITE), ("cart", ADD), ("cart", READ)):
            got = await invoke(refused, workload, op)
            assert got.type == "fail", (workload, op, got)
            assert "connect" in (got.error or "")

    arun(main())


@pytest.mark.parametrize("action", [HANG, HANG_UP], ids=["timeout", "hang-up"])
def test_a_write_without_an_answer_is_info_and_a_read_fail(action: str) -> None:
    async def main() -> None:
        fake = FakeEtcd(behave={"/v3/kv/put": action, "/v3/kv/range": action})
        async with serving(fake):
            write = await invoke(fake.address, "register", WRITE)
            assert write.type == "info", write
            read = await invoke(fake.address, "register", READ)
            assert read.type == "fail", read
            # An add whose read got no answer wrote nothing.
            add = await invoke(fake.address, "cart", ADD)
            assert add.type == "fail", add
            assert "/v3/kv/txn" not in fake.paths()

    arun(main())


@pytest.mark.parametrize("action", [HANG, HANG_UP], ids=["timeout", "hang-up"])
def test_a_cart_txn_without_an_answer_is_info_with_the_cart_it_wrote(action: str) -> None:
    async def main() -> None:
        fake = FakeEtcd(behave={"/v3/kv/txn": action})
        fake.data["k"] = ("0.1", 5)
        async with serving(fake):
            got = await invoke(fake.address, "cart", ADD)
            assert got.type == "info", got
            assert got.extra == {"obs": [["0.1"]], "wrote": ["0.1", "1.1"]}

    arun(main())


TIMED_OUT = (500, {"error": "etcdserver: request timed out", "message": "etcdserver: request timed out",
                   "code": 14})
DEADLINE = (500, {"error": "context deadline exceeded", "message": "context deadline exceeded", "code": 2})
BAD_REQUEST = (400, {"error": "unexpected EOF", "message": "unexpected EOF", "code": 3})
TOO_MANY = (500, {"error": "etcdserver: too many requests", "message": "etcdserver: too many requests",
                  "code": 14})
NOT_JSON = (502, "bad gateway")


@pytest.mark.parametrize("answer, write_type", [
    (TIMED_OUT, "info"), (DEADLINE, "info"), (NOT_JSON, "info"),  # etcd may have committed it
    (BAD_REQUEST, "fail"), (TOO_MANY, "fail"),  # refused before anything was proposed
], ids=["timed-out", "deadline", "not-json", "bad-request", "too-many-requests"])
def test_etcd_errors(answer: tuple[int, Any], write_type: str) -> None:
    async def main() -> None:
        fake = FakeEtcd(behave={"/v3/kv/put": answer, "/v3/kv/txn": answer})
        async with serving(fake):
            write = await invoke(fake.address, "register", WRITE)
            assert write.type == write_type, write
            assert write.error and len(write.error) <= 200
            add = await invoke(fake.address, "cart", ADD)
            assert add.type == write_type, add
            assert add.extra.get("wrote") == ["1.1"]
            fake.behave = {"/v3/kv/range": answer}
            read = await invoke(fake.address, "register", READ)
            assert read.type == "fail", read  # a read has no effect

    arun(main())


def test_the_client_answers_before_the_runners_op_timeout() -> None:
    async def main() -> None:
        fake = FakeEtcd(behave={"/v3/kv/put": HANG})
        async with serving(fake):
            loop = asyncio.get_running_loop()
            started = loop.time()
            got = await invoke(fake.address, "register", WRITE, op_timeout=1.0)
            took = loop.time() - started
            assert got.type == "info" and took < 1.0, (got, took)

    arun(main())


# -- the DB's signals ------------------------------------------------------------------


def test_ready_asks_for_the_version_and_gives_up_after_the_timeout() -> None:
    async def main() -> None:
        fake = FakeEtcd(behave={"/version": (200, {"etcdserver": "3.4.23", "etcdcluster": "not_decided"})})
        db = EtcdSystem().db
        async with serving(fake):
            assert await db.ready(fake_setup(fake.address), 2.0) is True
        assert await db.ready(fake_setup(f"127.0.0.1:{free_port()}"), 0.3) is False

    arun(main())


def status(leader: str, index: int) -> tuple[int, dict[str, Any]]:
    return 200, {"leader": leader, "raftIndex": str(index), "raftAppliedIndex": str(index)}


def test_converged_wants_health_one_leader_and_close_indexes() -> None:
    async def main() -> None:
        fakes = [FakeEtcd(behave={"/health": (200, {"health": "true"}),
                                  "/v3/maintenance/status": status("7", 100 + i)}) for i in range(3)]
        db = EtcdSystem().db
        async with contextlib.AsyncExitStack() as stack:
            for f in fakes:
                await stack.enter_async_context(serving(f))
            nodes = [fake_setup(f.address) for f in fakes]
            assert await db.converged(nodes) is True
            fakes[1].behave["/v3/maintenance/status"] = status("8", 101)  # another leader
            assert await db.converged(nodes) is False
            fakes[1].behave["/v3/maintenance/status"] = status("0", 101)  # no leader
            assert await db.converged(nodes) is False
            fakes[1].behave["/v3/maintenance/status"] = status("7", 1000)  # far behind the others
            assert await db.converged(nodes) is False
            fakes[1].behave["/v3/maintenance/status"] = status("7", 101)
            fakes[2].behave["/health"] = (503, {"health": "false"})
            assert await db.converged(nodes) is False
            fakes[2].behave["/health"] = (200, "not an object")
            assert await db.converged(nodes) is False
        # Nobody there: False, never an exception.
        assert await db.converged([fake_setup(f"127.0.0.1:{free_port()}")]) is False

    arun(main())


# -- end to end: real etcd in network namespaces ------------------------------------------


def _why_no_netns() -> str:
    """Why etcd clusters cannot run in namespaces here ("" if they can),
    found by trying (harness/backends/probe.py)."""
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server)"
    return netns_problem()


@pytest.fixture(scope="module")
def netns_etcd() -> None:
    reason = _why_no_netns()
    if reason:
        pytest.skip(reason)


# etcd's runs under faults (valid under partitions, kills and pauses; stale
# serializable reads found) are rows of ci/matrix.toml, run by `harness ci`.


@pytest.mark.netns
def test_a_clock_run_of_etcd_is_refused_with_the_reason(netns_etcd: None, tmp_path: Path) -> None:
    """etcd is a Go program: libfaketime cannot skew it, so a clock run is
    refused before any member starts, instead of recording skews that never
    happened."""
    got = subprocess.run([sys.executable, "-m", "harness", "run", "--system", "etcd", "--backend", "netns",
                          "--subnet", "10.78.226.0/24", "--nodes", "3", "--nemesis", "clock", "--no-live",
                          "--store", str(tmp_path / "store")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 254, got.stderr
    said = [line for line in got.stderr.splitlines() if line.startswith("Error:")]
    assert len(said) == 1 and "a Go program" in said[0] and "libfaketime cannot skew it" in said[0], got.stderr
    run_dir = (tmp_path / "store" / "latest").resolve()
    assert "start pid=" not in (run_dir / "nodes" / "n1" / "log" / "backend.log").read_text()
    assert not (run_dir / "results.json").exists()
