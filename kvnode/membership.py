"""Gossip membership and failure detection, without a central detector.

The membership table
--------------------
Each node keeps, per node id it knows (itself included), an `Entry`:

- `address` ("host:port"),
- `generation`: raised and persisted at every start of that node
  (`load_and_bump_generation`), so a restart is told apart from a pause,
- `heartbeat`: a counter the node raises at every gossip round,
- `status` as the node itself announced it: "alive", "leaving" or "left",

and, locally, the monotonic time at which that node's (generation, heartbeat)
last rose in this table. Only a node itself changes its own entry; everyone
else only copies it around.

Merge rule: per node, keep the entry with the higher (generation, heartbeat)
(ties, which a well-behaved cluster never produces with different contents,
are broken by status, then address, so that merging is a true maximum:
commutative, associative and idempotent). Adopting a strictly higher
(generation, heartbeat) is a sign of life; a higher generation in particular
brings a node that was dead back to alive at once (it restarted).

A node that hears a version of *itself* at least as high as its own (its data
directory was wiped, or the generation file lost, while peers remember an
older incarnation) jumps its heartbeat past it, so peers accept its entries
again instead of ignoring them forever.

Failure detection: fixed timeouts, not phi-accrual
--------------------------------------------------
A node is `alive` while its heartbeat last rose less than `suspect_after`
seconds ago (on this node's monotonic clock), `suspect` until `dead_after`,
and `dead` after that. `state()` computes this from the clock on every call.

Why timeouts rather than a phi-accrual detector (Cassandra's, threshold 8):
the harness asserts that a paused node is detected "within the configured
bounds", and with timeouts the bounds are the configuration. Phi-accrual's
bound moves with the inter-arrival history it has seen, and heartbeats that
arrive second-hand through gossip make that history lumpy; with Cassandra's
exponential model, phi > 8 is anyway a timeout of about 18.4 mean
intervals, just one that drifts. The price: on a slow or lossy network the
timeouts must be set with margin (a few gossip intervals for suspect_after).

The bounds, precisely. A node X that stops (SIGSTOP) is:
- never suspect at another node Y sooner than `suspect_after` after X's last
  heartbeat reached Y, and never dead sooner than `dead_after`;
- while Y keeps gossiping (every `interval`), suspect at Y by `suspect_after +
  delay` and dead by `dead_after + delay` after X stopped, where `delay` is
  how stale X's last heartbeat was when it reached Y (in a connected cluster
  of n nodes, O(log n) gossip rounds; about one round with the default fanout
  of 3 and five nodes), plus one `interval` for the change to be reported to
  `on_change` listeners, which happens at each `tick` and `handle`.
- alive again as soon as a higher heartbeat (SIGCONT) or generation (a
  restart) reaches Y.

A node Y has never heard from (a configured peer, not yet gossiped with)
counts as heard from when Y's gossiper was created: it is alive for the first
`suspect_after` seconds, then suspect and dead like any silent node.

Peer selection (`tick`): up to `fanout` random peers not known as dead (nor
"left"); with probability dead/(live+1), one random dead node too, so a
recovered node is found again (Cassandra's rule); and one random seed when no
live peer is known, or with probability seeds/(live+dead+1), so that a new
node finds the cluster and the cluster never splits into two logical rings.

Each exchange is push-pull: the request carries this node's whole table; the
receiver merges it and answers with the entries it holds that are newer than
(or missing from) the request, which the sender merges in turn.

Ring state
----------
The gossip also carries an optional, opaque ring state: an `epoch` (int) and
a dict (`Ring.to_dict()`, for instance). The higher epoch wins; equal epochs
with different rings are broken by their canonical JSON, so every node picks
the same one (but whoever changes the ring should not do it concurrently).
`set_ring` installs a new one locally; `on_ring` listeners hear of every ring
adopted from gossip.

Wire format: see `SCHEMA` (merge it into `protocol.SCHEMA`; `gossip` is a peer
request). Members travel as a list of maps {node, address, generation,
heartbeat, status}.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from .clock import Clock
from .config import ConfigError
from .log import EventLog
from .rng import Random
from .storage.fs import FileSystem, OSFileSystem

__all__ = [
    "GENERATION_FILE",
    "SCHEMA",
    "Entry",
    "GenerationError",
    "GossipSettings",
    "Gossiper",
    "MembershipTable",
    "Requester",
    "fresh_generation",
    "load_and_bump_generation",
    "merge_tables",
    "read_generation",
]

State = Literal["alive", "suspect", "dead"]
Status = Literal["alive", "leaving", "left"]
STATES: tuple[State, ...] = ("alive", "suspect", "dead")
STATUSES: tuple[Status, ...] = ("alive", "leaving", "left")
_STATUS_RANK = {s: i for i, s in enumerate(STATUSES)}

_STR = (str,)
_INT = (int,)
_LIST = (list,)
_OPT_DICT = (dict, type(None))

# Message types to merge into `protocol.SCHEMA`. `gossip` is a peer request
# (add it to protocol.REQUESTS and PEER_REQUESTS); `gossip_ok` is its reply.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "gossip": {"from": _STR, "members": _LIST, "ring_epoch": _INT, "ring": _OPT_DICT},
    "gossip_ok": {"from": _STR, "members": _LIST, "ring_epoch": _INT, "ring": _OPT_DICT},
}


# ------------------------------------------------------------ generation file

GENERATION_FILE = "GENERATION"
_GENERATION_FORMAT = 1


class GenerationError(RuntimeError):
    """The generation file exists but does not hold a generation."""


def read_generation(data_dir: str, *, fs: FileSystem | None = None) -> int | None:
    """The generation stored in `data_dir`, or None if there is none yet.
    Raises GenerationError for a file that is there but not a generation
    file (see `load_and_bump_generation`)."""
    fs = fs or OSFileSystem()
    path = f"{data_dir.rstrip('/')}/{GENERATION_FILE}"
    if not fs.exists(path):
        return None
    raw = fs.read_all(path)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    generation = data.get("generation") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != _GENERATION_FORMAT
        or not isinstance(generation, int)
        or isinstance(generation, bool)
        or generation < 1
    ):
        raise GenerationError(
            f"{path} does not hold a generation ({len(raw)} bytes: {raw[:40]!r}). It is only ever "
            "replaced atomically, so this is damage from outside kvnode. Remove the file to start "
            "again from generation 1: peers that remember a higher one make this node jump past it."
        )
    return generation


# Generations of a fresh data directory count from the wall clock's seconds
# since this moment (2020-09-13), so that they fit in 32 bits for a century.
FRESH_EPOCH_S = 1_600_000_000


def fresh_generation(wall_ns: int) -> int:
    """The first generation of a node whose data directory holds none: its
    wall clock's seconds since `FRESH_EPOCH_S` (at least 1).

    Not 1: a node whose disk was replaced (or wiped) starts on an empty
    directory, and the dots it issues must still exceed every dot its former
    self issued, which the other replicas hold (the generation is the floor
    of its dots: `DvvResolver.incarnation`). Its former self counted
    generations up from a fresh start of its own, one per restart; the clock
    has moved on by more seconds than that since, unless it was set back."""
    return max(1, wall_ns // 1_000_000_000 - FRESH_EPOCH_S)


def load_and_bump_generation(data_dir: str, *, fs: FileSystem | None = None, first: int = 1) -> int:
    """Called once at every start of the node, before it gossips: read the
    generation stored in `data_dir` and add one (none stored: `first`, see
    `fresh_generation`), store it durably and return it.

    The file is replaced atomically (write a temporary file, fsync it, rename
    it over the old one, fsync the directory), so a crash at any point leaves
    the old generation or the new one, never a torn file, and a generation
    this returned is never returned again. A file that is present but is not
    a generation file is a clear error (GenerationError), not a silent reset:
    it can only come from damage from outside, which the operator should see.
    """
    fs = fs or OSFileSystem()
    directory = data_dir.rstrip("/") or "/"
    fs.makedirs(directory)
    stored = read_generation(directory, fs=fs)
    generation = max(1, first) if stored is None else stored + 1
    path = f"{directory}/{GENERATION_FILE}"
    tmp = f"{path}.tmp"
    body = json.dumps({"format": _GENERATION_FORMAT, "generation": generation}) + "\n"
    f = fs.create(tmp)
    try:
        f.write(body.encode("utf-8"))
        f.sync()
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync_dir(directory)
    return generation


# --------------------------------------------------------------- the table


@dataclass(frozen=True, kw_only=True, slots=True)
class Entry:
    """What the cluster knows of one node, as that node announced it."""

    address: str
    generation: int
    heartbeat: int
    status: Status = "alive"

    @property
    def version(self) -> tuple[int, int]:
        return (self.generation, self.heartbeat)

    def order(self) -> tuple[int, int, int, str]:
        """The total order the merge takes the maximum of."""
        return (self.generation, self.heartbeat, _STATUS_RANK[self.status], self.address)

    def to_wire(self, node: str) -> dict[str, Any]:
        return {"node": node, "address": self.address, "generation": self.generation,
                "heartbeat": self.heartbeat, "status": self.status}

    @staticmethod
    def from_wire(item: object) -> tuple[str, Entry]:
        """(node id, entry) from one element of a `members` list; ValueError
        if it is not a well-formed entry."""
        if not isinstance(item, dict):
            raise ValueError(f"a member must be a map, not {type(item).__name__}")
        node, address, status = item.get("node"), item.get("address"), item.get("status")
        generation, heartbeat = item.get("generation"), item.get("heartbeat")
        if not isinstance(node, str) or not node:
            raise ValueError("a member needs a non-empty string 'node'")
        if not isinstance(address, str):
            raise ValueError(f"member {node!r}: 'address' must be a string")
        if status not in _STATUS_RANK:
            raise ValueError(f"member {node!r}: status must be one of {', '.join(STATUSES)}, not {status!r}")
        return node, Entry(address=address, generation=_count(node, "generation", generation),
                           heartbeat=_count(node, "heartbeat", heartbeat), status=status)


def _count(node: str, name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"member {node!r}: {name!r} must be a non-negative integer")
    return value


def merge_tables(a: Mapping[str, Entry], b: Mapping[str, Entry]) -> dict[str, Entry]:
    """The merge rule as a pure function: per node, the entry that is higher
    in (generation, heartbeat) (then status, then address)."""
    merged = dict(a)
    for node, entry in b.items():
        mine = merged.get(node)
        if mine is None or entry.order() > mine.order():
            merged[node] = entry
    return merged


@dataclass(frozen=True, kw_only=True, slots=True)
class GossipSettings:
    """How often to gossip and when a silent node is suspect, then dead.

    `timeout` is how long one exchange may take (None: `interval`)."""

    interval: float = 1.0
    fanout: int = 3
    suspect_after: float = 5.0
    dead_after: float = 10.0
    timeout: float | None = None

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ConfigError(f"gossip interval must be positive, not {self.interval}")
        if self.fanout < 1:
            raise ConfigError(f"gossip fanout must be at least 1, not {self.fanout}")
        if not 0 < self.suspect_after < self.dead_after:
            raise ConfigError(
                f"need 0 < suspect_after ({self.suspect_after}) < dead_after ({self.dead_after})")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"gossip timeout must be positive, not {self.timeout}")

    @property
    def request_timeout(self) -> float:
        return self.interval if self.timeout is None else self.timeout


class MembershipTable:
    """The entries this node knows and when each last showed a sign of life.

    Only the owning `Gossiper` changes it; `state` reads the clock each time."""

    def __init__(self, node: str, clock: Clock, settings: GossipSettings) -> None:
        self.node = node
        self._clock = clock
        self._settings = settings
        self._entries: dict[str, Entry] = {}
        self._last_rise: dict[str, float] = {}

    def __contains__(self, node: object) -> bool:
        return node in self._entries

    def get(self, node: str) -> Entry | None:
        return self._entries.get(node)

    def entries(self) -> dict[str, Entry]:
        return dict(self._entries)

    def nodes(self) -> list[str]:
        return sorted(self._entries)

    def merge(self, node: str, entry: Entry) -> bool:
        """Adopt `entry` for `node` if it is higher than ours; True if it was.
        A strictly higher (generation, heartbeat) counts as a sign of life now."""
        mine = self._entries.get(node)
        if mine is not None and entry.order() <= mine.order():
            return False
        self._entries[node] = entry
        if mine is None or entry.version > mine.version:
            self._last_rise[node] = self._clock.monotonic()
        return True

    def silence(self, node: str) -> float | None:
        """Seconds since `node`'s heartbeat last rose here (None: unknown)."""
        rose = self._last_rise.get(node)
        return None if rose is None else self._clock.monotonic() - rose

    def state(self, node: str) -> State:
        """alive / suspect / dead from the time since the last heartbeat rise.
        This node itself is always alive; a node never heard of is dead."""
        if node == self.node:
            return "alive"
        silence = self.silence(node)
        if silence is None:
            return "dead"
        if silence < self._settings.suspect_after:
            return "alive"
        if silence < self._settings.dead_after:
            return "suspect"
        return "dead"


# ------------------------------------------------------------------ gossip


class Requester(Protocol):
    """What gossip needs of a transport (`transport.Transport` has it)."""

    async def request(self, peer: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `message` to `peer`, return the reply; raises on failure
        (any exception: the gossiper counts it and goes on)."""
        ...


ChangeListener = Callable[[str, "State | None", State], None]
RingListener = Callable[[int, dict[str, Any]], None]


def _ring_key(epoch: int, ring: Mapping[str, Any] | None) -> tuple[int, str]:
    return (epoch, "" if ring is None else json.dumps(ring, sort_keys=True, default=repr))


class Gossiper:
    """One node's gossip: its membership table, its failure detector, the
    rounds it starts (`tick`, `run`) and the ones it answers (`handle`).

    Not thread-safe: use it from the node's event loop only.
    """

    def __init__(
        self,
        node: str,
        address: str,
        *,
        generation: int,
        seeds: Sequence[str],
        transport: Requester,
        clock: Clock,
        rng: Random,
        settings: GossipSettings | None = None,
        peers: Mapping[str, str] | None = None,
        log: EventLog | None = None,
    ) -> None:
        """`generation`: from `load_and_bump_generation`. `seeds`: peers to
        contact (as the transport names them) to find the cluster; they enter
        the table only once they answer. `peers`: node id -> address known
        from the configuration; they enter the table at generation 0 (so any
        real entry beats them) and count as heard from now."""
        if generation < 1:
            raise ValueError(f"a generation starts at 1, not {generation}")
        self.node = node
        self.address = address
        self.seeds = [s for s in dict.fromkeys(seeds) if s not in (node, address)]
        self.settings = settings or GossipSettings()
        self.table = MembershipTable(node, clock, self.settings)
        self._transport = transport
        self._clock = clock
        self._rng = rng
        self._log = log
        self._listeners: list[ChangeListener] = []
        self._ring_listeners: list[RingListener] = []
        self._ring_epoch = 0
        self._ring: dict[str, Any] | None = None
        self.counters: dict[str, int] = {"rounds": 0, "exchanges": 0, "failed": 0, "handled": 0}
        self.table.merge(node, Entry(address=address, generation=generation, heartbeat=0))
        for peer, peer_address in sorted((peers or {}).items()):
            if peer != node:
                self.table.merge(peer, Entry(address=peer_address, generation=0, heartbeat=0))
        self._reported: dict[str, State] = {n: self.table.state(n) for n in self.table.nodes()}
        self._generations: dict[str, int] = {n: e.generation for n, e in self.table.entries().items()}

    # ------------------------------------------------------------- queries

    @property
    def own(self) -> Entry:
        entry = self.table.get(self.node)
        assert entry is not None
        return entry

    def state(self, node: str) -> State:
        """alive / suspect / dead, now (see the module docstring)."""
        return self.table.state(node)

    def alive(self, node: str) -> bool:
        """Whether `node` is alive now and has not announced it left."""
        entry = self.table.get(node)
        return entry is not None and entry.status != "left" and self.table.state(node) == "alive"

    def view(self) -> dict[str, dict[str, Any]]:
        """For `status`: per node id, address, generation, heartbeat, status
        (as announced), state (as detected here) and silence (seconds since
        its heartbeat last rose here)."""
        out: dict[str, dict[str, Any]] = {}
        for node, e in sorted(self.table.entries().items()):
            silence = self.table.silence(node)
            out[node] = {"address": e.address, "generation": e.generation, "heartbeat": e.heartbeat,
                         "status": e.status, "state": self.table.state(node),
                         "silence": None if silence is None else round(silence, 3)}
        return out

    def ring(self) -> tuple[int, dict[str, Any] | None]:
        """The ring state this node holds: (epoch, ring dict or None)."""
        return self._ring_epoch, self._ring

    # ------------------------------------------------------------- changes

    def on_change(self, callback: ChangeListener) -> None:
        """Call `callback(node, old_state, new_state)` whenever a node's state
        as seen here changes: `old_state` is None for a node just learned of,
        and old == new == "alive" when a node restarted (its generation rose)
        without ever having been seen down. Called from `tick` and `handle`
        (so changes are reported at most one gossip interval late); it must
        not block or raise (schedule async work with `create_task`)."""
        self._listeners.append(callback)

    def on_ring(self, callback: RingListener) -> None:
        """Call `callback(epoch, ring)` when a newer ring arrives by gossip
        (not for `set_ring`). Same rules as `on_change`."""
        self._ring_listeners.append(callback)

    def set_ring(self, epoch: int, ring: dict[str, Any]) -> None:
        """Install a new ring state here, to be spread by gossip. Raises
        ValueError unless `epoch` is higher than the one held."""
        if epoch <= self._ring_epoch:
            raise ValueError(f"ring epoch {epoch} is not above the current {self._ring_epoch}")
        self._ring_epoch, self._ring = epoch, ring

    def set_status(self, status: Status) -> None:
        """Announce this node's status ("leaving", "left"); spread by gossip."""
        if status not in _STATUS_RANK:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        own = self.own
        self.table.merge(self.node, replace(own, status=status, heartbeat=own.heartbeat + 1))

    def check(self) -> None:
        """Report state changes to the listeners. `tick` and `handle` call it;
        call it yourself to notice a change between rounds."""
        for node, entry in sorted(self.table.entries().items()):
            new = self.table.state(node)
            old = self._reported.get(node)
            generation = entry.generation
            previous = self._generations.get(node, 0)  # 0: only configured, never heard from
            restarted = old is not None and 0 < previous < generation
            self._generations[node] = generation
            if new == old and not restarted:
                continue
            self._reported[node] = new
            if self._log is not None and node != self.node:
                self._log.event("member_state", member=node, old=old, new=new, generation=generation)
            for callback in list(self._listeners):
                try:
                    callback(node, old, new)
                except Exception as e:  # a listener's bug must not stop gossip
                    if self._log is not None:
                        self._log.event("listener_error", member=node, error=repr(e))

    # --------------------------------------------------------------- gossip

    def _message(self, kind: str, members: Iterable[tuple[str, Entry]], ring: bool) -> dict[str, Any]:
        return {"type": kind, "from": self.node,
                "members": [e.to_wire(n) for n, e in members],
                "ring_epoch": self._ring_epoch, "ring": self._ring if ring else None}

    def _merge(self, message: Mapping[str, Any]) -> dict[str, Entry]:
        """Merge a gossip or gossip_ok message's members and ring; return the
        entries it carried. ValueError if it is malformed (nothing merged)."""
        members = message.get("members")
        if not isinstance(members, list):
            raise ValueError("gossip: 'members' must be a list")
        carried: dict[str, Entry] = {}
        for item in members:
            node, entry = Entry.from_wire(item)
            if node in carried:
                raise ValueError(f"gossip: member {node!r} listed twice")
            carried[node] = entry
        epoch, ring = message.get("ring_epoch"), message.get("ring")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or not (ring is None or isinstance(ring, dict)):
            raise ValueError("gossip: 'ring_epoch' must be an integer and 'ring' a map or nil")
        for node, entry in carried.items():
            if node == self.node:
                self._heard_of_self(entry)
            else:
                self.table.merge(node, entry)
        if ring is not None and _ring_key(epoch, ring) > _ring_key(self._ring_epoch, self._ring):
            self._ring_epoch, self._ring = epoch, ring
            if self._log is not None:
                self._log.event("ring_adopted", epoch=epoch, source=str(message.get("from")))
            for callback in list(self._ring_listeners):
                try:
                    callback(epoch, ring)
                except Exception as e:
                    if self._log is not None:
                        self._log.event("listener_error", ring_epoch=epoch, error=repr(e))
        return carried

    def _heard_of_self(self, entry: Entry) -> None:
        own = self.own
        if entry.order() <= own.order() or entry == own:
            return
        # Peers remember a later incarnation of us than we are: jump past it.
        jumped = replace(own, generation=max(own.generation, entry.generation), heartbeat=entry.heartbeat + 1)
        self.table.merge(self.node, jumped)
        if self._log is not None:
            self._log.event("generation_jump", seen=list(entry.version), now=list(jumped.version))

    def handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Answer an incoming `gossip` request (the server calls this from its
        dispatch): merge what it carries, reply `gossip_ok` with the entries
        that are newer here than in the request (or missing from it), and the
        ring if ours is newer. Raises ValueError for a malformed message
        (answer it `bad_request`). Never blocks."""
        carried = self._merge(message)
        self.counters["handled"] += 1
        newer = [(n, e) for n, e in sorted(self.table.entries().items())
                 if n not in carried or e.order() > carried[n].order()]
        ring_newer = _ring_key(self._ring_epoch, self._ring) > _ring_key(message["ring_epoch"], message["ring"])
        reply = self._message("gossip_ok", newer, ring_newer)
        self.check()
        return reply

    def targets(self) -> list[str]:
        """The peers of one round (see the module docstring); draws from the rng."""
        live: list[str] = []
        dead: list[str] = []
        for node, entry in sorted(self.table.entries().items()):
            if node == self.node or entry.status == "left":
                continue
            (dead if self.table.state(node) == "dead" else live).append(node)
        chosen = self._rng.sample(live, min(self.settings.fanout, len(live)))
        if dead and self._rng.random() < len(dead) / (len(live) + 1):
            chosen.append(self._rng.choice(dead))
        seeds = [s for s in self.seeds if s not in chosen]
        if seeds and (not live or self._rng.random() < len(seeds) / (len(live) + len(dead) + 1)):
            chosen.append(self._rng.choice(seeds))
        return chosen

    async def tick(self) -> None:
        """One gossip round: raise our heartbeat, exchange tables with this
        round's targets (concurrently; a peer's failure is counted, not
        raised), report state changes."""
        own = self.own
        self.table.merge(self.node, replace(own, heartbeat=own.heartbeat + 1))
        self.counters["rounds"] += 1
        targets = self.targets()
        if targets:
            await asyncio.gather(*(self._exchange(peer) for peer in targets))
        self.check()

    async def _exchange(self, peer: str) -> None:
        message = self._message("gossip", sorted(self.table.entries().items()), True)
        try:
            reply = await self._transport.request(peer, message, self.settings.request_timeout)
            if reply.get("type") != "gossip_ok":
                raise ValueError(f"expected gossip_ok, got {reply.get('type')!r}: {reply.get('message', '')}")
            self._merge(reply)
        except Exception as e:  # unreachable, timed out, refused, malformed: try again next round
            self.counters["failed"] += 1
            if self._log is not None and not isinstance(e, (ConnectionError, OSError, TimeoutError)):
                self._log.event("gossip_failed", peer=peer, error=repr(e))
            return
        self.counters["exchanges"] += 1

    async def run(self, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Gossip every `settings.interval` seconds until cancelled. Start it
        as a task after the server listens; cancel it at shutdown. `sleep` is
        the wait between rounds (a simulation passes its own)."""
        while True:
            started = self._clock.monotonic()
            try:
                await self.tick()
            except Exception as e:  # a bug (per-peer errors never get here): say so, keep gossiping
                if self._log is not None:
                    self._log.event("gossip_error", error=repr(e))
            elapsed = self._clock.monotonic() - started
            await sleep(max(0.0, self.settings.interval - elapsed))
