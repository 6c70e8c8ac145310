"""The `local` backend end to end: real `kvnode serve` processes on
127.A.B.11-13 talking through the backend's proxies, and the faults the
nemesis will use on them: a partition (and its heal), kill and restart,
pause and resume, clock skew; then a teardown that leaves no process, no
listener and no control file. And what a system other than kvnode needs:
two named ports per node (a proxy per link and port, a partition that cuts
both), how a process that ended on its own exited, which programs a clock
skew cannot reach, and the seed that replays the proxies' randomness."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.backends.base import BackendOptions, Exited, NodePlace, PacketShape
from harness.backends.faketime import find_libfaketime, libfaketime_missing_reason
from harness.backends.local import LocalBackend, _orphan_guard
from kvnode.client import AsyncClient, KvError
from tests.harness.nodes import ECHO_NODE
from tests.harness.nodes import kvnode_argv as node_argv

pytestmark = pytest.mark.slow

T = TypeVar("T")
NODES = ["n1", "n2", "n3"]
SETTINGS = {"quorum": "strict", "n": 3, "w": 2, "r": 2, "request_timeout": 0.5, "gossip_interval": 0.2}
CLUSTER = "backend-test"
ISOLATE_N1 = {"n1": frozenset({"n2", "n3"}), "n2": frozenset({"n1"}), "n3": frozenset({"n1"})}


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def kvnode_argv(place: NodePlace) -> list[str]:
    return node_argv(place, CLUSTER, SETTINGS)



def client(place: NodePlace, timeout: float = 3.0) -> AsyncClient:
    return AsyncClient(place.client["client"], cluster=CLUSTER, timeout=timeout, connect_timeout=1.0)


async def eventually(attempt: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
    """The first result of `attempt` that does not raise KvError/OSError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except (KvError, OSError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


async def put(place: NodePlace, key: str, value: str, timeout: float = 3.0) -> None:
    async with client(place, timeout) as kv:
        await kv.put(key, value)


async def get(place: NodePlace, key: str) -> list[bytes]:
    async with client(place) as kv:
        return (await kv.get(key)).values


async def start_cluster(backend: LocalBackend, run_dir: Path) -> dict[str, NodePlace]:
    places = await backend.setup(NODES, run_dir)
    for name, place in places.items():
        await backend.start(name, kvnode_argv(place), {})
    for place in places.values():
        await wait_ready(place)
    return places


async def wait_ready(place: NodePlace) -> None:
    """Until the node answers, its failure detector calls every peer alive
    and it holds a connection to each (a node never heard from counts as
    dead, and one whose connect just failed is not retried for 0.1 s: a put
    right after start-up could be refused)."""

    async def all_alive() -> None:
        async with client(place, 1.0) as kv:
            status = await kv.status()
        members, peers = status["membership"], status["peers"]
        if any(members.get(n, {}).get("state") != "alive" for n in place.peers):
            raise KvError("peers not all alive yet")
        if not all(p["connected"] for p in peers.values()):
            raise KvError("not connected to every peer yet")

    await eventually(all_alive, timeout=20.0)


def refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_places_put_each_node_on_its_own_address_and_peers_behind_proxies(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend()
        try:
            places = await backend.setup(NODES, tmp_path)
            for i, (name, place) in enumerate(places.items()):
                host = f"{backend.network}.{11 + i}"
                assert list(place.listen) == ["client"] and place.host == host
                assert place.listen["client"].startswith(host + ":") and place.client == place.listen
                assert place.peers[name] == place.listen and place.advertise is None
                for other in NODES:
                    if other != name:
                        # the proxy for name->other listens on name's own address
                        assert place.peers[other]["client"].startswith(host + ":")
                        assert place.peers[other] != places[other].listen
                assert Path(place.data_dir) == tmp_path / "nodes" / name / "data"
                assert Path(place.log_dir).is_dir()
        finally:
            await backend.teardown()

    run(main())


def test_partition_kill_pause_and_teardown_on_a_kvnode_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend(seed=1)
        pids: list[int] = []
        try:
            places = await start_cluster(backend, tmp_path)
            p1, p2, p3 = (places[n] for n in NODES)
            pids += [pid for n in NODES if (pid := backend.pid(n)) is not None]
            await put(p1, "k", "v1")
            assert await get(p2, "k") == [b"v1"]

            # n1 isolated: with a strict quorum it cannot reach W=2; n2 and n3 still can.
            await backend.cut(ISOLATE_N1)
            with pytest.raises(KvError):
                await put(p1, "k", "during")
            await put(p2, "other", "v2")
            assert await get(p3, "other") == [b"v2"]
            await backend.heal_all()
            await eventually(lambda: put(p1, "k2", "after"))
            assert await get(p3, "k2") == [b"after"]

            # kill and restart
            await backend.kill("n3")
            assert not backend.running("n3") and backend.pid("n3") is None
            await put(p1, "k3", "n3-down")  # n1 + n2 make W=2
            await backend.start("n3", kvnode_argv(p3), {})
            pids.append(backend.pid("n3") or 0)
            await wait_ready(p3)
            assert await eventually(lambda: get(p3, "k3")) == [b"n3-down"]

            # pause and resume
            await backend.pause("n2")
            assert backend.running("n2")
            with pytest.raises(KvError):
                async with client(p2, timeout=0.5) as kv:
                    await kv.status()
            await backend.resume("n2")
            await wait_ready(p2)

            copied = await backend.collect_logs("n1", tmp_path / "collected" / "n1")
            assert {p.name for p in copied} >= {"stdout.log", "stderr.log", "backend.log", "kvnode.log"}
        finally:
            await backend.teardown()

        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        for place in places.values():
            assert refused(place.listen["client"])
            for peer, ports in place.peers.items():
                if peer != place.name:
                    assert refused(ports["client"])  # no proxy listens any more
        assert not list(tmp_path.glob("nodes/*/clock.faketime"))
        await backend.teardown()  # idempotent

    run(main(), timeout=60.0)


CLOCK_CHILD = """
import time
while True:
    print(time.time(), flush=True)
    time.sleep(0.02)
"""


@pytest.mark.skipif(find_libfaketime() is None, reason=f"no usable libfaketime: {libfaketime_missing_reason()}")
def test_set_clock_moves_a_running_nodes_wall_clock(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend()
        try:
            places = await backend.setup(["c1"], tmp_path)
            assert backend.capabilities().clock
            await backend.start("c1", [sys.executable, "-c", CLOCK_CHILD], {})
            stdout = Path(places["c1"].log_dir) / "stdout.log"

            async def skew_reaches(low: float, high: float) -> None:
                deadline = time.monotonic() + 10
                while True:
                    lines = stdout.read_text().splitlines() if stdout.exists() else []
                    # the last complete line, compared with our (true) clock
                    if len(lines) >= 2 and low <= float(lines[-2]) - time.time() <= high:
                        return
                    assert time.monotonic() < deadline, "the node's clock did not move"
                    await asyncio.sleep(0.02)

            await skew_reaches(-2, 2)
            await backend.set_clock("c1", 3600)
            await skew_reaches(3598, 3602)
            await backend.set_clock("c1", -60)
            await skew_reaches(-62, -58)
            await backend.heal_all()  # resets clocks
            await skew_reaches(-2, 2)
        finally:
            await backend.teardown()

    run(main())


def test_two_backends_never_share_an_address(tmp_path: Path) -> None:
    """Two runs at once: a port one run's killed node leaves free must not
    be where the other run's proxies or nodes listen."""
    async def main() -> None:
        a, b = LocalBackend(), LocalBackend()
        try:
            places_a = await a.setup(NODES, tmp_path / "a")
            places_b = await b.setup(NODES, tmp_path / "b")
            hosts_a = {p.host for p in places_a.values()}
            hosts_b = {p.host for p in places_b.values()}
            assert all(h.startswith("127.") for h in hosts_a | hosts_b)
            assert not hosts_a & hosts_b, (hosts_a, hosts_b)
        finally:
            await a.teardown()
            await b.teardown()

    run(main())
    with pytest.raises(ValueError, match=r"127\.A\.B"):
        LocalBackend(network="10.0.0")


def test_teardown_after_a_failed_setup_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.12", 0))
            taken.listen()
            port = taken.getsockname()[1]
            backend = LocalBackend(base_port=port, network="127.0.0")  # n2's port is taken
            with pytest.raises(OSError):
                await backend.setup(NODES, tmp_path)
        assert refused(f"127.0.0.11:{port}")
        assert not list(tmp_path.glob("nodes/*/clock.faketime"))
        await backend.teardown()
        with pytest.raises(ValueError):
            await backend.start("n1", ["true"], {})  # nothing is set up

    run(main())


HARNESS_THAT_DIES = """
import asyncio, sys
from pathlib import Path
from harness.backends.local import LocalBackend, _orphan_guard

async def main() -> None:
    backend = LocalBackend()
    await backend.setup(["s1"], Path(sys.argv[1]))
    await backend.start("s1", [sys.executable, "-c", "import time; time.sleep(60)"], {})
    print(backend.pid("s1"), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not _orphan_guard(), reason="needs util-linux's setpriv (--pdeathsig)")
def test_a_node_dies_with_a_harness_killed_by_sigkill(tmp_path: Path) -> None:
    harness = subprocess.Popen([sys.executable, "-c", HARNESS_THAT_DIES, str(tmp_path)],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    node = 0
    try:
        assert harness.stdout is not None
        node = int(harness.stdout.readline())
        assert _alive(node)
        harness.kill()  # no teardown, no atexit
        harness.wait()
        deadline = time.monotonic() + 5
        while _alive(node):
            assert time.monotonic() < deadline, "the node outlived its harness"
            time.sleep(0.01)
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
        if node and _alive(node):
            os.kill(node, signal.SIGKILL)  # the node this test started, should the guard fail


def test_clean_kills_only_the_nodes_a_crashed_run_left_behind(tmp_path: Path) -> None:
    from harness.backends.local import clean

    run = tmp_path / "store" / "t" / "20260101T000000"
    node_dir = run / "nodes" / "n1"
    (node_dir / "data").mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--data",
                               str(node_dir / "data")], start_new_session=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    other = run / "nodes" / "n2"
    other.mkdir(parents=True)
    try:
        (node_dir / "pid").write_text(f"{orphan.pid}\n")
        (other / "pid").write_text(f"{stranger.pid}\n")  # a pid reused by a process that is not ours
        done = clean(tmp_path / "store")
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert stranger.poll() is None, "clean killed a process that is not a node of ours"
        assert len(done) == 1 and str(orphan.pid) in done[0]
        assert not (node_dir / "pid").exists() and not (other / "pid").exists()
        assert clean(tmp_path / "store") == []
    finally:
        for p in (orphan, stranger):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_clean_leaves_a_run_whose_harness_still_runs_alone(tmp_path: Path) -> None:
    from harness.backends import owner
    from harness.backends.local import clean

    run = tmp_path / "store" / "t" / "20260101T000000"
    node_dir = run / "nodes" / "n1"
    (node_dir / "data").mkdir(parents=True)
    harness = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--data", str(node_dir / "data")],
                            start_new_session=True)
    try:
        (node_dir / "pid").write_text(f"{node.pid}\n{owner.token(harness.pid)}\n")
        done = clean(tmp_path / "store")
        assert node.poll() is None, "clean killed a node of a run whose harness is alive"
        assert done == [f"left run {run} alone: its harness (pid {harness.pid}) is still running"]
        assert (node_dir / "pid").exists()
        harness.kill()
        harness.wait()
        done = clean(tmp_path / "store")  # its harness died: now the node is a leftover
        assert node.wait(timeout=10) == -signal.SIGKILL
        assert len(done) == 1 and f"killed pid {node.pid}" in done[0]
    finally:
        for p in (harness, node):
            if p.poll() is None:
                p.kill()
                p.wait()


# -- what a system other than kvnode needs ------------------------------------------------



async def echoes(address: str, timeout: float = 1.0) -> bool:
    """Whether a connection to `address` echoes a ping within `timeout`."""
    host, port = address.rsplit(":", 1)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                writer.write(b"ping")
                return await reader.readexactly(4) == b"ping"
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


async def until_echoes(address: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await echoes(address):
        assert time.monotonic() < deadline, f"{address} never echoed"
        await asyncio.sleep(0.05)


def test_two_named_ports_get_a_proxy_per_link_and_port_and_a_partition_cuts_both(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend()
        try:
            places = await backend.setup(["a", "b"], tmp_path, ports=("client", "peer"))
            a, b = places["a"], places["b"]
            for place in places.values():
                assert list(place.listen) == ["client", "peer"] and place.client == place.listen
                assert place.listen["client"] != place.listen["peer"] and place.advertise is None
                assert {address.rsplit(":", 1)[0] for address in place.listen.values()} == {place.host}
                assert place.peers[place.name] == place.listen
                await backend.start(place.name, [sys.executable, "-c", ECHO_NODE, *place.listen.values()], {})
            # a proxy per link and port, each on the dialer's own address
            proxies = [a.peers["b"]["client"], a.peers["b"]["peer"], b.peers["a"]["client"], b.peers["a"]["peer"]]
            assert len(set(proxies)) == 4 and not set(proxies) & {*a.listen.values(), *b.listen.values()}
            assert all(p.startswith(a.host + ":") for p in a.peers["b"].values())
            assert all(p.startswith(b.host + ":") for p in b.peers["a"].values())
            assert set(backend._require_mesh().links) == {(x, y, p) for x, y in (("a", "b"), ("b", "a"))
                                                          for p in ("client", "peer")}
            for address in proxies:
                await until_echoes(address)

            await backend.cut({"b": frozenset({"a"})})  # b drops a's traffic, on every port
            for port in ("client", "peer"):
                assert not await echoes(a.peers["b"][port], timeout=0.3)
                assert not await echoes(b.peers["a"][port], timeout=0.3)  # no handshake either way
                assert await echoes(b.client[port])  # the harness's clients are never cut
            await backend.heal_all()
            for address in proxies:
                await until_echoes(address)
        finally:
            await backend.teardown()
        for place in places.values():
            assert all(refused(address) for address in place.listen.values())

    run(main())


async def until_exited(backend: LocalBackend, node: str, timeout: float = 10.0) -> Exited:
    deadline = time.monotonic() + timeout
    while (ended := await backend.exited(node)) is None:
        assert time.monotonic() < deadline, f"{node} did not end"
        await asyncio.sleep(0.02)
    return ended


def test_exited_says_how_a_process_ended_on_its_own(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend()
        try:
            await backend.setup(["e1", "e2"], tmp_path)
            assert await backend.exited("e1") is None  # never started
            await backend.start("e1", [sys.executable, "-c", "import sys; sys.exit(3)"], {})
            ended = await until_exited(backend, "e1")
            assert ended == Exited(3) and ended.describe() == "exited with status 3"
            assert not backend.running("e1")

            await backend.start("e2", [sys.executable, "-c", "import time; time.sleep(60)"], {})
            assert await backend.exited("e2") is None
            await backend.pause("e2")
            assert await backend.exited("e2") is None  # paused is running
            await backend.resume("e2")
            pid = backend.pid("e2")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # ended by something else than the backend (the OOM killer, say)
            ended = await until_exited(backend, "e2")
            assert ended == Exited(-signal.SIGKILL) and ended.describe() == "was killed by signal 9"

            await backend.start("e2", [sys.executable, "-c", "import time; time.sleep(60)"], {})
            await backend.kill("e2")
            assert await backend.exited("e2") is None  # the backend's own kill is no ending of its own
        finally:
            await backend.teardown()

    run(main())


def test_clock_blind_names_the_programs_libfaketime_cannot_skew(tmp_path: Path) -> None:
    async def main() -> None:
        backend = LocalBackend()
        try:
            await backend.setup(["n1"], tmp_path)
            assert await backend.clock_blind("n1", [sys.executable, "-m", "kvnode", "serve"]) is None
            if not Path("/usr/bin/etcd").is_file():
                pytest.skip("no /usr/bin/etcd (Debian: etcd-server) to check a Go program with")
            why = await backend.clock_blind("n1", ["etcd", "--name", "n1"])  # found on PATH
            assert why is not None and why.startswith("n1 runs /usr/bin/etcd, a Go program: "), why
            assert 'use the ssh backend with clock = "real"' in why
        finally:
            await backend.teardown()

    run(main())


def test_the_same_seed_replays_the_proxies_jitter_and_loss(tmp_path: Path) -> None:
    async def sampled(seed: int, run_dir: Path) -> list[float]:
        backend = LocalBackend.from_options(BackendOptions(seed=seed))
        try:
            await backend.setup(["a", "b", "c"], run_dir, ports=("client", "peer"))
            await backend.shape(["a"], PacketShape(delay_ms=20, jitter_ms=15, loss=0.3))
            links = backend._require_mesh().links
            return [links[key]._sample_delay(direction) for key in sorted(links)
                    for direction in ("forward", "backward") for _ in range(10)]
        finally:
            await backend.teardown()

    first = run(sampled(5, tmp_path / "first"))
    assert run(sampled(5, tmp_path / "again")) == first
    assert len(set(first)) > 10  # the delays did vary
    assert run(sampled(6, tmp_path / "other")) != first
    assert LocalBackend.from_options(BackendOptions()).seed is None
