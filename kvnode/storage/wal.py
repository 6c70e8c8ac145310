"""The write-ahead log: every mutation is appended here before it is applied.

A segment file (`000007.wal`) is a sequence of records, each framed as

    length: u32 big-endian | crc32(payload): u32 big-endian | payload

where the payload is one msgpack-encoded write batch, a list of
`[op, key, value]` with op 0 = put and 1 = delete. One batch is one record, so
a batch is all or nothing after a crash: a torn record fails its checksum.

Recovery reads records up to the first one that is short, has a zero or absurd
length, fails its checksum or does not decode. Everything from there on is the
torn tail of a crash (or damage): `read_segment` reports where the good part
ends, and the engine truncates the file there and logs what it dropped.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import msgpack

from .fs import AppendFile, FileSystem

HEADER = struct.Struct(">II")
OP_PUT = 0
OP_DELETE = 1

# A batch is bounded by the engine's key/value limits times its length; this
# only guards recovery against reading a garbage length as a huge allocation.
MAX_RECORD = 1 << 31

Mutation = tuple[int, bytes, bytes | None]


def encode_batch(batch: list[Mutation]) -> bytes:
    payload = msgpack.packb(batch, use_bin_type=True)
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> list[Mutation] | None:
    try:
        raw = msgpack.unpackb(payload, raw=False, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not isinstance(raw, list) or not raw:
        return None
    out: list[Mutation] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], bytes)):
            return None
        op, key, value = item
        if op == OP_PUT and isinstance(value, bytes):
            out.append((OP_PUT, key, value))
        elif op == OP_DELETE and value is None:
            out.append((OP_DELETE, key, None))
        else:
            return None
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class SegmentRead:
    batches: list[list[Mutation]]
    good_bytes: int  # offset just past the last good record
    total_bytes: int
    reason: str | None  # why reading stopped early, None if the file is clean


def read_segment(data: bytes) -> SegmentRead:
    """Decode a whole segment, stopping at the first damaged record."""
    batches: list[list[Mutation]] = []
    pos = 0
    total = len(data)
    reason: str | None = None
    while pos < total:
        if total - pos < HEADER.size:
            reason = f"torn record header at offset {pos}"
            break
        length, crc = HEADER.unpack_from(data, pos)
        start = pos + HEADER.size
        if length == 0 or length > MAX_RECORD:
            reason = f"bad record length {length} at offset {pos}"
            break
        if start + length > total:
            reason = f"torn record at offset {pos} ({total - start} of {length} bytes)"
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            reason = f"checksum mismatch in record at offset {pos}"
            break
        batch = _decode_payload(payload)
        if batch is None:
            reason = f"undecodable record at offset {pos}"
            break
        batches.append(batch)
        pos = start + length
    return SegmentRead(batches=batches, good_bytes=pos, total_bytes=total, reason=reason)


class WalWriter:
    """Appends framed records to one segment. Not thread-safe: the engine's
    write leader is the only caller of `append`; `sync` may be called from the
    interval syncer concurrently, which only fsyncs the file descriptor."""

    def __init__(self, fs: FileSystem, path: str, number: int, *, create: bool = True) -> None:
        self.path = path
        self.number = number
        self._file: AppendFile = fs.create(path) if create else fs.append(path)

    def append(self, records: bytes) -> None:
        self._file.write(records)

    def sync(self) -> None:
        self._file.sync()

    def size(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
