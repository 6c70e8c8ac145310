"""The coordinator: how a node serves a client's get, put and delete.

Any node accepts any request. For a key, the ring gives a preference list of
N nodes (its replicas).

put / delete (a delete is a put of a tombstone):

1. If this node is not one of the key's replicas, it forwards the request to
   the first reachable replica and relays the answer: a new version must be
   made on a replica's own copy (see `versions`).
2. It picks where the copies go: the reachable primaries and, with
   `quorum="sloppy"`, for each unreachable primary the next reachable
   fallback of the preference list, which keeps the copy as a hint for that
   primary and hands it over when the primary is back (`handoff`). Hints
   count toward W. With `quorum="strict"` only primaries count (Riak's
   PW/PR). Fewer than W places: `unavailable` (definite: nothing has been
   written anywhere).
3. It makes the new version on its own copy (durable), which counts as the
   first acknowledgement, and sends the whole new state to the other N-1
   replicas, which merge it and acknowledge once durable.
4. After W acknowledgements it answers `ok`. If the quorum does not come in
   time, or too many replicas fail after sending, it answers `timeout`
   (indeterminate: the write may survive on some replicas, as in Riak).

get: asks the same places (a fallback answers from its hint), waits for R
answers, merges them and returns the values and the merged context. Read
repair then brings stale replicas up to date: `async` sends the merged state
after answering, `sync` writes it to W replicas before answering (ABD), `off`
does neither. Fewer than R reachable replicas: `unavailable`.

A damaged copy (the storage engine's `CorruptionError`, here or a peer's
`corrupt` reply) is a failed replica, not a failed request: a get counts it
as a missing reply and answers from R of the other replicas, and read repair
(async or sync) then writes the merged state over the damaged copy; a put
whose own copy is damaged has another primary make the version (as a put
that reaches a node that is not a replica does), and its replica_put here
rewrites the copy.

Errors are raised as `CoordinatorError(code, message)`, where code is a
protocol error code and so tells the client whether the outcome is definite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock
from .config import ClusterSettings
from .connection import ConnectionLost
from .log import EventLog
from .replica import Replica
from .ring import Placement, Ring
from .storage import CorruptionError
from .transport import PeerUnreachable, Transport
from .versions import TooManySiblings, Versioned

# Where a copy goes: (node, None) for a primary's own replica, or
# (fallback node, primary) for a hint the fallback keeps for that primary.
Target = tuple[str, str | None]


class DamagedReplica(ConnectionLost):
    """A replica answered that its copy of the key is damaged (`corrupt`):
    no reply for the quorum, a target for read repair."""


class CoordinatorError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(slots=True)
class Counters:
    gets: int = 0
    puts: int = 0
    deletes: int = 0
    forwarded: int = 0
    read_repairs: int = 0
    damaged_replicas: int = 0  # reads and puts that met a damaged copy, here or at a peer
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadResult:
    values: list[bytes]
    context: bytes | None


class Coordinator:
    def __init__(
        self,
        *,
        node: str,
        ring: Ring,
        settings: ClusterSettings,
        replica: Replica,
        transport: Transport,
        clock: Clock,
        log: EventLog,
        is_down: Callable[[str], bool] = lambda node: False,
        actor: str | None = None,
    ) -> None:
        """`is_down(node)`: the failure detector's verdict; a node it calls
        down is not sent to (a fallback stands in) even if it still accepts
        connections, as a paused process does.

        `actor`: the name the versions this node makes are stamped with
        (default: `node`). The node passes one per incarnation (its id and
        generation): a version vector entry claims every dot of its actor up
        to its counter, so a node that came back without its data (a
        replaced or wiped disk) and stamped new versions with its old name
        would claim the versions its former self made, which the other
        replicas hold, and they would drop them as superseded."""
        self.node = node
        self.actor = actor or node
        self.ring = ring
        self.settings = settings
        self.replica = replica
        self.transport = transport
        self.clock = clock
        self.log = log
        self.is_down = is_down
        self.counters = Counters()
        self._placements: dict[int, Placement] = {}
        self._placed_by: Ring | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ helpers

    def _fail(self, code: str, message: str) -> CoordinatorError:
        self.counters.errors[code] = self.counters.errors.get(code, 0) + 1
        return CoordinatorError(code, message)

    async def _reachable(self, nodes: tuple[str, ...]) -> list[str]:
        up: dict[str, bool] = {}
        unknown = []
        for n in nodes:
            if n == self.node:
                up[n] = True
            elif self.is_down(n):
                up[n] = False
            elif self.transport.connected_to(n):
                up[n] = True  # the common case: no task, no wait
            else:
                unknown.append(n)
        if unknown:
            checks = await asyncio.gather(*(self.transport.reachable(n) for n in unknown))
            up.update(zip(unknown, checks, strict=True))
        return [n for n in nodes if up[n]]



    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send_state(self, peer: str, key: bytes, state: bytes, hint: str | None = None) -> bool:
        """Store `state` at `peer` (merged there, or kept as a hint for the
        primary `hint`); True once it is durable there."""
        message: dict[str, Any] = {"type": "replica_put", "key": key, "state": state}
        if hint is not None:
            message["hint"] = hint
        try:
            reply = await self.transport.request(peer, message, self.settings.request_timeout)
        except (PeerUnreachable, TimeoutError, ConnectionLost, OSError):
            return False
        return reply.get("type") == "replica_put_ok"

    async def _store(self, target: Target, key: bytes, state: Versioned) -> bool:
        peer, hint = target
        if peer == self.node and hint is None:
            await self.replica.merge(key, state)
            return True
        return await self._send_state(peer, key, self.replica.encode(state), hint)

    def placement(self, key: bytes) -> Placement:
        """The key's primaries and fallbacks, cached per partition (the ring
        is immutable; a new ring empties the cache)."""
        if self._placed_by is not self.ring:
            self._placements, self._placed_by = {}, self.ring
        partition = self.ring.partition_of(key)
        placement = self._placements.get(partition)
        if placement is None:
            placement = self._placements[partition] = self.ring.placement(key, self.settings.n)
        return placement

    async def _targets(self, key: bytes) -> tuple[tuple[str, ...], list[Target]]:
        """The key's primaries, and where its copies go now: each reachable
        primary, and with a sloppy quorum, for each unreachable primary the
        next reachable fallback, holding a hint for it."""
        placement = self.placement(key)
        reachable = set(await self._reachable(placement.primaries))
        targets: list[Target] = [(p, None) for p in placement.primaries if p in reachable]
        down = [p for p in placement.primaries if p not in reachable]
        if down and self.settings.quorum == "sloppy":
            stand_ins = await self._reachable(placement.fallbacks)
            targets += [(f, p) for p, f in zip(down, stand_ins, strict=False)]
        return placement.primaries, targets

    async def _until(self, tasks: Iterable[asyncio.Future[Any]], enough: Callable[[], bool]) -> None:
        """Wait until `enough()` holds (checked as each task finishes), every
        task has finished, or the request timeout has passed. One callback
        per task and one timer, where a loop of `asyncio.wait` calls would
        register and unregister callbacks on every pending task each time."""
        pending = [t for t in tasks if not t.done()]
        if not pending or enough():
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        left = len(pending)

        def finished(_: asyncio.Future[Any]) -> None:
            nonlocal left
            left -= 1
            if (left == 0 or enough()) and not woken.done():
                woken.set_result(None)

        for t in pending:
            t.add_done_callback(finished)
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                await woken
        except TimeoutError:
            pass
        finally:
            for t in pending:
                t.remove_done_callback(finished)

    @staticmethod
    def _ok(t: asyncio.Future[Any]) -> bool:
        return t.done() and not t.cancelled() and t.exception() is None

    async def _quorum(self, tasks: list[asyncio.Task[bool]], needed: int) -> int:
        """Wait until `needed` tasks returned True, all finished, or the
        request timeout passed; return how many returned True."""

        def acks() -> int:
            return sum(1 for t in tasks if self._ok(t) and t.result())

        await self._until(tasks, lambda: acks() >= needed)
        return acks()

    # ---------------------------------------------------------------- put

    async def put(self, key: bytes, value: bytes | None, context: bytes | None) -> None:
        """Coordinate a put (value None: a delete)."""
        if value is None:
            self.counters.deletes += 1
        else:
            self.counters.puts += 1
        s = self.settings
        primaries = self.placement(key).primaries
        if self.node not in primaries:
            await self._forward(primaries, key, value, context)
            return
        _, targets = await self._targets(key)
        if len(targets) < s.w:
            raise self._fail("unavailable", f"{len(targets)} of {s.n} replicas reachable ({s.quorum} quorum), w={s.w}")
        others = [t for t in targets if t != (self.node, None)]
        tasks: list[asyncio.Task[bool]] = []

        def send(state: Versioned) -> None:
            # The other replicas get the new state while this one fsyncs it.
            encoded = self.replica.encode(state)
            tasks.extend(asyncio.ensure_future(self._send_state(p, key, encoded, h)) for p, h in others)

        try:
            await self.replica.update(key, context=context, value=value, node=self.actor, made=send)
        except CorruptionError:
            # Nothing was made or sent: another primary makes the version,
            # and its copy to this node rewrites the damaged one.
            self.counters.damaged_replicas += 1
            await self._forward(tuple(p for p in primaries if p != self.node), key, value, context)
            return
        except TooManySiblings as e:
            raise self._fail("too_many_siblings", str(e)) from None
        except ValueError as e:
            raise self._fail("bad_request", f"bad context: {e}") from None
        except BaseException:
            # Sent but not durable here: the outcome is unknown, let the sends finish.
            for task in tasks:
                self._spawn(task)
            raise
        acks = 1 + await self._quorum(tasks, s.w - 1)
        for task in tasks:
            if not task.done():
                self._spawn(task)  # let stragglers land; they are replicas too
        if acks < s.w:
            raise self._fail("timeout", f"{acks} of w={s.w} replicas acknowledged in {s.request_timeout}s")

    async def _forward(self, replicas: tuple[str, ...], key: bytes, value: bytes | None, context: bytes | None) -> None:
        self.counters.forwarded += 1
        message = {"type": "coordinate", "op": "put" if value is not None else "delete",
                   "key": key, "value": value, "context": context}
        for peer in replicas:
            try:
                # The replica coordinates, so allow it a whole request timeout plus ours.
                reply = await self.transport.request(peer, message, 2 * self.settings.request_timeout)
            except PeerUnreachable:
                continue  # nothing sent: the next replica may take it
            except (TimeoutError, ConnectionLost, OSError) as e:
                raise self._fail("timeout", f"forwarded to {peer}, no answer: {e or type(e).__name__}") from None
            if reply.get("type") == "error":
                raise self._fail(str(reply.get("code")), f"via {peer}: {reply.get('message')}")
            return
        raise self._fail("unavailable", "no replica of the key is reachable to coordinate the put")

    # ---------------------------------------------------------------- get

    async def _fetch(self, target: Target, key: bytes) -> Versioned:
        peer, hint = target
        if peer == self.node and hint is None:
            return await self.replica.read(key)
        message: dict[str, Any] = {"type": "replica_get", "key": key}
        if hint is not None:
            message["hint"] = hint
        reply = await self.transport.request(peer, message, self.settings.request_timeout)
        if reply.get("type") != "replica_get_ok":
            if reply.get("code") == "corrupt":
                self.counters.damaged_replicas += 1
                raise DamagedReplica(f"{peer}: {reply.get('message')}")
            raise ConnectionLost(f"{peer}: {reply.get('message', reply.get('type'))}")
        return self.replica.decode(reply["state"])

    async def get(self, key: bytes) -> ReadResult:
        self.counters.gets += 1
        s = self.settings
        _, targets = await self._targets(key)
        if len(targets) < s.r:
            raise self._fail("unavailable", f"{len(targets)} of {s.n} replicas reachable ({s.quorum} quorum), r={s.r}")
        local: Target = (self.node, None)
        answers: dict[Target, Versioned] = {}
        damaged: list[Target] = []  # replicas whose copy is damaged: to repair, not to count
        if local in targets:
            try:
                answers[local] = await self.replica.read(key)  # no task: it never waits on I/O
            except CorruptionError:
                self.counters.damaged_replicas += 1
                damaged.append(local)
        tasks = {asyncio.ensure_future(self._fetch(t, key)): t for t in targets if t != local}
        have = len(answers)
        await self._until(tasks, lambda: have + sum(1 for t in tasks if self._ok(t)) >= s.r)
        for t, target in tasks.items():
            if self._ok(t):
                answers[target] = t.result()
        pending = {t for t in tasks if not t.done()}
        damaged += [target for t, target in tasks.items() if self._damaged(t)]
        if len(answers) < s.r:
            for t in pending:
                t.cancel()
            note = f" ({len(damaged)} with a damaged copy)" if damaged else ""
            raise self._fail("timeout", f"{len(answers)} of r={s.r} replicas answered in {s.request_timeout}s{note}")
        merged = self._merge_all(list(answers.values()))
        if s.read_repair == "sync":
            await self._repair_sync(key, merged, answers, tasks, pending, damaged)
        elif s.read_repair == "async":
            self._repair_later(key, merged, answers, tasks, pending, damaged)
        else:
            for t in pending:
                t.cancel()
        return ReadResult(values=merged.values(), context=merged.client_context())

    @staticmethod
    def _damaged(t: asyncio.Future[Any]) -> bool:
        return t.done() and not t.cancelled() and isinstance(t.exception(), DamagedReplica)

    def _merge_all(self, states: list[Versioned]) -> Versioned:
        merged = states[0]
        for other in states[1:]:
            merged = self.replica.resolver.merge(merged, other)
        return merged

    def _repair_later(
        self, key: bytes, merged: Versioned, answers: dict[Target, Versioned],
        tasks: dict[asyncio.Task[Versioned], Target], pending: set[asyncio.Task[Versioned]],
        damaged: list[Target],
    ) -> None:
        """Async read repair: once the replicas that had not answered do (or
        time out), write the merged version to every stale one and every one
        whose copy is damaged. Callbacks, not a task per read: most reads
        find nothing to repair."""
        repair = _LateRepair(self, key, merged, answers, tasks, pending, damaged)
        if not pending:
            repair.settle()
            return
        repair.wait(self.settings.request_timeout)

    async def _repair_sync(
        self, key: bytes, merged: Versioned, answers: dict[Target, Versioned],
        tasks: dict[asyncio.Task[Versioned], Target], pending: set[asyncio.Task[Versioned]],
        damaged: list[Target],
    ) -> None:
        """ABD's write-back: before answering, make sure W replicas hold the
        merged state, so a later read cannot return anything older. A copy
        found damaged is written too (after answering, when W hold it anyway)."""
        for t in pending:
            t.cancel()
        encoded = self.replica.encode(merged)
        holders = sum(1 for st in answers.values() if self.replica.encode(st) == encoded)
        if holders >= self.settings.w:
            if damaged:
                self.counters.read_repairs += len(damaged)
                for target in damaged:
                    self._spawn(self._store(target, key, merged))
            return
        stale = [p for p, st in answers.items() if self.replica.encode(st) != encoded]
        stale += [t for t in damaged if t[1] is not None]  # hints; damaged primaries are unasked
        unasked = [(p, None) for p in self.placement(key).primaries if (p, None) not in answers]
        self.counters.read_repairs += len(stale) + len(unasked)
        writes = [asyncio.ensure_future(self._store(p, key, merged)) for p in stale + unasked]
        acks = holders + await self._quorum(writes, self.settings.w - holders)
        for write in writes:
            if not write.done():
                self._spawn(write)
        if acks < self.settings.w:
            raise self._fail("timeout", f"read repair reached {acks} of w={self.settings.w} replicas")

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(BaseException):
                await task


class _LateRepair:
    """One get's async read repair, waiting for the answers still to come.

    An object, not closures: a closure that refers to itself (to remove
    itself as a callback) is a reference cycle, which only the cyclic
    garbage collector frees, and an idle node hardly ever runs it: every
    get's answers (values of any size) stayed in memory. Here the timer is
    cancelled and every reference dropped once settled, so nothing is left
    for the collector."""

    def __init__(
        self, coordinator: Coordinator, key: bytes, merged: Versioned, answers: dict[Target, Versioned],
        tasks: dict[asyncio.Task[Versioned], Target], pending: set[asyncio.Task[Versioned]],
        damaged: list[Target],
    ) -> None:
        self.coordinator = coordinator
        self.key = key
        self.merged = merged
        self.answers = answers
        self.tasks = tasks
        self.late = set(pending)  # the answers still to come
        self.waiting = set(pending)
        self.damaged = damaged
        self.timer: asyncio.TimerHandle | None = None

    def wait(self, timeout: float) -> None:
        self.timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)
        for t in self.waiting:
            t.add_done_callback(self._finished)

    def _finished(self, t: asyncio.Future[Any]) -> None:
        self.waiting.discard(t)
        if not self.waiting:
            self.settle()

    def _timed_out(self) -> None:
        for t in self.waiting:
            t.remove_done_callback(self._finished)
        self.waiting.clear()
        self.settle()

    def settle(self) -> None:
        c = self.coordinator
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        merged, answers, damaged = self.merged, self.answers, self.damaged
        for t in self.late:
            if c._ok(t):
                answers[self.tasks[t]] = t.result()
                merged = c.replica.resolver.merge(merged, t.result())
            elif c._damaged(t):
                damaged.append(self.tasks[t])
        encoded = c.replica.encode(merged)
        stale = [p for p, st in answers.items() if c.replica.encode(st) != encoded] + damaged
        if stale:
            c.counters.read_repairs += len(stale)
            for target in stale:
                c._spawn(c._store(target, self.key, merged))
        # Drop the states (the spawned stores hold what they need).
        self.answers, self.tasks, self.late, self.damaged = {}, {}, set(), []
