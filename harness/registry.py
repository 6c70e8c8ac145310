"""One registry for every kind of plug-in: systems, workloads, nemeses (fault
kinds), backends and checker models.

Each kind is an entry-point group of Python packaging (`KINDS`). The
built-ins are registered in this distribution's `pyproject.toml` exactly as a
user's plug-in registers in its own:

    [project.entry-points."dynamo_harness.workloads"]
    bank = "mypackage.bank:BankWorkload"

so adding a workload or a nemesis is one file plus one line. `harness list`
shows what is installed. What each kind's entry must be:

- `systems`: a class (or factory) called with the system's options as keyword
  arguments, giving a `harness.systems.base.System`;
- `workloads`: a class called with `workloads.base.WorkloadOptions`, giving a
  `workloads.base.Workload`;
- `nemeses`: a factory called with `(handle, options)` (a
  `harness.nemesis.base.ClusterHandle` and a
  `harness.nemesis.schedule.FaultOptions`), giving a
  `harness.nemesis.base.Fault`;
- `backends`: a class with `from_options(harness.backends.base.BackendOptions)`,
  giving a `harness.backends.base.Backend`;
- `models`: a class called with the initial value, giving a
  `checkers.models.Model`.

Loading an entry imports its module only then: `harness check` does not pay
for Docker's SDK. A name that is not registered is a `PluginError` listing
the names that are.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "Entry", "PluginError", "entries", "load", "load_object", "names", "search_path"]

KINDS: dict[str, str] = {
    "systems": "dynamo_harness.systems",
    "workloads": "dynamo_harness.workloads",
    "nemeses": "dynamo_harness.nemeses",
    "backends": "dynamo_harness.backends",
    "models": "dynamo_harness.models",
}
# The singular a message uses for one plug-in of each kind.
SINGULAR = {"systems": "system", "workloads": "workload", "nemeses": "nemesis", "backends": "backend",
            "models": "model"}


class PluginError(ValueError):
    """A plug-in that is not registered, or cannot be loaded; says which."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    value: str  # "module:attribute"
    distribution: str  # the installed distribution that registers it ("" if unknown)


def entries(kind: str) -> list[Entry]:
    """Every registered plug-in of `kind`, in registration order (a name
    registered twice: the first one wins)."""
    group = _group(kind)
    seen: dict[str, Entry] = {}
    for ep in entry_points(group=group):
        if ep.name not in seen:
            seen[ep.name] = Entry(kind, ep.name, ep.value, _distribution(ep))
    return list(seen.values())


def names(kind: str) -> list[str]:
    return [e.name for e in entries(kind)]


def load(kind: str, name: str) -> Any:
    """The object registered as `name` for `kind`."""
    group = _group(kind)
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as e:  # an import error in a user's plug-in: say whose
                raise PluginError(f"the {SINGULAR[kind]} {name!r} ({ep.value}) cannot be loaded: "
                                  f"{type(e).__name__}: {e}") from None
    known = ", ".join(names(kind)) or "none"
    raise PluginError(f"no {SINGULAR[kind]} named {name!r} is registered (registered: {known})")


def load_object(spec: str, what: str, path: Sequence[Path] = ()) -> Any:
    """`package.module:Name` (attributes may be dotted), imported from the
    directories `path` and the current directory as well as the installed
    packages (see `search_path`)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"{what} {spec!r}: expected a registered name or 'package.module:Name'")
    search_path([*path, Path.cwd()])
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"{what} {spec!r}: cannot import {module_name}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{what} {spec!r}: {module_name} has no {attr}") from None
    return obj


def search_path(directories: Sequence[Path]) -> None:
    """Make modules in `directories` importable from now on, before the
    installed packages: a user's adapter in the current directory or in
    `--system-path DIR` needs no PYTHONPATH (the `harness` script, unlike
    `python -m`, does not put the current directory on the path). Kept for
    the rest of the process, so that the adapter's own later imports work."""
    added = [str(d.resolve()) for d in directories]
    for d in reversed(added):
        if d not in sys.path:
            sys.path.insert(0, d)
    importlib.invalidate_caches()


def _group(kind: str) -> str:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown plug-in kind {kind!r}; kinds: {', '.join(KINDS)}") from None


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(getattr(dist, "name", "") or "")
