"""Storage benchmark: the kvnode LSM engine against sqlite3 and RocksDB.

One run prints one table. For each engine, in a directory of its own:

- random writes: `--keys` keys (`b"key%012d"` of the odd numbers 1, 3, 5, ...)
  with 100-byte values, in a random order, in batches of `--batch`; each batch
  is one durable commit, so every engine pays one fsync per batch:
  ours with `sync="always"` and one `write_batch` per batch; sqlite3 (standard
  library) in WAL mode with `synchronous=FULL`, one `WITHOUT ROWID` table keyed
  by a primary key and one transaction (`executemany`) per batch; RocksDB
  through `rocksdict` with one `WriteBatch` per batch written with `sync=True`
  (and 10-bit bloom filters, as ours has);
- random reads of `--reads` present keys, and of `--reads` missing keys (the
  even numbers between the present ones, so that no key-range check rules
  them out);
- range scans: `--scans` scans of `--scan-length` consecutive keys from random
  start points, reported in entries/s.

Every figure is ops/s, next to its ratio to sqlite3. Only the engine calls are
timed (the keys and values of a batch are made beforehand). Between the writes
and the reads each engine is settled, untimed: ours flushes its memtable, is
closed and reopened with an inline background so that compaction runs to rest
and reads hit SSTables rather than the memtable or a racing compaction; sqlite3
checkpoints its WAL; RocksDB flushes its memtable.

A second table is ours alone: missing-key reads with bloom filters off and on,
each on a freshly reopened engine over the same tables, with the engine's
bloom counters.

Run it from the repository root:

    python -m bench.storage                    # 1,000,000 keys: several minutes
    python -m bench.storage --keys 20000       # quick: a few seconds
    python -m bench.storage --engines ours,sqlite --dir /mnt/ssd

Targets from the issue, printed and never asserted: writes at least 0.5x
sqlite3's rate at equal durability; missing-key reads at least 5x faster with
bloom filters than without. RocksDB is skipped, with a note, when `rocksdict`
is not importable.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from tabulate import tabulate

from bench.common import filesystem, positive, version
from kvnode.storage import Engine, InlineBackground

if TYPE_CHECKING:
    import rocksdict

ENGINES = ("ours", "sqlite", "rocksdb")
BASELINE = "sqlite"
VALUE_SIZE = 100
BLOOM_BITS_PER_KEY = 10

WRITES = "random writes"
READS_PRESENT = "random reads, present keys"
READS_MISSING = "random reads, missing keys"
SCANS = "range scans (entries/s)"
WORKLOADS = (WRITES, READS_PRESENT, READS_MISSING, SCANS)

_POOL_BYTES = 1 << 20
_VERIFY_SAMPLE = 100
_CLOSE_TIMEOUT = 5.0


def key_of(n: int) -> bytes:
    """The key for number `n`: odd numbers are written, even ones never are."""
    return b"key%012d" % n


# ---------------------------------------------------------------- workload


@dataclass(frozen=True, kw_only=True, slots=True)
class Params:
    keys: int
    batch: int
    reads: int
    scans: int
    scan_length: int
    seed: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Workload:
    """The operations every engine runs, made once from the seed.

    Index i in 0..keys-1 stands for key `key_of(2 * i + 1)`."""

    order: list[int]  # indices in write order (a random permutation)
    present: list[bytes]  # keys to read that were written
    missing: list[bytes]  # keys to read that never were, inside the key range
    scans: list[tuple[bytes, bytes]]  # [start, end), each holding scan_length keys
    pool: bytes  # values are 100-byte windows of this random buffer

    @classmethod
    def make(cls, p: Params) -> Workload:
        rng = random.Random(p.seed)
        order = list(range(p.keys))
        rng.shuffle(order)
        n = p.keys
        present = [key_of(2 * rng.randrange(n) + 1) for _ in range(p.reads)]
        missing = [key_of(2 * rng.randrange(1, n)) for _ in range(p.reads)]
        length = min(p.scan_length, n)
        scans = []
        for _ in range(p.scans):
            i = rng.randrange(n - length + 1)
            scans.append((key_of(2 * i + 1), key_of(2 * (i + length) + 1)))
        pool = rng.randbytes(_POOL_BYTES + VALUE_SIZE)
        return cls(order=order, present=present, missing=missing, scans=scans, pool=pool)

    def value(self, i: int) -> bytes:
        # 4099 is odd, so indices below 2**20 get distinct offsets.
        off = (i * 4099) % _POOL_BYTES
        return self.pool[off : off + VALUE_SIZE]

    def batches(self, size: int) -> list[list[int]]:
        return [self.order[lo : lo + size] for lo in range(0, len(self.order), size)]


# ------------------------------------------------------------------ stores


class Store(Protocol):
    """One engine under test, open on a directory of its own."""

    def write_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Commit `pairs` atomically and durably (one fsync); timed."""
        ...

    def settle(self) -> list[str]:
        """Called once between the writes and the reads, untimed: get the data
        out of the memtable and log. Returns notes to print; must not drop data."""
        ...

    def get(self, key: bytes) -> bytes | None:
        """One lookup; used only to verify values, untimed."""
        ...

    def count_found(self, keys: list[bytes]) -> int:
        """Look up every key in turn and return how many exist; timed."""
        ...

    def scan(self, start: bytes, end: bytes) -> int:
        """Read every entry with start <= key < end, in order; return how many; timed."""
        ...

    def close(self) -> None:
        """Release the directory. Safe to call twice, and after a failure."""
        ...


class OursStore:
    """kvnode.storage with sync="always": one write_batch, one fsync per batch."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = Engine.open(path, sync="always")

    def write_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        self._db.write_batch([("put", k, v) for k, v in pairs])

    def reopen(self, *, bloom: bool = True) -> None:
        """Close and open again with an inline background: any compaction that
        is due runs to rest inside `open`, so none races the reads after it."""
        self._db.close()
        self._db = Engine.open(self.path, sync="always", bloom=bloom, background=InlineBackground())

    def stats(self) -> dict[str, Any]:
        return self._db.stats()

    def settle(self) -> list[str]:
        t0 = perf_counter()
        self._db.flush()
        flushed = perf_counter() - t0
        s = self._db.stats()
        t0 = perf_counter()
        self.reopen()
        reopened = perf_counter() - t0
        r = self._db.stats()
        runs = ", ".join(f"{size / 2**20:.1f}" for size in r["runs"])
        return [
            f"ours: during the writes {s['flushes']} flushes, {s['compactions']} compactions, "
            f"{s['write_stalls']} write stalls; flush() took {flushed:.2f}s and left "
            f"{s['tables']} tables",
            f"ours: close + reopen took {reopened:.2f}s ({r['compactions']} more compactions "
            f"to rest); reads ran on {r['tables']} tables of [{runs}] MiB, "
            f"{r['table_bytes'] / 2**20:.1f} MiB in all",
        ]

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def count_found(self, keys: list[bytes]) -> int:
        get = self._db.get
        found = 0
        for key in keys:
            if get(key) is not None:
                found += 1
        return found

    def scan(self, start: bytes, end: bytes) -> int:
        n = 0
        for _ in self._db.scan(start, end):
            n += 1
        return n

    def close(self) -> None:
        self._db.close()


class SqliteStore:
    """sqlite3 in WAL mode, synchronous=FULL: one transaction, one fsync per batch."""

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self._path = os.path.join(path, "kv.sqlite3")
        self._conn = sqlite3.connect(self._path, isolation_level=None)
        mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"sqlite3 refused WAL mode (journal_mode={mode})")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self._cur = self._conn.cursor()

    def write_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        conn = self._conn
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", pairs)
        conn.execute("COMMIT")

    def settle(self) -> list[str]:
        wal = self._path + "-wal"
        size = os.path.getsize(wal) if os.path.exists(wal) else 0
        t0 = perf_counter()
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return [f"sqlite: checkpointing a {size / 2**20:.1f} MiB WAL took {perf_counter() - t0:.2f}s"]

    def get(self, key: bytes) -> bytes | None:
        row = self._cur.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def count_found(self, keys: list[bytes]) -> int:
        execute = self._cur.execute
        query = "SELECT v FROM kv WHERE k = ?"
        found = 0
        for key in keys:
            if execute(query, (key,)).fetchone() is not None:
                found += 1
        return found

    def scan(self, start: bytes, end: bytes) -> int:
        n = 0
        for _ in self._conn.execute("SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k", (start, end)):
            n += 1
        return n

    def close(self) -> None:
        self._conn.close()


class RocksStore:
    """RocksDB through rocksdict, raw bytes: one WriteBatch with sync=True per batch."""

    def __init__(self, path: str) -> None:
        import rocksdict

        self._rocksdict = rocksdict
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, False)
        options.set_block_based_table_factory(table)
        self._db: rocksdict.Rdict = rocksdict.Rdict(path, options)
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self._closed = False

    def write_batch(self, pairs: list[tuple[bytes, bytes]]) -> None:
        batch = self._rocksdict.WriteBatch(raw_mode=True)
        put = batch.put
        for k, v in pairs:
            put(k, v)
        self._db.write(batch, self._sync)

    def settle(self) -> list[str]:
        t0 = perf_counter()
        self._db.flush(True)
        files = len(self._db.live_files())
        return [f"rocksdb: flush took {perf_counter() - t0:.2f}s; {files} live SST files"]

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def count_found(self, keys: list[bytes]) -> int:
        get = self._db.get
        found = 0
        for key in keys:
            if get(key) is not None:
                found += 1
        return found

    def scan(self, start: bytes, end: bytes) -> int:
        bounds = self._rocksdict.ReadOptions()
        bounds.set_iterate_upper_bound(end)
        n = 0
        for _ in self._db.items(from_key=start, read_opt=bounds):
            n += 1
        return n

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()


def open_store(name: str, path: str) -> Store:
    if name == "ours":
        return OursStore(path)
    if name == "sqlite":
        return SqliteStore(path)
    if name == "rocksdb":
        return RocksStore(path)
    raise ValueError(f"unknown engine {name!r}")


# ------------------------------------------------------------------ running


@dataclass(frozen=True, kw_only=True, slots=True)
class BloomRow:
    bloom: bool
    rate: float
    tables: int
    negatives: int
    false_positives: int
    true_positives: int


@dataclass(kw_only=True, slots=True)
class Result:
    rates: dict[str, float] = field(default_factory=dict)  # workload -> ops/s
    notes: list[str] = field(default_factory=list)
    bloom: list[BloomRow] = field(default_factory=list)  # ours only


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _verify(name: str, store: Store, w: Workload) -> None:
    """Untimed: sampled present keys hold their values, missing keys are absent."""
    for i in w.order[:_VERIFY_SAMPLE]:
        got = store.get(key_of(2 * i + 1))
        if got != w.value(i):
            raise RuntimeError(f"{name}: key {key_of(2 * i + 1)!r} reads back {got!r:.40}, not its value")
    for key in w.missing[:_VERIFY_SAMPLE]:
        if store.get(key) is not None:
            raise RuntimeError(f"{name}: key {key!r} was never written but reads back a value")


def _timed_reads(name: str, what: str, store: Store, keys: list[bytes], expect: int) -> float:
    t0 = perf_counter()
    found = store.count_found(keys)
    elapsed = perf_counter() - t0
    if found != expect:
        raise RuntimeError(f"{name}: {what}: found {found} of {len(keys)} keys, expected {expect}")
    return _rate(len(keys), elapsed)


def _bloom_rows(store: OursStore, missing: list[bytes]) -> list[BloomRow]:
    rows = []
    for bloom in (False, True):
        store.reopen(bloom=bloom)
        rate = _timed_reads("ours", f"missing keys, bloom={bloom}", store, missing, 0)
        s = store.stats()
        rows.append(BloomRow(
            bloom=bloom, rate=rate, tables=s["tables"], negatives=s["bloom"]["negatives"],
            false_positives=s["bloom"]["false_positives"], true_positives=s["bloom"]["true_positives"],
        ))
    return rows


def _close_after_failure(name: str, store: Store) -> None:
    """Close `store` after an error or Ctrl-C, giving up after a few seconds: an
    engine interrupted mid-write may never finish closing, and the benchmark
    must still remove its directory and exit."""
    closer = threading.Thread(target=store.close, name=f"bench-close-{name}", daemon=True)
    closer.start()
    closer.join(_CLOSE_TIMEOUT)
    if closer.is_alive():
        _progress(f"[{name}] did not close within {_CLOSE_TIMEOUT:.0f}s after the failure; abandoning it")


def run_engine(name: str, path: str, w: Workload, p: Params) -> Result:
    """Run every workload on engine `name` in directory `path` (made here)."""
    result = Result()
    store = open_store(name, path)
    try:
        _run(name, store, w, p, result)
    except BaseException:
        _close_after_failure(name, store)
        raise
    store.close()
    return result


def _run(name: str, store: Store, w: Workload, p: Params, result: Result) -> None:
    _progress(f"[{name}] writing {p.keys:,} keys in batches of {p.batch:,}")
    elapsed = 0.0
    for batch in w.batches(p.batch):
        pairs = [(key_of(2 * i + 1), w.value(i)) for i in batch]
        t0 = perf_counter()
        store.write_batch(pairs)
        elapsed += perf_counter() - t0
    result.rates[WRITES] = _rate(p.keys, elapsed)

    _progress(f"[{name}] settling")
    result.notes += store.settle()
    _verify(name, store, w)

    _progress(f"[{name}] reading {len(w.present):,} present and {len(w.missing):,} missing keys")
    result.rates[READS_PRESENT] = _timed_reads(name, "present keys", store, w.present, len(w.present))
    result.rates[READS_MISSING] = _timed_reads(name, "missing keys", store, w.missing, 0)

    _progress(f"[{name}] {len(w.scans)} range scans")
    expect = len(w.scans) * min(p.scan_length, p.keys)
    t0 = perf_counter()
    seen = sum(store.scan(start, end) for start, end in w.scans)
    elapsed = perf_counter() - t0
    if seen != expect:
        raise RuntimeError(f"{name}: range scans returned {seen} entries, expected {expect}")
    result.rates[SCANS] = _rate(seen, elapsed)

    if isinstance(store, OursStore):
        _progress("[ours] missing keys with bloom filters off, then on")
        result.bloom = _bloom_rows(store, w.missing)


def resolve_engines(requested: Sequence[str]) -> tuple[list[str], list[str]]:
    """The engines that can run, in the order asked, and notes on the rest."""
    engines: list[str] = []
    notes: list[str] = []
    for name in requested:
        if name == "rocksdb":
            try:
                import rocksdict  # noqa: F401
            except ImportError as e:
                notes.append(f"rocksdb skipped: rocksdict is not importable ({type(e).__name__}: {e})")
                continue
        if name not in engines:
            engines.append(name)
    return engines, notes


# ------------------------------------------------------------------ output


def _fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def _fmt_ratio(x: float, base: float) -> str:
    return f"{x / base:.2f}x" if base > 0 else "n/a"


def results_table(results: dict[str, Result]) -> str:
    """Rows are workloads; per engine an ops/s column and its ratio to sqlite3."""
    headers = ["workload"]
    for name in results:
        headers.append(f"{name} ops/s")
        if name != BASELINE and BASELINE in results:
            headers.append(f"{name}/{BASELINE}")
    rows = []
    for workload in WORKLOADS:
        row = [workload]
        for name, r in results.items():
            row.append(_fmt_rate(r.rates[workload]))
            if name != BASELINE and BASELINE in results:
                row.append(_fmt_ratio(r.rates[workload], results[BASELINE].rates[workload]))
        rows.append(row)
    return tabulate(rows, headers=headers, colalign=["left"] + ["right"] * (len(headers) - 1))


def bloom_table(rows: list[BloomRow]) -> str:
    off = next(r.rate for r in rows if not r.bloom)
    body = [
        [
            "on" if r.bloom else "off", r.tables, _fmt_rate(r.rate), _fmt_ratio(r.rate, off),
            f"{r.negatives:,}", f"{r.false_positives:,}", f"{r.true_positives:,}",
        ]
        for r in rows
    ]
    headers = ["bloom", "tables", "missing reads/s", "vs off", "negatives", "false positives", "true positives"]
    return tabulate(body, headers=headers, colalign=["left"] + ["right"] * (len(headers) - 1))


def header(p: Params, base: str, engines: list[str]) -> str:
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    commits = -(-p.keys // p.batch)
    lines = [
        "storage benchmark: kvnode.storage vs sqlite3 vs RocksDB (rocksdict)",
        f"python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.platform()}; {cpus} CPUs ({usable} usable)",
        f"sqlite {sqlite3.sqlite_version}; rocksdict {version('rocksdict')}; "
        f"msgpack {version('msgpack')}",
        f"dir {base} ({filesystem(base)})",
        f"engines {', '.join(engines)}; keys {p.keys:,} x {VALUE_SIZE}-byte values in random order; "
        f"batch {p.batch:,} ({commits:,} commits, one fsync each)",
        f"reads {p.reads:,} present + {p.reads:,} missing; scans {p.scans:,} x "
        f"{min(p.scan_length, p.keys):,} keys; seed {p.seed}",
    ]
    return "\n".join(lines)


def targets(results: dict[str, Result]) -> list[str]:
    """The issue's targets, as lines of text (never asserted)."""
    lines = []
    if "ours" in results and BASELINE in results:
        ratio = results["ours"].rates[WRITES] / results[BASELINE].rates[WRITES]
        verdict = "met" if ratio >= 0.5 else "NOT met"
        lines.append(f"target: writes >= 0.5x sqlite3 at equal durability: {ratio:.2f}x ({verdict})")
    if "ours" in results and results["ours"].bloom:
        rows = {r.bloom: r.rate for r in results["ours"].bloom}
        ratio = rows[True] / rows[False]
        verdict = "met" if ratio >= 5 else "NOT met"
        lines.append(f"target: missing-key reads >= 5x faster with bloom filters: {ratio:.2f}x ({verdict})")
    return lines


# --------------------------------------------------------------------- main


def _engine_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ENGINES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown engine(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ENGINES)}"
        )
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage",
        description="Random writes, random reads (present and missing keys) and range scans, for "
        "kvnode.storage, sqlite3 and RocksDB at equal durability; prints ops/s and ratios to sqlite3.",
    )
    parser.add_argument("--keys", type=positive, default=1_000_000, help="keys to write (default 1,000,000)")
    parser.add_argument("--batch", type=positive, default=1000, help="keys per durable commit (default 1000)")
    parser.add_argument("--reads", type=positive, default=None,
                        help="random reads of present keys, and as many of missing keys "
                        "(default: 100,000, or --keys if fewer)")
    parser.add_argument("--scans", type=positive, default=100, help="range scans (default 100)")
    parser.add_argument("--scan-length", type=positive, default=1000, help="keys per range scan (default 1000)")
    parser.add_argument("--dir", default=None, help="where to make the temporary directories (default: the system temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--engines", type=_engine_list, default=list(ENGINES),
                        help="comma-separated, from ours,sqlite,rocksdb (default: all three)")
    args = parser.parse_args(argv)
    if args.keys < 2:
        parser.error("--keys must be at least 2")
    if args.reads is None:
        args.reads = min(100_000, args.keys)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    p = Params(keys=args.keys, batch=args.batch, reads=args.reads, scans=args.scans,
               scan_length=args.scan_length, seed=args.seed)
    engines, skipped = resolve_engines(args.engines)
    if args.dir is not None:
        os.makedirs(args.dir, exist_ok=True)
    base = tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir)
    try:
        print(header(p, base, engines), flush=True)
        for note in skipped:
            print(f"note: {note}", flush=True)
        print(flush=True)
        w = Workload.make(p)
        results: dict[str, Result] = {}
        for name in engines:
            path = os.path.join(base, name)
            try:
                results[name] = run_engine(name, path, w, p)
            finally:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    if results:
        print(results_table(results))
    if "ours" in results and results["ours"].bloom:
        print()
        print("ours, missing-key reads with bloom filters off and on (each on a freshly reopened engine):")
        print(bloom_table(results["ours"].bloom))
    notes = [n for r in results.values() for n in r.notes]
    if notes or skipped:
        print()
        for note in skipped + notes:
            print(f"note: {note}")
    lines = targets(results)
    if lines:
        print()
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
