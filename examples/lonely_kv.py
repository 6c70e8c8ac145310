"""A complete, minimal system under test for `harness run --system
examples.lonely_kv:LonelyKV`: a key-value server that keeps one value per key
in memory and does not replicate at all. Every node is an island, so the
harness must find it out (reads through other nodes miss acknowledged writes;
final reads disagree).

It shows the parts of an adapter (harness/systems/base.py):

- a `DB`: the command that starts one node in the foreground (the backend
  daemonizes, kills and pauses it), when it is ready, and whether it has
  converged (it cannot tell: None);
- a `Client` per workload: open a connection to one node, turn an
  `Invocation` into a request, and decide `ok`, `fail` (certainly did not
  happen: nothing was sent) or `info` (may have happened);
- the `System` that bundles them and says what it promises: one value per
  key, a linearizable register (a promise it cannot keep: it replicates
  nothing, and the harness finds out).

The server: `python -m examples.lonely_kv --listen HOST:PORT`. One JSON
object per line each way: {"op": "get", "key": K} -> {"values": [V]} (or []),
{"op": "put", "key": K, "value": V} -> {"ok": true}, {"op": "delete", "key": K}
-> {"ok": true}.

The register workload also deletes (a share of its operations; `harness run
--deletes 0` turns that off). A client for a store that cannot delete
answers a delete `Completion("fail", error="unknown operation 'delete'")`, as
this one answers anything it does not know: `fail` certainly did not happen,
so the checkers leave it out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from contract import Claim, Completion, Invocation, Promise
from harness.systems.base import NodeSetup

# ------------------------------------------------------------------ server

async def serve(host: str, port: int) -> None:
    data: dict[str, str] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                request = json.loads(line)
                if request["op"] == "get":
                    key = request["key"]
                    reply: dict[str, Any] = {"values": [data[key]] if key in data else []}
                elif request["op"] == "delete":
                    data.pop(request["key"], None)
                    reply = {"ok": True}
                else:
                    data[request["key"]] = request["value"]
                    reply = {"ok": True}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, KeyError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A key-value server that replicates nothing.")
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    host, _, port = parser.parse_args().listen.rpartition(":")
    asyncio.run(serve(host, int(port)))


# ------------------------------------------------------------------ adapter

class LonelyDB:
    def command(self, node: NodeSetup) -> tuple[list[str], dict[str, str]]:
        return [node.place.python, "-m", "examples.lonely_kv", "--listen", node.place.listen["client"]], {}

    async def ready(self, node: NodeSetup, timeout: float) -> bool:
        host, _, port = node.place.client["client"].rpartition(":")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                return True
            except OSError:
                await asyncio.sleep(0.05)
        return False

    async def converged(self, nodes: list[NodeSetup]) -> bool | None:
        return None  # it cannot tell; the runner waits a little instead


class LonelyClient:
    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.address = ("", 0)

    async def open(self, node: NodeSetup) -> None:
        host, _, port = node.place.client["client"].rpartition(":")
        self.address = (host, int(port))

    async def invoke(self, op: Invocation) -> Completion:
        if op.f not in ("read", "write", "delete"):
            return Completion("fail", error=f"unknown operation {op.f!r}")  # nothing was sent
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(*self.address)
        except OSError as e:
            return Completion("fail", error=f"connect: {e}")  # nothing was sent
        assert self.reader is not None
        if op.f == "read":
            request: dict[str, Any] = {"op": "get", "key": op.key}
        elif op.f == "delete":
            request = {"op": "delete", "key": op.key}
        else:
            request = {"op": "put", "key": op.key, "value": op.value}
        try:
            self.writer.write(json.dumps(request).encode() + b"\n")
            reply = json.loads(await self.reader.readline())
        except (OSError, ValueError) as e:
            await self.close()
            return Completion("info", error=f"{type(e).__name__}: {e}")  # sent: it may have happened
        if op.f == "read":
            return Completion("ok", reply["values"])
        return Completion("ok", op.value)  # a delete's value is None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class LonelyKV:
    name = "lonely-kv"

    def __init__(self) -> None:
        self.db = LonelyDB()

    def client(self, workload: str) -> LonelyClient:
        if workload != "register":
            raise ValueError(f"lonely-kv only has a client for the register workload, not {workload!r}")
        return LonelyClient()

    def promise(self, workload: str) -> Promise:
        return Promise(claims=(Claim(name="linearizable", why="each key holds one value"),))


if __name__ == "__main__":
    main()
