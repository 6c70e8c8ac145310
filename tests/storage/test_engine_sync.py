"""The sync policies: when the WAL is fsynced relative to a write returning."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvnode.storage import Engine, InlineBackground

from .helpers import CountingFS


@pytest.mark.parametrize("policy, syncs_after_three_puts", [("always", 3), ("never", 0), ("interval", 0)])
def test_write_returns_after_fsync_only_with_always(
    tmp_path: Path, policy: str, syncs_after_three_puts: int
) -> None:
    fs = CountingFS()
    bg = InlineBackground()
    with Engine.open(tmp_path, fs=fs, background=bg, sync=policy) as db:
        for i in range(3):
            db.put(b"k%d" % i, b"v")
        assert fs.wal_syncs[0] == syncs_after_three_puts
        bg.tick()  # the interval syncer's turn, driven by hand
        assert fs.wal_syncs[0] == (1 if policy == "interval" else syncs_after_three_puts)


def test_interval_syncer_runs_on_its_own(tmp_path: Path) -> None:
    fs = CountingFS()
    with Engine.open(tmp_path, fs=fs, sync="interval", sync_interval=0.001) as db:
        db.put(b"k", b"v")
        # Wait for the condition, not for a fixed time.
        for _ in range(10_000):
            if fs.wal_syncs[0]:
                break
            time.sleep(0.001)
        assert fs.wal_syncs[0] >= 1
