"""The fault command lines shared by the real backends."""

from __future__ import annotations

from harness.backends import commands
from harness.backends.base import PacketShape


def test_a_partition_replaces_only_our_chains_rules() -> None:
    cmds = commands.partition({"10.0.0.3", "10.0.0.2"})
    assert cmds[0] == ["iptables", "-w", "-F", "HARNESS"]
    assert cmds[1:] == [["iptables", "-w", "-A", "HARNESS", "-s", s, "-j", "DROP"] for s in ("10.0.0.2", "10.0.0.3")]
    assert all("INPUT" not in c or "HARNESS" in c for c in cmds + commands.heal() + commands.partition_setup())
    assert commands.heal() == [["iptables", "-w", "-F", "HARNESS"]]
    assert ["iptables", "-w", "-X", "HARNESS"] in commands.partition_teardown()


def test_netem_arguments() -> None:
    [cmd] = commands.netem("eth0", PacketShape(delay_ms=100, jitter_ms=20, loss=0.05))
    assert cmd == ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "100ms", "20ms",
                   "distribution", "normal", "loss", "5%"]
    [cmd] = commands.netem("eth0", PacketShape(reorder=0.25))
    assert cmd[cmd.index("netem") + 1:cmd.index("netem") + 3] == ["delay", "10ms"] and cmd[-2:] == ["reorder", "25%"]
    assert commands.netem("eth0", PacketShape()) == [["tc", "qdisc", "del", "dev", "eth0", "root"]]


def test_a_remote_shell_line_keeps_spaces_and_quotes_intact() -> None:
    import shlex

    argv = ["printf", "%s", "it's a \"test\" $HOME; rm -rf /"]
    assert shlex.split(commands.shell_line(argv)) == argv
    assert commands.clock_file_content(-2.5) == "-2.5s"
