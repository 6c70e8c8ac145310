"""The memtable: the newest writes, sorted in memory until they are flushed.

A `SortedDict` from key to value, where a tombstone is stored as None so that a
delete shadows older versions in the tables below until compaction drops it.
`nbytes` approximates the memory the entries take, to decide when to flush.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from .wal import OP_PUT, Mutation

# Per-entry bookkeeping, so that a flood of tiny keys still triggers a flush.
ENTRY_OVERHEAD = 32


class Memtable:
    def __init__(self, wal_number: int) -> None:
        self.wal_number = wal_number  # the WAL segment holding these writes
        self.nbytes = 0
        self._data: SortedDict = SortedDict()

    def __len__(self) -> int:
        return len(self._data)

    def apply(self, batch: list[Mutation]) -> None:
        data = self._data
        for op, key, value in batch:
            stored = value if op == OP_PUT else None
            old = data.get(key, _ABSENT)
            if old is _ABSENT:
                self.nbytes += len(key) + ENTRY_OVERHEAD
            elif old is not None:
                self.nbytes -= len(old)
            if stored is not None:
                self.nbytes += len(stored)
            data[key] = stored

    def lookup(self, key: bytes) -> tuple[bool, bytes | None]:
        """(found, value); found with None is a tombstone."""
        value = self._data.get(key, _ABSENT)
        if value is _ABSENT:
            return False, None
        return True, value

    def iterate(self, start: bytes | None = None, end: bytes | None = None) -> Iterator[tuple[bytes, bytes | None]]:
        """Entries with start <= key < end. Only safe on a memtable that no
        longer changes; for the live one, use `snapshot`."""
        data = self._data
        for key in data.irange(start, end, inclusive=(True, False)):
            yield key, data[key]

    def snapshot(self, start: bytes | None = None, end: bytes | None = None) -> list[tuple[bytes, bytes | None]]:
        """A copy of a key range, taken while writers are held off."""
        return list(self.iterate(start, end))


class _Absent:
    pass


_ABSENT = _Absent()
