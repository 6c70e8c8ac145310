"""What a workload is: a generator of operations per worker, the final reads
that end a run, what its completions must look like, and the checkers that
judge the history for the claims a system makes.

The runner owns time, processes and nodes; a workload only decides *what* to
do next. `Worker.next()` returns the next `Invocation` for one worker;
`Worker.completed()` tells it how that ended (a read's values and context feed
later read-modify-writes); `Worker.new_process()` is called when the worker's
process crashed (an `info` completion) and it continues as a new process,
which knows nothing the old one read.

Judging: a system declares a `contract.Promise` (its claims); the workload
knows which claims it can check (`claims`) and turns those of the promise
into checkers (`checks`). `plan` adds the per-replica convergence check
when the history holds replica reads and a claim promises convergence
(`CONVERGENT`), and what was not checked and why, for the summary; `judge`
runs the checkers, one crash costing only that checker's verdict
(`checkers.compose.run_all`).

A workload is a plug-in: a class taking `WorkloadOptions`, registered under
the entry-point group `dynamo_harness.workloads` (README, "Plug-ins").
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from checkers.compose import Check, run_all
from checkers.history import Op
from checkers.replicas import check as replica_check
from checkers.result import Result
from contract.ops import Completion, Invocation
from contract.promise import Promise
from workloads.keys import KeySchedule

# The operation mixes a workload offers (`WorkloadOptions.mix`, `harness run
# --mix`); each workload says what they mean for it (its module docstring):
# - "default": the workload's everyday mix;
# - "read-mostly": about 90% reads. A stale value that read repair writes back
#   shows only when no newer write replaces it within milliseconds: with few
#   writes, it stays long enough for a read to see it;
# - "contention": writes and read-modify-writes dominate; meant with one or two
#   active keys (`--active-keys`), so that every worker fights over them.
MIXES: tuple[str, ...] = ("default", "read-mostly", "contention")


@dataclass(frozen=True, kw_only=True)
class WorkloadOptions:
    concurrency: int = 10
    active_keys: int = 4  # keys in use at once
    max_ops_per_key: int = 150  # then a key retires for a fresh one
    linearizability_time_limit: float = 60.0  # seconds for the linearizability search, then "unknown"
    linearizability_memory_limit: int | None = None  # bytes of search state, then "unknown"
    mix: str = "default"  # one of MIXES
    # The share of operations that delete (workloads that delete: register),
    # in [0, 1); None: the mix's own. 0 for a system that cannot delete.
    deletes: float | None = None

    def __post_init__(self) -> None:
        if self.mix not in MIXES:
            raise ValueError(f"mix must be one of {', '.join(MIXES)}, not {self.mix!r}")
        if self.deletes is not None and not 0 <= self.deletes < 1:
            raise ValueError(f"deletes must be a share of the operations in [0, 1), not {self.deletes!r}")

    def keys(self) -> KeySchedule:
        return KeySchedule.for_writes(concurrency=self.concurrency, max_ops_per_key=self.max_ops_per_key,
                                      active=self.active_keys)


class Worker(Protocol):
    def next(self) -> Invocation:
        """The next operation of this worker. Called by one worker only,
        never concurrently; must not block."""
        ...

    def completed(self, op: Invocation, completion: Completion) -> None:
        """How `op` ended (after the runner recorded it)."""
        ...

    def new_process(self) -> None:
        """The worker's process crashed (an `info` completion): forget what
        it knew, as a new process would."""
        ...


class Workload(Protocol):
    name: str
    # The claims this workload can check, each with what it checks for it
    # (shown by `harness list` and in the summary).
    claims: Mapping[str, str]
    # Whose operations it sends: its own name, or a workload whose clients
    # serve it (a plug-in of reads and writes says "register", and every
    # system's register client and promise then serve it). Optional: see
    # `speaks`.

    def worker(self, index: int, rng: random.Random) -> Worker:
        """The operation generator of worker `index`; all its randomness
        comes from `rng`, so a seed replays the same operations."""
        ...

    def final_reads(self) -> list[Invocation]:
        """After healing: one read per key used, sent to every node."""
        ...

    def validate(self, op: Invocation, completion: Completion) -> str | None:
        """Why this completion of `op` (from a system's client) does not fit
        the workload, in one sentence (a read that returns something other
        than a list of values, a value of a type the workload never writes),
        else None. Called for every completion; must be cheap."""
        ...

    def checks(self, promise: Promise) -> list[Check]:
        """The checkers for the claims of `promise` this workload knows (and
        what they imply), plus its statistics. Must not run them."""
        ...


def speaks(workload: Workload) -> str:
    """The workload whose client and promise serve `workload`."""
    return str(getattr(workload, "speaks", None) or workload.name)


@dataclass(frozen=True)
class Plan:
    checks: list[Check]
    not_checked: dict[str, str] = field(default_factory=dict)  # claim -> why it was not checked


# The claims that promise replicas converge (DESIGN.md P4), in the order the
# per-replica check is credited to one of them.
CONVERGENT = ("siblings", "last-write-wins", "no-lost-adds", "linearizable")


def plan(workload: Workload, promise: Promise, *, replicas: bool = False) -> Plan:
    """The checkers for `promise`, and each claim not checked with its reason.
    `replicas`: the history holds replica reads (the system implements
    `harness.systems.base.ReplicaReads`), so a claim of convergence is also
    judged replica by replica (`checkers.replicas`)."""
    checks = workload.checks(promise)
    convergent = next((c.name for name in CONVERGENT for c in promise.claims if c.name == name), None)
    if replicas and convergent is not None:
        at = next((i for i, c in enumerate(checks) if c.claim is None), len(checks))  # before the statistics
        checks.insert(at, Check(name="replicas", claim=convergent, run=replica_check))
    checked = {c.claim for c in checks if c.claim is not None}
    not_checked: dict[str, str] = {}
    for claim in promise.claims:
        if claim.name not in workload.claims:
            not_checked[claim.name] = f"the {workload.name} workload cannot check it"
    for name in workload.claims:
        if name not in checked and name not in not_checked:
            not_checked[name] = f"not promised (--check {name} checks it anyway)"
    return Plan(checks=checks, not_checked=not_checked)


def judge(history: Sequence[Op], checks: Sequence[Check]) -> list[Result]:
    """Run the checkers over the history; see `checkers.compose.run_all`."""
    return run_all(history, checks)


def final_read(key: str) -> Invocation:
    return Invocation("read", key, None, extra={"final": True})


def sibling_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The sibling checker's options from a claim's params (n, w, r, quorum,
    read_repair; whichever are given)."""
    out: dict[str, Any] = {}
    for name in ("n", "w", "r"):
        if params.get(name) is not None:
            out[name] = int(params[name])
    for name in ("quorum", "read_repair"):
        if params.get(name) is not None:
            out[name] = str(params[name])
    return out


def reads_and_writes(op: Invocation, completion: Completion, writes: str) -> str | None:
    """`Workload.validate` for workloads of reads and one kind of write:
    an `ok` read returns a list of text values, an `ok` `writes` (write,
    add ...) its own value or None, an `ok` delete None (it has no value)."""
    if completion.type != "ok":
        return None
    if op.f == "read":
        problem = text_values(completion.value)
        return None if problem is None else f"a read's value {problem}"
    if op.f == writes:
        problem = own_value(op, completion)
        return None if problem is None else f"{'an' if writes[0] in 'aeiou' else 'a'} {writes} {problem}"
    if op.f == "delete" and completion.value is not None:
        return f"a delete must complete with no value (None), not {_short(completion.value)}"
    return None


def text_values(value: Any) -> str | None:
    """Why `value` is not a list of text values, else None."""
    if not isinstance(value, list | tuple):
        return f"must be the list of values found (e.g. [] or ['3.7']), not {_short(value)}"
    odd = next((v for v in value if not isinstance(v, str)), None)
    if odd is not None:
        return f"holds {_short(odd)} ({type(odd).__name__}); this workload writes only text values"
    return None


def own_value(op: Invocation, completion: Completion) -> str | None:
    """An `ok` write or add completes with its own value (or None, which
    the runner records as the invocation's)."""
    if completion.value is not None and completion.value != op.value:
        return f"must complete with its own value {op.value!r} or None, not {_short(completion.value)}"
    return None


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
