"""The storage engine's file-system layer: every byte the engine reads or writes
goes through a `FileSystem`.

The engine never calls `open` or `os` itself. That keeps one seam where a
simulated disk (one that forgets what was not fsynced when the "machine"
crashes) can stand in for the real one, for crash tests and, later, for
deterministic simulation of a whole cluster. `OSFileSystem` is the real one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Protocol


class LockHeldError(RuntimeError):
    """The directory is locked by another open engine (another process, or
    another `Engine` object in this one)."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(f"{path} is locked by {holder}: is another kvnode using this data directory?")
        self.path = path
        self.holder = holder


class AppendFile(Protocol):
    """A file opened for appending. Data written is durable only after `sync`."""

    def write(self, data: bytes) -> None: ...
    def sync(self) -> None: ...
    def tell(self) -> int: ...
    def close(self) -> None: ...


class ReadFile(Protocol):
    """A file opened for random reads; safe to share between threads."""

    def pread(self, offset: int, size: int) -> bytes: ...
    def size(self) -> int: ...
    def close(self) -> None: ...


class FileLock(Protocol):
    def release(self) -> None: ...


class FileSystem(Protocol):
    """The primitives the engine needs, and no more.

    Paths are plain strings. Nothing here may buffer writes beyond what `sync`
    promises: after `AppendFile.sync` the bytes survive a crash; after
    `sync_dir` a created, renamed or removed name in that directory does.
    """

    def create(self, path: str) -> AppendFile:
        """Create (or truncate) a file and open it for appending."""
        ...

    def append(self, path: str) -> AppendFile:
        """Open an existing file for appending at its end."""
        ...

    def open_read(self, path: str) -> ReadFile: ...
    def read_all(self, path: str) -> bytes: ...
    def truncate(self, path: str, size: int) -> None:
        """Cut a file to `size` bytes and make the cut durable."""
        ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace `dst` by `src` (durable after `sync_dir`)."""
        ...

    def remove(self, path: str) -> None: ...
    def exists(self, path: str) -> bool: ...
    def listdir(self, path: str) -> list[str]: ...
    def makedirs(self, path: str) -> None: ...
    def sync_dir(self, path: str) -> None: ...
    def lock(self, path: str) -> FileLock:
        """Take an exclusive lock on `path`, or raise `LockHeldError` naming the holder."""
        ...


class _OSAppendFile:
    def __init__(self, path: str, flags: int) -> None:
        self._fd = os.open(path, flags | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._pos = os.lseek(self._fd, 0, os.SEEK_END)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
            self._pos += n

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # An engine dropped without close() (a simulated crash) lets go of its files.
        self.close()


class _OSReadFile:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # Readers are shared by snapshots; the last one to let go closes the file.
        self.close()


class _OSFileLock:
    # The lock file stays behind on release: unlinking it would let two
    # openers lock two different inodes of the same name.
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.release()


class OSFileSystem:
    """The real disk, through `os` calls (no Python-level buffering)."""

    def create(self, path: str) -> AppendFile:
        return _OSAppendFile(path, os.O_CREAT | os.O_TRUNC)

    def append(self, path: str) -> AppendFile:
        return _OSAppendFile(path, 0)

    def open_read(self, path: str) -> ReadFile:
        return _OSReadFile(path)

    def read_all(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def truncate(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def sync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: str) -> FileLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise LockHeldError(path, f"process {holder}" if holder else "another process") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return _OSFileLock(fd)
