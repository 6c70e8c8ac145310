"""The detection table of this project's mutants (`ci/mutants`): every
mutant on each row its header names, over K seeds, and the unmutated code on
the same rows and seeds (the false-alarm baseline).

    python -m bench.mutants --seeds 10 --jobs 2
    python -m bench.mutants --mutant ack-before-w --seeds 3

Prints the table of `harness ci --mutants` (mutant, rows, caught k/K, run
time until the first catch, anomaly types), then caught k/K per mutant and
row, beside the targets: every mutant caught in at least 9 of 10 seeded runs
of each of its rows, the unmutated code never flagged. The figures are what
a user meets: whole runs, start-up and checking included.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from harness import matrix, mutants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=Path, default=Path("ci/mutants"))
    parser.add_argument("--mutant", action="append", default=[])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)
    m = matrix.load(args.mutants / "matrix.toml", seeds=args.seeds)
    chosen = mutants.load(args.mutants, m, args.mutant)
    store = str(args.store or Path(tempfile.mkdtemp(prefix="bench-mutants-")))
    print(f"{len(chosen)} mutants, {args.seeds} seeds, {args.jobs} jobs; runs in {store}", flush=True)
    started = time.monotonic()
    results = mutants.run_mutants(chosen, m, store, jobs=args.jobs,
                                  done=lambda name, run: print(f"  {name} {run.row} seed {run.seed}: {run.status}",
                                                               flush=True))
    print(mutants.table(results))
    print()
    print(mutants.per_row(results))
    killed = sum(r.mutant is not None and r.ok for r in results)
    print(f"\n{killed} of {len(chosen)} mutants killed in {time.monotonic() - started:.0f} s; target: each caught "
          f"in >= 9/10 runs per row, the unmutated code never flagged")
    if args.json is not None:
        args.json.write_text(json.dumps(mutants.summary_of(results), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
