"""The simulated world (harness.sim.world): real kvnode nodes in one process
on virtual time, crash and restart, partitions, the harness's clients and
checkers, and the same trace for the same seed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from harness.sim.loop import SimLoop, SimulationError
from harness.sim.network import NetworkSettings
from harness.sim.world import World, WorldConfig, drain, simulate
from kvnode.client import KvError

SHORT = WorldConfig(nodes=3, simulated_seconds=2.0, recovery=3.0, rate=40.0)


def _in_world(config: WorldConfig, seed: int, body: Any) -> Any:
    """Run `body(world)` in a started world on a fresh SimLoop."""
    loop = SimLoop(seed)
    try:
        world = World(config, seed, loop)

        async def main() -> Any:
            await world.start()
            try:
                return await body(world)
            finally:
                for name in world.nodes:
                    world.crash(name)

        return loop.run_until_complete(main())
    finally:
        drain(loop)
        loop.close()


def test_a_run_without_faults_is_valid_with_client_ops_and_final_reads() -> None:
    outcome = simulate(SHORT, seed=3)
    assert outcome.valid is True
    client_ops = [op for op in outcome.history if op.process != "nemesis"]
    assert sum(op.type == "ok" for op in client_ops) > 20
    finals = [op for op in client_ops if op.type == "ok" and op.extra.get("final")]
    assert {op.node for op in finals} == {"n1", "n2", "n3"}
    assert [r.checker for r in outcome.results] == ["siblings", "stats"]
    assert outcome.simulated >= SHORT.simulated_seconds + SHORT.recovery
    # times are virtual nanoseconds, in order
    times = [op.time for op in outcome.history]
    assert times == sorted(times)


def test_same_seed_same_trace_and_history_across_50_seeds_with_every_fault_kind() -> None:
    config = WorldConfig(nodes=3, simulated_seconds=1.5, recovery=2.0, rate=30.0,
                         nemesis=("partition", "kill", "pause", "clock", "packet", "power"), nemesis_interval=0.2,
                         network=NetworkSettings(duplicate=0.05))
    first = {seed: simulate(config, seed) for seed in range(50)}
    second = {seed: simulate(config, seed) for seed in range(50)}
    for seed in range(50):
        assert first[seed].trace_hash == second[seed].trace_hash, seed
        assert first[seed].history == second[seed].history, seed
    assert len({o.trace_hash for o in first.values()}) == 50
    assert {f for o in first.values() for f in o.faults} >= {"start-partition", "kill", "pause", "bump-clock",
                                                             "start-packet", "power-off"}


def test_a_write_acknowledged_before_every_node_crashes_is_read_after_restart() -> None:
    async def body(world: World) -> list[str]:
        client = world.client("c", "n1")
        from contract.ops import Invocation
        done = await client.invoke(Invocation("write", "k", "v1"))
        assert done.type == "ok", done
        for name in world.nodes:
            world.crash(name)
        for name in world.nodes:
            await world.restart(name)
        got = await world.client("c2", "n2").invoke(Invocation("read", "k", None))
        assert got.type == "ok", got
        return list(got.value)

    assert _in_world(SHORT, 1, body) == ["v1"]


def test_a_crash_cancels_every_task_of_the_node_and_its_requests_are_refused() -> None:
    async def body(world: World) -> tuple[int, int, str]:
        loop = world.loop
        owner = world.sim["n2"].owner
        before = len(loop.tasks_of(owner))
        world.crash("n2")
        await asyncio.sleep(0.1)
        after = len(loop.tasks_of(owner))
        client = world.client("c", "n2")
        try:
            await client._client.get(b"k")  # type: ignore[union-attr]
            refused = "answered"
        except KvError as e:
            refused = f"{e.code} definite={e.definite}"
        with pytest.raises(SimulationError, match="which is running"):
            await world.restart("n1")
        return before, after, refused

    before, after, refused = _in_world(SHORT, 2, body)
    assert before >= 3  # gossip, handoff, rebalance ...
    assert after == 0
    assert refused == "connect_failed definite=True"


def test_a_partitioned_minority_cannot_reach_a_strict_quorum() -> None:
    from kvnode.config import ClusterSettings
    config = WorldConfig(nodes=3, settings=ClusterSettings(cluster="sim", quorum="strict"), simulated_seconds=1.0)

    async def body(world: World) -> tuple[str, str]:
        from contract.ops import Invocation
        await asyncio.sleep(2.0)  # gossip settles
        world.network.partition([["n1"], ["n2", "n3"]])
        cut = await world.client("c1", "n1").invoke(Invocation("write", "k", "a"))
        world.network.heal()
        healed = await world.client("c2", "n1").invoke(Invocation("write", "k", "b"))
        return cut.type, healed.type

    cut, healed = _in_world(config, 4, body)
    assert cut in ("fail", "info")
    assert healed == "ok"


def test_bad_configs_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown fault 'bridge'"):
        WorldConfig(nemesis=("bridge",))
    with pytest.raises(ValueError, match="power_targets is one or all"):
        WorldConfig(power_targets="some")  # type: ignore[arg-type]
    from harness.sim.world import Step
    with pytest.raises(ValueError, match="unknown step action 'explode'"):
        Step(at=1.0, action="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="need at least 3 nodes"):
        WorldConfig(nodes=2)
    with pytest.raises(ValueError, match="unknown node 'n9'"):
        _in_world(SHORT, 1, lambda world: asyncio.sleep(0, world.crash("n9")))


def test_lost_messages_make_indeterminate_ops_and_the_run_stays_valid() -> None:
    from harness.sim.network import NetworkSettings
    from kvnode.config import ClusterSettings
    config = WorldConfig(nodes=3, simulated_seconds=4.0, recovery=3.0, rate=40.0,
                         settings=ClusterSettings(cluster="sim", quorum="strict"), network=NetworkSettings(loss=0.05))
    outcome = simulate(config, seed=1)
    timeouts = [op for op in outcome.history if op.type == "info" and "timeout" in (op.error or "")]
    assert timeouts  # a lost request or reply is indeterminate, never a fail
    assert outcome.valid is True


FAULT_FS = {"partition": {"start-partition", "stop-partition"}, "kill": {"kill", "start"},
            "pause": {"pause", "resume"}, "clock": {"bump-clock", "reset-clock"},
            "packet": {"start-packet", "stop-packet"}, "power": {"power-off", "power-on"},
            "wipe": {"wipe", "rejoin"}}


@pytest.mark.parametrize("kind", sorted(FAULT_FS))
def test_every_fault_kind_happens_is_recorded_and_the_correct_node_stays_valid(kind: str) -> None:
    config = WorldConfig(nodes=3, simulated_seconds=6.0, recovery=4.0, rate=40.0, nemesis=(kind,),
                         nemesis_interval=1.0)
    outcome = simulate(config, seed=2)
    assert outcome.valid is True, outcome.anomalies()
    nemesis = {op.f for op in outcome.history if op.process == "nemesis"}
    assert FAULT_FS[kind] <= nemesis <= FAULT_FS[kind] | {"start"}  # the final heal restarts what is down
    assert len(outcome.schedule) >= 4


def test_a_paused_node_answers_nothing_until_resumed() -> None:
    from contract.ops import Invocation

    async def body(world: World) -> tuple[str, str, float]:
        world._node("n1").pause()
        client = world.client("c", "n1")
        during = await client.invoke(Invocation("write", "k", "v1"))
        world._node("n1").resume()
        after = await world.client("c2", "n1").invoke(Invocation("read", "k", None))
        return during.type, after.type, world.loop.time()

    during, after, _ = _in_world(SHORT, 1, body)
    assert during == "info"  # it may yet happen: the node holds the request
    assert after == "ok"


def test_a_kill_keeps_what_was_not_synced_and_a_power_loss_does_not() -> None:
    async def body(world: World) -> tuple[int, int]:
        disk = world.sim["n1"].disk
        before = disk.crashes
        world.crash("n1")
        killed = disk.crashes - before
        await world.restart("n1")
        world.sim["n1"].crash(power=True)
        return killed, disk.crashes - before

    assert _in_world(SHORT, 1, body) == (0, 1)


def test_a_clock_jump_breaks_last_write_wins_and_no_jump_does_not() -> None:
    from harness.sim.world import Step
    from kvnode.config import ClusterSettings

    config = WorldConfig(nodes=3, simulated_seconds=6.0, recovery=4.0, rate=60.0, mix="contention", active_keys=1,
                         settings=ClusterSettings(cluster="sim", resolution="lww"))
    # ahead: its writes outrank later ones (a clock behind is caught up by what the node has seen)
    jump = (Step(at=1.0, action="clock", node="n1", offset=5.0), Step(at=5.0, action="clock-reset"))
    jumped = [simulate(config, seed, jump) for seed in range(1, 4)]
    assert any(o.valid is False for o in jumped), [o.anomalies() for o in jumped]
    assert all(simulate(config, seed, ()).valid is True for seed in range(1, 4))


def test_kill_targets_majority_kills_a_majority_at_once() -> None:
    config = WorldConfig(nodes=5, simulated_seconds=4.0, nemesis=("kill",), nemesis_interval=1.0,
                         kill_targets="majority")
    schedule = World(config, 3, SimLoop(3)).plan()
    crashes = [s for s in schedule if s.action == "crash"]
    at_first = [s.node for s in crashes if s.at == crashes[0].at]
    assert len(at_first) == 3 and len(set(at_first)) == 3


def test_a_wiped_node_rejoins_empty_and_is_refilled() -> None:
    from harness.sim.world import Step

    config = WorldConfig(nodes=3, simulated_seconds=4.0, recovery=6.0, rate=40.0, replica_reads=True)
    outcome = simulate(config, 1, (Step(at=1.0, action="wipe", node="n2"), Step(at=2.0, action="rejoin", node="n2")))
    assert outcome.valid is True, outcome.anomalies()
    rejoin = next(op for op in outcome.history if op.f == "rejoin" and op.type == "info")
    assert rejoin.value["converged"] is True
    reads = [op for op in outcome.history if op.f == "replica-read" and op.type == "ok"]
    assert {op.node for op in reads} == {"n1", "n2", "n3"}


def test_replica_reads_name_a_replica_that_nothing_repairs() -> None:
    from harness.sim.world import Step
    from kvnode.config import ClusterSettings

    # strict quorums (no hints), no read repair, no anti-entropy: what n3
    # missed while cut off stays missing
    config = WorldConfig(nodes=3, simulated_seconds=3.0, recovery=4.0, rate=40.0, replica_reads=True,
                         settings=ClusterSettings(cluster="sim", quorum="strict", read_repair="off", ae_interval=0))
    cut = (Step(at=0.2, action="partition", groups=(("n3",), ("n1", "n2"))), Step(at=2.5, action="heal"))
    outcome = simulate(config, 1, cut)
    assert "replicas: replica-divergence" in outcome.anomalies()
    assert simulate(config, 1, ()).valid is True


def test_a_node_back_with_an_empty_disk_does_not_supersede_what_its_former_self_wrote() -> None:
    # Found by the property tests: kvnode stamped versions with the bare node
    # id, so n1's first blind write after the wipe (a version vector entry
    # n1: c) claimed every version n1 had made before it, and the other
    # replicas dropped acknowledged writes as superseded. Versions are now
    # stamped per incarnation (Coordinator.actor).
    from harness.sim.world import Step
    from kvnode.config import ClusterSettings

    config = WorldConfig(nodes=3, concurrency=2, rate=30.0, simulated_seconds=3.6, op_timeout=1.0, recovery=3.0,
                         settings=ClusterSettings(cluster="sim", partitions=16, gossip_interval=0.2,
                                                  suspect_after=1.0, dead_after=2.0, ae_interval=2.0,
                                                  handoff_interval=0.3, request_timeout=1.0))
    wipe = (Step(at=1.5, action="wipe", node="n1"), Step(at=1.8, action="rejoin", node="n1"))
    outcome = simulate(config, 4, wipe)
    assert outcome.valid is True, outcome.anomalies()


def test_partition_shapes_cut_as_harness_run_draws_them() -> None:
    config = WorldConfig(nodes=5, simulated_seconds=20.0, recovery=4.0, rate=40.0, nemesis=("partition",),
                         nemesis_interval=1.0, partition_shapes=("bridge", "majorities-ring", "isolate-one"))
    schedule = World(config, 2, SimLoop(2)).plan()  # ten partitions, each of a shape drawn at random
    cuts = [s for s in schedule if s.action == "partition"]
    assert {s.shape for s in cuts} == {"bridge", "majorities-ring", "isolate-one"}
    bridge = next(s for s in cuts if s.shape == "bridge")
    dropped = dict(bridge.grudge)
    joined = [n for n, d in dropped.items() if not d]
    assert len(joined) == 1  # the bridge node reaches both halves, which do not reach each other
    assert "cut (bridge): " in str(bridge)
    outcome = simulate(config, 2, schedule[:6])
    assert outcome.valid is True, outcome.anomalies()
    starts = [op.value for op in outcome.history if op.f == "start-partition" and op.type == "info"]
    assert [v["shape"] for v in starts] == [s.shape for s in schedule[:6] if s.action == "partition"]
    with pytest.raises(ValueError, match="unknown partition shape 'ring'"):
        WorldConfig(partition_shapes=("ring",))
