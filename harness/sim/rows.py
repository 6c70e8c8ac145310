"""A row of a matrix file (`harness ci --matrix`, `harness.matrix`) as a
simulated test: `harness sim --matrix FILE --row NAME` runs the same
cluster, workload, settings and faults as `harness ci` would on a real
backend, on virtual time.

A row's time limit becomes the simulated seconds of workload, its recovery
timeout the simulated recovery, and kvnode's replica reads are on (as
`harness run` always has them for kvnode). What the simulation cannot honour
is named (`RowConfig.ignored`), never silently dropped: a wipe or kill aimed
at the hot key's replicas (the simulation picks at random), and the
backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import matrix
from harness.sim.network import NetworkSettings
from harness.sim.world import FAULTS, WorldConfig
from kvnode.config import ClusterSettings

__all__ = ["RowConfig", "from_row", "load_row"]

# RunConfig keywords that say nothing a simulated run needs.
_HARMLESS = {"system", "backend", "seed", "store", "name", "start_timeout", "subnet", "image", "base_image",
             "nodes_file", "insecure_accept_host_keys", "system_path"}
# nemesis_options the simulation honours, with the values it knows.
_OPTIONS = {"power_targets": ("one", "all"), "kill_targets": ("one", "majority")}


@dataclass(frozen=True)
class RowConfig:
    name: str
    config: WorldConfig
    seeds: tuple[int, ...]
    expected: str  # "valid", "invalid" or "any"
    ignored: tuple[str, ...]  # what the row asks that the simulation does not do


def load_row(path: Path, name: str) -> RowConfig:
    """Row `name` of matrix file `path`; ConfigError (harness.matrix's)
    for a missing row or a row the simulation cannot run."""
    m = matrix.load(path)
    for row in m.rows:
        if row.name == name:
            return from_row(row, path)
    raise matrix.MatrixError(f"{path}: no row named {name!r} (rows: {', '.join(r.name for r in m.rows)})")


def from_row(row: matrix.Row, path: Path | str = "matrix") -> RowConfig:
    run: dict[str, Any] = dict(row.run)
    where = f"{path}: row {row.name}"
    if run.get("system", "kvnode") != "kvnode":
        raise matrix.MatrixError(f"{where}: harness sim runs kvnode, not {run['system']!r}")
    ignored: list[str] = []
    if run.get("backend") not in (None, "local"):
        ignored.append(f"backend {run['backend']} (simulated as one whose partitions drop packets)")
    faults = tuple(run.pop("nemesis", ()))
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise matrix.MatrixError(f"{where}: the simulation has no {unknown[0]!r} fault ({', '.join(FAULTS)})")
    # The local backend's proxies hold what a partition cuts off and deliver
    # it at the heal; iptables on the others drops it.
    cuts = "hold" if run.get("backend", "local") == "local" else "drop"
    world: dict[str, Any] = {"nemesis": faults, "replica_reads": True, "network": NetworkSettings(cuts=cuts)}
    for key, value in dict(run.pop("nemesis_options", {}) or {}).items():
        if value in _OPTIONS.get(key, ()):
            world[key] = value
        elif key == "partition_shapes":
            world[key] = tuple(s.strip() for s in str(value).split(",") if s.strip())
        else:
            ignored.append(f"{key}={value} (the simulation picks its targets and shapes at random)")
    system = dict(run.pop("system_options", {}) or {})
    try:
        world["settings"] = ClusterSettings(**{"cluster": "sim", **system})
    except (TypeError, ValueError) as e:
        raise matrix.MatrixError(f"{where}: system options {system}: {e}") from None
    renames = {"time_limit": "simulated_seconds", "recovery_timeout": "recovery"}
    direct = {"nodes", "concurrency", "rate", "nemesis_interval", "op_timeout", "active_keys", "mix",
              "max_ops_per_key", "deletes", "workload"}
    for key, value in run.items():
        if key == "rate" and value is None:
            ignored.append("rate unpaced (the simulation paces its clients; 50 ops/s)")
        elif key in renames:
            world[renames[key]] = float(value)
        elif key in direct:
            world[key] = value
        elif key == "check":
            world["check"] = tuple(value)
        elif key not in _HARMLESS:
            ignored.append(f"{key}={value}")
    try:
        config = WorldConfig(**world)
    except (TypeError, ValueError) as e:
        raise matrix.MatrixError(f"{where}: {e}") from None
    expected = row.overall.verdict if row.overall is not None else "any"
    return RowConfig(name=row.name, config=config, seeds=row.seeds, expected=expected, ignored=tuple(ignored))
