"""Linearizability: Wing & Gong's search with Lowe's memoization, per key.

Semantics (Knossos's): operations that ended in `fail` did not happen and are
removed; operations that ended in `info`, or never completed, may take effect
at any single point after their invocation, or never. Every `ok` operation
must take effect exactly once between its invocation and its completion.

The search (`_search`), as in Porcupine's `checkSingle`:

- The history becomes a doubly linked list of events in history order: a
  *call* entry for each operation, and a *return* entry for each `ok` one.
  Walking from the head, a call entry is a candidate to linearize next; the
  first return entry reached is a wall: its operation must be linearized
  before anything after it, so if its call has not been, backtrack.
- Linearizing a candidate *lifts* its call and return out of the list and
  pushes (entry, state before, other possible next states) on an explicit
  stack; backtracking pops, *unlifts* (reinserts in O(1)), and tries the next
  possible state or the next candidate. The search is iterative: no recursion
  limit, however long the history.
- Lowe's memoization: a configuration is (set of linearized operations as a
  Python int bitset, model state). A configuration seen before has been
  explored (it either led to success, which ended the search, or to nothing),
  so it is never pushed twice. This turns the search from factorial into
  (at worst) exponential only in the concurrency.

Pruning beyond plain WGL:

- *Just-in-time linearization of crashed ops.* An `info` (or never-completed)
  operation has no return entry: its return is, in effect, at the end of the
  history, so it never blocks anything and is linearized only when a later
  candidate needs its effect. The search succeeds as soon as every `ok`
  operation is linearized; crashed ones left over "never happened".
- *Useless crashed steps.* A crashed operation whose step leaves the state as
  it is (a read of unknown result, a cas whose compare does not match) is
  never linearized: dropping it from any linearization keeps it valid.
- *Interchangeable crashed ops.* Crashed operations with the same `f`, key
  and argument are equivalent; any linearization that uses a later one while
  an earlier one is unused stays valid with the two swapped (the earlier one
  was invoked first and neither has a return). So within each class only the
  first unlinearized member is a candidate: k identical crashed writes cost
  k+1 configurations instead of 2^k.
- *P-compositionality.* `model.partition` splits the history (by key for
  registers and kv); each part is searched alone, smallest first.
- *Unique-value registers.* For a `register` (or `cas-register` without cas)
  whose written values are all distinct, `checkers.unique_register` decides
  the part in O(n log n) (Gibbons & Korach) when it applies.

Cost per step: the model is called once per distinct (operation, state)
pair, its answer kept in a per-operation dict (states are hashable and few);
for the built-in `register` and `cas-register` each operation's transition is
precompiled to a small tuple instead (no dispatch on `f`, no `freeze` in the
loop). Model states are interned to small ints and a memoized configuration
is the single int `lin | state_id << n`. The steps counted are the candidate
evaluations of WGL, whether or not the transition was already known.

Limits: `time_limit` (seconds, checked on a monotonic clock every 1000 model
steps) and `memory_limit` (bytes). Memory is estimated, not measured: the
memo cache dominates, and each entry is costed at 150 bytes plus the bitset
(n/8 bytes) plus the size of a model state, sampled with `sys.getsizeof`
once per part. Past either limit the verdict is "unknown", with a reason that
names the limit and how far the search got; so is any exception a model or
the history raises.

Counterexamples (`details` of the "nonlinearizable" anomaly): the search
remembers its deepest point (most `ok` operations linearized) and which
operation's return it could not get past there; the states collected are all
model states reached at that depth with the same `ok` operations linearized
(i.e. over every choice of crashed operations).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkers.history import Op, Operation, complete, pair
from checkers.models import CasRegister, Model, Register, argument, freeze, output
from checkers.models import model as model_by_name
from checkers.result import Anomaly, Result, worst

__all__ = ["check"]

CHECKER = "linearizable"
_CHECK_EVERY = 1000

UniqueChecker = Callable[[list[Operation], Any], "Result | None"]


def _load_unique_register() -> UniqueChecker | None:
    """The O(n log n) path, written separately; the checker works without it."""
    try:
        from checkers.unique_register import check_unique_register
    except ImportError:  # pragma: no cover - depends on the tree
        return None
    return check_unique_register


_unique_register: UniqueChecker | None = _load_unique_register()


class _LimitReached(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Budget:
    deadline: float | None
    time_limit: float | None
    memory_limit: int | None
    steps: int = 0


@dataclass
class _Outcome:
    valid: bool
    steps: int
    op: int = -1  # position (in the part) of the op that cannot be linearized
    prefix: list[int] = field(default_factory=list)  # positions, in order
    states: list[Hashable] = field(default_factory=list)


def check(
    history: Sequence[Op],
    model: Model | str,
    *,
    initial: Any = None,
    time_limit: float | None = None,
    memory_limit: int | None = None,
) -> Result:
    """Is `history` linearizable with respect to `model`? A pure function of
    the history (it only reads a monotonic clock to honour `time_limit`).
    Never raises, except KeyboardInterrupt: a crash is an "unknown" verdict."""
    try:
        m = model_by_name(model) if isinstance(model, str) else model
        return _check(history, m, initial, time_limit, memory_limit)
    except Exception as e:
        return Result(checker=CHECKER, valid="unknown", reason=f"checker error: {type(e).__name__}: {e}")


def _check(
    history: Sequence[Op],
    m: Model,
    initial: Any,
    time_limit: float | None,
    memory_limit: int | None,
) -> Result:
    operations = complete(pair(history))
    parts: dict[Hashable, list[Operation]] = {}
    for o in operations:
        parts.setdefault(m.partition(o), []).append(o)
    budget = _Budget(
        deadline=None if time_limit is None else time.monotonic() + time_limit,
        time_limit=time_limit,
        memory_limit=memory_limit,
    )
    verdicts: list[Any] = []
    anomalies: list[Anomaly] = []
    reasons: list[str] = []
    summary: dict[str, dict[str, Any]] = {}
    for key, ops in sorted(parts.items(), key=lambda kv: len(kv[1])):
        before = budget.steps
        res = _check_part(key, ops, m, initial, budget)
        verdicts.append(res.valid)
        anomalies.extend(res.anomalies)
        if res.reason:
            reasons.append(res.reason if len(parts) == 1 else f"key {key!r}: {res.reason}")
        summary[repr(key)] = {"valid": res.valid, "steps": budget.steps - before, "operations": len(ops)}
    valid = worst(verdicts)
    return Result(
        checker=CHECKER,
        valid=valid,
        anomalies=tuple(anomalies),
        counts={"operations": len(operations), "partitions": len(parts), "steps": budget.steps},
        reason="; ".join(reasons) if reasons and valid != True else None,  # noqa: E712
        details={"partitions": summary},
    )


def _unique_writes(ops: list[Operation], m: Model) -> bool:
    if m.name not in ("register", "cas-register"):
        return False
    seen: set[Hashable] = set()
    for o in ops:
        f = str(o.f).lstrip(":")
        if f == "cas":
            return False
        if f == "write":
            v = freeze(o.invoke.value)
            if v in seen:
                return False
            seen.add(v)
    return True


def _check_part(key: Hashable, ops: list[Operation], m: Model, initial: Any, budget: _Budget) -> Result:
    if budget.deadline is not None and time.monotonic() > budget.deadline:
        return Result(checker=CHECKER, valid="unknown",
                      reason=f"time limit of {budget.time_limit} s reached before this part was searched")
    if _unique_register is not None and _unique_writes(ops, m):
        try:
            res = _unique_register(ops, initial)
        except Exception:  # fall back to the search
            res = None
        if res is not None:
            budget.steps += int(res.counts.get("steps", 0))
            if res.valid is not False:
                return res
            # Invalid: the search, bounded, draws the counterexample (the
            # longest linearizable prefix and the states before the failing
            # op), which the fast path does not compute.
            detail = _Budget(deadline=time.monotonic() + 5.0, time_limit=5.0, memory_limit=budget.memory_limit)
            try:
                out = _search(ops, m, initial, detail)
            except _LimitReached:
                return res
            budget.steps += detail.steps
            if out.valid:  # cannot happen if both are right; trust neither silently
                return Result(checker=CHECKER, valid="unknown",
                              reason="the unique-register check and the search disagree: please report this history")
            return Result(checker=CHECKER, valid=False, anomalies=(_anomaly(key, ops, m, out),))
    try:
        out = _search(ops, m, initial, budget)
    except _LimitReached as e:
        return Result(checker=CHECKER, valid="unknown", reason=e.reason)
    if out.valid:
        return Result(checker=CHECKER, valid=True)
    return Result(checker=CHECKER, valid=False, anomalies=(_anomaly(key, ops, m, out),))


_READ, _READ_ANY, _WRITE, _CAS = 0, 1, 2, 3


def _register_specs(ops: list[Operation], m: Model) -> list[tuple[Any, ...] | None] | None:
    """For the built-in `register` and `cas-register` (exactly those classes:
    a subclass may override `step`), each op's transition precompiled to a
    small tuple, the same as `Register.step` / `CasRegister.step` computes;
    None for an op the generic `step` must handle (it raises the error).
    Called after `m.init`, which sets `m.initial`."""
    if type(m) is not Register and type(m) is not CasRegister:
        return None
    initial = m.initial
    out: list[tuple[Any, ...] | None] = []
    for o in ops:
        f = str(o.f).lstrip(":")
        spec: tuple[Any, ...] | None = None
        try:
            if f == "read":
                known, v = output(o)
                spec = (_READ, initial if v is None else freeze(v)) if known else (_READ_ANY,)
            elif f == "write":
                spec = (_WRITE, freeze(argument(o)))
            elif f == "cas" and type(m) is CasRegister:
                expected, new = argument(o)
                spec = (_CAS, initial if expected is None else freeze(expected), freeze(new), output(o)[0])
        except (TypeError, ValueError):
            spec = None
        out.append(spec)
    return out


def _search(ops: list[Operation], m: Model, initial: Any, budget: _Budget) -> _Outcome:
    """Wing & Gong + Lowe over one part; see the module docstring."""
    n = len(ops)
    state: Hashable = m.init(initial)
    ok = [o.end is not None for o in ops]
    n_ok = sum(ok)
    if n_ok == 0:
        return _Outcome(valid=True, steps=0)

    # Interchangeable crashed ops: pred[i] = the previous member of i's class.
    pred = [-1] * n
    last: dict[Hashable, int] = {}
    for i, o in enumerate(ops):
        if not ok[i]:
            try:
                cls = (o.f, freeze(o.key), freeze(o.invoke.value))
                hash(cls)
            except TypeError:
                continue
            if cls in last:
                pred[i] = last[cls]
            last[cls] = i

    # Events in history order. Entry 0 is the head, entry 1 the tail.
    events: list[tuple[int, int, int]] = []  # (history index, op, is_call)
    for i, o in enumerate(ops):
        events.append((o.invoke.index, i, 1))
        if ok[i]:
            events.append((o.end, i, 0))  # type: ignore[arg-type]
    events.sort()
    size = len(events) + 2
    HEAD, TAIL = 0, 1
    op_of = [-1] * size
    is_call = [False] * size
    match = [-1] * size  # call entry -> its return entry (-1 for crashed ops)
    call_entry = [-1] * n
    nxt = [0] * size
    prv = [0] * size
    prev_e = HEAD
    for j, (_, i, c) in enumerate(events):
        e = j + 2
        op_of[e] = i
        is_call[e] = bool(c)
        if c:
            call_entry[i] = e
        else:
            match[call_entry[i]] = e
        nxt[prev_e] = e
        prv[e] = prev_e
        prev_e = e
    nxt[prev_e] = TAIL
    prv[TAIL] = prev_e
    nxt[TAIL] = TAIL

    ok_mask = 0
    for i in range(n):
        if ok[i]:
            ok_mask |= 1 << i
    bits = [1 << i for i in range(n)]

    # Memory estimate per cache entry.
    entry_bytes = 150 + n // 8 + sys.getsizeof(state)
    max_entries = None if budget.memory_limit is None else max(1, budget.memory_limit // entry_bytes)

    # Model transitions, memoized per (op, state): trans[i][state] is the
    # tuple of (next state, its memo key part) pairs, already filtered of
    # useless steps for crashed ops. States are interned to small ids, and a
    # configuration (lin, state) is memoized as the int `lin | id << n`, so
    # the hot loop hashes one int instead of a tuple and calls the model
    # once per distinct (op, state) instead of once per step.
    trans: list[dict[Hashable, tuple[tuple[Hashable, int], ...]]] = [{} for _ in range(n)]
    sid_of: dict[Hashable, int] = {state: 0}
    step = m.step

    specs = _register_specs(ops, m)

    def transitions(i: int, st: Hashable) -> tuple[tuple[Hashable, int], ...]:
        sp = specs[i] if specs is not None else None
        if sp is None:
            succ = list(step(st, ops[i]))
        elif sp[0] == _READ:
            succ = [st] if sp[1] == st else []
        elif sp[0] == _READ_ANY:
            succ = [st]
        elif sp[0] == _WRITE:
            succ = [sp[1]]
        else:  # _CAS: (kind, expected, new, outcome known)
            succ = [sp[2]] if sp[1] == st else ([] if sp[3] else [st])
        if match[call_entry[i]] < 0:  # crashed op: a step that changes nothing is useless
            succ = [x for x in succ if x != st]
        out = []
        for x in succ:
            sid = sid_of.get(x)
            if sid is None:
                sid = sid_of[x] = len(sid_of)
            out.append((x, sid << n))
        t = tuple(out)
        trans[i][st] = t
        return t

    cache: set[int] = {0}
    # stack frames: (call entry, state before, its key part, bitset before,
    # possible next states, index of the one taken)
    calls: list[tuple[int, Hashable, int, int, tuple[tuple[Hashable, int], ...], int]] = []
    lin = 0
    skey = 0  # memo key part of `state`
    remaining = n_ok
    steps = 0
    check_at = _CHECK_EVERY - budget.steps % _CHECK_EVERY

    best_depth = -1
    best_op = -1
    best_prefix: list[int] = []
    best_key = -1
    best_states: list[Hashable] = []

    cache_add = cache.add
    calls_append = calls.append
    e = nxt[HEAD]
    while True:
        if is_call[e]:
            i = op_of[e]
            p = pred[i]
            if p >= 0 and not (lin >> p) & 1:
                e = nxt[e]
                continue
            steps += 1
            succ = trans[i].get(state)
            if succ is None:
                succ = transitions(i, state)
            new_lin = lin | bits[i]
            found = False
            for nxt_state in succ:
                if (new_lin | nxt_state[1]) not in cache:
                    found = True
                    break
            if not found:  # no possible next state, or all explored before
                e = nxt[e]
            else:
                s, sk = nxt_state
                cache_add(new_lin | sk)
                calls_append((e, state, skey, lin, succ, succ.index(nxt_state)))
                state = s
                skey = sk
                lin = new_lin
                # lift
                a = prv[e]
                b = nxt[e]
                nxt[a] = b
                prv[b] = a
                r = match[e]
                if r >= 0:
                    a = prv[r]
                    b = nxt[r]
                    nxt[a] = b
                    prv[b] = a
                    remaining -= 1
                    if remaining == 0:
                        budget.steps += steps
                        return _Outcome(valid=True, steps=steps)
                e = nxt[HEAD]
        else:
            if e == TAIL:  # cannot happen while an ok op remains; defensive
                budget.steps += steps
                return _Outcome(valid=True, steps=steps)
            depth = n_ok - remaining
            blocked = op_of[e]
            if depth > best_depth:
                best_depth = depth
                best_op = blocked
                best_prefix = [op_of[c[0]] for c in calls]
                best_key = lin & ok_mask
                best_states = [state]
            elif depth == best_depth and blocked == best_op and (lin & ok_mask) == best_key \
                    and state not in best_states and len(best_states) < 50:
                best_states.append(state)
            # backtrack until a frame offers another choice
            while True:
                if not calls:
                    budget.steps += steps
                    return _Outcome(valid=False, steps=steps, op=best_op, prefix=best_prefix,
                                    states=best_states)
                c_e, state, skey, lin, succ, k = calls.pop()
                # unlift
                r = match[c_e]
                if r >= 0:
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                    remaining += 1
                nxt[prv[c_e]] = c_e
                prv[nxt[c_e]] = c_e
                new_lin = lin | bits[op_of[c_e]]
                k += 1
                while k < len(succ) and (new_lin | succ[k][1]) in cache:
                    k += 1
                if k < len(succ):  # the same op, another possible next state
                    s, sk = succ[k]
                    cache_add(new_lin | sk)
                    calls_append((c_e, state, skey, lin, succ, k))
                    state, skey, lin = s, sk, new_lin
                    nxt[prv[c_e]] = nxt[c_e]
                    prv[nxt[c_e]] = prv[c_e]
                    if r >= 0:
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                        remaining -= 1
                    e = nxt[HEAD]
                else:
                    e = nxt[c_e]
                break
        if steps >= check_at:
            check_at += _CHECK_EVERY
            if budget.deadline is not None and time.monotonic() > budget.deadline:
                budget.steps += steps
                raise _LimitReached(
                    f"time limit of {budget.time_limit} s reached after {budget.steps} model steps; "
                    f"deepest point: {max(best_depth, 0)} of {n_ok} completed operations linearized")
            if max_entries is not None and len(cache) > max_entries:
                budget.steps += steps
                raise _LimitReached(
                    f"memory limit of {budget.memory_limit} bytes reached (about {len(cache)} memoized "
                    f"configurations of ~{entry_bytes} bytes) after {budget.steps} model steps; deepest "
                    f"point: {max(best_depth, 0)} of {n_ok} completed operations linearized")


def _anomaly(key: Hashable, ops: list[Operation], m: Model, out: _Outcome) -> Anomaly:
    bad = ops[out.op]
    lo = bad.invoke.index
    hi = bad.end if bad.end is not None else float("inf")
    concurrent = [
        o.invoke.index for o in ops
        if o is not bad and o.invoke.index < hi and (o.end if o.end is not None else float("inf")) > lo
    ]
    described = [m.describe(s) for s in out.states]
    impossible = getattr(m, "impossible", None)
    why = impossible(bad, described) if impossible is not None else \
        f"the {m.name} can only be {' or '.join(described)} here"
    explanation = f"{m.explain(bad)} at {bad.invoke.time / 1e9:.2f} s: {why}"
    operations = []
    for o in ops:
        operations.append({
            "index": o.invoke.index,
            "process": o.process,
            "f": o.f,
            "value": o.invoke.value,
            "result": o.completion.value if o.completion is not None else None,
            "outcome": "ok" if o.end is not None else "info",
            "start": o.invoke.time,
            "end": o.completion.time if o.completion is not None else None,
        })
    return Anomaly(
        type="nonlinearizable",
        ops=(bad.invoke.index,) + ((bad.completion.index,) if bad.completion is not None else ()),
        explanation=explanation,
        details={
            "key": key,
            "op": bad.invoke.index,
            "prefix": [ops[i].invoke.index for i in out.prefix],
            "states": described,
            "concurrent": concurrent,
            "operations": operations,
        },
    )
