"""Test doubles shared by the storage tests."""

from __future__ import annotations

from pathlib import Path

import msgpack

from kvnode.storage import OSFileSystem
from kvnode.storage.fs import AppendFile
from kvnode.storage.sstable import CRC, FOOTER, FOOTER_SIZE


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


def data_blocks(sst: Path) -> list[tuple[int, int]]:
    """(offset, length) of every data block of the table file `sst`, from its
    index (read without the engine, so that a test can aim at one block)."""
    raw = sst.read_bytes()
    _, _, index_off, index_len, _, _ = FOOTER.unpack(raw[-FOOTER_SIZE : -CRC.size])
    index = msgpack.unpackb(raw[index_off : index_off + index_len - CRC.size], raw=False)
    return [(off, length) for _, off, length in index["blocks"]]


def flip_byte(path: Path, offset: int) -> None:
    """Corrupt one byte of a file on disk, as a failing disk would."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def corrupt_block(sst: Path, block: int) -> None:
    """Flip one byte in the middle of data block `block` of `sst`."""
    off, length = data_blocks(sst)[block]
    flip_byte(sst, off + length // 2)
