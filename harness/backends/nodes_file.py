"""`nodes.toml`: the hosts the `ssh` backend runs nodes on.

The file is TOML: an optional `[defaults]` table, any number of `[[node]]`
tables (the order is the nodes' order), and an optional top-level
`known_hosts` (a file, or a list of files, of host keys to trust on top of
`/etc/ssh/ssh_known_hosts` and `~/.ssh/known_hosts`). Relative paths are
relative to the nodes file's directory, `~` is the local home.

    known_hosts = ".vagrant/harness/known_hosts"

    [defaults]                 # any node field; each [[node]] may override it
    user = "vagrant"
    key = ".vagrant/harness/id_ed25519"
    sudo = true
    clock = "real"             # skew the VMs' own clocks (default "faketime")

    [[node]]
    host = "192.168.56.101"

    [[node]]
    name = "db2"
    host = "192.168.56.102"
    port = 2222

A node's fields:

| field | default | meaning |
|---|---|---|
| `host` | (required) | the address the harness dials, the node listens on, and the other nodes dial (an IP address, or a name every one of them resolves to the same address) |
| `port` | 22 | the SSH port |
| `user` | the local user | the SSH user; the node runs as this user |
| `key` | SSH agent, then ~/.ssh/id_* | the private key file to log in with |
| `sudo` | false | run iptables and tc through `sudo -n` (false: the user is root) |
| `name` | `n<i>` (1-based) | the node's name in the harness, the history and the run store |
| `python` | `python3` | the host's Python (3.11, as the wheels are built for the harness's) |
| `workdir` | `~/dynamo-harness` | where the venv, the node's data and logs live on the host (`~`: the remote home); give nodes on one host distinct workdirs |
| `node_port` | 7000 | the node's first port: a system that listens on several (etcd: client and peer) gets `node_port`, `node_port + 1`, ... |
| `clock` | `"faketime"` | how clock faults reach the node: `"faketime"` preloads libfaketime into the node's process (its wall clock only; not Go or statically linked programs); `"real"` sets the host's own wall clock through `sudo -n` (the host must be the node's alone: every process on it sees the skew, as in Jepsen) |

Every mistake is a `NodesFileError` (a ValueError) naming the file, the node
and the field.
"""

from __future__ import annotations

import getpass
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CLOCKS", "HostSpec", "NodesFile", "NodesFileError", "load", "parse"]

DEFAULT_SSH_PORT = 22
DEFAULT_NODE_PORT = 7000
DEFAULT_PYTHON = "python3"
DEFAULT_WORKDIR = "~/dynamo-harness"
CLOCKS = ("faketime", "real")
DEFAULT_CLOCK = "faketime"

_NODE_FIELDS = {"host", "port", "user", "key", "sudo", "name", "python", "workdir", "node_port", "clock"}
_TOP_FIELDS = {"known_hosts", "defaults", "node"}
# Names become directory names in the run store and appear in iptables
# comments and logs: keep them to a safe alphabet.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class NodesFileError(ValueError):
    """A nodes file that cannot be used; the message says where and why."""


@dataclass(frozen=True, kw_only=True, slots=True)
class HostSpec:
    """One `[[node]]` of the file, defaults applied and checked."""

    name: str
    host: str
    port: int = DEFAULT_SSH_PORT
    user: str
    key: Path | None = None
    sudo: bool = False
    python: str = DEFAULT_PYTHON
    workdir: str = DEFAULT_WORKDIR  # may start with "~/": the remote home
    node_port: int = DEFAULT_NODE_PORT  # the first port; a system's j-th port is node_port + j
    clock: str = DEFAULT_CLOCK  # "faketime" or "real" (CLOCKS)


@dataclass(frozen=True, kw_only=True, slots=True)
class NodesFile:
    path: Path
    hosts: tuple[HostSpec, ...]
    known_hosts: tuple[Path, ...] = ()

    def names(self) -> list[str]:
        return [h.name for h in self.hosts]


def load(path: Path) -> NodesFile:
    """Read and check a nodes file; raises NodesFileError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise NodesFileError(f"{path}: cannot read the nodes file: {e.strerror or e}") from None
    return parse(text, path)


def parse(text: str, path: Path) -> NodesFile:
    """Check a nodes file's text; `path` names it in errors and anchors
    relative paths."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NodesFileError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - _TOP_FIELDS
    if unknown:
        raise NodesFileError(f"{path}: unknown top-level field(s) {', '.join(sorted(unknown))} "
                             f"(expected {', '.join(sorted(_TOP_FIELDS))})")
    base = path.parent
    known_hosts = _known_hosts(doc.get("known_hosts", []), path, base)
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise NodesFileError(f"{path}: [defaults] must be a table")
    bad = set(defaults) - _NODE_FIELDS
    if bad:
        raise NodesFileError(f"{path}: [defaults]: unknown field(s) {', '.join(sorted(bad))} "
                             f"(a node has: {', '.join(sorted(_NODE_FIELDS))})")
    if "name" in defaults or "host" in defaults:
        raise NodesFileError(f"{path}: [defaults]: `name` and `host` differ per node and cannot be defaults")
    nodes = doc.get("node")
    if nodes is None:
        raise NodesFileError(f"{path}: no hosts: add a [[node]] table with a `host` for each")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
        raise NodesFileError(f"{path}: `node` must be an array of tables ([[node]])")
    if not nodes:
        raise NodesFileError(f"{path}: no hosts: add a [[node]] table with a `host` for each")
    hosts = tuple(_host(i, {**defaults, **raw}, path, base) for i, raw in enumerate(nodes))
    _unique(hosts, path)
    return NodesFile(path=path, hosts=hosts, known_hosts=known_hosts)


def _known_hosts(value: Any, path: Path, base: Path) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) and x for x in items):
        raise NodesFileError(f"{path}: known_hosts must be a file name or a list of them, not {value!r}")
    files = tuple(_local_path(x, base) for x in items)
    for f in files:
        if not f.is_file():
            raise NodesFileError(f"{path}: known_hosts: {f} does not exist")
    return files


def _host(index: int, raw: Mapping[str, Any], path: Path, base: Path) -> HostSpec:
    where = f"{path}: node {index + 1}" + (f" ({raw['name']})" if isinstance(raw.get("name"), str) else "")

    def fail(field: str, why: str) -> NodesFileError:
        return NodesFileError(f"{where}: `{field}` {why}")

    unknown = set(raw) - _NODE_FIELDS
    if unknown:
        raise NodesFileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                             f"(a node has: {', '.join(sorted(_NODE_FIELDS))})")
    if "host" not in raw:
        raise fail("host", "is missing")

    def text(field: str, default: str | None = None) -> str:
        value = raw.get(field, default)
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            raise fail(field, f"must be a non-empty string without surrounding spaces, not {value!r}")
        return value

    def port(field: str, default: int) -> int:
        value = raw.get(field, default)
        # TOML booleans are not ints here, although Python's bool is one.
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise fail(field, f"must be an integer 1..65535, not {value!r}")
        return value

    host = text("host")
    if any(c.isspace() for c in host) or host.startswith("-"):
        raise fail("host", f"is not a host name or address: {host!r}")
    name = text("name", f"n{index + 1}")
    if not _NAME.match(name):
        raise fail("name", f"must be letters, digits, '_', '.' or '-' (at most 63), not {name!r}")
    user = text("user", getpass.getuser())
    key: Path | None = None
    if "key" in raw:
        key = _local_path(text("key"), base)
        if not key.is_file():
            raise fail("key", f"names {key}, which does not exist")
    sudo = raw.get("sudo", False)
    if not isinstance(sudo, bool):
        raise fail("sudo", f"must be true or false, not {sudo!r}")
    workdir = text("workdir", DEFAULT_WORKDIR)
    if not (workdir.startswith("/") or workdir.startswith("~/")):
        raise fail("workdir", f"must be an absolute path or start with ~/, not {workdir!r}")
    if workdir.rstrip("/") in ("", "~"):
        raise fail("workdir", f"must be a directory of the harness's own, not {workdir!r}")
    clock = raw.get("clock", DEFAULT_CLOCK)
    if clock not in CLOCKS:
        raise fail("clock", f"must be {' or '.join(repr(c) for c in CLOCKS)}, not {clock!r}")
    return HostSpec(name=name, host=host, port=port("port", DEFAULT_SSH_PORT), user=user, key=key, sudo=sudo,
                    python=text("python", DEFAULT_PYTHON), workdir=workdir.rstrip("/"),
                    node_port=port("node_port", DEFAULT_NODE_PORT), clock=str(clock))


def _unique(hosts: tuple[HostSpec, ...], path: Path) -> None:
    seen_names: dict[str, int] = {}
    seen_places: dict[tuple[str, int], str] = {}
    seen_dirs: dict[tuple[str, str, str], str] = {}
    for i, h in enumerate(hosts):
        if h.name in seen_names:
            raise NodesFileError(f"{path}: node {i + 1}: `name` {h.name!r} is also node {seen_names[h.name] + 1}'s")
        seen_names[h.name] = i
        place = (_canonical(h.host), h.node_port)
        if place in seen_places:
            raise NodesFileError(f"{path}: node {i + 1} ({h.name}): `host` and `node_port` "
                                 f"{h.host}:{h.node_port} are also {seen_places[place]}'s")
        seen_places[place] = h.name
        where = (_canonical(h.host), h.user, h.workdir)
        if where in seen_dirs:
            raise NodesFileError(f"{path}: node {i + 1} ({h.name}): `workdir` {h.workdir} on {h.host} is also "
                                 f"{seen_dirs[where]}'s; nodes on one host need their own")
        seen_dirs[where] = h.name


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()


def _local_path(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p
