"""Benchmark: the sibling (P1-P6), set and stats checkers on large histories.

    python -m bench.history_checks [--ops 1000000] [--keys 1000] [--seed 1]

Each checker gets a generated history of `--ops` operations (an invocation and
its completion each), from a correct store, so the verdicts are valid, and the
time it takes is printed beside the issue's target (1,000,000 operations in
under 30 s). The baseline measured in the same run is one pass of `pair()`
over the same history, the least any checker must do. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any

from tabulate import tabulate

from bench.common import positive
from checkers import sets, siblings, stats
from checkers.history import Op, pair

TARGET_S = 30.0


def register_history(ops: int, keys: int, rng: random.Random) -> list[Op]:
    """Multi-value register ops over `keys` keys: a write carries in `obs`
    the values its context read returned; some writes are blind (siblings);
    a final read per key at the end sees every surviving value."""
    out: list[Op] = []
    latest: dict[int, list[str]] = {k: [] for k in range(keys)}

    def emit(process: int, f: str, key: int, value: Any, result: Any, extra: dict[str, Any]) -> None:
        i = len(out)
        out.append(Op(index=i, time=i * 1000, process=process, type="invoke", f=f, key=key, value=value,
                      node="n1", extra=extra))
        out.append(Op(index=i + 1, time=i * 1000 + 500, process=process, type="ok", f=f, key=key,
                      value=result, node="n1"))

    for n in range(ops - keys):
        key = rng.randrange(keys)
        if n % 2 == 0:
            emit(n % 20, "read", key, None, list(latest[key]), {})
        else:
            value = f"v{n}"
            if rng.random() < 0.1:  # blind: a sibling of what is there
                emit(n % 20, "write", key, value, value, {"obs": []})
                latest[key] = [*latest[key], value]
            else:
                emit(n % 20, "write", key, value, value, {"obs": list(latest[key])})
                latest[key] = [value]
    for key in range(keys):
        emit(0, "read", key, None, list(latest[key]), {"final": True})
    return out


def set_history(ops: int, keys: int, rng: random.Random) -> list[Op]:
    """Adds of unique elements to `keys` carts, then a final read of each."""
    out: list[Op] = []
    carts: dict[int, list[str]] = {k: [] for k in range(keys)}
    for n in range(ops - keys):
        key, element = rng.randrange(keys), f"e{n}"
        i = len(out)
        out.append(Op(index=i, time=i * 1000, process=n % 20, type="invoke", f="add", key=key, value=element))
        out.append(Op(index=i + 1, time=i * 1000 + 500, process=n % 20, type="ok", f="add", key=key,
                      value=element))
        carts[key].append(element)
    for key, elements in carts.items():
        i = len(out)
        out.append(Op(index=i, time=i * 1000, process=0, type="invoke", f="read", key=key,
                      extra={"final": True}))
        out.append(Op(index=i + 1, time=i * 1000 + 500, process=0, type="ok", f="read", key=key,
                      value=elements))
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _row(name: str, result: Any, seconds: float, base: float) -> list[str]:
    return [name, str(result.valid), f"{seconds:.1f}", f"{seconds / base:.1f}x", f"{seconds / TARGET_S:.2f}"]


def register_rows(history: list[Op]) -> tuple[list[list[str]], float]:
    _, base = timed(lambda: pair(history))
    rows = []
    for name, run in [
        ("siblings (P1-P6, strict, sync)", lambda: siblings.check(
            history, n=3, w=2, r=2, resolution="dvv", quorum="strict", read_repair="sync")),
        ("stats", lambda: stats.check(history)),
    ]:
        result, seconds = timed(run)
        rows.append(_row(name, result, seconds, base))
    return rows, base


def cart_rows_for(history: list[Op]) -> tuple[list[list[str]], float]:
    _, base = timed(lambda: pair(history))
    result, seconds = timed(lambda: sets.check(history))
    return [_row("set (cart)", result, seconds, base)], base


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history_checks", description=__doc__)
    parser.add_argument("--ops", type=positive, default=1_000_000, help="operations per history (default 1,000,000)")
    parser.add_argument("--keys", type=positive, default=1000, help="keys (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(f"python {platform.python_version()} on {platform.platform()}; {os.cpu_count()} CPUs")
    print(f"{args.ops:,} operations per history over {args.keys:,} keys; seed {args.seed}")
    rng = random.Random(args.seed)
    rows, base = register_rows(register_history(args.ops, args.keys, rng))
    cart_rows, cart_base = cart_rows_for(set_history(args.ops, args.keys, rng))
    rows += cart_rows
    print(tabulate(rows, headers=["checker", "verdict", "seconds", "vs pair()", "of the 30 s target"],
                   colalign=["left", "left", "right", "right", "right"]))
    print(f"baseline: pair() over the register history {base:.1f} s, over the cart history {cart_base:.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    print(f"peak memory {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
