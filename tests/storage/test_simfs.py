"""SimFileSystem itself: what a crash keeps and what it drops, locks, stale
handles, and errors shaped like the OS's."""

from __future__ import annotations

import random

import pytest

from kvnode.storage.fs import LockHeldError
from kvnode.storage.simfs import SimFileSystem, SimulatedCrash


@pytest.fixture
def fs() -> SimFileSystem:
    sim = SimFileSystem()
    sim.makedirs("/d")
    return sim


def _durable_file(fs: SimFileSystem, path: str, data: bytes) -> None:
    f = fs.create(path)
    f.write(data)
    f.sync()
    f.close()
    fs.sync_dir("/d")


# ------------------------------------------------------------------ bytes


def test_unsynced_bytes_are_lost_at_a_crash(fs: SimFileSystem) -> None:
    f = fs.create("/d/f")
    fs.sync_dir("/d")
    f.write(b"hello")
    assert fs.read_all("/d/f") == b"hello"  # reads see the page cache
    fs.crash()
    assert fs.read_all("/d/f") == b""


def test_a_process_kill_keeps_unsynced_bytes_and_names_until_a_power_loss(fs: SimFileSystem) -> None:
    f = fs.create("/d/f")
    f.write(b"page cache")
    lock = fs.lock("/d/LOCK")
    fs.kill()
    with pytest.raises(OSError):
        f.write(b"more")  # the dead process's handle is gone
    assert fs.read_all("/d/f") == b"page cache"  # the machine still has it
    fs.lock("/d/LOCK").release()  # the dead holder's lock went with it
    del lock
    fs.crash()  # never synced: the power loss drops file and name
    assert not fs.exists("/d/f")


def test_synced_bytes_survive_and_the_unsynced_tail_does_not(fs: SimFileSystem) -> None:
    f = fs.create("/d/f")
    f.write(b"one")
    f.sync()
    fs.sync_dir("/d")
    f.write(b"two")
    fs.crash()
    assert fs.read_all("/d/f") == b"one"
    g = fs.append("/d/f")
    assert g.tell() == 3
    g.write(b"three")
    g.sync()
    fs.crash()
    assert fs.read_all("/d/f") == b"onethree"


def test_create_over_an_existing_file_truncates_durably_only_once_synced(fs: SimFileSystem) -> None:
    _durable_file(fs, "/d/f", b"old")
    f = fs.create("/d/f")
    assert fs.read_all("/d/f") == b""
    f.write(b"newer")
    fs.crash()
    assert fs.read_all("/d/f") == b"old"
    f = fs.create("/d/f")
    f.write(b"new")
    f.sync()
    fs.crash()
    assert fs.read_all("/d/f") == b"new"


def test_truncate_is_durable_at_once(fs: SimFileSystem) -> None:
    f = fs.create("/d/f")
    f.write(b"abcdef")
    fs.sync_dir("/d")
    fs.truncate("/d/f", 4)  # also makes the unsynced "abcd" durable, as ftruncate+fsync does
    fs.crash()
    assert fs.read_all("/d/f") == b"abcd"
    fs.truncate("/d/f", 6)
    assert fs.read_all("/d/f") == b"abcd\0\0"


# ------------------------------------------------------------------ names


def test_created_file_vanishes_without_sync_dir_even_if_its_bytes_were_synced(
    fs: SimFileSystem,
) -> None:
    f = fs.create("/d/f")
    f.write(b"x")
    f.sync()
    fs.crash()
    assert not fs.exists("/d/f")
    assert fs.listdir("/d") == []


def test_rename_without_sync_dir_is_undone(fs: SimFileSystem) -> None:
    _durable_file(fs, "/d/a.tmp", b"new")
    _durable_file(fs, "/d/a", b"old")
    fs.rename("/d/a.tmp", "/d/a")
    assert fs.listdir("/d") == ["a"]
    assert fs.read_all("/d/a") == b"new"
    fs.crash()
    assert fs.listdir("/d") == ["a", "a.tmp"]
    assert fs.read_all("/d/a") == b"old"
    fs.rename("/d/a.tmp", "/d/a")
    fs.sync_dir("/d")
    fs.crash()
    assert fs.listdir("/d") == ["a"]
    assert fs.read_all("/d/a") == b"new"


def test_remove_without_sync_dir_is_undone(fs: SimFileSystem) -> None:
    _durable_file(fs, "/d/f", b"data")
    fs.remove("/d/f")
    assert not fs.exists("/d/f")
    fs.crash()
    assert fs.read_all("/d/f") == b"data"
    fs.remove("/d/f")
    fs.sync_dir("/d")
    fs.crash()
    assert not fs.exists("/d/f")


def test_sync_dir_is_per_directory(fs: SimFileSystem) -> None:
    fs.makedirs("/e")
    fs.create("/d/f").close()
    fs.create("/e/g").close()
    fs.sync_dir("/e")
    fs.crash()
    assert fs.listdir("/d") == []
    assert fs.listdir("/e") == ["g"]
    assert fs.listdir("/") == ["d", "e"]


def test_open_handle_outlives_its_name(fs: SimFileSystem) -> None:
    _durable_file(fs, "/d/f", b"abc")
    r = fs.open_read("/d/f")
    fs.remove("/d/f")
    assert r.pread(1, 10) == b"bc"
    assert r.size() == 3


# ------------------------------------------------------------------ torn writes


def test_torn_mode_keeps_a_prefix_of_the_unsynced_tail() -> None:
    kept: set[int] = set()
    for seed in range(40):
        fs = SimFileSystem(random.Random(seed))
        fs.makedirs("/d")
        f = fs.create("/d/f")
        f.write(b"sync")
        f.sync()
        fs.sync_dir("/d")
        f.write(b"0123456789")
        fs.crash()
        data = fs.read_all("/d/f")
        assert data == b"sync0123456789"[: len(data)]
        assert len(data) >= 4
        kept.add(len(data) - 4)
    assert min(kept) < 5 < max(kept)  # short and long prefixes both happen


def test_torn_mode_keeps_a_prefix_of_the_unsynced_name_changes() -> None:
    outcomes: set[tuple[str, ...]] = set()
    for seed in range(40):
        fs = SimFileSystem(random.Random(seed))
        fs.makedirs("/d")
        fs.create("/d/a").close()
        fs.rename("/d/a", "/d/b")
        fs.create("/d/c").close()
        fs.crash()
        outcomes.add(tuple(fs.listdir("/d")))
    # In order, a rename all or nothing: never "c" without "b", never "a" and "b" together.
    assert outcomes <= {(), ("a",), ("b",), ("b", "c")}
    assert len(outcomes) >= 3


def test_torn_mode_is_deterministic_per_seed() -> None:
    def run(seed: int) -> bytes:
        fs = SimFileSystem(random.Random(seed))
        fs.makedirs("/d")
        f = fs.create("/d/f")
        fs.sync_dir("/d")
        f.write(bytes(range(200)))
        fs.crash()
        return fs.read_all("/d/f")

    assert [run(s) for s in range(10)] == [run(s) for s in range(10)]


# ------------------------------------------------------------------ locks and handles


def test_lock_is_exclusive_and_released(fs: SimFileSystem) -> None:
    lock = fs.lock("/d/LOCK")
    assert fs.exists("/d/LOCK")
    with pytest.raises(LockHeldError) as e:
        fs.lock("/d/LOCK")
    assert e.value.path == "/d/LOCK"
    fs.lock("/d/OTHER").release()
    lock.release()
    lock.release()  # idempotent
    fs.lock("/d/LOCK").release()


def test_crash_releases_locks_and_a_stale_release_does_not_steal_a_new_one(
    fs: SimFileSystem,
) -> None:
    old = fs.lock("/d/LOCK")
    fs.crash()
    new = fs.lock("/d/LOCK")
    old.release()
    with pytest.raises(LockHeldError):
        fs.lock("/d/LOCK")
    new.release()


def test_handles_are_stale_after_a_crash(fs: SimFileSystem) -> None:
    _durable_file(fs, "/d/f", b"abc")
    w = fs.append("/d/f")
    r = fs.open_read("/d/f")
    fs.crash()
    for call in (lambda: w.write(b"x"), w.sync, w.tell, lambda: r.pread(0, 1), r.size):
        with pytest.raises(OSError):
            call()
    w.close()  # closing a stale handle is harmless
    r.close()
    assert fs.read_all("/d/f") == b"abc"
    assert fs.open_read("/d/f").pread(0, 3) == b"abc"  # new handles work


def test_closed_handles_refuse_use(fs: SimFileSystem) -> None:
    w = fs.create("/d/f")
    w.close()
    with pytest.raises(OSError):
        w.write(b"x")


# ------------------------------------------------------------------ scheduled crashes


def test_crash_after_strikes_mid_sequence_and_keeps_the_disk_down(fs: SimFileSystem) -> None:
    f = fs.create("/d/f")
    fs.sync_dir("/d")
    fs.crash_after(2)
    f.write(b"a")  # 0
    f.sync()  # 1
    with pytest.raises(SimulatedCrash):
        f.write(b"b")  # 2: does not happen
    assert fs.crashed
    with pytest.raises(SimulatedCrash):
        fs.create("/d/g")  # a crashed process cannot touch the rebooted disk
    with pytest.raises(SimulatedCrash):
        fs.read_all("/d/f")
    fs.crash()  # power back on
    assert not fs.crashed
    assert fs.read_all("/d/f") == b"a"
    with pytest.raises(OSError):
        f.write(b"c")


def test_crash_after_none_disarms(fs: SimFileSystem) -> None:
    fs.crash_after(0)
    fs.crash_after(None)
    fs.create("/d/f").write(b"x")
    assert not fs.crashed


# ------------------------------------------------------------------ errors


def test_errors_match_the_os(fs: SimFileSystem) -> None:
    with pytest.raises(FileNotFoundError):
        fs.read_all("/d/missing")
    with pytest.raises(FileNotFoundError):
        fs.open_read("/d/missing")
    with pytest.raises(FileNotFoundError):
        fs.append("/d/missing")
    with pytest.raises(FileNotFoundError):
        fs.truncate("/d/missing", 0)
    with pytest.raises(FileNotFoundError):
        fs.rename("/d/missing", "/d/x")
    with pytest.raises(FileNotFoundError):
        fs.create("/nodir/f")
    with pytest.raises(FileNotFoundError):
        fs.listdir("/nodir")
    with pytest.raises(FileNotFoundError):
        fs.sync_dir("/nodir")
    with pytest.raises(IsADirectoryError):
        fs.read_all("/d")
    with pytest.raises(IsADirectoryError):
        fs.create("/d")
    fs.create("/d/f").close()
    with pytest.raises(NotADirectoryError):
        fs.listdir("/d/f")
    with pytest.raises(NotADirectoryError):
        fs.create("/d/f/g")
    with pytest.raises(FileExistsError):
        fs.makedirs("/d/f/g")
    fs.remove("/d/missing")  # like OSFileSystem.remove: not an error
    fs.makedirs("/d")  # exist_ok
    assert fs.exists("/d") and fs.exists("/d/f") and not fs.exists("/d/g")
    assert fs.listdir("/") == ["d"]


def test_paths_are_normalised(fs: SimFileSystem) -> None:
    fs.create("/d/./x/../f").close()
    assert fs.exists("/d/f")
    assert fs.listdir("/d/") == ["f"]
