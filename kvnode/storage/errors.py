"""Errors the storage engine raises to its callers."""


class CorruptionError(Exception):
    """Stored data failed a checksum or does not parse. The message names the
    file and, for an SSTable, the block; no wrong value is ever returned in
    its place."""


class EngineClosedError(RuntimeError):
    """The engine was used after `close()`."""


class BackgroundError(RuntimeError):
    """A flush or compaction failed (a full disk, say). The engine refuses
    further writes rather than acknowledge what it cannot persist; reopen it."""
