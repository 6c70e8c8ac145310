"""The real engine on a simulated disk that crashes: hypothesis state machines
that put, delete, batch, flush and compact against a dict, and crash the
machine between operations, in the middle of one (at its n-th file-system
call, so inside a WAL append, a flush, a compaction, a manifest swap) and in
the middle of the recovery that follows. The crashed `Engine` is dropped
without `close()` and a new one opened on what the disk kept.

What must hold after every recovery:

- `sync="always"`: the engine holds exactly the acknowledged writes; an
  operation the crash interrupted is there wholly or not at all.
- `sync="never"`: the engine holds the model as of *some* prefix of the
  operations, no shorter than the last point known durable (a `flush()`,
  `compact()` or `close()` that returned, a recovery, or a memtable rotation,
  which syncs the old WAL segment before the new one takes writes).

Each holds with strict crashes (nothing unsynced survives) and with torn ones
(a random prefix of each file's unsynced bytes and of each directory's
unsynced name changes survives).
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

import hypothesis.strategies as st
from hypothesis import event, note, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kvnode.storage import Engine, InlineBackground
from kvnode.storage.simfs import SimFileSystem

PATH = "/data/db"
KEY_SPACE = [b"", b"\xff", *(b"k%02d" % i for i in range(22))]
KEYS = st.sampled_from(KEY_SPACE)
# Short values, and long ones (cheap to draw) that fill a 2 KiB memtable fast.
VALUES = st.binary(max_size=12) | st.builds(
    lambda n, b: bytes([b]) * n, st.integers(100, 400), st.integers(0, 255)
)
BATCH = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, VALUES),
        st.tuples(st.just("delete"), KEYS, st.none()),
    ),
    min_size=1,
    max_size=6,
)
# An operation: ("put", key, value), ("delete", key), ("batch", ops), ("flush",), ("compact",).
Op = tuple[Any, ...]
OPS: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("put"), KEYS, VALUES),
    st.tuples(st.just("delete"), KEYS),
    st.tuples(st.just("batch"), BATCH),
    st.tuples(st.just("flush")),
    st.tuples(st.just("compact")),
)
# How many file-system calls into an operation (or a recovery) a crash strikes.
CRASH_AT = st.integers(0, 60)

Model = dict[bytes, bytes]


def _after(model: Model, op: Op) -> Model:
    new = dict(model)
    if op[0] == "put":
        new[op[1]] = op[2]
    elif op[0] == "delete":
        new.pop(op[1], None)
    elif op[0] == "batch":
        for kind, key, value in op[1]:
            if kind == "put":
                new[key] = value
            else:
                new.pop(key, None)
    return new


def _run(db: Engine, op: Op) -> None:
    if op[0] == "put":
        db.put(op[1], op[2])
    elif op[0] == "delete":
        db.delete(op[1])
    elif op[0] == "batch":
        db.write_batch(op[1])
    elif op[0] == "flush":
        db.flush()
    else:
        db.compact()


def _diff(got: Model, want: Model) -> str:
    keys = sorted(set(got) | set(want))
    return ", ".join(
        f"{k!r}: got {got.get(k, b'<absent>')[:12]!r} want {want.get(k, b'<absent>')[:12]!r}"
        for k in keys
        if got.get(k) != want.get(k)
    )


class CrashMachine(RuleBasedStateMachine):
    sync: ClassVar[str] = "always"
    torn: ClassVar[bool] = False

    fs: SimFileSystem
    db: Engine

    def __init__(self) -> None:
        super().__init__()
        self.model: Model = {}
        # The states since the last point known durable: states[0] is that
        # point, states[-1] the model. With sync="always" only the last counts.
        self.states: list[Model] = [{}]

    # ------------------------------------------------------------ plumbing

    def _open(self) -> Engine:
        return Engine.open(
            PATH,
            fs=self.fs,
            background=InlineBackground(),
            sync=self.sync,
            memtable_bytes=2048,
            compaction_min_width=2,
            block_size=512,
        )

    def _acknowledge(self, op: Op, flushes_before: int) -> None:
        self.model = _after(self.model, op)
        if op[0] in ("flush", "compact"):
            self.states = [self.model]
        elif self.db.stats()["flushes"] > flushes_before:
            # The write rotated the memtable first: all before it is durable.
            self.states = [self.states[-1], self.model]
        else:
            self.states.append(self.model)

    def _candidates(self, pending: Op | None) -> list[Model]:
        done = self.states if self.sync == "never" else self.states[-1:]
        return done + ([_after(self.model, pending)] if pending is not None else [])

    def _reopen(self, crash_at: int | None) -> None:
        """Open the engine, perhaps crashing `crash_at` calls into recovery
        first (and then rebooting and opening again)."""
        while True:
            self.fs.crash_after(crash_at)
            try:
                self.db = self._open()
            except Exception:
                if not self.fs.crashed:
                    raise
            self.fs.crash_after(None)
            if not self.fs.crashed:
                return
            # The crash struck during recovery (perhaps in a flush or compaction
            # that recovery started, whose failure open() logs but survives).
            note(f"crashed during recovery at call {crash_at}")
            event("crash struck inside recovery")
            self.fs.crash()
            crash_at = None

    def _recover(self, pending: Op | None, crash_at: int | None) -> None:
        """The machine has crashed (or is about to): drop the engine, reboot,
        reopen and check what it kept."""
        self.fs.crash()
        del self.db
        self._reopen(crash_at)
        recovered = dict(self.db.scan())
        event(f"recovered {'the model' if recovered == self.model else 'an older prefix'}")
        for key in KEY_SPACE:
            assert self.db.get(key) == recovered.get(key), key
        candidates = self._candidates(pending)
        assert recovered in candidates, (
            f"after a crash the engine holds a state no acknowledged prefix had; "
            f"against the model: {_diff(recovered, self.model)}"
        )
        self.model = recovered
        self.states = [recovered]  # recovery writes what it replayed to a table

    # ------------------------------------------------------------ rules

    @initialize(seed=st.integers(0, 2**32 - 1), crash_at=st.none() | CRASH_AT)
    def start(self, seed: int, crash_at: int | None) -> None:
        self.fs = SimFileSystem(random.Random(seed) if self.torn else None)
        self._reopen(crash_at)  # a crash while creating the store leaves an empty one
        assert list(self.db.scan()) == []

    @rule(key=KEYS, value=VALUES)
    def put(self, key: bytes, value: bytes) -> None:
        self.operate(("put", key, value))

    @rule(key=KEYS)
    def delete(self, key: bytes) -> None:
        self.operate(("delete", key))

    @rule(ops=BATCH)
    def write_batch(self, ops: list[tuple[str, bytes, bytes | None]]) -> None:
        self.operate(("batch", ops))

    @rule()
    def flush(self) -> None:
        self.operate(("flush",))

    @rule()
    def compact(self) -> None:
        self.operate(("compact",))

    def operate(self, op: Op) -> None:
        flushes = self.db.stats()["flushes"]
        _run(self.db, op)
        self._acknowledge(op, flushes)
        stats = self.db.stats()
        if stats["flushes"] > flushes:
            event("a write or flush flushed a memtable")
        if stats["compactions"]:
            event("the engine compacted")

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
    def close_then_crash(self) -> None:
        # close() syncs the WAL, so whatever the policy nothing may be lost.
        self.db.close()
        self.states = [self.model]
        self._recover(None, None)

    @rule(during_recovery=st.none() | CRASH_AT)
    def crash_between_operations(self, during_recovery: int | None) -> None:
        self._recover(None, during_recovery)

    @rule(op=OPS, at=CRASH_AT, during_recovery=st.none() | CRASH_AT)
    def crash_during_operation(self, op: Op, at: int, during_recovery: int | None) -> None:
        flushes = self.db.stats()["flushes"]
        self.fs.crash_after(at)
        try:
            _run(self.db, op)
        except Exception:
            if not self.fs.crashed:
                raise
            note(f"{op[0]} crashed at call {at}")
            event(f"crash struck inside {op[0]}")
            self._recover(op, during_recovery)
            return
        self.fs.crash_after(None)
        if not self.fs.crashed:
            self._acknowledge(op, flushes)  # the operation finished first
            return
        # The operation returned although the crash struck inside it (in
        # background work it started, whose failure is recorded, not raised):
        # it was acknowledged, so it must survive like any other.
        note(f"{op[0]} returned although the crash struck at call {at}")
        self.model = _after(self.model, op)
        self.states.append(self.model)
        self._recover(None, during_recovery)

    @invariant()
    def full_scan_matches(self) -> None:
        if hasattr(self, "db"):
            assert dict(self.db.scan()) == self.model


# About 4 s a variant; HYPOTHESIS_PROFILE=thorough (tests/conftest.py) runs its 1000 examples.
SETTINGS = settings(
    max_examples=60 if settings().max_examples <= 100 else settings().max_examples,
    stateful_step_count=50,
    deadline=None,
)


class AlwaysStrict(CrashMachine):
    sync = "always"


class NeverStrict(CrashMachine):
    sync = "never"


class AlwaysTorn(CrashMachine):
    sync = "always"
    torn = True


class NeverTorn(CrashMachine):
    sync = "never"
    torn = True


AlwaysStrict.TestCase.settings = SETTINGS
NeverStrict.TestCase.settings = SETTINGS
AlwaysTorn.TestCase.settings = SETTINGS
NeverTorn.TestCase.settings = SETTINGS
TestCrashSyncAlways = AlwaysStrict.TestCase
TestCrashSyncNever = NeverStrict.TestCase
TestCrashSyncAlwaysTorn = AlwaysTorn.TestCase
TestCrashSyncNeverTorn = NeverTorn.TestCase
