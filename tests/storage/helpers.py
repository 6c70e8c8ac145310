"""Test doubles shared by the storage tests."""

from __future__ import annotations

from kvnode.storage import OSFileSystem
from kvnode.storage.fs import AppendFile


class _CountingFile:
    def __init__(self, inner: AppendFile, counter: list[int]) -> None:
        self._inner = inner
        self._counter = counter

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def sync(self) -> None:
        self._counter[0] += 1
        self._inner.sync()

    def tell(self) -> int:
        return self._inner.tell()

    def close(self) -> None:
        self._inner.close()


class CountingFS(OSFileSystem):
    """Counts fsyncs of WAL segments."""

    def __init__(self) -> None:
        self.wal_syncs = [0]

    def create(self, path: str) -> AppendFile:
        f = super().create(path)
        return _CountingFile(f, self.wal_syncs) if path.endswith(".wal") else f
