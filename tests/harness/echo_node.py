"""A stand-in for a system with several ports, for the backend tests: a
program (given as `python -c ECHO_NODE ADDRESS...`, so that it runs where
this package is not installed: in a container, on an ssh host) that echoes
back whatever each of its listen addresses receives."""

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
