"""The faults of `harness.nemesis` against an in-memory backend that records
every primitive called: kill/restart, pause/resume, clock bump/strobe/reset,
packet shapes, partitions, and what `unavailable` says.

`FakeBackend`, `VirtualClock` and `make_handle` are shared with
`test_nemesis_schedule.py`.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from harness.backends.base import BackendCapabilities, Grudge, NodePlace, PacketShape
from harness.nemesis.base import ClusterHandle, pick_nodes
from harness.nemesis.clock import ClockSkew
from harness.nemesis.packet import Packet
from harness.nemesis.partition import Partition
from harness.nemesis.process import Kill, Pause

NODES = ["n1", "n2", "n3", "n4", "n5"]


class FakeBackend:
    """A backend in memory: it keeps the state the primitives change and logs
    every call in `calls`. `fail[method]` makes that method raise;
    `hang` makes the listed methods wait forever (until cancelled)."""

    name = "fake"

    def __init__(self, nodes: Sequence[str], caps: BackendCapabilities | None = None) -> None:
        self.caps = caps or BackendCapabilities()
        self.calls: list[tuple[Any, ...]] = []
        self.alive = set(nodes)
        self.paused: set[str] = set()
        self.grudge: dict[str, frozenset[str]] = {}
        self.shapes: dict[str, PacketShape] = {}
        self.offsets: dict[str, float] = dict.fromkeys(nodes, 0.0)
        self.fail: dict[str, Exception] = {}
        self.hang: set[str] = set()
        self.hanging = 0  # calls now waiting forever

    async def _enter(self, method: str, *args: Any) -> None:
        self.calls.append((method, *args))
        if method in self.fail:
            raise self.fail[method]
        if method in self.hang:
            self.hanging += 1
            await asyncio.Event().wait()

    async def setup(self, nodes: Sequence[str], run_dir: Path) -> dict[str, NodePlace]:
        raise NotImplementedError

    def capabilities(self) -> BackendCapabilities:
        return self.caps

    async def start(self, node: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        await self._enter("start", node)
        self.alive.add(node)

    async def kill(self, node: str) -> None:
        await self._enter("kill", node)
        self.alive.discard(node)
        self.paused.discard(node)

    async def pause(self, node: str) -> None:
        await self._enter("pause", node)
        self.paused.add(node)

    async def resume(self, node: str) -> None:
        await self._enter("resume", node)
        self.paused.discard(node)

    def running(self, node: str) -> bool:
        return node in self.alive

    async def cut(self, grudge: Grudge) -> None:
        await self._enter("cut", dict(grudge))
        self.grudge = {n: frozenset(d) for n, d in grudge.items() if d}

    async def shape(self, nodes: Sequence[str], shape: PacketShape) -> None:
        await self._enter("shape", list(nodes), shape)
        for node in nodes:
            self.shapes[node] = shape

    async def set_clock(self, node: str, offset_s: float) -> None:
        await self._enter("set_clock", node, offset_s)
        self.offsets[node] = offset_s

    async def heal_all(self) -> None:
        await self._enter("heal_all")
        self.grudge = {}
        self.shapes = {}
        self.offsets = dict.fromkeys(self.offsets, 0.0)
        self.paused = set()

    async def collect_logs(self, node: str, dest: Path) -> list[Path]:
        return []

    async def teardown(self) -> None:
        pass

    def calls_of(self, method: str) -> list[tuple[Any, ...]]:
        return [c[1:] for c in self.calls if c[0] == method]


class VirtualClock:
    """Virtual time for asyncio tests: `sleep` parks the caller; inside
    `driving()`, a driver task moves time to the earliest wake-up whenever the
    other tasks have had a chance to run (a few loop iterations: the fakes
    never wait on anything real), so hours pass in milliseconds and the
    interleaving is the same on every run."""

    SETTLE = 10  # loop iterations given to woken tasks before the next wake-up

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._added: asyncio.Event | None = None

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), self._seq, fut))
        self._seq += 1
        if self._added is not None:
            self._added.set()
        await fut

    async def _drive(self) -> None:
        assert self._added is not None
        while True:
            for _ in range(self.SETTLE):
                await asyncio.sleep(0)
            while self._sleepers and self._sleepers[0][2].done():  # cancelled sleepers
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                self._added.clear()
                await self._added.wait()
                continue
            wake, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            fut.set_result(None)

    @asynccontextmanager
    async def driving(self) -> AsyncIterator[None]:
        self._added = asyncio.Event()
        driver = asyncio.create_task(self._drive())
        try:
            yield
        finally:
            driver.cancel()
            await asyncio.gather(driver, return_exceptions=True)


async def wait_for(condition: Callable[[], bool], what: str, rounds: int = 100_000) -> None:
    """Yield to the loop until `condition()` holds (the driver moves virtual
    time meanwhile); fail, saying `what`, if it never does."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def make_handle(
    nodes: Sequence[str] = NODES,
    caps: BackendCapabilities | None = None,
    clock: VirtualClock | None = None,
) -> tuple[ClusterHandle, FakeBackend, list[str]]:
    """A handle on a fake backend; the list collects the nodes restarted."""
    backend = FakeBackend(nodes, caps)
    restarted: list[str] = []

    async def restart(node: str) -> None:
        assert not backend.running(node), f"restart of running {node}"
        restarted.append(node)
        await backend.start(node, [], {})

    handle = ClusterHandle(backend=backend, nodes=list(nodes), restart=restart)
    if clock is not None:
        handle.clock = clock
    return handle, backend, restarted


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())  # type: ignore[arg-type]


# --- pick_nodes ---------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 10))
def test_pick_nodes_sizes(n: int) -> None:
    nodes = [f"n{i}" for i in range(1, n + 1)]
    for seed in range(30):
        rng = random.Random(seed)
        assert len(pick_nodes(nodes, rng, "one")) == 1
        minority = pick_nodes(nodes, rng, "minority")
        assert 1 <= len(minority) <= max(1, (n - 1) // 2)
        assert len(pick_nodes(nodes, rng, "majority")) == n // 2 + 1
        assert pick_nodes(nodes, rng, "all") == nodes
        some = pick_nodes(nodes, rng, "any")
        assert 1 <= len(some) <= n
        assert some == [x for x in nodes if x in some]  # in the nodes' order, no repeats


def test_pick_nodes_rejects_unknown_targets() -> None:
    with pytest.raises(ValueError, match=r"'most'.*one, minority"):
        pick_nodes(NODES, random.Random(0), "most")
    handle, _, _ = make_handle()
    with pytest.raises(ValueError, match="'few'"):
        Kill(handle, targets="few")


# --- kill / pause -------------------------------------------------------------


def test_kill_then_stop_restarts_exactly_the_killed_nodes() -> None:
    async def main() -> None:
        for seed in range(20):
            handle, backend, restarted = make_handle()
            kill = Kill(handle, targets="minority")
            value = await kill.start(random.Random(seed))
            killed = value["nodes"]
            assert 1 <= len(killed) <= 2
            assert [c[0] for c in backend.calls_of("kill")] == killed
            assert backend.alive == set(NODES) - set(killed)
            assert kill.active() == f"killed {' '.join(killed)}"
            assert await kill.stop() == {"nodes": killed}
            assert restarted == killed
            assert backend.alive == set(NODES)
            assert kill.active() is None
            assert await kill.stop() == {"nodes": []}  # idempotent
            assert restarted == killed

    run(main)


def test_kill_defaults_to_one_node() -> None:
    async def main() -> None:
        handle, _, restarted = make_handle()
        kill = Kill(handle)
        value = await kill.start(random.Random(3))
        assert len(value["nodes"]) == 1
        await kill.stop()
        assert restarted == value["nodes"]

    run(main)


def test_kill_stop_skips_a_node_whose_kill_never_took_effect() -> None:
    async def main() -> None:
        handle, backend, restarted = make_handle()
        backend.hang.add("kill")
        kill = Kill(handle, targets="all")
        task = asyncio.create_task(kill.start(random.Random(0)))
        await wait_for(lambda: backend.hanging == 1, "the kill to hang")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert kill.active() == "killed n1"  # may have been killed: heal must look
        backend.hang.clear()
        assert await kill.stop() == {"nodes": []}  # n1 still runs: no second process
        assert restarted == []
        assert kill.active() is None

    run(main)


def test_pause_and_resume_pair_up() -> None:
    async def main() -> None:
        for seed in range(20):
            handle, backend, _ = make_handle()
            pause = Pause(handle, targets="minority")
            value = await pause.start(random.Random(seed))
            paused = value["nodes"]
            assert backend.paused == set(paused)
            assert backend.alive == set(NODES)  # paused processes still exist
            assert pause.active() == f"paused {' '.join(paused)}"
            assert await pause.stop() == {"nodes": paused}
            assert backend.calls_of("resume") == [(n,) for n in paused]
            assert backend.calls_of("pause") == [(n,) for n in paused]
            assert backend.paused == set()
            assert pause.active() is None

    run(main)


# --- clock --------------------------------------------------------------------


def test_clock_bump_offsets_in_range_and_stop_resets_every_node() -> None:
    async def main() -> None:
        signs = set()
        for seed in range(200):
            handle, backend, _ = make_handle()
            clock = ClockSkew(handle, kinds=("bump",), min_s=0.01, max_s=300.0)
            rng = random.Random(seed)
            assert clock.choose(rng) == "bump-clock"
            value = await clock.start(rng)
            assert value and set(value) <= set(NODES)
            for node, offset in value.items():
                assert 0.01 <= abs(offset) <= 300.0
                assert backend.offsets[node] == offset
                signs.add(offset > 0)
            assert clock.active() is not None
            assert await clock.stop() == dict.fromkeys(NODES, 0.0)
            assert backend.offsets == dict.fromkeys(NODES, 0.0)
            assert clock.active() is None
        assert signs == {True, False}

    run(main)


def test_clock_bump_records_the_skew_each_node_saw_and_a_clock_that_did_not_move() -> None:
    async def main() -> None:
        handle, backend, _ = make_handle()
        seen: dict[str, float] = {}

        async def node_time(node: str) -> float | None:
            if node == "n3":
                return None  # cannot tell (paused, say): not observed
            # n2's program ignores the skew, as a Go program under libfaketime does
            return time.time() + (0.0 if node == "n2" else backend.offsets.get(node, 0.0))

        handle.node_time = node_time
        clock = ClockSkew(handle, kinds=("bump",), targets="all", min_s=10.0, max_s=20.0)
        rng = random.Random(4)
        clock.choose(rng)
        value = await clock.start(rng)
        seen = value["observed"]
        assert abs(seen["n1"] - value["n1"]) < 0.5 and seen["n3"] is None
        assert abs(seen["n2"]) < 0.5
        assert "the clock did not move: n2 reads" in value["error"] and "n1" not in value["error"]
        await clock.stop()

    run(main)


def test_clock_bump_magnitudes_span_milliseconds_to_minutes() -> None:
    async def main() -> None:
        handle, _, _ = make_handle()
        clock = ClockSkew(handle, kinds=("bump",), targets="all")
        rng = random.Random(7)
        magnitudes = []
        for _ in range(100):
            clock.choose(rng)
            magnitudes += [abs(v) for v in (await clock.start(rng)).values()]
            await clock.stop()
        assert min(magnitudes) < 0.1 and max(magnitudes) > 30

    run(main)


def test_clock_reset_kind_sets_every_node_to_zero() -> None:
    async def main() -> None:
        handle, backend, _ = make_handle()
        backend.offsets["n2"] = 5.0
        clock = ClockSkew(handle, kinds=("reset",))
        rng = random.Random(0)
        assert clock.choose(rng) == "reset-clock"
        assert await clock.start(rng) == dict.fromkeys(NODES, 0.0)
        assert backend.offsets == dict.fromkeys(NODES, 0.0)

    run(main)


def test_clock_strobe_flips_then_leaves_the_last_offset() -> None:
    async def main() -> None:
        vclock = VirtualClock()
        handle, backend, _ = make_handle(clock=vclock)
        clock = ClockSkew(
            handle,
            kinds=("strobe",),
            targets="one",
            strobe_duration_s=(1.0, 1.0),
            strobe_period_s=(0.1, 0.1),
        )
        rng = random.Random(1)
        assert clock.choose(rng) == "strobe-clock"
        async with vclock.driving():
            value = await clock.start(rng)
            strobe = value["strobe"]
            (node,) = strobe["nodes"]
            assert strobe["period"] == 0.1 and strobe["duration"] == 1.0
            assert clock.active() is not None and "strobe" in (clock.active() or "")
            await vclock.sleep(5.0)  # well past the strobe's end
        sets = backend.calls_of("set_clock")
        offsets = [off for n, off in sets if n == node]
        # flips at 0, 0.1 ... 1.0 s: eleven settings, alternating delta and 0
        assert offsets == [strobe["delta"] if i % 2 == 0 else 0.0 for i in range(11)]
        assert backend.offsets[node] == strobe["delta"]  # left at the last offset
        assert clock.active() == f"clock {node} {strobe['delta']:+g}s"
        await clock.stop()
        assert backend.offsets == dict.fromkeys(NODES, 0.0)

    run(main)


def test_clock_stop_cancels_a_running_strobe() -> None:
    async def main() -> None:
        vclock = VirtualClock()
        handle, backend, _ = make_handle(clock=vclock)
        clock = ClockSkew(handle, kinds=("strobe",), strobe_duration_s=(100.0, 100.0))
        rng = random.Random(2)
        clock.choose(rng)
        async with vclock.driving():
            await clock.start(rng)
            await wait_for(lambda: len(backend.calls_of("set_clock")) >= 5, "a few flips")
            await clock.stop()
            calls = len(backend.calls)
            await vclock.sleep(200.0)
        assert len(backend.calls) == calls  # no flip after stop
        assert backend.offsets == dict.fromkeys(NODES, 0.0)
        assert clock.active() is None

    run(main)


def test_clock_strobe_error_is_reported_by_stop() -> None:
    async def main() -> None:
        vclock = VirtualClock()
        handle, backend, _ = make_handle(clock=vclock)
        clock = ClockSkew(handle, kinds=("strobe",))
        backend.fail["set_clock"] = OSError("faketime file gone")
        rng = random.Random(0)
        clock.choose(rng)
        async with vclock.driving():
            await clock.start(rng)
            await wait_for(lambda: bool(backend.calls_of("set_clock")), "the strobe to try")
            del backend.fail["set_clock"]
            value = await clock.stop()
        assert value["strobe-error"] == "OSError: faketime file gone"

    run(main)


def test_clock_unavailable_without_libfaketime() -> None:
    handle, _, _ = make_handle()
    clock = ClockSkew(handle)
    assert clock.unavailable(BackendCapabilities()) is None
    reason = "libfaketime not found: apt-get install libfaketime"
    assert clock.unavailable(BackendCapabilities(clock=False, clock_reason=reason)) == reason
    assert "libfaketime" in (clock.unavailable(BackendCapabilities(clock=False)) or "")


def test_clock_rejects_bad_options() -> None:
    handle, _, _ = make_handle()
    with pytest.raises(ValueError, match="warp"):
        ClockSkew(handle, kinds=("bump", "warp"))
    with pytest.raises(ValueError, match="min_s"):
        ClockSkew(handle, min_s=10, max_s=1)


# --- packet -------------------------------------------------------------------


def test_packet_profiles_in_range_and_stop_clears_every_node() -> None:
    async def main() -> None:
        seen = set()
        for seed in range(100):
            handle, backend, _ = make_handle()
            packet = Packet(handle)
            value = await packet.start(random.Random(seed))
            ((nodes, shape),) = backend.calls_of("shape")
            assert nodes == value["nodes"] and nodes
            assert shape == PacketShape(
                delay_ms=value["delay_ms"], jitter_ms=value["jitter_ms"], loss=value["loss"]
            )
            assert shape.delay_ms or shape.loss
            if shape.delay_ms:
                assert 50 <= shape.delay_ms <= 500 and 0 <= shape.jitter_ms <= shape.delay_ms / 2
                seen.add("delay")
            if shape.loss:
                assert 0.05 <= shape.loss <= 0.30
                seen.add("loss")
            assert (packet.active() or "").startswith("packet ")
            assert await packet.stop() == {"nodes": NODES}
            assert backend.calls_of("shape")[-1] == (NODES, PacketShape())
            assert packet.active() is None
        assert seen == {"delay", "loss"}

    run(main)


def test_packet_unavailable_says_why() -> None:
    handle, _, _ = make_handle()
    packet = Packet(handle)
    assert packet.unavailable(BackendCapabilities()) is None
    caps = BackendCapabilities(packet=False, packet_reason="tc not found")
    assert packet.unavailable(caps) == "tc not found"


# --- partition ----------------------------------------------------------------


def test_partition_cuts_and_heals() -> None:
    async def main() -> None:
        handle, backend, _ = make_handle()
        partition = Partition(handle, shapes=["isolate-one"])
        assert partition.active() is None
        value = await partition.start(random.Random(4))
        assert value["shape"] == "isolate-one"
        ((grudge,),) = backend.calls_of("cut")
        loners = [n for n, drops in grudge.items() if len(drops) == len(NODES) - 1]
        assert len(loners) == 1
        assert value["grudge"] == {n: sorted(d) for n, d in sorted(grudge.items()) if d}
        assert partition.active() == "partition isolate-one"
        assert await partition.stop() == {"healed": "isolate-one"}
        assert backend.calls_of("cut")[-1] == ({},)
        assert backend.grudge == {}
        assert partition.active() is None

    run(main)


def test_partition_draws_every_shape_by_default() -> None:
    async def main() -> None:
        handle, _, _ = make_handle()
        partition = Partition(handle)
        rng = random.Random(0)
        shapes = set()
        for _ in range(100):
            shapes.add((await partition.start(rng))["shape"])
            await partition.stop()
        assert shapes == {"halves", "random-halves", "isolate-one", "majorities-ring", "bridge"}

    run(main)


def test_partition_stays_active_when_the_heal_fails() -> None:
    async def main() -> None:
        handle, backend, _ = make_handle()
        partition = Partition(handle, shapes=["bridge"])
        await partition.start(random.Random(0))
        backend.fail["cut"] = RuntimeError("iptables busy")
        with pytest.raises(RuntimeError):
            await partition.stop()
        assert partition.active() == "partition bridge"  # heal will try again

    run(main)


def test_partition_rejects_unknown_shape() -> None:
    handle, _, _ = make_handle()
    with pytest.raises(ValueError, match=r"'triangle'.*majorities-ring"):
        Partition(handle, shapes=["halves", "triangle"])
