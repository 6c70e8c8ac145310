"""Tests for kvnode.handoff: the durable hint store and the manager that
delivers hints, over an in-memory fake transport, a manual clock and an
inline offload (no threads, no sleeping)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvnode.clock import ManualClock
from kvnode.connection import ConnectionLost
from kvnode.handoff import (
    HandoffManager,
    HandoffSettings,
    HintStore,
    Merge,
    resolver_merge,
)
from kvnode.offload import InlineOffload
from kvnode.storage import InlineBackground, LockHeldError
from kvnode.transport import PeerUnreachable
from kvnode.versions import DvvResolver, SiblingSet

HOUR_NS = 3600 * 1_000_000_000


def concat(a: bytes, b: bytes) -> bytes:
    """A merge that shows what was merged, in order."""
    return a + b"|" + b


class Events:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.events if n == name]


def open_store(
    path: Path, clock: ManualClock, *, merge: Merge = concat, log: Events | None = None
) -> HintStore:
    return HintStore.open(path, clock=clock, offload=InlineOffload(), merge=merge, log=log,
                          background=InlineBackground())


class FakeTransport:
    """Peers as in-memory replicas: a replica_put merges into `data[peer]`.
    `down` peers are unreachable; `fail(peer, n)` decides per request (its
    n-th, from 0) whether to raise, answer an error, or accept."""

    def __init__(self, merge: Merge = concat) -> None:
        self.merge = merge
        self.data: dict[str, dict[bytes, bytes]] = {}
        self.down: set[str] = set()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.fail: Callable[[str, int], BaseException | str | None] = lambda peer, n: None

    async def reachable(self, peer: str) -> bool:
        return peer not in self.down

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        n = sum(1 for p, _ in self.requests if p == peer)
        self.requests.append((peer, message))
        if peer in self.down:
            raise PeerUnreachable(peer)
        outcome = self.fail(peer, n)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not None:
            return {"type": "error", "code": outcome, "message": "refused"}
        assert message["type"] == "replica_put"
        held = self.data.setdefault(peer, {})
        key, state = message["key"], message["state"]
        held[key] = state if key not in held else self.merge(held[key], state)
        return {"type": "replica_put_ok"}

    async def close(self) -> None:
        return None


async def until(condition: Callable[[], bool], steps: int = 10_000) -> None:
    """Let other tasks run until `condition` holds (yields, never sleeps)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


# ---------------------------------------------------------------- HintStore


def test_hints_survive_close_and_reopen(tmp_path: Path) -> None:
    clock = ManualClock(wall_ns=5 * HOUR_NS)
    store = open_store(tmp_path / "hints", clock)
    asyncio.run(store.add("n2", b"k1", b"s1"))
    asyncio.run(store.add("n3", b"k2", b"s2"))
    store.close()

    store = open_store(tmp_path / "hints", clock)
    try:
        assert store.pending() == {"n2": 1, "n3": 1}
        hint = asyncio.run(store.get("n2", b"k1"))
        assert hint is not None
        assert (hint.target, hint.key, hint.state, hint.created_ns) == ("n2", b"k1", b"s1", 5 * HOUR_NS)
        assert asyncio.run(store.get("n2", b"k2")) is None
    finally:
        store.close()


def test_hints_survive_a_drop_without_close(tmp_path: Path) -> None:
    """A crash: the store is never closed. `add` returned, so the hint was
    fsynced; the directory lock goes with the dropped engine."""
    clock = ManualClock()
    store = open_store(tmp_path / "hints", clock)
    asyncio.run(store.add("n2", b"k", b"state"))
    with pytest.raises(LockHeldError):
        open_store(tmp_path / "hints", clock)
    del store
    gc.collect()

    store = open_store(tmp_path / "hints", clock)
    try:
        assert store.pending() == {"n2": 1}
        hint = asyncio.run(store.get("n2", b"k"))
        assert hint is not None and hint.state == b"state"
    finally:
        store.close()


def test_pending_counts_per_target(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        assert store.pending() == {}

        async def scenario() -> None:
            for i in range(3):
                await store.add("n2", f"k{i}".encode(), b"s")
            await store.add("n3", b"k0", b"s")
            await store.add("n2", b"k0", b"t")  # same (target, key): no new hint
            # Targets whose ids are prefixes of each other stay apart.
            await store.add("n", b"k0", b"s")
            await store.add("n22", b"k0", b"s")

        asyncio.run(scenario())
        assert store.pending() == {"n": 1, "n2": 3, "n22": 1, "n3": 1}
    finally:
        store.close()


def test_keys_with_nul_and_empty_keys_stay_with_their_target(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        sent: list[bytes] = []

        async def send(key: bytes, state: bytes) -> bool:
            sent.append(key)
            return True

        async def scenario() -> tuple[int, int]:
            await store.add("a", b"\0x", b"s")
            await store.add("a", b"", b"s")
            await store.add("a\x01", b"k", b"s")
            return await store.deliver("a", send)

        assert asyncio.run(scenario()) == (2, 0)
        assert sent == [b"", b"\0x"]
        assert store.pending() == {"a\x01": 1}
    finally:
        store.close()


def test_bad_targets_are_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        for target in ("", "a\0b"):
            with pytest.raises(ValueError):
                asyncio.run(store.add(target, b"k", b"s"))
        with pytest.raises(TypeError):
            asyncio.run(store.add("n2", "k", b"s"))  # type: ignore[arg-type]
        assert store.pending() == {}
    finally:
        store.close()


def test_two_hints_for_one_key_merge(tmp_path: Path) -> None:
    clock = ManualClock(wall_ns=HOUR_NS)
    store = open_store(tmp_path, clock)
    try:
        asyncio.run(store.add("n2", b"k", b"old"))
        clock.advance(10)
        asyncio.run(store.add("n2", b"k", b"new"))
        hint = asyncio.run(store.get("n2", b"k"))
        assert hint is not None
        assert hint.state == b"old|new"
        assert hint.created_ns == HOUR_NS + 10 * 1_000_000_000  # the newest write's time
        assert store.pending() == {"n2": 1}
    finally:
        store.close()


def test_hints_merge_real_dvv_states(tmp_path: Path) -> None:
    """Two concurrent puts for a key whose replica is down: the hint holds
    both as siblings, and a later put that saw both replaces them."""
    r = DvvResolver()
    a = r.update(SiblingSet(), context=None, value=b"a", node="n1")
    b = r.update(SiblingSet(), context=None, value=b"b", node="n3")
    both = r.merge(a, b)
    c = r.update(both, context=both.client_context(), value=b"c", node="n1")
    store = open_store(tmp_path, ManualClock(), merge=resolver_merge(r))
    try:

        async def scenario() -> tuple[list[bytes], list[bytes]]:
            await store.add("n2", b"k", a.encode())
            await store.add("n2", b"k", b.encode())
            first = await store.get("n2", b"k")
            assert first is not None
            await store.add("n2", b"k", c.encode())
            second = await store.get("n2", b"k")
            assert second is not None
            return r.decode(first.state).values(), r.decode(second.state).values()

        siblings, after = asyncio.run(scenario())
        assert sorted(siblings) == [b"a", b"b"]
        assert after == [b"c"]
        # A state the resolver cannot decode is refused, and the hint is unchanged.
        with pytest.raises(ValueError):
            asyncio.run(store.add("n2", b"k", b"not a dvv state"))
        kept = asyncio.run(store.get("n2", b"k"))
        assert kept is not None and r.decode(kept.state).values() == [b"c"]
    finally:
        store.close()


def test_delivery_deletes_only_acknowledged_hints(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        keys = [f"k{i}".encode() for i in range(6)]
        attempts: list[bytes] = []

        async def flaky(key: bytes, state: bytes) -> bool:
            attempts.append(key)
            return len(attempts) % 2 == 1  # acknowledges the 1st, 3rd, 5th ...

        async def scenario() -> tuple[int, int]:
            for k in keys:
                await store.add("n2", k, b"s-" + k)
            await store.add("n3", b"other", b"s")
            return await store.deliver("n2", flaky)

        assert asyncio.run(scenario()) == (3, 3)
        assert attempts == keys
        assert store.pending() == {"n2": 3, "n3": 1}
        for i, k in enumerate(keys):
            hint = asyncio.run(store.get("n2", k))
            assert (hint is None) == (i % 2 == 0), k
        # The next round sends only what is left, in key order.
        attempts.clear()
        assert asyncio.run(store.deliver("n2", flaky)) == (2, 1)
        assert attempts == [b"k1", b"k3", b"k5"]
        assert store.pending() == {"n2": 1, "n3": 1}
    finally:
        store.close()


def test_delivery_gives_up_after_consecutive_failures(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        attempts: list[bytes] = []

        async def down(key: bytes, state: bytes) -> bool:
            attempts.append(key)
            return False

        async def scenario() -> tuple[int, int]:
            for i in range(10):
                await store.add("n2", f"k{i}".encode(), b"s")
            return await store.deliver("n2", down, give_up_after=3)

        assert asyncio.run(scenario()) == (0, 3)
        assert len(attempts) == 3
        assert store.pending() == {"n2": 10}
    finally:
        store.close()


def test_delivery_reads_many_hints_in_chunks(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        sent: list[bytes] = []

        async def ok(key: bytes, state: bytes) -> bool:
            sent.append(key)
            return True

        keys = [f"k{i:04d}".encode() for i in range(300)]  # more than one scan chunk (256)

        async def scenario() -> tuple[int, int]:
            for k in keys:
                await store.add("n2", k, b"s")
            return await store.deliver("n2", ok)

        assert asyncio.run(scenario()) == (300, 0)
        assert sent == keys
        assert store.pending() == {}
    finally:
        store.close()


def test_hint_replaced_during_delivery_is_not_deleted(tmp_path: Path) -> None:
    store = open_store(tmp_path, ManualClock())
    try:
        sent: list[tuple[bytes, bytes]] = []
        racing = [b"newer"]

        async def send(key: bytes, state: bytes) -> bool:
            sent.append((key, state))
            if key == b"k1" and racing:
                # A sloppy write for the same key lands while k1 is in flight.
                await store.add("n2", b"k1", racing.pop())
            return True

        async def scenario() -> tuple[int, int]:
            await store.add("n2", b"k1", b"old")
            await store.add("n2", b"k2", b"s2")
            return await store.deliver("n2", send)

        assert asyncio.run(scenario()) == (2, 0)
        assert store.pending() == {"n2": 1}
        hint = asyncio.run(store.get("n2", b"k1"))
        assert hint is not None and hint.state == b"old|newer"
        # The next round delivers (and then deletes) the merged hint.
        sent.clear()
        assert asyncio.run(store.deliver("n2", send)) == (1, 0)
        assert sent == [(b"k1", b"old|newer")]
        assert store.pending() == {}
    finally:
        store.close()


def test_ttl_expiry_drops_old_hints_and_logs_them(tmp_path: Path) -> None:
    clock = ManualClock(wall_ns=100 * HOUR_NS)
    log = Events()
    store = open_store(tmp_path, clock, log=log)
    try:

        async def scenario() -> list[int]:
            await store.add("n2", b"old", b"s")
            await store.add("n3", b"refreshed", b"s")
            clock.advance(1800)
            await store.add("n2", b"young", b"s")
            await store.add("n3", b"refreshed", b"t")  # newest write: now
            clock.advance(1801)  # "old" is 3601 s old, the others 1801 s
            first = await store.expire()  # default TTL: one hour
            clock.advance(3600)
            second = await store.expire(3600)
            return [first, second]

        assert asyncio.run(scenario()) == [1, 2]
        assert store.pending() == {}
        expired = log.named("hint_expired")
        assert [(e["target"], e["key"]) for e in expired] == [
            ("n2", b"old"), ("n2", b"young"), ("n3", b"refreshed"),
        ]
        assert expired[0]["age_s"] == 3601.0
        assert expired[0]["ttl_s"] == 3600
    finally:
        store.close()


def test_expiry_survives_a_restart(tmp_path: Path) -> None:
    """Ages are wall-clock, so a hint's age carries across a restart."""
    clock = ManualClock(wall_ns=HOUR_NS)
    store = open_store(tmp_path, clock)
    asyncio.run(store.add("n2", b"k", b"s"))
    store.close()
    clock.advance(7200)
    store = open_store(tmp_path, clock)
    try:
        assert store.pending() == {"n2": 1}
        assert asyncio.run(store.expire(3600)) == 1
        assert store.pending() == {}
    finally:
        store.close()


# ------------------------------------------------------------ HandoffManager


def make_manager(
    tmp_path: Path, **settings: Any
) -> tuple[HintStore, FakeTransport, HandoffManager, ManualClock, Events]:
    clock = ManualClock(wall_ns=HOUR_NS)
    log = Events()
    store = open_store(tmp_path, clock, log=log)
    transport = FakeTransport()
    manager = HandoffManager(store, transport, clock, HandoffSettings(**settings), log)
    return store, transport, manager, clock, log


def test_on_node_alive_delivers_until_nothing_is_pending(tmp_path: Path) -> None:
    store, transport, manager, _, log = make_manager(tmp_path)
    try:

        async def scenario() -> None:
            for i in range(5):
                await store.add("n2", f"k{i}".encode(), f"v{i}".encode())
            await store.add("n3", b"k", b"v")
            transport.down.add("n2")
            manager.on_node_alive("n2")  # seen alive, but not yet answering
            await until(lambda: not manager._scheduled)
            assert store.pending() == {"n2": 5, "n3": 1}
            transport.down.clear()
            manager.on_node_alive("n2")
            manager.on_node_alive("n2")  # folds into the scheduled delivery
            await until(lambda: "n2" not in store.pending() and not manager._scheduled)
            await manager.close()

        asyncio.run(scenario())
        assert transport.data["n2"] == {f"k{i}".encode(): f"v{i}".encode() for i in range(5)}
        stats = manager.stats()
        assert stats["pending"] == {"n3": 1}
        assert stats["pending_total"] == 1
        assert stats["delivered"] == 5
        assert stats["failures_by_target"] == {"n2": 3}  # gave up after 3 in a row
        assert stats["errors"] == {"PeerUnreachable": 3}
        assert "n3" not in transport.data  # never told n3 was alive
        assert [e["delivered"] for e in log.named("hints_delivered")] == [0, 5]
        puts = [m for p, m in transport.requests if p == "n2"]
        assert all(set(m) == {"type", "key", "state"} and m["type"] == "replica_put" for m in puts)
    finally:
        store.close()


def test_errors_per_target_are_counted_not_raised(tmp_path: Path) -> None:
    store, transport, manager, _, log = make_manager(tmp_path, give_up_after=10)
    errors: list[BaseException | str] = [TimeoutError(), ConnectionLost("reset"), OSError("EPIPE"),
                                          "bad_request"]
    transport.fail = lambda peer, n: errors[n] if n < len(errors) else None
    try:

        async def scenario() -> tuple[int, int]:
            for i in range(6):
                await store.add("n2", f"k{i}".encode(), b"s")
            return await manager.deliver_to("n2")

        assert asyncio.run(scenario()) == (2, 4)
        stats = manager.stats()
        assert stats["failures"] == 4
        assert stats["errors"] == {"ConnectionLost": 1, "OSError": 1, "TimeoutError": 1,
                                   "reply:bad_request": 1}
        assert [e["key"] for e in log.named("hint_rejected")] == [b"k3"]
        assert store.pending() == {"n2": 4}
        assert asyncio.run(manager.deliver_to("n2")) == (4, 0)
        assert store.pending() == {}
        assert asyncio.run(manager.deliver_to("n2")) == (0, 0)  # nothing to send
    finally:
        store.close()


def test_tick_delivers_to_reachable_targets_and_expires(tmp_path: Path) -> None:
    store, transport, manager, clock, log = make_manager(tmp_path, ttl=60)
    transport.down.add("n3")
    try:

        async def scenario() -> None:
            await store.add("n4", b"stale", b"s")
            clock.advance(61)
            await store.add("n2", b"a", b"s")
            await store.add("n3", b"b", b"s")
            await manager.tick()

        asyncio.run(scenario())
        assert store.pending() == {"n3": 1}
        assert transport.data == {"n2": {b"a": b"s"}}
        assert [p for p, _ in transport.requests] == ["n2"]  # n3 was not even tried
        stats = manager.stats()
        assert (stats["delivered"], stats["expired"], stats["failures"], stats["rounds"]) == (1, 1, 0, 1)
        assert [e["target"] for e in log.named("hint_expired")] == ["n4"]
    finally:
        store.close()


def test_run_survives_a_storage_error_and_stops_when_cancelled(tmp_path: Path) -> None:
    store, _, manager, _, log = make_manager(tmp_path)
    calls = 0

    async def broken_deliver(*args: Any, **kwargs: Any) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        raise RuntimeError("disk on fire")

    try:

        async def scenario() -> None:
            await store.add("n2", b"k", b"s")
            store.deliver = broken_deliver  # type: ignore[method-assign]
            task = asyncio.ensure_future(manager.run(interval=3600))
            await until(lambda: calls >= 1)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
        assert manager.stats()["failures_by_target"] == {"n2": 1}
        assert log.named("handoff_error")[0]["error"] == "RuntimeError: disk on fire"
        assert store.pending() == {"n2": 1}
    finally:
        store.close()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        HandoffSettings(ttl=0)
    with pytest.raises(ValueError):
        HandoffSettings(give_up_after=0)
