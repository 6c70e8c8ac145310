"""Running several checkers over one history, so that one checker's crash
never costs the others their verdicts.

`run_all(history, checks)` runs each `Check` in turn. A checker that raises
gives `unknown` for that checker alone, with the exception in `reason` and
the traceback in `details["traceback"]`; the others run as if nothing
happened. KeyboardInterrupt is not caught. The claim a check judges (a
system's promise, see the harness) is kept in each result's
`details["claim"]`, and each result is named as its check is.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from checkers.history import Op
from checkers.result import Result

__all__ = ["Check", "run_all"]


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str  # the checker's name, as its Result says it ("linearizable", "siblings" ...)
    run: Callable[[Sequence[Op]], Result]
    claim: str | None = None  # the claim it judges; None for statistics


def run_all(history: Sequence[Op], checks: Sequence[Check]) -> list[Result]:
    """Each check's result, in order, each marked with its claim."""
    results: list[Result] = []
    for check in checks:
        try:
            result = check.run(history)
            if not isinstance(result, Result):
                raise TypeError(f"returned {type(result).__name__}, not a checkers.result.Result")
        except Exception as e:
            result = Result(checker=check.name, valid="unknown",
                            reason=f"the checker crashed: {type(e).__name__}: {e}",
                            details={"traceback": traceback.format_exc()})
        details = result.details if check.claim is None else {**result.details, "claim": check.claim}
        results.append(replace(result, checker=check.name, details=details))
    return results
