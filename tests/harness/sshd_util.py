"""SSH test hosts without VMs: one network namespace per host, each with its
own sshd, on a bridge of the test's own (root needed).

`ssh_test_hosts(count, base_dir)` makes them and removes everything on the
way out, whatever happens in between: the sshd processes, any process left
inside the namespaces, the namespaces (and with them the veths), the bridge
and the FORWARD rule. Each sshd is set up by `scripts/provision-node
--sshd-dir`, the same script the Vagrantfile provisions VMs with: its own
host key, the test's client key authorized, root login by key only.
`known_hosts` holds the hosts' real keys, so host-key checking stays on.

The namespaces share this machine's file system: give each host its own
workdir (`nodes_toml` does).

On a host with Docker the FORWARD policy is DROP and br_netfilter sends
bridged frames through iptables: namespaces on a bridge cannot reach each
other until `-I FORWARD -i <bridge> -o <bridge> -j ACCEPT`, which is added
here and removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVISION = ROOT / "scripts" / "provision-node"
SSHD = Path("/usr/sbin/sshd")


def unavailable() -> str | None:
    """Why these hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, a bridge, sshd as root)"
    if not SSHD.exists():
        return f"no {SSHD} (install openssh-server; scripts/setup does as root)"
    for tool in ("ip", "iptables", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    probe = f"hsprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


@dataclass
class SshHost:
    name: str
    address: str
    namespace: str
    sshd_dir: Path
    host_key_line: str  # "ssh-ed25519 AAAA..." of its sshd
    sshd: subprocess.Popen[bytes] | None = None


@dataclass
class SshHosts:
    base: Path
    key: Path  # the client's private key, authorized on every host
    known_hosts: Path
    hosts: list[SshHost] = field(default_factory=list)
    bridge: str = ""
    gateway: str = ""  # the bridge's address: where the harness's traffic comes from

    def nodes_toml(self, path: Path | None = None, *, known_hosts: Path | None = None,
                   hosts: Sequence[SshHost] | None = None, sudo: bool = False) -> Path:
        """A nodes file for these hosts (user root, without sudo unless
        asked), each with its own workdir under `base/work/`."""
        path = path or self.base / "nodes.toml"
        lines = [f"known_hosts = {_toml(str(known_hosts or self.known_hosts))}", "",
                 "[defaults]", 'user = "root"', f"key = {_toml(str(self.key))}", f"sudo = {str(sudo).lower()}", ""]
        for h in hosts if hosts is not None else self.hosts:
            lines += ["[[node]]", f"name = {_toml(h.name)}", f"host = {_toml(h.address)}",
                      f"workdir = {_toml(str(self.base / 'work' / h.name))}", ""]
        path.write_text("\n".join(lines))
        return path

    def exec_in(self, host: SshHost, argv: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the host's namespace (not over SSH)."""
        return subprocess.run(["ip", "netns", "exec", host.namespace, *argv], capture_output=True, text=True,
                              timeout=timeout)


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {done.stderr.strip()}")


def _free_subnet() -> str:
    """A 10.78.x.0/24 that no route of this machine uses (another run's)."""
    routes = subprocess.run(["ip", "-o", "route"], capture_output=True, text=True).stdout
    for i in range(200):
        third = (os.getpid() + i) % 200 + 1
        if f"10.78.{third}.0/24" not in routes:
            return f"10.78.{third}"
    raise RuntimeError("no free 10.78.x.0/24 subnet")


@contextlib.contextmanager
def ssh_test_hosts(count: int, base: Path) -> Iterator[SshHosts]:
    tag = f"hs{os.getpid() % 100000}"
    prefix = _free_subnet()
    base.mkdir(parents=True, exist_ok=True)
    key = base / "client" / "id_ed25519"
    key.parent.mkdir(mode=0o700)
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "harness-test-client", "-f", str(key))
    hosts = SshHosts(base=base, key=key, known_hosts=base / "known_hosts", bridge=f"{tag}br",
                      gateway=f"{prefix}.1")
    forward = ["FORWARD", "-i", hosts.bridge, "-o", hosts.bridge, "-j", "ACCEPT"]
    namespaces: list[str] = []
    bridge_made = forward_added = False
    try:
        _sh("ip", "link", "add", hosts.bridge, "type", "bridge")
        bridge_made = True
        _sh("ip", "addr", "add", f"{hosts.gateway}/24", "dev", hosts.bridge)
        _sh("ip", "link", "set", hosts.bridge, "up")
        _sh("iptables", "-w", "-I", *forward)
        forward_added = True
        for i in range(count):
            name, address, ns = f"h{i + 1}", f"{prefix}.{11 + i}", f"harness-ssh-{tag}-{i + 1}"
            outside, inside = f"{tag}v{i + 1}", f"{tag}p{i + 1}"
            _sh("ip", "netns", "add", ns)
            namespaces.append(ns)
            _sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            _sh("ip", "link", "set", inside, "netns", ns)
            _sh("ip", "link", "set", outside, "master", hosts.bridge, "up")
            for argv in (["ip", "link", "set", inside, "name", "eth0"],
                         ["ip", "addr", "add", f"{address}/24", "dev", "eth0"],
                         ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
                _sh("ip", "netns", "exec", ns, *argv)
            sshd_dir = base / "sshd" / name
            provisioned = subprocess.run(
                [str(PROVISION), "--no-packages", "--sshd-dir", str(sshd_dir), "--listen", address,
                 "--pubkey", f"{key}.pub", "--user", "root"], capture_output=True, text=True)
            if provisioned.returncode != 0:
                raise RuntimeError(f"provision-node --sshd-dir failed: {provisioned.stderr.strip()}")
            command = shlex.split(provisioned.stdout.strip().splitlines()[-1])
            host_key = " ".join((sshd_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])
            host = SshHost(name=name, address=address, namespace=ns, sshd_dir=sshd_dir, host_key_line=host_key)
            log = open(sshd_dir / "sshd.log", "wb")  # noqa: SIM115 -- handed to sshd
            with log:
                host.sshd = subprocess.Popen(["ip", "netns", "exec", ns, *command], stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=log)
            hosts.hosts.append(host)
        hosts.known_hosts.write_text("".join(f"{h.address} {h.host_key_line}\n" for h in hosts.hosts))
        for h in hosts.hosts:
            _wait_listening(h)
        yield hosts
    finally:
        for h in hosts.hosts:
            if h.sshd is not None and h.sshd.poll() is None:
                h.sshd.terminate()
                try:
                    h.sshd.wait(10)
                except subprocess.TimeoutExpired:
                    h.sshd.kill()
                    h.sshd.wait(10)
        for ns in namespaces:
            _kill_inside(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if bridge_made:
            subprocess.run(["ip", "link", "del", hosts.bridge], capture_output=True)
        if forward_added:
            subprocess.run(["iptables", "-w", "-D", *forward], capture_output=True)


def _wait_listening(host: SshHost, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert host.sshd is not None
        if host.sshd.poll() is not None:
            log = (host.sshd_dir / "sshd.log").read_text(errors="replace")
            raise RuntimeError(f"sshd of {host.name} exited {host.sshd.returncode}: {log[-1000:]}")
        try:
            socket.create_connection((host.address, 22), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _kill_inside(namespace: str) -> None:
    """Whatever still runs in a namespace of ours (a node a failed test
    left behind) is ours: SIGKILL it."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
