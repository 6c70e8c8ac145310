"""The manifest: which tables are live, in which order, and which WAL segments
still hold data that no table does.

`MANIFEST` is a small JSON document (readable by a person debugging a data
directory) that is never edited in place: a new one is written to
`MANIFEST.tmp`, fsynced, renamed over the old one and the directory fsynced.
A crash leaves either the old manifest or the new one, so a flush or a
compaction that was cut short leaves the old tables in force; the files it had
written are orphans, removed at the next open.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field

from .errors import CorruptionError
from .fs import FileSystem
from .sstable import TableMeta

NAME = "MANIFEST"
FORMAT = 1


@dataclass(kw_only=True, slots=True)
class Manifest:
    next_file: int = 1
    # WAL segments numbered below this are covered by tables and may go.
    log_number: int = 0
    # Sorted runs, newest first: a key's newest version is in the first table holding it.
    tables: list[TableMeta] = field(default_factory=list)


def _table_to_json(t: TableMeta) -> dict[str, object]:
    return {
        "file": t.number,
        "size": t.size,
        "count": t.count,
        "tombstones": t.tombstones,
        "min_key": t.min_key.hex(),
        "max_key": t.max_key.hex(),
    }


def _table_from_json(d: dict[str, object]) -> TableMeta:
    return TableMeta(
        number=int(d["file"]),  # type: ignore[call-overload]
        size=int(d["size"]),  # type: ignore[call-overload]
        count=int(d["count"]),  # type: ignore[call-overload]
        tombstones=int(d["tombstones"]),  # type: ignore[call-overload]
        min_key=bytes.fromhex(str(d["min_key"])),
        max_key=bytes.fromhex(str(d["max_key"])),
    )


def load(fs: FileSystem, directory: str) -> Manifest:
    path = os.path.join(directory, NAME)
    if not fs.exists(path):
        return Manifest()
    raw = fs.read_all(path)
    try:
        doc = json.loads(raw)
        body = doc["body"]
        crc = doc["crc32"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptionError(f"{path}: does not parse: {e}") from None
    canonical = json.dumps(body, sort_keys=True).encode()
    if zlib.crc32(canonical) != crc:
        raise CorruptionError(f"{path}: checksum mismatch")
    if body.get("format") != FORMAT:
        raise CorruptionError(f"{path}: manifest format {body.get('format')}, expected {FORMAT}")
    try:
        return Manifest(
            next_file=int(body["next_file"]),
            log_number=int(body["log_number"]),
            tables=[_table_from_json(t) for t in body["tables"]],
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptionError(f"{path}: malformed entry: {e}") from None


def save(fs: FileSystem, directory: str, manifest: Manifest) -> None:
    body = {
        "format": FORMAT,
        "next_file": manifest.next_file,
        "log_number": manifest.log_number,
        "tables": [_table_to_json(t) for t in manifest.tables],
    }
    canonical = json.dumps(body, sort_keys=True).encode()
    doc = json.dumps({"body": body, "crc32": zlib.crc32(canonical)}, indent=1, sort_keys=True)
    path = os.path.join(directory, NAME)
    tmp = path + ".tmp"
    f = fs.create(tmp)
    try:
        f.write(doc.encode())
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(directory)
