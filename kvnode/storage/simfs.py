"""A simulated disk for crash tests: `SimFileSystem`, an in-memory `FileSystem`
that forgets, when the simulated machine crashes, whatever was not fsynced.

What it models
--------------
- **A page cache.** Every file (an inode) has *current* bytes, which every
  read sees, and *durable* bytes, which are what survives a crash.
  `AppendFile.sync` makes the file's current bytes durable; `truncate` is
  durable at once (as `FileSystem.truncate` promises); `create` on an existing
  name truncates that inode, durably only once it is synced.
- **Directory entries.** Each directory has a current and a durable map of
  name to inode. `create`, `rename` and `remove` change the current map only;
  `sync_dir` makes the directory's whole current map durable. A crash reverts
  every directory to its durable map: a file created but not dir-synced
  disappears (even if its bytes were synced), a rename not dir-synced is
  undone, a removed name comes back.
- **A crash** (`crash`, or one armed with `crash_after` to strike in the
  middle of an engine call): everything not durable is dropped, every lock is
  released and every handle opened before it goes stale (using one raises
  `OSError`, closing one is a no-op). The disk is then "rebooted": a new
  `Engine.open` on it sees exactly the durable state.
- **A process kill** (`kill`): the program dies, the machine does not. Every
  lock is released and every handle goes stale, but nothing is lost: what
  was written and not synced stays in the page cache (current, still not
  durable, so a later power loss can still drop it).
- **Torn writes** (pass a seeded `random.Random`): a crash keeps a random
  prefix of each file's unsynced tail instead of none of it, and a random
  prefix, in order, of each directory's unsynced name changes (a journaling
  file system commits metadata in order; a rename is one change). Without an
  RNG a crash is strict: nothing unsynced survives. Either way a run is a pure
  function of its inputs and the seed.
- **Locks** are exclusive per path within one `SimFileSystem` (like `flock`
  on two descriptors, even in one process); `lock` creates the file if it is
  missing, and a held lock raises `LockHeldError`.
- Errors as the OS raises them: `FileNotFoundError`, `IsADirectoryError`,
  `NotADirectoryError`, `FileExistsError` (all `OSError` with an errno).

What it does not model
----------------------
- Reordering other than at fsync boundaries: unsynced bytes of a file are
  lost as a suffix (never a hole in the middle), and unsynced name changes of
  a directory as a suffix of their sequence. Across files and directories
  there is no order at all: each keeps its own durable state.
- Bit flips, misdirected or lost writes of *synced* data, full disks, and I/O
  errors other than the simulated crash itself.
- Directories as entries: `makedirs` is durable at once, and directories
  cannot be renamed or removed. Paths are normalised and taken as absolute
  (a relative path is resolved against "/"); there are no links, permissions,
  timestamps or sparse files (a `truncate` past the end pads with zeros).
- The LOCK file's content (the real one holds the owner's pid): the holder
  named in `LockHeldError` is the lock's sequence number.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import threading

from .fs import AppendFile, FileLock, LockHeldError, ReadFile

__all__ = ["SimFileSystem", "SimulatedCrash"]


class SimulatedCrash(OSError):
    """Raised by the operation that a `crash_after` crash strikes, and by every
    call until `crash()` brings the disk back."""

    def __init__(self) -> None:
        super().__init__(errno.EIO, "simulated crash: the machine lost power")


def _error(cls: type[OSError], code: int, path: str) -> OSError:
    return cls(code, os.strerror(code), path)


def _stale() -> OSError:
    return OSError(
        errno.EBADF, "stale file handle: the simulated machine crashed since it was opened"
    )


class _Inode:
    """A file's bytes. `data` is current; its durable bytes are `data[:synced]`,
    unless an unsynced truncation cut below them (`diverged` then holds them)."""

    __slots__ = ("data", "diverged", "synced")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = 0
        self.diverged: bytes | None = None

    def sync(self) -> None:
        self.synced = len(self.data)
        self.diverged = None

    def truncate_unsynced(self) -> None:
        if self.diverged is None:
            self.diverged = bytes(self.data[: self.synced])
        self.data.clear()
        self.synced = 0

    def settle(self, rng: random.Random | None) -> None:
        """The crash: keep the durable bytes (and, torn, a prefix of the rest)."""
        if self.diverged is not None:
            self.data = bytearray(self.diverged)
        else:
            keep = 0
            tail = len(self.data) - self.synced
            if rng is not None and tail > 0:
                keep = rng.randint(0, tail)
            del self.data[self.synced + keep :]
        self.sync()


# One change to a directory's names: name -> inode, or name -> None (removed).
# A rename within one directory is one change of two names.
_Change = list[tuple[str, _Inode | None]]


class _Dir:
    __slots__ = ("current", "durable", "journal")

    def __init__(self) -> None:
        self.current: dict[str, _Inode] = {}
        self.durable: dict[str, _Inode] = {}
        self.journal: list[_Change] = []  # changes since the last sync_dir

    def change(self, change: _Change) -> None:
        for name, inode in change:
            if inode is None:
                self.current.pop(name, None)
            else:
                self.current[name] = inode
        self.journal.append(change)

    def sync(self) -> None:
        self.durable = dict(self.current)
        self.journal = []

    def settle(self, rng: random.Random | None) -> None:
        names = dict(self.durable)
        kept = rng.randint(0, len(self.journal)) if rng is not None and self.journal else 0
        for change in self.journal[:kept]:
            for name, inode in change:
                if inode is None:
                    names.pop(name, None)
                else:
                    names[name] = inode
        self.current = names
        self.sync()


class _SimAppendFile:
    def __init__(self, fs: SimFileSystem, inode: _Inode) -> None:
        self._fs = fs
        self._inode = inode
        self._epoch = fs._epoch
        self._pos = len(inode.data)
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "write to a closed file")
        self._fs._check_handle(self._epoch)

    def write(self, data: bytes) -> None:
        with self._fs._mutex:
            self._check()
            self._fs._mutating()
            self._inode.data += data
            self._pos += len(data)

    def sync(self) -> None:
        with self._fs._mutex:
            self._check()
            self._fs._mutating()
            self._inode.sync()

    def tell(self) -> int:
        with self._fs._mutex:
            self._check()
            return self._pos

    def close(self) -> None:
        self._closed = True


class _SimReadFile:
    def __init__(self, fs: SimFileSystem, inode: _Inode) -> None:
        self._fs = fs
        self._inode = inode
        self._epoch = fs._epoch
        self._size = len(inode.data)  # as the OS one takes it from fstat at open
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "read from a closed file")
        self._fs._check_handle(self._epoch)

    def pread(self, offset: int, size: int) -> bytes:
        with self._fs._mutex:
            self._check()
            if offset < 0 or size < 0:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return bytes(self._inode.data[offset : offset + size])

    def size(self) -> int:
        with self._fs._mutex:
            self._check()
            return self._size

    def close(self) -> None:
        self._closed = True


class _SimFileLock:
    def __init__(self, fs: SimFileSystem, path: str, serial: int) -> None:
        self._fs = fs
        self._path = path
        self.serial = serial

    def release(self) -> None:
        with self._fs._mutex:
            # After a crash the lock is gone already, and may belong to a newer holder.
            if self._fs._locks.get(self._path) is self:
                del self._fs._locks[self._path]


class SimFileSystem:
    """An in-memory `FileSystem` with a page cache that a crash empties.

    `rng`: with a seeded `random.Random`, crashes tear (keep random prefixes of
    what was not synced); without, they keep exactly what was synced.
    `crashes` counts the crashes so far. Thread-safe: one lock serialises
    every call.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng
        self._mutex = threading.RLock()
        self._dirs: dict[str, _Dir] = {"/": _Dir()}
        self._locks: dict[str, _SimFileLock] = {}
        self._lock_serial = 0
        self._epoch = 0  # bumped by every crash; handles of an older epoch are stale
        self._down = False
        self._crash_countdown: int | None = None
        self.crashes = 0

    # ----------------------------------------------------------- crashes

    def crash(self) -> None:
        """Lose power now and come back up: drop all that is not durable,
        release every lock, make every open handle stale. If a `crash_after`
        crash has already struck, only bring the disk back up."""
        with self._mutex:
            if not self._down:
                self._settle()
            self._down = False
            self._crash_countdown = None

    def kill(self) -> None:
        """The process using the disk dies (SIGKILL): release every lock and
        make every open handle stale; keep every byte and name, synced or not."""
        with self._mutex:
            self._locks.clear()
            self._epoch += 1

    def crash_after(self, operations: int | None) -> None:
        """Arm a crash to strike in the middle of whatever runs next: the
        `operations`-th state-changing call from now (create, write, sync,
        truncate, rename, remove, sync_dir; 0 is the very next one) does not
        happen; the machine crashes and the call raises `SimulatedCrash`, as
        does every call after it (so a crashed engine cannot touch the
        rebooted disk) until `crash()`. None disarms."""
        with self._mutex:
            if operations is not None and operations < 0:
                raise ValueError("operations must be >= 0")
            self._crash_countdown = operations

    @property
    def crashed(self) -> bool:
        """True once a `crash_after` crash has struck, until `crash()`."""
        return self._down

    def _settle(self) -> None:
        rng = self._rng
        for d in self._dirs.values():
            d.settle(rng)
        seen: set[int] = set()
        for d in self._dirs.values():
            for inode in d.current.values():
                if id(inode) not in seen:
                    seen.add(id(inode))
                    inode.settle(rng)
        self._locks.clear()
        self._epoch += 1
        self.crashes += 1

    def _mutating(self) -> None:
        """Called (with the mutex held) before every state-changing step."""
        if self._down:
            raise SimulatedCrash()
        if self._crash_countdown is not None:
            if self._crash_countdown == 0:
                self._crash_countdown = None
                self._settle()
                self._down = True
                raise SimulatedCrash()
            self._crash_countdown -= 1

    def _check_up(self) -> None:
        if self._down:
            raise SimulatedCrash()

    def _check_handle(self, epoch: int) -> None:
        self._check_up()
        if epoch != self._epoch:
            raise _stale()

    # ------------------------------------------------------------- paths

    @staticmethod
    def _norm(path: str) -> str:
        p = posixpath.normpath(os.fspath(path))
        return "/" + p.lstrip("/") if p != "." else "/"

    def _parent(self, path: str) -> tuple[_Dir, str]:
        """The directory holding `path` (normalised) and its name there."""
        if path in self._dirs:
            raise _error(IsADirectoryError, errno.EISDIR, path)
        parent, name = posixpath.split(path)
        d = self._dirs.get(parent)
        if d is None:
            if self._find(parent) is not None:
                raise _error(NotADirectoryError, errno.ENOTDIR, path)
            raise _error(FileNotFoundError, errno.ENOENT, path)
        return d, name

    def _find(self, path: str) -> _Inode | None:
        parent, name = posixpath.split(path)
        d = self._dirs.get(parent)
        return None if d is None else d.current.get(name)

    def _inode(self, path: str) -> _Inode:
        d, name = self._parent(path)
        inode = d.current.get(name)
        if inode is None:
            raise _error(FileNotFoundError, errno.ENOENT, path)
        return inode

    # -------------------------------------------------------- FileSystem

    def create(self, path: str) -> AppendFile:
        with self._mutex:
            self._check_up()  # a crashed machine answers nothing, not even ENOENT
            p = self._norm(path)
            d, name = self._parent(p)
            self._mutating()
            inode = d.current.get(name)
            if inode is None:
                inode = _Inode()
                d.change([(name, inode)])
            else:
                inode.truncate_unsynced()
            return _SimAppendFile(self, inode)

    def append(self, path: str) -> AppendFile:
        with self._mutex:
            self._check_up()
            return _SimAppendFile(self, self._inode(self._norm(path)))

    def open_read(self, path: str) -> ReadFile:
        with self._mutex:
            self._check_up()
            return _SimReadFile(self, self._inode(self._norm(path)))

    def read_all(self, path: str) -> bytes:
        with self._mutex:
            self._check_up()
            return bytes(self._inode(self._norm(path)).data)

    def truncate(self, path: str, size: int) -> None:
        with self._mutex:
            self._check_up()
            inode = self._inode(self._norm(path))
            if size < 0:
                raise _error(OSError, errno.EINVAL, path)
            self._mutating()
            if size <= len(inode.data):
                del inode.data[size:]
            else:
                inode.data += bytes(size - len(inode.data))
            inode.sync()

    def rename(self, src: str, dst: str) -> None:
        with self._mutex:
            self._check_up()
            s, d = self._norm(src), self._norm(dst)
            if s in self._dirs:
                raise _error(IsADirectoryError, errno.EISDIR, src)
            sdir, sname = self._parent(s)
            inode = sdir.current.get(sname)
            if inode is None:
                raise _error(FileNotFoundError, errno.ENOENT, src)
            ddir, dname = self._parent(d)
            self._mutating()
            if s == d:
                return
            if sdir is ddir:
                sdir.change([(dname, inode), (sname, None)])
            else:
                ddir.change([(dname, inode)])
                sdir.change([(sname, None)])

    def remove(self, path: str) -> None:
        with self._mutex:
            self._check_up()
            d, name = self._parent(self._norm(path))
            if name not in d.current:
                return  # as OSFileSystem.remove: a missing file is not an error
            self._mutating()
            d.change([(name, None)])

    def exists(self, path: str) -> bool:
        with self._mutex:
            self._check_up()
            p = self._norm(path)
            return p in self._dirs or self._find(p) is not None

    def listdir(self, path: str) -> list[str]:
        with self._mutex:
            self._check_up()
            p = self._norm(path)
            d = self._dirs.get(p)
            if d is None:
                if self._find(p) is not None:
                    raise _error(NotADirectoryError, errno.ENOTDIR, path)
                raise _error(FileNotFoundError, errno.ENOENT, path)
            subdirs = [
                posixpath.basename(q) for q in self._dirs if q != p and posixpath.dirname(q) == p
            ]
            return sorted([*d.current, *subdirs])

    def makedirs(self, path: str) -> None:
        with self._mutex:
            self._check_up()
            p = self._norm(path)
            missing: list[str] = []
            while p not in self._dirs:
                if self._find(p) is not None:
                    raise _error(FileExistsError, errno.EEXIST, p)
                missing.append(p)
                p = posixpath.dirname(p)
            for q in reversed(missing):
                self._dirs[q] = _Dir()

    def sync_dir(self, path: str) -> None:
        with self._mutex:
            self._check_up()
            p = self._norm(path)
            d = self._dirs.get(p)
            if d is None:
                if self._find(p) is not None:
                    raise _error(NotADirectoryError, errno.ENOTDIR, path)
                raise _error(FileNotFoundError, errno.ENOENT, path)
            self._mutating()
            d.sync()

    def lock(self, path: str) -> FileLock:
        with self._mutex:
            self._check_up()
            p = self._norm(path)
            d, name = self._parent(p)
            held = self._locks.get(p)
            if held is not None:
                raise LockHeldError(p, f"simulated lock #{held.serial}")
            if name not in d.current:
                d.change([(name, _Inode())])
            self._lock_serial += 1
            lock = _SimFileLock(self, p, self._lock_serial)
            self._locks[p] = lock
            return lock
