"""The errors that end a harness command with one clear message instead of
a traceback (the command line maps them to exit codes)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run: a bad argument, an option the system
    refuses, a combination it does not support (exit 254; nothing started)."""


class RunError(RuntimeError):
    """The run cannot go on, for a reason one message explains (a node that
    exits at start-up, an adapter returning something that is not a
    completion): exit 255, without a traceback."""


class AdapterError(RunError):
    """A system's client returned something the harness cannot record."""
