"""The engine against a dict: a hypothesis state machine that puts, deletes,
batches, reads, scans, flushes, compacts, reopens, and crashes with the WAL cut
at a random byte. After a crash, the engine must hold exactly the writes whose
WAL records lie wholly before the cut: every acknowledged write before it
survives, the batch the cut falls in is all or nothing (here: nothing)."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kvnode.storage import Engine, InlineBackground

KEYS = st.sampled_from([b"", b"a", b"ab", b"b", b"c", b"k1", b"k2", b"k3", b"zz", b"\xff"])
VALUES = st.binary(max_size=40)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, VALUES),
        st.tuples(st.just("delete"), KEYS, st.none()),
    ),
    min_size=1,
    max_size=5,
)


def _wal_path(directory: str) -> str:
    wals = [n for n in os.listdir(directory) if n.endswith(".wal")]
    assert len(wals) == 1, wals
    return os.path.join(directory, wals[0])


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="kvnode-model-")
        self.db = self._open()
        self.model: dict[bytes, bytes] = {}
        # The model as of the last point where the WAL held nothing (tables only),
        # and, for each acknowledged write since, (WAL bytes after it, model after it).
        self.base: dict[bytes, bytes] = {}
        self.log: list[tuple[int, dict[bytes, bytes]]] = []

    def _open(self) -> Engine:
        # A large memtable: flushes happen only when asked, so there is one WAL
        # segment to cut. Compaction of two tables at a time keeps it busy.
        return Engine.open(
            self.dir,
            background=InlineBackground(),
            sync="always",
            memtable_bytes=1 << 20,
            compaction_min_width=2,
        )

    def _acknowledged(self) -> None:
        self.log.append((os.path.getsize(_wal_path(self.dir)), dict(self.model)))

    def _settled(self) -> None:
        self.base = dict(self.model)
        self.log = []

    @rule(key=KEYS, value=VALUES)
    def put(self, key: bytes, value: bytes) -> None:
        self.db.put(key, value)
        self.model[key] = value
        self._acknowledged()

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.db.delete(key)
        self.model.pop(key, None)
        self._acknowledged()

    @rule(ops=OPS)
    def write_batch(self, ops: list[tuple[str, bytes, bytes | None]]) -> None:
        self.db.write_batch(ops)
        for kind, key, value in ops:
            if kind == "put":
                assert value is not None
                self.model[key] = value
            else:
                self.model.pop(key, None)
        self._acknowledged()

    @rule(key=KEYS)
    def get(self, key: bytes) -> None:
        assert self.db.get(key) == self.model.get(key)

    @rule(start=st.none() | KEYS, end=st.none() | KEYS)
    def scan(self, start: bytes | None, end: bytes | None) -> None:
        expected = sorted(
            (k, v)
            for k, v in self.model.items()
            if (start is None or k >= start) and (end is None or k < end)
        )
        assert list(self.db.scan(start, end)) == expected

    @rule()
    def flush(self) -> None:
        self.db.flush()
        self._settled()

    @rule()
    def compact(self) -> None:
        self.db.compact()
        self._settled()
        assert self.db.stats()["tables"] <= 1

    @rule()
    def reopen(self) -> None:
        self.db.close()
        self.db = self._open()
        self._settled()

    @rule(data=st.data())
    def crash_and_cut_wal(self, data: st.DataObject) -> None:
        wal = _wal_path(self.dir)
        size = os.path.getsize(wal)
        cut = data.draw(st.integers(0, size), label="cut")
        del self.db  # no close(): the object is simply dropped, as in a crash
        gc.collect()
        with open(wal, "r+b") as f:
            f.truncate(cut)
        expected = self.base
        for end, snapshot in self.log:
            if end <= cut:
                expected = snapshot
        self.model = dict(expected)
        self.db = self._open()
        self._settled()
        assert dict(self.db.scan()) == self.model

    @invariant()
    def full_scan_matches(self) -> None:
        if hasattr(self, "db"):
            assert list(self.db.scan()) == sorted(self.model.items())

    def teardown(self) -> None:
        if hasattr(self, "db"):
            self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# A third of the profile's examples (each is a 40-step engine life on disk):
# 33 by default, about 20 s; HYPOTHESIS_PROFILE=thorough gives 333.
EngineMachine.TestCase.settings = settings(max_examples=max(1, settings.default.max_examples // 3),
                                           stateful_step_count=40, deadline=None)
TestEngineAgainstDict = EngineMachine.TestCase
