"""The lazy file system's process: a FUSE passthrough to a backing directory
that keeps every unsynced write in its own memory, and a control socket.

    python -m harness.lazyfs MOUNT BACKING --control NAME

mounts at MOUNT (through libfuse 3 and the `mfusepy` binding, in the
foreground, until unmounted or sent SIGTERM) a view of BACKING in which:

- `write` and `truncate` go to memory (`harness.lazyfs.overlay`), per file;
  `read` and `getattr` see the backing file with them applied;
- `fsync`/`fdatasync` on a file write its pending operations to the backing
  file and fsync it: only then is the data durable;
- `close` (flush, release) makes nothing durable, as on a real disk;
- metadata operations (create, mkdir, unlink, rmdir, rename, link, symlink,
  chmod, utimens) are applied to the backing directory at once, durable
  without a directory fsync: a real file system may lose an unsynced
  create or rename, this one does not (it loses file data only, as LazyFS
  does by default). Pending data follows a renamed file; a hard link
  first makes its source durable.

The control socket (a Unix socket; a NAME starting with "@" is in the
abstract namespace, so no file is left behind) answers one JSON line per
request line: `{"cmd": "ping"}`, `{"cmd": "stats"}` -> `{"files", "bytes"}`
pending, and `{"cmd": "lose", "torn": bool, "seed": int}` -> what a power
failure lost (`Overlay.lose`). The caller kills the program that uses the
mount before it asks for `lose`.

The kernel caches nothing that could outlive a loss: attribute and entry
timeouts are 0, and FUSE drops a file's cached pages when it is opened
again (no `kernel_cache`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import sys
import threading
from typing import Any

from .overlay import Overlay

__all__ = ["main"]


def _fuse() -> Any:
    import mfusepy  # imported here: the harness itself must not need libfuse

    return mfusepy


def make_operations(backing: str) -> Any:
    """The FUSE operations over `backing`, and their shared overlay."""
    fuse = _fuse()

    class LazyFS(fuse.Operations):  # type: ignore[name-defined]
        use_ns = True

        def __init__(self) -> None:
            self.overlay = Overlay(backing)
            self.guard = threading.Lock()
            self.handles: dict[int, tuple[int, int]] = {}  # fh -> (backing fd for reads, open flags)
            self.next_fh = 1

        def _real(self, path: str) -> str:
            return self.overlay.real(path)

        # -- metadata: straight to the backing directory -----------------

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self.guard:
                st = os.lstat(self._real(path))
                attrs = {key: getattr(st, key) for key in ("st_mode", "st_ino", "st_nlink", "st_uid",
                                                           "st_gid", "st_size", "st_blocks")}
                attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
                pending = self.overlay.files.get(path)
                if pending is not None:
                    attrs["st_size"] = pending.size
                return attrs

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._real(path))

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            with self.guard:
                os.rmdir(self._real(path))
                self.overlay.forget(path)
            return 0

        def unlink(self, path: str) -> int:
            with self.guard:
                os.unlink(self._real(path))
                self.overlay.forget(path)
            return 0

        def symlink(self, target: str, source: str) -> int:
            os.symlink(source, self._real(target))
            return 0

        def rename(self, old: str, new: str) -> int:
            with self.guard:
                os.rename(self._real(old), self._real(new))
                self.overlay.rename(old, new)
            return 0

        def link(self, target: str, source: str) -> int:
            with self.guard:
                if source in self.overlay.files:
                    self.overlay.flush(source)
                os.link(self._real(source), self._real(target))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            if times is not None:
                os.utime(self._real(path), ns=times)
            else:
                os.utime(self._real(path))
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._real(path))
            return {key: getattr(st, key) for key in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail",
                                                      "f_ffree", "f_files", "f_flag", "f_frsize", "f_namemax")}

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return 0

        # -- file data: through the overlay -------------------------------

        def _handle(self, path: str, flags: int) -> int:
            fd = os.open(self._real(path), os.O_RDONLY | os.O_CLOEXEC)
            with self.guard:
                fh, self.next_fh = self.next_fh, self.next_fh + 1
                self.handles[fh] = (fd, flags)
            return fh

        def create(self, path: str, mode: int, flags: int = 0) -> int:
            os.close(os.open(self._real(path), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
                             | (flags & os.O_EXCL), mode))
            return self._handle(path, flags)

        def open(self, path: str, flags: int) -> int:
            return self._handle(path, flags)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self.guard:
                fd = self.handles[fh][0]
                backing = os.pread(fd, size, offset)
                pending = self.overlay.files.get(path)
                return backing if pending is None else pending.read(backing, offset, size)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self.guard:
                pending = self.overlay.pending(path)
                if self.handles[fh][1] & os.O_APPEND:
                    offset = pending.size
                pending.write(offset, bytes(data))
            return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self.guard:
                self.overlay.pending(path).truncate(length)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self.guard:
                self.overlay.flush(path)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0  # close() makes nothing durable

        def release(self, path: str, fh: int) -> int:
            with self.guard:
                fd, _ = self.handles.pop(fh, (-1, 0))
            if fd >= 0:
                os.close(fd)
            return 0

    return LazyFS()


def _address(name: str) -> str:
    return "\0" + name[1:] if name.startswith("@") else name


def serve_control(ops: Any, name: str) -> socket.socket:
    """Listen on the control socket and answer it from a daemon thread."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(_address(name))
    server.listen(4)

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        with ops.guard:
            if cmd == "ping":
                return {"ok": True}
            if cmd == "stats":
                return {"ok": True, **ops.overlay.stats()}
            if cmd == "lose":
                return {"ok": True, **ops.overlay.lose(torn=bool(request.get("torn")),
                                                      seed=int(request.get("seed", 0)))}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def connection(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                try:
                    reply = answer(json.loads(line))
                except Exception as e:
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, name="lazyfs-control", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.lazyfs", description=__doc__.split("\n\n")[0])
    parser.add_argument("mount")
    parser.add_argument("backing")
    parser.add_argument("--control", required=True, help="the control socket's path (@NAME: abstract)")
    args = parser.parse_args(argv)
    backing = os.path.realpath(args.backing)
    if not os.path.isdir(backing):
        print(f"lazyfs: {backing} is not a directory", file=sys.stderr)
        return 2
    ops = make_operations(backing)
    server = serve_control(ops, args.control)
    try:
        _fuse().FUSE(ops, args.mount, foreground=True, nothreads=True, fsname="lazyfs",
                     subtype="harness", attr_timeout=0, entry_timeout=0, negative_timeout=0)
    finally:
        with contextlib.suppress(OSError):
            server.close()
    return 0
