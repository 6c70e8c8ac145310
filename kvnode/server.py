"""The node process: an asyncio TCP server in front of a coordinator and a
replica, and the start-up and shutdown around them.

Each connection starts with the protocol handshake (wrong cluster or version:
an error reply and the connection is closed), which gives the connection its
roles (`kvnode.auth.grant`); every request is then checked against
`protocol.ACCESS` and answered through one table, `_HANDLERS`. A request
runs in a task of its own, so a connection may pipeline requests and get
replies out of order; whatever fails in one request (bad input, a corrupt
block, a bug) is answered as an error for that request alone. A frame that
cannot be parsed gets an error reply (when its id can be read) and closes
that connection only: the node keeps serving everyone else and nothing
stored changes.

Bounds (`config.Limits`): requests in flight per connection (past the cap the
node stops reading that connection until answers drain: backpressure, not
an error), a deadline for a frame once begun, a node-wide budget for the
bytes of partial frames, and a cap on connections (the longest idle is
closed first). Refused connections and requests are logged at a bounded
rate, each line with this node's id and the id the other side claimed.

Shutdown on SIGTERM or SIGINT: stop accepting, let requests in flight finish
(bounded), flush the storage engine and close it. After SIGKILL nothing
acknowledged is lost either: a replica acknowledges only what its WAL has
fsynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import auth, protocol, ring_state
from .antientropy import REQUESTS as AE_REQUESTS
from .antientropy import AntiEntropy
from .clock import Clock, SystemClock
from .config import NodeConfig, parse_address
from .connection import Connection, ConnectionLost
from .coordinator import Coordinator, CoordinatorError
from .handoff import HandoffManager, HandoffSettings, HintStore, resolver_merge
from .log import EventLog
from .membership import Gossiper, GossipSettings, fresh_generation, load_and_bump_generation
from .offload import Offload, ThreadOffload
from .rebalance import Rebalancer
from .replica import Replica
from .ring import Ring
from .rng import make_rng
from .storage import CorruptionError, Engine
from .storage.background import Background
from .storage.fs import FileSystem
from .transport import TcpTransport, Transport
from .versions import resolver

# Refused connections and requests are logged at most LOG_BURST times per
# LOG_WINDOW seconds for each kind of event.
LOG_BURST = 10
LOG_WINDOW = 10.0
# Frames a connection may have answered in a row before others get a turn.
YIELD_EVERY = 32
# How old the anti-entropy summary in a status reply may be, in seconds.
STATUS_REUSE = 0.5


@dataclass(eq=False, slots=True)
class _Link:
    """One accepted connection: who it is, what it has in flight, and when
    it last did anything (the longest idle is closed first at the cap)."""

    writer: asyncio.StreamWriter
    peername: str
    last_active: float
    roles: frozenset[str] = frozenset()
    claimed: str | None = None  # the node id its hello named, if any
    inflight: int = 0
    frames: protocol.FrameReader | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        offload: Offload | None = None,
        log: EventLog | None = None,
        transport: Transport | None = None,
        fs: FileSystem | None = None,
        background: Background | None = None,
    ) -> None:
        # `fs` and `background` are the storage seams (None: the real disk
        # and threads); a simulation passes a SimFileSystem and InlineBackground.
        self.config = config
        self._fs = fs
        self.clock = clock or SystemClock()
        self.offload = offload or ThreadOffload()
        self.log = log or EventLog(config.id, self.clock)
        s = config.settings
        self.credentials = auth.Credentials(
            secret=auth.load_secret(config.secret_file),
            client_token=auth.load_secret(config.token_file, env="KVNODE_CLIENT_TOKEN"),
            admin_token=auth.load_secret(config.admin_token_file, env="KVNODE_ADMIN_TOKEN"),
        )
        auth.check_config(self.credentials, has_peers=bool(config.peers.keys() - {config.id}))
        self.secret = self.credentials.secret
        self.engine = Engine.open(config.data, sync=config.sync, fs=fs, background=background)
        self.addresses = {k: f"{h}:{p}" for k, (h, p) in config.members.items()}
        # The static ring of the configured members is epoch 0; joins and
        # leaves make later epochs, spread by gossip and kept across restarts.
        self.ring_epoch, self.ring = 0, Ring.build(config.members, partitions=s.partitions)
        saved = ring_state.load(config.data, fs=fs)
        if saved is not None:
            self.ring_epoch, self.ring, addresses = saved
            # The configured --peers map wins: behind a proxy or NAT, what a
            # peer advertises is not where this node can reach it.
            self.addresses.update({k: a for k, a in addresses.items() if k not in config.members})
        self.generation = load_and_bump_generation(config.data, fs=fs, first=fresh_generation(self.clock.wall_ns()))
        self.replica = Replica(self.engine, resolver(s.resolution, clock=self.clock, max_siblings=s.max_siblings,
                                                     incarnation=self.generation), self.offload)
        self.transport = transport or TcpTransport(
            config.id, s.cluster,
            {k: parse_address(a) for k, a in self.addresses.items() if k != config.id},
            clock=self.clock, connect_timeout=s.connect_timeout, secret=self.secret,
        )
        others = {k: a for k, a in self.addresses.items() if k != config.id}
        self.gossiper = Gossiper(
            config.id, "{}:{}".format(*config.listen), generation=self.generation, seeds=sorted(others),
            transport=self.transport, clock=self.clock, rng=make_rng(config.id, config.seed, stream="gossip"),
            settings=GossipSettings(interval=s.gossip_interval, suspect_after=s.suspect_after,
                                    dead_after=s.dead_after),
            peers=others, log=self.log,
        )
        self.hints = HintStore.open(
            os.path.join(config.data, "hints"), clock=self.clock, offload=self.offload,
            merge=resolver_merge(self.replica.resolver), log=self.log, fs=fs, background=background,
        )
        self.handoff = HandoffManager(
            self.hints, self.transport, self.clock,
            HandoffSettings(ttl=s.hint_ttl, interval=s.handoff_interval, request_timeout=s.request_timeout),
            self.log,
        )
        self.antientropy = AntiEntropy(
            config.id, lambda: self.ring, s.n, self.replica, self.transport, self.clock,
            offload=self.offload, log=self.log, timeout=s.request_timeout,
        )
        self.replica.on_write.append(self.antientropy.note_write)
        self.gossiper.on_change(self._member_changed)
        if self.ring_epoch:
            self.gossiper.set_ring(self.ring_epoch, self._ring_dict())
        self.gossiper.on_ring(self._ring_from_gossip)
        self.rebalancer = Rebalancer(
            node=config.id, ring=lambda: self.ring, n=s.n, replica=self.replica, transport=self.transport,
            offload=self.offload, log=self.log, timeout=s.request_timeout,
        )
        self._ring_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.coordinator = Coordinator(
            node=config.id, ring=self.ring, settings=s, replica=self.replica,
            transport=self.transport, clock=self.clock, log=self.log,
            is_down=lambda node: self.gossiper.state(node) != "alive",
            actor=f"{config.id}@{self.generation}",
        )
        self._server: asyncio.Server | None = None
        self._requests: set[asyncio.Task[Any]] = set()
        self._connections: set[asyncio.StreamWriter] = set()
        self._links: set[_Link] = set()
        self._budget = protocol.ByteBudget(config.limits.max_buffered)
        self._log_windows: dict[str, list[Any]] = {}
        self._summary: tuple[float, int, dict[int, dict[str, Any]]] | None = None  # (when, ring epoch, summary)  # event -> [window start, lines, suppressed]
        self._stopped = asyncio.Event()
        self.counters: dict[str, int] = {"connections": 0, "requests": 0, "protocol_errors": 0,
                                         "connections_evicted": 0, "inflight_peak": 0}

    # ---------------------------------------------------------- lifecycle

    async def start(self, *, listen: bool = True) -> None:
        """Start serving. `listen=False` opens no socket: a simulation hands
        requests to `_accept` itself (harness.sim.world)."""
        host, port = self.config.listen
        if listen:
            # A small stream buffer: when a connection is not read (at its cap
            # of requests in flight) its socket pauses soon, and its sender waits.
            self._server = await asyncio.start_server(self._serve, host, port, limit=protocol.FrameReader.CHUNK)
        s = self.config.settings
        self._tasks.append(asyncio.ensure_future(self.handoff.run()))
        self._tasks.append(asyncio.ensure_future(self.gossiper.run()))
        self._tasks.append(asyncio.ensure_future(self._rebalance()))
        if s.ae_interval > 0:
            self._tasks.append(asyncio.ensure_future(self.antientropy.run(s.ae_interval)))
        self.log.event("started", listen=f"{host}:{port}", data=self.config.data,
                       members=sorted(self.ring.nodes), ring_epoch=self.ring_epoch, n=s.n, w=s.w, r=s.r,
                       resolution=s.resolution, quorum=s.quorum, read_repair=s.read_repair,
                       partitions=s.partitions, share=round(self.ring.shares().get(self.config.id, 0.0), 4))

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        """Start, serve until `stop()` (or SIGTERM/SIGINT), then shut down."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        try:
            await self._stopped.wait()
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._requests:
            await asyncio.wait(self._requests, timeout=2 * self.config.settings.request_timeout)
        for writer in list(self._connections):
            writer.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.handoff.close()
        await self.coordinator.close()
        await self.transport.close()
        await self.offload.run(self.engine.flush)
        self.engine.close()
        self.hints.close()
        self.offload.close()
        self.log.event("stopped", **self.counters)

    # ------------------------------------------------------ ring changes

    def _member_changed(self, node: str, old: str | None, new: str) -> None:
        if old is None:  # newly learned of: where it listens
            address = self.gossiper.view().get(node, {}).get("address")
            if isinstance(address, str) and node != self.config.id and node not in self.config.members:
                self.addresses[node] = address
                self._set_peer(node, address)
        if new == "alive":
            # A node back from the dead (or restarted) gets its hints at once.
            self.handoff.on_node_alive(node)

    def _set_peer(self, node: str, address: str) -> None:
        if node in self.config.members:
            return  # dial what --peers says, whatever gossip advertises
        if isinstance(self.transport, TcpTransport):
            self.transport.set_peer(node, parse_address(address))

    def _ring_dict(self) -> dict[str, Any]:
        nodes = set(self.ring.nodes)
        return {**self.ring.to_dict(), "addresses": {k: a for k, a in self.addresses.items() if k in nodes}}

    def _install_ring(self, epoch: int, data: dict[str, Any]) -> bool:
        """Adopt a newer ring (from gossip, a join or a leave): place keys by
        it from now on and move what this node no longer replicates."""
        if epoch <= self.ring_epoch:
            return False
        try:
            ring = Ring.from_dict(data)
            addresses = {str(k): str(v) for k, v in dict(data.get("addresses", {})).items()}
        except (ValueError, TypeError) as e:
            self.log.event("bad_ring", epoch=epoch, error=str(e))
            return False
        if ring.partitions != self.config.settings.partitions:
            self.log.event("bad_ring", epoch=epoch, error=f"{ring.partitions} partitions, not ours")
            return False
        for node, address in addresses.items():
            if node != self.config.id and node not in self.config.members:
                self.addresses[node] = address
                self._set_peer(node, address)
        self.ring_epoch, self.ring = epoch, ring
        self.coordinator.ring = ring
        ring_state.save(self.config.data, epoch, ring, addresses, fs=self._fs)
        self.log.event("ring_changed", epoch=epoch, nodes=list(ring.nodes),
                       share=round(ring.shares().get(self.config.id, 0.0), 4))
        self._ring_changed.set()
        return True

    def _ring_from_gossip(self, epoch: int, data: dict[str, Any]) -> None:
        self._install_ring(epoch, data)

    def _adopt(self, epoch: int, ring: Ring) -> None:
        data = {**ring.to_dict(), "addresses": {k: a for k, a in self.addresses.items() if k in ring.nodes}}
        if self._install_ring(epoch, data):
            self.gossiper.set_ring(epoch, data)

    async def _rebalance(self) -> None:
        """A rebalancing pass at start (a crash may have cut the last one
        short), after every ring change, and every second while keys remain
        that could not be moved yet."""
        while True:
            self._ring_changed.clear()
            try:
                result = await self.rebalancer.run_pass()
            except Exception as e:
                self.log.event("rebalance_error", error=repr(e))
                result = {"kept": 1}
            if (self.config.id not in self.ring.nodes and not result["kept"]
                    and self.gossiper.own.status == "leaving"):
                self.gossiper.set_status("left")  # everything handed over
                self.log.event("left", epoch=self.ring_epoch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ring_changed.wait(), 1.0 if result["kept"] else None)

    async def _join(self, seed: str) -> int:
        host, port = parse_address(seed)
        s = self.config.settings
        try:
            conn = await Connection.open(host, port, cluster=s.cluster, node=self.config.id,
                                         timeout=s.connect_timeout * 4, secret=self.secret)
        except (OSError, TimeoutError, protocol.RemoteError) as e:
            raise CoordinatorError("unavailable", f"cannot reach the seed {seed}: {e}") from None
        try:
            reply = await conn.request({"type": "ring_get"}, s.request_timeout)
            protocol.raise_if_error(reply)
            base, epoch = Ring.from_dict(reply["ring"]), reply["epoch"]
            seed_id = reply["node"]
            self.addresses.update({str(k): str(v) for k, v in reply["ring"].get("addresses", {}).items()})
            self.addresses[self.config.id] = "{}:{}".format(*self.config.listen)
            if self.config.id in base.nodes:
                self._adopt(epoch, base)  # already a member: just catch up
                return epoch
            joined = base.with_node(self.config.id)
            self._install_ring(epoch + 1, {**joined.to_dict(), "addresses": dict(self.addresses)})
            self.gossiper.set_ring(epoch + 1, self._ring_dict())
            answer = await conn.request({"type": "ring_set", "epoch": epoch + 1, "ring": self._ring_dict()},
                                        s.request_timeout)
            protocol.raise_if_error(answer)
        except (protocol.RemoteError, ValueError, TimeoutError, ConnectionLost) as e:
            raise CoordinatorError("timeout", f"join via {seed} failed part way: {e}") from None
        finally:
            await conn.close()
        self._set_peer(seed_id, f"{host}:{port}")
        self.gossiper.seeds.append(seed_id)
        return epoch + 1

    async def _leave(self) -> int:
        if self.config.id not in self.ring.nodes:
            return self.ring_epoch
        epoch = self.ring_epoch + 1
        self._adopt(epoch, self.ring.without_node(self.config.id))
        self.gossiper.set_status("leaving")
        return epoch

    # -------------------------------------------------------- connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["connections"] += 1
        link = _Link(writer=writer, peername=str(writer.get_extra_info("peername")),
                     last_active=self.clock.monotonic())
        if not self._make_room():
            self._throttled("connection_refused", reason="at max_connections, none idle", peername=link.peername)
            writer.close()
            return
        self._links.add(link)
        self._connections.add(writer)
        limits = self.config.limits
        frames = protocol.FrameReader(reader, deadline=limits.frame_deadline, budget=self._budget)
        link.frames = frames
        try:
            shook = await self._handshake(reader, writer)
            if shook is None:
                return
            roles, link.claimed = shook
            link.roles = roles
            peer = protocol.PEER in roles
            cap = limits.max_inflight_peer if peer else limits.max_inflight
            # A token bucket for a client connection: on a node with few
            # cores a flood from one connection, even within its cap, would
            # keep the node busy and slow every other client.
            tokens, burst, filled = float(cap), float(cap), self.clock.monotonic()
            served = 0
            outbox = protocol.Outbox(writer)
            while True:
                if not peer:
                    now = self.clock.monotonic()
                    tokens, filled = min(burst, tokens + (now - filled) * limits.max_rate), now
                    if tokens < 1:
                        await asyncio.sleep((1 - tokens) / limits.max_rate)
                        continue
                if link.inflight >= cap:
                    # Backpressure: read nothing more from this connection
                    # (its socket buffers fill, its sender blocks) until
                    # answers drain.
                    link.drained.clear()
                    await link.drained.wait()
                    continue
                # Nor while its answers pile up unread in our send buffer: a
                # client that sends without reading must not make us hold
                # its replies without bound.
                await writer.drain()
                try:
                    message = await frames.next()
                except protocol.ProtocolError as e:
                    if e.request_id is not None:
                        # A whole frame whose id could be read (an unknown
                        # type, a field of the wrong type): answer it, and
                        # the stream is still in step, so keep serving.
                        self.counters["protocol_errors"] += 1
                        outbox.send(protocol.error(e.request_id, "bad_request", str(e)))
                        continue
                    self._protocol_error(writer, e, link.peername)
                    return
                if message is None:
                    return
                link.last_active = self.clock.monotonic()
                tokens -= 1
                self._accept(message, link, outbox)
                served += 1
                if served % YIELD_EVERY == 0:
                    # One read may bring thousands of frames answered inline
                    # (replica_get): let the other connections have a turn.
                    await asyncio.sleep(0)
        except (ConnectionError, OSError):
            return
        finally:
            frames.close()
            self._links.discard(link)
            self._connections.discard(writer)
            writer.close()

    def _accept(self, message: dict[str, Any], link: _Link, outbox: protocol.Outbox) -> None:
        """Answer one well-framed message: at once when it is refused or
        cheap, else in a task of its own (counted in flight)."""
        kind, rid = message["type"], message["id"]
        if kind not in protocol.REQUESTS:
            outbox.send(protocol.error(rid, "bad_request", f"{kind} is not a request"))
            return
        if not protocol.allowed(kind, link.roles):
            self._throttled("refused_request", type=kind, roles=sorted(link.roles), claimed=link.claimed,
                            peername=link.peername)
            who = " or ".join(sorted(protocol.ACCESS[kind]))
            outbox.send(protocol.error(rid, "unauthorized", f"{kind} is for {who} connections only"))
            return
        if kind == "replica_get" and "hint" not in message:
            # Answered at once from memory: no task for the most frequent
            # peer request.
            self.counters["requests"] += 1
            try:
                self._check_key(message)
                reply = {"type": "replica_get_ok", "id": rid, "state": self.replica.engine.get(message["key"])}
                outbox.send(reply)
            except Exception as e:  # a corrupt block, a bad key, a reply too large for a frame
                outbox.send(self._error_reply(message, e))
            return
        link.inflight += 1
        if link.inflight > self.counters["inflight_peak"]:
            self.counters["inflight_peak"] = link.inflight  # (the most on one connection; tests read it)
        task = asyncio.ensure_future(self._answer(message, outbox))
        self._requests.add(task)
        task.add_done_callback(lambda t: self._finished(t, link))

    def _finished(self, task: asyncio.Task[Any], link: _Link) -> None:
        self._requests.discard(task)
        link.inflight -= 1
        link.last_active = self.clock.monotonic()
        link.drained.set()
        if not task.cancelled() and task.exception() is not None:  # retrieved: never "never retrieved"
            self.log.event("internal_error", error=repr(task.exception()))

    def _make_room(self) -> bool:
        """At the connection cap, close the connection idle longest (nothing
        in flight, no frame begun) to make room for a new one; False if every
        connection is busy (the new one is refused: closing a busy one would
        lose requests in flight)."""
        if len(self._links) < self.config.limits.max_connections:
            return True
        idle = [k for k in self._links if k.inflight == 0 and not (k.frames and k.frames.partial)]
        if not idle:
            return False
        oldest = min(idle, key=lambda k: k.last_active)
        self._links.discard(oldest)
        self.counters["connections_evicted"] += 1
        self._throttled("connection_evicted", peername=oldest.peername, roles=sorted(oldest.roles))
        oldest.writer.close()
        return True

    def _throttled(self, event: str, **fields: Any) -> None:
        """Log `event`, at most LOG_BURST lines per LOG_WINDOW seconds of
        each kind: a flood of refused connections must not flood the log.
        The next line logged says how many were left out."""
        now = self.clock.monotonic()
        window = self._log_windows.get(event)
        if window is None or now - window[0] >= LOG_WINDOW:
            window = self._log_windows[event] = [now, 0, window[2] if window else 0]
        if window[1] >= LOG_BURST:
            window[2] += 1
            return
        window[1] += 1
        suppressed, window[2] = window[2], 0
        self.log.event(event, **fields, **({"suppressed": suppressed} if suppressed else {}))

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[frozenset[str], str | None] | None:
        """Shake hands; None if refused, else the connection's roles
        (`kvnode.auth.grant`) and the node id it claimed."""
        deadline = self.config.settings.request_timeout * 5
        peername = str(writer.get_extra_info("peername"))
        try:
            hello = await asyncio.wait_for(protocol.read_frame(reader), deadline)
        except (protocol.ProtocolError, TimeoutError) as e:
            self._protocol_error(writer, e if isinstance(e, protocol.ProtocolError)
                                 else protocol.ProtocolError("no handshake"), peername)
            return None
        if hello is None:
            return None
        rid = hello["id"]
        settings = self.config.settings

        def refuse(code: str, message: str) -> None:
            writer.write(protocol.encode(protocol.error(rid, code, message)))

        if hello["type"] != "hello":
            refuse("bad_request", "expected a hello handshake first")
            return None
        if hello["version"] != protocol.VERSION:
            refuse("bad_request", f"protocol version {hello['version']} not spoken (this node: {protocol.VERSION})")
            return None
        claimed = hello["node"]
        if hello["cluster"] != settings.cluster:
            self._throttled("refused_peer", reason="wrong_cluster", cluster=hello["cluster"], claimed=claimed,
                            peername=peername)
            refuse("wrong_cluster",
                   f"this node belongs to cluster {settings.cluster!r}, not {hello['cluster']!r}")
            return None
        proof: bytes | None = None
        if claimed is not None and self.credentials.secret is not None:
            proof = await self._authenticate(reader, writer, hello)
            if proof is None:
                return None
        roles = auth.grant(self.credentials, node=claimed, proved=proof is not None, token=hello["token"])
        if not roles:
            self._throttled("refused_client", reason="bad_token", claimed=claimed, peername=peername)
            refuse("unauthorized", "a valid client token is required")
            return None
        writer.write(protocol.encode({"type": "hello_ok", "id": rid, "version": protocol.VERSION,
                                      "cluster": settings.cluster, "node": self.config.id, "proof": proof}))
        return roles, claimed

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict[str, Any]
    ) -> bytes | None:
        """Challenge a connecting node; its proof (our answer) if it holds the secret."""
        secret = self.credentials.secret
        assert secret is not None
        rid, claimed = hello["id"], hello["node"]

        def refuse(reason: str) -> None:
            self._throttled("refused_peer", reason=reason, claimed=claimed,
                            peername=str(writer.get_extra_info("peername")))
            writer.write(protocol.encode(protocol.error(
                rid, "unauthorized", f"node {claimed!r} did not prove it holds the cluster secret ({reason})")))

        if not auth.valid_nonce(hello["nonce"]):
            refuse("no_nonce")
            return None
        nonce = auth.make_challenge()
        writer.write(protocol.encode({"type": "challenge", "id": rid, "node": self.config.id, "nonce": nonce}))
        try:
            answer = await asyncio.wait_for(protocol.read_frame(reader), self.config.settings.request_timeout * 5)
        except (protocol.ProtocolError, TimeoutError):
            answer = None
        if answer is None or answer["type"] != "auth":
            refuse("no_answer")
            return None
        transcript = auth.Transcript(cluster=self.config.settings.cluster, client=claimed, server=self.config.id,
                                     client_nonce=hello["nonce"], server_nonce=nonce)
        if not auth.verify(secret, "client", transcript, answer["proof"]):
            refuse("bad_proof")
            return None
        return auth.prove(secret, "server", transcript)

    def _protocol_error(self, writer: asyncio.StreamWriter, error: protocol.ProtocolError, peer: object) -> None:
        self.counters["protocol_errors"] += 1
        self._throttled("protocol_error", peername=str(peer), error=str(error))
        with contextlib.suppress(Exception):
            writer.write(protocol.encode(protocol.error(error.request_id or 0, "bad_request", str(error))))

    # ----------------------------------------------------------- requests

    async def _answer(self, message: dict[str, Any], outbox: protocol.Outbox) -> None:
        """Answer one request; whatever goes wrong in it is answered as an
        error for this request alone, never raised."""
        self.counters["requests"] += 1
        rid = message["id"]
        try:
            self._check_key(message)
            reply = await _HANDLERS[message["type"]](self, message)
        except Exception as e:
            reply = self._error_reply(message, e)
        reply["id"] = rid
        try:
            outbox.send(reply)
        except protocol.ProtocolError as e:  # a reply too large for a frame
            outbox.send(protocol.error(rid, "internal", str(e)))

    def _error_reply(self, message: dict[str, Any], e: Exception) -> dict[str, Any]:
        rid = message["id"]
        if isinstance(e, CoordinatorError):
            return protocol.error(rid, e.code, e.message)
        if isinstance(e, CorruptionError):
            self._throttled("corrupt_read", type=message["type"], error=str(e))
            return protocol.error(rid, "corrupt", str(e))
        # A bug: say so, indeterminately, and keep serving.
        self._throttled("internal_error", type=message["type"], error=repr(e))
        return protocol.error(rid, "internal", f"{type(e).__name__}: {e}")

    def _check_key(self, m: dict[str, Any]) -> None:
        key = m.get("key")
        if isinstance(key, bytes) and len(key) > self.engine.options.max_key_size:
            raise CoordinatorError(
                "bad_request", f"key of {len(key)} bytes exceeds the {self.engine.options.max_key_size}-byte limit")

    async def _get(self, m: dict[str, Any]) -> dict[str, Any]:
        result = await self.coordinator.get(m["key"])
        return {"type": "get_ok", "values": result.values, "context": result.context}

    async def _put(self, m: dict[str, Any]) -> dict[str, Any]:
        await self.coordinator.put(m["key"], m["value"], m["context"])
        return {"type": "put_ok"}

    async def _delete(self, m: dict[str, Any]) -> dict[str, Any]:
        await self.coordinator.put(m["key"], None, m["context"])
        return {"type": "delete_ok"}

    async def _coordinate(self, m: dict[str, Any]) -> dict[str, Any]:
        if m["op"] not in ("put", "delete") or (m["op"] == "put") != (m["value"] is not None):
            raise CoordinatorError("bad_request", "coordinate: op must be put (with a value) or delete")
        await self.coordinator.put(m["key"], m["value"], m["context"])
        return {"type": f"{m['op']}_ok"}

    async def _local_get(self, m: dict[str, Any]) -> dict[str, Any]:
        state = await self.replica.read(m["key"])
        return {"type": "local_get_ok", "values": state.values(), "context": state.client_context()}

    async def _preference_list(self, m: dict[str, Any]) -> dict[str, Any]:
        return {"type": "preference_list_ok",
                "nodes": list(self.ring.preference_list(m["key"], self.config.settings.n))}

    async def _replica_get(self, m: dict[str, Any]) -> dict[str, Any]:
        hint = self._hint_target(m)
        if hint is not None:
            held = await self.hints.get(hint, m["key"])
            return {"type": "replica_get_ok", "state": held.state if held else None}
        return {"type": "replica_get_ok", "state": await self.replica.read_raw(m["key"])}

    async def _replica_put(self, m: dict[str, Any]) -> dict[str, Any]:
        try:
            incoming = self.replica.decode(m["state"])
        except ValueError as e:
            raise CoordinatorError("bad_request", f"replica_put: {e}") from None
        hint = self._hint_target(m)
        if hint is not None:
            # A fallback keeps the copy for the primary, durably, and hands
            # it over later; it does not own the key, so it does not merge it.
            await self.hints.add(hint, m["key"], m["state"])
        else:
            await self.replica.merge(m["key"], incoming)
        return {"type": "replica_put_ok"}

    async def _ring_get(self, m: dict[str, Any]) -> dict[str, Any]:
        return {"type": "ring_get_ok", "epoch": self.ring_epoch, "ring": self._ring_dict(), "node": self.config.id}

    async def _ring_set(self, m: dict[str, Any]) -> dict[str, Any]:
        try:
            self._adopt(m["epoch"], Ring.from_dict(m["ring"]))
            self.addresses.update({str(k): str(v) for k, v in m["ring"].get("addresses", {}).items()})
        except (ValueError, TypeError, AttributeError) as e:
            raise CoordinatorError("bad_request", f"ring_set: {e}") from None
        return {"type": "ring_set_ok", "epoch": self.ring_epoch}

    async def _join_request(self, m: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"type": "join_ok", "epoch": await self._join(m["seed"])}
        except ValueError as e:  # a seed that is no HOST:PORT
            raise CoordinatorError("bad_request", f"join: {e}") from None

    async def _leave_request(self, m: dict[str, Any]) -> dict[str, Any]:
        return {"type": "leave_ok", "epoch": await self._leave()}

    async def _gossip(self, m: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.gossiper.handle(m)
        except ValueError as e:
            raise CoordinatorError("bad_request", f"gossip: {e}") from None

    async def _antientropy(self, m: dict[str, Any]) -> dict[str, Any]:
        return await self.antientropy.handle(m)

    async def _ae_round(self, m: dict[str, Any]) -> dict[str, Any]:
        return {"type": "ae_round_ok", "result": await self.antientropy.round()}

    async def _status(self, m: dict[str, Any]) -> dict[str, Any]:
        # The Merkle summary is the costly part of a status (milliseconds):
        # computed at most once per STATUS_REUSE seconds and ring, so a flood
        # of status requests cannot keep the node busy with it.
        now, cached = self.clock.monotonic(), self._summary
        if cached is not None and cached[1] == self.ring_epoch and now - cached[0] < STATUS_REUSE:
            ranges = cached[2]
        else:
            ranges = await self.antientropy.summary()
            self._summary = (now, self.ring_epoch, ranges)
        return {"type": "status_ok", **self.status(),
                "antientropy": {**self.antientropy.counters,
                                "ranges": {str(p): r for p, r in sorted(ranges.items())}}}

    def _hint_target(self, m: dict[str, Any]) -> str | None:
        """The primary a replica_put/replica_get stands in for, or None."""
        hint = m.get("hint")
        if hint is None or hint == self.config.id:
            return None
        if not isinstance(hint, str) or hint not in self.addresses:
            raise CoordinatorError("bad_request", f"hint for unknown node {hint!r:.40}")
        return hint

    def status(self) -> dict[str, Any]:
        s = self.config.settings
        storage = self.engine.stats()
        connected = self.transport.connected() if isinstance(self.transport, TcpTransport) else {}
        c = self.coordinator.counters
        return {
            "node": self.config.id,
            "cluster": s.cluster,
            "wall_ns": self.clock.wall_ns(),  # the node's own wall clock (skewed by a clock fault)
            "settings": {"n": s.n, "w": s.w, "r": s.r, "resolution": s.resolution, "quorum": s.quorum,
                         "read_repair": s.read_repair, "partitions": s.partitions},
            "ring_share": self.ring.shares().get(self.config.id, 0.0),
            "partitions_owned": len(self.ring.partitions_of(self.config.id)),
            "peers": {p: {"address": a, "connected": connected.get(p, False)}
                      for p, a in sorted(self.addresses.items()) if p != self.config.id},
            "ring_epoch": self.ring_epoch,
            "ring_nodes": list(self.ring.nodes),
            "rebalance": self.rebalancer.stats(),
            "connections_open": len(self._links),
            "buffered_bytes": self._budget.used,
            "counters": {**self.counters, "gets": c.gets, "puts": c.puts, "deletes": c.deletes,
                         "forwarded": c.forwarded, "read_repairs": c.read_repairs,
                         **{f"errors.{k}": v for k, v in sorted(c.errors.items())}},
            "handoff": self.handoff.stats(),
            "membership": self.gossiper.view(),
            "generation": self.generation,
            "storage": {k: storage[k] for k in ("tables", "table_bytes", "memtable_bytes", "flushes", "compactions")},
        }


_Handler = Callable[[Node, dict[str, Any]], Awaitable[dict[str, Any]]]
# What answers each request; who may send it is `protocol.ACCESS`.
_HANDLERS: dict[str, _Handler] = {
    "get": Node._get, "put": Node._put, "delete": Node._delete, "local_get": Node._local_get,
    "preference_list": Node._preference_list, "status": Node._status,
    "replica_get": Node._replica_get, "replica_put": Node._replica_put, "coordinate": Node._coordinate,
    **{kind: Node._antientropy for kind in AE_REQUESTS},
    "gossip": Node._gossip, "ring_get": Node._ring_get, "ring_set": Node._ring_set,
    "ae_round": Node._ae_round, "join": Node._join_request, "leave": Node._leave_request,
}
if set(_HANDLERS) != protocol.REQUESTS:  # the two tables must name the same requests
    raise ImportError(f"requests without a handler or an access rule: {set(_HANDLERS) ^ protocol.REQUESTS}")
