"""etcd as a system under test: `harness run --system etcd --backend netns`.

What etcd promises, and why: every key-value write (put, txn) is a raft
proposal, applied once a majority has it in its log, and by default every
read is linearizable too (the member asks the leader for its commit index,
the leader confirms it is still the leader with a quorum of heartbeats, and
the member answers once it has applied that far: raft's ReadIndex). So each
key is a linearizable register (`register`), and a cart updated by
compare-and-swap transactions is a linearizable set that loses no add
(`cart`). A read with `serializable: true` skips ReadIndex and is served
from whatever the member has applied: a member cut off from the leader keeps
answering with old values: the stale reads Jepsen reported in etcd (reads
served without consensus). With `--set serializable_reads=true` the
adapter still promises linearizability, so that the harness must find it.

Options (`--set KEY=VALUE`; `EtcdOptions`, passed to `EtcdSystem` as keyword
arguments; `harness systems etcd` lists them):

- `serializable_reads` (false): send every range with `serializable: true`
  (reads served by the local member without consensus; not linearizable);
- `binary` ("etcd"): the etcd program on the node (a name on its PATH, or a
  path);
- `heartbeat_ms` (50) and `election_ms` (500): raft's heartbeat interval and
  election timeout (etcd's own defaults are 100 and 1000; short ones let a
  test recover within seconds of a fault). etcd wants the election timeout
  at least 5 heartbeats: so does this adapter;
- `pre_vote` (true): raft's pre-vote phase, so that a member that was cut off
  does not depose a healthy leader when it comes back (etcd 3.5's default).

`EtcdDB` starts a member in the foreground with its peer and client URLs
from the backend's `NodePlace` (`advertise`: etcd names members by their peer
URLs, which every member must know alike, so it cannot run where each link
has its own proxy: the local backend), logs to stderr (which the backend
keeps), and restarts a killed member on the same data directory (etcd then
ignores the `--initial-cluster*` flags). `ready` asks the member's *peer*
port for `/version`: etcd 3.4 opens its client port only once the member has
published itself through raft, which a restarted member in a minority cannot
do, while the peer port answers at once. `converged`: every member answers
`/health` healthy, all name the same leader, and their raft indexes are
within a few entries of each other.

`EtcdClient` speaks etcd's v3 JSON gateway (POST `/v3/kv/range`, `/v3/kv/put`,
`/v3/kv/deleterange`, `/v3/kv/txn`, keys and values base64) over HTTP/1.1 with the standard
library's asyncio streams, one connection per request. No HTTP library: the
requests are three fixed JSON posts, and owning the socket lets the client
tell exactly whether anything was sent (the line between `fail` and `info`),
which a pooling client with its own retries hides; it also adds no
dependency to the node image. Each operation finishes within 80% of
`NodeSetup.op_timeout`, before the runner gives up on it.

- register: `read` -> range: ok with `[value]` or `[]`; `write` -> put: ok
  with the value written; `delete` -> deleterange of the key: ok (the
  context is ignored: each key is a linearizable register);
- cart: a cart is its items joined by newlines. `read` -> range: ok with the
  sorted items (and `extra["siblings"]`: the one cart, or none). `add` ->
  range (the cart and its `mod_revision`, 0 when absent), then a txn that
  puts cart + item if the key's `mod_revision` is still that one (for an
  absent key, 0 compares equal only while it is absent). A compare that
  failed wrote nothing: it is retried (a fresh read) while time remains, then
  `fail`. Completions carry `extra` `obs` (the carts read: one, or none) and
  `wrote` (the cart put), also when the txn's outcome is unknown.

Fail or info:

- nothing sent (the connection was refused or could not be made in time):
  `fail`;
- a read (range) that errs or times out: `fail`, since a read changes
  nothing;
- a put or txn that timed out, lost its connection or got an error after it
  was sent: `info` (etcd may have committed it: a proposal can be applied
  after the member gave up waiting for it), except for the errors etcd
  returns before it proposes anything, which are `fail`: gRPC code 3
  (InvalidArgument: the gateway could not decode the request, or etcd's
  request checks refused it), "etcdserver: too many requests" (the apply loop
  is too far behind: checked first) and "etcdserver: request is too large"
  (checked before proposing).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from contract.ops import Completion, Invocation
from contract.promise import Claim, Promise
from harness.systems.base import Deployment, NodeSetup

__all__ = ["EtcdClient", "EtcdDB", "EtcdError", "EtcdOptions", "EtcdSystem"]

WORKLOADS = ("register", "cart")
CLIENT, PEER = "client", "peer"
BUDGET = 0.8  # of NodeSetup.op_timeout: an operation answers before the runner gives up on it
ADD_ATTEMPTS = 3  # reads + compare-and-swap tries of a cart add
MIN_TXN_TIME = 0.05  # seconds left below which an add sends no txn (and fails)
INDEX_SPREAD = 16  # raft indexes of converged members are at most this far apart

# gRPC codes etcd's gateway reports whose requests certainly did not reach raft
# (see the module docstring), and error texts of the same kind.
DEFINITE_CODES = frozenset({3})  # InvalidArgument
DEFINITE_ERRORS = ("etcdserver: too many requests", "etcdserver: request is too large")


# ------------------------------------------------------------------ options


@dataclass(frozen=True, kw_only=True)
class EtcdOptions:
    """What `--set` may say for etcd (see the module docstring)."""

    serializable_reads: bool = field(default=False, metadata={
        "help": "reads served by the local member without consensus (stale under partitions: not linearizable)"})
    binary: str = field(default="etcd", metadata={"help": "the etcd program on the node (on its PATH, or a path)"})
    heartbeat_ms: int = field(default=50, metadata={"help": "raft heartbeat interval (--heartbeat-interval), ms"})
    election_ms: int = field(default=500, metadata={
        "help": "raft election timeout (--election-timeout), ms; at least 5 heartbeats"})
    pre_vote: bool = field(default=True, metadata={
        "help": "raft pre-vote (--pre-vote): a member back from a partition does not depose the leader"})

    def __post_init__(self) -> None:
        if self.heartbeat_ms < 1:
            raise ValueError(f"heartbeat_ms={self.heartbeat_ms}: it must be at least 1")
        if self.election_ms < 5 * self.heartbeat_ms:
            raise ValueError(f"election_ms={self.election_ms} must be at least 5 heartbeats "
                             f"(5 x heartbeat_ms = {5 * self.heartbeat_ms}), as etcd requires")
        if not self.binary:
            raise ValueError("binary must name the etcd program")


# ------------------------------------------------------------------ HTTP


class EtcdError(Exception):
    """A request that did not get a usable answer. `sent`: the request may
    have reached the member; `definite`: etcd said it did nothing."""

    def __init__(self, message: str, *, sent: bool, definite: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.definite = definite

    @property
    def certain(self) -> bool:
        """True when the request certainly had no effect."""
        return not self.sent or self.definite


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def http(address: str, path: str, body: Mapping[str, Any] | None, deadline: float) -> dict[str, Any]:
    """One HTTP/1.1 request to `address` ("host:port"), answered by `deadline`
    (the event loop's clock): POST `body` as JSON, or GET without one. The
    answer's JSON object; EtcdError otherwise (`sent` False when the
    connection was never made)."""
    loop = asyncio.get_running_loop()
    if deadline - loop.time() <= 0:
        raise EtcdError("no time left to send it", sent=False)
    host, port = _split(address)
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        raise EtcdError(f"connect to {address}: timed out", sent=False) from None
    except OSError as e:
        raise EtcdError(f"connect to {address}: {e.strerror or e}", sent=False) from None
    try:
        data = b"" if body is None else json.dumps(body).encode()
        method = "GET" if body is None else "POST"
        head = (f"{method} {path} HTTP/1.1\r\nHost: {address}\r\nAccept: application/json\r\n"
                f"Connection: close\r\n")
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        try:
            async with asyncio.timeout_at(deadline):
                writer.write(head.encode() + b"\r\n" + data)
                await writer.drain()
                status, answer = await _response(reader)
        except TimeoutError:
            raise EtcdError(f"{path}: no answer in time", sent=True) from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise EtcdError(f"{path}: connection lost ({type(e).__name__}: {e})", sent=True) from None
    finally:
        writer.close()
    try:
        decoded = json.loads(answer or b"{}")
    except ValueError:
        decoded = None
    if status != 200:
        if isinstance(decoded, dict):
            text = str(decoded.get("error") or decoded.get("message") or answer[:100])
            code = decoded.get("code")
            definite = code in DEFINITE_CODES or any(text.startswith(e) for e in DEFINITE_ERRORS)
            raise EtcdError(f"{path}: HTTP {status}, code {code}: {text}", sent=True, definite=definite)
        raise EtcdError(f"{path}: HTTP {status}: {answer[:100]!r}", sent=True)
    if not isinstance(decoded, dict):
        raise EtcdError(f"{path}: an answer that is not a JSON object: {answer[:100]!r}", sent=True)
    return decoded


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of an HTTP/1.1 response: Content-Length, chunked
    (trailers skipped) or until the connection closes."""
    line = await reader.readline()
    if not line:
        raise ConnectionResetError("closed without an answer")
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError(f"no HTTP status line: {line[:60]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"x", 16)
            if size == 0:
                return status, b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"]))
    return status, await reader.read()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: Any) -> str:
    return base64.b64decode(str(data or "")).decode("utf-8", "replace")


def _int(value: Any) -> int:
    """An int64 of the gateway's JSON (sent as text; absent when zero)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def cart_items(text: str) -> list[str]:
    return sorted(x for x in text.split("\n") if x)


# ------------------------------------------------------------------ DB


class EtcdDB:
    def __init__(self, options: EtcdOptions) -> None:
        self.options = options

    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        place = node.place
        if place.advertise is None:
            raise ValueError(f"etcd needs one address per member that every peer dials; {place.name}'s "
                             "backend gives each link its own (use --backend netns)")
        cluster = ",".join(
            f"{m}=http://{place.advertise[PEER] if m == place.name else place.peers[m][PEER]}"
            for m in node.nodes)
        o = self.options
        argv = [
            o.binary, "--name", place.name, "--data-dir", place.data_dir,
            "--listen-client-urls", f"http://{place.listen[CLIENT]}",
            "--advertise-client-urls", f"http://{place.advertise[CLIENT]}",
            "--listen-peer-urls", f"http://{place.listen[PEER]}",
            "--initial-advertise-peer-urls", f"http://{place.advertise[PEER]}",
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"harness-{node.seed}",
            "--heartbeat-interval", str(o.heartbeat_ms),
            "--election-timeout", str(o.election_ms),
            f"--pre-vote={'true' if o.pre_vote else 'false'}",
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        return argv, {}

    async def ready(self, node: NodeSetup, timeout: float) -> bool:
        """True once the member answers `/version` on its peer port (see the
        module docstring: its client port waits for a quorum)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                answer = await http(node.place.client[PEER], "/version", None, min(deadline, loop.time() + 1.0))
                if "etcdserver" in answer:
                    return True
            except EtcdError:
                pass
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)

    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        try:
            return await self._converged(nodes)
        except Exception:  # never raises: not converged, the runner asks again
            return False

    async def _converged(self, nodes: list[NodeSetup]) -> bool:
        healthy = await asyncio.gather(*(self._get(n, "/health", None) for n in nodes))
        if not all(h is not None and str(h.get("health")) == "true" for h in healthy):
            return False
        statuses = await asyncio.gather(*(self._get(n, "/v3/maintenance/status", {}) for n in nodes))
        if any(s is None for s in statuses):
            return False
        leaders = {_int(s.get("leader")) for s in statuses if s is not None}
        if len(leaders) != 1 or 0 in leaders:
            return False
        indexes = [_int(s.get(k) or s.get(snake)) for s in statuses if s is not None
                   for k, snake in (("raftIndex", "raft_index"), ("raftAppliedIndex", "raft_applied_index"))]
        return max(indexes) - min(indexes) <= INDEX_SPREAD

    async def _get(self, node: NodeSetup, path: str, body: Mapping[str, Any] | None) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        try:
            return await http(node.place.client[CLIENT], path, body, loop.time() + 2.0)
        except EtcdError:
            return None


# ------------------------------------------------------------------ client


class EtcdClient:
    def __init__(self, workload: str, serializable_reads: bool = False) -> None:
        if workload not in WORKLOADS:
            raise ValueError(f"etcd has no client for workload {workload!r} (it has: {', '.join(WORKLOADS)})")
        self._cart = workload == "cart"
        self._serializable = serializable_reads
        self._address = ""
        self._budget = BUDGET * 5.0

    async def open(self, node: NodeSetup) -> None:
        self._address = node.place.client[CLIENT]
        self._budget = max(0.05, BUDGET * node.op_timeout)

    async def invoke(self, op: Invocation) -> Completion:
        assert self._address, "invoke before open"
        deadline = asyncio.get_running_loop().time() + self._budget
        key = str(op.key)
        try:
            if op.f == "read":
                found = await self._range(key, deadline)
                if not self._cart:
                    return Completion("ok", [] if found is None else [found[0]])
                cart = [] if found is None else [cart_items(found[0])]
                return Completion("ok", cart[0] if cart else [], extra={"siblings": cart})
            if op.f == "write" and not self._cart:
                await self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(str(op.value))}, deadline)
                return Completion("ok", op.value)
            if op.f == "delete" and not self._cart:
                await self._call("/v3/kv/deleterange", {"key": _b64(key)}, deadline)
                return Completion("ok")
            if op.f == "add" and self._cart:
                return await self._add(key, op.value, deadline)
        except EtcdError as e:
            # A read has no effect, so a read that failed in any way is `fail`.
            certain = op.f == "read" or e.certain
            return Completion("fail" if certain else "info", error=str(e)[:200])
        return Completion("fail", error=f"unknown operation {op.f!r}")

    async def _add(self, key: str, value: Any, deadline: float) -> Completion:
        item = str(value)
        loop = asyncio.get_running_loop()
        conflict = "no attempt"
        for attempt in range(ADD_ATTEMPTS):
            # Leave the txn at least half of what remains.
            read_by = min(deadline, loop.time() + (deadline - loop.time()) / 2)
            try:
                found = await self._range(key, read_by)
            except EtcdError as e:  # nothing written yet (earlier txns failed their compare)
                return Completion("fail", error=f"reading the cart: {e}"[:200])
            obs = [] if found is None else [cart_items(found[0])]
            cart = sorted({*(obs[0] if obs else []), item})
            revision = 0 if found is None else found[1]
            if deadline - loop.time() < MIN_TXN_TIME:
                return Completion("fail", error="no time left for the compare-and-swap")
            extra: dict[str, Any] = {"obs": obs, "wrote": cart}
            txn = {
                "compare": [{"target": "MOD", "key": _b64(key), "result": "EQUAL", "mod_revision": str(revision)}],
                "success": [{"request_put": {"key": _b64(key), "value": _b64("\n".join(cart))}}],
            }
            try:
                answer = await self._call("/v3/kv/txn", txn, deadline)
            except EtcdError as e:
                return Completion("fail" if e.certain else "info", error=str(e)[:200], extra=extra)
            except Exception as e:  # the cart written must be recorded whatever happened
                return Completion("info", error=f"{type(e).__name__}: {e}"[:200], extra=extra)
            if answer.get("succeeded") is True:
                return Completion("ok", value, extra=extra)
            conflict = f"the cart changed since it was read (mod_revision {revision}), {attempt + 1} times"
        return Completion("fail", error=conflict)

    async def _range(self, key: str, deadline: float) -> tuple[str, int] | None:
        """(value, mod_revision) of `key`, or None when it is absent."""
        body: dict[str, Any] = {"key": _b64(key)}
        if self._serializable:
            body["serializable"] = True
        answer = await self._call("/v3/kv/range", body, deadline)
        kvs = answer.get("kvs") or []
        if not kvs:
            return None
        return _unb64(kvs[0].get("value")), _int(kvs[0].get("mod_revision"))

    async def _call(self, path: str, body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        return await http(self._address, path, body, deadline)

    async def close(self) -> None:
        pass  # a connection per request: nothing stays open


# ------------------------------------------------------------------ system


class EtcdSystem:
    """`--system etcd`: `EtcdSystem(serializable_reads=True)`; its options
    are `EtcdOptions`' fields (a bad one is a ValueError or TypeError)."""

    name = "etcd"
    ports = (CLIENT, PEER)
    Options = EtcdOptions

    def __init__(self, **options: Any) -> None:
        self.options = EtcdOptions(**options)
        self.serializable_reads = self.options.serializable_reads
        self.db = EtcdDB(self.options)

    def client(self, workload: str) -> EtcdClient:
        return EtcdClient(workload, self.serializable_reads)

    def supports(self, deployment: Deployment) -> str | None:
        if deployment.backend == "local":
            return ("etcd identifies members by their peer URLs, which must be the same on every member, and "
                    "the local backend gives each link its own proxy address: use --backend netns")
        if deployment.backend == "docker":
            return ("the docker backend's node image (harness.backends.image) has no etcd in it: "
                    "use --backend netns")
        return None

    def promise(self, workload: str) -> Promise:
        reads = ("every put goes through raft, and reads too (ReadIndex: the leader confirms its lease "
                 "with a quorum before the member answers)")
        if self.serializable_reads:
            reads = ("every put goes through raft; etcd promises linearizable reads by default, and "
                     "serializable_reads (reads served by the local member without consensus, stale "
                     "under partitions: Jepsen's finding) keeps that promise on trial")
        if workload == "register":
            return Promise(claims=(Claim(name="linearizable", why=reads),))
        if workload == "cart":
            return Promise(claims=(
                Claim(name="linearizable", why=reads + "; an add is a compare-and-swap txn on the cart's "
                                                       "mod_revision"),
                Claim(name="no-lost-adds", why="an add puts its cart only if nobody changed the cart since "
                                               "it was read (a txn comparing mod_revision)"),
            ))
        return Promise()
