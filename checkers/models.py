"""Sequential specifications for the linearizability checker.

A model is a pure, nondeterministic state machine over one operation at a
time (Porcupine's `Model`, with Knossos's unknown outputs):

- `init()` gives the starting state; states are hashable, because the
  checker memoizes (set of linearized operations, state) pairs. A model's
  initial value is given to its constructor (`Register(initial=0)`), as
  Knossos builds `(cas-register 0)`: a model never changes after that, so
  one instance can judge any number of histories, in any order.
- `step(state, op)` gives every state the system could be in if `op` took
  effect now with the output the history recorded; an empty result means `op`
  cannot take effect in `state`. When the output is unknown (the completion is
  `info`, or missing), any output is allowed: a write just writes, a read is a
  no-op, a cas whose compare matches applies. `step` never mutates `state`.
- `partition(op)` is a key function: operations with different keys never
  interact, so the checker checks each key alone (P-compositionality). The
  default puts everything in one part.
- `describe(state)` and `explain(op)` write the counterexample sentence
  ("read of 3 by process 4" ... "the register can only hold 1 or 2 here").

`fail` operations never reach a model: the checker removes them first (for a
cas, `fail` means the compare did not match, i.e. no effect).

Models here: `register`, `cas-register`, `multi-register`, `kv`, `set`,
`mutex`, `queue`. Get one by name with `model(name, initial)`; add your own by
writing a class with the same five members (subclassing `BaseModel` gives the
defaults) and passing an instance to `checkers.linearizable.check` (the
harness also finds models registered as plug-ins: README, "Plug-ins").
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from checkers.history import Operation

State = Hashable

__all__ = [
    "KV",
    "MODELS",
    "BaseModel",
    "CasRegister",
    "Model",
    "MultiRegister",
    "Mutex",
    "Register",
    "SetModel",
    "State",
    "model",
    "output",
]


@runtime_checkable
class Model(Protocol):
    """A sequential specification. All methods are pure: they are called many
    times in any order by the search and must not keep or mutate state."""

    name: str

    def init(self) -> State:
        """Called once per part before the search: the state before any op.
        Must not change the model (it stores nothing)."""
        ...

    def step(self, state: State, op: Operation) -> Iterable[State]:
        """Called for each candidate: the possible states after `op` takes
        effect in `state` (empty if it cannot). Must not mutate `state`."""
        ...

    def partition(self, op: Operation) -> Hashable:
        """Called once per op before the search: ops with different keys are
        independent and checked apart. Return one constant for no split."""
        ...

    def describe(self, state: State) -> str:
        """Called only to explain a failure: a short rendering of `state`."""
        ...

    def explain(self, op: Operation) -> str:
        """Called only to explain a failure: "read of 3 by process 4"."""
        ...


_ATOMS = frozenset({int, str, float, bool, bytes, type(None)})


def freeze(value: Any) -> Hashable:
    """A hashable copy of a JSON-ish value: lists become tuples, dicts and
    sets frozensets."""
    t = type(value)
    if t in _ATOMS:  # the common case, without the isinstance chain
        return value
    if t is list:
        return tuple([v if type(v) in _ATOMS else freeze(v) for v in value])
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return frozenset((freeze(k), freeze(v)) for k, v in value.items())
    if isinstance(value, set | frozenset):
        return frozenset(freeze(v) for v in value)
    return value


def output(op: Operation) -> tuple[bool, Any]:
    """(known, value): the recorded output of `op`, known only for `ok`.
    An `ok` completion without a value falls back to the invocation's."""
    c = op.completion
    if c is None or c.type != "ok":
        return False, None
    return True, (c.value if c.value is not None else op.invoke.value)


def argument(op: Operation) -> Any:
    """The invocation's argument, or the completion's if the invocation left
    it out (some readers only fill in `ok` completions)."""
    v = op.invoke.value
    if v is None and op.completion is not None and op.completion.type == "ok":
        return op.completion.value
    return v


def _fname(f: Any) -> str:
    return str(f).lstrip(":")


def _or(items: Sequence[str], limit: int = 6) -> str:
    items = list(items)
    if not items:
        return "nothing"
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" or {len(items) - limit} other states"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]


class BaseModel:
    """Defaults for the optional members: no partition, repr rendering; the
    initial value, given to the constructor, kept as `initial`."""

    name: str = "model"

    def __init__(self, initial: Any = None) -> None:
        self.initial: Any = initial  # set once: models never change after construction

    def partition(self, op: Operation) -> Hashable:
        return None

    def describe(self, state: State) -> str:
        return repr(state)

    def explain(self, op: Operation) -> str:
        known, out = output(op)
        what = f"{op.f} of {out!r}" if known and out is not None else f"{op.f} {argument(op)!r}"
        if op.key is not None:
            what += f" on key {op.key!r}"
        return f"{what} by process {op.process}"

    def impossible(self, op: Operation, states: Sequence[str]) -> str:
        """The second half of the counterexample sentence."""
        return f"the {self.name} can only hold {_or(states)} here"


class Register(BaseModel):
    """A read/write register. A read of None reads the initial value (the
    key was absent); a delete writes the initial value (the key is absent
    again). Partitioned by `op.key`."""

    name: str = "register"

    def __init__(self, initial: Any = None) -> None:
        super().__init__(freeze(initial))

    def init(self) -> State:
        return self.initial

    def partition(self, op: Operation) -> Hashable:
        return freeze(op.key)

    def _read(self, state: State, op: Operation) -> list[State]:
        known, out = output(op)
        if not known:
            return [state]
        v = self.initial if out is None else freeze(out)
        return [state] if v == state else []

    def step(self, state: State, op: Operation) -> Iterable[State]:
        f = _fname(op.f)
        if f == "read":
            return self._read(state, op)
        if f == "write":
            return [freeze(argument(op))]
        if f == "delete":
            return [self.initial]
        raise ValueError(f"{self.name}: unknown operation {op.f!r}")

    def explain(self, op: Operation) -> str:
        f = _fname(op.f)
        known, out = output(op)
        if f == "read":
            what = f"read of {out!r}" if known else "read"
        elif f == "write":
            what = f"write of {argument(op)!r}"
        elif f == "delete":
            what = "delete"
        else:
            what = f"{f} {argument(op)!r}"
        if op.key is not None:
            what += f" on key {op.key!r}"
        return f"{what} by process {op.process}"


class CasRegister(Register):
    """A register with compare-and-set: cas value [expected, new]. An `ok`
    cas means the compare matched; an unknown one applies if it matches and
    is otherwise a no-op (a `fail` cas never reaches the model)."""

    name: str = "cas-register"

    def step(self, state: State, op: Operation) -> Iterable[State]:
        if _fname(op.f) != "cas":
            return super().step(state, op)
        arg = argument(op)
        try:
            expected, new = arg
        except (TypeError, ValueError):
            raise ValueError(f"cas-register: cas value must be [expected, new], got {arg!r}") from None
        expected = self.initial if expected is None else freeze(expected)
        matches = expected == state
        known, _ = output(op)
        if known:
            return [freeze(new)] if matches else []
        return [freeze(new)] if matches else [state]


def _micro(m: Any) -> tuple[str, Hashable, Any]:
    try:
        f, k, v = m
    except (TypeError, ValueError):
        raise ValueError(f"multi-register: a micro-op must be [f, key, value], got {m!r}") from None
    fn = _fname(f)
    if fn in ("r", "read"):
        return "r", freeze(k), v
    if fn in ("w", "write"):
        return "w", freeze(k), v
    raise ValueError(f"multi-register: unknown micro-op {f!r}")


class MultiRegister(BaseModel):
    """Registers x, y, ... read and written together: op value is a list of
    micro-ops ["r", "x", None] / ["w", "y", 2] (also "read"/":read" and
    Jepsen's keyword forms); an `ok` completion carries the values read.
    State: a frozenset of (key, value). Unwritten keys read as `initial`
    (a dict per key, or one value for every key). Not partitioned: one
    transaction spans keys."""

    name: str = "multi-register"

    def __init__(self, initial: Any = None) -> None:
        self.default: Hashable = None
        if isinstance(initial, dict):
            super().__init__({freeze(k): freeze(v) for k, v in initial.items()})
        else:
            super().__init__({})
            self.default = freeze(initial)

    def init(self) -> State:
        return frozenset(self.initial.items())

    def _get(self, regs: dict[Hashable, Hashable], k: Hashable) -> Hashable:
        if k in regs:
            return regs[k]
        return self.default

    def step(self, state: State, op: Operation) -> Iterable[State]:
        assert isinstance(state, frozenset)
        known, out = output(op)
        txn = out if known else argument(op)
        if txn is None:
            txn = ()
        if not isinstance(txn, list | tuple):
            raise ValueError(f"multi-register: op value must be a list of micro-ops, got {txn!r}")
        regs = dict(state)
        for m in txn:
            f, k, v = _micro(m)
            if f == "w":
                regs[k] = freeze(v)
            elif known:
                cur = self._get(regs, k)
                if v is None and k not in self.initial:
                    v = self.default
                if freeze(v) != cur:
                    return []
        return [frozenset(regs.items())]

    def describe(self, state: State) -> str:
        assert isinstance(state, frozenset)
        items = sorted(state, key=repr)
        return "{" + ", ".join(f"{k}={v!r}" for k, v in items) + "}"

    def explain(self, op: Operation) -> str:
        known, out = output(op)
        txn = out if known else argument(op)
        return f"transaction {freeze(txn)!r} by process {op.process}"

    def impossible(self, op: Operation, states: Sequence[str]) -> str:
        return f"the registers can only hold {_or(states)} here"


class KV(BaseModel):
    """A key-value store of strings: get / put / append with `op.key`; a
    missing key reads as "". Partitioned by key (the state is a frozenset of
    (key, value) so it stays right without partitioning too)."""

    name: str = "kv"

    def init(self) -> State:
        if isinstance(self.initial, dict):
            return frozenset((freeze(k), str(v)) for k, v in self.initial.items() if v)
        return frozenset()

    def partition(self, op: Operation) -> Hashable:
        return freeze(op.key)

    def step(self, state: State, op: Operation) -> Iterable[State]:
        assert isinstance(state, frozenset)
        f = _fname(op.f)
        k = freeze(op.key)
        cur = ""
        for kk, vv in state:
            if kk == k:
                cur = vv
                break
        if f in ("get", "read"):
            known, out = output(op)
            if not known:
                return [state]
            return [state] if (out or "") == cur else []
        if f in ("put", "write"):
            new = str(argument(op) or "")
        elif f == "append":
            new = cur + str(argument(op) or "")
        else:
            raise ValueError(f"kv: unknown operation {op.f!r}")
        rest = frozenset((kk, vv) for kk, vv in state if kk != k)
        return [rest | {(k, new)}] if new else [rest]

    def describe(self, state: State) -> str:
        assert isinstance(state, frozenset)
        if len(state) <= 1:
            return repr(next(iter(state))[1]) if state else "''"
        return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in sorted(state, key=repr)) + "}"

    def explain(self, op: Operation) -> str:
        f = _fname(op.f)
        known, out = output(op)
        if f in ("get", "read"):
            what = f"get of {(out or '')!r}" if known else "get"
        else:
            what = f"{f} of {argument(op)!r}"
        return f"{what} on key {op.key!r} by process {op.process}"

    def impossible(self, op: Operation, states: Sequence[str]) -> str:
        return f"the key can only hold {_or(states)} here"


class SetModel(BaseModel):
    """A grow-only set: add(v); read returns the whole set as a list."""

    name: str = "set"

    def init(self) -> State:
        return frozenset(freeze(v) for v in (self.initial or ()))

    def partition(self, op: Operation) -> Hashable:
        return freeze(op.key)  # a set per key (a cart per key); one set when ops have no key

    def step(self, state: State, op: Operation) -> Iterable[State]:
        assert isinstance(state, frozenset)
        f = _fname(op.f)
        if f == "add":
            return [state | {freeze(argument(op))}]
        if f == "read":
            known, out = output(op)
            if not known:
                return [state]
            return [state] if frozenset(freeze(v) for v in (out or ())) == state else []
        raise ValueError(f"set: unknown operation {op.f!r}")

    def describe(self, state: State) -> str:
        assert isinstance(state, frozenset)
        return "{" + ", ".join(repr(v) for v in sorted(state, key=repr)) + "}"


class Mutex(BaseModel):
    """A lock: acquire (only when free) and release (only when held)."""

    name: str = "mutex"

    def init(self) -> State:
        return bool(self.initial)

    def step(self, state: State, op: Operation) -> Iterable[State]:
        f = _fname(op.f)
        if f == "acquire":
            return [] if state else [True]
        if f == "release":
            return [False] if state else []
        raise ValueError(f"mutex: unknown operation {op.f!r}")

    def describe(self, state: State) -> str:
        return "held" if state else "free"

    def explain(self, op: Operation) -> str:
        return f"{_fname(op.f)} by process {op.process}"

    def impossible(self, op: Operation, states: Sequence[str]) -> str:
        return f"the mutex can only be {_or(states)} here"


class Queue(BaseModel):
    """A FIFO queue: enqueue(v); dequeue returns the oldest value (None when
    empty). Herlihy & Wing's running example."""

    name: str = "queue"

    def init(self) -> State:
        return tuple(freeze(v) for v in (self.initial or ()))

    def step(self, state: State, op: Operation) -> Iterable[State]:
        assert isinstance(state, tuple)
        f = _fname(op.f)
        if f in ("enqueue", "enq"):
            return [(*state, freeze(argument(op)))]
        if f in ("dequeue", "deq"):
            known, out = output(op)
            if not state:
                return [state] if not known or out is None else []
            if not known:
                return [state, state[1:]]  # it may or may not have taken the head
            return [state[1:]] if freeze(out) == state[0] else []
        raise ValueError(f"queue: unknown operation {op.f!r}")

    def describe(self, state: State) -> str:
        assert isinstance(state, tuple)
        return "[" + ", ".join(repr(v) for v in state) + "]" if state else "empty"


MODELS: dict[str, Callable[[Any], Model]] = {
    "register": Register,
    "cas-register": CasRegister,
    "multi-register": MultiRegister,
    "kv": KV,
    "set": SetModel,
    "mutex": Mutex,
    "queue": Queue,
}


def model(name: str, initial: Any = None) -> Model:
    """A model by name, with this initial value; ValueError lists the names."""
    try:
        return MODELS[name](initial)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(sorted(MODELS))}") from None
