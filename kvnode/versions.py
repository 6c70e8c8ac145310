"""Versions of one key's value, and how replicas reconcile them.

Two resolutions, chosen per cluster (`resolver("dvv" | "lww", ...)`); the
coordinator works through the `Resolver` protocol and does not care which:

**dvv** (the default): dotted version vectors with siblings, as Riak does it
since 2.0 (Preguiça, Baquero, Almeida, Fonte, Gonçalves, "Dotted Version
Vectors: Efficient Causality Tracking for Distributed Key-Value Stores"). A
key's state is a `SiblingSet`: the values not yet superseded, each tagged
with the `Dot` (node, counter) of the put that wrote it, and one causal
context, a `VersionVector` covering every dot this replica has seen for the
key. A read returns every sibling's value and the context, opaque bytes to the
client. A put with a context replaces exactly the siblings whose dots the
context covers (the values the client saw, and their ancestors) and stands
beside the rest as a sibling; a put without one covers nothing, so it is
concurrent with every stored value. Replicas merge by keeping a sibling that
both hold, or that one holds and the other has not seen. Because each value's
dot is tested on its own, there are never false siblings (one value causally
older than another in the same read) and no sibling explosion.

The compact context (one counter per node, not a set of dots) is sound
because of two rules the coordinator must keep:

- The node named in `update` issues the new dot on its own stored copy of
  the key, which holds (in its context) every dot it issued for that key
  before; it then stores the result and sends the *whole* new `SiblingSet` to
  the replicas, which `merge` it. A node that does not store the key forwards
  the put to one that does (Riak does the same). The new counter also exceeds
  the client's context for that node, so a copy that lost data does not
  reissue a dot the client has seen.
- Every replica change is `update` or `merge`; siblings are never edited.

**lww**: last write wins. One value per key, an `LwwRegister`: the value with
the greatest (wall-clock nanoseconds read by the coordinator, coordinator node
id) stamp; merge keeps the greater. The wall clock is read through
`kvnode.clock.Clock.wall_ns` only, so a skewed clock (libfaketime) skews
exactly these stamps, and writes it loses are lost: that is the anomaly the
harness must find. Contexts are accepted and ignored.

**Deletes** are tombstones: an update with value `None` (and, for dvv, a
context). A delete concurrent with a write leaves the write as a sibling.
Tombstones are kept, not removed, here: removing one is safe only once all N
replicas hold it (otherwise a replica that missed the delete resurrects the
value on the next merge), and that is for anti-entropy to establish later.
`is_tombstone_only()` says which states are candidates.

**Limits**: an update that would leave more than `max_siblings` siblings
(100 by default) raises `TooManySiblings`, and nothing is written. Merges never
raise: replicas must converge whatever their clients did.

Encodings (msgpack; what the storage engine stores and replicas exchange) are
tagged with the resolution, so a node started with the wrong one fails loudly
instead of misreading data; malformed bytes raise ValueError.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgpack

from .clock import Clock

__all__ = [
    "DEFAULT_MAX_SIBLINGS",
    "RESOLUTIONS",
    "Dot",
    "DvvResolver",
    "LwwRegister",
    "LwwResolver",
    "Resolver",
    "Sibling",
    "SiblingSet",
    "Stamp",
    "TooManySiblings",
    "VersionVector",
    "Versioned",
    "resolver",
]

DEFAULT_MAX_SIBLINGS = 100
RESOLUTIONS = ("dvv", "lww")
_FORMAT = 1
_T = TypeVar("_T")


class TooManySiblings(Exception):
    """A put would leave more than the allowed number of siblings for a key.

    Nothing was written. The client should read, resolve the siblings, and put
    with the read's context."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(
            f"the put would leave {count} siblings, more than the limit of {limit}: "
            "read the key and put with its context to resolve them"
        )
        self.count = count
        self.limit = limit


# -- small validation helpers ---------------------------------------------


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_node(node: object) -> str:
    if not isinstance(node, str) or not node:
        raise ValueError(f"a node id must be a non-empty string, got {node!r}")
    return node


def _check_value(value: object) -> bytes | None:
    if value is not None and not isinstance(value, bytes):
        raise ValueError(
            f"a value must be bytes (or None for a delete), got {type(value).__name__}"
        )
    return value


def _unpack(data: object, what: str) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"{what} must be bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on bad input
        raise ValueError(f"malformed {what}: {type(e).__name__}: {e}") from None


def _short(obj: object) -> str:
    """A repr fit for an error message (a value may be megabytes)."""
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _pack(obj: Any) -> bytes:
    packed = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(packed, bytes)
    return packed


def _check_max_siblings(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"max_siblings must be a positive integer, got {limit!r}")
    return limit


# -- dots and version vectors ---------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True, order=True)
class Dot:
    """One put's identity: the coordinating node and its counter for the key."""

    node: str
    counter: int

    def __post_init__(self) -> None:
        _check_node(self.node)
        if not _is_int(self.counter) or self.counter < 1:
            raise ValueError(f"a dot's counter must be a positive integer, got {self.counter!r}")


class VersionVector(Mapping[str, int]):
    """An immutable map node -> counter; it covers dot (n, c) when its counter
    for n is at least c. Nodes it does not name count as 0. Equal vectors are
    equal and hash alike whatever order they were built in."""

    __slots__ = ("_counters",)

    _counters: dict[str, int]

    def __init__(self, counters: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = counters.items() if isinstance(counters, Mapping) else counters
        result: dict[str, int] = {}
        for node, counter in items:
            _check_node(node)
            if not _is_int(counter) or counter < 0:
                raise ValueError(f"a counter must be a non-negative integer, got {counter!r}")
            if node in result:
                raise ValueError(f"node {node!r} appears twice in a version vector")
            if counter:  # a zero says nothing; dropping it keeps equality structural
                result[node] = counter
        self._counters = dict(sorted(result.items()))

    def __getitem__(self, node: str) -> int:
        return self._counters[node]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counters)

    def __len__(self) -> int:
        return len(self._counters)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return self._counters == other._counters

    def __hash__(self) -> int:
        return hash(tuple(self._counters.items()))

    def __repr__(self) -> str:
        return f"VersionVector({self._counters!r})"

    def counter(self, node: str) -> int:
        """The counter for `node` (0 when absent)."""
        return self._counters.get(node, 0)

    def covers(self, dot: Dot) -> bool:
        """Whether the put `dot` is among those this vector has seen."""
        return self._counters.get(dot.node, 0) >= dot.counter

    def descends(self, other: VersionVector) -> bool:
        """Whether this vector has seen everything `other` has (>=)."""
        return all(self._counters.get(n, 0) >= c for n, c in other._counters.items())

    def dominates(self, other: VersionVector) -> bool:
        """Whether this vector has seen strictly more than `other` (>)."""
        return self != other and self.descends(other)

    def concurrent(self, other: VersionVector) -> bool:
        """Whether neither vector descends from the other."""
        return not self.descends(other) and not other.descends(self)

    def merge(self, other: VersionVector) -> VersionVector:
        """The least vector that descends from both (pointwise max)."""
        joined = dict(self._counters)
        for n, c in other._counters.items():
            if c > joined.get(n, 0):
                joined[n] = c
        return VersionVector(joined)

    def add(self, dot: Dot) -> VersionVector:
        """This vector, also covering `dot` (and its node's earlier dots)."""
        if self.covers(dot):
            return self
        return VersionVector({**self._counters, dot.node: dot.counter})

    def _pairs(self) -> list[list[Any]]:
        return [[n, c] for n, c in self._counters.items()]

    @classmethod
    def _from_pairs(cls, pairs: Any, what: str) -> VersionVector:
        if not isinstance(pairs, list):
            raise ValueError(f"malformed {what}: expected a list of [node, counter] pairs")
        entries: list[tuple[str, int]] = []
        for pair in pairs:
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not isinstance(pair[0], str)
                or not _is_int(pair[1])
                or pair[1] < 1
            ):
                raise ValueError(f"malformed {what}: bad entry {_short(pair)}")
            entries.append((pair[0], pair[1]))
        try:
            return cls(entries)
        except ValueError as e:
            raise ValueError(f"malformed {what}: {e}") from None

    def encode(self) -> bytes:
        """The vector as bytes: the opaque context a client gets and gives back."""
        return _pack(self._pairs())

    @classmethod
    def decode(cls, data: bytes) -> VersionVector:
        """The vector `encode` made; ValueError for anything else."""
        return cls._from_pairs(_unpack(data, "context"), "context")


# -- states of one key ------------------------------------------------------

_EMPTY_VV = VersionVector()


class Versioned(Protocol):
    """What one replica stores for one key, whatever the resolution."""

    def values(self) -> list[bytes]:
        """The live values a read returns (tombstones left out), in a fixed order."""
        ...

    def client_context(self) -> bytes | None:
        """The opaque context a read returns with them (None: nothing to pass back)."""
        ...

    def is_tombstone_only(self) -> bool:
        """Whether the key was written and every surviving version is a delete."""
        ...

    def encode(self) -> bytes:
        """The state as bytes for the storage engine and for replicas."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class Sibling:
    """One concurrent version: the dot of its put and its value (None: a tombstone)."""

    dot: Dot
    value: bytes | None

    def __post_init__(self) -> None:
        _check_value(self.value)


@dataclass(frozen=True, kw_only=True, slots=True)
class SiblingSet:
    """A key's DVV state: the siblings, sorted by dot, and the causal context
    `vv` (covers every sibling's dot, and the dots they superseded)."""

    siblings: tuple[Sibling, ...] = ()
    vv: VersionVector = _EMPTY_VV

    def __post_init__(self) -> None:
        siblings = tuple(sorted(self.siblings, key=lambda s: s.dot))
        for a, b in itertools.pairwise(siblings):
            if a.dot == b.dot:
                raise ValueError(f"dot {a.dot} appears twice in a sibling set")
        for s in siblings:
            if not self.vv.covers(s.dot):
                raise ValueError(f"a sibling set's context {self.vv!r} does not cover {s.dot}")
        object.__setattr__(self, "siblings", siblings)

    def values(self) -> list[bytes]:
        return [s.value for s in self.siblings if s.value is not None]

    def context(self) -> VersionVector:
        """The causal context: what a put made after reading this state has seen."""
        return self.vv

    def client_context(self) -> bytes | None:
        return self.vv.encode() if self.vv else None

    def is_tombstone_only(self) -> bool:
        return bool(self.siblings) and all(s.value is None for s in self.siblings)

    def update(
        self,
        context: VersionVector | None,
        value: bytes | None,
        node: str,
        *,
        max_siblings: int = DEFAULT_MAX_SIBLINGS,
        floor: int = 0,
    ) -> SiblingSet:
        """The state after a put (or, with value None, a delete) coordinated by
        `node` on this, its own stored copy: the new value gets dot (node, c+1),
        c the greatest of `node`'s counter in this state's context, in the
        client's, and `floor` (see `DvvResolver.incarnation`); siblings whose
        dots `context` covers are dropped, the others stay beside the new one.
        No context (a blind put) drops nothing.
        Raises TooManySiblings if more than `max_siblings` would remain."""
        _check_node(node)
        _check_value(value)
        _check_max_siblings(max_siblings)
        ctx = context if context is not None else VersionVector()
        dot = Dot(node=node, counter=max(self.vv.counter(node), ctx.counter(node), floor) + 1)
        kept = [s for s in self.siblings if not ctx.covers(s.dot)]
        if len(kept) + 1 > max_siblings:
            raise TooManySiblings(len(kept) + 1, max_siblings)
        return SiblingSet(
            siblings=(*kept, Sibling(dot=dot, value=value)),
            vv=self.vv.merge(ctx).add(dot),
        )

    def merge(self, other: SiblingSet) -> SiblingSet:
        """The state of a replica that has seen both: a sibling survives if
        both hold it, or if one holds it and the other's context does not
        cover it (the other has not seen it, rather than superseded it).
        Commutative, associative and idempotent."""
        if not isinstance(other, SiblingSet):
            raise TypeError(f"cannot merge a SiblingSet with {type(other).__name__}")
        mine = {s.dot: s for s in self.siblings}
        theirs = {s.dot: s for s in other.siblings}
        result: list[Sibling] = []
        for dot, s in mine.items():
            t = theirs.get(dot)
            if t is not None:
                # Dots are unique, so both hold the same value; should a
                # broken invariant (a reissued dot) make them differ, pick the
                # same one on every replica so that merge stays commutative.
                result.append(s if _value_key(s.value) >= _value_key(t.value) else t)
            elif not other.vv.covers(dot):
                result.append(s)
        result.extend(t for dot, t in theirs.items() if dot not in mine and not self.vv.covers(dot))
        return SiblingSet(siblings=tuple(result), vv=self.vv.merge(other.vv))

    def encode(self) -> bytes:
        return _pack(
            [
                "dvv",
                _FORMAT,
                self.vv._pairs(),
                [[s.dot.node, s.dot.counter, s.value] for s in self.siblings],
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> SiblingSet:
        """The state `encode` made; ValueError for anything else."""
        obj = _unpack(data, "dvv sibling set")
        _check_tag(obj, "dvv", 4)
        vv = VersionVector._from_pairs(obj[2], "dvv sibling set context")
        if not isinstance(obj[3], list):
            raise ValueError("malformed dvv sibling set: siblings must be a list")
        siblings = []
        for entry in obj[3]:
            if (
                not isinstance(entry, list)
                or len(entry) != 3
                or not isinstance(entry[0], str)
                or not _is_int(entry[1])
                or not (entry[2] is None or isinstance(entry[2], bytes))
            ):
                raise ValueError(f"malformed dvv sibling set: bad sibling {_short(entry)}")
            try:
                siblings.append(Sibling(dot=Dot(node=entry[0], counter=entry[1]), value=entry[2]))
            except ValueError as e:
                raise ValueError(f"malformed dvv sibling set: {e}") from None
        try:
            return cls(siblings=tuple(siblings), vv=vv)
        except ValueError as e:
            raise ValueError(f"malformed dvv sibling set: {e}") from None


def _value_key(value: bytes | None) -> tuple[bool, bytes]:
    """A total order on values, a tombstone lowest: the last tie-break."""
    return (value is not None, value or b"")


def _check_tag(obj: Any, tag: str, length: int) -> None:
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise ValueError(f"malformed {tag} state: not a tagged list")
    if obj[0] != tag:
        raise ValueError(
            f"stored state uses resolution {obj[0]!r}, but this node reads {tag!r}: "
            "was the cluster restarted with another resolution?"
        )
    if len(obj) != length or obj[1] != _FORMAT:
        raise ValueError(f"malformed {tag} state: unknown format or wrong length")


@dataclass(frozen=True, kw_only=True, slots=True, order=True)
class Stamp:
    """An LWW version's rank: wall-clock nanoseconds, then the node id."""

    wall_ns: int
    node: str

    def __post_init__(self) -> None:
        if not _is_int(self.wall_ns):
            raise ValueError(f"a timestamp must be an integer, got {self.wall_ns!r}")
        _check_node(self.node)


@dataclass(frozen=True, kw_only=True, slots=True)
class LwwRegister:
    """A key's LWW state: the winning value (None: a tombstone) and its stamp;
    stamp None means never written."""

    value: bytes | None = None
    stamp: Stamp | None = None

    def __post_init__(self) -> None:
        _check_value(self.value)
        if self.stamp is None and self.value is not None:
            raise ValueError("an LWW value needs a stamp")

    def _rank(self) -> tuple[bool, int, str, tuple[bool, bytes]]:
        # (stamp, node) decides; equal stamps (one node, one clock tick) fall
        # back to the value so that merge stays commutative.
        if self.stamp is None:
            return (False, 0, "", (False, b""))
        return (True, self.stamp.wall_ns, self.stamp.node, _value_key(self.value))

    def values(self) -> list[bytes]:
        return [] if self.value is None else [self.value]

    def client_context(self) -> bytes | None:
        return None

    def is_tombstone_only(self) -> bool:
        return self.stamp is not None and self.value is None

    def update(self, value: bytes | None, node: str, wall_ns: int) -> LwwRegister:
        """The state after a put (value None: a delete) stamped (wall_ns, node)
        by its coordinator: the new version if it ranks above this one, else
        this one (the put is lost, as LWW loses it)."""
        _check_node(node)
        return self.merge(
            LwwRegister(value=_check_value(value), stamp=Stamp(wall_ns=wall_ns, node=node))
        )

    def merge(self, other: LwwRegister) -> LwwRegister:
        """The greater of the two. Commutative, associative and idempotent."""
        if not isinstance(other, LwwRegister):
            raise TypeError(f"cannot merge an LwwRegister with {type(other).__name__}")
        return self if self._rank() >= other._rank() else other

    def encode(self) -> bytes:
        if self.stamp is None:
            return _pack(["lww", _FORMAT, None, None, None])
        return _pack(["lww", _FORMAT, self.stamp.wall_ns, self.stamp.node, self.value])

    @classmethod
    def decode(cls, data: bytes) -> LwwRegister:
        """The state `encode` made; ValueError for anything else."""
        obj = _unpack(data, "lww register")
        _check_tag(obj, "lww", 5)
        wall_ns, node, value = obj[2], obj[3], obj[4]
        if wall_ns is None and node is None and value is None:
            return cls()
        if not _is_int(wall_ns) or not isinstance(node, str):
            raise ValueError("malformed lww register: bad stamp")
        if value is not None and not isinstance(value, bytes):
            raise ValueError("malformed lww register: the value must be bytes or nil")
        try:
            return cls(value=value, stamp=Stamp(wall_ns=wall_ns, node=node))
        except ValueError as e:
            raise ValueError(f"malformed lww register: {e}") from None


# -- the strategy the coordinator uses -------------------------------------


class Resolver(Protocol):
    """How a cluster versions and reconciles a key's values. One per node,
    made at start-up from the cluster's `resolution` setting; stateless, so
    safe to share. The methods never touch storage or the network."""

    @property
    def name(self) -> str:
        """The resolution: "dvv" or "lww"."""
        ...

    def decode(self, data: bytes | None) -> Versioned:
        """A replica's stored state from its bytes (None: the key is absent).
        Raises ValueError for bytes this resolution did not encode."""
        ...

    def update(
        self, state: Versioned, *, context: bytes | None, value: bytes | None, node: str
    ) -> Versioned:
        """Called by the coordinator `node` on its own copy, once per client
        put (value None: delete), before anything is sent: the state to store
        and send to the replicas. Raises ValueError for a malformed context
        (a bad request) and TooManySiblings; nothing is written then."""
        ...

    def merge(self, a: Versioned, b: Versioned) -> Versioned:
        """Called when a replica receives a state, and when a read combines
        replies: the state that has seen both. Never raises for valid states."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class DvvResolver:
    """Dotted version vectors with siblings (see the module docstring).

    `incarnation` (the node's generation, raised at every restart) puts a
    floor under the dots this node issues: `incarnation << 32`. A coordinator
    sends a new state to the other replicas while it fsyncs its own copy; if
    it dies in between, the others hold a dot that its own copy never stored,
    and after the restart it would issue that dot again for another value,
    which replicas then take for the one they have (the harness found
    acknowledged writes lost so). With the floor, every dot issued after a
    restart exceeds every dot issued before it."""

    max_siblings: int = DEFAULT_MAX_SIBLINGS
    incarnation: int = 0

    def __post_init__(self) -> None:
        _check_max_siblings(self.max_siblings)

    @property
    def name(self) -> str:
        return "dvv"

    def decode(self, data: bytes | None) -> SiblingSet:
        return SiblingSet() if data is None else SiblingSet.decode(data)

    def update(
        self, state: Versioned, *, context: bytes | None, value: bytes | None, node: str
    ) -> SiblingSet:
        ctx = None if context is None else VersionVector.decode(context)
        return _as(state, SiblingSet).update(ctx, value, node, max_siblings=self.max_siblings,
                                             floor=self.incarnation << 32)

    def merge(self, a: Versioned, b: Versioned) -> SiblingSet:
        return _as(a, SiblingSet).merge(_as(b, SiblingSet))


@dataclass(frozen=True, kw_only=True, slots=True)
class LwwResolver:
    """Last write wins by (coordinator wall clock, node id); contexts ignored."""

    clock: Clock

    @property
    def name(self) -> str:
        return "lww"

    def decode(self, data: bytes | None) -> LwwRegister:
        return LwwRegister() if data is None else LwwRegister.decode(data)

    def update(
        self, state: Versioned, *, context: bytes | None, value: bytes | None, node: str
    ) -> LwwRegister:
        del context  # LWW orders by timestamp alone; a context changes nothing
        return _as(state, LwwRegister).update(value, node, self.clock.wall_ns())

    def merge(self, a: Versioned, b: Versioned) -> LwwRegister:
        return _as(a, LwwRegister).merge(_as(b, LwwRegister))


def _as(state: object, kind: type[_T]) -> _T:
    if not isinstance(state, kind):
        raise TypeError(f"expected a {kind.__name__}, got {type(state).__name__}")
    return state


def resolver(
    resolution: str, *, clock: Clock, max_siblings: int = DEFAULT_MAX_SIBLINGS, incarnation: int = 0
) -> Resolver:
    """The resolver for a cluster's `resolution` setting ("dvv" or "lww").
    `clock` stamps LWW versions; `max_siblings` limits DVV puts;
    `incarnation` (the node's generation) floors DVV dots."""
    if resolution == "dvv":
        return DvvResolver(max_siblings=max_siblings, incarnation=incarnation)
    if resolution == "lww":
        return LwwResolver(clock=clock)
    raise ValueError(f"unknown resolution {resolution!r}: expected one of {', '.join(RESOLUTIONS)}")
