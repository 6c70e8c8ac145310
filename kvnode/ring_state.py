"""The ring a node last adopted, kept in its data directory (`RING`), so that
a node restarting after joins or leaves places keys by the current ring from
its first request, not by the static ring of its configuration.

JSON `{"epoch": N, "ring": Ring.to_dict(), "addresses": {...}}`, replaced
atomically (temporary file, fsync, rename, directory fsync) through the
storage engine's file-system seam.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .ring import Ring
from .storage.fs import FileSystem, OSFileSystem

NAME = "RING"


def save(directory: str, epoch: int, ring: Ring, addresses: dict[str, str], *, fs: FileSystem | None = None) -> None:
    fs = fs or OSFileSystem()
    doc = json.dumps({"epoch": epoch, "ring": ring.to_dict(), "addresses": addresses}, sort_keys=True)
    path = os.path.join(directory, NAME)
    f = fs.create(path + ".new")
    try:
        f.write(doc.encode())
        f.sync()
    finally:
        f.close()
    fs.rename(path + ".new", path)
    fs.sync_dir(directory)


def load(directory: str, *, fs: FileSystem | None = None) -> tuple[int, Ring, dict[str, str]] | None:
    """The saved (epoch, ring, addresses), or None if none was saved.
    Raises ValueError, naming the file, if it is damaged."""
    fs = fs or OSFileSystem()
    path = os.path.join(directory, NAME)
    if not fs.exists(path):
        return None
    try:
        doc: Any = json.loads(fs.read_all(path))
        epoch, ring = int(doc["epoch"]), Ring.from_dict(doc["ring"])
        addresses = {str(k): str(v) for k, v in dict(doc["addresses"]).items()}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: damaged ring state: {e}") from None
    return epoch, ring, addresses
