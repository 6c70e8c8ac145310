"""Many threads at once: writers share fsyncs (group commit), readers and
scans see consistent data while flushes and compactions run beside them."""

from __future__ import annotations

import threading
from pathlib import Path

from kvnode.storage import Engine

from .helpers import CountingFS


def test_concurrent_writers_share_fsyncs_and_lose_nothing(tmp_path: Path) -> None:
    fs = CountingFS()
    threads, per_thread = 8, 150
    errors: list[BaseException] = []
    with Engine.open(tmp_path, fs=fs, sync="always", memtable_bytes=16 * 1024) as db:
        barrier = threading.Barrier(threads)

        def writer(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    db.put(b"t%d-%04d" % (t, i), b"v%d" % i)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors
        for t in range(threads):
            for i in range(per_thread):
                assert db.get(b"t%d-%04d" % (t, i)) == b"v%d" % i
        stats = db.stats()
    writes = threads * per_thread
    # Each write was durable before it returned, yet fsyncs were shared.
    assert fs.wal_syncs[0] < writes, (fs.wal_syncs[0], writes)
    assert stats["flushes"] > 0


def test_reads_and_scans_during_flush_and_compaction(tmp_path: Path) -> None:
    """Every scan is a consistent snapshot: a writer updates pairs of keys
    atomically (one batch), so a scan must never see the two differ."""
    stop = threading.Event()
    problems: list[str] = []
    with Engine.open(tmp_path, memtable_bytes=2 * 1024, compaction_min_width=2, sync="never") as db:
        db.write_batch([("put", b"a%03d" % i, b"0") for i in range(50)] +
                       [("put", b"b%03d" % i, b"0") for i in range(50)])

        def reader() -> None:
            while not stop.is_set():
                snapshot = dict(db.scan())
                for i in range(50):
                    if snapshot[b"a%03d" % i] != snapshot[b"b%03d" % i]:
                        problems.append(f"torn batch seen at {i}")
                        return

        r = threading.Thread(target=reader)
        r.start()
        try:
            for n in range(1, 1000):
                i = n % 50
                db.write_batch([("put", b"a%03d" % i, b"%d" % n), ("put", b"b%03d" % i, b"%d" % n)])
        finally:
            stop.set()
            r.join()
        stats = db.stats()
    assert not problems, problems
    assert stats["flushes"] > 0 and stats["compactions"] > 0
