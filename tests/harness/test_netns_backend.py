"""The `netns` backend for real (root only): kvnode processes in network
namespaces on the harness's bridge; a partition that the kernel enforces,
checked from inside the namespaces; a clock skew seen by the node's wall
clock only; kill and pause on the right pid; netem delay where the kernel has
netem; a teardown, and a `clean()` after a crash, that leave nothing of ours;
and DESIGN.md's verdict matrix run on this backend."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.backends import netns
from harness.backends.base import BackendOptions, Exited, NodePlace, PacketShape
from harness.backends.faketime import find_libfaketime, libfaketime_missing_reason
from harness.backends.netns import NetnsBackend, NetnsError, clean, netem_missing_reason
from harness.backends.probe import netns_problem
from kvnode.client import AsyncClient, KvError
from tests.harness.nodes import ECHO_NODE
from tests.harness.nodes import kvnode_argv as node_argv
from tests.harness.project_matrix import FAST


def _unusable() -> str:
    """Why this machine cannot run these tests ("" if it can): tried, not
    judged by being root."""
    if shutil.which("tc") is None:
        return "tc is not installed (Debian: apt install iproute2)"
    return netns_problem()


UNUSABLE = _unusable()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(bool(UNUSABLE), reason=UNUSABLE)]

T = TypeVar("T")
NODES = ["n1", "n2", "n3"]
SETTINGS = {"n": 3, "w": 2, "r": 2, "quorum": "strict", **FAST}
CLUSTER = "netns-backend-test"


def arun(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# -- what exists on the machine -------------------------------------------------


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {entry["name"] for entry in json.loads(out or "[]")}


def our_namespaces() -> set[str]:
    """Namespaces named like the netns backend's (other tests on this
    machine may be making namespaces of their own meanwhile)."""
    return {ns for ns in namespaces() if netns.NAMESPACE_RE.match(ns)}


def links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {entry["ifname"] for entry in json.loads(out or "[]")}


def forward_rules() -> list[str]:
    out = subprocess.run(["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def alive(pid: int) -> bool:
    """The process exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def assert_nothing_left(run_id: str, pids: list[int], state_dir: Path = netns.STATE_DIR) -> None:
    """No namespace, link, FORWARD rule, state file or process of run `run_id`."""
    assert not [ns for ns in namespaces() if ns.startswith(f"hx{run_id}-")]
    assert not [link for link in links() if run_id in link]
    assert not [rule for rule in forward_rules() if run_id in rule]
    assert not (state_dir / f"{run_id}.json").exists()
    assert not [pid for pid in pids if alive(pid)]


# -- inside a namespace ------------------------------------------------------------------


def in_ns(namespace: str, code: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run Python code in a namespace (as its own process, not through the backend)."""
    return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, check=False)


def connects(namespace: str, address: str) -> bool:
    """Whether a TCP connection from inside `namespace` to host:port opens in 1 s."""
    host, port = address.rsplit(":", 1)
    done = in_ns(namespace, f"""
        import socket
        try:
            socket.create_connection(({host!r}, {port}), timeout=1.0).close()
        except OSError:
            raise SystemExit(1)
    """)
    return done.returncode == 0


async def status(place: NodePlace, timeout: float = 2.0) -> dict[str, Any]:
    """The node's status, asked from the root namespace (the harness's side)."""
    async with AsyncClient(place.client["client"], cluster=CLUSTER, timeout=timeout, connect_timeout=timeout) as kv:
        return await kv.status()


async def answers(place: NodePlace, timeout: float = 1.0) -> bool:
    try:
        await status(place, timeout)
    except (KvError, OSError, TimeoutError):
        return False
    return True


async def eventually(check: Callable[[], Coroutine[Any, Any, bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def kvnode_argv(place: NodePlace) -> list[str]:
    return node_argv(place, CLUSTER, SETTINGS)



async def start_kvnodes(backend: NetnsBackend, run_dir: Path) -> dict[str, NodePlace]:
    """Three kvnode nodes through the backend, each ready (answering status)."""
    places = await backend.setup(NODES, run_dir)
    for name, place in places.items():
        await backend.start(name, kvnode_argv(place), {})
    for place in places.values():
        await eventually(functools.partial(answers, place))
    return places


def ns_inode(namespace: str) -> int:
    return os.stat(f"/run/netns/{namespace}").st_ino


def process_ns_inode(pid: int) -> int:
    link = os.readlink(f"/proc/{pid}/ns/net")  # "net:[4026532179]"
    return int(re.fullmatch(r"net:\[(\d+)\]", link).group(1))  # type: ignore[union-attr]


def proc_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


def free_subnet(avoid: frozenset[str] = frozenset()) -> str:
    """A /24 in 10.77.201-254 that no address or route here covers now. Not
    the default subnet, nor a fixed one: a `harness run`, or another
    backend's tests, may be using some of them on this machine meanwhile."""
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    used = [ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False)
            for link in json.loads(out or "[]") for a in link.get("addr_info", [])]
    out = subprocess.run(["ip", "-j", "-4", "route", "show"], capture_output=True, text=True, check=True).stdout
    used += [ipaddress.IPv4Network(r["dst"], strict=False) for r in json.loads(out or "[]") if r["dst"] != "default"]
    for third in range(201, 255):
        candidate = ipaddress.IPv4Network(f"10.77.{third}.0/24")
        if str(candidate) not in avoid and not any(candidate.overlaps(net) for net in used):
            return str(candidate)
    raise RuntimeError("no free /24 in 10.77.201.0-10.77.254.0")


@pytest.fixture
def subnet() -> str:
    return free_subnet()


# -- places ------------------------------------------------------------------------------------


def test_setup_makes_a_namespace_per_node_on_one_bridge_and_teardown_removes_all(run_dir: Path,
                                                                                  subnet: str) -> None:
    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        try:
            places = await backend.setup(NODES, run_dir)
            run_id = backend.run_id
            assert re.fullmatch(r"[0-9a-f]{6}", run_id)
            assert backend.bridge == f"hxbr{run_id}" and backend.bridge in links()
            for i, name in enumerate(NODES):
                place = places[name]
                first = ipaddress.IPv4Network(subnet).network_address
                address = f"{first + 2 + i}:7000"
                assert place.listen == place.client == place.advertise == {"client": address}
                assert place.peers == {m: {"client": f"{first + 2 + j}:7000"} for j, m in enumerate(NODES)}
                assert backend.namespace(name) == f"hx{run_id}-{name}" and backend.namespace(name) in namespaces()
                assert len(backend.veth(name)) <= 15 and backend.veth(name) in links()
                assert Path(place.data_dir).is_dir() and Path(place.log_dir).is_dir()
                assert (run_dir / "nodes" / name / "clock.faketime").exists() == (find_libfaketime() is not None)
            assert [r for r in forward_rules() if backend.bridge in r and "ACCEPT" in r]
            state = json.loads((netns.STATE_DIR / f"{run_id}.json").read_text())
            assert state["owner"]["pid"] == os.getpid() and state["bridge"] == backend.bridge
            # The subnet is taken now: a second run on it is refused and leaves nothing.
            other = NetnsBackend(subnet=subnet)
            with pytest.raises(NetnsError, match="overlaps"):
                await other.setup(["x1"], run_dir / "other")
            assert_nothing_left(other.run_id, [])
        finally:
            await backend.teardown()
        assert_nothing_left(run_id, [])
        assert not list(run_dir.glob("nodes/*/clock.faketime"))
        await backend.teardown()  # idempotent
        await backend.heal_all()  # and nothing to heal

    arun(main())


def test_a_setup_that_fails_midway_leaves_nothing(run_dir: Path, subnet: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = NetnsBackend._make_namespace

    async def fail_on_the_second(self: NetnsBackend, node: str) -> None:
        if made:
            raise NetnsError("injected failure")
        await real(self, node)
        made.append(node)

    monkeypatch.setattr(NetnsBackend, "_make_namespace", fail_on_the_second)

    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        with pytest.raises(NetnsError, match="injected"):
            await backend.setup(NODES, run_dir)
        assert made == ["n1"]
        assert_nothing_left(backend.run_id, [])

    arun(main())


# -- faults on kvnode nodes ----------------------------------------------------------------------


def test_a_partition_drops_packets_in_the_kernel_and_heal_restores_them(run_dir: Path, subnet: str) -> None:
    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        try:
            places = await start_kvnodes(backend, run_dir)
            ns1, ns3 = backend.namespace("n1"), backend.namespace("n3")
            p1, p2, p3 = (places[n] for n in NODES)
            assert await asyncio.to_thread(connects, ns1, p2.listen["client"])

            await backend.cut({"n2": frozenset({"n1"}), "n1": frozenset(), "n3": frozenset()})
            # n2 drops n1's packets: n1 cannot open a connection to n2 (its
            # SYN is dropped) ...
            assert not await asyncio.to_thread(connects, ns1, p2.listen["client"])
            # ... nor n2 to n1 (n1's SYN-ACK is dropped): a one-way cut stops TCP both ways.
            assert not await asyncio.to_thread(connects, backend.namespace("n2"), p1.listen["client"])
            # Every other link, and the harness's own connections, still work.
            assert await asyncio.to_thread(connects, ns1, p3.listen["client"])
            assert await asyncio.to_thread(connects, ns3, p2.listen["client"])
            for place in places.values():
                assert await answers(place)
            rules = subprocess.run(["ip", "netns", "exec", backend.namespace("n2"), "iptables", "-S", "HARNESS"],
                                   capture_output=True, text=True, check=True).stdout
            assert f"-A HARNESS -s {p1.host}/32 -j DROP" in rules
            assert "drops packets from n1" in (Path(p2.log_dir) / "backend.log").read_text()

            await backend.cut({})
            assert await asyncio.to_thread(connects, ns1, p2.listen["client"])

            # n1 isolated: the others' failure detectors see it go (gossip
            # through n3 no longer carries its heartbeats), and come back.
            await backend.cut({"n1": frozenset({"n2", "n3"}), "n2": frozenset({"n1"}), "n3": frozenset({"n1"})})
            assert not await asyncio.to_thread(connects, ns3, p1.listen["client"])
            await eventually(lambda: _member_state(p2, "n1", "alive", negate=True))
            assert await answers(p1)  # the harness still reaches the isolated node
            await backend.heal_all()
            assert await asyncio.to_thread(connects, ns3, p1.listen["client"])
            await eventually(lambda: _member_state(p2, "n1", "alive"))
        finally:
            await backend.teardown()

    arun(main(), timeout=90.0)


async def _async(value: bool) -> bool:
    return value


async def _member_state(place: NodePlace, peer: str, state: str, negate: bool = False) -> bool:
    try:
        seen = (await status(place))["membership"].get(peer, {}).get("state")
    except (KvError, OSError, TimeoutError):
        return False
    return (seen != state) if negate else (seen == state)


def test_kill_and_pause_act_on_the_right_process(run_dir: Path, subnet: str) -> None:
    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        pids: list[int] = []
        try:
            places = await start_kvnodes(backend, run_dir)
            for name in NODES:
                pid = backend.pid(name)
                assert pid is not None
                pids.append(pid)
                # `ip netns exec` execs the node: the pid is kvnode's own, it
                # leads its process group, and it lives in the node's namespace.
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                assert b"kvnode" in cmdline and cmdline[cmdline.index(b"--id") + 1] == name.encode()
                assert os.getpgid(pid) == pid
                assert process_ns_inode(pid) == ns_inode(backend.namespace(name))
            pid1, pid2, pid3 = pids

            await backend.pause("n2")
            # A signal lands when the kernel next schedules the process: wait for it.
            await eventually(lambda: _async(proc_state(pid2) == "T"), timeout=5)
            assert backend.running("n2")
            assert proc_state(pid1) != "T" and proc_state(pid3) != "T"
            assert not await answers(places["n2"], timeout=0.5)
            assert await answers(places["n1"])
            await backend.resume("n2")
            await eventually(lambda: answers(places["n2"]))

            await backend.kill("n3")
            assert not alive(pid3) and not backend.running("n3") and backend.pid("n3") is None
            assert alive(pid1) and alive(pid2)
            assert await answers(places["n1"]) and not await answers(places["n3"])
            await backend.kill("n3")  # no-op
            await backend.start("n3", kvnode_argv(places["n3"]), {})
            new3 = backend.pid("n3")
            assert new3 is not None and new3 != pid3
            pids.append(new3)
            await eventually(lambda: answers(places["n3"]))
            log = (Path(places["n3"].log_dir) / "backend.log").read_text()
            assert f"kill pid={pid3}" in log and f"start pid={new3}" in log

            copied = await backend.collect_logs("n1", run_dir / "collected")
            assert {p.name for p in copied} >= {"stdout.log", "stderr.log", "backend.log", "kvnode.log"}
        finally:
            await backend.teardown()
        assert_nothing_left(backend.run_id, pids)

    arun(main(), timeout=90.0)


CLOCK_CHILD = """
import time
while True:
    print(time.time(), time.monotonic(), flush=True)
    time.sleep(0.02)
"""


@pytest.mark.skipif(find_libfaketime() is None, reason=f"no usable libfaketime: {libfaketime_missing_reason()}")
def test_a_clock_bump_moves_the_wall_clock_and_not_the_monotonic_clock(run_dir: Path, subnet: str) -> None:
    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        try:
            places = await backend.setup(["c1"], run_dir)
            assert backend.capabilities().clock
            await backend.start("c1", [sys.executable, "-c", CLOCK_CHILD], {})
            stdout = Path(places["c1"].log_dir) / "stdout.log"

            async def skew_reaches(low: float, high: float) -> None:
                deadline = time.monotonic() + 10
                while True:
                    lines = stdout.read_text().splitlines() if stdout.exists() else []
                    if len(lines) >= 2:
                        # the last complete line, against our own (true) clocks
                        wall, mono = (float(x) for x in lines[-2].split())
                        assert abs(mono - time.monotonic()) < 2, "the node's monotonic clock moved"
                        if low <= wall - time.time() <= high:
                            return
                    assert time.monotonic() < deadline, "the node's wall clock did not move"
                    await asyncio.sleep(0.02)

            await skew_reaches(-2, 2)
            # It prints, so `ip netns exec` has moved it into its namespace by now.
            pid = backend.pid("c1")
            assert pid is not None and process_ns_inode(pid) == ns_inode(backend.namespace("c1"))
            await backend.set_clock("c1", 3600)
            await skew_reaches(3598, 3602)
            await backend.set_clock("c1", -60)
            await skew_reaches(-62, -58)
            await backend.heal_all()  # resets clocks
            await skew_reaches(-2, 2)
        finally:
            await backend.teardown()

    arun(main())


ECHO_SERVER = """
import socket
server = socket.create_server(({host!r}, 7000))
while True:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(100):
            conn.sendall(data)
"""

ECHO_CLIENT = """
import socket, time
with socket.create_connection(({host!r}, 7000), timeout=5) as s:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    best = 1e9
    for _ in range(5):
        started = time.monotonic()
        s.sendall(b"x")
        s.recv(1)
        best = min(best, time.monotonic() - started)
print(best)
"""


@pytest.mark.skipif(bool(netem_missing_reason()), reason=netem_missing_reason() or "-")
def test_a_packet_delay_is_measurable(run_dir: Path, subnet: str) -> None:
    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        try:
            places = await backend.setup(["e1", "e2"], run_dir)
            assert backend.capabilities().packet
            host = places["e2"].host
            await backend.start("e2", [sys.executable, "-c", ECHO_SERVER.format(host=host)], {})
            ns1 = backend.namespace("e1")

            async def round_trip() -> float:
                await eventually(lambda: asyncio.to_thread(connects, ns1, places["e2"].listen["client"]))
                done = await asyncio.to_thread(in_ns, ns1, ECHO_CLIENT.format(host=host))
                assert done.returncode == 0, done.stderr
                return float(done.stdout)

            before = await round_trip()
            # e2 shaped: what it receives and what it sends are each 100 ms late.
            await backend.shape(["e2"], PacketShape(delay_ms=100))
            delayed = await round_trip()
            assert 0.18 <= delayed - before <= 0.4, (before, delayed)
            await backend.shape(["e2"], PacketShape())
            assert await round_trip() < before + 0.05
        finally:
            await backend.teardown()

    arun(main())


def test_without_netem_packet_faults_say_why(run_dir: Path, subnet: str) -> None:
    if not netem_missing_reason():
        pytest.skip("this kernel has netem")

    async def main() -> None:
        backend = NetnsBackend(subnet=subnet)
        try:
            await backend.setup(["e1"], run_dir)
            caps = backend.capabilities()
            assert not caps.packet and "netem" in caps.packet_reason
            with pytest.raises(NetnsError, match="netem"):
                await backend.shape(["e1"], PacketShape(delay_ms=100))
            await backend.shape(["e1"], PacketShape())  # clearing works regardless
        finally:
            await backend.teardown()

    arun(main())


# -- what a system other than kvnode needs -------------------------------------------------------



def test_two_named_ports_a_partition_that_cuts_both_and_an_exit_status(run_dir: Path, subnet: str) -> None:
    async def main() -> None:
        backend = NetnsBackend.from_options(BackendOptions(subnet=subnet))
        try:
            places = await backend.setup(["p1", "p2"], run_dir, ports=("client", "peer"))
            first = ipaddress.IPv4Network(subnet).network_address
            for i, place in enumerate(places.values()):
                host = str(first + 2 + i)
                assert place.host == host
                assert place.listen == place.client == place.advertise == {"client": f"{host}:7000",
                                                                           "peer": f"{host}:7001"}
                assert place.peers == {m: places[m].listen for m in places}
            p2 = places["p2"]
            await backend.start("p2", [sys.executable, "-c", ECHO_NODE, *p2.listen.values()], {})
            ns1 = backend.namespace("p1")
            for address in p2.listen.values():
                await eventually(lambda address=address: asyncio.to_thread(connects, ns1, address))
            await backend.cut({"p2": frozenset({"p1"})})
            for address in p2.listen.values():
                assert not await asyncio.to_thread(connects, ns1, address)
            await backend.heal_all()
            for address in p2.listen.values():
                assert await asyncio.to_thread(connects, ns1, address)

            assert await backend.exited("p1") is None  # never started
            await backend.start("p1", [sys.executable, "-c", "import sys; sys.exit(3)"], {})

            async def ended() -> bool:
                return await backend.exited("p1") is not None

            await eventually(ended, timeout=10)
            assert await backend.exited("p1") == Exited(3)
            assert await backend.exited("p2") is None
            await backend.kill("p2")
            assert await backend.exited("p2") is None  # ended by the backend: nothing to report

            assert await backend.clock_blind("p1", [sys.executable, "-c", "pass"]) is None
            if Path("/usr/bin/etcd").is_file():
                why = await backend.clock_blind("p1", ["etcd"])
                assert why is not None and why.startswith("p1 runs /usr/bin/etcd, a Go program: "), why
        finally:
            await backend.teardown()
        assert_nothing_left(backend.run_id, [])

    arun(main())


def test_from_options_takes_the_subnet() -> None:
    assert str(NetnsBackend.from_options(BackendOptions(subnet="10.77.9.0/24")).network) == "10.77.9.0/24"
    with pytest.raises(ValueError, match=r"--subnet 10\.77\.9\.0/33"):
        NetnsBackend.from_options(BackendOptions(subnet="10.77.9.0/33"))


# -- clean ------------------------------------------------------------------------------------


CRASHING_RUN = """
import asyncio, json, os, sys
from pathlib import Path
from harness.backends.netns import NetnsBackend

async def main():
    backend = NetnsBackend(subnet={subnet!r})
    await backend.setup(["n1", "n2"], Path({run_dir!r}))
    for node in ("n1", "n2"):
        await backend.start(node, [sys.executable, "-c", "import time; time.sleep(600)"], {{}})
    print(json.dumps({{"id": backend.run_id, "pids": [backend.pid("n1"), backend.pid("n2")]}}), flush=True)
    os._exit(0)  # a crash: no teardown, no atexit

asyncio.run(main())
"""


def test_clean_removes_what_a_crashed_run_left_and_nothing_else(run_dir: Path, subnet: str) -> None:
    done = subprocess.run([sys.executable, "-c", CRASHING_RUN.format(subnet=subnet, run_dir=str(run_dir))],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    crashed = json.loads(done.stdout)
    run_id, pids = crashed["id"], crashed["pids"]
    assert {f"hx{run_id}-n1", f"hx{run_id}-n2"} <= namespaces()
    assert f"hxbr{run_id}" in links() and [r for r in forward_rules() if run_id in r]
    assert all(alive(pid) for pid in pids)

    # Leftovers with no state file, recognisable by their names alone.
    orphan = "0ddba1" if run_id != "0ddba1" else "0ddba2"
    made = [["ip", "netns", "add", f"hx{orphan}-n1"], ["ip", "link", "add", f"hxbr{orphan}", "type", "bridge"],
            ["iptables", "-w", "-I", "FORWARD", "-i", f"hxbr{orphan}", "-o", f"hxbr{orphan}", "-j", "ACCEPT"]]
    # And what is not ours: a namespace outside our pattern, and a live run.
    decoy = f"hxdecoy-{os.getpid()}"
    made.append(["ip", "netns", "add", decoy])
    live = NetnsBackend(subnet=free_subnet(avoid=frozenset({subnet})))
    try:
        for argv in made:
            subprocess.run(argv, check=True)

        async def start_live() -> None:
            await live.setup(["l1"], run_dir / "live")
            await live.start("l1", [sys.executable, "-c", "import time; time.sleep(600)"], {})

        arun(start_live())
        live_pid = live.pid("l1")
        assert live_pid is not None

        lines = clean()
        text = "\n".join(lines)
        for pid in pids:
            assert f"killed process {pid}" in text
        for gone in (f"hx{run_id}-n1", f"hx{run_id}-n2", f"hxbr{run_id}", f"hx{orphan}-n1", f"hxbr{orphan}"):
            assert gone in text
        assert_nothing_left(run_id, pids)
        assert_nothing_left(orphan, [])
        assert not list(run_dir.glob("nodes/*/clock.faketime"))
        # Untouched: the decoy, and the run whose owner (this process) lives.
        assert decoy in namespaces()
        assert live.namespace("l1") in namespaces() and live.bridge in links() and alive(live_pid)
        assert [r for r in forward_rules() if live.run_id in r]
        assert live.run_id not in text
        assert clean() == []  # nothing more to do
    finally:
        arun(live.teardown())
        subprocess.run(["ip", "netns", "del", decoy], check=False)
        clean()
    assert_nothing_left(live.run_id, [])
