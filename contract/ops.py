"""The operation records of a run, as the runner, a workload and a system's
client exchange them (the history's own records, `checkers.history.Op`, are
written from these).

An operation's life: a workload's worker returns an `Invocation`; the runner
records it, calls the system's `Client.invoke` with it, checks that what
comes back is a `Completion` (`completion_problem`) and that its value fits
the workload (`Workload.validate`), records it, and hands it back to the
worker. `context` on both is the opaque causal context of a Dynamo-style
store (a read's context, handed back with a later write); it is never written
to the history.

The completion's `type` says what happened, as in Jepsen:

- `ok`: it happened, with this value;
- `fail`: it certainly did not happen (nothing was sent, or the system
  refused it before acting);
- `info`: it may or may not have happened (a timeout, a lost connection, a
  quorum that failed after the request was sent). When in doubt: `info`.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "fail", "info"]
OUTCOMES: tuple[str, ...] = ("ok", "fail", "info")


@dataclass(frozen=True)
class Invocation:
    """What a client is asked to do: `f` on `key` with `value`."""

    f: str
    key: Any = None
    value: Any = None
    _: KW_ONLY
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with the invocation (e.g. obs, final)
    context: Any = None  # not recorded


@dataclass(frozen=True)
class Completion:
    """How an invocation ended: `Completion("ok", value)`,
    `Completion("fail", error="refused")`, `Completion("info", error="timeout")`."""

    type: Outcome
    value: Any = None
    _: KW_ONLY
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with the completion
    context: Any = None  # not recorded


def completion_problem(completion: object) -> str | None:
    """Why `completion` (from a system's client) is not a usable
    `Completion`, in one sentence; None when it is."""
    if not isinstance(completion, Completion):
        return f"returned {type(completion).__name__} {_short(completion)}, not a Completion"
    if completion.type not in OUTCOMES:
        return (f"returned a completion of type {_short(completion.type)}: it must be 'ok' (it happened), "
                "'fail' (it certainly did not) or 'info' (it may have)")
    if completion.error is not None and not isinstance(completion.error, str):
        return f"returned an error that is not text: {_short(completion.error)}"
    if not isinstance(completion.extra, dict):
        return f"returned `extra` that is not a dict: {_short(completion.extra)}"
    return None


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
