"""Bad input and damaged files: the engine says what is wrong and loses nothing
it acknowledged; it never returns a wrong value silently."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvnode.storage import CorruptionError, Engine, EngineClosedError, LockHeldError
from kvnode.storage.sstable import FOOTER_SIZE


def _only(directory: Path, suffix: str) -> Path:
    found = sorted(directory.glob(f"*{suffix}"))
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- WAL tails


def _fill(path: Path, n: int) -> dict[bytes, bytes]:
    with Engine.open(path) as db:
        data = {b"key%04d" % i: b"value%04d" % i for i in range(n)}
        for k, v in data.items():
            db.put(k, v)
        wal = _only(path, ".wal")
        size = wal.stat().st_size
        # Keep a copy of the WAL as it stood before close(): close does not flush,
        # but keep the test independent of that.
        raw = wal.read_bytes()
    return data | {b"__wal__": raw, b"__size__": str(size).encode()}


@pytest.mark.parametrize(
    "damage",
    ["cut-mid-record", "cut-mid-header", "garbage-tail", "zero-tail", "flip-last-record"],
)
def test_torn_wal_tail_is_cut_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    filled = _fill(tmp_path, 50)
    raw = filled.pop(b"__wal__")
    filled.pop(b"__size__")
    wal = _only(tmp_path, ".wal")
    if damage == "cut-mid-record":
        raw, survivors = raw[:-5], 49
    elif damage == "cut-mid-header":
        record = len(raw) // 50
        raw, survivors = raw[: len(raw) - record + 3], 49
    elif damage == "garbage-tail":
        raw, survivors = raw + b"\x00\x00\x01\x00garbage!", 50
    elif damage == "zero-tail":
        raw, survivors = raw + bytes(4096), 50
    else:
        raw, survivors = raw[:-1] + bytes([raw[-1] ^ 0x40]), 49
    wal.write_bytes(raw)

    with caplog.at_level(logging.WARNING, logger="kvnode.storage"), Engine.open(tmp_path) as db:
        got = dict(db.scan())
        stats = db.stats()
    expected = dict(sorted(filled.items())[:survivors])
    assert got == expected
    assert stats["wal_bytes_dropped"] > 0
    assert any("dropped" in r.getMessage() for r in caplog.records), "the loss is logged"


def test_empty_and_missing_wal_start_fine(tmp_path: Path) -> None:
    with Engine.open(tmp_path) as db:
        db.put(b"a", b"1")
        db.flush()
    for wal in tmp_path.glob("*.wal"):
        wal.write_bytes(b"")
    with Engine.open(tmp_path) as db:
        assert db.get(b"a") == b"1"


def test_clean_reopen_drops_nothing(tmp_path: Path) -> None:
    filled = _fill(tmp_path, 20)
    for k in (b"__wal__", b"__size__"):
        filled.pop(k)
    with Engine.open(tmp_path) as db:
        assert dict(db.scan()) == filled
        assert db.stats()["wal_bytes_dropped"] == 0
        assert db.stats()["wal_records_recovered"] == 20


# ---------------------------------------------------------------- SSTables


def _table_with(tmp_path: Path, n: int = 2000) -> dict[bytes, bytes]:
    data = {b"key%06d" % i: b"v" * 50 + b"%06d" % i for i in range(n)}
    with Engine.open(tmp_path) as db:
        db.write_batch([("put", k, v) for k, v in data.items()])
        db.flush()
    return data


def test_block_checksum_mismatch_names_file_and_block(tmp_path: Path) -> None:
    data = _table_with(tmp_path)
    sst = _only(tmp_path, ".sst")
    raw = bytearray(sst.read_bytes())
    raw[5000] ^= 0xFF  # inside the second 4 KiB data block
    sst.write_bytes(bytes(raw))
    with Engine.open(tmp_path) as db:
        with pytest.raises(CorruptionError) as info:
            for k in data:  # some key lives in the damaged block
                db.get(k)
        assert sst.name in str(info.value)
        assert "block 1" in str(info.value)
        with pytest.raises(CorruptionError):
            list(db.scan())
        # Keys in undamaged blocks still read correctly.
        assert db.get(b"key000000") == data[b"key000000"]


def test_damaged_footer_refuses_to_open(tmp_path: Path) -> None:
    _table_with(tmp_path)
    sst = _only(tmp_path, ".sst")
    raw = bytearray(sst.read_bytes())
    raw[-FOOTER_SIZE + 2] ^= 0x01
    sst.write_bytes(bytes(raw))
    with pytest.raises(CorruptionError, match=sst.name):
        Engine.open(tmp_path)


def test_missing_table_refuses_to_open(tmp_path: Path) -> None:
    _table_with(tmp_path)
    sst = _only(tmp_path, ".sst")
    sst.unlink()
    with pytest.raises(CorruptionError, match="missing"):
        Engine.open(tmp_path)


def test_damaged_manifest_refuses_to_open(tmp_path: Path) -> None:
    _table_with(tmp_path)
    manifest = tmp_path / "MANIFEST"
    manifest.write_text(manifest.read_text().replace('"count": 2000', '"count": 2001'))
    with pytest.raises(CorruptionError, match="MANIFEST"):
        Engine.open(tmp_path)


def test_orphans_of_an_interrupted_flush_are_removed(tmp_path: Path) -> None:
    data = _table_with(tmp_path, 100)
    (tmp_path / "000099.sst").write_bytes(b"half a table")
    (tmp_path / "000100.sst.tmp").write_bytes(b"half a table")
    with Engine.open(tmp_path) as db:
        assert dict(db.scan()) == data
    assert not (tmp_path / "000099.sst").exists()
    assert not (tmp_path / "000100.sst.tmp").exists()


# ---------------------------------------------------------------- locking


def test_second_open_in_this_process_is_refused(tmp_path: Path) -> None:
    with Engine.open(tmp_path), pytest.raises(LockHeldError, match=f"process {os.getpid()}"):
        Engine.open(tmp_path)
    Engine.open(tmp_path).close()  # released on close


def test_second_open_names_the_holding_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from kvnode.storage import Engine
            db = Engine.open({str(tmp_path)!r})
            print("open", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(LockHeldError) as info:
            Engine.open(tmp_path)
        assert f"process {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    Engine.open(tmp_path).close()  # a dead holder's lock is gone


# ---------------------------------------------------------------- bad input


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = Engine.open(tmp_path, max_key_size=16, max_value_size=64)
    yield engine
    engine.close()


@pytest.mark.parametrize("key", ["text", 7, None, bytearray(b"x")])
def test_non_bytes_keys_are_refused(db: Engine, key: object) -> None:
    with pytest.raises(TypeError, match="key must be bytes"):
        db.put(key, b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes"):
        db.get(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be bytes"):
        db.delete(key)  # type: ignore[arg-type]


def test_bad_values_and_sizes_write_nothing(db: Engine) -> None:
    before = db.stats()["wal_bytes"]
    with pytest.raises(TypeError, match="value must be bytes"):
        db.put(b"k", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_key_size"):
        db.put(b"k" * 17, b"v")
    with pytest.raises(ValueError, match="max_value_size"):
        db.put(b"k", b"v" * 65)
    # A batch with one bad operation writes none of them.
    with pytest.raises(ValueError, match="max_value_size"):
        db.write_batch([("put", b"a", b"1"), ("put", b"b", b"v" * 65)])
    with pytest.raises(ValueError, match="unknown operation 'merge'"):
        db.write_batch([("put", b"a", b"1"), ("merge", b"b", b"2")])
    with pytest.raises(ValueError, match="delete takes None"):
        db.write_batch([("delete", b"a", b"1")])
    with pytest.raises(TypeError, match=r"\(op, key, value\)"):
        db.write_batch([("put", b"a")])  # type: ignore[list-item]
    assert db.get(b"a") is None and db.get(b"k") is None
    assert db.stats()["wal_bytes"] == before


def test_limits_are_inclusive(db: Engine) -> None:
    db.put(b"k" * 16, b"v" * 64)
    assert db.get(b"k" * 16) == b"v" * 64


def test_unknown_and_invalid_options(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"unknown engine option.*memtable_size"):
        Engine.open(tmp_path, memtable_size=5)
    with pytest.raises(ValueError, match="sync must be"):
        Engine.open(tmp_path, sync="sometimes")


def test_use_after_close(tmp_path: Path) -> None:
    db = Engine.open(tmp_path)
    db.close()
    db.close()  # idempotent
    with pytest.raises(EngineClosedError):
        db.put(b"a", b"b")
    with pytest.raises(EngineClosedError):
        db.get(b"a")
