"""Linearizability: Wing & Gong's search with Lowe's memoization, per key.

Semantics (Knossos's): operations that ended in `fail` did not happen and are
removed; operations that ended in `info`, or never completed, may take effect
at any single point after their invocation, or never. Every `ok` operation
must take effect exactly once between its invocation and its completion.

The search (`_search`) is Porcupine's `checkSingle` (Wing & Gong with
Lowe's memoization), pruned for histories full of crashed operations:

- The completed (`ok`) operations' calls and returns form a doubly linked
  list in history order. Walking from the head, a call entry is a candidate
  to linearize next; the first return entry reached is the *wall*: its
  operation must be linearized before anything invoked after it.
  Linearizing a candidate *lifts* its call and return out of the list and
  pushes a frame on an explicit stack; backtracking pops it, *unlifts* (O(1))
  and tries the operation's next possible state, or the next candidate. The
  search is iterative: no recursion limit, however long the history.
- *Crashed operations just in time.* An `info` (or never-completed)
  operation has no return: it never blocks anything, and is tried only once
  the completed candidates before the wall have been: a configuration tries
  its completed candidates first, then the crashed operations invoked before
  the wall. The search succeeds as soon as every `ok` operation is
  linearized; crashed ones left over "never happened".
- *Interchangeable crashed ops.* Crashed operations with the same `f`, key
  and argument form a class, used from its first member (in invocation
  order) on: a linearization that uses a later member while an earlier one
  is unused stays valid with the two swapped (neither has a return, and the
  earlier is available wherever the later is). So k identical crashed writes
  cost k+1 configurations, not 2^k, and the model is asked once per class
  and state, not once per member.
- *Useless crashed steps.* A crashed step that leaves the state as it is (a
  read, whose result is unknown; a cas whose compare does not match) is never
  taken: dropping it from a linearization keeps it valid. A class is tried in
  a state only if one of its steps changes it, so crashed reads, and a cas
  whose expected value never comes up, cost nothing at all.
- *Lowe's memo with covering.* A configuration is (K, s, C): the bitset of
  `ok` operations linearized, the model state, the bitset of crashed ones
  linearized (Python ints). Whatever can follow (K, s, C') can follow
  (K, s, C) when C is a subset of C' (crashed operations are optional and
  never block; which are available depends on K alone), so the memo keeps,
  for each (K, s), the sets C seen, and a configuration covered by one of
  them is skipped.
- *Crashed chains.* After a crashed operation from state p, a next crashed
  step whose result it could reach from p alone is skipped: that
  configuration covers this one.
- *Gets of the kv model.* For the built-in `kv` model a part's state is
  the key's string. A completed get that reads the state now, and is a
  candidate, is linearized next with no alternative tried: a get never
  changes the state, so it can move to the front of any linearization from
  here. And a configuration is dead when a candidate get's string does not
  start with the state while no put that could start it again (a completed
  put not linearized, invoked before the get returns, writing a prefix of
  the string; or any such crashed put) is left: appends only lengthen the
  string, so that get could never be linearized. (So, where a candidate
  get reads a longer string with no such put left, a step to a state that
  is not its prefix is not taken at all.) Once no get left reads
  a string that starts with the state, the memo keys the state as one
  `junk` state: no get can tell two such states apart (appends keep them
  unread, a put makes them equal), so the orders of appends that a put
  will overwrite are searched once, not once each.
- *P-compositionality.* `model.partition` splits the history (by key for
  registers and kv); each part is searched alone, smallest first.
- *Unique-value registers.* For a `register` (or `cas-register` without cas)
  whose written values are all distinct, `checkers.unique_register` decides
  the part in O(n log n) (Gibbons & Korach) when it applies. A delete writes
  the initial value again, so a part with deletes takes the search.

Each skip is exact: at the end of a failed search no configuration it
visited can reach a full linearization. (Were one to, take the one with the
shortest way to success, and the fewest operations linearized among those;
the first move of that way is tried from it, or is covered by a visited
configuration with a way as short, or, after a crashed step, its parent has a
way as short with fewer operations, or a get was forced from it, and the
configuration after the get has a way shorter by one: a contradiction each
time. A dead configuration has no way to success.) The tests
cross-check the search against plain WGL and a brute-force checker.

`_search_plain` is the plain algorithm (every operation a candidate in
history order, crashed ones too, memo on (linearized set, state), no other
pruning), used when the module's `_prune` is False: for the benchmark's
comparison and for tests, never by default.

Cost per step: the model is called once per distinct (operation, state)
pair (per (class, state) for crashed ones), its answer kept in a table keyed
by interned state ids; for the built-in `register` and `cas-register` each
operation's transition is compiled to a small tuple when first needed, and
operations with the same compiled transition share one table; the same
for the `kv` model, whose states are then strings. The steps
counted are the candidate evaluations, whether or not the transition was
already known, plus one per (class, state) the crashed candidates are
sorted out for.

Limits: `time_limit` (seconds, checked on a monotonic clock every 1000 model
steps) and `memory_limit` (bytes), both for the whole check: the search of
every part and the drawing of a counterexample. Memory is checked every 1000
model steps in two ways, and the first over the limit counts: an estimate of
the memo (each entry costed at 150 bytes plus the bitsets (n/4 bytes) plus
the size of a model state, sampled with `sys.getsizeof` once per part), and,
where /proc tells it, the growth of the process's resident memory since the
check began (the estimate misses the transition tables and large states).
Past either limit the verdict is "unknown", with a reason that names the
limit and how far the search got; so is any exception a model or the history
raises. With `all_keys=False` a part found invalid ends the search of the
others unless time is left (see `check`).

Counterexamples (`details` of the "nonlinearizable" anomaly): the search
remembers its deepest point (most `ok` operations linearized) and which
operation's return it could not get past there; the states collected are all
model states reached at that depth with the same `ok` operations linearized
(i.e. over every choice of crashed operations).
"""

from __future__ import annotations

import os
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from checkers.history import REPLICA_READ, Op, Operation, complete, pair
from checkers.models import (
    _ATOMS,
    KV,
    CasRegister,
    Model,
    Register,
    _fname,
    argument,
    freeze,
    output,
)
from checkers.models import model as model_by_name
from checkers.result import Anomaly, Result, worst

__all__ = ["check"]

CHECKER = "linearizable"
_CHECK_EVERY = 1000
# How long the search may draw a counterexample for a part the
# unique-register path already found invalid (within the caller's limits).
_DETAIL_SECONDS = 5.0

UniqueChecker = Callable[[list[Operation], Any], "Result | None"]


def _load_unique_register() -> UniqueChecker | None:
    """The O(n log n) path, written separately; the checker works without it."""
    try:
        from checkers.unique_register import check_unique_register
    except ImportError:  # pragma: no cover - depends on the tree
        return None
    return check_unique_register


_unique_register: UniqueChecker | None = _load_unique_register()

# False: plain Wing & Gong + Lowe (`_search_plain`), no pruning beyond the
# memo, no unique-register path; for the benchmark's comparison and tests.
_prune = True


def _search_part(ops: list[Operation], m: Model, budget: _Budget) -> _Outcome:
    return _search(ops, m, budget) if _prune else _search_plain(ops, m, budget)


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
    rss_base: int | None = None  # the process's resident memory when the check began

    def over_memory(self, entries: int, entry_bytes: int) -> str | None:
        """None while within `memory_limit`, else what is over it: the
        estimate of the memo, or the growth of the process's resident
        memory since the check began (what the estimate misses: tables,
        states, frames, and memory a part before this one left behind)."""
        if self.memory_limit is None:
            return None
        estimate = entries * entry_bytes
        if estimate > self.memory_limit:
            return f"about {entries} memoized configurations of ~{entry_bytes} bytes"
        if self.rss_base is not None:
            rss = _rss()
            if rss is not None and rss - self.rss_base > self.memory_limit:
                return (f"the process grew by {(rss - self.rss_base) / 2**20:.0f} MiB "
                        f"with {entries} memoized configurations")
        return None


def _rss() -> int | None:
    """The process's resident memory in bytes, where /proc tells it (Linux);
    a few microseconds, read once per _CHECK_EVERY model steps."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


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
    all_keys: bool = True,
) -> Result:
    """Is `history` linearizable with respect to `model` (a name, with its
    `initial` value; or a model instance, which has its own)? A pure
    function of the history (it only reads a monotonic clock to honour
    `time_limit`, and its own resident memory to honour `memory_limit`).
    Never raises for what the history holds, except KeyboardInterrupt: a
    crash is an "unknown" verdict.

    `time_limit` (seconds) and `memory_limit` (bytes the check may add to
    the process) bound the whole check, counterexamples included.
    `all_keys=False`: once a part (a key) is found not linearizable, the
    verdict is False whatever the others hold, so the remaining parts are
    searched only while `time_limit` leaves time (not at all without one),
    and those left are named in `details["not_checked"]` and the reason."""
    if initial is not None and not isinstance(model, str):
        raise ValueError("initial= goes with a model given by name; give a model instance its initial value "
                         "when you construct it")
    try:
        m = model_by_name(model, initial) if isinstance(model, str) else model
        return _check(history, m, time_limit, memory_limit, all_keys)
    except Exception as e:
        return Result(checker=CHECKER, valid="unknown", reason=f"checker error: {type(e).__name__}: {e}")


def _check(
    history: Sequence[Op],
    m: Model,
    time_limit: float | None,
    memory_limit: int | None,
    all_keys: bool = True,
) -> Result:
    # A replica read observes one replica, outside the model: not an operation to linearize.
    operations = [o for o in complete(pair(history)) if o.f != REPLICA_READ]
    parts: dict[Hashable, list[Operation]] = {}
    for o in operations:
        parts.setdefault(m.partition(o), []).append(o)
    budget = _Budget(
        deadline=None if time_limit is None else time.monotonic() + time_limit,
        time_limit=time_limit,
        memory_limit=memory_limit,
        rss_base=None if memory_limit is None else _rss(),
    )
    verdicts: list[Any] = []
    anomalies: list[Anomaly] = []
    reasons: list[str] = []
    summary: dict[str, dict[str, Any]] = {}
    invalid = False
    invalid_key: Hashable = None
    not_checked: list[str] = []
    for key, ops in sorted(parts.items(), key=lambda kv: len(kv[1])):
        if invalid and not all_keys and budget.deadline is None:
            not_checked.append(repr(key))  # no time limit: nothing would end the search of the others
            continue
        before = budget.steps
        res = _check_part(key, ops, m, budget)
        if res.valid == "unknown" and invalid and not all_keys:
            not_checked.append(repr(key))  # out of time or memory after the verdict was known
            continue
        if res.valid is False and not invalid:
            invalid, invalid_key = True, key
        verdicts.append(res.valid)
        anomalies.extend(res.anomalies)
        if res.reason:
            reasons.append(res.reason if len(parts) == 1 else f"key {key!r}: {res.reason}")
        summary[repr(key)] = {"valid": res.valid, "steps": budget.steps - before, "operations": len(ops)}
    if not_checked:
        why = "the time limit was reached" if budget.deadline is not None else "there was no time limit"
        reasons.append(f"key {invalid_key!r} is not linearizable; {len(not_checked)} other key(s) not checked, "
                       f"as {why} (all keys: all_keys=True, or harness check --all-keys): {', '.join(not_checked)}")
    valid = worst(verdicts)
    counts = {"operations": len(operations), "partitions": len(parts), "steps": budget.steps}
    details: dict[str, Any] = {"partitions": summary}
    if not_checked:
        counts["not_checked"] = len(not_checked)
        details["not_checked"] = not_checked
    return Result(
        checker=CHECKER,
        valid=valid,
        anomalies=tuple(anomalies),
        counts=counts,
        reason="; ".join(reasons) if reasons and valid != True else None,  # noqa: E712
        details=details,
    )


def _unique_writes(ops: list[Operation], m: Model) -> bool:
    """Does the unique-register path apply: the built-in register or
    cas-register (exactly those classes, whatever a subclass is named: it
    may step differently), no cas, every written value distinct? Not when a
    read of None must mean a non-None initial value (the models' rule for an
    absent key), which that path does not know; nor with deletes (each
    writes the initial value again)."""
    if type(m) is not Register and type(m) is not CasRegister:
        return False
    initial = m.initial
    seen: set[Hashable] = set()
    for o in ops:
        f = str(o.f).lstrip(":")
        if f in ("cas", "delete"):  # a delete writes the initial value again: values are not unique
            return False
        if f == "write":
            v = freeze(o.invoke.value)
            if v in seen:
                return False
            seen.add(v)
        elif f == "read" and initial is not None and o.completion is not None \
                and o.completion.type == "ok" and o.completion.value is None:
            return False
    return True


def _check_part(key: Hashable, ops: list[Operation], m: Model, budget: _Budget) -> Result:
    if budget.deadline is not None and time.monotonic() > budget.deadline:
        return Result(checker=CHECKER, valid="unknown",
                      reason=f"time limit of {budget.time_limit} s reached before this part was searched")
    if _prune and _unique_register is not None and _unique_writes(ops, m):
        try:
            res = _unique_register(ops, m.initial)  # type: ignore[attr-defined]
        except Exception:  # fall back to the search
            res = None
        if res is not None:
            budget.steps += int(res.counts.get("steps", 0))
            if res.valid is not False:
                return res
            # Invalid: the search, bounded, draws the counterexample (the
            # longest linearizable prefix and the states before the failing
            # op), which the fast path does not compute.
            # At most 5 s of it, and never past the caller's limits.
            until = time.monotonic() + _DETAIL_SECONDS
            if budget.deadline is not None:
                until = min(until, budget.deadline)
            detail = _Budget(deadline=until, time_limit=round(until - time.monotonic(), 3),
                             memory_limit=budget.memory_limit, rss_base=budget.rss_base)
            try:
                out = _search_part(ops, m, detail)
            except _LimitReached:
                budget.steps += detail.steps
                return res
            budget.steps += detail.steps
            if out.valid:  # cannot happen if both are right; trust neither silently
                return Result(checker=CHECKER, valid="unknown",
                              reason="the unique-register check and the search disagree: please report this history")
            return Result(checker=CHECKER, valid=False, anomalies=(_anomaly(key, ops, m, out),))
    try:
        out = _search_part(ops, m, budget)
    except _LimitReached as e:
        return Result(checker=CHECKER, valid="unknown", reason=e.reason)
    if out.valid:
        return Result(checker=CHECKER, valid=True)
    return Result(checker=CHECKER, valid=False, anomalies=(_anomaly(key, ops, m, out),))


_READ, _READ_ANY, _WRITE, _CAS = 0, 1, 2, 3


def _register_spec(o: Operation, m: Model) -> tuple[Any, ...] | None:
    """For the built-in `register` and `cas-register` (exactly those classes:
    a subclass may override `step`), the op's transition precompiled to a
    small tuple, the same as `Register.step` / `CasRegister.step` computes;
    None for an op the generic `step` must handle (it raises the error), or
    for another model."""
    cas = type(m) is CasRegister
    if not cas and type(m) is not Register:
        return None
    initial = m.initial  # type: ignore[attr-defined]
    inv = o.invoke
    f = inv.f
    if f[:1] == ":":
        f = f[1:]
    # output(o) and argument(o), inlined: this runs once per op
    c = o.completion
    known = c is not None and c.type == "ok"
    try:
        if f == "read":
            if not known:
                return (_READ_ANY,)
            v = c.value if c.value is not None else inv.value  # type: ignore[union-attr]
            return (_READ, initial if v is None else v if type(v) in _ATOMS else freeze(v))
        arg = inv.value
        if arg is None and known:
            arg = c.value  # type: ignore[union-attr]
        if f == "write":
            return (_WRITE, arg if type(arg) in _ATOMS else freeze(arg))
        if f == "delete":
            return (_WRITE, initial)
        if f == "cas" and cas:
            expected, new = arg
            return (_CAS, initial if expected is None else freeze(expected), freeze(new), known)
    except (TypeError, ValueError):
        pass
    return None


def _successors(
    ops: list[Operation], m: Model
) -> tuple[Callable[[int, Hashable], list[Hashable]], Callable[[int], Hashable]]:
    """(succ, kind): succ(i, state) gives the states `ops[i]` can lead to
    from `state`, by the precompiled register transitions where they apply
    (each op's compiled when first asked), else by `m.step`; kind(i) is a
    hashable that ops with the same transitions share (their compiled
    transition), or None when that is not known (another model)."""
    step = m.step
    if type(m) is not Register and type(m) is not CasRegister:
        return (lambda i, st: list(step(st, ops[i]))), (lambda i: None)
    unset: tuple[Any, ...] = ()
    specs: list[tuple[Any, ...] | None] = [unset] * len(ops)

    def kind(i: int) -> Hashable:
        sp = specs[i]
        if sp is unset:
            sp = specs[i] = _register_spec(ops[i], m)
        return sp

    def succ(i: int, st: Hashable) -> list[Hashable]:
        sp = specs[i]
        if sp is unset:
            sp = specs[i] = _register_spec(ops[i], m)
        if sp is None:
            return list(step(st, ops[i]))
        k = sp[0]
        if k == _READ:
            return [st] if sp[1] == st else []
        if k == _READ_ANY:
            return [st]
        if k == _WRITE:
            return [sp[1]]
        return [sp[2]] if sp[1] == st else ([] if sp[3] else [st])  # _CAS

    return succ, kind


_GET, _GET_ANY, _PUT, _APPEND = 0, 1, 2, 3
# What a get may read for the compiled kv model: a str, or a value of a type
# that never equals one (the search compares only exact strings).
_PLAIN = frozenset({str, int, float, bool, bytes, list, tuple, dict, set, frozenset})


@dataclass(frozen=True, kw_only=True, slots=True)
class _KVPart:
    """One key of the built-in `kv` model, compiled: the search's states are
    the key's string (the model's states are frozensets of (key, value)
    pairs, the other keys' pairs never changing within a part)."""

    init: str
    specs: list[tuple[Any, ...]]  # per op: (_GET, target) | (_GET_ANY,) | (_PUT, value) | (_APPEND, suffix)
    key: Hashable
    rest: frozenset[Any]  # the initial state's pairs of other keys
    init_state: Hashable  # the model's own initial state

    def succ(self, i: int, s: Any) -> list[Hashable]:  # s: a str
        sp = self.specs[i]
        t = sp[0]
        if t == _GET:
            return [s] if sp[1] == s else []
        if t == _GET_ANY:
            return [s]
        if t == _PUT:
            return [sp[1]]
        return [s + sp[1]]

    def kind(self, i: int) -> Hashable:
        sp = self.specs[i]
        try:
            hash(sp)
        except TypeError:
            return None
        return sp

    def gets(
        self, ops: list[Operation], ok: list[bool]
    ) -> tuple[list[str | None], list[int | None], Callable[[str], int]]:
        """(reads, resets, readers): reads[i] is the string completed get i
        read, None for other ops; resets[i] the bitset of the completed puts
        invoked before get i returned that write a prefix of that string
        (only after one of them can the key hold it again, once it holds a
        string that is not its prefix), None if a crashed put may do so;
        readers(s) the bitset of the completed gets whose string starts
        with s."""
        n = len(ops)
        reads: list[str | None] = [None] * n
        resets: list[int | None] = [None] * n
        puts = [(ops[j].invoke.index, j, sp[1]) for j, sp in enumerate(self.specs) if sp[0] == _PUT]
        for i, sp in enumerate(self.specs):
            v = sp[1] if sp[0] == _GET else None
            end = ops[i].end
            if type(v) is not str or not ok[i] or end is None:
                continue
            mask: int | None = 0
            for invoked, j, x in puts:
                if invoked < end and v.startswith(x):
                    if not ok[j]:
                        mask = None
                        break
                    mask |= 1 << j  # type: ignore[operator]
            reads[i] = v
            resets[i] = mask
        # The strings read, sorted: those that start with s are a run.
        read = sorted((v, i) for i, v in enumerate(reads) if v is not None)
        values = [v for v, _ in read]
        owners = [1 << i for _, i in read]

        def readers(s: str) -> int:
            mask = 0
            j = bisect_left(values, s)
            while j < len(values) and values[j].startswith(s):
                mask |= owners[j]
                j += 1
            return mask

        return reads, resets, readers

    def decode(self, s: Any) -> Hashable:  # s: a str
        """The model's state for the search's state `s`, as `KV.step` builds it."""
        if s == self.init:
            return self.init_state
        return self.rest | {(self.key, s)} if s else self.rest


def _kv_part(ops: list[Operation], m: Model) -> _KVPart | None:
    """For the built-in `kv` model (exactly that class: a subclass may
    override `step`), the part's ops compiled to the transitions `KV.step`
    computes; None for another model, or when an op is one `KV.step` would
    reject (the generic search raises its error)."""
    if type(m) is not KV or not ops:
        return None
    try:
        k = freeze(ops[0].key)
        init = m.init()
        assert isinstance(init, frozenset)
        cur = ""
        for kk, vv in init:
            if kk == k:
                cur = vv
                break
        rest = frozenset((kk, vv) for kk, vv in init if kk != k)
        if type(cur) is not str:
            return None
        specs: list[tuple[Any, ...]] = []
        for o in ops:
            if freeze(o.key) != k:
                return None
            f = _fname(o.f)
            if f in ("get", "read"):
                known, out = output(o)
                if known and type(out or "") not in _PLAIN:
                    return None  # it might equal a string without being one
                specs.append((_GET, out or "") if known else (_GET_ANY,))
            elif f in ("put", "write", "append"):
                x = str(argument(o) or "")
                if type(x) is not str:
                    return None
                specs.append((_PUT if f != "append" else _APPEND, x))
            else:
                return None
    except Exception:  # the generic search meets it again, and says so
        return None
    return _KVPart(init=cur, specs=specs, key=k, rest=rest, init_state=init)


def _search(ops: list[Operation], m: Model, budget: _Budget) -> _Outcome:
    """Wing & Gong + Lowe over one part, pruned as the module docstring
    says: completed ops tried first, crashed ops by class and only where
    they change the state, configurations covered by a seen one skipped."""
    n = len(ops)
    kv = _kv_part(ops, m)
    state0: Hashable
    succ_of: Callable[[int, Hashable], list[Hashable]]
    kind_of: Callable[[int], Hashable]
    if kv is not None:
        state0, succ_of, kind_of = kv.init, kv.succ, kv.kind
    else:
        state0 = m.init()
        succ_of, kind_of = _successors(ops, m)

    # One pass over the ops: the completed ones' calls and returns as sort
    # keys (history index, then the entry); then the crashed ones, in
    # invocation order, by class of interchangeable ops (same f, key and
    # argument). Classes are numbered, and their members listed, in
    # invocation order.
    keys: list[int] = []
    ok = [False] * n
    crashed: list[tuple[int, int]] = []
    width = 2 * n + 2
    for i, o in enumerate(ops):
        inv = o.invoke
        done = o.completion
        if done is not None and done.type != "info":
            ok[i] = True
            keys.append(inv.index * width + 2 * i + 3)
            keys.append(done.index * width + 2 * i + 2)
        else:
            crashed.append((inv.index, i))
    crashed.sort()  # `ops` come in invocation order already, as `pair` makes them
    cls_id: dict[Hashable, int] = {}
    members: list[list[int]] = []
    invoked: list[list[int]] = []  # the members' invocation indexes
    for _, i in crashed:
        inv = ops[i].invoke
        v = inv.value
        k = inv.key
        try:
            key: Hashable = (inv.f, k if type(k) in _ATOMS else freeze(k), v if type(v) in _ATOMS else freeze(v))
            hash(key)
        except TypeError:
            key = ("op", i)
        cl = cls_id.get(key)
        if cl is None:
            cl = cls_id[key] = len(members)
            members.append([])
            invoked.append([])
        members[cl].append(i)
        invoked[cl].append(inv.index)
    n_ok = sum(ok)
    if n_ok == 0:
        return _Outcome(valid=True, steps=0)
    reads: list[str | None] | None = None
    resets: list[int | None] | None = None
    readers: Callable[[str], int] | None = None
    if kv is not None:
        reads, resets, readers = kv.gets(ops, ok)
    n_cls = len(members)
    for calls in invoked:
        calls.append(1 << 62)  # no more members: never before the wall
    used = [0] * n_cls

    # States interned to small ids. tr_ok[i][s]: the states completed op i
    # leads to from state s. tr_cls[c][s]: the states a crashed op of class
    # c leads to from s, s itself left out (a crashed step that changes
    # nothing is never needed); useful[s]: the classes with such a step
    # from s, in order. Filled as the search needs them, for the classes
    # invoked before the wall.
    states: list[Hashable] = [state0]
    sid_of: dict[Hashable, int] = {state0: 0}
    shl = [0]  # shl[s] = s << n, a state's part of a memo key
    # kv: read_by[s], the completed gets whose string starts with state s.
    # Once every one of them is linearized, no get left can tell s from
    # another such state (neither it nor anything appends make of it is
    # read; a put makes both the same): the memo then keys the state as
    # `junk` (-1 << n, below every other key). Other models: -1, never.
    read_by = [-1 if readers is None else readers(state0)]  # type: ignore[arg-type]
    junk = -1 << n

    def intern(xs: list[Hashable]) -> tuple[int, ...]:
        out = []
        for x in xs:
            s = sid_of.get(x)
            if s is None:
                s = sid_of[x] = len(states)
                states.append(x)
                shl.append(s << n)
                read_by.append(-1 if readers is None else readers(x))  # type: ignore[arg-type]
            out.append(s)
        return tuple(out)

    tr_cls: list[dict[int, tuple[int, ...]]] = [{} for _ in range(n_cls)]
    useful: dict[int, list[int]] = {}
    useful_upto: dict[int, int] = {}  # useful[s] covers the classes below this
    first_invoked = [calls[0] for calls in invoked]
    # Completed ops of one kind (the same compiled register transition)
    # share their table.
    tr_ok: list[dict[int, tuple[int, ...]] | None] = [None] * n
    shared: dict[Hashable, dict[int, tuple[int, ...]]] = {}

    def table(i: int) -> dict[int, tuple[int, ...]]:
        kind = kind_of(i)
        t: dict[int, tuple[int, ...]] = {} if kind is None else shared.setdefault(kind, {})
        tr_ok[i] = t
        return t

    # The completed ops' calls and returns as a doubly linked list in
    # history order; entry 0 is the head, entry 1 the tail.
    keys.sort()
    size = len(keys) + 2
    HEAD, TAIL = 0, 1
    op_of = [-1] * size
    is_call = [False] * size
    at = [0] * size  # history index of a return entry
    match = [-1] * size  # call entry -> its return entry
    call_entry = [-1] * n
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    nxt[HEAD] = 2
    for j, key_ in enumerate(keys):
        e = j + 2
        hi, rest = divmod(key_, width)
        i = (rest - 2) >> 1
        op_of[e] = i
        at[e] = hi
        if rest & 1:
            is_call[e] = True
            call_entry[i] = e
        else:
            match[call_entry[i]] = e
    prv[2] = HEAD
    last = size - 1
    nxt[last] = TAIL
    prv[TAIL] = last
    nxt[TAIL] = TAIL
    bits = [1 << i for i in range(n)]

    # Memory estimate per memoized configuration.
    entry_bytes = 150 + n // 4 + sys.getsizeof(state0)

    # Lowe's memo, with covering: (kset, s) -> the sets cset seen with it,
    # where kset is the bitset of completed ops linearized, s the state, cset
    # the bitset of crashed ops linearized. A configuration (kset, s, C') is
    # skipped when some seen cset C is a subset of C': every way on from C'
    # is open from C too (crashed ops never block), so C' adds nothing.
    # One set C is kept as the int itself, several as a list.
    memo: dict[int, int | list[int]] = {junk if read_by[0] == 0 else 0: 0}
    entries = 1

    # Frames: (call entry of a completed op, or -1 for a crashed op; the
    # crashed op's index in useful[sid before]; the op; sid, kset, cset before;
    # the next states; the index of the one taken; the wall).
    frames: list[tuple[int, int, int, int, int, int, tuple[int, ...], int, int, str | None]] = []
    push = frames.append
    pop = frames.pop
    kset = 0
    cset = 0
    sid = 0
    remaining = n_ok
    steps = 0
    check_at = _CHECK_EVERY - budget.steps % _CHECK_EVERY

    best_depth = -1
    best_op = -1
    best_prefix: list[int] = []
    best_key = -1
    best_sids: list[int] = []

    e = nxt[HEAD]
    wall = 0
    ci = -1  # < 0: walking the completed ops from e; else crashed classes useful[sid][ci:]
    scan = reads is not None
    fresh = scan  # a configuration just reached: look for a forced move or a doomed get first
    forced = False  # e is a forced move: if it fails, so does its configuration
    guide: str | None = None  # kv: what a state reached from here must be a prefix of
    blocked = -1
    while True:
        dead = False
        if ci < 0:
            if fresh:
                fresh = False
                # The candidates, for a get that reads the state (a forced
                # move), or one that can never read its value any more.
                # A get that reads a longer string, with no put left to
                # start it again, is a guide: a state it does not start
                # with would be dead.
                s: Any = states[sid]
                guide = None
                x = nxt[HEAD]
                while is_call[x]:
                    i = op_of[x]
                    v = reads[i]  # type: ignore[index]
                    if v is not None:
                        if v == s:
                            e = x
                            forced = True
                            break
                        rm = resets[i]  # type: ignore[index]
                        if rm is not None and rm & kset == rm:
                            if not v.startswith(s):
                                steps += 1
                                dead = True
                                blocked = i
                                break
                            if guide is None:
                                guide = v
                    x = nxt[x]
            if dead:
                pass
            elif is_call[e]:
                i = op_of[e]
                steps += 1
                tab = tr_ok[i]
                if tab is None:
                    tab = table(i)
                succ = tab.get(sid)
                if succ is None:
                    succ = tab[sid] = intern(succ_of(i, states[sid]))
                nk = kset | bits[i]
                k = 0
                for s2 in succ:
                    if guide is not None and s2 != sid and not guide.startswith(states[s2]):  # type: ignore[arg-type]
                        k += 1
                        continue
                    mk = nk | (shl[s2] if (rb := read_by[s2]) & nk != rb else junk)
                    got = memo.get(mk)
                    if got is None:
                        memo[mk] = cset
                        break
                    if isinstance(got, int):
                        if got & cset != got:
                            memo[mk] = [got, cset]
                            break
                    else:
                        for c0 in got:
                            if c0 & cset == c0:
                                break
                        else:
                            got.append(cset)
                            break
                    k += 1
                else:
                    if not forced:
                        e = nxt[e]
                        continue
                    k = -1  # the forced move was made before: its configuration fails
                if k < 0:
                    forced = False
                    dead = True
                    blocked = -1
                else:
                    entries += 1
                    push((e, -1, i, sid, kset, cset, succ, k, -1 if forced else 0, guide))
                    forced = False
                    fresh = scan
                    sid = succ[k]
                    kset = nk
                    a = prv[e]
                    b = nxt[e]
                    nxt[a] = b
                    prv[b] = a
                    r = match[e]
                    a = prv[r]
                    b = nxt[r]
                    nxt[a] = b
                    prv[b] = a
                    remaining -= 1
                    if remaining == 0:
                        budget.steps += steps
                        return _Outcome(valid=True, steps=steps)
                    e = nxt[HEAD]
                    continue
            else:
                # The wall: the first return of a completed op not linearized.
                # Note the deepest point; then try crashed ops invoked before it.
                wall = at[e]
                blocked = op_of[e]
            ci = 0
        if blocked >= 0:
            # The deepest point: the wall, or a get that can never read its value.
            depth = n_ok - remaining
            if depth > best_depth:
                best_depth = depth
                best_op = blocked
                best_prefix = [f[2] for f in frames]
                best_key = kset
                best_sids = [sid]
            elif depth == best_depth and blocked == best_op and kset == best_key \
                    and sid not in best_sids and len(best_sids) < 50:
                best_sids.append(sid)
            blocked = -1
        found = False
        if n_cls and not dead:
            # Crashed ops: the first unused member of each class that can
            # change the state, if it was invoked before the wall.
            # Classes are numbered in the order of their first members'
            # invocations: those invoked before the wall are the first hi.
            hi = bisect_left(first_invoked, wall)
            ul = useful.get(sid)
            if ul is None:
                ul = useful[sid] = []
                upto = useful_upto[sid] = 0
            else:
                upto = useful_upto[sid]
            if upto < hi:
                st = states[sid]
                for c in range(upto, hi):
                    steps += 1
                    t = tuple(x for x in intern(succ_of(members[c][0], st)) if x != sid)
                    tr_cls[c][sid] = t
                    if t:
                        ul.append(c)
                useful_upto[sid] = hi
            # After a crashed op from state p, skip a next state the next op
            # could reach from p alone: that configuration covers this one.
            p = frames[-1][3] if frames and frames[-1][0] < 0 else -1
            while ci < len(ul):
                c = ul[ci]
                if c >= hi:
                    break
                u = used[c]
                if invoked[c][u] < wall:
                    steps += 1
                    succ = tr_cls[c][sid]
                    i = members[c][u]
                    nc = cset | bits[i]
                    skip = tr_cls[c].get(p, ()) if p >= 0 else ()
                    k = 0
                    for s2 in succ:
                        if s2 not in skip:
                            mk = kset | (shl[s2] if (rb := read_by[s2]) & kset != rb else junk)
                            got = memo.get(mk)
                            if got is None:
                                memo[mk] = nc
                                found = True
                                break
                            if isinstance(got, int):
                                if got & nc != got:
                                    memo[mk] = [got, nc]
                                    found = True
                                    break
                            else:
                                for c0 in got:
                                    if c0 & nc == c0:
                                        break
                                else:
                                    got.append(nc)
                                    found = True
                                    break
                        k += 1
                    if found:
                        entries += 1
                        push((-1, ci, i, sid, kset, cset, succ, k, wall, guide))
                        fresh = scan
                        used[c] = u + 1
                        cset = nc
                        sid = succ[k]
                        ci = -1
                        e = nxt[HEAD]
                        break
                ci += 1
        if not found:
            # Backtrack until a frame offers another choice.
            while True:
                if not frames:
                    budget.steps += steps
                    return _Outcome(valid=False, steps=steps, op=best_op, prefix=best_prefix,
                                    states=[states[s] if kv is None else kv.decode(states[s]) for s in best_sids])
                e0, ci0, i, sid, kset, cset, succ, k, wall, guide = pop()
                k += 1
                if e0 >= 0:
                    r = match[e0]
                    nxt[prv[r]] = r
                    prv[nxt[r]] = r
                    nxt[prv[e0]] = e0
                    prv[nxt[e0]] = e0
                    remaining += 1
                    if wall < 0:  # a forced move failed: so does the configuration it was made from
                        continue
                    nk = kset | bits[i]
                    while k < len(succ):
                        s2 = succ[k]
                        mk = nk | (shl[s2] if (rb := read_by[s2]) & nk != rb else junk)
                        got = memo.get(mk)
                        if got is None:
                            memo[mk] = cset
                            break
                        if isinstance(got, int):
                            if got & cset != got:
                                memo[mk] = [got, cset]
                                break
                        else:
                            for c0 in got:
                                if c0 & cset == c0:
                                    break
                            else:
                                got.append(cset)
                                break
                        k += 1
                    if k < len(succ):  # the same op, another next state
                        entries += 1
                        push((e0, -1, i, sid, kset, cset, succ, k, 0, guide))
                        fresh = scan
                        sid = succ[k]
                        kset = nk
                        nxt[prv[e0]] = nxt[e0]
                        prv[nxt[e0]] = prv[e0]
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                        remaining -= 1
                        e = nxt[HEAD]
                    else:
                        e = nxt[e0]
                    ci = -1
                    break
                c = useful[sid][ci0]
                used[c] -= 1
                nc = cset | bits[i]
                p = frames[-1][3] if frames and frames[-1][0] < 0 else -1
                skip = tr_cls[c].get(p, ()) if p >= 0 else ()
                while k < len(succ):
                    s2 = succ[k]
                    if s2 not in skip:
                        mk = kset | (shl[s2] if (rb := read_by[s2]) & kset != rb else junk)
                        got = memo.get(mk)
                        if got is None:
                            memo[mk] = nc
                            break
                        if isinstance(got, int):
                            if got & nc != got:
                                memo[mk] = [got, nc]
                                break
                        else:
                            for c0 in got:
                                if c0 & nc == c0:
                                    break
                            else:
                                got.append(nc)
                                break
                    k += 1
                if k < len(succ):
                    entries += 1
                    push((-1, ci0, i, sid, kset, cset, succ, k, wall, guide))
                    fresh = scan
                    used[c] += 1
                    cset = nc
                    sid = succ[k]
                    ci = -1
                    e = nxt[HEAD]
                else:
                    ci = ci0 + 1
                break
        if steps >= check_at:
            check_at += _CHECK_EVERY
            if budget.deadline is not None and time.monotonic() > budget.deadline:
                budget.steps += steps
                raise _LimitReached(
                    f"time limit of {budget.time_limit} s reached after {budget.steps} model steps; "
                    f"deepest point: {max(best_depth, 0)} of {n_ok} completed operations linearized")
            over = None if budget.memory_limit is None else budget.over_memory(entries, entry_bytes)
            if over is not None:
                budget.steps += steps
                raise _LimitReached(
                    f"memory limit of {budget.memory_limit} bytes reached ({over}) after {budget.steps} "
                    f"model steps; deepest point: {max(best_depth, 0)} of {n_ok} completed operations linearized")


def _search_plain(ops: list[Operation], m: Model, budget: _Budget) -> _Outcome:
    """Plain Wing & Gong + Lowe over one part, as Porcupine does it: every op
    (crashed ones too) a candidate in history order, memoized on (linearized
    set, state). No pruning beyond that; kept as the reference the benchmark
    compares the pruned search (`_search`) with, and for tests."""
    n = len(ops)
    state: Hashable = m.init()
    ok = [o.end is not None for o in ops]
    n_ok = sum(ok)
    if n_ok == 0:
        return _Outcome(valid=True, steps=0)

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

    # Model transitions, memoized per (op, state): trans[i][state] is the
    # tuple of (next state, its memo key part) pairs. States are interned
    # to small ids, and a configuration (lin, state) is memoized as the int
    # `lin | id << n`, so the hot loop hashes one int instead of a tuple and
    # calls the model once per distinct (op, state) instead of once per step.
    trans: list[dict[Hashable, tuple[tuple[Hashable, int], ...]]] = [{} for _ in range(n)]
    sid_of: dict[Hashable, int] = {state: 0}
    succ_of = _successors(ops, m)[0]

    def transitions(i: int, st: Hashable) -> tuple[tuple[Hashable, int], ...]:
        succ = succ_of(i, st)
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
            over = None if budget.memory_limit is None else budget.over_memory(len(cache), entry_bytes)
            if over is not None:
                budget.steps += steps
                raise _LimitReached(
                    f"memory limit of {budget.memory_limit} bytes reached ({over}) after {budget.steps} "
                    f"model steps; deepest point: {max(best_depth, 0)} of {n_ok} completed operations linearized")


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
