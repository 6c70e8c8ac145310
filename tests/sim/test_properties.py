"""Property tests of kvnode over simulated fault schedules: for any schedule
of partitions and crashes that `harness.sim.strategies` draws (well-formed,
at most one node down at once), on a small world of `strategies.configs()`,
the run is judged valid for what kvnode promises; the same run twice is the
same run; and (`slow`) with a planted bug (`ci/mutants/`) hypothesis finds
a schedule that is not valid.

"Valid" here is every checker but `stats`: its "never-succeeded" says an
operation kind never succeeded, which in runs of 2-5 s with a handful of
deletes is what a partition does, not a broken promise (availability is
not promised under faults). At least one operation must have succeeded.

Reproducible: derandomized, no example database. Examples scale with the
hypothesis profile (`HYPOTHESIS_PROFILE=thorough`: 10 times as many). A
failure prints the config, seed and schedule; `simulate(config, seed,
schedule)` replays it exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkers.result import worst
from harness import mutants
from harness.sim import strategies
from harness.sim.strategies import configs, scenarios, schedules
from harness.sim.world import Outcome, Step, WorldConfig, simulate

ROOT = Path(__file__).resolve().parents[2]
SCALE = settings().max_examples / 100  # 1 in the default profile, 10 in "thorough"


def examples(n: int) -> settings:
    return settings(max_examples=max(1, round(n * SCALE)), deadline=None, derandomize=True, database=None)


Scenario = tuple[WorldConfig, int, tuple[Step, ...]]

DEFAULTS = scenarios(configs())  # dvv siblings, sloppy quorums, async read repair
LINEARIZABLE = scenarios(configs(resolution="lww", quorum="strict", read_repair="sync"))


def show(outcome: Outcome) -> str:
    lines = [f"seed {outcome.seed}: valid={outcome.valid} {outcome.anomalies()} trace {outcome.trace_hash}"]
    lines += [f"  {step}" for step in outcome.schedule] or ["  (no faults)"]
    lines += [f"  {r.checker}: {a.type}: {a.explanation}" for r in outcome.results for a in r.anomalies]
    return "\n".join(lines)


def assert_valid(outcome: Outcome) -> None:
    judged = [r for r in outcome.results if r.checker != "stats"]
    assert judged, "no checker judged the run"
    assert worst(r.valid for r in judged) is True, show(outcome)
    assert any(op.type == "ok" and op.process != "nemesis" for op in outcome.history), show(outcome)


# ------------------------------------------------------------ the strategies


@examples(300)
@given(st.data(), st.integers(2, 5), st.integers(1, 2), st.lists(st.sampled_from(sorted(strategies.KINDS)),
                                                                  min_size=1, unique=True))
def test_a_drawn_schedule_is_well_formed(data: st.DataObject, count: int, max_down: int, kinds: list[str]) -> None:
    nodes = [f"n{i}" for i in range(1, count + 1)]
    seconds = data.draw(st.integers(1, 50)) / 10
    schedule = data.draw(schedules(nodes, seconds, kinds, max_episodes=6, max_down=max_down))
    assert [s.at for s in schedule] == sorted(s.at for s in schedule)
    open_: dict[str, Step] = {}  # resource: the step that started what is in force
    down: set[str] = set()
    for step in schedule:
        assert 0 < step.at < seconds and step.at == round(step.at, 3), step
        match step.action:
            case "partition":
                assert "partition" not in open_
                a, b = step.groups
                assert a and b and sorted(a + b) == sorted(nodes), step
                open_["partition"] = step
            case "heal":
                assert open_.pop("partition")
            case "clock" | "packet":
                assert step.action not in open_
                open_[step.action] = step
            case "clock-reset":
                assert open_.pop("clock")
            case "packet-stop":
                assert open_.pop("packet")
            case "crash" | "pause" | "wipe" | "power":
                hit = set(step.nodes) if step.action == "power" else {step.node}
                assert hit and not hit & down, (step, down)
                down |= hit
                assert len(down) <= max_down, (step, down)
                open_[",".join(sorted(hit))] = step
            case "restart" | "resume" | "rejoin" | "power-on":
                hit = set(step.nodes) if step.action == "power-on" else {step.node}
                begun = open_.pop(",".join(sorted(hit)))
                assert (begun.action, step.action) in {("crash", "restart"), ("pause", "resume"),
                                                      ("wipe", "rejoin"), ("power", "power-on")}, (begun, step)
                down -= hit
    assert not open_ and not down, "every fault that starts ends"


def test_schedules_refuse_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'flood'"):
        schedules(["n1", "n2", "n3"], 3.0, ("partition", "flood"))


# --------------------------------------------------------------- the node


@examples(50)
@given(DEFAULTS)
def test_any_schedule_of_partitions_and_crashes_is_valid_on_the_default_settings(scenario: Scenario) -> None:
    assert_valid(simulate(*scenario))


def check_linearizable(scenario: Scenario) -> None:
    outcome = simulate(*scenario)
    assert "linearizable" in [c.name for c in outcome.promise.claims]
    assert_valid(outcome)


@examples(50)
@given(LINEARIZABLE)
def test_any_schedule_is_linearizable_on_strict_quorums_with_sync_read_repair(scenario: Scenario) -> None:
    check_linearizable(scenario)


@examples(15)
@given(st.one_of(DEFAULTS, LINEARIZABLE))
def test_the_same_schedule_and_seed_give_the_same_run(scenario: Scenario) -> None:
    first, second = simulate(*scenario), simulate(*scenario)
    assert first.trace_hash == second.trace_hash, show(first)
    assert first.history == second.history
    assert first.schedule == second.schedule == scenario[2]


# -------------------------------------------------------------- the teeth

# Run in a child whose `kvnode` is the mutated copy: hypothesis must find a
# schedule on which the linearizability property above fails, and shrink it.
TEETH = textwrap.dedent("""
    import sys
    import kvnode
    assert kvnode.__file__.startswith(sys.argv[1]), kvnode.__file__
    from hypothesis import Phase, given, settings
    from tests.sim import test_properties as t
    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate, Phase.shrink])
    @given(t.LINEARIZABLE)
    def prop(scenario):
        t.check_linearizable(scenario)
    prop()
""")


@pytest.mark.slow
def test_a_planted_bug_is_found_and_shrunk(tmp_path: Path) -> None:
    mutant = mutants.parse(ROOT / "ci" / "mutants" / "read-first-reply.patch")
    code = mutants.make_copy(mutant, tmp_path / "code")
    done = subprocess.run([sys.executable, "-c", TEETH, str(code)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT}"})
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Failing test case" in out or "Falsifying example" in out, out  # (hypothesis's words changed)
    assert "nonlinearizable" in out or "stale-read" in out, out

