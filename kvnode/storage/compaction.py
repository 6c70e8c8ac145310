"""Compaction policy and the k-way merge it (and `scan`) run on.

The engine keeps its tables as a stack of sorted runs, newest first; a key's
current value is its version in the newest run that holds it. Compaction is
size-tiered (as in Cassandra's STCS and RocksDB's universal compaction), chosen
over leveled because it writes each byte fewer times, which matters for a node
that takes more writes than reads, and because its one invariant is easy to
read: it only ever merges a *contiguous* window of the stack, so the merged run
can take the window's place without reordering versions of any key.

A window is a run of at least `min_width` neighbours whose sizes are alike
(each within 0.5x-1.5x of the window's mean so far; tables smaller than
`small_bytes` count as that size, so freshly flushed tables always bucket
together). The newest such window is merged first. If no window qualifies and
the stack has grown past `max_tables`, the cheapest `min_width` neighbours are
merged anyway, to bound the tables a read may touch.

A tombstone is kept through a merge unless no older run (below the window) can
still hold its key, judged by each older table's key range and bloom filter:
dropping it earlier would resurrect an older value.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator

Entry = tuple[bytes, bytes | None]


def pick_window(
    sizes: list[int],
    *,
    min_width: int = 4,
    max_width: int = 32,
    small_bytes: int = 0,
    max_tables: int = 24,
) -> tuple[int, int] | None:
    """Choose tables[i:j] (newest first) to merge, or None."""
    n = len(sizes)
    eff = [max(s, small_bytes) for s in sizes]
    for i in range(n):
        total = eff[i]
        j = i + 1
        while j < n and j - i < max_width:
            mean = total / (j - i)
            if not 0.5 * mean <= eff[j] <= 1.5 * mean:
                break
            total += eff[j]
            j += 1
        if j - i >= min_width:
            return i, j
    if n > max_tables:
        width = min(min_width, n)
        best = min(range(n - width + 1), key=lambda i: sum(sizes[i : i + width]))
        return best, best + width
    return None


class _Missing:
    pass


def merge_newest(sources: Iterable[Iterator[Entry]]) -> Iterator[Entry]:
    """Merge sorted sources given newest first, yielding each key once with
    its newest value (tombstones included)."""
    for key, _rank, value in merge_newest_ranked(sources):
        yield key, value


def merge_newest_ranked(sources: Iterable[Iterator[Entry]]) -> Iterator[tuple[bytes, int, bytes | None]]:
    """`merge_newest`, with the rank (position in `sources`) of the source
    each newest value came from."""

    def tag(rank: int, source: Iterator[Entry]) -> Iterator[tuple[bytes, int, bytes | None]]:
        for key, value in source:
            yield key, rank, value

    last: bytes | _Missing = _Missing()
    for key, rank, value in heapq.merge(*(tag(r, s) for r, s in enumerate(sources))):
        if key != last:
            last = key
            yield key, rank, value


def drop_dead_tombstones(entries: Iterator[Entry], may_exist_below: Callable[[bytes], bool]) -> Iterator[Entry]:
    for key, value in entries:
        if value is None and not may_exist_below(key):
            continue
        yield key, value
