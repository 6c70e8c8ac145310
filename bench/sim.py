"""`python -m bench.sim`: how fast `harness sim` runs a kvnode cluster on
virtual time, and whether it catches a planted bug.

(a) Throughput: 5 nodes, 10 clients, the partition nemesis, `--seeds`
seeds of `--simulated-seconds` each (plus the recovery and final reads
every seed has): seeds per wall second and simulated seconds per wall
second, beside the same seeds without faults run in the same process (the
baseline: the ratio says what partitions cost). A real run's ratio is 1 by
definition; the issue's target is 100, FoundationDB reports about 10.

(b) Teeth (`--mutant NAMES`, default read-first-reply; `all` for every
mutant; `none` skips it): each mutant from `ci/mutants/` applied to a scratch
copy of the node exactly as `harness ci --mutants` does
(`harness.mutants.make_copy`), and `harness sim --matrix
ci/mutants/matrix.toml --row ROW` run in a subprocess over that copy (first
on PYTHONPATH) for each row its header names, beside the unmutated copy
over the same rows and seeds (the false-alarm baseline, which must stay
clean): seeds caught k/K, the first seed that caught it, and the wall time
until it was printed (the time to first catch, to set beside `harness ci
--mutants`' on a real backend).

Nothing here asserts a figure; `tests/bench/test_sim_bench.py` runs it tiny.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import positive

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ROOT / "ci" / "mutants" / "matrix.toml"


@dataclass
class Throughput:
    seeds: int
    wall: float
    simulated: float
    steps: int
    invalid: list[int] = field(default_factory=list)


def throughput(seeds: int, simulated_seconds: float, nemesis: tuple[str, ...], first: int) -> Throughput:
    from harness.sim.world import WorldConfig, simulate

    config = WorldConfig(nodes=5, concurrency=10, rate=100.0, simulated_seconds=simulated_seconds,
                         nemesis=nemesis, nemesis_interval=2.0)
    out = Throughput(seeds=seeds, wall=0.0, simulated=0.0, steps=0)
    for seed in range(first, first + seeds):
        o = simulate(config, seed)
        out.wall += o.wall
        out.simulated += o.simulated
        out.steps += o.steps
        if o.valid is False:
            out.invalid.append(seed)
    return out


@dataclass
class Catch:
    label: str
    caught: list[int]
    seeds: int
    first_at: float | None  # wall seconds until the first catch was printed
    wall: float
    summary: str


def catches(label: str, code_dir: Path, seeds: int, first: int, row: str, store: Path) -> Catch:
    """`harness sim` of matrix row `row` over the copy in `code_dir`; when
    each INVALID line came."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code_dir), str(ROOT)])}
    cmd = [sys.executable, "-m", "harness", "sim", "--seeds", str(seeds), "--first-seed", str(first),
           "--matrix", str(MATRIX), "--row", row, "--store", str(store)]
    started = time.monotonic()
    caught: list[int] = []
    first_at: float | None = None
    summary = ""
    with subprocess.Popen(cmd, cwd=code_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.match(r"seed (\d+): INVALID", line)
            if found:
                caught.append(int(found.group(1)))
                if first_at is None:
                    first_at = time.monotonic() - started
            elif "seeds/s" in line:
                summary = line.strip()
        proc.wait()
    if not summary:
        raise RuntimeError(f"{label}: harness sim printed no summary (exit {proc.returncode}): {' '.join(cmd)}")
    return Catch(label=label, caught=caught, seeds=seeds, first_at=first_at, wall=time.monotonic() - started,
                 summary=summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=positive, default=10, help="seeds per measure (default 10)")
    parser.add_argument("--simulated-seconds", type=float, default=20.0,
                        help="simulated seconds of workload per seed (default 20)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--mutant", default="read-first-reply",
                        help="ci/mutants/ names, comma-separated, all, or none (default read-first-reply)")
    parser.add_argument("--mutant-seeds", type=positive, default=20)
    args = parser.parse_args(argv)
    if args.simulated_seconds <= 0:
        parser.error("--simulated-seconds must be positive")

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; "
          f"5 nodes, 10 clients, 100 ops/s, {args.seeds} seeds x {args.simulated_seconds:g} simulated s "
          f"(+ recovery and final reads)")
    base = throughput(args.seeds, args.simulated_seconds, (), args.first_seed)
    part = throughput(args.seeds, args.simulated_seconds, ("partition",), args.first_seed)
    print(f"{'run':<12}{'seeds/s':>9}{'sim s/wall s':>14}{'steps/s':>10}{'invalid':>9}")
    for label, t in (("no faults", base), ("partition", part)):
        print(f"{label:<12}{t.seeds / t.wall:>9.2f}{t.simulated / t.wall:>14.1f}{t.steps / t.wall:>10.0f}"
              f"{len(t.invalid):>9}")
    ratio = (part.simulated / part.wall) / (base.simulated / base.wall)
    print(f"partition / no faults (simulated s per wall s) = {ratio:.2f}")
    print(f"target: >= 100 simulated s per wall s with partitions: {part.simulated / part.wall:.1f} "
          f"({'met' if part.simulated / part.wall >= 100 else 'not met'}); a real run: 1")

    if args.mutant == "none":
        return 0
    from harness import mutants

    if args.mutant == "all":
        chosen = [mutants.parse(p) for p in sorted((ROOT / "ci" / "mutants").glob("*.patch"))]
    else:
        chosen = []
        for name in args.mutant.split(","):
            patch = ROOT / "ci" / "mutants" / f"{name.strip()}.patch"
            if not patch.is_file():
                parser.error(f"--mutant {name}: no {patch}")
            chosen.append(mutants.parse(patch))
    rows = sorted({r for m in chosen for r in m.rows})
    for m in chosen:
        print(f"mutant {m.name} ({m.kind}): rows {', '.join(m.rows)}")
    print(f"\nteeth: {args.mutant_seeds} seeds from {args.first_seed} per row, rows of {MATRIX.relative_to(ROOT)}")
    print(f"{'code':<26}{'row':<22}{'caught':>8}{'first seed':>12}{'to first catch':>16}{'wall s':>8}")
    with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
        root = Path(tmp)
        copies = {"unmutated": mutants.make_copy(None, root / "unmutated")}
        for label, m, names in [("unmutated", None, rows), *((m.name, m, m.rows) for m in chosen)]:
            code = copies.get(label) or mutants.make_copy(m, root / label)
            for row in names:
                c = catches(label, code, args.mutant_seeds, args.first_seed, row, root / "store")
                first_seed = str(c.caught[0]) if c.caught else "-"
                to_first = f"{c.first_at:.1f} s" if c.first_at is not None else "-"
                print(f"{label:<26}{row:<22}{len(c.caught):>4}/{c.seeds:<3}{first_seed:>12}{to_first:>16}"
                      f"{c.wall:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
