"""The `ssh` backend, without VMs: three "hosts" that are network namespaces
on a bridge of the test's own, each with its own sshd set up by
`scripts/provision-node --sshd-dir` (`sshd_util`), and host-key checking on.

The nodes file parser and the command builder need nothing and always run.
The rest (marked `ssh`) needs root, `/usr/sbin/sshd` and `ip netns`, and
skips saying which is missing: host keys refused and accepted, arguments
that arrive intact, a 3-node kvnode cluster with every fault checked from
inside the hosts, `clean` after a crash, and a whole `harness run --backend
ssh` with partitions.

The first setup installs the node into a venv on each host (tens of
seconds); the later ones find the same wheelhouse installed and skip it.
"""

from __future__ import annotations

import asyncio
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.backends import commands, wheels
from harness.backends.base import Exited, NodePlace, PacketShape
from harness.backends.nodes_file import DEFAULT_WORKDIR, NodesFileError, load, parse
from harness.backends.ssh import (
    HostKeyError,
    SshBackend,
    SshError,
    clean,
    remote_command,
    wheels_misfit,
)
from harness.history import read_jsonl
from harness.runner import ConfigError, RunConfig, make_backend, run
from kvnode.client import AsyncClient, KvError
from tests.harness import sshd_util
from tests.harness.nodes import ECHO_NODE
from tests.harness.nodes import kvnode_argv as node_argv
from tests.harness.sshd_util import SshHost, SshHosts

T = TypeVar("T")
SETTINGS = {"quorum": "strict", "n": 3, "w": 2, "r": 2, "request_timeout": 0.5, "gossip_interval": 0.2}
CLUSTER = "ssh-backend-test"
# As in test_run_matrix: fast failure detection and repair for short runs.
FAST = {"gossip_interval": 0.2, "suspect_after": 1.0, "dead_after": 2.0, "ae_interval": 2.0,
        "handoff_interval": 0.3, "request_timeout": 1.0}
NASTY = "a b  'single' \"double\" $HOME ${PATH} `id` $(id) ; echo no & | > < * ? ~ \\ \n\ttab é"

_WHY_NOT = sshd_util.unavailable()
needs_hosts = [pytest.mark.ssh, pytest.mark.skipif(_WHY_NOT is not None, reason=f"ssh test hosts: {_WHY_NOT}")]


def arun(coro: Coroutine[Any, Any, T], timeout: float = 240.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


# --------------------------------------------------------------------------- the nodes file


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "id_test").write_text("not a real key, only needs to exist\n")
    path = tmp_path / "nodes.toml"
    path.write_text(text)
    return path


def test_a_nodes_file_with_defaults_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, """
        [defaults]
        user = "vagrant"
        key = "id_test"
        sudo = true

        [[node]]
        host = "192.168.56.101"

        [[node]]
        name = "db2"
        host = "192.168.56.102"
        port = 2222
        sudo = false
        workdir = "/srv/harness"
        node_port = 7100
        python = "/usr/bin/python3.11"
    """)
    nodes = load(path)
    first, second = nodes.hosts
    assert nodes.names() == ["n1", "db2"]
    assert (first.host, first.port, first.user, first.sudo, first.node_port) == ("192.168.56.101", 22, "vagrant",
                                                                                 True, 7000)
    assert first.key == tmp_path / "id_test" and first.workdir == DEFAULT_WORKDIR and first.python == "python3"
    assert (second.port, second.sudo, second.workdir, second.node_port, second.python) == (
        2222, False, "/srv/harness", 7100, "/usr/bin/python3.11")
    assert nodes.known_hosts == ()


@pytest.mark.parametrize(("text", "message"), [
    ("[[node]]\nport = 22\n", "node 1: `host` is missing"),
    ('[[node]]\nhost = "h"\nhots = "x"\n', "unknown field(s) hots"),
    ('[[node]]\nhost = "h"\nport = "22"\n', "`port` must be an integer 1..65535, not '22'"),
    ('[[node]]\nhost = "h"\nport = 0\n', "`port` must be an integer 1..65535, not 0"),
    ('[[node]]\nhost = "h"\nnode_port = true\n', "`node_port` must be an integer"),
    ('[[node]]\nhost = "h"\nsudo = "yes"\n', "`sudo` must be true or false, not 'yes'"),
    ('[[node]]\nhost = "h"\nkey = "missing_key"\n', "missing_key, which does not exist"),
    ('[[node]]\nhost = "h"\nworkdir = "relative/dir"\n', "`workdir` must be an absolute path or start with ~/"),
    ('[[node]]\nhost = "h"\nworkdir = "/"\n', "`workdir` must be a directory of the harness's own"),
    ('[[node]]\nhost = "h"\nname = "n 1"\n', "`name` must be letters, digits"),
    ('[[node]]\nhost = "-oProxyCommand=x"\n', "`host` is not a host name or address"),
    ('[[node]]\nhost = ""\n', "`host` must be a non-empty string"),
    ('[[node]]\nhost = "a"\nname = "x"\n[[node]]\nhost = "b"\nname = "x"\n', "`name` 'x' is also node 1's"),
    ('[[node]]\nhost = "10.0.0.1"\n[[node]]\nhost = "10.0.0.1"\n', "are also n1's"),
    ('[[node]]\nhost = "h"\nnode_port = 1\n[[node]]\nhost = "h"\nnode_port = 2\n', "nodes on one host need their own"),
    ("", "no hosts"),
    ("node = 3\n", "`node` must be an array of tables"),
    ('[[nodes]]\nhost = "h"\n', "unknown top-level field(s) nodes"),
    ('[defaults]\nhost = "h"\n[[node]]\nhost = "h"\n', "cannot be defaults"),
    ('[defaults]\nusr = "x"\n[[node]]\nhost = "h"\n', "[defaults]: unknown field(s) usr"),
    ('known_hosts = "nope"\n[[node]]\nhost = "h"\n', "known_hosts: "),
    ("[[node]\n", "not valid TOML"),
])
def test_nodes_file_errors_name_the_file_and_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(NodesFileError) as e:
        load(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_a_missing_nodes_file_is_a_bad_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the nodes file"):
        make_backend(RunConfig(backend="ssh", nodes_file=str(tmp_path / "absent.toml")))
    bad = _write(tmp_path, '[[node]]\nhost = "h"\nport = -1\n')
    with pytest.raises(ConfigError, match="`port` must be"):
        make_backend(RunConfig(backend="ssh", nodes_file=str(bad)))


def test_node_names_and_asking_for_more_nodes_than_the_file_has(tmp_path: Path) -> None:
    nodes = parse('[[node]]\nhost = "10.0.0.1"\n[[node]]\nhost = "10.0.0.2"\nname = "b"\n', tmp_path / "x.toml")
    backend = SshBackend(nodes)
    assert backend.node_names() == ["n1", "b"]
    with pytest.raises(ValueError, match=r"3 nodes asked for, but .* has only 2 \(n1, b\)"):
        arun(backend.setup(["n1", "b", "n3"], tmp_path / "run"))


def test_nodes_on_one_host_need_port_ranges_of_their_own(tmp_path: Path) -> None:
    text = '[[node]]\nhost = "10.0.0.1"\n[[node]]\nhost = "10.0.0.1"\nnode_port = 7001\nworkdir = "/srv/b"\n'
    backend = SshBackend(parse(text, tmp_path / "x.toml"))
    backend._check_port_ranges(["n1", "n2"], 1)  # one port each: 7000 and 7001
    with pytest.raises(ValueError, match=r"n2 and n1 on 10.0.0.1 would both listen on port 7001"):
        arun(backend.setup(["n1", "n2"], tmp_path / "run", ports=("client", "peer")))
    with pytest.raises(ValueError, match="leaves no room for 2 ports"):
        SshBackend(parse('[[node]]\nhost = "h"\nnode_port = 65535\n', tmp_path / "y.toml"))._check_port_ranges(
            ["n1"], 2)


def test_remote_commands_are_argument_lists_quoted_word_by_word() -> None:
    argv = remote_command(["printf", "%s", NASTY])
    assert shlex.split(commands.shell_line(argv)) == ["printf", "%s", NASTY]
    argv = remote_command(["iptables", "-w", "-F", "HARNESS"], sudo=True)
    assert argv == ["sudo", "-n", "iptables", "-w", "-F", "HARNESS"]
    argv = remote_command(["python3", "-c", "x"], env={"A": "1 2", "B": "$x"}, sudo=True)
    assert shlex.split(commands.shell_line(argv)) == ["sudo", "-n", "env", "A=1 2", "B=$x", "python3", "-c", "x"]
    with pytest.raises(ValueError, match="not an environment variable name"):
        remote_command(["true"], env={"A;rm -rf /": "x"})
    with pytest.raises(ValueError, match="cannot follow env"):
        remote_command(["A=b", "x"], env={"C": "d"})


def test_wheels_built_for_another_python_or_platform_are_named(tmp_path: Path) -> None:
    for name in ("dynamo_harness-0.1.0-py3-none-any.whl", "mmh3-5.3.1-cp311-cp311-manylinux1_x86_64.whl",
                 "msgpack-1.2.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
                 "x-1.0-cp38-abi3-manylinux_2_17_x86_64.whl"):
        (tmp_path / name).write_bytes(b"")
    assert wheels_misfit(tmp_path, "cpython", "311", "Linux", "x86_64") == []
    assert wheels_misfit(tmp_path, "cpython", "312", "Linux", "x86_64") == [
        "mmh3-5.3.1-cp311-cp311-manylinux1_x86_64.whl",
        "msgpack-1.2.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"]
    assert len(wheels_misfit(tmp_path, "cpython", "311", "Linux", "aarch64")) == 3
    assert len(wheels_misfit(tmp_path, "cpython", "311", "Darwin", "x86_64")) == 3


# --------------------------------------------------------------------------- SSH test hosts


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshHosts]:
    with sshd_util.ssh_test_hosts(3, tmp_path_factory.mktemp("ssh-hosts")) as made:
        yield made


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """One wheelhouse for the whole module, so that the hosts install it
    once even if the sources change while the tests run."""
    return wheels.wheelhouse()


def backend_for(nodes_file: Path, wheelhouse: Path, **kwargs: Any) -> SshBackend:
    return SshBackend(load(nodes_file), wheelhouse=wheelhouse, **kwargs)


def kvnode_argv(place: NodePlace) -> list[str]:
    return node_argv(place, CLUSTER, {**SETTINGS, "suspect_after": 1.0, "dead_after": 2.0})



def client(place: NodePlace, timeout: float = 3.0) -> AsyncClient:
    return AsyncClient(place.client["client"], cluster=CLUSTER, timeout=timeout, connect_timeout=1.0)


async def eventually(attempt: Callable[[], Coroutine[Any, Any, T]], timeout: float = 15.0) -> T:
    """The first result of `attempt` that does not raise (KvError, OSError, AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except (KvError, OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def wait_ready(place: NodePlace) -> None:
    """Until the node answers and calls every peer alive and connected."""

    async def all_alive() -> None:
        async with client(place, 1.0) as kv:
            status = await kv.status()
        if any(status["membership"].get(n, {}).get("state") != "alive" for n in place.peers):
            raise KvError("peers not all alive yet")
        if not all(p["connected"] for p in status["peers"].values()):
            raise KvError("not connected to every peer yet")

    await eventually(all_alive, timeout=30.0)


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except OSError as e:
    print(type(e).__name__)
"""


async def reach(backend: SshBackend, source: str, target: NodePlace, timeout: float = 1.5,
                port: str = "client") -> str:
    """From inside `source`'s host to `target`'s `port`: "connected", or why
    not (TimeoutError ...)."""
    host, port = target.listen[port].rsplit(":", 1)
    got = await backend.run(source, ["python3", "-c", CONNECT, host, port, str(timeout)])
    assert got.ok, got
    return got.text().strip()


def proc_state(pid: int) -> str:
    """The process's state letter ("" if gone). The namespaces share this
    machine's /proc; this machine's init may not reap orphans, so a killed
    node can linger as a zombie ("Z"), which is gone for our purposes."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def gone(pid: int) -> bool:
    return proc_state(pid) in ("", "Z", "X")


def known_hosts_with(tmp: Path, lines: list[str]) -> Path:
    path = tmp / "known_hosts.test"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _mark(fn: Callable[..., None]) -> Callable[..., None]:
    """`ssh`, and skip with the reason when the test hosts cannot be made."""
    for mark in needs_hosts:
        fn = mark(fn)
    return fn


@_mark
def test_host_keys_are_checked(hosts: SshHosts, tmp_path: Path) -> None:
    h1 = hosts.hosts[0]
    other = tmp_path / "other_key"
    sshd_util._sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    wrong_line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    wrong = hosts.nodes_toml(tmp_path / "wrong.toml", hosts=[h1],
                             known_hosts=known_hosts_with(tmp_path, [f"{h1.address} {wrong_line}"]))
    # Refused by default, before anything happens on the host.
    with pytest.raises(HostKeyError, match="host key mismatch") as e:
        arun(SshBackend.from_file(wrong).setup(["h1"], tmp_path / "run"))
    assert "SHA256:" in str(e.value) and h1.address in str(e.value)
    # An unknown host is refused too.
    empty = hosts.nodes_toml(tmp_path / "unknown.toml", hosts=[h1], known_hosts=known_hosts_with(tmp_path, []))
    with pytest.raises(HostKeyError, match="not in known_hosts"):
        arun(SshBackend.from_file(empty).connect())
    # --insecure-accept-host-keys: accepted (with a warning), wrong key or not.
    for path in (wrong, empty):
        backend = SshBackend.from_file(path, insecure_accept_host_keys=True)

        async def hello(backend: SshBackend = backend) -> str:
            await backend.connect()
            try:
                return (await backend.run("h1", ["echo", "hello"])).text()
            finally:
                await backend.teardown()

        assert arun(hello()) == "hello\n"
    # And the right key is accepted with checking on.
    right = SshBackend.from_file(hosts.nodes_toml(tmp_path / "right.toml", hosts=[h1]))

    async def hello_checked() -> str:
        await right.connect()
        try:
            return (await right.run("h1", ["echo", "checked"])).text()
        finally:
            await right.teardown()

    assert arun(hello_checked()) == "checked\n"


@_mark
def test_arguments_arrive_intact(hosts: SshHosts) -> None:
    backend = SshBackend.from_file(hosts.nodes_toml())

    async def main() -> None:
        await backend.connect()
        try:
            got = await backend.run("h1", ["printf", "%s", NASTY])
            assert got.ok and got.stdout.decode() == NASTY
            got = await backend.run("h2", ["python3", "-c", "import os, sys; print(os.environ['X'] + sys.argv[1])",
                                           "; $(id)"], env={"X": "it's $HOME "})
            assert got.text() == "it's $HOME ; $(id)\n"
            failed = await backend.run("h3", ["sh", "-c", "echo oops >&2; exit 3"])
            assert failed.exit_status == 3 and failed.stderr == b"oops\n"
        finally:
            await backend.teardown()

    arun(main())


@_mark
def test_a_cluster_on_three_hosts_and_every_fault_from_inside(hosts: SshHosts, wheelhouse: Path,
                                                              tmp_path: Path) -> None:
    backend = backend_for(hosts.nodes_toml(), wheelhouse)
    h1, h2, h3 = hosts.hosts

    async def main() -> None:
        try:
            places = await backend.setup(["h1", "h2", "h3"], tmp_path / "run")
            caps = backend.capabilities()
            assert caps.clock, caps.clock_reason
            for name, place in places.items():
                host = next(h for h in hosts.hosts if h.name == name)
                assert place.listen == {"client": f"{host.address}:7000"} and place.client == place.listen
                assert place.advertise == place.listen and place.host == host.address
                assert place.python.startswith(str(hosts.base / "work" / name))
                assert set(place.peers) == {"h1", "h2", "h3"}
                await backend.start(name, kvnode_argv(place), {})
            for place in places.values():
                await wait_ready(place)
            async with client(places["h1"]) as kv:
                await kv.put("k", "v1")
            async with client(places["h3"]) as kv:
                assert (await kv.get("k")).values == [b"v1"]

            await _partition(backend, hosts, places)
            await _clock(backend)
            await _pause_and_kill(backend, places)
            await _packets(backend, hosts, caps.packet, caps.packet_reason)

            copied = await backend.collect_logs("h1", tmp_path / "logs")
            assert {p.name for p in copied} >= {"kvnode.log", "stdout.log", "stderr.log"}
            assert "drops traffic from" in (tmp_path / "run" / "nodes" / "h2" / "log" / "backend.log").read_text()
            pids = [backend.pid(n) for n in ("h1", "h2", "h3")]
        finally:
            await backend.teardown()
        # Nothing left: no node process, no chain; a second teardown is a no-op.
        assert all(pid is not None and gone(pid) for pid in pids), pids
        for host in (h1, h2, h3):
            assert hosts.exec_in(host, ["iptables", "-w", "-S", commands.CHAIN]).returncode != 0
            assert not (hosts.base / "work" / host.name / "node" / "node.pid").exists()
        await backend.teardown()
        await eventually(_only_sshd_left(hosts), timeout=10.0)

    arun(main())


async def _partition(backend: SshBackend, hosts: SshHosts, places: dict[str, NodePlace]) -> None:
    assert await reach(backend, "h1", places["h2"]) == "connected"
    await backend.cut({"h2": frozenset({"h1"}), "h1": frozenset({"h2"})})
    # h1 and h2 cannot reach each other; h3 reaches both; the harness reaches all.
    assert await reach(backend, "h1", places["h2"]) == "TimeoutError"
    assert await reach(backend, "h2", places["h1"]) == "TimeoutError"
    assert await reach(backend, "h3", places["h2"]) == "connected"
    assert await reach(backend, "h1", places["h3"]) == "connected"
    rules = hosts.exec_in(hosts.hosts[1], ["iptables", "-w", "-S", commands.CHAIN]).stdout
    assert f"-s {hosts.hosts[0].address}/32" in rules and "-j DROP" in rules
    async with client(places["h1"]) as kv:  # the harness is never cut off
        await kv.status()
    await backend.heal_all()
    assert await reach(backend, "h1", places["h2"]) == "connected"
    assert await reach(backend, "h2", places["h1"]) == "connected"


async def _clock(backend: SshBackend) -> None:
    show = ["python3", "-c", "import time; print(time.time(), time.monotonic())"]

    async def offsets(node: str) -> tuple[float, float]:
        wall, mono = time.time(), time.monotonic()
        got = await backend.run(node, show, env=backend.clock_env(node))
        assert got.ok, got
        their_wall, their_mono = (float(x) for x in got.text().split())
        return their_wall - wall, their_mono - mono

    await backend.set_clock("h1", 3600.0)
    wall, mono = await offsets("h1")
    assert 3590 < wall < 3610 and abs(mono) < 10, (wall, mono)  # one kernel: monotonic clocks agree
    wall, _ = await offsets("h2")
    assert abs(wall) < 10  # only h1 moved
    await backend.set_clock("h1", -120.5)
    wall, mono = await offsets("h1")
    assert -130 < wall < -110 and abs(mono) < 10, (wall, mono)
    await backend.heal_all()  # resets clocks
    wall, _ = await offsets("h1")
    assert abs(wall) < 10


async def _pause_and_kill(backend: SshBackend, places: dict[str, NodePlace]) -> None:
    pids = {n: backend.pid(n) for n in places}
    assert all(pids.values()) and len(set(pids.values())) == 3, pids
    assert all(backend.running(n) for n in places)

    await backend.pause("h2")
    h2 = pids["h2"]
    assert h2 is not None

    async def stopped() -> None:
        assert proc_state(h2) == "T"

    await eventually(stopped, timeout=5.0)
    assert all(proc_state(p) not in ("T", "", "Z") for n, p in pids.items() if n != "h2" and p is not None)
    assert backend.running("h2")  # paused counts as running
    await backend.resume("h2")

    async def resumed() -> None:
        assert proc_state(h2) in ("S", "R")

    await eventually(resumed, timeout=5.0)

    await backend.kill("h3")
    h3 = pids["h3"]
    assert h3 is not None and gone(h3)
    assert not backend.running("h3") and backend.pid("h3") is None
    assert backend.running("h1") and backend.running("h2")
    assert backend.pid("h1") == pids["h1"] and not gone(h2)
    await backend.kill("h3")  # no-op when not running

    async def write_with_h3_down() -> None:
        async with client(places["h1"]) as kv:
            await kv.put("k2", "while h3 was down")

    await eventually(write_with_h3_down, timeout=10.0)
    await backend.start("h3", kvnode_argv(places["h3"]), {})
    assert backend.pid("h3") not in (None, h3)
    with pytest.raises(SshError, match="running already"):
        await backend.start("h3", kvnode_argv(places["h3"]), {})
    await wait_ready(places["h3"])


async def _packets(backend: SshBackend, hosts: SshHosts, capable: bool, reason: str) -> None:
    if not capable:
        assert "netem" in reason or "tc" in reason
        with pytest.raises(SshError, match="cannot shape packets"):
            await backend.shape(["h1"], PacketShape(delay_ms=50))
        return
    await backend.shape(["h1"], PacketShape(delay_ms=50))
    assert "netem" in hosts.exec_in(hosts.hosts[0], ["tc", "qdisc", "show", "dev", "eth0"]).stdout
    await backend.shape([], PacketShape())
    assert "netem" not in hosts.exec_in(hosts.hosts[0], ["tc", "qdisc", "show", "dev", "eth0"]).stdout


def _only_sshd_left(hosts: SshHosts) -> Callable[[], Coroutine[Any, Any, None]]:
    async def check() -> None:
        for host in hosts.hosts:
            assert host.sshd is not None
            listed = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True)
            left = {int(p) for p in listed.stdout.split()} - {host.sshd.pid}
            left = {p for p in left if not gone(p)}
            assert not left, f"{host.name}: processes left: {left}"

    return check




@_mark
def test_two_named_ports_exit_statuses_and_programs_a_skew_cannot_reach(hosts: SshHosts, wheelhouse: Path,
                                                                        tmp_path: Path) -> None:
    backend = backend_for(hosts.nodes_toml(), wheelhouse)
    h1, h2 = hosts.hosts[:2]

    async def main() -> None:
        try:
            places = await backend.setup(["h1", "h2"], tmp_path / "run", ports=("client", "peer"))
            for host in (h1, h2):
                place = places[host.name]
                assert place.listen == {"client": f"{host.address}:7000", "peer": f"{host.address}:7001"}
                assert place.client == place.advertise == place.listen
                assert place.peers == {h.name: places[h.name].listen for h in (h1, h2)}
            # A node listening on both ports: a partition cuts both.
            await backend.start("h2", ["python3", "-c", ECHO_NODE, *places["h2"].listen.values()], {})

            async def both_reached() -> None:
                assert [await reach(backend, "h1", places["h2"], port=p) for p in ("client", "peer")] == \
                    ["connected", "connected"]

            await eventually(both_reached)
            await backend.cut({"h2": frozenset({"h1"})})
            for port in ("client", "peer"):
                assert await reach(backend, "h1", places["h2"], port=port) == "TimeoutError"
            await backend.heal_all()
            await both_reached()

            # How a node that ended on its own ended; a kill by the backend is none.
            assert await backend.exited("h1") is None  # never started
            await backend.start("h1", ["python3", "-c", "import sys; sys.exit(3)"], {})

            async def ended() -> Exited:
                got = await backend.exited("h1")
                assert got is not None
                return got

            assert await eventually(ended) == Exited(3)
            assert await backend.exited("h2") is None  # running
            await backend.kill("h2")
            assert await backend.exited("h2") is None

            # Programs libfaketime cannot skew, read on the host (which shares this machine's files).
            assert await backend.clock_blind("h1", ["python3", "-c", "pass"]) is None
            if Path("/usr/bin/etcd").is_file():
                why = await backend.clock_blind("h1", ["etcd", "--name", "h1"])
                assert why is not None and why.startswith("h1 runs /usr/bin/etcd, a Go program: "), why
                assert 'set clock = "real" for h1' in why
        finally:
            await backend.teardown()
        await eventually(_only_sshd_left(hosts), timeout=10.0)

    arun(main())


@_mark
def test_clean_removes_what_a_crashed_run_left(hosts: SshHosts, wheelhouse: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends import owner

    nodes_file = hosts.nodes_toml()
    backend = backend_for(nodes_file, wheelhouse)
    h1: SshHost = hosts.hosts[0]

    async def crash() -> int:
        places = await backend.setup(["h1", "h2"], tmp_path / "run")
        await backend.start("h1", kvnode_argv(places["h1"]), {})
        await backend.cut({"h1": frozenset({"h2"})})
        pid = backend.pid("h1")
        assert pid is not None
        # The harness dies: connections gone, no teardown.
        for h in list(backend._hosts.values()):
            h.conn.close()
        return pid

    pid = arun(crash())
    assert not gone(pid)
    assert "-j DROP" in hosts.exec_in(h1, ["iptables", "-w", "-S", commands.CHAIN]).stdout
    # This test's process is the harness that wrote the hosts' owner files, and it still runs.
    lines = clean(nodes_file)
    assert any("left alone" in line for line in lines) and not gone(pid), lines
    monkeypatch.setattr(owner, "host_alive", lambda recorded: False)  # now it has "crashed"
    lines = clean(nodes_file)
    assert any(f"killed node process group {pid}" in line for line in lines), lines
    assert any("removed iptables chain" in line for line in lines), lines
    assert not any(line.startswith("could not") for line in lines), lines
    assert gone(pid)
    assert hosts.exec_in(h1, ["iptables", "-w", "-S", commands.CHAIN]).returncode != 0
    assert not any("killed" in line for line in clean(nodes_file))  # nothing left the second time


@_mark
@pytest.mark.slow
def test_harness_run_over_ssh_with_partitions(hosts: SshHosts, wheelhouse: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wheels, "wheelhouse", lambda: wheelhouse)
    config = RunConfig(backend="ssh", nodes=3, nodes_file=str(hosts.nodes_toml()), store=str(tmp_path / "store"),
                       workload="register", nemesis=("partition",), time_limit=15.0, nemesis_interval=2.0,
                       concurrency=6, rate=100.0, seed=11, op_timeout=2.0, recovery_timeout=30.0,
                       system_options={**FAST, "resolution": "dvv", "quorum": "strict", "read_repair": "async"})
    outcome = run(config, live=False, echo=lambda s: None)
    details = [f"{r.checker}: {a.explanation}" for r in outcome.results for a in r.anomalies][:5]
    assert outcome.valid is True, (outcome.run_dir, details)
    assert outcome.exit_code == 0
    history = read_jsonl(outcome.run_dir / "history.jsonl")
    assert any(o.process == "nemesis" and o.type == "info" for o in history), "the nemesis did nothing"
    assert sum(1 for o in history if o.type == "ok") > 100
    assert any(o.extra.get("final") and o.type == "ok" for o in history)
    logs = [outcome.run_dir / "nodes" / name / "log" for name in ("h1", "h2", "h3")]
    assert all((log / "kvnode.log").exists() for log in logs)  # collected over sftp
    assert any("drops traffic" in (log / "backend.log").read_text() for log in logs)


@_mark
@pytest.mark.skipif(shutil.which("sudo") is None, reason="sudo is not installed")
def test_sudo_mode_runs_privileged_commands_through_sudo(hosts: SshHosts, tmp_path: Path) -> None:
    backend = SshBackend.from_file(hosts.nodes_toml(tmp_path / "sudo.toml", sudo=True))

    async def main() -> None:
        await backend.connect(["h1"])
        try:
            through = await backend.run("h1", ["sh", "-c", "echo ${SUDO_USER:-none}"], privileged=True)
            plain = await backend.run("h1", ["sh", "-c", "echo ${SUDO_USER:-none}"])
            assert (through.text(), plain.text()) == ("root\n", "none\n")
            assert (await backend.run("h1", ["iptables", "-w", "-S", "INPUT"], privileged=True)).ok
        finally:
            await backend.teardown()

    arun(main())


PROVISION_IN_NAMESPACE = """
set -e
# A mount namespace of its own: /etc/ssh, /root and /run are copies or empty
# here, so provisioning "the host" changes nothing of this machine's.
cp -a /etc/ssh "$T/etc-ssh"
mkdir -p "$T/root"
mount -t tmpfs tmpfs /run
mount --bind "$T/etc-ssh" /etc/ssh
mount --bind "$T/root" /root
for _ in 1 2; do
  "$PROVISION" --no-packages --user root --pubkey "$T/client.pub" --host-key "$T/host_key"
done
cp /root/.ssh/authorized_keys "$T/out_authorized_keys"
stat -c %a /root/.ssh /root/.ssh/authorized_keys /etc/ssh/ssh_host_ed25519_key > "$T/out_modes"
cp /etc/ssh/ssh_host_ed25519_key.pub "$T/out_host_key.pub"
"""


@_mark
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare (util-linux)")
def test_provision_node_host_mode_authorizes_the_key_and_installs_the_host_key(tmp_path: Path) -> None:
    sshd_util._sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "client"))
    sshd_util._sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key"))
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", PROVISION_IN_NAMESPACE],
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "T": str(tmp_path),
                               "PROVISION": str(sshd_util.PROVISION)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    client = (tmp_path / "client.pub").read_text().strip()
    assert (tmp_path / "out_authorized_keys").read_text().splitlines() == [client]  # once, after two runs
    assert (tmp_path / "out_modes").read_text().split() == ["700", "600", "600"]
    assert (tmp_path / "out_host_key.pub").read_text().split()[:2] == (
        tmp_path / "host_key.pub").read_text().split()[:2]
