"""Hinted handoff: writes meant for a node that is down, kept by another node
and handed over when it comes back (Dynamo, DeCandia et al. 2007, §4.6).

With sloppy quorums a coordinator that cannot reach one of a key's N primary
replicas sends the write to the next node of the preference list instead, a
*fallback*, with a hint naming the primary it stands in for. The fallback does
not store the state as its own replica of the key: it keeps it in its
`HintStore`, keyed by (intended node, key), and acknowledges; that
acknowledgement counts toward W. Its `HandoffManager` later sends the state
to the intended node, as a plain `replica_put`, and deletes the hint once the
intended node has acknowledged it.

Durability. Hints live in a storage engine of their own (a separate
directory, `<data>/hints`), opened with `sync="always"`: `HintStore.add`
returns only once the hint's WAL record is fsynced, so a fallback that
acknowledges a sloppy write after `add` returned keeps the hint through a
crash or restart, exactly as a replica keeps a write it acknowledged. A hint
is deleted only after the intended node answered `replica_put_ok`, which a
replica sends once the state is durable there; so at every moment the state
is durable on the fallback, on the intended node, or both.

One hint per (target, key). A second write for the same key while the target
is down does not add a second hint: the new state is merged into the stored
one with the cluster's merge (`resolver_merge`), as the target itself would
merge them. Hints therefore grow with the number of keys written, not with the
number of writes.

Ordering and idempotence. Hints are delivered in key order, one at a time,
and nothing depends on that order: the target merges every state it is sent
(`Replica.merge`), and merging is commutative, associative and idempotent.
A hint delivered twice (the acknowledgement was lost, or the fallback crashed
between acknowledgement and delete) is harmless. A hint replaced by a newer
merged state while its delivery was in flight is not deleted (the delete
compares the stored bytes with the ones sent first), so the newer state is
delivered in a later round.

TTL. A hint whose newest write is older than the TTL (default one hour, as
Cassandra's `max_hint_window`) is dropped and logged: a node gone that long is
presumed to be replaced or to be repaired by anti-entropy, and hints for it
must not pile up without bound. Age is measured on the wall clock
(`Clock.wall_ns`), the only clock that means anything across a restart; a
clock skewed forward therefore drops hints early and one skewed backward keeps
them longer. A dropped hint loses no acknowledged write as long as W-1 other
replicas hold it; otherwise read repair and anti-entropy cannot bring it back
either, which is why the drop is logged.

A damaged block of the hint store (a checksum mismatch) loses the hints it
held, as an expired hint is lost, and is logged once (`hints_corrupt_range`):
scans skip it, a hint that cannot be read is absent to `add` (a new one is
written over it) and never deleted on the strength of a compare. A read of a
damaged hint raises CorruptionError (a missing reply, not an empty one).

Storage layout: engine key = target id (UTF-8, no NUL) + b"\\0" + key, so the
hints for one target are one contiguous scan range; value = msgpack
[created_ns, state], where created_ns is the wall-clock time of the newest
write folded into the hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from .clock import Clock
from .connection import ConnectionLost
from .keylocks import KeyLocks
from .offload import Offload
from .storage import Background, CorruptionError, Engine, FileSystem
from .transport import PeerUnreachable, Transport
from .versions import Resolver

__all__ = [
    "DEFAULT_TTL",
    "EventSink",
    "HandoffManager",
    "HandoffSettings",
    "Hint",
    "HintStore",
    "Merge",
    "Send",
    "resolver_merge",
]

DEFAULT_TTL = 3600.0  # seconds

Merge = Callable[[bytes, bytes], bytes]
"""Combine two encoded states of one key into one (commutative, idempotent)."""

Send = Callable[[bytes, bytes], Awaitable[bool]]
"""Send (key, state) to a hint's target; True once the target acknowledged it
(durably). Returns False for a failed attempt; may raise, which stops delivery."""

_SEP = b"\0"
_SCAN_CHUNK = 256  # hints read per storage call while scanning


class EventSink(Protocol):
    """Where hint events are logged (`kvnode.log.EventLog` is one)."""

    def event(self, name: str, **fields: Any) -> None: ...


class _NoLog:
    def event(self, name: str, **fields: Any) -> None:
        return None


def resolver_merge(resolver: Resolver) -> Merge:
    """The merge a cluster's resolver implies, on encoded states. Raises
    ValueError for bytes the resolver cannot decode."""

    def merge(a: bytes, b: bytes) -> bytes:
        return resolver.merge(resolver.decode(a), resolver.decode(b)).encode()

    return merge


@dataclass(frozen=True, kw_only=True, slots=True)
class Hint:
    target: str  # the node the state is meant for
    key: bytes
    state: bytes  # an encoded `Versioned`, as a replica_put carries it
    created_ns: int  # wall-clock ns of the newest write merged into it


def _check_target(target: object) -> bytes:
    if not isinstance(target, str) or not target:
        raise ValueError(f"a hint's target must be a non-empty node id, not {target!r}")
    raw = target.encode("utf-8")
    if _SEP in raw:
        raise ValueError(f"a hint's target may not contain NUL: {target!r}")
    return raw


def _engine_key(target: str, key: bytes) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    return _check_target(target) + _SEP + key


def _split_key(engine_key: bytes) -> tuple[str, bytes]:
    target, _, key = engine_key.partition(_SEP)
    return target.decode("utf-8", "replace"), key


def _encode_value(created_ns: int, state: bytes) -> bytes:
    return msgpack.packb([created_ns, state], use_bin_type=True)


def _decode_value(raw: bytes) -> tuple[int, bytes]:
    try:
        created_ns, state = msgpack.unpackb(raw, raw=False, use_list=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError(f"malformed hint ({type(e).__name__})") from None
    if not isinstance(created_ns, int) or isinstance(created_ns, bool) or not isinstance(state, bytes):
        raise ValueError("malformed hint: expected [created_ns, state]")
    return created_ns, state


class HintStore:
    """Durable hints, at most one per (target, key). Use `HintStore.open`.

    All methods must be called from the event loop's thread; storage calls go
    through the `Offload` seam. Pending counts per target are kept in memory
    (rebuilt by a scan at open) so that `pending()` is cheap enough for status.
    """

    def __init__(
        self, engine: Engine, *, clock: Clock, offload: Offload, merge: Merge, log: EventSink | None
    ) -> None:
        # Use HintStore.open: this only sets fields.
        self._engine = engine
        self._clock = clock
        self._offload = offload
        self._merge = merge
        self._log: EventSink = log if log is not None else _NoLog()
        self._counts: dict[str, int] = {}
        # Serializes read-modify-write of one hint (add, compare-and-delete).
        self._locks = KeyLocks()
        # A scan continues after the last key it saw with last + b"\0"; keep
        # that within the engine's key limit.
        self._max_key = engine.options.max_key_size - 1
        self._reported: set[tuple[int | None, int | None]] = set()  # damaged blocks logged

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        offload: Offload,
        merge: Merge,
        log: EventSink | None = None,
        fs: FileSystem | None = None,
        background: Background | None = None,
    ) -> HintStore:
        """Open (or create, or recover) the hint store in directory `path`,
        which no other engine may use. Blocks on disk I/O: call it at start-up,
        as the node opens its main engine. Raises the engine's errors
        (`LockHeldError`, `CorruptionError`)."""
        engine = Engine.open(path, sync="always", fs=fs, background=background)
        store = cls(engine, clock=clock, offload=offload, merge=merge, log=log)
        try:
            damaged: list[CorruptionError] = []
            for engine_key, _ in engine.scan(damaged=damaged):
                target = _split_key(engine_key)[0]
                store._counts[target] = store._counts.get(target, 0) + 1
            store._report(damaged)
        except BaseException:
            engine.close()
            raise
        return store

    def _report(self, damaged: list[CorruptionError]) -> None:
        for e in damaged:
            if (e.table, e.block) not in self._reported:
                self._reported.add((e.table, e.block))
                self._log.event("hints_corrupt_range", table=e.table, block=e.block, error=str(e))

    def _get_or_absent(self, ek: bytes) -> bytes | None:
        """The stored hint, None for an absent or unreadable one."""
        try:
            return self._engine.get(ek)
        except CorruptionError:
            return None

    def _counted(self, target: str, delta: int) -> None:
        count = self._counts.get(target, 0) + delta
        if count > 0:
            self._counts[target] = count
        else:
            self._counts.pop(target, None)

    # ------------------------------------------------------------ writes

    async def add(self, target: str, key: bytes, state: bytes) -> None:
        """Keep `state` for `target`, merged into any hint already held for
        (target, key). Returns once the hint is durable (fsynced): only then
        may a fallback acknowledge the sloppy write. Raises ValueError (bad
        target, key too long, or the merge cannot decode a state) before
        writing anything."""
        ek = _engine_key(target, key)
        if len(ek) > self._max_key:
            raise ValueError(f"hint key of {len(ek)} bytes exceeds {self._max_key}")
        if not isinstance(state, bytes):
            raise TypeError(f"state must be bytes, not {type(state).__name__}")
        async with self._locks.hold(ek):
            raw = await self._offload.run(lambda: self._get_or_absent(ek))
            merged = state
            if raw is not None:
                try:
                    _, old_state = _decode_value(raw)
                except ValueError as e:
                    self._log.event("hint_dropped", target=target, key=key, reason=str(e))
                else:
                    merged = self._merge(old_state, state)
            value = _encode_value(self._clock.wall_ns(), merged)
            await self._offload.run(lambda: self._engine.put(ek, value))
            if raw is None:
                self._counted(target, +1)

    async def _delete_if(self, ek: bytes, expected: bytes) -> bool:
        """Delete hint `ek` if it still holds `expected`; True if deleted."""
        async with self._locks.hold(ek):
            raw = await self._offload.run(lambda: self._get_or_absent(ek))
            if raw != expected:
                return False
            await self._offload.run(lambda: self._engine.delete(ek))
            self._counted(_split_key(ek)[0], -1)
            return True

    # ------------------------------------------------------------- reads

    def pending(self) -> dict[str, int]:
        """Hints held per target (targets with none are left out). Cheap."""
        return dict(sorted(self._counts.items()))

    async def get(self, target: str, key: bytes) -> Hint | None:
        """The hint held for (target, key), or None. A fallback may answer a
        read for `target` from it."""
        ek = _engine_key(target, key)
        raw = await self._offload.run(lambda: self._engine.get(ek))
        if raw is None:
            return None
        created_ns, state = _decode_value(raw)
        return Hint(target=target, key=key, state=state, created_ns=created_ns)

    async def _scan(self, start: bytes, end: bytes | None) -> AsyncIterator[tuple[bytes, bytes]]:
        # In chunks, so that neither the event loop nor memory holds them all.
        damaged: list[CorruptionError] = []

        def chunk(lo: bytes) -> list[tuple[bytes, bytes]]:
            return list(itertools.islice(self._engine.scan(lo, end, damaged=damaged), _SCAN_CHUNK))

        while True:
            items = await self._offload.run(functools.partial(chunk, start))
            self._report(damaged)
            for item in items:
                yield item
            if len(items) < _SCAN_CHUNK:
                return
            start = items[-1][0] + _SEP

    async def _hints(self, target: str) -> AsyncIterator[tuple[bytes, bytes]]:
        prefix = _check_target(target)
        async for item in self._scan(prefix + _SEP, prefix + b"\x01"):
            yield item

    # ---------------------------------------------------------- delivery

    async def deliver(
        self, target: str, send: Send, *, give_up_after: int | None = None
    ) -> tuple[int, int]:
        """Offer each hint held for `target`, in key order, to `send(key,
        state)`; delete a hint once `send` returned True, unless it was
        replaced by a newer one meanwhile (that one stays for the next round).
        Stops early after `give_up_after` consecutive failures (a target that
        is down would otherwise cost a timeout per hint). Returns (delivered,
        failed): sends acknowledged and sends that failed. An exception from
        `send` propagates; what was delivered until then stays delivered."""
        delivered = failed = streak = 0
        async for ek, raw in self._hints(target):
            try:
                _, state = _decode_value(raw)
            except ValueError as e:
                self._log.event("hint_dropped", target=target, key=_split_key(ek)[1], reason=str(e))
                await self._delete_if(ek, raw)
                continue
            if await send(_split_key(ek)[1], state):
                delivered += 1
                streak = 0
                await self._delete_if(ek, raw)
            else:
                failed += 1
                streak += 1
                if give_up_after is not None and streak >= give_up_after:
                    break
        return delivered, failed

    async def expire(self, ttl_seconds: float = DEFAULT_TTL) -> int:
        """Drop every hint whose newest write is more than `ttl_seconds` old
        on the wall clock, logging each (`hint_expired`). Returns how many."""
        now = self._clock.wall_ns()
        cutoff = now - round(ttl_seconds * 1_000_000_000)
        dropped = 0
        async for ek, raw in self._scan(b"", None):
            try:
                created_ns, _ = _decode_value(raw)
            except ValueError as e:  # unreadable: nothing to deliver
                if await self._delete_if(ek, raw):
                    self._log.event("hint_dropped", target=_split_key(ek)[0], key=_split_key(ek)[1],
                                    reason=str(e))
                continue
            if created_ns >= cutoff:
                continue
            if await self._delete_if(ek, raw):
                dropped += 1
                target, key = _split_key(ek)
                self._log.event("hint_expired", target=target, key=key,
                                created_ns=created_ns, age_s=round((now - created_ns) / 1e9, 3),
                                ttl_s=ttl_seconds)
        return dropped

    def close(self) -> None:
        """Close the engine (hints are already durable). Idempotent."""
        self._engine.close()


# ---------------------------------------------------------------- manager


@dataclass(frozen=True, kw_only=True, slots=True)
class HandoffSettings:
    ttl: float = DEFAULT_TTL  # seconds a hint is kept after its newest write
    interval: float = 1.0  # seconds between delivery rounds of `run`
    request_timeout: float = 2.0  # seconds to wait for a target's replica_put_ok
    give_up_after: int = 3  # consecutive failed sends that end a target's round

    def __post_init__(self) -> None:
        if self.ttl <= 0 or self.interval <= 0 or self.request_timeout <= 0:
            raise ValueError("ttl, interval and request_timeout must be positive")
        if self.give_up_after < 1:
            raise ValueError("give_up_after must be at least 1")


@dataclass(slots=True)
class _Counters:
    delivered: int = 0
    expired: int = 0
    failures: int = 0
    rounds: int = 0
    failures_by_target: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # by kind


_SEND_ERRORS = (PeerUnreachable, TimeoutError, ConnectionLost, OSError)


class HandoffManager:
    """Delivers a `HintStore`'s hints to their targets: at once when told a
    target is alive (`on_node_alive`), and in a periodic sweep (`run`) over
    the targets the transport can reach, which also expires old hints.

    At most one delivery per target runs at a time. Transport errors never
    escape: they count as failures and the hint stays for the next round.
    """

    def __init__(
        self,
        store: HintStore,
        transport: Transport,
        clock: Clock,
        settings: HandoffSettings | None = None,
        log: EventSink | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.clock = clock
        self.settings = settings or HandoffSettings()
        self.log: EventSink = log if log is not None else _NoLog()
        self.counters = _Counters()
        self._target_locks: dict[str, asyncio.Lock] = {}
        self._scheduled: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()

    def _failed(self, target: str, kind: str) -> None:
        c = self.counters
        c.failures += 1
        c.failures_by_target[target] = c.failures_by_target.get(target, 0) + 1
        c.errors[kind] = c.errors.get(kind, 0) + 1

    def _sender(self, target: str) -> Send:
        async def send(key: bytes, state: bytes) -> bool:
            message = {"type": "replica_put", "key": key, "state": state}
            try:
                reply = await self.transport.request(target, message, self.settings.request_timeout)
            except _SEND_ERRORS as e:
                self._failed(target, type(e).__name__)
                return False
            if reply.get("type") != "replica_put_ok":
                self._failed(target, f"reply:{reply.get('code', reply.get('type'))}")
                self.log.event("hint_rejected", target=target, key=key,
                               reply=reply.get("type"), message=reply.get("message"))
                return False
            return True

        return send

    async def deliver_to(self, target: str) -> tuple[int, int]:
        """Send every hint held for `target` and delete the acknowledged ones.
        Returns (delivered, failed). Called by `on_node_alive` and `run`; safe
        to call directly (tests, an admin request). Raises only for storage
        errors."""
        lock = self._target_locks.setdefault(target, asyncio.Lock())
        async with lock:
            if not self.store.pending().get(target):
                return 0, 0
            delivered, failed = await self.store.deliver(
                target, self._sender(target), give_up_after=self.settings.give_up_after
            )
        self.counters.delivered += delivered
        if delivered or failed:
            self.log.event("hints_delivered", target=target, delivered=delivered, failed=failed,
                           remaining=self.store.pending().get(target, 0))
        return delivered, failed

    def on_node_alive(self, target: str) -> None:
        """Called by the membership layer, on the event loop's thread, when
        `target` is seen alive (again): schedules a delivery and returns at
        once. Calls while one is scheduled or running fold into one more round."""
        task = self._scheduled.get(target)
        if task is not None and not task.done():
            self._again.add(target)
            return
        self._scheduled[target] = asyncio.get_running_loop().create_task(self._deliver_soon(target))

    async def _deliver_soon(self, target: str) -> None:
        try:
            while True:
                self._again.discard(target)
                await self._deliver_guarded(target)
                if target not in self._again:
                    return
        finally:
            if self._scheduled.get(target) is asyncio.current_task():
                del self._scheduled[target]

    async def _deliver_guarded(self, target: str) -> None:
        try:
            await self.deliver_to(target)
        except Exception as e:  # a storage error must not end the manager
            self._failed(target, type(e).__name__)
            self.log.event("handoff_error", target=target, error=f"{type(e).__name__}: {e}")

    async def tick(self) -> None:
        """One round of `run`: expire old hints, then deliver to every target
        with pending hints that the transport says is reachable."""
        self.counters.rounds += 1
        try:
            self.counters.expired += await self.store.expire(self.settings.ttl)
        except Exception as e:
            self.log.event("handoff_error", error=f"expire: {type(e).__name__}: {e}")
        for target in self.store.pending():
            if await self.transport.reachable(target):
                await self._deliver_guarded(target)

    async def run(self, interval: float | None = None) -> None:
        """Call `tick` every `interval` seconds (default: the settings') until
        cancelled. Never returns otherwise and never raises for a target's
        errors. Start it as a task at node start; cancel it at shutdown."""
        every = self.settings.interval if interval is None else interval
        while True:
            await self.tick()
            await asyncio.sleep(every)

    def stats(self) -> dict[str, Any]:
        """For `kvnode status`: hints pending per target and the counters."""
        c = self.counters
        pending = self.store.pending()
        return {
            "pending": pending,
            "pending_total": sum(pending.values()),
            "delivered": c.delivered,
            "expired": c.expired,
            "failures": c.failures,
            "failures_by_target": dict(sorted(c.failures_by_target.items())),
            "errors": dict(sorted(c.errors.items())),
            "rounds": c.rounds,
        }

    async def close(self) -> None:
        """Cancel scheduled deliveries (hints stay stored). Does not close the store."""
        tasks = list(self._scheduled.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._scheduled.clear()
