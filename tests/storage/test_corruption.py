"""A damaged data block: reads of its keys raise CorruptionError naming the
table, the block and its key range; everything else goes on (scans that skip
it, writes, compaction of the other tables); `salvage` rebuilds the table
without it and says what was lost; read-only opens create nothing; the block
cache is bounded in bytes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from kvnode.storage import (
    CorruptionError,
    Engine,
    InlineBackground,
    NotADataDirectory,
    ReadOnlyError,
)

from .helpers import corrupt_block, data_blocks, flip_byte


def _one_table(path: Path, n: int = 2000) -> tuple[dict[bytes, bytes], Path]:
    data = {b"key%06d" % i: b"v" * 50 + b"%06d" % i for i in range(n)}
    with Engine.open(path) as db:
        db.write_batch([("put", k, v) for k, v in data.items()])
        db.flush()
    (sst,) = sorted(path.glob("*.sst"))
    return data, sst


def test_a_read_of_a_damaged_block_names_table_block_and_range(tmp_path: Path) -> None:
    data, sst = _one_table(tmp_path)
    corrupt_block(sst, 3)
    with Engine.open(tmp_path) as db:
        errors = []
        for k, v in data.items():
            try:
                assert db.get(k) == v
            except CorruptionError as e:
                errors.append((k, e))
    assert errors, "some key lives in block 3"
    for key, e in errors:
        assert e.table == int(sst.stem) and e.block == 3 and e.path == str(sst)
        assert e.covers(key) and "block 3" in str(e) and sst.name in str(e)
    keys = [k for k, _ in errors]
    assert keys == sorted(keys) and len(keys) == keys.index(keys[-1]) + 1


def test_scan_with_damaged_skips_the_block_and_reports_its_range(tmp_path: Path) -> None:
    data, sst = _one_table(tmp_path)
    corrupt_block(sst, 2)
    with Engine.open(tmp_path) as db:
        with pytest.raises(CorruptionError):
            list(db.scan())
        damaged: list[CorruptionError] = []
        got = dict(db.scan(damaged=damaged))
        assert [e.block for e in damaged] == [2]
        lost = {k for k in data if damaged[0].covers(k)}
        assert lost and got == {k: v for k, v in data.items() if k not in lost}
        # A key of the range written again is newer than the damage: it shows.
        again = min(lost)
        db.put(again, b"fresh")
        damaged = []
        got = dict(db.scan(damaged=damaged))
        assert got[again] == b"fresh" and len(damaged) == 1
        assert db.get(again) == b"fresh"


def test_an_older_version_never_stands_in_for_a_damaged_newer_one(tmp_path: Path) -> None:
    with Engine.open(tmp_path) as db:
        db.write_batch([("put", b"k%04d" % i, b"old") for i in range(300)])
        db.flush()
        db.write_batch([("put", b"k%04d" % i, b"new") for i in range(300)])
        db.flush()
        newest = max(int(p.stem) for p in tmp_path.glob("*.sst"))
    corrupt_block(tmp_path / f"{newest:06d}.sst", 0)
    with Engine.open(tmp_path) as db:
        damaged: list[CorruptionError] = []
        scanned = dict(db.scan(damaged=damaged))
        assert set(scanned.values()) == {b"new"} and damaged
        for i in range(300):
            key = b"k%04d" % i
            try:
                assert db.get(key) == b"new"
            except CorruptionError as e:
                assert e.covers(key) and key not in scanned


def test_compaction_over_a_damaged_table_does_not_stop_writes(tmp_path: Path) -> None:
    opts = {"memtable_bytes": 2048, "compaction_min_width": 4, "background": InlineBackground()}
    with Engine.open(tmp_path, **opts) as db:  # type: ignore[arg-type]
        for t in range(3):
            db.write_batch([("put", b"t%d-%03d" % (t, i), b"x" * 20) for i in range(60)])
            db.flush()
        assert db.stats()["tables"] == 3
    oldest = min(tmp_path.glob("*.sst"), key=lambda p: int(p.stem))
    corrupt_block(oldest, 0)
    with Engine.open(tmp_path, **opts) as db:  # type: ignore[arg-type]
        db.write_batch([("put", b"t3-%03d" % i, b"x" * 20) for i in range(60)])
        db.flush()  # a fourth table: the compaction that picks all four meets the damage
        assert db.stats()["damaged_tables"] == 1
        db.put(b"after", b"still writable")
        db.flush()
        assert db.get(b"after") == b"still writable"
        assert db.get(b"t3-000") == b"x" * 20


def test_verify_names_every_damaged_block(tmp_path: Path) -> None:
    _, sst = _one_table(tmp_path)
    corrupt_block(sst, 1)
    corrupt_block(sst, 5)
    with Engine.open(tmp_path, read_only=True) as db:
        assert [e.block for e in db.verify()] == [1, 5]


def test_salvage_rebuilds_without_the_damaged_blocks_and_says_what_was_lost(tmp_path: Path) -> None:
    data, sst = _one_table(tmp_path)
    corrupt_block(sst, 4)
    with Engine.open(tmp_path) as db:
        lost = db.salvage()
        assert [(r.table, r.block, r.older_keys) for r in lost] == [(int(sst.stem), 4, 0)]
        assert db.verify() == [] and not sst.exists()
        r = lost[0]
        gone = {k for k in data if (r.after is None or k > r.after) and k <= r.last}
        assert gone and dict(db.scan()) == {k: v for k, v in data.items() if k not in gone}
        db.compact()  # refused before the salvage
    with Engine.open(tmp_path) as db:
        assert db.get(min(gone)) is None and db.get(b"key000000") == data[b"key000000"]


def test_read_only_open_of_a_directory_without_manifest_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "unrelated").write_text("x")
    with pytest.raises(NotADataDirectory, match="no MANIFEST"):
        Engine.open(tmp_path, read_only=True)
    assert sorted(os.listdir(tmp_path)) == ["unrelated"]
    with pytest.raises(NotADataDirectory):
        Engine.open(tmp_path / "missing", read_only=True)
    assert not (tmp_path / "missing").exists()


def test_read_only_open_reads_the_wal_and_changes_nothing(tmp_path: Path) -> None:
    with Engine.open(tmp_path) as db:
        db.put(b"flushed", b"1")
        db.flush()
        db.put(b"in-wal", b"2")
    (tmp_path / "000099.sst.tmp").write_bytes(b"left by a crash")
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.name != "LOCK"}
    with Engine.open(tmp_path, read_only=True) as db:
        assert dict(db.scan()) == {b"flushed": b"1", b"in-wal": b"2"}
        with pytest.raises(ReadOnlyError):
            db.put(b"x", b"y")
        with pytest.raises(ReadOnlyError):
            db.compact()
        assert db.stats()["tables"] == 1
    after = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in tmp_path.iterdir() if p.name != "LOCK"}
    assert after == before


def test_block_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    budget = 3 << 20
    with Engine.open(tmp_path, block_cache_bytes=budget, max_value_size=8 << 20) as db:
        for i in range(8):
            db.put(b"big%d" % i, bytes([i]) * (1 << 20))
        db.put(b"huge", b"h" * (4 << 20))
        db.flush()
        for i in range(8):
            assert db.get(b"big%d" % i) == bytes([i]) * (1 << 20)
            assert 0 < db._cache.nbytes <= budget
        cached = db._cache.nbytes
        assert db.get(b"huge") == b"h" * (4 << 20)
        assert db._cache.nbytes == cached, "a block larger than the budget is not kept"


def test_block_cache_budget_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="block_cache_bytes"):
        Engine.open(tmp_path, block_cache_bytes=-1)


# ------------------------------------------------------- never a wrong value

MODEL_KEYS = st.integers(min_value=0, max_value=400).map(lambda i: b"k%05d" % i)


@settings(max_examples=40)
@given(
    batches=st.lists(st.dictionaries(MODEL_KEYS, st.binary(min_size=0, max_size=60), min_size=1, max_size=120),
                     min_size=1, max_size=4),
    deletes=st.lists(st.sets(MODEL_KEYS, max_size=20), min_size=4, max_size=4),
    hits=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0)), min_size=1, max_size=6),
)
def test_random_damaged_blocks_never_yield_a_wrong_value(
    batches: list[dict[bytes, bytes]], deletes: list[set[bytes]], hits: list[tuple[int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        model: dict[bytes, bytes] = {}
        with Engine.open(path, block_size=256, background=InlineBackground()) as db:
            for batch, gone in zip(batches, deletes, strict=False):
                db.write_batch([("put", k, v) for k, v in batch.items()])
                model.update(batch)
                for k in gone:
                    db.delete(k)
                    model.pop(k, None)
                db.flush()
        tables = sorted(path.glob("*.sst"))
        spots = set()
        for which, where in hits:
            sst = tables[which % len(tables)]
            blocks = data_blocks(sst)
            off, length = blocks[where % len(blocks)]
            spots.add((sst, off + where % length))  # a byte flipped twice is whole again
        for sst, at in spots:
            flip_byte(sst, at)
        with Engine.open(path) as db:
            damaged: list[CorruptionError] = []
            scanned = dict(db.scan(damaged=damaged))
            assert damaged
            for key in {k for batch in batches for k in batch}:
                try:
                    got = db.get(key)
                except CorruptionError as e:
                    assert e.covers(key) and key not in scanned
                    continue
                assert got == model.get(key)
                if key in scanned:
                    assert scanned[key] == got
                elif got is not None:
                    assert any(e.covers(key) for e in damaged)


def test_block_cache_shrinks_when_resized(tmp_path: Path) -> None:
    with Engine.open(tmp_path, block_size=1024) as db:
        db.write_batch([("put", b"k%05d" % i, b"v" * 200) for i in range(2000)])
        db.flush()
        assert len(dict(db.scan())) == 2000
        assert db._cache.nbytes > 64 << 10
        db.set_block_cache_bytes(64 << 10)
        assert 0 < db._cache.nbytes <= 64 << 10
        db.set_block_cache_bytes(0)
        assert db._cache.nbytes == 0 and db.get(b"k00001") == b"v" * 200 and db._cache.nbytes == 0
        with pytest.raises(ValueError, match="block_cache_bytes"):
            db.set_block_cache_bytes(-5)


def test_salvage_drops_a_table_that_cannot_be_read_and_keeps_its_file_aside(tmp_path: Path) -> None:
    with Engine.open(tmp_path) as db:
        db.write_batch([("put", b"k%04d" % i, b"old") for i in range(100)])
        db.flush()
        db.write_batch([("put", b"k%04d" % i, b"new") for i in range(50, 150)])
        db.flush()
        newest = max(tmp_path.glob("*.sst"), key=lambda p: int(p.stem))
    raw = bytearray(newest.read_bytes())
    raw[-10] ^= 0xFF  # the footer
    newest.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match=newest.name):
        Engine.open(tmp_path)
    with Engine.open(tmp_path, drop_unreadable_tables=True) as db:
        (lost,) = db.salvage()
        assert (lost.table, lost.block, lost.first, lost.last) == (int(newest.stem), None, b"k0050", b"k0149")
        assert lost.older_keys == 50  # k0050..k0099 read their older versions again
    assert not newest.exists() and newest.with_name(newest.name + ".damaged").exists()
    with Engine.open(tmp_path) as db:
        assert db.get(b"k0060") == b"old" and db.get(b"k0120") is None and db.verify() == []
