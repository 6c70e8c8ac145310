"""The `local` backend end to end: real `kvnode serve` processes on
127.0.0.11-13 talking through the backend's proxies, and the faults the
nemesis will use on them: a partition (and its heal), kill and restart,
pause and resume, clock skew; then a teardown that leaves no process, no
listener and no control file."""

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

from harness.backends.base import NodePlace
from harness.backends.faketime import find_libfaketime, libfaketime_missing_reason
from harness.backends.local import LocalBackend, _orphan_guard
from kvnode.client import AsyncClient, KvError

pytestmark = pytest.mark.slow

T = TypeVar("T")
NODES = ["n1", "n2", "n3"]
CLUSTER = "backend-test"
ISOLATE_N1 = {"n1": frozenset({"n2", "n3"}), "n2": frozenset({"n1"}), "n3": frozenset({"n1"})}


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def kvnode_argv(place: NodePlace) -> list[str]:
    peers = ",".join(f"{name}={address}" for name, address in sorted(place.peers.items()))
    return [
        place.python, "-m", "kvnode", "serve", "--id", place.name, "--listen", place.listen,
        "--data", place.data_dir, "--peers", peers, "--cluster", CLUSTER,
        "--log", f"{place.log_dir}/kvnode.log", "--quorum", "strict", "--n", "3", "--w", "2",
        "--r", "2", "--request-timeout", "0.5", "--sync", "never", "--gossip-interval", "0.2",
    ]


def client(place: NodePlace, timeout: float = 3.0) -> AsyncClient:
    return AsyncClient(place.client, cluster=CLUSTER, timeout=timeout, connect_timeout=1.0)


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
                host = f"127.0.0.{11 + i}"
                assert place.listen.startswith(host + ":") and place.client == place.listen
                assert place.peers[name] == place.listen
                for other in NODES:
                    if other != name:
                        # the proxy for name->other listens on name's own address
                        assert place.peers[other].startswith(host + ":")
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
            assert refused(place.listen)
            for peer, address in place.peers.items():
                if peer != place.name:
                    assert refused(address)  # no proxy listens any more
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


def test_teardown_after_a_failed_setup_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.12", 0))
            taken.listen()
            port = taken.getsockname()[1]
            backend = LocalBackend(base_port=port)  # n2's port is taken
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
