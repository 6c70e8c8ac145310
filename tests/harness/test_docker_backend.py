"""The `docker` backend for real (an engine and root): kvnode in containers on
a network of the backend's own; a partition that iptables in the containers
enforces, checked from inside one; the harness reaching every node through
it; a clock bump seen by a process's wall clock only; kill and pause on the
right pid; netem delay where the kernel has netem; a teardown, and a
`clean()` after a crash, that leave nothing of ours and touch nothing else;
and DESIGN.md's verdict matrix run on this backend.

The node image is built once per module (`build_image`, cached on the
machine: seconds when nothing changed); the fault tests share one
three-node cluster.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.backends.base import BackendOptions, Exited, NodePlace, PacketShape
from harness.backends.docker import LABEL, RUN_LABEL, DockerBackend, clean
from harness.backends.image import VENV, build_image
from kvnode.client import AsyncClient, KvError
from tests.harness.nodes import ECHO_NODE
from tests.harness.nodes import kvnode_argv as node_argv
from tests.harness.project_matrix import FAST
from tests.harness.test_docker_image import UNUSABLE

pytestmark = [pytest.mark.docker, pytest.mark.skipif(bool(UNUSABLE), reason=UNUSABLE),
              pytest.mark.timeout(600)]  # the first test may build the image (minutes, once per machine)

T = TypeVar("T")
NODES = ["n1", "n2", "n3"]
# Not the default subnet: a `harness run --backend docker` or the netns
# backend's tests on this machine may hold that one; and one per test
# process, so that two runs of this suite at once do not collide on it.
SUBNET = f"10.77.{210 + os.getpid() % 40}.0/24"
SUBNET_2 = f"10.77.{170 + os.getpid() % 40}.0/24"  # a second, concurrent run
SETTINGS = {"n": 3, "w": 2, "r": 2, "quorum": "strict", **FAST}
CLUSTER = "docker-backend-test"
PYTHON = f"{VENV}/bin/python"
ISOLATE_N1 = {"n1": frozenset({"n2", "n3"}), "n2": frozenset({"n1"}), "n3": frozenset({"n1"})}


def arun(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def engine() -> Any:
    import docker

    return docker.from_env()


def ours(label: str = f"{LABEL}=1") -> tuple[list[str], list[str]]:
    """Names of the containers and networks carrying `label`."""
    client = engine()
    return ([c.name for c in client.containers.list(all=True, filters={"label": label})],
            [n.name for n in client.networks.list(filters={"label": label})])


async def status(place: NodePlace, timeout: float = 2.0) -> dict[str, Any]:
    """The node's status, asked from the host (the harness's side)."""
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


async def connects(backend: DockerBackend, node: str, address: str) -> bool:
    """Whether a TCP connection from inside `node`'s container to
    host:port opens within 1 s."""
    host, port = address.rsplit(":", 1)
    code, _ = await backend.exec(node, [PYTHON, "-c", (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=1.0).close()\n"
        "except OSError:\n"
        "    sys.exit(1)\n")])
    return code == 0


async def proc_state(backend: DockerBackend, node: str, pid: int) -> str:
    """The process's state letter inside the node's container ("" if gone)."""
    code, out = await backend.exec(node, ["cat", f"/proc/{pid}/stat"])
    return out[out.rindex(")") + 2] if code == 0 else ""


def kvnode_argv(place: NodePlace) -> list[str]:
    return node_argv(place, CLUSTER, SETTINGS)



async def start_node(backend: DockerBackend, place: NodePlace) -> None:
    await backend.start(place.name, kvnode_argv(place), {})


@pytest.fixture(scope="module")
def node_image() -> str:
    """The node image for the whole module (built once, cached on the machine)."""
    return build_image(progress=lambda line: None).tag


# -- one cluster for the fault tests --------------------------------------------------


class TestOnAThreeNodeCluster:
    """Faults on one cluster of three kvnode containers, each test leaving it
    healed and whole."""

    @pytest.fixture(scope="class")
    @classmethod
    def cluster(cls, node_image: str, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[DockerBackend, dict[str, NodePlace]]]:
        backend = DockerBackend(image=node_image, subnet=SUBNET)

        async def start() -> dict[str, NodePlace]:
            places = await backend.setup(NODES, tmp_path_factory.mktemp("cluster"))
            for place in places.values():
                await start_node(backend, place)
            for place in places.values():
                await eventually(lambda place=place: answers(place))
            return places

        try:
            yield backend, arun(start())
        finally:
            arun(backend.teardown())
        assert backend.run_id is not None and ours(f"{RUN_LABEL}={backend.run_id}") == ([], [])

    def test_each_node_is_a_labelled_container_with_only_net_admin_on_our_network(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]]) -> None:
        backend, places = cluster
        addresses = {name: place.host for name, place in places.items()}
        assert len(set(addresses.values())) == 3
        prefix = SUBNET.rsplit(".", 1)[0] + "."
        assert all(a.startswith(prefix) and not a.endswith(".1") for a in addresses.values())
        for name, place in places.items():
            assert place.client == place.listen == place.advertise == {"client": f"{addresses[name]}:7000"}
            assert place.peers == {n: {"client": f"{a}:7000"} for n, a in addresses.items()}
            assert place.python == PYTHON and place.data_dir.startswith(f"/var/lib/harness/{name}/")
            container = engine().containers.get(backend.container_name(name))
            assert container.labels[LABEL] == "1" and container.labels[RUN_LABEL] == backend.run_id
            host = container.attrs["HostConfig"]
            assert host["CapAdd"] == ["NET_ADMIN"] and not host["Privileged"]
            network = container.attrs["NetworkSettings"]["Networks"][backend.network_name]
            assert network["IPAddress"] == addresses[name]
        assert engine().networks.get(backend.network_name).attrs["Labels"][LABEL] == "1"

    def test_a_partition_drops_packets_inside_and_heal_restores_them(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]]) -> None:
        backend, places = cluster

        async def main() -> None:
            assert await connects(backend, "n1", places["n2"].listen["client"])
            try:
                await backend.cut(ISOLATE_N1)
                # n2 and n3 drop n1's packets: from inside n1, n2 is unreachable, and back.
                assert not await connects(backend, "n1", places["n2"].listen["client"])
                assert not await connects(backend, "n2", places["n1"].listen["client"])
                assert await connects(backend, "n2", places["n3"].listen["client"])
                # the harness (on the host) still reaches every node
                for place in places.values():
                    assert await answers(place)
                # n1 alone cannot make a strict W=2; n2 and n3 can
                with pytest.raises(KvError):
                    async with AsyncClient(places["n1"].client["client"], cluster=CLUSTER, timeout=2.0) as kv:
                        await kv.put(b"k", b"during")
                async with AsyncClient(places["n2"].client["client"], cluster=CLUSTER, timeout=3.0) as kv:
                    await kv.put(b"k", b"majority")
            finally:
                await backend.heal_all()
            assert await connects(backend, "n1", places["n2"].listen["client"])
            assert await connects(backend, "n2", places["n1"].listen["client"])

        arun(main())

    def test_a_clock_bump_moves_the_wall_clock_and_not_the_monotonic_clock(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]]) -> None:
        backend, _ = cluster
        assert backend.capabilities().clock, backend.capabilities().clock_reason
        child = ("import os, time\n"
                 "first = (time.time(), time.monotonic())\n"
                 "open('/tmp/clock-started', 'w').close()\n"
                 "while not os.path.exists('/tmp/clock-bumped'):\n"
                 "    time.sleep(0.01)\n"
                 "print(*first, time.time(), time.monotonic())\n")

        async def main() -> None:
            # the node itself runs under the container's libfaketime and its control file
            pid = backend.pid("n1")
            _, environ = await backend.exec("n1", ["cat", f"/proc/{pid}/environ"])
            assert "LD_PRELOAD=/opt/harness/libfaketime.so.1" in environ
            assert "FAKETIME_TIMESTAMP_FILE=/var/lib/harness/n1/clock.faketime" in environ
            try:
                running = asyncio.create_task(backend.exec("n1", [PYTHON, "-c", child], clock=True))
                await eventually(lambda: _ok(backend.exec("n1", ["test", "-e", "/tmp/clock-started"])))
                await backend.set_clock("n1", 3600)
                await backend.exec("n1", ["touch", "/tmp/clock-bumped"])
                code, out = await running
                assert code == 0, out
                wall1, mono1, wall2, mono2 = (float(x) for x in out.split())
                assert 3590 < wall2 - wall1 < 3610, (wall1, wall2)  # the same process saw the jump
                assert 0 <= mono2 - mono1 < 10, (mono1, mono2)  # and its monotonic clock did not
                _, now = await backend.exec("n1", [PYTHON, "-c", "import time; print(time.time())"], clock=True)
                assert 3590 < float(now) - time.time() < 3610
            finally:
                await backend.heal_all()  # resets every clock
                await backend.exec("n1", ["rm", "-f", "/tmp/clock-started", "/tmp/clock-bumped"])
            _, now = await backend.exec("n1", [PYTHON, "-c", "import time; print(time.time())"], clock=True)
            assert abs(float(now) - time.time()) < 5

        arun(main())

    def test_kill_and_pause_act_on_the_right_process(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]], tmp_path: Path) -> None:
        backend, places = cluster

        async def main() -> None:
            pids = {n: backend.pid(n) for n in NODES}
            for name, pid in pids.items():
                assert pid is not None
                # the pid is kvnode's own (the wrapper exec'd it), in the node's container
                _, cmdline = await backend.exec(name, ["cat", f"/proc/{pid}/cmdline"])
                argv = cmdline.split("\0")
                assert "kvnode" in argv and argv[argv.index("--id") + 1] == name
            pid1, pid2, pid3 = (pids[n] or 0 for n in NODES)

            await backend.pause("n2")
            try:
                assert backend.running("n2")
                await eventually(lambda: _equal(proc_state(backend, "n2", pid2), "T"), timeout=5)
                assert await proc_state(backend, "n1", pid1) not in ("T", "")
                assert await proc_state(backend, "n3", pid3) not in ("T", "")
                assert not await answers(places["n2"], timeout=0.5)
                assert await answers(places["n1"])
            finally:
                await backend.resume("n2")
            await eventually(lambda: answers(places["n2"]))

            await backend.kill("n3")
            assert not backend.running("n3") and backend.pid("n3") is None
            assert await proc_state(backend, "n3", pid3) == ""
            assert backend.running("n1") and backend.running("n2")
            assert not await answers(places["n3"])
            await backend.kill("n3")  # no-op
            await start_node(backend, places["n3"])
            new3 = backend.pid("n3")
            assert new3 is not None and new3 != pid3
            await eventually(lambda: answers(places["n3"]))
            await backend.collect_logs("n3", tmp_path)
            log = (tmp_path / "backend.log").read_text()
            assert f"kill pid={pid3}" in log and f"start pid={new3}" in log

        arun(main())

    def test_packet_faults_delay_packets_or_say_why_not(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]]) -> None:
        backend, places = cluster
        caps = backend.capabilities()

        async def connect_time(address: str) -> float:
            host, port = address.rsplit(":", 1)
            best = 1e9
            for _ in range(3):
                started = time.monotonic()
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
                best = min(best, time.monotonic() - started)
                writer.close()
                await writer.wait_closed()
            return best

        async def main() -> None:
            await backend.shape(["n2"], PacketShape())  # clearing always works
            if not caps.packet:
                assert "netem" in caps.packet_reason
                with pytest.raises(RuntimeError, match="netem"):
                    await backend.shape(["n2"], PacketShape(delay_ms=100))
                return
            before = await connect_time(places["n2"].client["client"])
            try:
                # n2's SYN-ACK leaves through its shaped eth0
                await backend.shape(["n2"], PacketShape(delay_ms=100))
                delayed = await connect_time(places["n2"].client["client"])
                assert 0.09 <= delayed - before <= 0.3, (before, delayed)
            finally:
                await backend.shape(["n2"], PacketShape())
            assert await connect_time(places["n2"].client["client"]) < before + 0.05

        arun(main())
        if not caps.packet:
            pytest.skip(f"packet delay not measurable here: {caps.packet_reason}")

    def test_a_setup_that_fails_says_why_and_leaves_nothing(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]], node_image: str, tmp_path: Path) -> None:
        # The cluster holds SUBNET: a second network on it is refused.
        second = DockerBackend(image=node_image, subnet=SUBNET)
        with pytest.raises(RuntimeError, match="cannot create the network"):
            arun(second.setup(["x1"], tmp_path))
        assert ours(f"{RUN_LABEL}={second.run_id}") == ([], [])
        _, places = cluster
        assert arun(answers(places["n1"]))  # the cluster was not touched

    def test_logs_are_copied_out_of_the_container(
            self, cluster: tuple[DockerBackend, dict[str, NodePlace]], tmp_path: Path) -> None:
        backend, _ = cluster
        copied = arun(backend.collect_logs("n1", tmp_path / "n1"))
        assert {p.name for p in copied} >= {"stdout.log", "stderr.log", "kvnode.log", "backend.log"}
        assert all(p.is_relative_to(tmp_path / "n1") and p.is_file() for p in copied)
        assert "start pid=" in (tmp_path / "n1" / "backend.log").read_text()


async def _ok(result: Coroutine[Any, Any, tuple[int, str]]) -> bool:
    return (await result)[0] == 0


async def _equal(result: Coroutine[Any, Any, str], expected: str) -> bool:
    return await result == expected


# -- teardown and clean -----------------------------------------------------------------


def test_teardown_removes_every_container_and_the_network_and_is_idempotent(
        node_image: str, tmp_path: Path) -> None:
    async def main() -> DockerBackend:
        backend = DockerBackend(image=node_image, subnet=SUBNET)
        try:
            places = await backend.setup(["t1", "t2"], tmp_path)
            await backend.start("t1", [PYTHON, "-c", "import time; time.sleep(600)"], {})
            assert backend.running("t1") and not backend.running("t2")
            assert len(ours(f"{RUN_LABEL}={backend.run_id}")[0]) == 2
            assert places["t1"].peers["t2"] == places["t2"].listen
        finally:
            await backend.teardown()
        await backend.teardown()  # idempotent
        return backend

    backend = arun(main())
    assert ours(f"{RUN_LABEL}={backend.run_id}") == ([], [])


def test_clean_removes_what_a_crashed_run_left_and_nothing_else(node_image: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends import owner

    client = engine()
    # not ours: no label, though named like ours
    bystander = client.containers.create(node_image, ["sleep", "infinity"], name="hx-bystander-test")
    live = DockerBackend(image=node_image, subnet=SUBNET_2)  # a run whose harness still runs: left alone
    backend = DockerBackend(image=node_image, subnet=SUBNET)
    try:
        arun(live.setup(["l1"], tmp_path / "live"))
        # the run "crashes": its harness is gone (an owner that is not running), no teardown
        monkeypatch.setattr(owner, "token", lambda pid=None: "999999999:0")
        arun(backend.setup(["c1", "c2"], tmp_path))
        containers, networks = ours(f"{RUN_LABEL}={backend.run_id}")
        assert len(containers) == 2 and networks == [backend.network_name]
        lines = clean()
        assert {f"removed container {c}" for c in containers} | {f"removed network {backend.network_name}"} \
            <= set(lines), lines
        assert ours(f"{RUN_LABEL}={backend.run_id}") == ([], [])
        assert len(ours(f"{RUN_LABEL}={live.run_id}")[0]) == 1, "clean removed a live run's container"
        assert any(f"left run {live.run_id} alone" in line for line in lines)
        assert client.containers.get(bystander.id).name == "hx-bystander-test"
        arun(backend.teardown())  # after clean: nothing left to remove, no error
    finally:
        bystander.remove(force=True)
        arun(backend.teardown())
        arun(live.teardown())


# -- what a system other than kvnode needs -----------------------------------------------



def static_program(where: Path) -> Path | None:
    """A statically linked program built here, or None (no gcc or static libc)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    (where / "hello.c").write_text("int main(void) { return 0; }\n")
    built = subprocess.run([gcc, "-static", "-o", str(where / "hello"), str(where / "hello.c")],
                           capture_output=True, check=False)
    return where / "hello" if built.returncode == 0 else None


def put_file(container: str, source: Path, directory: str) -> None:
    """Copy a file of this machine into a container (as `docker cp` does)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(str(source), arcname=source.name)
    engine().containers.get(container).put_archive(directory, data.getvalue())


def test_two_named_ports_an_exit_status_and_programs_a_skew_cannot_reach(node_image: str, tmp_path: Path) -> None:
    static = static_program(tmp_path)

    async def main() -> None:
        backend = DockerBackend.from_options(BackendOptions(image=node_image, subnet=SUBNET))
        try:
            places = await backend.setup(["p1", "p2"], tmp_path / "run", ports=("client", "peer"))
            for place in places.values():
                assert place.listen == place.client == place.advertise == {
                    "client": f"{place.host}:7000", "peer": f"{place.host}:7001"}
                assert place.peers == {m: places[m].listen for m in places}
            p2 = places["p2"]
            await backend.start("p2", [PYTHON, "-c", ECHO_NODE, *p2.listen.values()], {})
            for address in p2.listen.values():
                await eventually(lambda address=address: connects(backend, "p1", address))
            await backend.cut({"p2": frozenset({"p1"})})  # every port of p2, from p1
            for address in p2.listen.values():
                assert not await connects(backend, "p1", address)
            await backend.heal_all()
            for address in p2.listen.values():
                assert await connects(backend, "p1", address)

            assert await backend.exited("p1") is None  # never started
            await backend.start("p1", ["sh", "-c", "exit 3"], {})

            async def ended() -> bool:
                return await backend.exited("p1") is not None

            await eventually(ended, timeout=10)
            assert await backend.exited("p1") == Exited(3)
            assert await backend.exited("p2") is None
            await backend.kill("p2")
            assert await backend.exited("p2") is None  # ended by the backend: nothing to report

            # Read inside the container: its Python is fine, and so is a script for it.
            assert await backend.clock_blind("p1", [PYTHON, "-m", "kvnode", "serve"]) is None
            await backend.exec("p1", ["sh", "-c", 'printf "#!/usr/bin/env python3\\n" > /tmp/tool && chmod +x /tmp/tool'])
            assert await backend.clock_blind("p1", ["/tmp/tool"]) is None
            assert await backend.clock_blind("p1", ["/usr/bin/etcd"]) is None  # not in the image: not judged
            if static is not None:
                put_file(backend.container_name("p1"), static, "/tmp")
                why = await backend.clock_blind("p1", ["/tmp/hello"])
                assert why is not None and why.startswith("p1 runs /tmp/hello, a statically linked program"), why
        finally:
            await backend.teardown()
        assert ours(f"{RUN_LABEL}={backend.run_id}") == ([], [])
        if static is None:
            pytest.skip("no gcc -static here: the statically linked case was not checked")

    arun(main(), timeout=120)


def test_without_cap_sys_admin_namespaces_and_docker_are_refused_with_their_reasons(node_image: str) -> None:
    """Root in a container without CAP_SYS_ADMIN (Docker's default) cannot
    make network namespaces, and has no Docker engine: the probes that the
    netns and docker backends (and their tests) decide by say so, where
    being root would have said yes."""
    script = ("import os; from harness.backends.probe import netns_problem, docker_problem; "
              "print(os.geteuid()); print(netns_problem()); print(docker_problem())")
    out = engine().containers.run(node_image, [f"{VENV}/bin/python", "-c", script], remove=True,
                                  network_mode="none").decode()
    uid, netns, docker_reason = out.strip().splitlines()[:3]
    assert uid == "0"
    assert netns.startswith("cannot make a network namespace here"), netns
    assert docker_reason, "no Docker engine in the container, and the probe must say so"
