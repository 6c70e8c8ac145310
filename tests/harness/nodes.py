"""Node programs for the backend tests, which start nodes through a backend
alone (no system adapter, no runner):

- `kvnode_argv`: `kvnode serve` for a place, with the test's settings;
- `ECHO_NODE`: a stand-in for a system with several ports, given as
  `python -c ECHO_NODE ADDRESS...` (so that it runs where this package is not
  installed: in a container, on an ssh host), that echoes back whatever each
  of its listen addresses receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.backends.base import NodePlace


def kvnode_argv(place: NodePlace, cluster: str, settings: Mapping[str, Any]) -> list[str]:
    """`kvnode serve` for this place (its `client` port), in `cluster`, with
    `settings` as flags; no fsync (tests only)."""
    peers = ",".join(f"{name}={ports['client']}" for name, ports in sorted(place.peers.items()))
    argv = [place.python, "-m", "kvnode", "serve", "--id", place.name, "--listen", place.listen["client"],
            "--data", place.data_dir, "--peers", peers, "--cluster", cluster,
            "--log", f"{place.log_dir}/kvnode.log", "--seed", "1", "--sync", "never"]
    for key, value in settings.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


ECHO_NODE = """
import asyncio, sys

async def echo(reader, writer):
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()

async def main():
    for address in sys.argv[1:]:
        host, port = address.rsplit(":", 1)
        await asyncio.start_server(echo, host, int(port))
    await asyncio.Event().wait()

asyncio.run(main())
"""
