"""The node process: an asyncio TCP server in front of a coordinator and a
replica, and the start-up and shutdown around them.

Each connection starts with the protocol handshake (wrong cluster or version:
an error reply and the connection is closed). Then every request frame is
handled in a task of its own, so a connection may pipeline requests and get
replies out of order. A malformed frame gets an error reply (when its id can
be read) and closes that connection only: the node keeps serving everyone
else and nothing stored changes.

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
from typing import Any

from . import protocol
from .antientropy import REQUESTS as AE_REQUESTS
from .antientropy import AntiEntropy
from .clock import Clock, SystemClock
from .config import NodeConfig
from .coordinator import Coordinator, CoordinatorError
from .handoff import HandoffManager, HandoffSettings, HintStore, resolver_merge
from .log import EventLog
from .offload import Offload, ThreadOffload
from .replica import Replica
from .ring import Ring
from .storage import Engine
from .transport import TcpTransport, Transport
from .versions import resolver


class Node:
    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock | None = None,
        offload: Offload | None = None,
        log: EventLog | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.offload = offload or ThreadOffload()
        self.log = log or EventLog(config.id, self.clock)
        s = config.settings
        self.ring = Ring.build(config.members, partitions=s.partitions)
        self.engine = Engine.open(config.data, sync=config.sync)
        self.replica = Replica(self.engine, resolver(s.resolution, clock=self.clock, max_siblings=s.max_siblings),
                               self.offload)
        self.transport = transport or TcpTransport(
            config.id, s.cluster, {k: v for k, v in config.members.items() if k != config.id},
            clock=self.clock, connect_timeout=s.connect_timeout,
        )
        self.hints = HintStore.open(
            os.path.join(config.data, "hints"), clock=self.clock, offload=self.offload,
            merge=resolver_merge(self.replica.resolver), log=self.log,
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
        self._tasks: list[asyncio.Task[Any]] = []
        self.coordinator = Coordinator(
            node=config.id, ring=self.ring, settings=s, replica=self.replica,
            transport=self.transport, clock=self.clock, log=self.log,
        )
        self._server: asyncio.Server | None = None
        self._requests: set[asyncio.Task[Any]] = set()
        self._connections: set[asyncio.StreamWriter] = set()
        self._stopped = asyncio.Event()
        self.counters: dict[str, int] = {"connections": 0, "requests": 0, "protocol_errors": 0}

    # ---------------------------------------------------------- lifecycle

    async def start(self) -> None:
        host, port = self.config.listen
        self._server = await asyncio.start_server(self._serve, host, port, limit=protocol.MAX_FRAME + 64)
        s = self.config.settings
        self._tasks.append(asyncio.ensure_future(self.handoff.run()))
        if s.ae_interval > 0:
            self._tasks.append(asyncio.ensure_future(self.antientropy.run(s.ae_interval)))
        self.log.event("started", listen=f"{host}:{port}", data=self.config.data,
                       members=sorted(self.config.members), n=s.n, w=s.w, r=s.r,
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

    # -------------------------------------------------------- connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counters["connections"] += 1
        self._connections.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            if not await self._handshake(reader, writer):
                return
            while True:
                try:
                    message = await protocol.read_frame(reader)
                except protocol.ProtocolError as e:
                    self._protocol_error(writer, e, peer)
                    return
                if message is None:
                    return
                if message["type"] not in protocol.REQUESTS:
                    self._protocol_error(
                        writer, protocol.ProtocolError(f"{message['type']} is not a request", message["id"]), peer
                    )
                    return
                task = asyncio.ensure_future(self._answer(message, writer))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
        except (ConnectionError, OSError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            hello = await asyncio.wait_for(protocol.read_frame(reader), self.config.settings.request_timeout * 5)
        except (protocol.ProtocolError, TimeoutError) as e:
            self._protocol_error(writer, e if isinstance(e, protocol.ProtocolError)
                                 else protocol.ProtocolError("no handshake"), writer.get_extra_info("peername"))
            return False
        if hello is None:
            return False
        rid = hello["id"]
        if hello["type"] != "hello":
            writer.write(protocol.encode(protocol.error(rid, "bad_request", "expected a hello handshake first")))
            return False
        if hello["version"] != protocol.VERSION:
            writer.write(protocol.encode(protocol.error(
                rid, "bad_request", f"protocol version {hello['version']} not spoken (this node: {protocol.VERSION})")))
            return False
        if hello["cluster"] != self.config.settings.cluster:
            self.log.event("refused_peer", reason="wrong_cluster", cluster=hello["cluster"], node=hello["node"])
            writer.write(protocol.encode(protocol.error(
                rid, "wrong_cluster",
                f"this node belongs to cluster {self.config.settings.cluster!r}, not {hello['cluster']!r}")))
            return False
        writer.write(protocol.encode({"type": "hello_ok", "id": rid, "version": protocol.VERSION,
                                      "cluster": self.config.settings.cluster, "node": self.config.id}))
        return True

    def _protocol_error(self, writer: asyncio.StreamWriter, error: protocol.ProtocolError, peer: object) -> None:
        self.counters["protocol_errors"] += 1
        self.log.event("protocol_error", peer=str(peer), error=str(error))
        with contextlib.suppress(Exception):
            writer.write(protocol.encode(protocol.error(error.request_id or 0, "bad_request", str(error))))

    # ----------------------------------------------------------- requests

    async def _answer(self, message: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        self.counters["requests"] += 1
        rid = message["id"]
        try:
            reply = await self._dispatch(message)
        except CoordinatorError as e:
            reply = protocol.error(rid, e.code, e.message)
        except Exception as e:  # a bug: say so, indeterminately, and keep serving
            self.log.event("internal_error", type=message["type"], error=repr(e))
            reply = protocol.error(rid, "internal", f"{type(e).__name__}: {e}")
        reply["id"] = rid
        if not writer.is_closing():
            writer.write(protocol.encode(reply))

    async def _dispatch(self, m: dict[str, Any]) -> dict[str, Any]:
        kind = m["type"]
        c = self.coordinator
        if kind == "get":
            result = await c.get(m["key"])
            return {"type": "get_ok", "values": result.values, "context": result.context}
        if kind == "put":
            await c.put(m["key"], m["value"], m["context"])
            return {"type": "put_ok"}
        if kind == "delete":
            await c.put(m["key"], None, m["context"])
            return {"type": "delete_ok"}
        if kind == "coordinate":
            if m["op"] not in ("put", "delete") or (m["op"] == "put") != (m["value"] is not None):
                raise CoordinatorError("bad_request", "coordinate: op must be put (with a value) or delete")
            await c.put(m["key"], m["value"], m["context"])
            return {"type": f"{m['op']}_ok"}
        if kind == "local_get":
            state = await self.replica.read(m["key"])
            return {"type": "local_get_ok", "values": state.values(), "context": state.client_context()}
        if kind == "replica_get":
            hint = self._hint_target(m)
            if hint is not None:
                held = await self.hints.get(hint, m["key"])
                return {"type": "replica_get_ok", "state": held.state if held else None}
            return {"type": "replica_get_ok", "state": await self.replica.read_raw(m["key"])}
        if kind == "replica_put":
            try:
                incoming = self.replica.resolver.decode(m["state"])
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
        if kind in AE_REQUESTS:
            return await self.antientropy.handle(m)
        if kind == "ae_round":
            return {"type": "ae_round_ok", "result": await self.antientropy.round()}
        if kind == "status":
            ranges = await self.antientropy.summary()
            return {"type": "status_ok", **self.status(),
                    "antientropy": {**self.antientropy.counters,
                                    "ranges": {str(p): r for p, r in sorted(ranges.items())}}}
        raise CoordinatorError("bad_request", f"unhandled request type {kind}")

    def _hint_target(self, m: dict[str, Any]) -> str | None:
        """The primary a replica_put/replica_get stands in for, or None."""
        hint = m.get("hint")
        if hint is None or hint == self.config.id:
            return None
        if not isinstance(hint, str) or hint not in self.config.members:
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
            "settings": {"n": s.n, "w": s.w, "r": s.r, "resolution": s.resolution, "quorum": s.quorum,
                         "read_repair": s.read_repair, "partitions": s.partitions},
            "ring_share": self.ring.shares().get(self.config.id, 0.0),
            "partitions_owned": len(self.ring.partitions_of(self.config.id)),
            "peers": {p: {"address": f"{h}:{port}", "connected": connected.get(p, False)}
                      for p, (h, port) in sorted(self.config.members.items()) if p != self.config.id},
            "counters": {**self.counters, "gets": c.gets, "puts": c.puts, "deletes": c.deletes,
                         "forwarded": c.forwarded, "read_repairs": c.read_repairs,
                         **{f"errors.{k}": v for k, v in sorted(c.errors.items())}},
            "handoff": self.handoff.stats(),
            "storage": {k: storage[k] for k in ("tables", "table_bytes", "memtable_bytes", "flushes", "compactions")},
        }
