"""Lazy disks for nodes that run on this machine (the local and netns
backends): one `harness.lazyfs` process per node, mounted over the node's
data directory, its data kept in a backing directory beside it.

    disks = LazyDisks()
    await disks.mount("n1", data_dir, backing_dir, log_dir)   # before the node starts
    ...                                                        # the node writes
    await backend.kill("n1")
    lost = await disks.lose("n1", torn=False, seed=7)          # {"bytes": ..., "files": ..., "torn": ...}
    disks.unmount_all()                                        # teardown, atexit

`unmount_all` unmounts (`fusermount3 -u`, lazily if the mount is busy) and
ends each file system process, by the pid this class started; it is
blocking, idempotent and safe at interpreter exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes.util
import functools
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LazyDisks", "empty_directory", "fuse_missing_reason", "mounted", "probe_mount"]

MOUNT_TIMEOUT_S = 15.0


def mounted(path: str | Path) -> bool:
    """Whether `path` is a mount point of a lazy disk (read from /proc/mounts)."""
    target = os.path.realpath(path)
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[1].encode().decode("unicode_escape") == target \
                    and fields[2].startswith("fuse"):
                return True
    return False


def empty_directory(path: str | Path) -> int:
    """Remove everything in the directory `path` (which stays; through a
    lazy disk mounted on it, if one is): a failed disk replaced by an empty
    one. Returns how many entries were removed."""
    removed = 0
    for entry in list(Path(path).iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed += 1
    return removed


@functools.cache
def fuse_missing_reason() -> str | None:
    """Why no lazy disk can be mounted here, from what can be seen without
    mounting (`probe_mount` tries); None if nothing is seen missing."""
    if not sys.platform.startswith("linux"):
        return "FUSE lazy disks need Linux"
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        return f"cannot open /dev/fuse ({e.strerror}): load the fuse module, or give the container the device"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "the Python package mfusepy is missing (pip install mfusepy)"
    if ctypes.util.find_library("fuse3") is None:
        return "libfuse3 is missing (apt-get install fuse3)"
    return None


@functools.cache
def probe_mount() -> str | None:
    """Why a lazy disk cannot be mounted here, found by mounting one on a
    temporary directory once (and unmounting it); None when it works."""
    reason = fuse_missing_reason()
    if reason is not None:
        return reason
    with tempfile.TemporaryDirectory(prefix="lazyfs-probe-") as tmp:
        disks = LazyDisks()
        mount, backing = Path(tmp) / "mount", Path(tmp) / "backing"
        mount.mkdir()
        try:
            asyncio.run(disks.mount("probe", mount, backing, Path(tmp)))
            return None
        except (OSError, RuntimeError) as e:
            return str(e)
        finally:
            disks.unmount_all()


@dataclass
class _Disk:
    mount: Path
    backing: Path
    control: str
    proc: subprocess.Popen[bytes]


class LazyDisks:
    """The lazy disks of one backend's nodes (see the module docstring)."""

    def __init__(self) -> None:
        self._disks: dict[str, _Disk] = {}

    def __contains__(self, node: str) -> bool:
        return node in self._disks

    async def mount(self, node: str, mount: Path, backing: Path, log_dir: Path) -> None:
        """Start the node's file system over `mount` (which must exist), its
        data in `backing` (made if missing; what `mount` held is moved there
        first), and wait until it is mounted and answers. Raises RuntimeError
        with the process's last words when it cannot mount."""
        if node in self._disks:
            raise RuntimeError(f"{node} has a lazy disk already")
        mount, backing = Path(mount), Path(backing)
        backing.mkdir(parents=True, exist_ok=True)
        for entry in list(mount.iterdir()):
            entry.rename(backing / entry.name)
        control = f"@harness-lazyfs-{os.getpid()}-{secrets.token_hex(4)}-{node}"
        log = open(Path(log_dir) / "lazyfs.log", "ab")  # noqa: SIM115 -- handed to the child
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.lazyfs", str(mount), str(backing), "--control", control],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
            )
        finally:
            log.close()
        disk = self._disks[node] = _Disk(mount, backing, control, proc)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not (mounted(mount) and await self._ping(disk)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (Path(log_dir) / "lazyfs.log").read_text(errors="replace").strip().splitlines()[-3:]
                what = f"exited with status {proc.returncode}" if proc.poll() is not None else "did not mount"
                raise RuntimeError(f"the lazy disk of {node} {what}" + (": " + " / ".join(tail) if tail else ""))
            await asyncio.sleep(0.05)

    async def _ping(self, disk: _Disk) -> bool:
        try:
            await self._ask(disk, {"cmd": "ping"})
        except (OSError, RuntimeError):
            return False
        return True

    async def _ask(self, disk: _Disk, request: dict[str, Any]) -> dict[str, Any]:
        address = "\0" + disk.control[1:]
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(address), 5.0)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 30.0)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise OSError("the lazy disk closed its control socket")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok", False):
            raise RuntimeError(f"lazy disk: {reply.get('error')}")
        return reply

    def _disk(self, node: str) -> _Disk:
        try:
            return self._disks[node]
        except KeyError:
            raise RuntimeError(f"{node} has no lazy disk (mounted: {sorted(self._disks)})") from None

    async def lose(self, node: str, *, torn: bool = False, seed: int = 0) -> dict[str, Any]:
        """Forget the node's unsynced writes (torn: land a prefix of each
        file's last one); what was lost. Kill the node first."""
        return await self._ask(self._disk(node), {"cmd": "lose", "torn": torn, "seed": seed})

    async def stats(self, node: str) -> dict[str, Any]:
        """{"files", "bytes"} unsynced on the node's disk."""
        return await self._ask(self._disk(node), {"cmd": "stats"})

    def unmount_all(self) -> list[str]:
        """Unmount every disk and end its process; a line per problem.
        Blocking; idempotent."""
        problems: list[str] = []
        disks = list(self._disks.items())
        self._disks.clear()
        for node, disk in disks:
            if mounted(disk.mount):
                done = subprocess.run(["fusermount3", "-u", str(disk.mount)], capture_output=True, check=False)
                if done.returncode != 0:  # busy: detach now, gone once the last user lets go
                    subprocess.run(["fusermount3", "-u", "-z", str(disk.mount)], capture_output=True, check=False)
            # Unmounted, its process ends; detached while busy, it serves
            # until told to stop (SIGTERM: libfuse's loop exits), or killed.
            for sig, wait in ((None, 1.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(disk.proc.pid, sig)
                try:
                    disk.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                problems.append(f"the lazy disk of {node} (pid {disk.proc.pid}) did not end")
            if mounted(disk.mount):
                subprocess.run(["fusermount3", "-u", "-z", str(disk.mount)], capture_output=True, check=False)
                if mounted(disk.mount):
                    problems.append(f"{disk.mount} is still mounted")
                    continue
            # The run's record keeps the node's files where they were.
            with contextlib.suppress(OSError):
                for entry in list(disk.backing.iterdir()):
                    entry.rename(disk.mount / entry.name)
                disk.backing.rmdir()
        return problems
