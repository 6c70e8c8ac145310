"""The power fault without a cluster: the overlay of unsynced writes alone
(`harness.lazyfs.overlay`), the lazy file system mounted for a tiny program
(what a power loss keeps and loses, torn or not), `LazyDisks`' cleanup, and
`PowerFailure` against the fake backend of `test_nemesis_faults.py`
(refused where there are no lazy disks, what a start records).

The FUSE tests skip, saying why, where a lazy disk cannot be mounted (no
/dev/fuse, no fusermount3, a container without CAP_SYS_ADMIN): found by
mounting one once.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.backends.base import BackendCapabilities
from harness.lazyfs import LazyDisks, mounted, probe_mount
from harness.lazyfs.overlay import Overlay, Pending
from harness.nemesis.base import ClusterHandle
from harness.nemesis.disk import PowerFailure
from harness.nemesis.schedule import FAULT_NAMES, FaultOptions, parse_fault_names

from .test_nemesis_faults import NODES, FakeBackend, make_handle

# -- the overlay -----------------------------------------------------------------


def test_a_read_sees_backing_bytes_with_the_pending_writes_and_truncations_applied() -> None:
    p = Pending(size=10)
    p.write(8, b"XYZW")  # past the end: size 12
    p.truncate(9)
    p.write(11, b"!")  # a hole at 9..10 reads as zeros
    assert p.size == 12
    assert p.read(b"0123456789", 0, 100) == b"01234567X\0\0!"
    assert p.read(b"3456789", 3, 4) == b"3456"


def test_appends_coalesce_into_one_pending_write() -> None:
    p = Pending(size=0)
    for i in range(100):
        p.write(i, b"a")
    assert len(p.ops) == 1 and p.unsynced == 100


def test_flush_makes_a_file_durable_and_lose_forgets_the_rest(tmp_path: Path) -> None:
    (tmp_path / "synced").write_bytes(b"old")
    (tmp_path / "lost").write_bytes(b"")
    overlay = Overlay(str(tmp_path))
    overlay.pending("/synced").write(3, b"+new")
    overlay.pending("/lost").write(0, b"never fsynced")
    assert overlay.flush("/synced") == 4
    assert overlay.stats() == {"files": 1, "bytes": 13}
    assert overlay.lose() == {"bytes": 13, "files": {"/lost": 13}, "torn": {}}
    assert (tmp_path / "synced").read_bytes() == b"old+new"
    assert (tmp_path / "lost").read_bytes() == b""


def test_a_torn_loss_lands_a_strict_prefix_of_the_last_write(tmp_path: Path) -> None:
    (tmp_path / "wal").write_bytes(b"")
    overlay = Overlay(str(tmp_path))
    overlay.pending("/wal").write(0, b"0123456789")
    lost = overlay.lose(torn=True, seed=3)
    kept = (tmp_path / "wal").read_bytes()
    assert kept == b"0123456789"[:len(kept)] and len(kept) < 10
    assert lost["bytes"] == 10 - len(kept) and lost["torn"] == ({"/wal": len(kept)} if kept else {})


def test_pending_data_follows_a_rename_and_goes_with_an_unlink(tmp_path: Path) -> None:
    overlay = Overlay(str(tmp_path))
    overlay.pending("/d/a").write(0, b"x")
    overlay.rename("/d", "/e")
    assert list(overlay.files) == ["/e/a"]
    overlay.forget("/e")
    assert overlay.files == {}


# -- the file system, mounted ------------------------------------------------------


@pytest.fixture(scope="module")
def fuse_ok() -> None:
    reason = probe_mount()
    if reason is not None:
        pytest.skip(f"no lazy disk can be mounted here: {reason}")


@pytest.fixture
def disk(tmp_path: Path, fuse_ok: None) -> Iterator[tuple[LazyDisks, Path]]:
    disks = LazyDisks()
    mount = tmp_path / "data"
    mount.mkdir()
    try:
        asyncio.run(disks.mount("n1", mount, tmp_path / "disk", tmp_path))
        yield disks, mount
    finally:
        assert disks.unmount_all() == []
        assert not mounted(mount)


WRITER = """
import os, sys
d = sys.argv[1]
with open(os.path.join(d, "unsynced"), "wb") as f:
    f.write(b"lost on power failure" * 10)
with open(os.path.join(d, "synced"), "wb") as f:
    f.write(b"durable")
    f.flush()
    os.fsync(f.fileno())
with open(os.path.join(d, "synced"), "ab") as f:
    f.write(b" but not this")
with open(os.path.join(d, "unsynced"), "rb") as f:
    assert f.read() == b"lost on power failure" * 10  # a reader sees unsynced writes
"""


def write_files(mount: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(mount)], check=True, timeout=30)


def test_a_power_loss_forgets_what_was_not_fsynced_and_keeps_what_was(disk: tuple[LazyDisks, Path]) -> None:
    disks, mount = disk
    write_files(mount)
    assert asyncio.run(disks.stats("n1")) == {"files": 2, "bytes": 210 + 13}
    lost = asyncio.run(disks.lose("n1", torn=False))
    assert lost == {"bytes": 223, "files": {"/unsynced": 210, "/synced": 13}, "torn": {}}
    assert (mount / "unsynced").read_bytes() == b""  # the create was durable, its data not
    assert (mount / "synced").read_bytes() == b"durable"
    assert asyncio.run(disks.stats("n1")) == {"files": 0, "bytes": 0}


def test_a_torn_power_loss_keeps_a_prefix_of_the_last_write(disk: tuple[LazyDisks, Path]) -> None:
    disks, mount = disk
    write_files(mount)
    lost = asyncio.run(disks.lose("n1", torn=True, seed=11))
    data = (mount / "unsynced").read_bytes()
    assert lost["torn"].get("/unsynced", 0) == len(data) < 210
    assert data == (b"lost on power failure" * 10)[:len(data)]
    tail = (mount / "synced").read_bytes().removeprefix(b"durable")
    assert b" but not this".startswith(tail) and len(tail) < 13


def test_teardown_leaves_the_files_in_the_data_directory(tmp_path: Path, fuse_ok: None) -> None:
    disks = LazyDisks()
    mount = tmp_path / "data"
    mount.mkdir()
    (mount / "before").write_bytes(b"was here")
    asyncio.run(disks.mount("n1", mount, tmp_path / "disk", tmp_path))
    pid = disks._disks["n1"].proc.pid
    try:
        write_files(mount)
        assert (mount / "before").read_bytes() == b"was here"
        raise_inside = True
        if raise_inside:
            raise KeyError("an error in the middle of a run")
    except KeyError:
        pass
    finally:
        disks.unmount_all()
    assert not mounted(mount) and not (tmp_path / "disk").exists()
    assert sorted(p.name for p in mount.iterdir()) == ["before", "synced", "unsynced"]
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_busy_mount_is_still_unmounted(tmp_path: Path, fuse_ok: None) -> None:
    disks = LazyDisks()
    mount = tmp_path / "data"
    mount.mkdir()
    asyncio.run(disks.mount("n1", mount, tmp_path / "disk", tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'wb'); time.sleep(60)",
                               str(mount / "held")])
    try:
        for _ in range(200):
            if (mount / "held").exists():
                break
            asyncio.run(asyncio.sleep(0.05))
        assert disks.unmount_all() == []
        assert not mounted(mount)
    finally:
        holder.kill()
        holder.wait()


# -- the fault ---------------------------------------------------------------------


class DiskBackend(FakeBackend):
    """The fake backend with lazy disks: each node's loss is scripted."""

    def __init__(self, nodes: list[str]) -> None:
        super().__init__(nodes, BackendCapabilities(power=True, wipe=True))

    async def prepare_disks(self, nodes: list[str]) -> None:
        await self._enter("prepare_disks", tuple(nodes))

    async def lose_unsynced(self, node: str, *, torn: bool, seed: int) -> dict[str, Any]:
        await self._enter("lose_unsynced", node, torn)
        assert node not in self.alive, f"{node} lost its unsynced data while running"
        return {"bytes": 7, "files": {"/wal": 7}, "torn": {"/wal": 3} if torn else {}}


def disk_handle(nodes: list[str] = NODES) -> tuple[ClusterHandle, DiskBackend, list[str]]:
    backend = DiskBackend(list(nodes))
    restarted: list[str] = []

    async def restart(node: str) -> None:
        assert not backend.running(node), f"restart of running {node}"
        restarted.append(node)
        await backend.start(node, [], {})

    return ClusterHandle(backend=backend, nodes=list(nodes), restart=restart), backend, restarted


def test_power_is_refused_with_the_reason_on_a_backend_without_lazy_disks() -> None:
    handle, _, _ = make_handle(caps=BackendCapabilities())
    fault = PowerFailure.from_options(handle, FaultOptions())
    reason = fault.unavailable(BackendCapabilities())
    assert reason is not None and "fake backend cannot put a node's data on a lazy (FUSE) disk" in reason
    assert "--backend local or netns" in reason


def test_power_is_refused_on_docker_and_ssh() -> None:
    from harness.backends.docker import DockerBackend
    from harness.backends.ssh import SshBackend

    for backend in (DockerBackend.__new__(DockerBackend), SshBackend.__new__(SshBackend)):
        handle, _, _ = make_handle()
        handle.backend = backend
        reason = PowerFailure(handle).unavailable(BackendCapabilities(clock=True))
        assert reason is not None and f"the {backend.name} backend cannot" in reason


def test_power_on_a_backend_whose_fuse_is_missing_says_what_is_missing() -> None:
    handle, _, _ = disk_handle()
    caps = BackendCapabilities(power=False, power_reason="fusermount3 is missing (apt-get install fuse3)")
    assert PowerFailure(handle).unavailable(caps) == "fusermount3 is missing (apt-get install fuse3)"
    assert PowerFailure(handle).unavailable(BackendCapabilities(power=True)) is None


def test_a_power_failure_kills_all_targets_first_then_loses_and_restarts_them() -> None:
    handle, backend, restarted = disk_handle()
    fault = PowerFailure(handle, "all", torn=1.0)

    async def go() -> None:
        value = await fault.start(random.Random(1))
        assert value["nodes"] == handle.nodes
        assert value["lost-bytes"] == dict.fromkeys(handle.nodes, 7)
        assert value["torn"] == {n: {"/wal": 3} for n in handle.nodes}
        assert fault.active() == "power off " + " ".join(handle.nodes)
        kinds = [c[0] for c in backend.calls]
        assert kinds == ["kill"] * 5 + ["lose_unsynced"] * 5
        assert (await fault.stop()) == {"nodes": handle.nodes}
        assert restarted == handle.nodes and fault.active() is None
        assert (await fault.stop()) == {"nodes": []}

    asyncio.run(go())


def test_power_and_wipe_are_built_ins_but_not_in_all() -> None:
    assert {"power", "wipe"} <= set(FAULT_NAMES)
    assert parse_fault_names(["all"]) == ("partition", "kill", "pause", "clock", "packet")
    assert parse_fault_names(["power,wipe"]) == ("power", "wipe")
    with pytest.raises(ValueError, match="probability"):
        PowerFailure(make_handle()[0], torn=2.0)
    with pytest.raises(ValueError, match="unknown targets"):
        FaultOptions(power_targets="most")
