"""SSTables: immutable sorted files of (key, value-or-tombstone).

Layout of `000042.sst`:

    data block 0 | data block 1 | ... | bloom block | index block | footer

- A data block is a msgpack array `[k0, v0, k1, v1, ...]` (a tombstone's value
  is nil) of about `block_size` bytes, followed by the CRC32 of those bytes.
- The bloom block is `BloomFilter.to_bytes()` followed by its CRC32.
- The index block is a msgpack map: for each data block its last key, offset
  and length (a sparse index, one entry per block), plus the entry count,
  tombstone count and the smallest and largest key; then its CRC32.
- The footer is 40 fixed bytes: magic, format version, the offsets and lengths
  of the index and bloom blocks, and a CRC32 of the footer itself.

A table is written under a temporary name, fsynced, renamed into place and the
directory fsynced, so that a name that exists is a whole table. Every block is
checked against its CRC when read: a mismatch raises `CorruptionError` naming
the file and the block, never a wrong value.
"""

from __future__ import annotations

import bisect
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import msgpack

from .bloom import BloomFilter, KeyHash, key_hash
from .errors import CorruptionError
from .fs import FileSystem, ReadFile

MAGIC = 0x4B564E4F44455353  # "KVNODESS"
FORMAT_VERSION = 1
FOOTER = struct.Struct(">QIQIQI")  # magic, version, index off/len, bloom off/len
CRC = struct.Struct(">I")
FOOTER_SIZE = FOOTER.size + CRC.size

Entry = tuple[bytes, bytes | None]
Block = tuple[list[bytes], list[bytes | None]]  # a decoded data block: its keys and values


@dataclass(frozen=True, kw_only=True, slots=True)
class TableMeta:
    """What the manifest records about a live table."""

    number: int
    size: int
    count: int
    tombstones: int
    min_key: bytes
    max_key: bytes


def _seal(payload: bytes) -> bytes:
    return payload + CRC.pack(zlib.crc32(payload))


def build_table(
    fs: FileSystem,
    path: str,
    number: int,
    entries: Iterable[Entry],
    *,
    block_size: int = 4096,
    bloom_bits_per_key: float = 10.0,
) -> TableMeta | None:
    """Write `entries` (sorted by key, unique) as a table at `path`, atomically.

    Returns None, writing nothing, when `entries` is empty.
    """
    tmp = path + ".tmp"
    out = None
    keys: list[bytes] = []
    index: list[list[object]] = []
    offset = 0
    tombstones = 0
    block: list[bytes | None] = []
    block_bytes = 0

    def emit() -> None:
        nonlocal offset, block, block_bytes
        assert out is not None
        sealed = _seal(msgpack.packb(block, use_bin_type=True))
        out.write(sealed)
        index.append([block[-2], offset, len(sealed)])
        offset += len(sealed)
        block = []
        block_bytes = 0

    try:
        for key, value in entries:
            if out is None:
                out = fs.create(tmp)
            keys.append(key)
            block.append(key)
            block.append(value)
            if value is None:
                tombstones += 1
                block_bytes += len(key) + 4
            else:
                block_bytes += len(key) + len(value) + 8
            if block_bytes >= block_size:
                emit()
        if out is None:
            return None
        if block:
            emit()
        bloom = _seal(BloomFilter.build(keys, len(keys), bloom_bits_per_key).to_bytes())
        bloom_off = offset
        out.write(bloom)
        offset += len(bloom)
        meta_map = {
            "blocks": index,
            "count": len(keys),
            "tombstones": tombstones,
            "min_key": keys[0],
            "max_key": keys[-1],
        }
        index_block = _seal(msgpack.packb(meta_map, use_bin_type=True))
        index_off = offset
        out.write(index_block)
        offset += len(index_block)
        footer = FOOTER.pack(MAGIC, FORMAT_VERSION, index_off, len(index_block), bloom_off, len(bloom))
        out.write(_seal(footer))
        offset += FOOTER_SIZE
        out.sync()
        out.close()
        out = None
        fs.rename(tmp, path)
    except BaseException:
        if out is not None:
            out.close()
        fs.remove(tmp)
        raise
    return TableMeta(
        number=number,
        size=offset,
        count=len(keys),
        tombstones=tombstones,
        min_key=keys[0],
        max_key=keys[-1],
    )


class BlockCache:
    """A shared LRU of decoded data blocks, keyed by (table number, block),
    bounded in bytes (a block's encoded size plus a per-entry allowance for
    the objects it decodes to), not in blocks: a table of 15 MiB values has
    blocks of 15 MiB. A block larger than the whole budget is not kept."""

    ENTRY_OVERHEAD = 96  # two list slots and two bytes objects per entry, roughly

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = capacity_bytes
        self.nbytes = 0
        self._blocks: OrderedDict[tuple[int, int], tuple[Block, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> Block | None:
        with self._lock:
            found = self._blocks.get(key)
            if found is None:
                return None
            self._blocks.move_to_end(key)
            return found[0]

    def put(self, key: tuple[int, int], block: Block, encoded_size: int) -> None:
        cost = encoded_size + self.ENTRY_OVERHEAD * len(block[0])
        if cost > self.capacity:
            return
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            self._blocks[key] = (block, cost)
            self.nbytes += cost
            while self.nbytes > self.capacity:
                _, (_, evicted) = self._blocks.popitem(last=False)
                self.nbytes -= evicted

    def resize(self, capacity_bytes: int) -> None:
        """Change the budget, evicting the least recently used blocks."""
        with self._lock:
            self.capacity = capacity_bytes
            while self.nbytes > self.capacity:
                _, (_, evicted) = self._blocks.popitem(last=False)
                self.nbytes -= evicted

    def __len__(self) -> int:
        return len(self._blocks)


class TableReader:
    """An open table. Thread-safe; reads go through `pread` on a shared file."""

    def __init__(
        self,
        fs: FileSystem,
        path: str,
        number: int,
        *,
        cache: BlockCache | None = None,
        use_bloom: bool = True,
    ) -> None:
        self.path = path
        self.number = number
        self._cache = cache
        self._file: ReadFile = fs.open_read(path)
        self.use_bloom = use_bloom
        try:
            self._load()
        except BaseException:
            self._file.close()
            raise

    def _check(self, sealed: bytes, what: str, offset: int) -> bytes:
        if len(sealed) < CRC.size:
            raise CorruptionError(f"{self.path}: {what} at offset {offset}: truncated")
        payload = sealed[: -CRC.size]
        if CRC.unpack(sealed[-CRC.size :])[0] != zlib.crc32(payload):
            raise CorruptionError(f"{self.path}: {what} at offset {offset}: checksum mismatch")
        return payload

    def _load(self) -> None:
        size = self._file.size()
        if size < FOOTER_SIZE:
            raise CorruptionError(f"{self.path}: too short to be a table ({size} bytes)")
        footer = self._check(self._file.pread(size - FOOTER_SIZE, FOOTER_SIZE), "footer", size - FOOTER_SIZE)
        magic, version, index_off, index_len, bloom_off, bloom_len = FOOTER.unpack(footer)
        if magic != MAGIC:
            raise CorruptionError(f"{self.path}: bad magic number {magic:#x}: not a kvnode table")
        if version != FORMAT_VERSION:
            raise CorruptionError(f"{self.path}: table format version {version}, expected {FORMAT_VERSION}")
        if index_off + index_len > size or bloom_off + bloom_len > size:
            raise CorruptionError(f"{self.path}: footer points past the end of the file")
        raw = self._check(self._file.pread(index_off, index_len), "index block", index_off)
        try:
            meta = msgpack.unpackb(raw, raw=False)
            blocks = meta["blocks"]
            self.count: int = meta["count"]
            self.tombstones: int = meta["tombstones"]
            self.min_key: bytes = meta["min_key"]
            self.max_key: bytes = meta["max_key"]
        except (ValueError, KeyError, TypeError, msgpack.ExtraData) as e:
            raise CorruptionError(f"{self.path}: index block does not parse: {e}") from None
        self._last_keys: list[bytes] = [b[0] for b in blocks]
        self._offsets: list[int] = [b[1] for b in blocks]
        self._lengths: list[int] = [b[2] for b in blocks]
        self.size = size
        bloom_raw = self._check(self._file.pread(bloom_off, bloom_len), "bloom block", bloom_off)
        try:
            self._bloom = BloomFilter.from_bytes(bloom_raw)
        except ValueError:
            raise CorruptionError(f"{self.path}: bloom block does not parse") from None

    def meta(self) -> TableMeta:
        return TableMeta(
            number=self.number,
            size=self.size,
            count=self.count,
            tombstones=self.tombstones,
            min_key=self.min_key,
            max_key=self.max_key,
        )

    def may_contain(self, key: bytes, h: KeyHash | None = None) -> bool:
        """False only if the key is certainly not in this table (`h`: the
        key's `bloom.key_hash`, if the caller has it already)."""
        if key < self.min_key or key > self.max_key:
            return False
        return not self.use_bloom or self._bloom.may_contain_hash(h or key_hash(key))

    def bloom_says_absent(self, h: KeyHash) -> bool:
        """The bloom verdict alone, for a key already known to be in range."""
        return self.use_bloom and not self._bloom.may_contain_hash(h)

    @property
    def blocks(self) -> int:
        """The number of data blocks."""
        return len(self._last_keys)

    def block_range(self, i: int) -> tuple[bytes | None, bytes]:
        """(after, last): block `i` holds keys with after < key <= last (after
        None for the first block). From the index, which has a checksum of
        its own, so known even when the block itself is damaged."""
        return (self._last_keys[i - 1] if i else None), self._last_keys[i]

    def _corrupt(self, i: int, what: str) -> CorruptionError:
        after, last = self.block_range(i)
        return CorruptionError(
            f"{self.path}: block {i} at offset {self._offsets[i]}: {what} "
            f"(keys {'' if after is None else repr(after)[:40]}..{repr(last)[:40]} lost here)",
            path=self.path, table=self.number, block=i, after=after, last=last,
        )

    def _block(self, i: int, *, cache: bool = True) -> Block:
        """Data block `i`, decoded (from the cache when it is there); raises
        CorruptionError naming the table, the block and its key range."""
        cache_key = (self.number, i)
        if cache and self._cache is not None:
            cached = self._cache.get(cache_key)
            if cached is not None:
                return cached
        off, length = self._offsets[i], self._lengths[i]
        sealed = self._file.pread(off, length)
        if len(sealed) < max(length, CRC.size):
            raise self._corrupt(i, "truncated")
        payload = sealed[: -CRC.size]
        if CRC.unpack(sealed[-CRC.size :])[0] != zlib.crc32(payload):
            raise self._corrupt(i, "checksum mismatch")
        try:
            flat = msgpack.unpackb(payload, raw=False)
            if not isinstance(flat, list) or len(flat) % 2:
                raise ValueError("not a list of key, value pairs")
        except (ValueError, msgpack.ExtraData) as e:
            raise self._corrupt(i, f"does not parse: {e}") from None
        decoded: Block = (flat[0::2], flat[1::2])
        if cache and self._cache is not None:
            self._cache.put(cache_key, decoded, length)
        return decoded

    def read_block(self, i: int) -> list[Entry]:
        """The entries of data block `i` (CorruptionError if it is damaged);
        read past the cache, for checking and salvage."""
        keys, values = self._block(i, cache=False)
        return list(zip(keys, values, strict=True))

    def lookup(self, key: bytes) -> tuple[bool, bytes | None]:
        """(found, value): found with value None is a tombstone. Does not
        consult the bloom filter (the caller does, to count its verdicts)."""
        i = bisect.bisect_left(self._last_keys, key)
        if i == len(self._last_keys):
            return False, None
        keys, values = self._block(i)
        j = bisect.bisect_left(keys, key)
        if j < len(keys) and keys[j] == key:
            return True, values[j]
        return False, None

    def iterate(
        self,
        start: bytes | None = None,
        end: bytes | None = None,
        on_corrupt: Callable[[CorruptionError], None] | None = None,
    ) -> Iterator[Entry]:
        """Entries with start <= key < end, in order, tombstones included.

        A damaged block raises CorruptionError, or with `on_corrupt` is
        passed to it and skipped: the iteration goes on with the next block.
        The callback runs before any entry after the damaged block's range is
        yielded, which lets a merge of several tables hide the range."""
        i = 0 if start is None else bisect.bisect_left(self._last_keys, start)
        first = True
        while i < len(self._last_keys):
            try:
                keys, values = self._block(i)
            except CorruptionError as e:
                if on_corrupt is None:
                    raise
                on_corrupt(e)
                if end is not None and self._last_keys[i] >= end:
                    return
                first = False
                i += 1
                continue
            j = bisect.bisect_left(keys, start) if first and start is not None else 0
            first = False
            for n in range(j, len(keys)):
                k = keys[n]
                if end is not None and k >= end:
                    return
                yield k, values[n]
            if end is not None and self._last_keys[i] >= end:
                return
            i += 1

    def close(self) -> None:
        self._file.close()
