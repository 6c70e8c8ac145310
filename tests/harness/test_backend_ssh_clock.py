"""The ssh backend's real-clock mode (`clock = "real"` in nodes.toml), which
sets a host's own wall clock through sudo, tested against a fake connection:
the commands it would run on the hosts and its bookkeeping of the offset
applied to each. Not end to end: the test hosts of test_ssh_backend.py are
namespaces of this machine, sharing its kernel clock, which a test must
never change. Also: the nodes file's `clock` field and `from_options`."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from harness.backends import commands
from harness.backends.base import BackendOptions
from harness.backends.nodes_file import HostSpec, NodesFileError, parse
from harness.backends.ssh import RemoteResult, SshBackend, SshError, _Conn, _Host, remote_command


class FakeConn(_Conn):
    """A `_Conn` that runs nothing: it records each remote command line (as
    `_Conn.run` would send it, sudo included) and answers nodectl as a host
    would."""

    def __init__(self, spec: HostSpec, failing: str = "") -> None:
        # What _Conn.__init__ sets, without connecting anywhere.
        self.spec = spec
        self.label = f"{spec.name} (fake)"
        self.workdir = f"/home/test/{spec.name}"
        self.node_dir = f"{self.workdir}/node"
        self.venv = f"{self.workdir}/venv"
        self.python = f"{self.venv}/bin/python"
        self.nodectl = f"{self.workdir}/nodectl.py"
        self.clock_file = f"{self.node_dir}/clock.faketime"
        self.clock_record = f"{self.workdir}/clock.offset"
        self.lines: list[list[str]] = []
        self.files: dict[str, str] = {}
        self.failing = failing  # a nodectl operation that fails
        self.closed = False

    def run(self, argv: Any, *, env: Any = None, privileged: bool = False, timeout: float = 0) -> RemoteResult:
        full = remote_command(argv, env=env, sudo=privileged and self.spec.sudo)
        self.lines.append(full)
        answer: dict[str, Any] = {}
        if list(argv[:2]) == [self.spec.python, self.nodectl]:
            op, args = argv[2], list(argv[3:])
            if op == self.failing:
                answer = {"error": f"{op} failed here"}
            elif op == "shift-clock":
                answer = {"shifted": float(args[0])}
            elif op == "write":
                self.files[args[0]] = args[1]
            elif op == "signal":
                answer = {"pid": None}
        return RemoteResult(argv=tuple(full), exit_status=1 if "error" in answer else 0,
                            stdout=json.dumps(answer).encode(), stderr=b"")

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def put_bytes(self, data: bytes, path: str) -> None:
        self.files[path] = data.decode()

    def close(self) -> None:
        self.closed = True

    def shifts(self) -> list[tuple[bool, float]]:
        """(through sudo, seconds) of every shift-clock sent."""
        return [(line[0] == "sudo", float(line[-1])) for line in self.lines if "shift-clock" in line]


NODES_TOML = """
[defaults]
sudo = true
clock = "real"

[[node]]
host = "10.0.0.1"

[[node]]
host = "10.0.0.2"
sudo = false

[[node]]
host = "10.0.0.3"
clock = "faketime"
"""


def backend_with_fakes(tmp_path: Path, failing: str = "") -> tuple[SshBackend, dict[str, FakeConn]]:
    nodes = parse(NODES_TOML, tmp_path / "nodes.toml")
    backend = SshBackend(nodes)
    conns = {spec.name: FakeConn(spec, failing) for spec in nodes.hosts}
    for name, conn in conns.items():
        backend._hosts[name] = _Host(spec=conn.spec, conn=conn, address=conn.spec.host,
                                     backend_log=tmp_path / f"{name}.log")
    backend._set_up = True
    return backend, conns


def test_the_nodes_files_clock_field(tmp_path: Path) -> None:
    nodes = parse(NODES_TOML, tmp_path / "nodes.toml")
    assert [h.clock for h in nodes.hosts] == ["real", "real", "faketime"]
    assert parse('[[node]]\nhost = "h"\n', tmp_path / "x.toml").hosts[0].clock == "faketime"
    with pytest.raises(NodesFileError, match=r"node 1: `clock` must be 'faketime' or 'real', not 'ntp'") as e:
        parse('[[node]]\nhost = "h"\nclock = "ntp"\n', tmp_path / "bad.toml")
    assert "bad.toml" in str(e.value)


def test_set_clock_moves_a_real_clock_by_the_difference_through_sudo(tmp_path: Path) -> None:
    backend, conns = backend_with_fakes(tmp_path)
    n1, n2 = conns["n1"], conns["n2"]

    async def main() -> None:
        await backend.set_clock("n1", 3600)
        await backend.set_clock("n1", -120.5)
        await backend.set_clock("n1", -120.5)  # no change: nothing to do
        await backend.set_clock("n2", 10)

    asyncio.run(main())
    assert n1.shifts() == [(True, 3600.0), (True, -3720.5)]
    [line] = [line for line in n1.lines if "shift-clock" in line][:1]
    assert line == ["sudo", "-n", "python3", n1.nodectl, "shift-clock", "3600.0"]
    assert shlex.split(commands.shell_line(line)) == line
    assert n2.shifts() == [(False, 10.0)]  # sudo = false: the user is root
    assert backend._hosts["n1"].clock_offset == -120.5 and backend._hosts["n2"].clock_offset == 10
    # The offset left applied is recorded on the host, for `clean` and the next setup.
    assert float(n1.files[n1.clock_record]) == -120.5
    assert not [line for line in conns["n3"].lines if "shift-clock" in line]


def test_heal_all_and_teardown_put_every_real_clock_back(tmp_path: Path) -> None:
    backend, conns = backend_with_fakes(tmp_path)

    async def main() -> None:
        await backend.set_clock("n1", 30)
        await backend.set_clock("n2", -7.25)
        await backend.heal_all()
        assert conns["n1"].shifts()[-1] == (True, -30.0) and conns["n2"].shifts()[-1] == (False, 7.25)
        assert all(backend._hosts[n].clock_offset == 0 for n in ("n1", "n2"))
        assert float(conns["n1"].files[conns["n1"].clock_record]) == 0
        await backend.heal_all()  # at +0 already: no shift
        assert len(conns["n1"].shifts()) == 2
        await backend.set_clock("n1", 5)
        await backend.teardown()

    asyncio.run(main())
    assert conns["n1"].shifts() == [(True, 30.0), (True, -30.0), (True, 5.0), (True, -5.0)]
    assert conns["n2"].shifts() == [(False, -7.25), (False, 7.25)]
    assert all(c.closed for c in conns.values())
    # The faketime host's clock is its control file, as before.
    assert any(conns["n3"].clock_file in line for line in conns["n3"].lines)


def test_a_failed_shift_keeps_the_bookkeeping(tmp_path: Path) -> None:
    backend, conns = backend_with_fakes(tmp_path, failing="shift-clock")
    with pytest.raises(SshError, match="shift-clock failed here"):
        asyncio.run(backend.set_clock("n1", 60))
    assert backend._hosts["n1"].clock_offset == 0
    assert conns["n1"].clock_record not in conns["n1"].files


def test_real_clocks_need_no_libfaketime_and_blind_no_program(tmp_path: Path) -> None:
    backend, _ = backend_with_fakes(tmp_path)
    assert backend.clock_env("n1") == {}
    assert asyncio.run(backend.clock_blind("n1", ["/usr/bin/etcd"])) is None
    caps = backend.capabilities()
    assert caps.clock and "real wall clocks, set through sudo: n1, n2" in caps.extra["clocks"]
    assert "libfaketime (wall clock of the node's process only): n3" in caps.extra["clocks"]


def test_setup_puts_back_an_offset_a_crashed_run_left_and_checks_sudo(tmp_path: Path) -> None:
    backend, conns = backend_with_fakes(tmp_path)
    n1 = conns["n1"]
    n1.files[n1.clock_record] = "42.5\n"
    backend._prepare_real_clock(backend._hosts["n1"])
    assert n1.shifts() == [(True, -42.5), (True, 0.0)]  # back, then the check (0 moves nothing)
    assert backend._hosts["n1"].clock_problem == "" and backend._hosts["n1"].clock_offset == 0
    assert float(n1.files[n1.clock_record]) == 0  # put back: a later setup or clean has nothing to undo
    backend._prepare_real_clock(backend._hosts["n1"])
    assert n1.shifts()[2:] == [(True, 0.0)]

    failing, fconns = backend_with_fakes(tmp_path / "f", failing="shift-clock")
    failing._prepare_real_clock(failing._hosts["n2"])
    assert "cannot set the wall clock" in failing._hosts["n2"].clock_problem
    assert not failing.capabilities().clock
    with pytest.raises(SshError, match="cannot set n2's clock"):
        asyncio.run(failing.set_clock("n2", 1))
    assert fconns["n2"].shifts() == [(False, 0.0)]


def test_clean_puts_back_the_offset_a_crashed_run_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends import ssh

    path = tmp_path / "nodes.toml"
    path.write_text(NODES_TOML)
    made: dict[str, FakeConn] = {}

    def connect(spec: HostSpec, known_hosts: Any, insecure: bool) -> FakeConn:
        conn = made[spec.name] = FakeConn(spec)
        conn.files[conn.clock_record] = "-300.0\n"  # n3 (faketime) has one too: not its to undo
        return conn

    monkeypatch.setattr(ssh, "_Conn", connect)
    monkeypatch.setattr(ssh, "_resolve", lambda spec: spec.host)
    lines = ssh.clean(path)
    assert made["n1"].shifts() == [(True, 300.0)] and made["n2"].shifts() == [(False, 300.0)]
    assert made["n3"].shifts() == []
    assert any("n1 (fake): moved the wall clock back by -300s" in line for line in lines), lines
    assert float(made["n1"].files[made["n1"].clock_record]) == 0
    assert all(c.closed for c in made.values())


def test_from_options_needs_a_nodes_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^--backend ssh needs --nodes-file nodes.toml$"):
        SshBackend.from_options(BackendOptions())
    with pytest.raises(NodesFileError, match="cannot read the nodes file"):
        SshBackend.from_options(BackendOptions(nodes_file=str(tmp_path / "absent.toml")))
    path = tmp_path / "nodes.toml"
    path.write_text(NODES_TOML)
    backend = SshBackend.from_options(BackendOptions(nodes_file=str(path), insecure_accept_host_keys=True))
    assert backend.node_names() == ["n1", "n2", "n3"] and backend.insecure
