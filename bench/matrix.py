"""Detection and false-alarm rates of a `harness ci` matrix: every row run on
K seeds, all of them (where `harness ci` stops a must-be-found row at its
first detection), to say how often each must-be-found row is found and how
often a valid row is flagged.

    python -m bench.matrix --backend local --seeds 10
    python -m bench.matrix --only dvv-pause-majority --seeds 3

Prints, per row: what it expects, the runs, how many met the expectation
(detections for a must-be-found row), the rate, the false alarms of a row
that must hold, and the mean wall time of a run, beside the targets: every
must-be-found row detected on 10 of 10 seeds, no valid row ever flagged.
The runs are kept in `--store` with their reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from harness import ci, matrix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrix", type=Path, default=Path("ci/matrix.toml"))
    parser.add_argument("--backend", default="local")
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--store", type=Path, default=None)
    args = parser.parse_args(argv)
    m = matrix.load(args.matrix, backend=args.backend)
    if args.only:
        m = m.only(args.only)
    store = str(args.store or Path(tempfile.mkdtemp(prefix="bench-matrix-")))
    print(f"matrix {args.matrix}, backend {args.backend}, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}; "
          f"runs in {store}", flush=True)
    rows = []
    started = time.monotonic()
    for row in m.rows:
        seeds = tuple(range(args.first_seed, args.first_seed + args.seeds))
        met, runs, skipped, seconds = 0, 0, "", 0.0
        for seed in seeds:
            # One seed at a time, so that a must-be-found row is not stopped at its first detection.
            one = dataclasses.replace(row, seeds=(seed,))
            result = ci.run_row(one, store)
            if result.status == "skip":
                skipped = result.reason
                break
            runs += len(result.attempts)
            met += sum(a.met for a in result.attempts)
            seconds += sum(a.seconds for a in result.attempts)
            print(f"  {row.name} seed {seed}: {result.status} {result.actual()} {result.found()}", flush=True)
        kind = "must be found" if row.must_be_found else "must hold"
        if skipped:
            rows.append((row.name, kind, row.expected(), 0, "-", "-", "-", f"skipped: {skipped}"))
            continue
        rate = f"{met}/{runs}"
        false_alarms = "-" if row.must_be_found else f"{runs - met}/{runs}"
        target = ("10/10 detected" if row.must_be_found else "0 false alarms")
        ok = (met == runs) if runs else False
        rows.append((row.name, kind, row.expected(), runs, rate, false_alarms, f"{seconds / max(runs, 1):.0f} s",
                     f"{target}: {'met' if ok else 'MISSED'}"))
    print()
    print(tabulate(rows, headers=("row", "kind", "expected", "runs", "as expected", "false alarms", "per run",
                                  "target")))
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
