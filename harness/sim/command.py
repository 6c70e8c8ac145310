"""`harness sim`: many seeds of a simulated kvnode test (harness.sim.world),
each a whole cluster in this process on virtual time.

Prints one line per seed that is not valid (its verdict, the anomalies and
the command that replays it), then seeds per wall second and simulated
seconds per wall second. `--replay SEED` runs one seed and prints its trace
hash: the same seed and flags give the same hash, in any process. A seed
that is not valid is written to the store as a run directory (`test.json`,
`history.jsonl`, `results.json`), so `harness check` re-judges it.

Exit codes as `harness run`: 0 every seed valid, 1 one invalid, 2 one
unknown (and none invalid), 254 bad arguments.

Only click is imported here at start-up: the node and the world load when
the command runs.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import click

from harness.errors import ConfigError
from workloads.base import MIXES

NEMESES = ("none", "partition", "kill", "pause", "clock", "packet", "power", "wipe")


def _settings(items: tuple[str, ...]) -> Any:
    """kvnode's ClusterSettings from `--set KEY=VALUE`s, each converted to
    its field's type; ConfigError naming a bad one."""
    from kvnode.config import ClusterSettings

    fields = {f.name: f for f in dataclasses.fields(ClusterSettings)}
    values: dict[str, Any] = {"cluster": "sim"}
    for item in items:
        key, sep, text = item.partition("=")
        name = key.strip().replace("-", "_")
        if not sep or name not in fields:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}")
        kind = type(getattr(ClusterSettings(), name))
        try:
            values[name] = kind(text)
        except ValueError:
            raise ConfigError(f"--set {item}: {name} takes a {kind.__name__}") from None
    try:
        return ClusterSettings(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--set: {e}") from None


def _faults(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in NEMESES]
    if bad:
        raise ConfigError(f"--nemesis {bad[0]!r}: the simulation has {', '.join(NEMESES)}")
    return tuple(n for n in names if n != "none")


def _store_failure(store_dir: Path, config: Any, outcome: Any) -> Path:
    """The seed's run directory: test.json, history.jsonl, results.json."""
    from harness import results as results_mod
    from harness import store
    from harness.history import HistoryWriter

    run_dir = store.new_run(store_dir, f"sim-{config.workload}-{'+'.join(config.nemesis) or 'none'}")
    store.write_json(run_dir / "test.json", {
        "system": "kvnode", "backend": "sim", "workload": config.workload, "nodes": config.nodes,
        "concurrency": config.clients, "active_keys": config.active_keys, "max_ops_per_key": config.max_ops_per_key,
        "nemesis": list(config.nemesis), "seed": outcome.seed, "simulated_seconds": config.simulated_seconds,
        "system_settings": dataclasses.asdict(config.settings), "promise": outcome.promise.to_json(),
        "trace_hash": outcome.trace_hash,
        "simulation": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("settings", "check")},
        "schedule": [str(step) for step in outcome.schedule],
    })
    with HistoryWriter(run_dir / "history.jsonl") as writer:
        for op in outcome.history:
            writer.write(op)
    store.write_json(run_dir / "results.json", results_mod.as_dict(outcome.results, promise=outcome.promise))
    return run_dir


def _outcomes(config: Any, seeds: Iterable[int], jobs: int, schedule: Any = None,
              deadline: float | None = None) -> Iterator[Any]:
    """Each seed's `Outcome`, in seed order; with `jobs` > 1 from that many
    worker processes (a seed's run does not depend on where it runs). With
    a `deadline` (time.monotonic), no seed starts after it."""
    from harness.sim.world import simulate

    def more() -> bool:
        return deadline is None or time.monotonic() < deadline

    if jobs == 1:
        for seed in seeds:
            if not more():
                return
            yield simulate(config, seed, schedule)
        return
    import multiprocessing
    from concurrent.futures import Future, ProcessPoolExecutor

    # fork: a worker starts at once with the modules already imported.
    context = multiprocessing.get_context("fork")
    pending: collections.deque[Future[Any]] = collections.deque()
    todo = iter(seeds)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        while True:
            while len(pending) < jobs and more():
                upcoming = next(todo, None)
                if upcoming is None:
                    break
                pending.append(pool.submit(simulate, config, upcoming, schedule))
            if not pending:
                return
            yield pending.popleft().result()


@click.command()
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds to run [default: 10, or as many as --time-budget allows].")
@click.option("--time-budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Run seeds, one after another, until S wall seconds have passed (no new seed starts later).")
@click.option("--first-seed", type=click.IntRange(min=0), default=None, metavar="SEED",
              help="The first seed (the others follow it) [default: random, printed].")
@click.option("--replay", type=click.IntRange(min=0), default=None, metavar="SEED",
              help="Run this one seed and print its trace hash.")
@click.option("--nodes", type=click.IntRange(min=1, max=64), default=3, show_default=True)
@click.option("--workload", type=click.Choice(["register", "cart"]), default="register", show_default=True)
@click.option("--mix", type=click.Choice(MIXES), default="default",
              show_default=True, help="The workload's operation mix.")
@click.option("--active-keys", type=click.IntRange(min=1), default=3, show_default=True, metavar="K",
              help="Keys in use at once.")
@click.option("--nemesis", default="none", show_default=True,
              help=f"Faults, comma-separated: {', '.join(NEMESES)}.")
@click.option("--nemesis-interval", type=click.FloatRange(min=0, min_open=True), default=2.0, show_default=True,
              metavar="S", help="Simulated seconds between faults.")
@click.option("--simulated-seconds", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="S", help="Simulated seconds of workload per seed.")
@click.option("--skew-ms", type=click.IntRange(min=0), default=0, show_default=True, metavar="MS",
              help="Each node's wall clock is off by a seeded amount in [-MS, MS] (last-write-wins timestamps).")
@click.option("--loss", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              metavar="P", help="The chance that one message between nodes or to a client is lost.")
@click.option("--power-targets", type=click.Choice(["one", "all"]), default="one", show_default=True,
              help="The power fault cuts one random node, or the whole cluster at once.")
@click.option("--partition-shapes", default=None, metavar="SHAPES",
              help="Partition shapes, comma-separated, one drawn at random per partition (halves, random-halves, isolate-one, "
                   "majorities-ring, bridge) [default: two random groups].")
@click.option("--kill-targets", type=click.Choice(["one", "majority"]), default="one", show_default=True,
              help="The kill fault kills one random node, or a random majority at once.")
@click.option("--deletes", type=click.FloatRange(min=0, max=1, max_open=True), default=None, metavar="P",
              help="The share of operations that delete [default: the mix's own].")
@click.option("--replica-reads", is_flag=True,
              help="After healing, read each key's replicas without repair until they agree (as harness run "
                   "does): a replica that does not converge is a replica-divergence.")
@click.option("--cuts", type=click.Choice(["drop", "hold"]), default="drop", show_default=True,
              help="What a partition does with a message across it: drop it (iptables, a connection given up), "
                   "or hold it and deliver it at the heal (the local backend's proxies, TCP retransmission).")
@click.option("--duplicate", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, show_default=True,
              metavar="P", help="The chance that a request between two nodes is delivered twice.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Clients [default: 2 per node].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=50.0, show_default=True,
              help="Operations per simulated second, over all clients.")
@click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
              help="A kvnode cluster setting (n, w, r, resolution, quorum, read_repair, ...).")
@click.option("--check", "check", multiple=True, metavar="CLAIM",
              help="A claim to check beyond what kvnode promises for its settings (e.g. linearizable).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Processes running seeds at once (each seed runs whole in one).")
@click.option("--shrink", is_flag=True,
              help="Shrink the first seed that is not valid (fewer faults, a shorter run, fewer clients) and "
                   "save it as shrunk.json in its run directory.")
@click.option("--schedule", "schedule_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="With --replay: the saved shrink (shrunk.json) to run instead of the seed's own.")
@click.option("--matrix", "matrix_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="With --row: a matrix file (harness ci --matrix) whose row gives the cluster, workload, settings "
                   "and faults, replacing the flags that shape a run.")
@click.option("--row", "row_name", default=None, metavar="NAME", help="The row of --matrix to simulate.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("store"),
              show_default=True, help="Where seeds that are not valid are written.")
def sim(seeds: int | None, time_budget: float | None, first_seed: int | None, replay: int | None, nodes: int, workload: str, mix: str,
        active_keys: int, nemesis: str,
        nemesis_interval: float, simulated_seconds: float, skew_ms: int, loss: float, power_targets: str, partition_shapes: str | None, kill_targets: str, deletes: float | None,
        replica_reads: bool, cuts: str, duplicate: float, concurrency: int | None, rate: float,
        set_options: tuple[str, ...], check: tuple[str, ...], jobs: int, shrink: bool, schedule_file: Path | None,
        matrix_file: Path | None, row_name: str | None, store_dir: Path) -> int:
    """Simulate a kvnode cluster: many seeds of a test on virtual time, in one process."""
    from checkers.result import worst
    from harness.results import verdict_text
    from harness.sim.network import NetworkSettings
    from harness.sim.world import WorldConfig

    try:
        config = WorldConfig(nodes=nodes, settings=_settings(set_options), workload=workload,
                             concurrency=concurrency, rate=rate, simulated_seconds=simulated_seconds,
                             nemesis=_faults(nemesis), nemesis_interval=nemesis_interval, check=check, mix=mix,
                             active_keys=active_keys, skew_ns=skew_ms * 1_000_000,
                             network=NetworkSettings(loss=loss, duplicate=duplicate, cuts=cuts),
                             power_targets=power_targets, kill_targets=kill_targets,  # type: ignore[arg-type]
                             deletes=deletes, replica_reads=replica_reads,
                             partition_shapes=tuple(x.strip() for x in (partition_shapes or "").split(",") if x.strip()))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    row_flags: list[str] = []
    if (matrix_file is None) != (row_name is None):
        raise ConfigError("--matrix FILE and --row NAME go together")
    if matrix_file is not None and row_name is not None:
        from harness.sim import rows

        row = rows.load_row(matrix_file, row_name)  # a MatrixError is a ConfigError: exit 254
        config = row.config
        row_flags = [f"--matrix {matrix_file}", f"--row {row_name}"]
        for what in row.ignored:
            click.echo(f"harness sim: row {row_name}: not simulated: {what}", err=True)
    schedule = None
    if schedule_file is not None:
        if replay is None:
            raise ConfigError("--schedule goes with --replay SEED (the seed the shrink was made from)")
        from harness.sim import shrink as shrink_mod

        try:
            config, schedule = shrink_mod.load(schedule_file, config)
        except ValueError as e:
            raise ConfigError(f"--schedule {e}") from None
    started = time.monotonic()
    deadline = None
    if replay is not None:
        chosen: Iterable[int] = [replay]
        described = f"seed {replay}"
    else:
        start = random.SystemRandom().randrange(2**31) if first_seed is None else first_seed
        if time_budget is not None:
            deadline = started + time_budget
            chosen = itertools.count(start) if seeds is None else range(start, start + seeds)
            described = f"seeds from {start} for {time_budget:g} s"
        else:
            chosen = range(start, start + (seeds or 10))
            described = f"{len(chosen)} seed{'s' if len(chosen) != 1 else ''} ({start}..{start + len(chosen) - 1})"
    # The flags that shape a seed's run: with them, --replay reproduces it.
    flags = " ".join(row_flags) if row_flags else " ".join([
        f"--nodes {nodes}", f"--workload {workload}", f"--mix {mix}", f"--active-keys {active_keys}",
        f"--nemesis {nemesis}", f"--nemesis-interval {nemesis_interval:g}",
        f"--simulated-seconds {simulated_seconds:g}", f"--rate {rate:g}",
        *([f"--skew-ms {skew_ms}"] if skew_ms else []), *([f"--loss {loss:g}"] if loss else []),
        *([f"--duplicate {duplicate:g}"] if duplicate else []),
        *([f"--power-targets {power_targets}"] if power_targets != "one" else []),
        *([f"--kill-targets {kill_targets}"] if kill_targets != "one" else []),
        *([f"--partition-shapes {partition_shapes}"] if partition_shapes else []),
        *([f"--deletes {deletes:g}"] if deletes is not None else []),
        *(["--replica-reads"] if replica_reads else []),
        *([f"--cuts {cuts}"] if cuts != "drop" else []),
        *([f"--concurrency {concurrency}"] if concurrency else []),
        *(f"--set {s}" for s in set_options), *(f"--check {c}" for c in check)])
    click.echo(f"harness sim: {described}, {flags}", err=True)
    # The nodes' own warnings (a WAL's torn tail dropped after a power loss,
    # say) are what the faults are for; the verdict and the history say what
    # mattered.
    import logging

    logging.getLogger("kvnode").setLevel(logging.ERROR)
    verdicts = []
    simulated = 0.0
    to_shrink: tuple[Any, Path] | None = None  # the first invalid seed, shrunk after the others ran
    for outcome in _outcomes(config, chosen, jobs, schedule, deadline):
        seed = outcome.seed
        simulated += outcome.simulated
        verdicts.append(outcome.valid)
        if replay is not None:
            click.echo(f"seed {seed}: trace {outcome.trace_hash} ({outcome.steps} steps, "
                       f"{outcome.simulated:.1f} simulated s, {len(outcome.history)} ops)")
        if outcome.valid is not True or replay is not None:
            line = f"seed {seed}: {verdict_text(outcome.valid)}"
            if outcome.anomalies():
                line += f" ({'; '.join(outcome.anomalies())})"
            if outcome.valid is not True:
                run_dir = _store_failure(store_dir, config, outcome)
                line += (f"; trace {outcome.trace_hash}; replay: harness sim --replay {seed} {flags}; "
                         f"stored in {run_dir}")
            click.echo(line)
            if shrink and outcome.valid is False and to_shrink is None and replay is None:
                to_shrink = (outcome, run_dir)
    wall = time.monotonic() - started
    ran = len(verdicts)
    click.echo(f"{ran} seeds in {wall:.2f} s: {ran / wall:.2f} seeds/s, "
               f"{simulated / wall:.1f} simulated s per wall s; "
               f"{sum(v is False for v in verdicts)} invalid, {sum(v == 'unknown' for v in verdicts)} unknown")
    if to_shrink is not None:
        from harness.sim import shrink as shrink_mod

        outcome, run_dir = to_shrink
        result = shrink_mod.shrink(config, outcome.seed, outcome)
        result.save(run_dir / "shrunk.json")
        click.echo("\n".join(result.lines()))
        click.echo(f"  replay: harness sim --replay {outcome.seed} {flags} --schedule {run_dir / 'shrunk.json'}")
    overall = worst(verdicts)
    return 0 if overall is True else 1 if overall is False else 2
