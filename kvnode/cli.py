"""The `kvnode` command line.

- `kvnode serve`: run a node (flags or `--config node.toml`).
- `kvnode get|put|delete|status --addr HOST:PORT ...`: a client.
- `kvnode db ...`: inspect and edit a node's data directory offline (the node
  must not be running: the directory is locked while open).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import config as config_mod
from .storage import CorruptionError, Engine, LockHeldError, NotADataDirectory
from .versions import RESOLUTIONS

console = Console()


def _encode(text: str, as_hex: bool) -> bytes:
    if as_hex:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise click.BadParameter(f"{text!r} is not hexadecimal") from None
    return text.encode()


def _show(data: bytes, as_hex: bool) -> str:
    if as_hex:
        return data.hex()
    return data.decode("utf-8", "backslashreplace")


@contextmanager
def _opened(path: str, *, read_only: bool = False, salvage: bool = False) -> Iterator[Engine]:
    """The engine of a data directory; read-only for the commands that only
    look (they create and change nothing, and refuse a directory that is not
    a data directory); for salvage, even with tables that cannot be read."""
    try:
        db = Engine.open(path, read_only=read_only, drop_unreadable_tables=salvage)
    except (LockHeldError, NotADataDirectory) as e:
        raise click.ClickException(str(e)) from None
    except CorruptionError as e:
        raise click.ClickException(f"corrupt data directory: {e}") from None
    except OSError as e:
        raise click.ClickException(f"cannot open {path}: {e}") from None
    try:
        yield db
    except CorruptionError as e:
        raise click.ClickException(f"corruption: {e} (`kvnode db salvage {path}` drops damaged blocks)") from None
    finally:
        db.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamo-harness")
def cli() -> None:
    """A reference Dynamo-style key-value node."""


def _limit_help(name: str) -> str:
    """A `config.Limits` field's help and default, from its one definition."""
    f = next(f for f in dataclasses.fields(config_mod.Limits) if f.name == name)
    return f"{f.metadata['help'][0].upper()}{f.metadata['help'][1:]}.  [default: {f.default}]"


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True),
              help="A TOML file with any of the settings below (flags override it).")
@click.option("--id", "node_id", help="This node's id, as in --peers.")
@click.option("--listen", help="HOST:PORT to listen on.  [default: 127.0.0.1:7000]")
@click.option("--data", help="Data directory.  [default: data]")
@click.option("--peers", help="Every member: ID=HOST:PORT,... (this node included).")
@click.option("--cluster", help="Cluster name; peers from another cluster are refused.  [default: kvnode]")
@click.option("--n", type=int, help="Replicas per key.  [default: 3]")
@click.option("--w", type=int, help="Write quorum.  [default: 2]")
@click.option("--r", type=int, help="Read quorum.  [default: 2]")
@click.option("--resolution", type=click.Choice(list(RESOLUTIONS)), help="[default: dvv]")
@click.option("--quorum", type=click.Choice(list(config_mod.QUORUM)),
              help="sloppy: fallbacks hold hints for down primaries and count toward W/R; "
                   "strict: primaries only.  [default: sloppy]")
@click.option("--hint-ttl", "hint_ttl", type=float, help="Seconds a hint is kept.  [default: 3600]")
@click.option("--handoff-interval", "handoff_interval", type=float,
              help="Seconds between hint deliveries.  [default: 1.0]")
@click.option("--ae-interval", "ae_interval", type=float,
              help="Seconds between anti-entropy rounds; 0: only on demand.  [default: 10]")
@click.option("--read-repair", "read_repair", type=click.Choice(list(config_mod.READ_REPAIR)),
              help="[default: async]")
@click.option("--partitions", type=int, help="Ring partitions (a power of two).  [default: 256]")
@click.option("--request-timeout", "request_timeout", type=float, help="Seconds.  [default: 2.0]")
@click.option("--connect-timeout", "connect_timeout", type=float,
              help="Seconds to reach a peer before counting it down.  [default: 0.5]")
@click.option("--max-siblings", "max_siblings", type=int, help="Per key; a put beyond fails.  [default: 100]")
@click.option("--sync", type=click.Choice(["always", "interval", "never"]),
              help="WAL fsync policy.  [default: always]")
@click.option("--log", "log_file", type=click.Path(dir_okay=False), help="Structured log file (default: stderr).")
@click.option("--gossip-interval", "gossip_interval", type=float, help="Seconds.  [default: 1.0]")
@click.option("--suspect-after", "suspect_after", type=float,
              help="Seconds without a heartbeat before a node is suspect.  [default: 5]")
@click.option("--dead-after", "dead_after", type=float, help="... and dead.  [default: 10]")
@click.option("--secret-file", "secret_file", type=click.Path(dir_okay=False),
              help="The cluster's shared secret: peers must prove they hold it (else $KVNODE_SECRET).")
@click.option("--token-file", "token_file", type=click.Path(dir_okay=False),
              help="A token clients must present (else $KVNODE_CLIENT_TOKEN).")
@click.option("--admin-token-file", "admin_token_file", type=click.Path(dir_okay=False),
              help="A token for admin requests: join, leave, anti-entropy (else $KVNODE_ADMIN_TOKEN; "
                   "without it: the cluster secret, or any client on a node without a secret).")
@click.option("--max-inflight", "max_inflight", type=int, help=_limit_help("max_inflight"))
@click.option("--max-inflight-peer", "max_inflight_peer", type=int, help=_limit_help("max_inflight_peer"))
@click.option("--max-rate", "max_rate", type=float, help=_limit_help("max_rate"))
@click.option("--frame-deadline", "frame_deadline", type=float, help=_limit_help("frame_deadline"))
@click.option("--max-buffered", "max_buffered", type=int, help=_limit_help("max_buffered"))
@click.option("--max-connections", "max_connections", type=int, help=_limit_help("max_connections"))
@click.option("--seed", type=int, help="Seed for the node's random choices (gossip peers).")
@click.option("--block-cache-bytes", "block_cache_bytes", type=click.IntRange(min=0),
              help="Bytes of decoded table blocks kept in memory; a larger block is not kept; 0: none.  "
                   "[default: 67108864 (64 MiB)]")
def serve(config_file: str | None, node_id: str | None, log_file: str | None, **flags: object) -> None:
    """Run a node until SIGTERM (which flushes and exits cleanly)."""
    import asyncio

    from .auth import AuthConfigError
    from .clock import SystemClock
    from .log import EventLog
    from .membership import GenerationError
    from .memory import return_large_blocks
    from .server import Node

    return_large_blocks()  # large values go back to the system when freed (see kvnode.memory)
    values = {"id": node_id, "log": log_file, **flags}
    try:
        if config_file:
            node_config = config_mod.load_toml(config_file, values)
        else:
            node_config = config_mod.build({k: v for k, v in values.items() if v is not None})
    except config_mod.ConfigError as e:
        raise click.UsageError(str(e)) from None
    clock = SystemClock()
    stream = open(node_config.log, "a", encoding="utf-8") if node_config.log else None  # noqa: SIM115
    log = EventLog(node_config.id, clock, stream)
    try:
        node = Node(node_config, clock=clock, log=log)
        node.engine.set_block_cache_bytes(node_config.block_cache_bytes)
    except (LockHeldError, AuthConfigError, GenerationError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except CorruptionError as e:
        raise click.ClickException(f"corrupt data directory: {e}") from None
    except OSError as e:
        raise click.ClickException(f"cannot start: {e}") from None
    try:
        asyncio.run(node.run())
    except OSError as e:
        raise click.ClickException(f"cannot listen on {node_config.listen[0]}:{node_config.listen[1]}: {e}") from None
    finally:
        log.close()


HEX = click.option("--hex", "as_hex", is_flag=True, help="Keys and values are hexadecimal.")
ADDR = click.option("--addr", required=True, help="HOST:PORT of any node (comma-separate several to fail over).")
CLUSTER = click.option("--cluster", default="kvnode", show_default=True, help="The cluster's name.")
TIMEOUT = click.option("--timeout", default=5.0, show_default=True, type=float, help="Seconds.")


@contextmanager
def _client(addr: str, cluster: str, timeout: float, *, admin: bool = False) -> Iterator[Any]:
    import os

    from .client import Client, KvError

    # Admin requests present $KVNODE_ADMIN_TOKEN when set, or prove $KVNODE_SECRET.
    admin_token = os.environ.get("KVNODE_ADMIN_TOKEN") if admin else None
    token = admin_token or os.environ.get("KVNODE_CLIENT_TOKEN")
    secret = os.environ.get("KVNODE_SECRET") if admin and not admin_token else None
    try:
        client = Client(addr, cluster=cluster, timeout=timeout, token=token.encode() if token else None,
                        secret=secret.strip().encode() if secret and secret.strip() else None)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--addr") from None
    try:
        yield client
    except KvError as e:
        outcome = "did not happen" if e.definite else "may or may not have happened"
        raise click.ClickException(f"{e.code}: {e} (the operation {outcome})") from None
    finally:
        client.close()


@cli.command()
@ADDR
@CLUSTER
@TIMEOUT
@click.argument("key")
@click.option("--local", is_flag=True, help="This node's own replica only: no quorum, no read repair.")
@HEX
def get(addr: str, cluster: str, timeout: float, key: str, local: bool, as_hex: bool) -> None:
    """Print KEY's siblings, one per line, then its context (pass it to put)."""
    with _client(addr, cluster, timeout) as client:
        k = _encode(key, as_hex)
        read = client.local_get(k) if local else client.get(k)
    for value in read.values:
        click.echo(_show(value, as_hex))
    if not read.values:
        click.echo("(absent)", err=True)
    click.echo(f"context: {read.context.hex() if read.context else '-'}", err=True)


def _context(text: str | None) -> bytes | None:
    if text in (None, "", "-"):
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter("the context is the hex string `kvnode get` printed", param_hint="--context") from None


@cli.command()
@ADDR
@CLUSTER
@TIMEOUT
@click.argument("key")
@click.argument("value")
@click.option("--context", help="The context from a get: replaces the siblings it saw. Without: a sibling.")
@HEX
def put(addr: str, cluster: str, timeout: float, key: str, value: str, context: str | None, as_hex: bool) -> None:
    """Write VALUE under KEY."""
    with _client(addr, cluster, timeout) as client:
        client.put(_encode(key, as_hex), _encode(value, as_hex), _context(context))


@cli.command()
@ADDR
@CLUSTER
@TIMEOUT
@click.argument("key")
@click.option("--context", help="The context from a get: deletes the siblings it saw.")
@HEX
def delete(addr: str, cluster: str, timeout: float, key: str, context: str | None, as_hex: bool) -> None:
    """Delete KEY (a tombstone; a concurrent write survives as a sibling)."""
    with _client(addr, cluster, timeout) as client:
        client.delete(_encode(key, as_hex), _context(context))


@cli.command()
@ADDR
@CLUSTER
@TIMEOUT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(addr: str, cluster: str, timeout: float, as_json: bool) -> None:
    """A node's ring share, peers and counters."""
    with _client(addr, cluster, timeout) as client:
        info = client.status()
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    table = Table(title=f"node {info.get('node')} of cluster {info.get('cluster')}")
    table.add_column("")
    table.add_column("value", justify="right")
    settings = info.get("settings", {})
    table.add_row("n/w/r", f"{settings.get('n')}/{settings.get('w')}/{settings.get('r')}")
    for name in ("resolution", "quorum", "read_repair", "partitions"):
        table.add_row(name, str(settings.get(name)))
    table.add_row("ring share", f"{info.get('ring_share', 0):.2%} ({info.get('partitions_owned')} partitions)")
    for peer, p in sorted(info.get("peers", {}).items()):
        table.add_row(f"peer {peer}", f"{p['address']} {'connected' if p['connected'] else 'not connected'}")
    for name, value in info.get("counters", {}).items():
        table.add_row(name, f"{value:,}")
    for name, value in info.get("storage", {}).items():
        table.add_row(f"storage.{name}", f"{value:,}")
    table.add_row("ring epoch", f"{info.get('ring_epoch', 0)} ({', '.join(info.get('ring_nodes', []))})")
    for member, m in sorted(info.get("membership", {}).items()):
        table.add_row(f"member {member}", f"{m.get('state')} ({m.get('status')}, generation {m.get('generation')})")
    ranges = info.get("antientropy", {}).get("ranges", {})
    if ranges:
        keys = sum(r.get("keys", 0) for r in ranges.values())
        table.add_row("anti-entropy", f"{len(ranges)} ranges, {keys:,} keys (roots: status --json)")
    handoff = info.get("handoff", {})
    for target, count in sorted(handoff.get("pending", {}).items()):
        table.add_row(f"hints pending for {target}", f"{count:,}")
    for name in ("delivered", "expired"):
        if name in handoff:
            table.add_row(f"hints {name}", f"{handoff[name]:,}")
    console.print(table)


@cli.group()
def admin() -> None:
    """Operate a running node."""


@admin.command("anti-entropy")
@ADDR
@CLUSTER
@click.option("--timeout", default=60.0, show_default=True, type=float, help="Seconds.")
def admin_anti_entropy(addr: str, cluster: str, timeout: float) -> None:
    """Run an anti-entropy round on the node now: compare Merkle trees with the
    other replicas of every range it holds and exchange what differs."""
    with _client(addr, cluster, timeout, admin=True) as client:
        result = client.admin("ae_round")["result"]
    click.echo(" ".join(f"{k}={v}" for k, v in result.items()))


@admin.command("join")
@ADDR
@CLUSTER
@click.option("--seed", required=True, help="HOST:PORT of any node of the cluster to join.")
@click.option("--timeout", default=30.0, show_default=True, type=float, help="Seconds.")
def admin_join(addr: str, cluster: str, seed: str, timeout: float) -> None:
    """Make the (running, empty) node at --addr join the cluster --seed is in.
    It takes partitions from the most loaded nodes; keys move in the background."""
    with _client(addr, cluster, timeout, admin=True) as client:
        epoch = client.admin("join", seed=seed)["epoch"]
    click.echo(f"joined: ring epoch {epoch}")


@admin.command("leave")
@ADDR
@CLUSTER
@click.option("--timeout", default=30.0, show_default=True, type=float, help="Seconds.")
def admin_leave(addr: str, cluster: str, timeout: float) -> None:
    """Make the node at --addr hand its partitions to the others and leave;
    `kvnode status` shows it as left once every key has moved."""
    with _client(addr, cluster, timeout, admin=True) as client:
        epoch = client.admin("leave")["epoch"]
    click.echo(f"leaving: ring epoch {epoch}")


@cli.group()
def db() -> None:
    """Inspect or edit a data directory offline (the node must be stopped)."""


DIR = click.argument("directory", type=click.Path(file_okay=False))


@db.command("get")
@DIR
@click.argument("key")
@HEX
def db_get(directory: str, key: str, as_hex: bool) -> None:
    """Print the value stored under KEY (exit 1 if absent)."""
    k = _encode(key, as_hex)  # a bad key is a usage error before the directory is looked at
    with _opened(directory, read_only=True) as engine:
        value = engine.get(k)
    if value is None:
        click.echo("(absent)", err=True)
        sys.exit(1)
    click.echo(_show(value, as_hex))


@db.command("put")
@DIR
@click.argument("key")
@click.argument("value")
@HEX
def db_put(directory: str, key: str, value: str, as_hex: bool) -> None:
    """Store VALUE under KEY."""
    with _opened(directory) as engine:
        engine.put(_encode(key, as_hex), _encode(value, as_hex))


@db.command("delete")
@DIR
@click.argument("key")
@HEX
def db_delete(directory: str, key: str, as_hex: bool) -> None:
    """Delete KEY (write a tombstone)."""
    with _opened(directory) as engine:
        engine.delete(_encode(key, as_hex))


@db.command("scan")
@DIR
@click.option("--start", default=None, help="First key (inclusive).")
@click.option("--end", default=None, help="Last key (exclusive).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=0), help="0: no limit.")
@HEX
def db_scan(directory: str, start: str | None, end: str | None, limit: int, as_hex: bool) -> None:
    """Print keys and values in order, one pair per line, tab-separated."""
    lo = None if start is None else _encode(start, as_hex)
    hi = None if end is None else _encode(end, as_hex)
    with _opened(directory, read_only=True) as engine:
        for n, (k, v) in enumerate(engine.scan(lo, hi)):
            if limit and n >= limit:
                click.echo(f"(stopped after {limit}; use --limit 0 for all)", err=True)
                break
            click.echo(f"{_show(k, as_hex)}\t{_show(v, as_hex)}")


@db.command("stats")
@DIR
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def db_stats(directory: str, as_json: bool) -> None:
    """Tables per tier, bytes, what recovery replayed or dropped."""
    with _opened(directory, read_only=True) as engine:
        stats = engine.stats()
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    table = Table(title=f"kvnode data directory {directory}")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in stats.items():
        if name in ("tiers", "runs"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                table.add_row(f"{name}.{sub}", f"{v:,}")
        else:
            table.add_row(name, f"{value:,}")
    for tier in stats["tiers"]:
        table.add_row(f"tier {tier['tier']}", f"{tier['tables']} tables, {tier['bytes']:,} bytes")
    console.print(table)


def _range(after: bytes | None, last: bytes) -> str:
    return f"keys {'(first)' if after is None else '> ' + after.hex()} .. <= {last.hex()} (hex)"


@db.command("check")
@DIR
def db_check(directory: str) -> None:
    """Verify every block checksum and read every live entry; name each
    damaged block and the key range it held (exit 1 on damage)."""
    with _opened(directory, read_only=True) as engine:
        damaged = engine.verify()
        count = sum(1 for _ in engine.scan(damaged=[]))
    if damaged:
        for e in damaged:
            assert e.last is not None
            click.echo(f"damaged: {e.path} block {e.block}: {_range(e.after, e.last)}", err=True)
        click.echo(f"{len(damaged)} damaged block(s), {count:,} live keys readable; "
                   f"`kvnode db salvage {directory}` rebuilds the tables without them", err=True)
        sys.exit(1)
    click.echo(f"ok: {count:,} live keys, every block checksum verified")


@db.command("salvage")
@DIR
def db_salvage(directory: str) -> None:
    """Rebuild every table that has damaged blocks without them, and list the
    key ranges lost (a replica gets them back from the others through
    anti-entropy)."""
    with _opened(directory, salvage=True) as engine:
        lost = engine.salvage()
    if not lost:
        click.echo("nothing to salvage: every block checksum verified")
        return
    for r in lost:
        older = f"; {r.older_keys:,} of them read an older version from an older table" if r.older_keys else ""
        if r.block is None:
            assert r.first is not None
            where = f"the whole table (unreadable, kept as {r.table:06d}.sst.damaged): " \
                    f"keys {r.first.hex()} .. {r.last.hex()} (hex)"
        else:
            where = f"block {r.block}: {_range(r.after, r.last)}"
        click.echo(f"lost: table {r.table:06d} {where}{older}")
    click.echo(f"salvaged: {len(lost)} damaged block(s) dropped")


@db.command("compact")
@DIR
def db_compact(directory: str) -> None:
    """Flush and merge every table into one, dropping tombstones."""
    with _opened(directory) as engine:
        engine.compact()
        stats = engine.stats()
    click.echo(f"compacted into {stats['tables']} table(s), {stats['table_bytes']:,} bytes")


def main() -> None:
    cli()
