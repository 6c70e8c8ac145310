"""The `ssh` backend: nodes on real hosts (the Vagrantfile's VMs, or any
machines you can log in to), reached with paramiko.

    harness run --backend ssh --nodes-file nodes.toml --nemesis partition

The hosts come from a nodes file (`harness.backends.nodes_file` documents
its format: `[[node]]` tables with host, port, user, key, sudo, clock, ...).
The harness is the control node, as in Jepsen: it drives clients at the
nodes and injects faults through SSH; the nodes must reach each other and
the harness must reach them, at each node's `host`.

A node's place: port j of the names the system asks for (`setup`'s `ports`:
kvnode "client"; etcd "client", "peer") is the host's `node_port` + j on
its address (`host`, resolved). `listen`, `client` and `advertise` are those
addresses, and `peers[m]` is node m's own `listen` (no proxies).

Host keys are checked by default against `/etc/ssh/ssh_known_hosts`,
`~/.ssh/known_hosts` and the nodes file's `known_hosts`: an unknown host or
a changed key is refused, with the fingerprint it presented.
`insecure_accept_host_keys` (`--insecure-accept-host-keys`) accepts any key,
with a warning. Every remote command is an argument list joined with
`shlex` quoting (`commands.shell_line`); nothing from the nodes file or the
system under test is ever pasted into a shell line unquoted.

On each host, under the node's `workdir` (default `~/dynamo-harness`):

    nodectl.py                 this backend's agent, `harness.backends.nodectl`
                               (uploaded at every setup; stdlib only): starts,
                               signals and finds the node, writes the clock
                               file, finds devices, sets a real clock
    clock.offset               clock = "real": the offset this backend left the
                               host's wall clock at (setup and `clean` undo it)
    venv/                      this project's wheel and the node's dependencies,
                               installed with `pip --no-index` from wheels
                               uploaded by sftp; `venv/.harness-wheelhouse`
                               holds the digest installed, so an unchanged
                               wheelhouse is not installed again
    node/                      this run's node, wiped at setup:
      data/ log/               `--data`, `--log`; log/stdout.log, stderr.log
      node.pid                 the node's pid = its process group id
      node.exit                "PID STATUS" once it ended (written by a waiter
                               process that `start` leaves behind)
      clock.faketime           its libfaketime control file

Faults:

- processes: `kvnode serve` runs as a daemon in a session of its own (pid =
  process group id, in `node.pid`), its output in `log/`. Kill, pause and
  resume signal that process group, and only after checking that the pid
  still is our node (its environment carries `HARNESS_NODE_DIR=<node dir>`:
  pids are reused). Nothing is ever killed by name. `exited` reads the
  status the waiter recorded.
- links: iptables, through `sudo -n` when the node's `sudo` is set, in the
  chain `HARNESS` (`commands.partition*`): a node drops packets *from* the
  addresses of the nodes its grudge names, so every port at once. Only
  peers' addresses are ever dropped, so the harness (and this SSH
  connection) is never cut off.
- packets: `tc qdisc ... netem` on the host's devices toward the other
  nodes (found with `ip route get`). netem shapes everything leaving that
  device, the harness's traffic included, as Jepsen's does.
- clocks, `clock = "faketime"` (the default): every node starts under the
  libfaketime vendored by the PyPI package (installed in the venv),
  following its control file; `set_clock` rewrites that file atomically.
  Wall clock only, as in `harness.backends.faketime`. `clock_blind` reads
  the program's file on the host (`python -m harness.backends.binaries` in
  the venv): a Go or statically linked program would not see the skew.
- clocks, `clock = "real"` (Jepsen's way, for hosts with clocks of their
  own): `set_clock(node, offset)` moves the host's real wall clock
  (CLOCK_REALTIME, `nodectl.py shift-clock` through `sudo -n`) by the
  difference between `offset` and the offset this backend applied last, so
  that it is `offset` from where it was at setup; `heal_all` and `teardown`
  move it back to +0. Every program on the host sees it (`clock_blind` says
  None); CLOCK_MONOTONIC is not moved by a change of CLOCK_REALTIME, so
  timeouts keep real time. The host's time daemon (chrony, ntpd,
  systemd-timesyncd) may pull the clock back meanwhile: stop it on test
  hosts. This mode is NOT tested end to end here: the test hosts are
  namespaces that share the test machine's kernel clock, which a test must
  never change; its commands and its bookkeeping are tested against a fake
  connection (tests/harness/test_backend_ssh_clock.py).

`teardown` kills the nodes, removes the chain, clears netem and closes the
connections; `clean(nodes_file)` does the same for what a crashed harness
left behind. A record of what the backend did to each node goes to the run
directory's `nodes/<node>/log/backend.log`, beside the node's logs.

Blocking paramiko calls run in threads (`asyncio.to_thread`), except
`running`, which the `Backend` protocol makes synchronous: it costs one
short remote command (`exited`, a coroutine, costs the same in a thread).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import re
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import paramiko

from harness.backends import binaries, commands, owner, wheels
from harness.backends.base import (
    DEFAULT_PORTS,
    BackendCapabilities,
    BackendOptions,
    Exited,
    Grudge,
    NodePlace,
    PacketShape,
)
from harness.backends.faketime import env as faketime_env
from harness.backends.nodes_file import HostSpec, NodesFile
from harness.backends.nodes_file import load as load_nodes_file
from harness.backends.processes import note

__all__ = ["HostKeyError", "RemoteResult", "SshBackend", "SshError", "clean", "remote_command", "wheels_misfit"]

log = logging.getLogger("harness.backends.ssh")

CONNECT_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0
INSTALL_TIMEOUT_S = 900.0  # pip on a slow VM
MARKER = ".harness-wheelhouse"
OWNER_FILE = "owner"  # in the node directory: the `owner.host_token` of the harness running there
SYSTEM_KNOWN_HOSTS = (Path("/etc/ssh/ssh_known_hosts"), Path("~/.ssh/known_hosts").expanduser())
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The libfaketime the PyPI package vendors, relative to its package directory.
_FAKETIME_FIND = ("import importlib.util, os; s = importlib.util.find_spec('libfaketime'); "
                  "print(os.path.join(os.path.dirname(s.origin), 'vendor', 'libfaketime', 'src', "
                  "'libfaketime.so.1') if s and s.origin else '')")

# The agent uploaded to every host as <workdir>/nodectl.py and run with the
# host's own python3 (standard library only; its answer is one JSON line).
NODECTL = Path(__file__).with_name("nodectl.py")


class SshError(RuntimeError):
    """A host could not be reached, or a remote step failed; says which."""


class HostKeyError(SshError):
    """A host's key is unknown or does not match known_hosts."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RemoteResult:
    """A finished remote command."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def remote_command(argv: Sequence[str], *, env: Mapping[str, str] | None = None, sudo: bool = False) -> list[str]:
    """The argument list a remote shell runs for `argv`: with `env NAME=VALUE
    ...` in front when `env` is given, and `sudo -n` in front of that when
    `sudo`. Join it with `commands.shell_line` (every word quoted)."""
    argv = [str(a) for a in argv]
    if not argv:
        raise ValueError("empty command")
    full = list(argv)
    if env:
        for name in env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"not an environment variable name: {name!r}")
        if "=" in argv[0]:
            raise ValueError(f"a command with '=' in its name cannot follow env: {argv[0]!r}")
        full = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    # -n: fail at once instead of waiting for a password nobody will type.
    return ["sudo", "-n", *full] if sudo else full


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's form: "ssh-ed25519 SHA256:base64"."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


class _Refuse(paramiko.MissingHostKeyPolicy):
    """RejectPolicy, with an error that says what to do."""

    def __init__(self, sources: Sequence[Path]) -> None:
        self._sources = sources

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        looked = ", ".join(str(p) for p in self._sources) or "no known_hosts file exists"
        raise HostKeyError(
            f"host {hostname} presented {fingerprint(key)}, which is not in known_hosts ({looked}). "
            f"Check that fingerprint on the host (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and add it to "
            f"known_hosts (or to the nodes file's `known_hosts`), or pass --insecure-accept-host-keys")


class _AcceptWithWarning(paramiko.MissingHostKeyPolicy):
    """AutoAddPolicy, loudly: only for --insecure-accept-host-keys."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        log.warning("accepting host key %s of %s without checking it (--insecure-accept-host-keys)",
                    fingerprint(key), hostname)
        client.get_host_keys().add(hostname, key.get_name(), key)


class _Conn:
    """One SSH connection to one host, with blocking methods: the backend
    runs them in threads. Knows the host's paths once `prepare` ran."""

    def __init__(self, spec: HostSpec, known_hosts: Sequence[Path], insecure: bool) -> None:
        self.spec = spec
        self.label = f"{spec.name} ({spec.user}@{spec.host}:{spec.port})"
        self._client = _connect(spec, known_hosts, insecure)
        self.workdir = self._absolute(spec.workdir)
        self.node_dir = f"{self.workdir}/node"
        self.venv = f"{self.workdir}/venv"
        self.python = f"{self.venv}/bin/python"
        self.nodectl = f"{self.workdir}/nodectl.py"
        self.clock_file = f"{self.node_dir}/clock.faketime"
        self.clock_record = f"{self.workdir}/clock.offset"  # clock = "real": the offset left applied

    # -- running commands -------------------------------------------------------

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, privileged: bool = False,
            timeout: float = COMMAND_TIMEOUT_S) -> RemoteResult:
        """Run one command (an argument list, every word quoted) and wait
        for it. `privileged`: through `sudo -n` when the host's `sudo` is set.
        `env`: added with `env NAME=VALUE ...`."""
        full = remote_command(argv, env=env, sudo=privileged and self.spec.sudo)
        line = commands.shell_line(full)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"{self.label}: the SSH connection is closed")
        channel = transport.open_session(timeout=CONNECT_TIMEOUT_S)
        try:
            channel.exec_command(line)
            out, err = bytearray(), bytearray()
            deadline = time.monotonic() + timeout
            # Read both streams as they come (a full stderr must not stall a
            # stdout read); exit status then EOF end it.
            while True:
                busy = False
                if channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                    busy = True
                if channel.recv_ready():
                    out += channel.recv(65536)
                    busy = True
                if busy:
                    continue
                if channel.exit_status_ready() and (channel.eof_received or channel.closed):
                    if not (channel.recv_ready() or channel.recv_stderr_ready()):
                        break
                    continue
                if time.monotonic() > deadline:
                    raise SshError(f"{self.label}: no end after {timeout:g} s: {line[:300]}")
                time.sleep(0.002)
            status = channel.recv_exit_status()
        finally:
            channel.close()
        return RemoteResult(argv=tuple(full), exit_status=status, stdout=bytes(out), stderr=bytes(err))

    def check(self, argv: Sequence[str], **kwargs: Any) -> RemoteResult:
        """`run`, raising SshError with its stderr unless it exits 0."""
        result = self.run(argv, **kwargs)
        if not result.ok:
            raise SshError(f"{self.label}: `{commands.shell_line(result.argv)[:300]}` exited "
                           f"{result.exit_status}: {_tail(result.stderr) or _tail(result.stdout)}")
        return result

    def nodectl_call(self, *args: str, privileged: bool = False,
                     timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        """Run the agent (`privileged`: through `sudo -n` when the host's
        `sudo` is set); its JSON answer (SshError on an error answer)."""
        result = self.run([self.spec.python, self.nodectl, *args], privileged=privileged, timeout=timeout)
        lines = result.text().strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise SshError(f"{self.label}: nodectl {args[0]} failed (exit {result.exit_status}): "
                           f"{_tail(result.stderr) or _tail(result.stdout) or 'no output'}")
        if "error" in answer:
            raise SshError(f"{self.label}: nodectl {args[0]}: {answer['error']}")
        return answer

    # -- files --------------------------------------------------------------------

    def put_bytes(self, data: bytes, path: str) -> None:
        with self._client.open_sftp() as sftp:
            sftp.putfo(io.BytesIO(data), path)

    def read_text(self, path: str) -> str | None:
        with self._client.open_sftp() as sftp:
            try:
                with sftp.open(path, "r") as f:
                    return f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                return None

    def put_files(self, files: Sequence[Path], directory: str) -> None:
        with self._client.open_sftp() as sftp:
            for f in files:
                sftp.put(str(f), f"{directory}/{f.name}")

    def get_tree(self, directory: str, dest: Path) -> list[Path]:
        """Copy every file under the remote `directory` into `dest`."""
        copied: list[Path] = []
        with self._client.open_sftp() as sftp:
            pending = [PurePosixPath(directory)]
            while pending:
                here = pending.pop()
                try:
                    entries = sftp.listdir_attr(str(here))
                except FileNotFoundError:
                    continue
                for entry in sorted(entries, key=lambda e: e.filename):
                    remote = here / entry.filename
                    mode = entry.st_mode or 0
                    if stat.S_ISDIR(mode):
                        pending.append(remote)
                    elif stat.S_ISREG(mode):
                        target = dest / remote.relative_to(directory)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        sftp.get(str(remote), str(target))
                        copied.append(target)
        return copied

    def close(self) -> None:
        self._client.close()

    def _absolute(self, path: str) -> str:
        """`~/x` on the host: its login directory, as sftp reports it."""
        if not path.startswith("~/"):
            return path
        with self._client.open_sftp() as sftp:
            home = sftp.normalize(".")
        return f"{home.rstrip('/')}/{path[2:]}"


def _connect(spec: HostSpec, known_hosts: Sequence[Path], insecure: bool) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if insecure:
        # Nothing loaded: every key is "unknown" and accepted with a warning,
        # a changed one included. That is what the flag asks for.
        client.set_missing_host_key_policy(_AcceptWithWarning())
    else:
        sources = [p for p in (*SYSTEM_KNOWN_HOSTS, *known_hosts) if p.is_file()]
        for path in sources:
            client.load_system_host_keys(str(path))
        client.set_missing_host_key_policy(_Refuse(sources))
    label = f"{spec.name} ({spec.user}@{spec.host}:{spec.port})"
    try:
        client.connect(
            spec.host, port=spec.port, username=spec.user,
            key_filename=str(spec.key) if spec.key is not None else None,
            # With a key given, use only it: a wrong one should fail, not
            # fall through to whatever else the agent holds.
            look_for_keys=spec.key is None, allow_agent=spec.key is None,
            timeout=CONNECT_TIMEOUT_S, banner_timeout=CONNECT_TIMEOUT_S, auth_timeout=CONNECT_TIMEOUT_S,
        )
    except HostKeyError as e:
        client.close()
        raise HostKeyError(f"{label}: {e}") from None
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyError(
            f"{label}: host key mismatch: the host presented {fingerprint(e.key)} but known_hosts has "
            f"{fingerprint(e.expected_key)}. Someone may be intercepting the connection, or the host was "
            f"reinstalled: check, then update known_hosts (ssh-keygen -R {spec.host}); refusing to connect"
        ) from None
    except paramiko.AuthenticationException as e:
        client.close()
        key = f"key {spec.key}" if spec.key is not None else "the SSH agent's and ~/.ssh's keys"
        raise SshError(f"{label}: authentication with {key} failed: {e}") from None
    except (paramiko.SSHException, OSError) as e:
        client.close()
        raise SshError(f"{label}: cannot connect: {e}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(5)
    return client


@dataclass
class _Host:
    """What the backend knows about one node's host during a run."""

    spec: HostSpec
    conn: _Conn
    address: str  # what the node binds and the others dial and drop
    backend_log: Path | None = None
    devices: list[str] = field(default_factory=list)  # toward the other nodes (for netem)
    shaped: bool = False
    agent: bool = False  # nodectl.py uploaded: there may be a node to kill
    chain: bool = False  # the HARNESS chain may exist
    faketime: str = ""  # the remote libfaketime.so.1, if it passed the probe
    clock_problem: str = ""
    packet_problem: str = ""
    clock_offset: float = 0.0  # clock = "real": the offset applied to the host's wall clock now

    @property
    def real_clock(self) -> bool:
        """clock = "real": faults move the host's own wall clock."""
        return self.spec.clock == "real"


class SshBackend:
    """Nodes on hosts reached by SSH. See the module docstring."""

    name = "ssh"

    def __init__(self, nodes_file: NodesFile, *, insecure_accept_host_keys: bool = False,
                 wheelhouse: Path | None = None) -> None:
        """`wheelhouse`: the wheels to install on the hosts (default:
        `wheels.wheelhouse()`, built from this working tree and cached)."""
        self.nodes_file = nodes_file
        self.insecure = insecure_accept_host_keys
        self._wheelhouse = wheelhouse
        self._hosts: dict[str, _Host] = {}  # connected
        self._set_up = False
        self._specs = {h.name: h for h in nodes_file.hosts}
        if insecure_accept_host_keys:
            log.warning("ssh: host keys will not be checked (--insecure-accept-host-keys)")

    @classmethod
    def from_file(cls, path: Path, *, insecure_accept_host_keys: bool = False) -> SshBackend:
        """Read a nodes file (NodesFileError, a ValueError, if it is wrong)."""
        return cls(load_nodes_file(Path(path)), insecure_accept_host_keys=insecure_accept_host_keys)

    @classmethod
    def from_options(cls, options: BackendOptions) -> SshBackend:
        """The hosts of the run's `--nodes-file` (ValueError without one, or
        for a nodes file that cannot be used), checking host keys unless
        `--insecure-accept-host-keys`. Reads the file; connects to nothing."""
        if not options.nodes_file:
            raise ValueError("--backend ssh needs --nodes-file nodes.toml")
        return cls.from_file(Path(options.nodes_file), insecure_accept_host_keys=options.insecure_accept_host_keys)

    def node_names(self) -> list[str]:
        """The nodes the file names, in its order: the runner uses the first
        `--nodes` of them."""
        return self.nodes_file.names()

    # -- places -------------------------------------------------------------------

    async def connect(self, nodes: Sequence[str] | None = None) -> None:
        """Open the SSH connections to these nodes' hosts (default: all of
        the file's), checking host keys, and change nothing there. `setup`
        calls it; call it alone to use `run` without installing anything.
        Raises HostKeyError/SshError for the first host that fails, after
        trying them all."""
        names = list(nodes) if nodes is not None else self.node_names()
        unknown = [n for n in names if n not in self._specs]
        if unknown:
            raise ValueError(f"{self.nodes_file.path} names no node {', '.join(unknown)} "
                             f"(it has {', '.join(self._specs)})")

        async def one(name: str) -> None:
            if name in self._hosts:
                return
            spec = self._specs[name]
            address = await asyncio.to_thread(_resolve, spec)
            conn = await asyncio.to_thread(_Conn, spec, self.nodes_file.known_hosts, self.insecure)
            self._hosts[name] = _Host(spec=spec, conn=conn, address=address)

        await _all(one(n) for n in names)

    async def run(self, node: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                  privileged: bool = False, timeout: float = COMMAND_TIMEOUT_S) -> RemoteResult:
        """Run a command on the node's host and wait for it: `argv` is an
        argument list, each word quoted for the remote shell; `env` is added
        with `env NAME=VALUE`; `privileged` goes through `sudo -n` when the
        node's `sudo` is set. Needs `connect` or `setup` first."""
        h = self._host(node)
        return await asyncio.to_thread(h.conn.run, argv, env=env, privileged=privileged, timeout=timeout)

    async def setup(self, nodes: Sequence[str], run_dir: Path,
                    ports: Sequence[str] = DEFAULT_PORTS) -> dict[str, NodePlace]:
        """Connect to each host, install the node there (unless the same
        wheels are installed already), kill a node a crashed run left in
        the workdir (and put back a real clock it left skewed), wipe and
        make the node's directories, create the iptables chain, and check
        the clock mechanism and netem. The j-th of `ports` is the host's
        `node_port` + j. Called once before any `start`; on failure undoes
        what it did and raises."""
        if self._set_up:
            raise RuntimeError("SshBackend.setup called twice without teardown")
        nodes, ports = list(nodes), list(ports)
        if not nodes or len(set(nodes)) != len(nodes):
            raise ValueError(f"need distinct node names, got {nodes}")
        if not ports or len(set(ports)) != len(ports):
            raise ValueError(f"need distinct port names, got {ports}")
        if len(nodes) > len(self._specs):
            raise ValueError(f"{len(nodes)} nodes asked for, but {self.nodes_file.path} has only "
                             f"{len(self._specs)} ({', '.join(self._specs)}); add hosts or ask for fewer nodes")
        self._check_port_ranges([n for n in nodes if n in self._specs], len(ports))
        self._set_up = True
        try:
            return await self._setup(nodes, Path(run_dir), ports)
        except BaseException:
            try:
                await self.teardown()
            except Exception as e:  # the setup's error is the one to report
                log.warning("ssh: teardown after a failed setup: %s", e)
            raise

    def _check_port_ranges(self, nodes: Sequence[str], count: int) -> None:
        """Nodes on one host need port ranges of their own (`node_port` to
        `node_port` + count - 1)."""
        taken: dict[tuple[str, int], str] = {}
        for n in nodes:
            spec = self._specs[n]
            last = spec.node_port + count - 1
            if last > 65535:
                raise ValueError(f"{self.nodes_file.path}: {n}'s node_port {spec.node_port} leaves no room for "
                                 f"{count} ports; lower it")
            for port in range(spec.node_port, last + 1):
                other = taken.setdefault((spec.host.lower(), port), n)
                if other != n:
                    raise ValueError(f"{self.nodes_file.path}: {n} and {other} on {spec.host} would both listen "
                                     f"on port {port} ({count} ports each from node_port); space their node_port "
                                     f"at least {count} apart")

    async def _setup(self, nodes: list[str], run_dir: Path, ports: list[str]) -> dict[str, NodePlace]:
        # Connect to all first, so that a wrong host key or login is reported
        # before the wheelhouse is built and minutes go into installing.
        await self.connect(nodes)
        for name in list(self._hosts):
            if name not in nodes:  # connected by an earlier `connect`, not part of this run
                self._hosts.pop(name).conn.close()
        house = self._wheelhouse if self._wheelhouse is not None else await asyncio.to_thread(wheels.wheelhouse)
        digest = await asyncio.to_thread(_wheelhouse_digest, house)
        addresses = {n: self._hosts[n].address for n in nodes}
        for n in nodes:
            node_log = run_dir / "nodes" / n / "log" / "backend.log"
            node_log.parent.mkdir(parents=True, exist_ok=True)
            self._hosts[n].backend_log = node_log
        await _all(asyncio.to_thread(self._prepare, self._hosts[n], house, digest, addresses) for n in nodes)
        listen = {n: {p: f"{addresses[n]}:{self._specs[n].node_port + j}" for j, p in enumerate(ports)}
                  for n in nodes}
        places = {}
        for n in nodes:
            h = self._hosts[n]
            places[n] = NodePlace(name=n, listen=listen[n], client=dict(listen[n]),
                                  peers={m: dict(listen[m]) for m in nodes},
                                  data_dir=f"{h.conn.node_dir}/data", log_dir=f"{h.conn.node_dir}/log",
                                  python=h.conn.python, advertise=dict(listen[n]))
        return places

    def _prepare(self, h: _Host, house: Path, digest: str, addresses: Mapping[str, str]) -> None:
        """One host's share of setup (blocking; in a thread)."""
        conn = h.conn
        conn.check(["mkdir", "-p", conn.workdir])
        conn.put_bytes(NODECTL.read_bytes(), conn.nodectl)
        h.agent = True
        left = conn.nodectl_call("signal", conn.node_dir, "KILL")
        if left.get("pid"):
            self._note(h, f"killed pid {left['pid']}, a node a previous run left running")
        conn.check(["rm", "-rf", conn.node_dir])
        conn.check(["mkdir", "-p", f"{conn.node_dir}/data", f"{conn.node_dir}/log"])
        conn.put_bytes((owner.host_token() + "\n").encode(), f"{conn.node_dir}/{OWNER_FILE}")
        # The marker names the wheelhouse and the Python the venv was made with.
        wanted = f"{digest} {h.spec.python}"
        installed = (conn.read_text(f"{conn.venv}/{MARKER}") or "").strip()
        if installed != wanted:
            if installed and installed.split(" ", 1)[-1] != h.spec.python:
                conn.check(["rm", "-rf", conn.venv])  # made by another Python: start afresh
            self._note(h, f"installing wheelhouse {digest} into {conn.venv}")
            started = time.monotonic()
            _install(conn, house, wanted)
            self._note(h, f"installed in {time.monotonic() - started:.1f} s")
        else:
            self._note(h, f"wheelhouse {digest} already installed in {conn.venv}")
        # Partitions: the chain must exist and be ours to flush, or setup fails.
        h.chain = True
        conn.run(commands.partition_setup()[0], privileged=True)  # fails if it exists: fine
        try:
            conn.check(commands.heal()[0], privileged=True)
            jump = ["iptables", "-w", "-C", "INPUT", "-j", commands.CHAIN]
            if not conn.run(jump, privileged=True).ok:
                conn.check(commands.partition_setup()[1], privileged=True)
        except SshError as e:
            raise SshError(f"{e} (iptables needs root: log in as root, or set sudo = true in "
                           f"{self.nodes_file.path} and allow the user `sudo -n iptables` and `sudo -n tc`)") from None
        if h.real_clock:
            self._prepare_real_clock(h)
        else:
            self._prepare_faketime(h)
        conn.nodectl_call("write", conn.clock_file, commands.clock_file_content(0.0) + "\n")
        # Packets: the devices toward the others, and whether netem exists.
        others = sorted({a for n, a in addresses.items() if n != h.spec.name})
        devices = conn.nodectl_call("routes", *others) if others else {}
        h.devices = sorted({d for d in devices.values() if isinstance(d, str) and d and d != "lo"})
        h.packet_problem = _probe_netem(conn)
        clock = ("real (sudo)" if h.real_clock else "libfaketime") + f" {h.clock_problem or h.faketime or 'ok'}"
        self._note(h, f"ready: address {h.address}, devices {h.devices or '-'}, clock {clock}, "
                      f"netem {h.packet_problem or 'ok'}")

    def _prepare_faketime(self, h: _Host) -> None:
        """clock = "faketime": the vendored libfaketime, checked on the host."""
        conn = h.conn
        lib = conn.check([conn.python, "-c", _FAKETIME_FIND]).text().strip()
        if not lib:
            h.clock_problem = f"{h.spec.name}: the venv has no libfaketime package"
        else:
            probe_file = f"{conn.node_dir}/probe.faketime"
            conn.nodectl_call("write", probe_file, commands.clock_file_content(1000.0) + "\n")
            answer = conn.nodectl_call("probe", conn.python, json.dumps(_faketime_env(lib, probe_file)))
            conn.run(["rm", "-f", probe_file])
            h.clock_problem = f"{h.spec.name}: {answer['problem']}" if answer.get("problem") else ""
            h.faketime = "" if h.clock_problem else lib

    def _prepare_real_clock(self, h: _Host) -> None:
        """clock = "real": put back an offset a crashed run left applied
        (its record in the workdir), and check that the clock can be set
        (`shift-clock 0` moves nothing)."""
        h.clock_offset = 0.0
        left = _recorded_offset(h.conn)
        if left:
            _shift_real_clock(h.conn, -left)
            _record_offset(h.conn, 0.0)
            self._note(h, f"moved the wall clock back by {left:+g}s, an offset a previous run left")
        try:
            h.conn.nodectl_call("shift-clock", "0", privileged=True)
            h.clock_problem = ""
        except SshError as e:
            h.clock_problem = f"{h.spec.name}: clock = \"real\" cannot set the wall clock: {e}"

    def capabilities(self) -> BackendCapabilities:
        """Clock skew needs, on every host, libfaketime to pass its check
        (clock = "faketime") or the wall clock to be settable through sudo
        (clock = "real"); packet faults need netem on every host (all found
        at setup)."""
        hosts = list(self._hosts.values())
        clock = [h.clock_problem for h in hosts if h.clock_problem]
        packet = [h.packet_problem for h in hosts if h.packet_problem]
        real = [h.spec.name for h in hosts if h.real_clock]
        faked = [h.spec.name for h in hosts if not h.real_clock]
        clocks = "; ".join(part for part in (
            f"real wall clocks, set through sudo: {', '.join(real)}" if real else "",
            f"libfaketime (wall clock of the node's process only): {', '.join(faked)}" if faked else "") if part)
        return BackendCapabilities(
            clock=not clock, clock_reason="; ".join(clock),
            packet=not packet, packet_reason="; ".join(packet),
            extra={
                "links": "iptables DROP from peers' addresses, in chain HARNESS on each host",
                "packet": "tc netem on each host's devices toward the other nodes",
                "clocks": clocks or "checked at setup",
                "hosts": ", ".join(f"{h.spec.name}={h.address}" for h in hosts) or "checked at setup",
            },
        )

    async def clock_blind(self, node: str, argv: Sequence[str]) -> str | None:
        """Why `argv` would not see `set_clock`'s skew, else None. clock =
        "real": None (every program sees the host's clock). Else its file is
        read on the host (a Go or statically linked program is blind to
        libfaketime), with the venv's Python; one remote command."""
        h = self._host(node)
        if h.real_clock:
            return None
        argv = [str(a) for a in argv]
        result = await asyncio.to_thread(h.conn.run, [h.conn.python, "-m", "harness.backends.binaries", *argv])
        answer = binaries.answer_of(result.text())
        if not result.ok or answer is None or "error" in answer:
            why = (answer or {}).get("error") or _tail(result.stderr) or _tail(result.stdout) or "no answer"
            raise SshError(f"{h.conn.label}: cannot tell whether {node}'s program sees a skewed clock: {why}")
        blind = answer.get("blind")
        if not blind:
            return None
        return binaries.refusal(node, str(blind), f'set clock = "real" for {node} in {self.nodes_file.path}, '
                                                  "so that its host's own clock is set")

    # -- processes ------------------------------------------------------------------

    async def start(self, node: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start the node's process as a daemon on its host, in a session of
        its own (a waiter process records how it ends), under libfaketime
        when the host's clock is "faketime" and it passed its check. Raises
        if the node is running already."""
        h = self._host(node)
        full_env = {**env, **self.clock_env(node)}
        argv = [str(a) for a in argv]
        answer = await self._call(h, "start", h.conn.node_dir, json.dumps(full_env), *argv)
        self._note(h, f"start pid={answer.get('pid')}: {commands.shell_line(argv)}")

    async def kill(self, node: str) -> None:
        """SIGKILL the node's process group; returns once it is gone."""
        h = self._host(node)
        answer = await self._call(h, "signal", h.conn.node_dir, "KILL")
        if answer.get("pid"):
            self._note(h, f"kill pid={answer['pid']}")

    async def pause(self, node: str) -> None:
        """SIGSTOP the node's process group."""
        h = self._host(node)
        answer = await self._call(h, "signal", h.conn.node_dir, "STOP")
        if answer.get("pid"):
            self._note(h, f"pause pid={answer['pid']}")

    async def resume(self, node: str) -> None:
        """SIGCONT the node's process group."""
        h = self._host(node)
        answer = await self._call(h, "signal", h.conn.node_dir, "CONT")
        if answer.get("pid"):
            self._note(h, f"resume pid={answer['pid']}")

    def running(self, node: str) -> bool:
        """True while the node's process exists (paused counts). Blocking:
        one remote command (the protocol makes this synchronous)."""
        return self.pid(node) is not None

    async def exited(self, node: str) -> Exited | None:
        """How the node's process ended on its own: the status its waiter
        recorded (negative: the signal that killed it), or Exited(None) if
        none was recorded. None while it runs (paused counts), if it never
        started, or after `kill`. One remote command, in a thread."""
        h = self._host(node)
        answer = await self._call(h, "status", h.conn.node_dir)
        ended = answer.get("exited")
        if not isinstance(ended, dict):
            return None
        status = ended.get("status")
        return Exited(int(status) if isinstance(status, int) else None)

    def pid(self, node: str) -> int | None:
        """The node's pid on its host, if it runs (blocking; for tests and logs)."""
        h = self._host(node)
        pid = h.conn.nodectl_call("status", h.conn.node_dir).get("pid")
        return int(pid) if pid is not None else None

    # -- links, packets, clocks ----------------------------------------------------------

    async def cut(self, grudge: Grudge) -> None:
        """Replace the partition: each node drops packets from the
        addresses of the nodes its grudge names."""
        named = set(grudge).union(*grudge.values())
        unknown = named - set(self._hosts)
        if unknown:
            raise ValueError(f"unknown nodes in grudge: {sorted(unknown)}")

        async def one(h: _Host) -> None:
            drop = grudge.get(h.spec.name, frozenset())
            await self._privileged(h, commands.partition(self._hosts[m].address for m in drop))
            if drop:
                self._note(h, f"drops traffic from {', '.join(sorted(drop))}")

        await _all(one(h) for h in self._hosts.values())

    async def shape(self, nodes: Sequence[str], shape: PacketShape) -> None:
        """netem `shape` on the devices of `nodes` toward the others; every
        other node's shaping is cleared."""
        targets = {self._host(n).spec.name for n in nodes}

        async def one(h: _Host) -> None:
            if h.spec.name in targets:
                if h.packet_problem:
                    raise SshError(f"cannot shape packets: {h.packet_problem}")
                for device in h.devices:
                    await self._privileged(h, commands.netem(device, shape))
                h.shaped = True
                self._note(h, f"shape {shape} on {', '.join(h.devices) or 'no device'}")
            elif h.shaped:
                await self._clear_netem(h)

        await _all(one(h) for h in self._hosts.values())

    async def set_clock(self, node: str, offset_s: float) -> None:
        """Offset the node's wall clock by offset_s from true time (0
        resets); its monotonic clock is untouched. clock = "faketime":
        rewrite its control file. clock = "real": move the host's wall clock
        by the difference from the offset applied now (module docstring)."""
        h = self._host(node)
        if h.real_clock:
            if h.clock_problem:
                raise SshError(f"cannot set {node}'s clock: {h.clock_problem}")
            await asyncio.to_thread(self._move_real_clock, h, float(offset_s))
            return
        if not h.faketime:
            raise SshError(f"cannot set {node}'s clock: {h.clock_problem}")
        await self._call(h, "write", h.conn.clock_file, commands.clock_file_content(offset_s) + "\n")
        self._note(h, f"clock {offset_s:+g}s")

    def _move_real_clock(self, h: _Host, offset_s: float) -> None:
        """Make the host's wall clock `offset_s` from true time: shift it by
        the difference from the offset applied now, then record the new one
        (in memory, and in the workdir for `clean` and the next setup).
        Blocking; in a thread."""
        delta = offset_s - h.clock_offset
        if delta == 0:
            return
        _shift_real_clock(h.conn, delta)  # raises if the clock did not move
        h.clock_offset = offset_s
        _record_offset(h.conn, offset_s)
        self._note(h, f"clock {offset_s:+g}s (the host's wall clock moved by {delta:+g}s)")

    def clock_env(self, node: str) -> dict[str, str]:
        """The environment additions that put a process on the node's host
        on the node's clock (what `start` adds); empty without libfaketime
        and for clock = "real" (every process there is on the host's clock)."""
        h = self._host(node)
        return _faketime_env(h.faketime, h.conn.clock_file) if h.faketime and not h.real_clock else {}

    async def heal_all(self) -> None:
        """On every host: flush the chain, clear netem, reset the clock to
        +0 (clock = "real": move the host's wall clock back), SIGCONT the
        node. Tries every host, then raises the first error."""

        async def one(h: _Host) -> None:
            await self._privileged(h, commands.heal())
            if h.shaped:
                await self._clear_netem(h)
            if h.real_clock:
                await asyncio.to_thread(self._move_real_clock, h, 0.0)
            else:
                await self._call(h, "write", h.conn.clock_file, commands.clock_file_content(0.0) + "\n")
            await self._call(h, "signal", h.conn.node_dir, "CONT")
            self._note(h, "heal_all")

        await _all(one(h) for h in self._hosts.values())

    # -- logs and teardown ----------------------------------------------------------------

    async def collect_logs(self, node: str, dest: Path) -> list[Path]:
        """Copy the node's remote log directory into `dest` (sftp)."""
        h = self._host(node)
        return await asyncio.to_thread(h.conn.get_tree, f"{h.conn.node_dir}/log", Path(dest))

    async def teardown(self) -> None:
        """Kill every node (SIGKILL to its process group, waiting until
        gone), remove the chain, clear netem, remove the clock file (clock =
        "real": move the host's wall clock back to +0), close the
        connections. The remote data and logs stay until the next setup.
        Idempotent; tries every host, then raises the first error."""
        hosts = list(self._hosts.values())
        self._hosts.clear()
        was_set_up, self._set_up = self._set_up, False

        async def one(h: _Host) -> None:
            if not was_set_up:  # only connected: nothing of ours to undo
                h.conn.close()
                return
            try:
                if h.agent:
                    await self._call(h, "signal", h.conn.node_dir, "KILL")
                    await asyncio.to_thread(h.conn.run, ["rm", "-f", h.conn.clock_file])
                if h.real_clock:
                    await asyncio.to_thread(self._move_real_clock, h, 0.0)
                if h.chain:
                    for argv in commands.partition_teardown():
                        await asyncio.to_thread(h.conn.run, argv, privileged=True)  # each may be gone already
                if h.shaped:
                    await self._clear_netem(h)
                self._note(h, "teardown")
            finally:
                h.conn.close()

        await _all(one(h) for h in hosts)

    # -- helpers -------------------------------------------------------------------------------

    def _host(self, node: str) -> _Host:
        try:
            return self._hosts[node]
        except KeyError:
            raise ValueError(f"unknown node {node!r} (set up: {sorted(self._hosts)})") from None

    async def _call(self, h: _Host, *args: str) -> dict[str, Any]:
        return await asyncio.to_thread(h.conn.nodectl_call, *args)

    async def _privileged(self, h: _Host, argvs: Sequence[Sequence[str]]) -> None:
        for argv in argvs:
            await asyncio.to_thread(h.conn.check, argv, privileged=True)

    async def _clear_netem(self, h: _Host) -> None:
        for device in h.devices:
            # Fails harmlessly where there is no qdisc of ours.
            await asyncio.to_thread(h.conn.run, commands.netem_clear(device)[0], privileged=True)
        h.shaped = False
        self._note(h, "netem cleared")

    @staticmethod
    def _note(h: _Host, text: str) -> None:
        """A line in the node's local backend.log: what was done, when."""
        if h.backend_log is not None:
            note(h.backend_log.parent, text)


def clean(nodes_file: Path, *, insecure_accept_host_keys: bool = False) -> list[str]:
    """What a crashed run left on the file's hosts, removed: the node
    recorded in each workdir's pid file (if it still is ours), the HARNESS
    chain, netem on the devices toward the other hosts, and (clock =
    "real") the offset recorded as left on the host's wall clock. Returns
    one line per thing removed or per host that could not be cleaned."""
    spec_file = load_nodes_file(Path(nodes_file))
    addresses = {}
    for spec in spec_file.hosts:
        try:
            addresses[spec.name] = _resolve(spec)
        except SshError:
            continue
    done: list[str] = []
    for spec in spec_file.hosts:
        try:
            conn = _Conn(spec, spec_file.known_hosts, insecure_accept_host_keys)
        except SshError as e:
            done.append(f"could not clean {spec.name}: {e}")
            continue
        try:
            recorded = (conn.read_text(f"{conn.node_dir}/{OWNER_FILE}") or "").strip()
            live = owner.host_alive(recorded) if recorded else False
            if live is not False:
                done.append(f"{conn.label}: left alone: its run's harness ({recorded}) "
                            + ("is still running" if live else "is on another host: run clean there"))
                continue
            if conn.run(["test", "-d", conn.node_dir]).ok:
                conn.put_bytes(NODECTL.read_bytes(), conn.nodectl)
                killed = conn.nodectl_call("signal", conn.node_dir, "KILL").get("pid")
                if killed:
                    done.append(f"{conn.label}: killed node process group {killed}")
            left = _recorded_offset(conn) if spec.clock == "real" else 0.0
            if left:
                conn.put_bytes(NODECTL.read_bytes(), conn.nodectl)
                _shift_real_clock(conn, -left)
                _record_offset(conn, 0.0)
                done.append(f"{conn.label}: moved the wall clock back by {left:+g}s")
            if conn.run(["iptables", "-w", "-S", commands.CHAIN], privileged=True).ok:
                for argv in commands.partition_teardown():
                    conn.run(argv, privileged=True)
                done.append(f"{conn.label}: removed iptables chain {commands.CHAIN}")
            others = sorted({a for n, a in addresses.items() if n != spec.name})
            routes = conn.nodectl_call("routes", *others) if others and conn.run(
                ["test", "-f", conn.nodectl]).ok else {}
            for device in sorted({d for d in routes.values() if isinstance(d, str) and d != "lo"}):
                shown = conn.run(["tc", "qdisc", "show", "dev", device, "root"], privileged=True)
                if " netem " in f" {shown.text()} ":
                    conn.run(commands.netem_clear(device)[0], privileged=True)
                    done.append(f"{conn.label}: removed netem on {device}")
        except SshError as e:
            done.append(f"could not clean {spec.name}: {e}")
        finally:
            conn.close()
    return done


_WHEEL_INFO = ("import platform, sys; print(sys.implementation.name, '%d%d' % sys.version_info[:2], "
               "platform.system(), platform.machine())")


def wheels_misfit(house: Path, implementation: str, version: str, system: str, machine: str) -> list[str]:
    """The binary wheels in `house` that cannot install on a host running
    `implementation` (cpython) `version` ("311") on `system` ("Linux")
    `machine` ("x86_64"): the wheelhouse is built for the harness's own
    Python and platform, and pip's refusal would not say why."""
    misfit = []
    for wheel in sorted(house.glob("*.whl")):
        parts = wheel.name[:-4].split("-")
        if len(parts) < 5:
            continue
        python, abi, platform = parts[-3], parts[-2], parts[-1]
        if platform == "any":
            continue
        pythons = python.split(".")
        fits_python = implementation != "cpython" or f"cp{version}" in pythons or (
            abi == "abi3" and any(p.startswith("cp3") and int(p[3:] or 0) <= int(version[1:]) for p in pythons))
        fits_platform = any(system.lower() in p and p.endswith(machine) for p in platform.split("."))
        if not (fits_python and fits_platform):
            misfit.append(wheel.name)
    return misfit


def _install(conn: _Conn, house: Path, marker: str) -> None:
    """Upload the wheels and install them into the host's venv, offline;
    then write `marker`, which says that this is done."""
    info = conn.check([conn.spec.python, "-c", _WHEEL_INFO]).text().split()
    if len(info) == 4:
        misfit = wheels_misfit(house, *info)
        if misfit:
            raise SshError(
                f"{conn.label}: its {conn.spec.python} is {info[0]} {info[1][0]}.{info[1][1:]} on {info[2]} "
                f"{info[3]}, but these wheels were built for the harness's own Python and platform: "
                f"{', '.join(misfit)}. Run the harness with the same Python version on the same platform as "
                f"the hosts (e.g. from one of them), or set `python` in the nodes file to a matching one")
    staging = f"{conn.workdir}/wheels"
    conn.check(["rm", "-rf", staging, f"{conn.venv}/{MARKER}"])
    conn.check(["mkdir", "-p", staging])
    conn.put_files(sorted(house.glob("*.whl")), staging)
    try:
        for argv in wheels.install_commands(conn.spec.python, conn.venv, staging):
            conn.check(argv, timeout=INSTALL_TIMEOUT_S)
    except SshError as e:
        hint = ""
        if "venv" in str(e) or "ensurepip" in str(e):
            hint = " (on Debian/Ubuntu: apt-get install python3-venv; scripts/provision-node does)"
        raise SshError(f"installing the node failed: {e}{hint}") from None
    conn.put_bytes((marker + "\n").encode(), f"{conn.venv}/{MARKER}")
    conn.run(["rm", "-rf", staging])


def _probe_netem(conn: _Conn) -> str:
    """"" if netem works on the host, else why. Adds a netem qdisc to `lo`
    for a moment, only where `lo` has none of its own (then it cannot tell
    and says nothing)."""
    shown = conn.run(["tc", "qdisc", "show", "dev", "lo", "root"], privileged=True)
    if not shown.ok:
        return f"{conn.spec.name}: tc does not work: {_tail(shown.stderr) or 'no tc (install iproute2)'}"
    if "noqueue" not in shown.text():
        return ""
    added = conn.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"], privileged=True)
    if added.ok:
        conn.run(["tc", "qdisc", "del", "dev", "lo", "root"], privileged=True)
        return ""
    return f"{conn.spec.name}: tc netem is not available ({_tail(added.stderr)}; the kernel needs sch_netem)"


def _faketime_env(library: str, control_file: str) -> dict[str, str]:
    """harness.backends.faketime's environment, with the host's paths."""
    env = faketime_env(Path(control_file), Path(library))
    env["LD_PRELOAD"] = library
    env["FAKETIME_TIMESTAMP_FILE"] = control_file
    return env


def _wheelhouse_digest(house: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(house.glob("*.whl")):
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _resolve(spec: HostSpec) -> str:
    """The host's IPv4 address, as the harness resolves it: iptables rules
    name addresses, not names, and the node binds it."""
    try:
        infos = socket.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise SshError(f"{spec.name}: cannot resolve {spec.host}: {e}") from None
    v4 = [i for i in infos if i[0] == socket.AF_INET]
    if not v4:
        raise SshError(f"{spec.name}: {spec.host} has no IPv4 address; the ssh backend's partitions are "
                       f"iptables (IPv4) rules, so it needs one")
    return str(v4[0][4][0])


def _recorded_offset(conn: _Conn) -> float:
    """The offset the workdir's record says a run left on the host's real
    wall clock (0.0: none)."""
    text = conn.read_text(conn.clock_record)
    try:
        return float(text.strip()) if text and text.strip() else 0.0
    except ValueError:
        return 0.0


def _shift_real_clock(conn: _Conn, delta_s: float) -> None:
    """Move the host's real wall clock by `delta_s` seconds (`nodectl.py
    shift-clock`, through `sudo -n` when the host's `sudo` is set; relative
    to the clock's reading on the host, so the round trip adds no error).
    Raises SshError (the clock did not move)."""
    conn.nodectl_call("shift-clock", repr(float(delta_s)), privileged=True)


def _record_offset(conn: _Conn, offset_s: float) -> None:
    """Record in the workdir the offset from true time the host's wall
    clock is left at (for `clean` and the next setup)."""
    conn.nodectl_call("write", conn.clock_record, f"{float(offset_s)!r}\n")


def _tail(data: bytes, limit: int = 500) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text[-limit:]


def _raise_first(results: Sequence[object]) -> None:
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _all(coros: Any) -> None:
    """Await every coroutine (each host gets its turn), then raise the first error."""
    _raise_first(await asyncio.gather(*coros, return_exceptions=True))
