"""`kvnode db ...`: offline inspection of a data directory."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from kvnode.cli import cli
from kvnode.storage import Engine

from .helpers import corrupt_block


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_put_get_scan_delete_round_trip(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert run("db", "put", d, "apple", "red")[0] == 0
    assert run("db", "put", d, "banana", "yellow")[0] == 0
    assert run("db", "get", d, "apple") == (0, "red\n")
    assert run("db", "scan", d) == (0, "apple\tred\nbanana\tyellow\n")
    assert run("db", "delete", d, "apple")[0] == 0
    code, out = run("db", "get", d, "apple")
    assert code == 1 and "(absent)" in out
    assert run("db", "get", d, "62616e616e61", "--hex") == (0, "79656c6c6f77\n")


def test_stats_check_compact(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Engine.open(d, memtable_bytes=4096) as db:
        for i in range(500):
            db.put(b"k%04d" % i, b"v" * 30)
    code, out = run("db", "stats", d, "--json")
    stats = json.loads(out)  # read-only: what the WAL holds stays in memory
    assert code == 0 and stats["table_entries"] + stats["memtable_entries"] == 500
    assert run("db", "check", d) == (0, "ok: 500 live keys, every block checksum verified\n")
    code, out = run("db", "compact", d)
    assert code == 0 and "into 1 table" in out
    code, out = run("db", "stats", d)
    assert code == 0 and "table_entries" in out


def test_locked_and_corrupt_directories_are_clear_errors(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Engine.open(d):
        code, out = run("db", "get", d, "x")
        assert code == 1 and "is locked by process" in out
    (tmp_path / "MANIFEST").write_text("{not json")
    code, out = run("db", "check", d)
    assert code == 1 and "corrupt data directory" in out and "MANIFEST" in out


def test_bad_hex_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run("db", "get", str(tmp_path), "zz", "--hex")
    assert code == 2 and "not hexadecimal" in out


def test_read_only_commands_refuse_a_directory_that_is_not_a_data_directory(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    for args in (["check"], ["stats"], ["get", "k"], ["scan"]):
        code, out = run("db", args[0], str(tmp_path), *args[1:])
        assert code == 1, (args, out)
        assert "not a kvnode data directory (no MANIFEST)" in out and out.count("\n") == 1, out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts"], "a read-only command created a file"
    code, out = run("db", "check", str(tmp_path / "nowhere"))
    assert code == 1 and "no MANIFEST" in out and not (tmp_path / "nowhere").exists()


def test_check_names_the_damaged_block_and_salvage_drops_it(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Engine.open(d) as db:
        db.write_batch([("put", b"k%05d" % i, b"v" * 40) for i in range(1000)])
        db.flush()
        (sst,) = tmp_path.glob("*.sst")
        db.put(b"newer", b"table")
        db.flush()
    corrupt_block(sst, 2)
    code, out = run("db", "check", d)
    assert code == 1 and f"damaged: {sst} block 2: keys > " in out and "db salvage" in out
    code, out = run("db", "compact", d)  # two tables to merge, one of them damaged
    assert code == 1 and "block 2" in out and "db salvage" in out
    code, out = run("db", "salvage", d)
    assert code == 0 and f"lost: table {sst.stem} block 2: keys > " in out and "1 damaged block(s)" in out
    code, out = run("db", "check", d)
    assert code == 0 and out.startswith("ok: ") and "1,000" not in out
    assert run("db", "salvage", d) == (0, "nothing to salvage: every block checksum verified\n")
    assert run("db", "compact", d)[0] == 0


def test_salvage_of_a_table_whose_footer_is_damaged(tmp_path: Path) -> None:
    d = str(tmp_path)
    with Engine.open(d) as db:
        db.write_batch([("put", b"k%05d" % i, b"v") for i in range(100)])
        db.flush()
    (sst,) = tmp_path.glob("*.sst")
    raw = bytearray(sst.read_bytes())
    raw[-10] ^= 0xFF
    sst.write_bytes(bytes(raw))
    code, out = run("db", "check", d)
    assert code == 1 and "corrupt data directory" in out and sst.name in out
    code, out = run("db", "salvage", d)
    assert code == 0 and f"lost: table {sst.stem} the whole table (unreadable, kept as {sst.name}.damaged)" in out
    assert run("db", "check", d) == (0, "ok: 0 live keys, every block checksum verified\n")
