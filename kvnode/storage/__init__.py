"""kvnode.storage: the node's crash-safe LSM storage engine.

    from kvnode.storage import Engine, CorruptionError
    db = Engine.open(path, sync="always")
    db.put(b"k", b"v"); db.get(b"k"); db.delete(b"k")
    db.write_batch([("put", b"a", b"1"), ("delete", b"b", None)])
    for key, value in db.scan(b"a", b"z"): ...
    db.flush(); db.compact(); db.stats(); db.close()
    db.scan(damaged=errors)   # skip damaged blocks, hiding their key ranges
    db.verify(); db.salvage() # every damaged block; rebuild tables without them
    Engine.open(path, read_only=True)  # creates and changes nothing

A write-ahead log (`wal`), a sorted memtable (`memtable`), immutable SSTables
with bloom filters (`sstable`, `bloom`), a manifest of live tables
(`manifest`) and size-tiered compaction (`compaction`), tied together by
`engine`. All file access goes through `fs` and all background work through
`background`, the two seams a deterministic simulation replaces. No network
code lives here.
"""

from .background import Background, InlineBackground, ThreadBackground
from .engine import Engine, LostRange, Options
from .errors import (
    BackgroundError,
    CorruptionError,
    EngineClosedError,
    NotADataDirectory,
    ReadOnlyError,
)
from .fs import FileSystem, LockHeldError, OSFileSystem

__all__ = [
    "Background",
    "BackgroundError",
    "CorruptionError",
    "Engine",
    "EngineClosedError",
    "FileSystem",
    "InlineBackground",
    "LockHeldError",
    "LostRange",
    "NotADataDirectory",
    "OSFileSystem",
    "Options",
    "ReadOnlyError",
    "ThreadBackground",
]
