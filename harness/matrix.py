"""The matrix file of `harness ci` (TOML): configurations and the verdicts
each must get, so that a consistency regression fails CI the day it lands.

    [defaults]                       # any key of a row; rows override
    backend = "local"
    nodes = 5
    time_limit = 15
    seeds = 3                        # how many seeds a row may use (or a list)
    [defaults.system]                # the system's options (harness systems NAME)
    replicas = 3

    [[row]]
    name = "holds-under-partitions"
    nemesis = ["partition", "kill"]
    expect = "valid"                 # every checker valid

    [[row]]
    name = "stale-reads-found"
    system = { stale_reads = true }  # options add to the defaults'
    check = ["linearizable"]
    expect = { linearizable = { verdict = "invalid", anomalies = ["nonlinearizable"] } }

A row's keys are `harness run`'s options by name (`system`, `backend`,
`nodes`, `workload`, `nemesis`, `nemesis_interval`, `time_limit`, `rate`,
`concurrency`, `op_timeout`, `check`, `nemesis_options`, ...; `-` or `_`),
plus `name`, `backends` (the row once per backend, named `name@backend`),
`seeds` (a count, or the list of seeds to use; from `seed`, default 1),
`system` (the system's name,
or a table of its options; `system_name` names it when `system` is the
table) and `expect`: a verdict for the whole run (`valid`, `invalid`,
`any`), or a table of checker -> `valid` | `invalid` | `any` | {verdict =
"invalid", anomalies = [types that must appear]}. Checkers a table does not
name may get any verdict.

A row that expects some checker `invalid` must be found: it passes on the
first seed whose run meets its expectations. Any other row must meet them on
every seed it runs. `parse` refuses an unknown key or a bad value with one
line naming the file, the row and the key (`MatrixError`, exit 254).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.runner import RunConfig

VERDICTS = ("valid", "invalid", "any")
DEFAULT_SEEDS = 3
_RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)}
_NOT_IN_ROWS = {"store", "name", "seed", "system_options", "system"}
_ROW_KEYS = (_RUN_KEYS - _NOT_IN_ROWS) | {"name", "seeds", "system", "system_name", "expect", "seed", "backends"}


class MatrixError(ConfigError):
    """A matrix file that cannot be used: exit 254, one line."""


@dataclass(frozen=True)
class Expectation:
    verdict: str  # "valid", "invalid" or "any"
    anomalies: tuple[str, ...] = ()  # for "invalid": types that must appear

    def met(self, valid: Any, found: set[str]) -> bool:
        if self.verdict == "any":
            return True
        if self.verdict == "valid":
            return valid is True
        return valid is False and set(self.anomalies) <= found

    def describe(self) -> str:
        return self.verdict + (f" ({', '.join(self.anomalies)})" if self.anomalies else "")


@dataclass(frozen=True)
class Row:
    name: str
    run: dict[str, Any]  # RunConfig keywords, system_options included
    seeds: tuple[int, ...]
    overall: Expectation | None  # `expect = "valid"`: the run's verdict
    checkers: dict[str, Expectation] = field(default_factory=dict)  # `expect = {checker = ...}`

    @property
    def must_be_found(self) -> bool:
        return any(e.verdict == "invalid" for e in (self.overall, *self.checkers.values()) if e is not None)

    def expected(self) -> str:
        if self.overall is not None:
            return self.overall.describe()
        shown = [f"{c} {e.describe()}" for c, e in self.checkers.items() if e.verdict != "any"]
        return "; ".join(shown) or "any"

    def met(self, overall: Any, verdicts: Mapping[str, Any], anomalies: Mapping[str, set[str]]) -> bool:
        """Did a run with these verdicts (checker -> verdict) and anomaly
        types (checker -> types) meet this row's expectations?"""
        if self.overall is not None:
            found = set().union(*anomalies.values()) if anomalies else set()
            if not self.overall.met(overall, found):
                return False
        return all(e.met(verdicts.get(c, "missing"), anomalies.get(c, set())) for c, e in self.checkers.items())


@dataclass(frozen=True)
class Matrix:
    path: Path
    rows: tuple[Row, ...]

    def only(self, names: Sequence[str]) -> Matrix:
        unknown = [n for n in names if n not in {r.name for r in self.rows}]
        if unknown:
            raise MatrixError(f"{self.path}: no row named {unknown[0]!r} (rows: "
                              f"{', '.join(r.name for r in self.rows)})")
        return dataclasses.replace(self, rows=tuple(r for r in self.rows if r.name in names))


def load(path: Path, *, seeds: int | None = None, backend: str | None = None) -> Matrix:
    """Read and check a matrix file; `seeds` overrides every row's, and
    `backend` keeps the rows (or a row's `backends`) meant for it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise MatrixError(f"{path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MatrixError(f"{path}: not valid TOML: {e}") from None
    return parse(data, path, seeds=seeds, backend=backend)


def parse(data: Mapping[str, Any], path: Path, *, seeds: int | None = None, backend: str | None = None) -> Matrix:
    extra = set(data) - {"defaults", "row"}
    if extra:
        raise MatrixError(f"{path}: unknown top-level key {sorted(extra)[0]!r} (a matrix has [defaults] and "
                          "[[row]] tables)")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise MatrixError(f"{path}: defaults: must be a table ([defaults])")
    raw_rows = data.get("row", [])
    if not isinstance(raw_rows, list) or not raw_rows:
        raise MatrixError(f"{path}: no rows: add [[row]] tables")
    rows: list[Row] = []
    for n, raw in enumerate(raw_rows, 1):
        where = f"{path}: row {raw.get('name', n) if isinstance(raw, dict) else n}"
        if not isinstance(raw, dict):
            raise MatrixError(f"{where}: must be a table ([[row]])")
        own_defaults = {k: v for k, v in defaults.items() if not ("backends" in raw and k == "backend")}
        if "backends" in raw and "backend" in raw:
            raise MatrixError(f"{where}: backends: give backend or backends, not both")
        for expanded in _per_backend(_merge(own_defaults, raw), where, backend):
            row = _row(expanded, where, n, seeds=seeds)
            if any(r.name == row.name for r in rows):
                raise MatrixError(f"{where}: name: {row.name!r} is used by another row")
            rows.append(row)
    if not rows:
        raise MatrixError(f"{path}: no row runs on the {backend} backend")
    return Matrix(path, tuple(rows))


def _per_backend(raw: dict[str, Any], where: str, only: str | None) -> list[dict[str, Any]]:
    """A row with `backends = [...]` is one row per backend, named
    `name@backend`; with `only` (--backend), the rows for that backend alone:
    a row with `backend` (or `backends`) naming others is left out."""
    listed = raw.pop("backends", None)
    if listed is None:
        if only is not None and raw.get("backend", "local") != only:
            return []
        return [raw]
    if not isinstance(listed, list) or not listed or not all(isinstance(b, str) for b in listed):
        raise MatrixError(f"{where}: backends: a list of backend names")
    name = raw.get("name")
    return [{**raw, "backend": b, "name": f"{name}@{b}" if name else None} for b in listed
            if only is None or b == only]


def _merge(defaults: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """The row over its defaults. System options add up, unless the row
    names a system of its own (`system = "etcd"`, or `system_name` with a
    table): the defaults' options are another system's."""
    out = {k.replace("-", "_"): v for k, v in defaults.items()}
    row = {k.replace("-", "_"): v for k, v in row.items()}
    own_system = isinstance(row.get("system"), str) or (
        "system_name" in row and row["system_name"] != defaults.get("system_name"))
    for k, v in row.items():
        if k == "system" and isinstance(v, dict) and isinstance(out.get("system"), dict) and not own_system:
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    if own_system and isinstance(out.get("system"), dict) and "system" not in row:
        out["system"] = {}
    return out


def _row(raw: dict[str, Any], where: str, n: int, *, seeds: int | None) -> Row:
    for key in raw:
        if key not in _ROW_KEYS:
            raise MatrixError(f"{where}: unknown key {key!r} (row keys: {', '.join(sorted(_ROW_KEYS))})")
    name = raw.pop("name", None) or f"row-{n}"
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise MatrixError(f"{where}: name: must be a non-empty text without '/'")
    expect = raw.pop("expect", None)
    if expect is None:
        raise MatrixError(f"{where}: expect: missing (valid, invalid, any, or a table of checker -> verdict)")
    overall, checkers = _expect(expect, where)
    system = raw.pop("system", {})
    system_name = raw.pop("system_name", None)
    if isinstance(system, str):
        system_name, system = system, {}
    if not isinstance(system, dict):
        raise MatrixError(f"{where}: system: a system's name, or a table of its options")
    run: dict[str, Any] = {"system": str(system_name or "kvnode"), "system_options": dict(system)}
    count = raw.pop("seeds", DEFAULT_SEEDS)
    first = raw.pop("seed", 1)
    if not isinstance(first, int) or isinstance(first, bool) or first < 0:
        raise MatrixError(f"{where}: seed: must be a whole number >= 0")
    if seeds is not None:
        count = seeds
    if isinstance(count, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in count) and count:
        seed_list = tuple(count)
    elif isinstance(count, int) and not isinstance(count, bool) and count >= 1:
        seed_list = tuple(range(first, first + count))
    else:
        raise MatrixError(f"{where}: seeds: a count >= 1 or a list of whole numbers")
    for key, value in raw.items():
        run[key] = _value(key, value, where)
    _check_run(run, where)
    return Row(name=name, run=run, seeds=seed_list, overall=overall, checkers=checkers)


def _expect(expect: Any, where: str) -> tuple[Expectation | None, dict[str, Expectation]]:
    if isinstance(expect, str):
        return _expectation(expect, where, "expect"), {}
    if not isinstance(expect, dict) or not expect:
        raise MatrixError(f"{where}: expect: valid, invalid, any, or a table of checker -> verdict")
    return None, {str(c): _expectation(e, where, f"expect.{c}") for c, e in expect.items()}


def _expectation(value: Any, where: str, key: str) -> Expectation:
    if isinstance(value, str):
        if value not in VERDICTS:
            raise MatrixError(f"{where}: {key}: {value!r} is not one of {', '.join(VERDICTS)}")
        return Expectation(value)
    if isinstance(value, dict):
        unknown = set(value) - {"verdict", "anomalies"}
        if unknown:
            raise MatrixError(f"{where}: {key}: unknown key {sorted(unknown)[0]!r} (verdict, anomalies)")
        verdict = value.get("verdict", "invalid")
        anomalies = value.get("anomalies", [])
        if verdict not in VERDICTS:
            raise MatrixError(f"{where}: {key}.verdict: {verdict!r} is not one of {', '.join(VERDICTS)}")
        if not isinstance(anomalies, list) or not all(isinstance(a, str) for a in anomalies):
            raise MatrixError(f"{where}: {key}.anomalies: a list of anomaly types")
        if anomalies and verdict != "invalid":
            raise MatrixError(f"{where}: {key}.anomalies: only an invalid verdict has anomalies")
        return Expectation(verdict, tuple(anomalies))
    raise MatrixError(f"{where}: {key}: valid, invalid, any, or {{verdict = ..., anomalies = [...]}}")


_LISTS = {"nemesis", "check", "system_path"}
_FLOATS = {"rate", "time_limit", "nemesis_interval", "op_timeout", "recovery_timeout", "start_timeout"}
_INTS = {"nodes", "concurrency", "active_keys", "max_ops_per_key"}


def _value(key: str, value: Any, where: str) -> Any:
    if key in _LISTS:
        if isinstance(value, str):
            value = [x.strip() for x in value.split(",") if x.strip()]
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise MatrixError(f"{where}: {key}: a list of names (or one comma-separated text)")
        return tuple(value)
    if key in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise MatrixError(f"{where}: {key}: a positive number of seconds (or ops/s), not {value!r}")
        return float(value)
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MatrixError(f"{where}: {key}: a whole number >= 1, not {value!r}")
        return value
    if key == "deletes":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise MatrixError(f"{where}: {key}: a share of the operations, at least 0 and below 1, not {value!r}")
        return float(value)
    if key == "nemesis_options":
        if not isinstance(value, dict):
            raise MatrixError(f"{where}: {key}: a table of fault options (kill_targets = \"all\" ...)")
        return dict(value)
    if key == "insecure_accept_host_keys":
        if not isinstance(value, bool):
            raise MatrixError(f"{where}: {key}: true or false")
        return value
    if not isinstance(value, str):
        raise MatrixError(f"{where}: {key}: a text, not {value!r}")
    return value


def _check_run(run: dict[str, Any], where: str) -> None:
    """What can be refused before anything runs: the harness's own settings,
    the system and its options, the fault names. A refusal by the backend
    or the system of a deployment is not an error of the file: that row is
    skipped, with the reason, when it runs."""
    from harness import runner
    from harness.nemesis.schedule import parse_fault_names

    try:
        config = RunConfig(**run, seed=0)
        config.validate()
        runner.load_system(config.system, config.system_options, config.system_path)
        parse_fault_names(config.nemesis)
        runner.parse_fault_options(config.nemesis_options)
    except (ConfigError, ValueError, TypeError) as e:
        raise MatrixError(f"{where}: {e}") from None
