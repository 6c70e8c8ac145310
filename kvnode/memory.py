"""Keeping a node's resident memory close to what it holds.

The block cache and the memtable are bounded in bytes, yet a node that had
served a few 15 MiB values sat at hundreds of MB resident, idle, holding
none of them. The cause is glibc's malloc: it serves a block above its mmap
threshold (128 KiB to start) with its own mapping, returned to the system
at free, but on such a free it raises the threshold to that block's size
(up to 32 MiB). After the first large value, large blocks come from the
heap, and heap space freed below the top is never given back. Setting the
threshold (and the trim threshold) explicitly turns that adjustment off:
large blocks keep their own mappings and go back to the system when freed.
Small objects, which are most of a node's allocations, are unaffected.

`return_large_blocks()` is called once at node start. Elsewhere than glibc
it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def return_large_blocks(threshold: int = 128 << 10) -> bool:
    """Have malloc map every block of `threshold` bytes or more on its own
    and trim the heap beyond `threshold` free bytes; True if it took."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
