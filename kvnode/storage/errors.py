"""Errors the storage engine raises to its callers."""

from __future__ import annotations


class CorruptionError(Exception):
    """Stored data failed a checksum or does not parse. The message names the
    file and, for an SSTable, the block; no wrong value is ever returned in
    its place.

    For a damaged data block the fields say what was lost: `path` and
    `table` (the file and its number), `block` (its index in the table), and
    the key range the block covered, `after < key <= last` (`after` None: from
    the table's first key). A caller that can get the keys of that range from
    elsewhere (a replica) uses them; a damaged footer, index or manifest
    leaves them None."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        table: int | None = None,
        block: int | None = None,
        after: bytes | None = None,
        last: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.table = table
        self.block = block
        self.after = after
        self.last = last

    def covers(self, key: bytes) -> bool:
        """Whether `key` is in the damaged block's key range (False when the
        range is not known)."""
        if self.last is None:
            return False
        return (self.after is None or key > self.after) and key <= self.last


class EngineClosedError(RuntimeError):
    """The engine was used after `close()`."""


class ReadOnlyError(RuntimeError):
    """A write to an engine opened with `read_only=True`."""


class NotADataDirectory(FileNotFoundError):
    """`Engine.open(..., read_only=True)` of a directory that holds no
    MANIFEST: there is nothing to read, and a read-only open creates nothing."""


class BackgroundError(RuntimeError):
    """A flush or compaction failed (a full disk, say). The engine refuses
    further writes rather than acknowledge what it cannot persist; reopen it."""
