"""The fault schedule (`harness.nemesis.schedule`): parsing `--nemesis`
names, refusing faults the backend cannot run, the invoke/info ops `Nemesis`
records, replay from a seed, errors that do not stop the run, and `heal` on
every path. Runs on the virtual clock of `test_nemesis_faults.py`: a
10-minute schedule takes milliseconds."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import pytest

from harness.backends.base import BackendCapabilities
from harness.nemesis import (
    FAULT_NAMES,
    SHAPES,
    FaultOptions,
    Nemesis,
    build_faults,
    check_available,
)
from harness.nemesis.base import ClusterHandle, Fault
from harness.nemesis.clock import ClockSkew
from harness.nemesis.schedule import ALL, parse_fault_names

from .test_nemesis_faults import NODES, FakeBackend, VirtualClock, make_handle, run, wait_for

Op = tuple[float, str, str, Any]  # (virtual time, type, f, value)


class Recorder:
    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.ops: list[Op] = []

    def __call__(self, type: str, f: str, value: Any) -> None:
        self.ops.append((self.clock.now, type, f, value))

    def pairs(self) -> list[tuple[str, str, Any]]:
        return [(t, f, v) for _, t, f, v in self.ops]


@dataclass
class Rig:
    """A nemesis on a fake backend and a virtual clock, and what it records."""

    nemesis: Nemesis
    handle: ClusterHandle
    backend: FakeBackend
    clock: VirtualClock
    recorder: Recorder
    restarted: list[str]  # nodes restarted, in order


def setup(names: list[str], seed: int = 0, interval: float = 10.0, **options: Any) -> Rig:
    clock = VirtualClock()
    handle, backend, restarted = make_handle(clock=clock)
    faults = build_faults(names, handle, FaultOptions(**options))
    recorder = Recorder(clock)
    nemesis = Nemesis(faults, handle, recorder, random.Random(seed), interval=interval)
    return Rig(nemesis, handle, backend, clock, recorder, restarted)


def run_schedule(names: list[str], seed: int, until: float = 600.0) -> list[tuple[str, str, Any]]:
    rig = setup(names, seed)

    async def main() -> None:
        async with rig.clock.driving():
            await rig.nemesis.run(until)
            await rig.nemesis.heal()

    run(main)
    return rig.recorder.pairs()


def assert_paired(ops: list[tuple[str, str, Any]]) -> None:
    """invoke, info, invoke, info ... each info with its invoke's f."""
    assert [t for t, _, _ in ops] == ["invoke", "info"] * (len(ops) // 2)
    for (_, f1, v1), (_, f2, _) in zip(ops[::2], ops[1::2], strict=True):
        assert f1 == f2 and v1 is None


# --- names, options, availability --------------------------------------------


def test_parse_fault_names() -> None:
    assert parse_fault_names(["all"]) == ALL  # not power, wipe: they lose data
    assert parse_fault_names(["none"]) == ()
    assert parse_fault_names([]) == ()
    assert parse_fault_names(["kill,partition", "Clock", "kill"]) == ("partition", "kill", "clock")
    assert parse_fault_names(["all", "kill"]) == ALL


def test_bad_fault_names_are_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as err:
        parse_fault_names(["partition,bogus"])
    message = str(err.value)
    assert "'bogus'" in message
    for name in (*FAULT_NAMES, "all", "none"):
        assert name in message
    with pytest.raises(ValueError, match="'none' cannot be combined with kill"):
        parse_fault_names(["none", "kill"])
    handle, _, _ = make_handle()
    with pytest.raises(ValueError, match="'bogus'"):
        build_faults(["bogus"], handle)


def test_build_faults() -> None:
    handle, _, _ = make_handle()
    faults = build_faults(["all"], handle)
    assert [f.name for f in faults] == list(ALL)
    assert [(f.start_f, f.stop_f) for f in faults] == [
        ("start-partition", "stop-partition"),
        ("kill", "restart"),
        ("pause", "resume"),
        ("bump-clock", "reset-clock"),
        ("start-packet", "stop-packet"),
    ]
    assert build_faults(["none"], handle) == []


def test_fault_options_are_checked_and_passed_on() -> None:
    with pytest.raises(ValueError, match="'triangle'"):
        FaultOptions(partition_shapes=("triangle",))
    with pytest.raises(ValueError, match="'most'"):
        FaultOptions(kill_targets="most")

    async def main() -> None:
        handle, _, _ = make_handle()
        (kill,) = build_faults(["kill"], handle, FaultOptions(kill_targets="majority"))
        assert len((await kill.start(random.Random(0)))["nodes"]) == 3

    run(main)


def test_check_available_lists_every_reason() -> None:
    handle, _, _ = make_handle()
    faults = build_faults(["all"], handle)
    assert check_available(faults, BackendCapabilities()) == []
    caps = BackendCapabilities(
        clock=False,
        clock_reason="libfaketime not found; install it (apt-get install faketime)",
        packet=False,
        packet_reason="tc needs root",
    )
    assert check_available(faults, caps) == [
        "clock: libfaketime not found; install it (apt-get install faketime)",
        "packet: tc needs root",
    ]
    assert check_available(build_faults(["partition", "kill"], handle), caps) == []


def test_interval_must_be_positive() -> None:
    handle, _, _ = make_handle()
    with pytest.raises(ValueError, match="interval"):
        Nemesis([], handle, lambda *a: None, random.Random(0), interval=0)


# --- the schedule -------------------------------------------------------------


def test_schedule_alternates_start_and_stop_on_staggered_intervals() -> None:
    rig = setup(["kill"], interval=10.0)

    async def main() -> None:
        async with rig.clock.driving():
            await rig.nemesis.run(until=300.0)
        assert rig.nemesis.active() == []
        assert rig.clock.now == 300.0  # ran to the deadline, not past it

    run(main)
    ops = rig.recorder.pairs()
    assert_paired(ops)
    assert [f for _, f, _ in ops[::2]] == ["kill", "restart"] * (len(ops) // 4)
    assert len(ops) // 4 >= 10  # 300 s at one fault per ~20 s
    times = [t for t, *_ in rig.recorder.ops]
    gaps = [b - a for a, b in zip(times[1::2], times[2::2], strict=False)]
    *whole, last = gaps
    assert all(5.0 <= g <= 15.0 for g in whole), whole
    assert last <= 15.0  # the last stop may come early, at the deadline
    starts = [t for t, typ, f, _ in rig.recorder.ops if (typ, f) == ("invoke", "kill")]
    assert max(starts) < 300.0
    killed = [
        n for _, typ, f, v in rig.recorder.ops if (typ, f) == ("info", "kill") for n in v["nodes"]
    ]
    assert rig.restarted == killed
    assert rig.backend.alive == set(NODES)


def test_same_seed_same_ops_different_seed_different_ops() -> None:
    first = run_schedule(["all"], seed=42)
    again = run_schedule(["all"], seed=42)
    other = run_schedule(["all"], seed=43)
    assert first == again
    assert first != other
    assert_paired(first)
    assert {f for _, f, _ in first} >= {"start-partition", "kill", "pause", "restart"}
    for _, _, value in first:
        json.dumps(value)  # every value is JSON


def test_a_failing_start_is_recorded_and_the_run_goes_on() -> None:
    rig = setup(["kill"])
    rig.backend.fail["kill"] = RuntimeError("boom")

    async def main() -> None:
        async with rig.clock.driving():
            await rig.nemesis.run(until=200.0)
            await rig.nemesis.heal()

    run(main)
    ops = rig.recorder.pairs()
    assert_paired(ops)
    starts = [v for t, f, v in ops if (t, f) == ("info", "kill")]
    assert len(starts) >= 5
    assert all(v == {"error": "RuntimeError: boom"} for v in starts)
    assert [f for _, f, _ in ops[::2]] == ["kill", "restart"] * len(starts)


def test_a_failed_stop_is_retried_by_heal() -> None:
    rig = setup(["kill"])
    broken = True
    real_restart = rig.handle.restart

    async def restart(node: str) -> None:
        if broken:
            raise RuntimeError(f"{node} will not start")
        await real_restart(node)

    rig.handle.restart = restart

    async def main() -> None:
        nonlocal broken
        async with rig.clock.driving():
            await rig.nemesis.run(until=100.0)
            assert rig.backend.alive != set(NODES)
            assert rig.nemesis.active() != []
            broken = False
            await rig.nemesis.heal()

    run(main)
    errors = [
        v for t, f, v in rig.recorder.pairs() if (t, f) == ("info", "restart") and "error" in v
    ]
    assert errors and "will not start" in errors[0]["error"]
    assert rig.backend.alive == set(NODES)
    assert rig.recorder.pairs()[-1][:2] == ("info", "restart")
    assert rig.nemesis.active() == []


def test_no_faults_records_nothing() -> None:
    rig = setup(["none"])

    async def main() -> None:
        await rig.nemesis.run(until=1e9)  # returns at once, without a clock driver
        await rig.nemesis.heal()

    run(main)
    assert rig.recorder.ops == []
    assert rig.backend.calls == [("heal_all",)]


# --- heal -----------------------------------------------------------------------


def test_heal_after_a_cancelled_start_is_safe_twice() -> None:
    rig = setup(["partition"])
    rig.backend.hang.add("cut")

    async def main() -> None:
        async with rig.clock.driving():
            task = asyncio.create_task(rig.nemesis.run(until=1000.0))
            await wait_for(lambda: rig.backend.hanging == 1, "the cut to hang")
            assert rig.nemesis.active() and rig.nemesis.active()[0].startswith("partition ")
            rig.backend.hang.clear()
            await rig.nemesis.heal()  # cancels the run itself
            assert task.cancelled()
            after_first = list(rig.backend.calls)
            await rig.nemesis.heal()
            assert rig.backend.calls == [*after_first, ("heal_all",)]

    run(main)
    ops = rig.recorder.pairs()
    assert ops[:3] == [
        ("invoke", "start-partition", None),
        ("info", "start-partition", {"error": "cancelled"}),
        ("invoke", "stop-partition", None),
    ]
    assert ops[3][:2] == ("info", "stop-partition") and ops[3][2]["healed"] in SHAPES
    assert len(ops) == 4
    assert [c[0] for c in rig.backend.calls] == ["cut", "cut", "heal_all", "heal_all"]
    assert rig.backend.calls[1] == ("cut", {})
    assert rig.nemesis.active() == []


def test_heal_resets_skewed_clocks_before_heal_all() -> None:
    rig = setup(["clock"], clock_kinds=("bump",))

    async def main() -> None:
        async with rig.clock.driving():
            task = asyncio.create_task(rig.nemesis.run(until=1000.0))
            await wait_for(lambda: any(rig.backend.offsets.values()), "a bump")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            mark = len(rig.backend.calls)
            await rig.nemesis.heal()
        after = rig.backend.calls[mark:]
        assert after == [*(("set_clock", n, 0.0) for n in NODES), ("heal_all",)]

    run(main)
    assert rig.recorder.pairs()[-2:] == [
        ("invoke", "reset-clock", None),
        ("info", "reset-clock", dict.fromkeys(NODES, 0.0)),
    ]


def test_heal_cancels_a_running_strobe() -> None:
    clock = VirtualClock()
    handle, backend, _ = make_handle(clock=clock)
    strobe = ClockSkew(handle, kinds=("strobe",), strobe_duration_s=(500.0, 500.0))
    recorder = Recorder(clock)
    nemesis = Nemesis([strobe], handle, recorder, random.Random(5), interval=100.0)

    async def main() -> None:
        async with clock.driving():
            task = asyncio.create_task(nemesis.run(until=10_000.0))
            await wait_for(lambda: len(backend.calls_of("set_clock")) >= 10, "the strobe")
            assert "strobe" in nemesis.active()[0]
            await nemesis.heal()
            assert task.cancelled()
            calls = len(backend.calls)
            await clock.sleep(1000.0)  # the strobe would have flipped thousands of times
            assert len(backend.calls) == calls
        assert backend.offsets == dict.fromkeys(NODES, 0.0)
        assert nemesis.active() == []

    run(main)
    assert recorder.pairs()[-2:] == [
        ("invoke", "reset-clock", None),
        ("info", "reset-clock", dict.fromkeys(NODES, 0.0)),
    ]


def test_heal_stops_only_what_is_active() -> None:
    rig = setup(["all"])

    async def main() -> None:
        async with rig.clock.driving():
            task = asyncio.create_task(rig.nemesis.run(until=1000.0))
            await wait_for(lambda: bool(rig.nemesis.active()), "a fault")
            assert len(rig.nemesis.active()) == 1  # one fault at a time
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            mark = len(rig.recorder.ops)
            await rig.nemesis.heal()
        healed = rig.recorder.pairs()[mark:]
        assert len(healed) == 2, healed
        assert_paired(healed)

    run(main)


def test_kill_is_healed_by_restart() -> None:
    # heal_all does not bring killed processes back: the Kill fault's stop must.
    rig = setup(["kill"], kill_targets="majority")

    async def main() -> None:
        async with rig.clock.driving():
            task = asyncio.create_task(rig.nemesis.run(until=1000.0))
            await wait_for(lambda: len(rig.backend.alive) == 2, "a majority killed")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await rig.nemesis.heal()
        assert rig.backend.alive == set(NODES)
        assert len(rig.restarted) == 3

    run(main)


class Quiet(Fault):
    """A fault whose `active()` never says anything: heal must still stop it
    after its start was begun, and a stop that succeeded is not repeated."""

    name = "quiet"
    start_f = "start-quiet"
    stop_f = "stop-quiet"

    def __init__(self) -> None:
        self.stops = 0
        self.started = asyncio.Event()

    async def start(self, rng: random.Random) -> Any:
        self.started.set()
        await asyncio.Event().wait()  # cancelled midway

    async def stop(self) -> Any:
        self.stops += 1
        return {"stops": self.stops}

    def active(self) -> str | None:
        return None


def test_heal_stops_a_begun_start_even_when_active_says_nothing() -> None:
    clock = VirtualClock()
    handle, _, _ = make_handle(clock=clock)
    quiet = Quiet()
    recorder = Recorder(clock)
    nemesis = Nemesis([quiet], handle, recorder, random.Random(0), interval=1.0)

    async def main() -> None:
        async with clock.driving():
            task = asyncio.create_task(nemesis.run(until=100.0))
            await quiet.started.wait()
            assert nemesis.active() == []
            await nemesis.heal()
            await nemesis.heal()
            assert task.cancelled()

    run(main)
    assert quiet.stops == 1
    assert recorder.pairs() == [
        ("invoke", "start-quiet", None),  # the default `choose`: start_f
        ("info", "start-quiet", {"error": "cancelled"}),
        ("invoke", "stop-quiet", None),
        ("info", "stop-quiet", {"stops": 1}),
    ]


# --- shares, pairs, density ----------------------------------------------------


def starts_of(rig: Rig) -> list[str]:
    return [f for _, typ, f, _ in rig.recorder.ops if typ == "invoke" and f in ("start-partition", "kill", "pause")]


@pytest.mark.parametrize("seed", range(30))
def test_partition_kill_in_a_30_s_run_starts_each_kind(seed: int) -> None:
    """With the interval a 30 s run gets by default, every seed starts both
    a partition and a kill (drawing each round at random once gave only
    kills on every seed tried)."""
    from harness.nemesis.schedule import auto_interval

    rig = setup(["partition", "kill"], seed=seed, interval=auto_interval(30.0, 2))

    async def main() -> None:
        async with rig.clock.driving():
            await rig.nemesis.run(until=30.0)
            await rig.nemesis.heal()

    run(main)
    assert {"start-partition", "kill"} <= set(starts_of(rig))
    assert rig.backend.alive == set(NODES)


def test_every_kind_gets_its_share_of_a_long_run() -> None:
    rig = setup(["partition", "kill", "pause"], seed=7, interval=1.0)

    async def main() -> None:
        async with rig.clock.driving():
            await rig.nemesis.run(until=600.0)

    run(main)
    counts = {f: starts_of(rig).count(f) for f in ("start-partition", "kill", "pause")}
    # Bags of 5 rounds: 3 alone, plus partition+kill and partition+pause.
    assert max(counts.values()) - min(counts.values()) <= 0.6 * max(counts.values()), counts
    assert counts["start-partition"] > counts["kill"]  # it is in both pairs


def test_a_pair_kills_on_the_partitions_minority_side() -> None:
    rig = setup(["partition", "kill"], seed=3, interval=2.0, partition_shapes=("halves",))

    async def main() -> None:
        async with rig.clock.driving():
            await rig.nemesis.run(until=400.0)

    run(main)
    ops = rig.recorder.ops
    in_force: dict[str, Any] = {}
    paired_kills = 0
    for _, typ, f, value in ops:
        if typ != "info":
            continue
        if f == "start-partition":
            in_force["partition"] = value
        elif f == "stop-partition":
            in_force.pop("partition", None)
        elif f == "kill" and "partition" in in_force:
            paired_kills += 1
            grudge = in_force["partition"]["grudge"]
            minority = [n for n in NODES if len(NODES) - len(grudge.get(n, [])) < len(NODES) // 2 + 1]
            assert set(value["nodes"]) <= set(minority), (value, grudge)
    assert paired_kills >= 5
    assert_paired([(t, f, v) for _, t, f, v in ops if f in ("kill", "restart")])


def test_minority_side() -> None:
    from harness.nemesis.schedule import minority_side

    nodes = ["n1", "n2", "n3", "n4", "n5"]
    halves = {"grudge": {"n1": ["n3", "n4", "n5"], "n2": ["n3", "n4", "n5"], "n3": ["n1", "n2"],
                         "n4": ["n1", "n2"], "n5": ["n1", "n2"]}}
    assert minority_side(halves, nodes) == ["n1", "n2"]
    ring = {"grudge": {n: [nodes[(i + 2) % 5], nodes[(i + 3) % 5]] for i, n in enumerate(nodes)}}
    assert minority_side(ring, nodes) == nodes  # everyone sees a majority
    assert minority_side({"error": "boom"}, nodes) == nodes


def test_auto_interval_fits_short_runs_and_caps_long_ones() -> None:
    from harness.nemesis.schedule import DEFAULT_INTERVAL, auto_interval

    assert auto_interval(600.0, 2) == DEFAULT_INTERVAL
    assert auto_interval(30.0, 2) == 3.75
    assert auto_interval(1.0, 5) == 0.5
    assert auto_interval(30.0, 0) == DEFAULT_INTERVAL


def test_primaries_targets_hit_every_replica_of_the_key_written_last() -> None:
    import dataclasses

    from harness.nemesis import Kill

    clock = VirtualClock()
    handle, backend, _ = make_handle(clock=clock)

    async def hot() -> list[str]:
        return ["n2", "n4", "elsewhere"]

    async def main() -> None:
        kill = Kill(dataclasses.replace(handle, hot_replicas=hot), "primaries")
        assert (await kill.start(random.Random(1)))["nodes"] == ["n2", "n4"]
        await kill.stop()
        blind = Kill(handle, "primaries")  # the system cannot say: one node
        assert len((await blind.start(random.Random(1)))["nodes"]) == 1
        await blind.stop()
        one = Kill(dataclasses.replace(handle, hot_replicas=hot), "primary")
        hit = set()
        for seed in range(20):
            nodes = (await one.start(random.Random(seed)))["nodes"]
            await one.stop()
            assert len(nodes) == 1
            hit |= set(nodes)
        assert hit == {"n2", "n4"}

    run(main)
    assert backend.alive == set(NODES)
    assert FaultOptions(kill_targets="primaries").kill_targets == "primaries"
