"""The LSM engine: a write-ahead log, a memtable, and a stack of SSTables.

Write path. A write (put, delete or batch) is framed as one WAL record.
Writers queue up; the writer at the head of the queue is the leader: it takes
every batch queued behind it (a group), appends them to the WAL in one write,
fsyncs once for all of them when `sync="always"` (group commit, as LevelDB
does it), applies them to the memtable in WAL order, and wakes the group. A
write becomes visible only once it is durable, so a reader never sees a value
that a crash could take back. When the memtable passes `memtable_bytes` it is
frozen (immutable), a new WAL segment starts, and a background flush writes
the frozen memtable as an SSTable, installs it in the manifest and deletes the
WAL segment it covered. Writers stall only if `max_immutables` frozen
memtables are already waiting.

Read path. Memtable, frozen memtables, then tables newest to oldest, each
skipped when its key range or bloom filter says the key is absent. Readers
take a snapshot of the current view (one attribute read) and never block on
writers, flushes or compactions.

Background work (flush, compaction, the interval fsync) starts through one
`Background` seam, threads in production, inline in a simulation. At most one
flush and one compaction run at a time; a compaction replaces a contiguous
window of the stack (see `compaction`), so a flush that lands meanwhile, on
top of the stack, does not disturb it.

Recovery (`Engine.open`): read the manifest, remove files no manifest names
(what a crashed flush or compaction left), open the tables, replay the WAL
segments the manifest still needs, stopping each at its first torn or corrupt
record (the file is cut there and the loss logged), then write what was
replayed to a table so that the node starts on a clean log.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from . import manifest as manifest_mod
from .background import Background, Periodic, ThreadBackground
from .bloom import KeyHash, key_hash
from .compaction import drop_dead_tombstones, merge_newest, merge_newest_ranked, pick_window
from .errors import (
    BackgroundError,
    CorruptionError,
    EngineClosedError,
    NotADataDirectory,
    ReadOnlyError,
)
from .fs import FileLock, FileSystem, OSFileSystem
from .memtable import Memtable
from .sstable import BlockCache, TableMeta, TableReader, build_table
from .wal import OP_DELETE, OP_PUT, Mutation, WalWriter, encode_batch, read_segment

log = logging.getLogger("kvnode.storage")

SyncPolicy = Literal["always", "interval", "never"]
_FILE_RE = re.compile(r"^(\d{6,})\.(sst|wal)$")
_MAX_GROUP_BYTES = 1 << 20


@dataclass(frozen=True, kw_only=True, slots=True)
class Options:
    """Engine settings; each can be passed to `Engine.open` as a keyword."""

    sync: SyncPolicy = "always"
    sync_interval: float = 0.005  # seconds between fsyncs with sync="interval"
    memtable_bytes: int = 8 << 20
    max_immutables: int = 2  # frozen memtables waiting to flush before writers stall
    block_size: int = 4096
    bloom_bits_per_key: float = 10.0
    bloom: bool = True  # consult bloom filters on reads (off only to measure them)
    block_cache_bytes: int = 64 << 20  # decoded data blocks kept in memory; 0: none
    compaction_min_width: int = 4
    compaction_max_width: int = 32
    max_tables: int = 24
    max_key_size: int = 64 << 10
    max_value_size: int = 16 << 20

    def __post_init__(self) -> None:
        if self.sync not in ("always", "interval", "never"):
            raise ValueError(f"sync must be 'always', 'interval' or 'never', not {self.sync!r}")
        for name in ("memtable_bytes", "max_immutables", "block_size", "compaction_min_width",
                     "max_key_size", "max_value_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.compaction_min_width < 2:
            raise ValueError("compaction_min_width must be at least 2")
        if self.bloom_bits_per_key <= 0:
            raise ValueError("bloom_bits_per_key must be positive")
        if self.block_cache_bytes < 0:
            raise ValueError(f"block_cache_bytes must be 0 or more, not {self.block_cache_bytes}")


@dataclass(frozen=True, slots=True)
class _View:
    """What a reader sees: replaced whole, never mutated (except the live
    memtable's contents)."""

    mem: Memtable
    imms: tuple[Memtable, ...]  # newest first
    tables: tuple[TableReader, ...]  # newest first


@dataclass(slots=True)
class _Writer:
    batch: list[Mutation] | None  # None: a request to rotate the memtable
    record: bytes
    done: bool = False
    error: BaseException | None = None


@dataclass(slots=True)
class _Counters:
    bloom_negatives: int = 0  # table skipped: bloom said absent
    bloom_false_positives: int = 0  # bloom said maybe, the table did not hold it
    bloom_true_positives: int = 0
    flushes: int = 0
    compactions: int = 0
    compaction_bytes_read: int = 0
    compaction_bytes_written: int = 0
    tombstones_dropped: int = 0
    write_stalls: int = 0
    wal_records_recovered: int = 0
    wal_bytes_dropped: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class LostRange:
    """What `Engine.salvage` dropped: block `block` of table `table`, whose
    keys after < key <= last are gone (after None: from the table's first
    key), or (block None) a whole table that could not be read, whose keys
    first <= key <= last are gone. `older_keys` of that range are still held
    by older tables, whose (older) versions now read in their place."""

    table: int
    block: int | None
    after: bytes | None
    first: bytes | None
    last: bytes
    older_keys: int


def _file_name(number: int, kind: str) -> str:
    return f"{number:06d}.{kind}"


class Engine:
    """A crash-safe ordered key-value store. Thread-safe."""

    def __init__(
        self, path: str, options: Options, fs: FileSystem, background: Background, *, read_only: bool = False
    ) -> None:
        # Use Engine.open: this only sets fields.
        self.path = path
        self.options = options
        self.read_only = read_only
        self._fs = fs
        self._bg = background
        self._mutex = threading.Lock()
        self._cv = threading.Condition(self._mutex)
        self._wal_lock = threading.Lock()
        self._compaction_lock = threading.Lock()
        self._writers: deque[_Writer] = deque()
        self._cache = BlockCache(options.block_cache_bytes)
        # Tables found with a damaged block: compaction leaves them (and
        # everything older) alone until `salvage` rebuilds them.
        self._damaged_tables: set[int] = set()
        # With drop_unreadable_tables: tables whose footer, index or bloom
        # filter was damaged, left out at open (and the numbers of the tables
        # older than each), for `salvage` to report.
        self._drop_unreadable = False
        self._unreadable: list[tuple[TableMeta, set[int]]] = []
        self._stats = _Counters()
        self._closed = False
        self._closing = False
        self._bg_error: BaseException | None = None
        self._flush_running = False
        self._compaction_running = False
        self._next_file = 1
        self._lock: FileLock | None = None
        self._periodic: Periodic | None = None
        self._wal: WalWriter | None = None
        self._mem: Memtable
        self._imms: list[Memtable] = []
        self._tables: list[TableReader] = []
        self._view: _View

    # ------------------------------------------------------------------ open

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        fs: FileSystem | None = None,
        background: Background | None = None,
        read_only: bool = False,
        drop_unreadable_tables: bool = False,
        **options: Any,
    ) -> Engine:
        """Open the engine in directory `path`, creating it or recovering it.

        Raises `LockHeldError` if another engine has the directory open, and
        `CorruptionError` if the manifest or a live table is damaged (a torn
        WAL tail is not an error: it is cut off and logged).

        `read_only=True` creates, removes and changes nothing (no directory,
        LOCK, MANIFEST or WAL, no cleanup of orphans, no cut of a torn WAL
        tail: the WAL is replayed in memory); a directory without a MANIFEST
        raises `NotADataDirectory`, and writes raise `ReadOnlyError`.

        `drop_unreadable_tables=True` (for salvage) opens even when a live
        table's footer, index or bloom filter is damaged, or the table is
        missing: the table leaves the stack, its file is renamed to
        `*.sst.damaged`, and `salvage()` reports its whole key range as lost.
        """
        known = {f.name for f in fields(Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown engine option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        engine = cls(
            os.fspath(path), Options(**options), fs or OSFileSystem(), background or ThreadBackground(),
            read_only=read_only,
        )
        engine._drop_unreadable = drop_unreadable_tables
        if read_only:
            engine._recover_read_only()
        else:
            engine._recover()
        return engine

    def _join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _recover(self) -> None:
        fs = self._fs
        fs.makedirs(self.path)
        self._lock = fs.lock(self._join("LOCK"))
        try:
            self._recover_locked()
        except BaseException:
            self._lock.release()
            self._lock = None
            raise

    def _recover_read_only(self) -> None:
        fs = self._fs
        if not fs.exists(self._join(manifest_mod.NAME)):
            raise NotADataDirectory(
                f"{self.path}: not a kvnode data directory (no {manifest_mod.NAME}); "
                "a read-only command creates nothing"
            )
        if fs.exists(self._join("LOCK")):
            # Still refuse a directory a node has open: its files change under us.
            self._lock = fs.lock(self._join("LOCK"))
        try:
            man = manifest_mod.load(fs, self.path)
            self._next_file = man.next_file
            for meta in man.tables:
                p = self._join(_file_name(meta.number, "sst"))
                if not fs.exists(p):
                    raise CorruptionError(f"{p}: listed in the manifest but missing")
                self._tables.append(self._open_table(meta.number))
            mem = Memtable(0)
            for name in fs.listdir(self.path):
                m = _FILE_RE.match(name)
                if m and m.group(2) == "wal" and int(m.group(1)) >= man.log_number:
                    seg = read_segment(fs.read_all(self._join(name)))
                    for batch in seg.batches:
                        mem.apply(batch)
                    self._stats.wal_records_recovered += len(seg.batches)
                    if seg.reason is not None:
                        self._stats.wal_bytes_dropped += seg.total_bytes - seg.good_bytes
            self._mem = mem
            self._publish()
        except BaseException:
            for t in self._tables:
                t.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None
            raise

    def _recover_locked(self) -> None:
        fs = self._fs
        man = manifest_mod.load(fs, self.path)
        live = {t.number for t in man.tables}
        wals: list[int] = []
        highest = 0
        for name in fs.listdir(self.path):
            if name.endswith(".tmp"):
                fs.remove(self._join(name))
                continue
            m = _FILE_RE.match(name)
            if not m:
                continue
            number, kind = int(m.group(1)), m.group(2)
            highest = max(highest, number)
            if kind == "sst" and number not in live:
                log.info("removing orphan table %s (left by an interrupted flush or compaction)", name)
                fs.remove(self._join(name))
            elif kind == "wal":
                if number < man.log_number:
                    fs.remove(self._join(name))
                else:
                    wals.append(number)
        self._next_file = max(man.next_file, highest + 1)
        tables = []
        for position, meta in enumerate(man.tables):
            p = self._join(_file_name(meta.number, "sst"))
            try:
                if not fs.exists(p):
                    raise CorruptionError(f"{p}: listed in the manifest but missing")
                tables.append(self._open_table(meta.number))
            except CorruptionError as e:
                if not self._drop_unreadable:
                    raise
                # Kept aside, not removed: someone may still get something out of it.
                if fs.exists(p):
                    fs.rename(p, p + ".damaged")
                log.warning("salvage: table %s cannot be read (%s); moved aside as %s.damaged", p, e, p)
                older = {m.number for m in man.tables[position + 1 :]}
                self._unreadable.append((meta, older))
        self._tables = tables

        mem = Memtable(0)
        for number in sorted(wals):
            p = self._join(_file_name(number, "wal"))
            seg = read_segment(fs.read_all(p))
            for batch in seg.batches:
                mem.apply(batch)
            self._stats.wal_records_recovered += len(seg.batches)
            if seg.reason is not None:
                dropped = seg.total_bytes - seg.good_bytes
                self._stats.wal_bytes_dropped += dropped
                log.warning(
                    "wal %s: %s; dropped the last %d bytes and kept %d records",
                    p, seg.reason, dropped, len(seg.batches),
                )
                fs.truncate(p, seg.good_bytes)

        if len(mem):
            number = self._new_file_number()
            if self._build(number, mem.iterate()) is not None:
                self._tables.insert(0, self._open_table(number))
        wal_number = self._new_file_number()
        self._wal = WalWriter(fs, self._join(_file_name(wal_number, "wal")), wal_number)
        fs.sync_dir(self.path)
        self._mem = Memtable(wal_number)
        self._save_manifest(log_number=wal_number)
        for number in wals:
            fs.remove(self._join(_file_name(number, "wal")))
        self._publish()
        if self.options.sync == "interval":
            self._periodic = self._bg.every("kvnode-wal-sync", self.options.sync_interval, self._interval_sync)
        self._schedule()

    def _open_table(self, number: int) -> TableReader:
        return TableReader(
            self._fs, self._join(_file_name(number, "sst")), number,
            cache=self._cache, use_bloom=self.options.bloom,
        )

    def _new_file_number(self) -> int:
        n = self._next_file
        self._next_file += 1
        return n

    def _build(self, number: int, entries: Iterable[tuple[bytes, bytes | None]]) -> TableMeta | None:
        return build_table(
            self._fs, self._join(_file_name(number, "sst")), number, entries,
            block_size=self.options.block_size, bloom_bits_per_key=self.options.bloom_bits_per_key,
        )

    def _save_manifest(self, *, log_number: int) -> None:
        manifest_mod.save(self._fs, self.path, manifest_mod.Manifest(
            next_file=self._next_file,
            log_number=log_number,
            tables=[t.meta() for t in self._tables],
        ))

    def _publish(self) -> None:
        self._view = _View(self._mem, tuple(self._imms), tuple(self._tables))

    # ------------------------------------------------------------- checking

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise EngineClosedError(f"engine at {self.path} is closed")

    def _check_key(self, key: object) -> bytes:
        if not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if len(key) > self.options.max_key_size:
            raise ValueError(f"key of {len(key)} bytes exceeds max_key_size ({self.options.max_key_size})")
        return key

    def _check_value(self, value: object) -> bytes:
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        if len(value) > self.options.max_value_size:
            raise ValueError(f"value of {len(value)} bytes exceeds max_value_size ({self.options.max_value_size})")
        return value

    # ------------------------------------------------------------- writes

    def put(self, key: bytes, value: bytes) -> None:
        """Store `value` under `key`; returns once durable under the sync policy."""
        self._write([(OP_PUT, self._check_key(key), self._check_value(value))])

    def delete(self, key: bytes) -> None:
        """Write a tombstone for `key` (deleting an absent key is not an error)."""
        self._write([(OP_DELETE, self._check_key(key), None)])

    def write_batch(self, ops: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """Apply ("put", key, value) and ("delete", key, None) operations
        atomically: after a crash, all of them are there or none. Every
        operation is checked before anything is written."""
        batch: list[Mutation] = []
        for i, op in enumerate(ops):
            if not isinstance(op, tuple | list) or len(op) != 3:
                raise TypeError(f"batch operation {i} must be a (op, key, value) tuple, not {op!r:.80}")
            kind, key, value = op
            if kind == "put":
                batch.append((OP_PUT, self._check_key(key), self._check_value(value)))
            elif kind == "delete":
                if value is not None:
                    raise ValueError(f"batch operation {i}: a delete takes None as its value")
                batch.append((OP_DELETE, self._check_key(key), None))
            else:
                raise ValueError(f"batch operation {i}: unknown operation {kind!r} (expected 'put' or 'delete')")
        if batch:
            self._write(batch)

    def _write(self, batch: list[Mutation] | None) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"engine at {self.path} was opened read-only")
        w = _Writer(batch, encode_batch(batch) if batch is not None else b"")
        with self._cv:
            self._writers.append(w)
            try:
                while not w.done and self._writers[0] is not w:
                    self._cv.wait()
            except BaseException:
                # Interrupted while queued: leave the queue so others go on.
                if not w.done:
                    self._writers.remove(w)
                    self._cv.notify_all()
                raise
            if w.done:
                if w.error is not None:
                    raise w.error
                return
            # This writer leads: the queue behind it waits until it is done.
            try:
                rotated = self._make_room(force=batch is None)
            except BaseException as e:
                self._finish([w], e)
                raise
            if batch is None:
                self._finish([w], None)
            else:
                group = [w]
                size = len(w.record)
                for other in list(self._writers)[1:]:
                    if other.batch is None or size + len(other.record) > _MAX_GROUP_BYTES:
                        break
                    group.append(other)
                    size += len(other.record)
                wal = self._wal
        if rotated:
            self._schedule()
        if batch is None:
            return
        assert wal is not None  # only a read-only engine has none, and it never gets here
        error: BaseException | None = None
        try:
            wal.append(b"".join(g.record for g in group) if len(group) > 1 else w.record)
            if self.options.sync == "always":
                wal.sync()
        except BaseException as e:
            error = e
        with self._cv:
            try:
                if error is None:
                    for g in group:
                        assert g.batch is not None
                        self._mem.apply(g.batch)
            except BaseException as e:
                # Interrupted half way (Ctrl-C, out of memory): the memtable no
                # longer matches the log, so take no more writes until reopened.
                error = e
            finally:
                if error is not None:
                    # After a failed append the log may also end in a partial
                    # record, and nothing may be appended after it.
                    self._bg_error = self._bg_error or error
                self._finish(group, error)
        if error is not None:
            raise error

    def _finish(self, group: list[_Writer], error: BaseException | None) -> None:
        for g in group:
            popped = self._writers.popleft()
            assert popped is g
            g.done = True
            g.error = error
        self._cv.notify_all()

    def _make_room(self, *, force: bool) -> bool:
        """Called by the leader with the mutex held: freeze the memtable if it
        is full (or `force`), waiting while too many frozen ones are queued.
        True if it froze one (the caller then starts a flush, unlocked)."""
        while True:
            if self._bg_error is not None:
                raise BackgroundError(f"engine at {self.path} stopped accepting writes: {self._bg_error}")
            if not force and self._mem.nbytes < self.options.memtable_bytes:
                return False
            if force and not len(self._mem):
                return False
            if len(self._imms) >= self.options.max_immutables:
                self._stats.write_stalls += 1
                self._cv.wait()
                continue
            self._rotate()
            return True

    def _rotate(self) -> None:
        number = self._new_file_number()
        new_wal = WalWriter(self._fs, self._join(_file_name(number, "wal")), number)
        with self._wal_lock:
            # The frozen segment must be whole on disk before a newer one
            # can hold writes, whatever the sync policy.
            assert self._wal is not None
            self._wal.sync()
            self._wal.close()
            self._wal = new_wal
        self._fs.sync_dir(self.path)
        self._imms.insert(0, self._mem)
        self._mem = Memtable(number)
        self._publish()

    def _interval_sync(self) -> None:
        with self._wal_lock, contextlib.suppress(ValueError, OSError):
            if self._wal is not None:
                self._wal.sync()

    # ------------------------------------------------------------- reads

    def get(self, key: bytes) -> bytes | None:
        """The value stored under `key`, or None."""
        self._check_open()
        self._check_key(key)
        view = self._view
        found, value = view.mem.lookup(key)
        if found:
            return value
        for imm in view.imms:
            found, value = imm.lookup(key)
            if found:
                return value
        stats = self._stats
        h: KeyHash | None = None
        for table in view.tables:
            if key < table.min_key or key > table.max_key:
                continue
            if h is None:
                h = key_hash(key)  # once per read, for every table's filter
            if table.bloom_says_absent(h):
                stats.bloom_negatives += 1
                continue
            found, value = table.lookup(key)
            if found:
                stats.bloom_true_positives += 1
                return value
            stats.bloom_false_positives += 1
        return None

    def scan(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        *,
        damaged: list[CorruptionError] | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Live (key, value) pairs with start <= key < end, in key order, as of
        the call (later writes are not seen); tombstones are hidden.

        A damaged block raises CorruptionError; with a `damaged` list the scan
        goes on instead, appending the block's error (table, block and key
        range) to the list, and hides every key of that range whose newest
        version it finds in that table or an older one: the lost block may
        have held a newer version, so what an older table says is no answer.
        Versions newer than the damaged table (a key written again since)
        are yielded as usual."""
        self._check_open()
        if start is not None:
            self._check_key(start)
        if end is not None:
            self._check_key(end)
        with self._mutex:
            view = self._view
            mem_items = view.mem.snapshot(start, end)
        sources: list[Iterator[tuple[bytes, bytes | None]]] = [iter(mem_items)]
        sources += [imm.iterate(start, end) for imm in view.imms]
        if damaged is None:
            sources += [t.iterate(start, end) for t in view.tables]
            return (
                (key, value) for key, value in merge_newest(sources) if value is not None
            )
        # The merge pulls a table's next entry only after yielding its
        # previous one, so a damaged block is reported before any key of its
        # range comes out of the merge (see TableReader.iterate).
        lost: list[tuple[int, CorruptionError]] = []  # (rank of the damaged table, its error)
        first_table = len(sources)
        for rank, table in enumerate(view.tables, start=first_table):
            def note(e: CorruptionError, rank: int = rank) -> None:
                lost.append((rank, e))
                damaged.append(e)
                self._note_damage(e)

            sources.append(table.iterate(start, end, on_corrupt=note))

        def live() -> Iterator[tuple[bytes, bytes]]:
            for key, rank, value in merge_newest_ranked(sources):
                if value is None:
                    continue
                if any(rank >= r and e.covers(key) for r, e in lost):
                    continue
                yield key, value

        return live()

    def _note_damage(self, e: CorruptionError) -> None:
        if e.table is not None and e.table not in self._damaged_tables:
            self._damaged_tables.add(e.table)
            log.error("%s; compaction leaves this table and older ones alone until `kvnode db salvage`", e)

    def verify(self) -> list[CorruptionError]:
        """Read every data block of every live table past the cache,
        checking its checksum; the damaged ones (every one, not the first)."""
        self._check_open()
        found: list[CorruptionError] = []
        for table in self._view.tables:
            for i in range(table.blocks):
                try:
                    table.read_block(i)
                except CorruptionError as e:
                    found.append(e)
                    self._note_damage(e)
        return found

    # -------------------------------------------------------- background

    def _schedule(self) -> None:
        """Start a flush and/or a compaction if one is due and none is running.
        Called without the mutex held (an inline background runs the job now)."""
        with self._mutex:
            start_flush = bool(self._imms) and not self._flush_running and not self._closed
            if start_flush:
                self._flush_running = True
            start_compaction = (
                not self._compaction_running and not self._closing and not self._closed
                and self._bg_error is None and self._pick() is not None
            )
            if start_compaction:
                self._compaction_running = True
        if start_flush:
            self._bg.start("kvnode-flush", self._flush_job)
        if start_compaction:
            self._bg.start("kvnode-compaction", self._compaction_job)

    def _pick(self) -> tuple[int, int] | None:
        o = self.options
        # Never merge a damaged table or across one: what it lost would take
        # older versions of its keys along as if they were current.
        usable = next((i for i, t in enumerate(self._tables) if t.number in self._damaged_tables),
                      len(self._tables))
        return pick_window(
            [t.size for t in self._tables[:usable]],
            min_width=o.compaction_min_width,
            max_width=o.compaction_max_width,
            small_bytes=o.memtable_bytes // 2,
            max_tables=o.max_tables,
        )

    def _fail_background(self, error: BaseException) -> None:
        log.error("background work failed; the engine refuses writes until reopened: %r", error)
        with self._cv:
            self._bg_error = self._bg_error or error
            self._cv.notify_all()

    def _flush_job(self) -> None:
        try:
            while True:
                with self._mutex:
                    if not self._imms or self._bg_error is not None:
                        self._flush_running = False
                        self._cv.notify_all()
                        break
                    imm = self._imms[-1]
                    number = self._new_file_number()
                meta = self._build(number, imm.iterate())
                reader = self._open_table(number) if meta is not None else None
                with self._cv:
                    if reader is not None:
                        self._tables.insert(0, reader)
                    self._imms.pop()
                    oldest = self._imms[-1] if self._imms else self._mem
                    self._save_manifest(log_number=oldest.wal_number)
                    self._publish()
                    self._stats.flushes += 1
                    self._cv.notify_all()
                self._fs.remove(self._join(_file_name(imm.wal_number, "wal")))
        except BaseException as e:
            with self._mutex:
                self._flush_running = False
            self._fail_background(e)
            return
        self._schedule()

    def _compaction_job(self) -> None:
        try:
            while True:
                with self._compaction_lock:
                    with self._mutex:
                        window = None if (self._closing or self._bg_error) else self._pick()
                        if window is None:
                            self._compaction_running = False
                            return
                        inputs = self._tables[window[0] : window[1]]
                        older = self._tables[window[1] :]
                    try:
                        self._compact(inputs, older)
                    except CorruptionError as e:
                        # A damaged block is a loss of those keys on this
                        # copy, not a reason to stop taking writes: leave the
                        # table as it is (reads of its range say corrupt).
                        self._note_damage(e)
        except BaseException as e:
            with self._mutex:
                self._compaction_running = False
            self._fail_background(e)

    def _compact(self, inputs: list[TableReader], older: list[TableReader]) -> None:
        """Merge `inputs` (a contiguous window of the stack, newest first) into
        one table and put it in their place. The caller holds the compaction
        lock, so the window cannot change under it (flushes only push on top)."""
        with self._mutex:
            number = self._new_file_number()
        before = self._stats.tombstones_dropped

        def may_exist_below(key: bytes) -> bool:
            if any(t.may_contain(key) for t in older):
                return True
            self._stats.tombstones_dropped += 1
            return False

        merged = drop_dead_tombstones(merge_newest(t.iterate() for t in inputs), may_exist_below)
        meta = self._build(number, merged)
        reader = self._open_table(number) if meta is not None else None
        with self._cv:
            first = self._tables.index(inputs[0])
            assert self._tables[first : first + len(inputs)] == inputs, "compaction window moved"
            self._tables[first : first + len(inputs)] = [reader] if reader is not None else []
            oldest = self._imms[-1] if self._imms else self._mem
            self._save_manifest(log_number=oldest.wal_number)
            self._publish()
            self._stats.compactions += 1
            self._stats.compaction_bytes_read += sum(t.size for t in inputs)
            self._stats.compaction_bytes_written += meta.size if meta else 0
            self._cv.notify_all()
        for t in inputs:
            self._fs.remove(t.path)
        log.debug("compacted %d tables into %s (%d tombstones dropped)", len(inputs),
                  meta and meta.number, self._stats.tombstones_dropped - before)

    # ------------------------------------------------------------ control

    def flush(self) -> None:
        """Write the memtable to a table and wait until no frozen memtable is
        left; afterwards the WAL holds nothing that a table does not."""
        self._write(None)
        with self._cv:
            while self._imms and self._bg_error is None:
                self._cv.wait()
            if self._bg_error is not None:
                raise BackgroundError(f"flush failed: {self._bg_error}")

    def compact(self) -> None:
        """Flush, then merge every table into one, dropping all tombstones and
        overwritten versions. Blocks until done; writes go on meanwhile."""
        self.flush()
        with self._compaction_lock:
            with self._mutex:
                inputs = list(self._tables)
            if len(inputs) > 1 or (inputs and inputs[0].tombstones):
                self._compact(inputs, [])

    def set_block_cache_bytes(self, budget: int) -> None:
        """Resize the block cache (`block_cache_bytes`) of an open engine."""
        self.options = replace(self.options, block_cache_bytes=budget)  # validates
        self._cache.resize(budget)

    def salvage(self) -> list[LostRange]:
        """Rebuild every table that has damaged data blocks without them, and
        say which key ranges were lost. Flushes first; blocks until done.

        Within a lost range, an older table may still hold an older version
        of a key: it reads again in place of the lost one (`older_keys`
        counts them). On a kvnode replica that is an older state, which the
        other replicas' newer ones supersede when anti-entropy or a read
        repair comes by."""
        if self.read_only:
            raise ReadOnlyError(f"engine at {self.path} was opened read-only")
        self.flush()
        lost: list[LostRange] = []
        for gone, older_numbers in self._unreadable:
            older = 0
            for t in self._tables:
                if t.number in older_numbers:
                    within = t.iterate(gone.min_key, gone.max_key + b"\x00", on_corrupt=lambda _: None)
                    older += sum(1 for _ in within)
            lost.append(LostRange(table=gone.number, block=None, after=None, first=gone.min_key,
                                  last=gone.max_key, older_keys=older))
        self._unreadable = []
        with self._compaction_lock:
            with self._mutex:
                tables = list(self._tables)
            for position, table in enumerate(tables):
                bad: list[CorruptionError] = []
                for i in range(table.blocks):  # read first: most tables need no rewrite
                    try:
                        table.read_block(i)
                    except CorruptionError as damage:
                        bad.append(damage)
                if not bad:
                    continue
                skip = {e.block for e in bad}

                def intact(table: TableReader = table, skip: set[int | None] = skip) -> Iterator[tuple[bytes, bytes | None]]:
                    for i in range(table.blocks):
                        if i not in skip:
                            yield from table.read_block(i)

                with self._mutex:
                    number = self._new_file_number()
                meta = self._build(number, intact())
                reader = self._open_table(number) if meta is not None else None
                with self._cv:
                    i = self._tables.index(table)
                    self._tables[i : i + 1] = [reader] if reader is not None else []
                    oldest = self._imms[-1] if self._imms else self._mem
                    self._save_manifest(log_number=oldest.wal_number)
                    self._publish()
                    self._damaged_tables.discard(table.number)
                    self._cv.notify_all()
                self._fs.remove(table.path)
                for e in bad:
                    assert e.block is not None and e.last is not None
                    older = 0
                    for t in tables[position + 1 :]:
                        within = t.iterate(e.after, e.last + b"\x00", on_corrupt=lambda _: None)
                        older += sum(1 for k, _ in within if e.covers(k))
                    lost.append(LostRange(table=table.number, block=e.block, after=e.after,
                                          first=None, last=e.last, older_keys=older))
                    log.warning("salvage: dropped %s", e)
        self._schedule()
        return lost

    def close(self) -> None:
        """Wait for writes in flight and background work, sync the WAL and
        release the directory. The memtable is not flushed: the WAL has it."""
        with self._cv:
            if self._closed or self._closing:
                return
            self._closing = True
            while self._writers:
                self._cv.wait()
        if self._periodic is not None:
            self._periodic.stop()
        self._bg.join()
        with self._cv:
            while self._flush_running or self._compaction_running:
                self._cv.wait(0.05)
            self._closed = True
        with self._wal_lock:
            if self._wal is not None:
                with contextlib.suppress(OSError):
                    self._wal.sync()
                self._wal.close()
        for t in self._tables:
            t.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Counters and shape: tables per tier, bytes, bloom verdicts,
        flushes, compactions, stalls, and what recovery replayed or dropped."""
        view = self._view
        s = self._stats
        unit = max(1, self.options.memtable_bytes)
        tiers: dict[int, dict[str, int]] = {}
        for t in view.tables:
            tier = 0 if t.size <= unit else int(math.log(t.size / unit, 4)) + 1
            entry = tiers.setdefault(tier, {"tier": tier, "tables": 0, "bytes": 0})
            entry["tables"] += 1
            entry["bytes"] += t.size
        return {
            "tables": len(view.tables),
            "table_bytes": sum(t.size for t in view.tables),
            "table_entries": sum(t.count for t in view.tables),
            "tiers": [tiers[k] for k in sorted(tiers)],
            "runs": [t.size for t in view.tables],
            "memtable_bytes": view.mem.nbytes,
            "memtable_entries": len(view.mem),
            "immutable_memtables": len(view.imms),
            "wal_bytes": self._wal.size() if self._wal is not None else 0,
            "damaged_tables": len(self._damaged_tables),
            "block_cache_bytes": self._cache.nbytes,
            "bloom": {
                "negatives": s.bloom_negatives,
                "false_positives": s.bloom_false_positives,
                "true_positives": s.bloom_true_positives,
            },
            "flushes": s.flushes,
            "compactions": s.compactions,
            "compaction_bytes_read": s.compaction_bytes_read,
            "compaction_bytes_written": s.compaction_bytes_written,
            "tombstones_dropped": s.tombstones_dropped,
            "write_stalls": s.write_stalls,
            "wal_records_recovered": s.wal_records_recovered,
            "wal_bytes_dropped": s.wal_bytes_dropped,
        }
