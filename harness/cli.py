"""The `harness` command line.

Commands: `harness run` (a test: cluster, workload, faults, checks),
`harness check PATH...` (judge recorded histories for linearizability, or
re-check a stored run with its workload's checkers), `harness systems`
(a system's options and promises), `harness list` (the installed plug-ins),
`harness ci` (the expected-verdict matrix, or `--mutants` for the detection
table), `harness sim` (kvnode clusters on virtual time, seed by seed, with
replay and shrinking), `harness report`, `harness serve`,
`harness docker build` and `harness clean`.

Modules are imported where a command needs them (plainly, so that mypy sees
them): `harness check` starts without loading the runner.

Exit codes, as in Jepsen (DESIGN.md): 0 valid, 1 invalid, 2 unknown,
254 bad arguments (a usage error, a missing file, a history that cannot be
read), 255 internal error. Ctrl-C exits 130.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import sys
import time
import tomllib
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource
from tabulate import tabulate

from checkers.history import HistoryError, Op
from workloads.base import MIXES

from . import registry
from .errors import ConfigError, RunError
from .history import FORMATS, HistoryFormatError, detect_format, read_history, resolve_history_path
from .serve import serve as serve_command
from .sim.command import sim as sim_command
from .systems import kvnode_flags

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2
EXIT_BAD_ARGS, EXIT_INTERNAL, EXIT_INTERRUPTED = 254, 255, 130

DEFAULT_MODEL = {"porcupine-kv": "kv", "porcupine-etcd": "cas-register"}


class BadInput(click.ClickException):
    """A bad argument found after parsing (exit 254)."""

    exit_code = EXIT_BAD_ARGS


class HarnessGroup(click.Group):
    """A click group whose standalone `main` maps errors to Jepsen's exit
    codes instead of click's (click exits 2 on a usage error, which here
    means "unknown")."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.Exit as e:
            _exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted!", err=True)
            _exit(EXIT_INTERRUPTED)
        except click.ClickException as e:  # UsageError, BadParameter, BadInput, FileError ...
            e.show()
            _exit(EXIT_BAD_ARGS)
        except (FileNotFoundError, HistoryFormatError, HistoryError, ConfigError, registry.PluginError) as e:
            click.echo(f"Error: {e}", err=True)
            _exit(EXIT_BAD_ARGS)
        except RunError as e:
            click.echo(f"Error: {e}", err=True)
            _exit(EXIT_INTERNAL)
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            click.echo(f"Internal error: {type(e).__name__}: {e}", err=True)
            _exit(EXIT_INTERNAL)
        _exit(rv if isinstance(rv, int) else 0)


def _exit(code: int) -> NoReturn:
    sys.exit(code)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dynamo-harness")
def cli() -> None:
    """A Jepsen-style correctness harness for replicated key-value stores."""


def _parse_initial(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _json_default(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return dataclasses.asdict(v)
    if isinstance(v, bytes | bytearray):
        return {"$bytes": bytes(v).hex()}
    if isinstance(v, set | frozenset):
        try:
            return sorted(v)
        except TypeError:
            return list(v)
    return repr(v)


def _describe_op(op: Op) -> str:
    key = f" key {op.key!r}" if op.key is not None else ""
    value = "" if op.value is None else f" {op.value!r}"
    return f"#{op.index} process {op.process} {op.type} {op.f}{key}{value} at {op.time / 1e9:.3f} s"


def _verdict_rows(
    result: Any, history: Sequence[Op], *, path: Path, fmt: str, model: str, elapsed: float
) -> list[tuple[str, str]]:
    counts = getattr(result, "counts", {}) or {}

    def count(*names: str) -> str:
        for n in names:
            if n in counts:
                return str(counts[n])
        return "-"

    valid = result.valid
    verdict = {True: "valid", False: "INVALID"}.get(valid, "unknown") if isinstance(valid, bool) else str(valid)
    ops = count("operations", "ops")
    if ops == "-":
        ops = str(sum(1 for o in history if o.type == "invoke" and o.process != "nemesis"))
    rows = [
        ("history", f"{path} ({fmt}, {len(history)} events)"),
        ("model", model),
        ("verdict", verdict),
        ("operations", ops),
        ("partitions", count("partitions", "keys")),
        ("steps", count("steps", "model_steps")),
        ("time", f"{elapsed:.3f} s"),
    ]
    if valid == "unknown" and getattr(result, "reason", None):
        rows.append(("reason", str(result.reason)))
    return rows


def _anomaly_lines(result: Any, history: Sequence[Op]) -> list[str]:
    lines: list[str] = []
    for anomaly in getattr(result, "anomalies", ())[:1]:
        lines.append(anomaly.explanation)
        for i in anomaly.ops[:3]:
            if 0 <= i < len(history) and history[i].index == i:
                lines.append("  " + _describe_op(history[i]))
    return lines


def _simple_page(title: str, result: Any) -> str:
    verdict = "valid" if result.valid is True else str(result.valid)
    reason = f"<p>{html.escape(str(result.reason))}</p>" if getattr(result, "reason", None) else ""
    t = html.escape(title)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>"
        f"<body><h1>{t}</h1><p>Verdict: <strong>{html.escape(verdict)}</strong>; "
        f"no counterexample to show.</p>{reason}</body></html>\n"
    )


def _check_run(run_dir: Path, as_json: bool, *, time_limit: float | None, memory_limit: int | None,
               html_out: Path | None) -> int:
    """Re-check a stored run with its workload's checkers, for its promise;
    with `html_out`, write its report there."""
    from harness import results, runner, store
    from harness.report import page, text

    try:
        history = read_history(run_dir / "history.jsonl", "jsonl")
        checked, promise, not_checked = runner.check_run(
            run_dir, history, time_limit=time_limit,
            memory_limit=None if memory_limit is None else memory_limit * 1024 * 1024)
    except ConfigError as e:
        raise BadInput(f"{run_dir}/test.json: {e}") from None
    except ValueError as e:
        raise BadInput(str(e)) from None
    summary = results.as_dict(checked, run=str(run_dir), promise=promise, not_checked=not_checked)
    system = str(store.read_test(run_dir).get("system_name") or "the system")
    for line in results.promise_lines(promise, not_checked, system):
        click.echo(line, err=as_json)
    click.echo(results.table(checked), err=as_json)
    record = page.load_run(run_dir, results=json.loads(json.dumps(summary, default=_json_default)),
                           history=history)
    for line in text.first_sentences(record, checked):
        click.echo(line, err=as_json)
    if html_out is not None:
        html_out.write_text(page.render(record), encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)
    if as_json:
        click.echo(json.dumps(summary, default=_json_default, indent=2))
    return int(results.exit_code(summary["valid"]))


def _beside_run(path: Path) -> Path | None:
    """The run directory `path` is or whose history.jsonl it is, if any."""
    if path.is_dir():
        return path.resolve() if (path / "test.json").is_file() else None
    if path.name == "history.jsonl" and (path.parent / "test.json").is_file():
        return path.parent.resolve()
    return None


@dataclasses.dataclass(kw_only=True)
class _FileCheck:
    """One history file's check by `harness check`: its result, or why it
    was not checked (`error`, with the exit code that says so)."""

    path: Path
    fmt: str = "-"
    model: str = "-"
    history: list[Op] = dataclasses.field(default_factory=list)
    result: Any = None
    error: str | None = None
    code: int = EXIT_VALID
    elapsed: float = 0.0  # reading and checking


# Exit codes from best to worst, for many files: the command's is the worst.
_SEVERITY = (EXIT_VALID, EXIT_UNKNOWN, EXIT_INVALID, EXIT_BAD_ARGS, EXIT_INTERNAL)


def _result_code(result: Any) -> int:
    valid = result.valid
    if isinstance(valid, bool):
        return EXIT_VALID if valid else EXIT_INVALID
    return EXIT_UNKNOWN if valid == "unknown" else EXIT_INTERNAL


def _rss() -> int | None:
    """This process's resident memory in bytes, where /proc tells it."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _check_file(path: Path, fmt: str, model: str | None, initial: Any, *, deadline: float | None,
                memory_limit: int | None, all_keys: bool, models: dict[str, Any]) -> _FileCheck:
    """Read and check one history file within the command's limits. A file
    that cannot be read comes back with its error, not as an exception, so
    that the other files are still checked. `models`: the model classes
    this command has looked up (a look-up reads every installed
    distribution's entry points, some 4 ms: once per command, not per file)."""
    from checkers import linearizable
    from checkers.result import Result

    started = time.monotonic()
    out = _FileCheck(path=path)
    try:
        file = out.path = resolve_history_path(path)
        out.fmt = detect_format(file) if fmt == "auto" else fmt
        out.model = model or DEFAULT_MODEL.get(out.fmt, "register")
        if out.model not in models:
            models[out.model] = registry.load("models", out.model)
        model_class = models[out.model]
        out.history = read_history(file, out.fmt)
    except (FileNotFoundError, IsADirectoryError, PermissionError, HistoryFormatError, HistoryError,
            registry.PluginError) as e:
        out.error, out.code = str(e), EXIT_BAD_ARGS
        out.elapsed = time.monotonic() - started
        return out
    time_left = None if deadline is None else deadline - time.monotonic()
    # The limit is on the whole process: the search may add what reading left.
    rss = _rss() if memory_limit is not None else None
    memory_left = None if memory_limit is None else memory_limit - (rss or 0)
    if time_left is not None and time_left <= 0:
        out.result = Result(checker="linearizable", valid="unknown",
                            reason="the time limit was reached before this history was checked")
    elif memory_left is not None and memory_left <= 0:
        out.result = Result(checker="linearizable", valid="unknown",
                            reason=f"the memory limit was reached before this history was checked (the process "
                                   f"holds {(rss or 0) / 2**20:.0f} MiB)")
    else:
        out.result = linearizable.check(out.history, model_class(initial), time_limit=time_left,
                                        memory_limit=memory_left, all_keys=all_keys)
    out.code = _result_code(out.result)
    out.elapsed = time.monotonic() - started
    return out


def _not_checked_row(result: Any) -> list[tuple[str, str]]:
    keys = (getattr(result, "details", None) or {}).get("not_checked")
    if not keys:
        return []
    return [("not checked", f"{len(keys)} key(s) after an invalid one (--all-keys checks them): "
                            f"{', '.join(keys[:10])}{' ...' if len(keys) > 10 else ''}")]


def _echo_one(c: _FileCheck, as_json: bool, html_out: Path | None) -> None:
    rows = _verdict_rows(c.result, c.history, path=c.path, fmt=c.fmt, model=c.model, elapsed=c.elapsed)
    rows += _not_checked_row(c.result)
    text = tabulate(rows, tablefmt="plain")
    if c.result.valid is False:
        text += "\n\n" + "\n".join(_anomaly_lines(c.result, c.history))
    click.echo(text, err=as_json)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(c.result), default=_json_default, indent=2))
    if html_out is not None:
        title = f"{c.path.name}: {c.model}"
        if c.result.valid is False:
            from harness.report import linearizability as report

            page = report.render_counterexample(c.result, c.history, title=title)
        else:
            page = _simple_page(title, c.result)
        html_out.write_text(page, encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)


def _echo_many(checks: list[_FileCheck], as_json: bool) -> None:
    rows = []
    for c in checks:
        if c.error is not None:
            verdict, ops, note = "ERROR", "-", c.error
        else:
            valid = c.result.valid
            verdict = {True: "valid", False: "INVALID"}.get(valid, "unknown") if isinstance(valid, bool) \
                else str(valid)
            ops = str((c.result.counts or {}).get("operations", "-"))
            note = ""
            if valid is False and c.result.anomalies:
                note = c.result.anomalies[0].explanation
            elif valid is not True and c.result.reason:
                note = str(c.result.reason)
            if len(note) > 100:  # the error of a bad file is kept whole: it names FILE:LINE
                note = note[:97] + "..."
        rows.append([str(c.path), c.fmt, c.model, verdict, ops, f"{c.elapsed:.3f}", note])
    counts = {v: sum(1 for r in rows if r[3] == v) for v in ("valid", "INVALID", "unknown", "ERROR")}
    summary = ", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n)
    click.echo(tabulate(rows, headers=["history", "format", "model", "verdict", "ops", "s", "note"]),
               err=as_json)
    click.echo(f"{len(checks)} histories: {summary}", err=as_json)
    if as_json:
        docs = [{"path": str(c.path), "format": c.fmt, "model": c.model, "exit_code": c.code,
                 "seconds": round(c.elapsed, 6), "error": c.error,
                 "result": None if c.result is None else dataclasses.asdict(c.result)} for c in checks]
        click.echo(json.dumps(docs, default=_json_default, indent=2))


@cli.command()
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(("auto", *FORMATS)), default="auto", show_default=True,
    help="History format; auto detects it from the content.",
)
@click.option(
    "--model", default=None, metavar="NAME",
    help="Model to check against: a registered model (`harness list`) [default: kv for porcupine-kv, "
         "cas-register for porcupine-etcd, else register].",
)
@click.option("--initial", metavar="VALUE", default=None,
              help="The model's initial value: JSON if it parses, else a string.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), metavar="S",
              default=None, help="Give up (verdict unknown) after S seconds for the whole command, reading "
                                 "and counterexamples included.")
@click.option("--memory-limit", type=click.IntRange(min=1), metavar="MB", default=None,
              help="Give up (verdict unknown) before the process's resident memory passes MB mebibytes.")
@click.option("--all-keys", is_flag=True,
              help="Search every key even after one is found invalid (by default the others are searched "
                   "only while --time-limit leaves time, and named as not checked).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="OUT.html", help="Write the counterexample (or the verdict) as HTML (one PATH only).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON on stdout (the table goes to stderr).")
@click.pass_context
def check(
    ctx: click.Context,
    paths: tuple[Path, ...],
    fmt: str,
    model: str | None,
    initial: str | None,
    time_limit: float | None,
    memory_limit: int | None,
    all_keys: bool,
    html_out: Path | None,
    as_json: bool,
) -> None:
    """Check the histories at PATH... for linearizability.

    PATH is a history file (this project's history.jsonl, a Jepsen EDN
    history, a Porcupine etcd or kv log) or a run directory of the store. A
    single run directory (or the history.jsonl in one) is checked as the run
    was: with its workload's checkers, for its system's promise; --html then
    writes its whole report. Several PATHs are checked one after another in
    this process, each as a history file against the model, with a table of
    verdicts; a file that cannot be read is an ERROR row and the others are
    still checked. Exits 0 valid, 1 invalid, 2 unknown, 254 bad arguments
    or a history that cannot be read (FILE:LINE: what was expected); with
    several PATHs, the worst of these (valid < unknown < invalid < 254).
    """
    started = time.monotonic()
    deadline = None if time_limit is None else started + time_limit
    models: dict[str, Any] = {}
    if model is not None:
        try:
            models[model] = registry.load("models", model)
        except registry.PluginError as e:
            raise click.BadParameter(str(e), param_hint="--model") from None
    if len(paths) > 1 and html_out is not None:
        raise click.BadParameter("one PATH only: the page shows one history", param_hint="--html")
    path = paths[0]
    run_dir = _beside_run(path) if len(paths) == 1 and model is None and fmt in ("auto", "jsonl") else None
    if run_dir is not None:
        if initial is not None:
            raise click.BadParameter("a run is checked with its workload's models, which start empty; give "
                                     "--model too to check its history against one model from VALUE",
                                     param_hint="--initial")
        ctx.exit(_check_run(run_dir, as_json, time_limit=time_limit, memory_limit=memory_limit,
                            html_out=html_out))
    limit = None if memory_limit is None else memory_limit * 1024 * 1024
    init = _parse_initial(initial)
    if len(paths) == 1:
        one = _check_file(path, fmt, model, init, deadline=deadline, memory_limit=limit, all_keys=all_keys,
                          models=models)
        if one.error is not None:
            raise BadInput(one.error)
        _echo_one(one, as_json, html_out)
        ctx.exit(one.code)
    checks = [_check_file(p, fmt, model, init, deadline=deadline, memory_limit=limit, all_keys=all_keys,
                          models=models) for p in paths]
    _echo_many(checks, as_json)
    ctx.exit(max((c.code for c in checks), key=_SEVERITY.index))


def _shorthand_flags(f: Any) -> Any:
    """The system's flags of `harness run` that stand for `--set NAME=VALUE`
    (harness/systems/kvnode_flags.py)."""
    for name, kind, text in reversed(kvnode_flags.SHORTHANDS):
        f = click.option(f"--{name.replace('_', '-')}", name, type=kind, default=None, help=text)(f)
    return f


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=flag)
        out[key.strip().replace("-", "_")] = value
    return out


def _run_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A TOML run file: `harness run`'s options by name (as the flags, with
    `-` or `_`), and a `[system]` table of the system's options."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise BadInput(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: not valid TOML: {e}") from None
    system = data.pop("system", {})
    if not isinstance(system, dict):
        raise BadInput(f"{path}: `system` must be a table of the system's options ([system])")
    return {k.replace("-", "_"): v for k, v in data.items()}, system


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A TOML run file: any option below by name, and a [system] table of system options "
                   "(flags override it).")
@click.option("--system", default="kvnode", show_default=True, metavar="NAME",
              help="The system under test: a registered one (kvnode, etcd; `harness list`), or "
                   "package.module:Name.")
@click.option("--system-path", "system_path", multiple=True, metavar="DIR",
              help="Also import --system package.module:Name from DIR (the current directory always is).")
@click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
              help="An option of the system under test (repeatable); `harness systems NAME` lists them.")
@click.option("--check", "check", multiple=True, metavar="CLAIM",
              help="Also check this claim, which the system does not promise (repeatable): linearizable, "
                   "siblings, last-write-wins, no-lost-adds.")
@click.option("--backend", default="local", show_default=True, metavar="NAME",
              help="Where the nodes run: local, netns, docker, ssh (or a plug-in).")
@click.option("--nodes", type=click.IntRange(min=1, max=64), default=5, show_default=True)
@click.option("--workload", default="register", show_default=True, metavar="NAME",
              help="register, cart (or a plug-in).")
@click.option("--nemesis", default="none", show_default=True,
              help="Faults, comma-separated: none, partition, kill, pause, clock, packet, power (lose what nodes did "
                   "not fsync; local, netns), wipe (empty a node's data directory), all (the five that lose "
                   "no data: not power, wipe) (or a plug-in).")
@click.option("--nemesis-option", "nemesis_options", multiple=True, metavar="KEY=VALUE",
              help="How faults pick victims and values (repeatable): kill_targets=all, pause_targets=majority, "
                   "partition_shapes=halves,bridge, clock_max_s=60, packet_loss=0.1,0.3, power_targets=all, "
                   "power_torn=0.5 (a probability), wipe_targets=one ...")
@_shorthand_flags
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Client workers [default: 2 per node].")
@click.option("--mix", type=click.Choice(MIXES), default="default", show_default=True,
              help="The operation mix: default, read-mostly (about 90% reads), contention (writes and "
                   "read-modify-writes dominate; use with --active-keys 1 or 2).")
@click.option("--active-keys", type=click.IntRange(min=1), default=4, show_default=True, metavar="K",
              help="Keys in use at once (1: every worker on one key, the most contention).")
@click.option("--max-ops-per-key", type=click.IntRange(min=1), default=150, show_default=True, metavar="N",
              help="Operations on a key before it retires for a fresh one (keeps each key's check small).")
@click.option("--deletes", type=click.FloatRange(min=0, max=1, max_open=True), default=None, metavar="SHARE",
              help="The share of operations that delete (register workload) [default: the mix's, 0.08]; "
                   "0 for a system that cannot delete.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Operations per second over all workers.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="S", help="Seconds of workload (healing, recovery and final reads come after).")
@click.option("--nemesis-interval", type=click.FloatRange(min=0, min_open=True), default=None, metavar="S",
              help="Mean seconds between a fault's start and stop, and between faults [default: 10, shorter "
                   "for a short run: each kind of fault gets about two rounds].")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Makes the operations, the faults and the local backend's packet faults reproducible.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("store"), show_default=True,
              help="Where runs are stored.")
@click.option("--name", default=None, help="Test name [default: system-workload-nemesis].")
@click.option("--op-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="S", help="A client operation unanswered after S seconds is indeterminate (info).")
@click.option("--start-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="S", help="How long a node may take to become ready (a node that exits fails at once).")
@click.option("--recovery-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="S",
              help="How long to wait for the cluster to converge after healing.")
@click.option("--subnet", default="10.77.0.0/24", show_default=True,
              help="netns, docker: the subnet the nodes' addresses come from.")
@click.option("--image", default=None, help="docker: the node image [default: build one, cached].")
@click.option("--base-image", default=None, help="docker: build on this local image instead of debootstrap.")
@click.option("--nodes-file", type=click.Path(dir_okay=False), default=None,
              help="ssh: the hosts (nodes.toml: host, port, user, key, sudo).")
@click.option("--insecure-accept-host-keys", is_flag=True,
              help="ssh: accept unknown host keys instead of refusing them.")
@click.option("--no-live", is_flag=True, help="No live status line.")
@click.pass_context
def run(ctx: click.Context, config_file: Path | None, set_options: tuple[str, ...], no_live: bool,
        **options: Any) -> None:
    """Start a cluster, run a workload under faults, check the history for
    what the system promises.

    Stores the run under --store and exits 0 valid, 1 invalid, 2 unknown,
    254 bad arguments, 255 internal error.
    """
    from harness import results, runner

    system_options: dict[str, Any] = {}
    if config_file is not None:
        from_file, system_options = _run_file(config_file)
        fields = {f.name for f in dataclasses.fields(runner.RunConfig)} - {"system_options"}
        for key, value in from_file.items():
            if key not in fields and key not in kvnode_flags.NAMES:
                raise BadInput(f"{config_file}: unknown key {key!r} (run options: {', '.join(sorted(fields))}; "
                               "system options go in a [system] table)")
            if key in kvnode_flags.NAMES:
                system_options[key] = value
            elif key not in options or ctx.get_parameter_source(key) == ParameterSource.DEFAULT:
                options[key] = value
    for key in kvnode_flags.NAMES:
        value = options.pop(key)
        if value is not None:
            system_options[key] = value
    system_options.update(_key_values(set_options, "--set"))
    given = options.pop("nemesis_options")
    file_options = given if isinstance(given, dict) else {}
    options["nemesis_options"] = {**file_options, **_key_values(given if isinstance(given, tuple) else (),
                                                                 "--nemesis-option")}
    nemesis = options.pop("nemesis")
    options["nemesis"] = tuple(nemesis) if isinstance(nemesis, list | tuple) else \
        tuple(x.strip() for x in str(nemesis).split(",") if x.strip())
    options["store"] = str(options["store"])
    for key in ("system_path", "check"):
        value = options.get(key)
        options[key] = tuple([value] if isinstance(value, str) else value or ())
    try:
        config = runner.RunConfig(**options, system_options=system_options)
    except TypeError as e:
        raise BadInput(str(e)) from None
    prepared = runner.prepare(config)
    try:
        outcome = runner.run(prepared, live=not no_live)
    except runner.Interrupted as e:
        click.echo(f"\n{e}", err=True)
        _exit(130)
    click.echo(results.operations_line(outcome.results, outcome.faults))
    for line in results.warnings(outcome.results):
        click.echo(f"warning: {line}")
    for line in results.promise_lines(outcome.promise, outcome.not_checked, prepared.system_name):
        click.echo(line)
    if outcome.report is not None:
        from harness.report import text

        click.echo(text.summary(outcome.report))
        click.echo(f"\n{results.verdict_text(outcome.valid)}: {outcome.run_dir}\nreport: "
                   f"{outcome.run_dir / 'report.html'}")
    else:
        click.echo(results.table(outcome.results))
        for line in results.first_explanations(outcome.results):
            click.echo(f"  {line}")
        click.echo(f"\n{results.verdict_text(outcome.valid)}: {outcome.run_dir}")
    ctx.exit(outcome.exit_code)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--text", "as_text", is_flag=True, help="Print the summary instead of writing report.html.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write the report here [default: RUN_DIR/report.html].")
def report(run_dir: Path, as_text: bool, out: Path | None) -> None:
    """Write RUN_DIR/report.html again (from test.json, history.jsonl and
    results.json; a run stopped before it was checked is checked now), or
    print its summary with --text. RUN_DIR may be a store's `latest`."""
    from harness.report import page, text

    run_dir = _run_dir(run_dir)
    try:
        record = page.load_run(run_dir)
    except (OSError, ValueError) as e:
        raise BadInput(str(e)) from None
    if as_text:
        click.echo(text.summary(record, report=str(run_dir / "report.html")))
        return
    if out is None:
        path = page.write_report(run_dir, record)
    else:
        out.write_text(page.render(record), encoding="utf-8")
        path = out
    click.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _run_dir(path: Path) -> Path:
    """A run directory of the store (or a `latest` link to one), resolved."""
    resolved = path.resolve()
    if resolved.is_dir() and not (resolved / "test.json").is_file() and (resolved / "latest").exists():
        resolved = (resolved / "latest").resolve()
    if not (resolved / "test.json").is_file():
        raise BadInput(f"{path}: not a run directory (no test.json); runs are in STORE/<test>/<time>/")
    return resolved


@cli.command()
@click.argument("system", required=False)
@click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
              help="Show the promises the system makes with these options.")
@click.option("--system-path", "system_path", multiple=True, metavar="DIR",
              help="Also import package.module:Name from DIR.")
def systems(system: str | None, set_options: tuple[str, ...], system_path: tuple[str, ...]) -> None:
    """The registered systems; with SYSTEM, its options (defaults, allowed
    values) and what it promises for each workload."""
    from harness import runner
    from harness.systems.base import ports_of
    from harness.systems.options import REQUIRED, options_of

    if system is None:
        entries = [(e.name, e.value, e.distribution) for e in registry.entries("systems")]
        click.echo(tabulate(entries, headers=("system", "adapter", "from")))
        click.echo("\n`harness systems NAME` shows a system's options and promises.")
        return
    built, name, _ = runner.load_system(system, _key_values(set_options, "--set"), system_path)
    factory = registry.load_object(system, "system") if ":" in system else registry.load("systems", system)
    rows = [(o.name, o.describe_type(), "(required)" if o.default is REQUIRED else repr(o.default), o.help)
            for o in options_of(factory)]
    click.echo(f"{name}: ports {', '.join(ports_of(built))}")
    click.echo(tabulate(rows, headers=("option (--set)", "values", "default", "meaning")) if rows else "no options")
    click.echo()
    for workload in registry.names("workloads"):
        try:
            built.client(workload)
        except ValueError:
            click.echo(f"{workload}: no client")
            continue
        promise = built.promise(workload)
        click.echo(f"{workload}: promises {promise.describe()}")
        for claim in promise.claims:
            params = ", ".join(f"{k}={v}" for k, v in claim.params.items())
            click.echo(f"  {claim.name}{f' ({params})' if params else ''}: {claim.why}")


@cli.command("list")
def list_plugins() -> None:
    """The installed plug-ins: systems, workloads, nemeses, backends and
    checker models, with the distribution that registers each."""
    for kind in registry.KINDS:
        rows = [(e.name, e.value, e.distribution) for e in registry.entries(kind)]
        click.echo(f"{kind} (entry points: {registry.KINDS[kind]})")
        click.echo(tabulate(rows, tablefmt="plain") if rows else "  none")
        click.echo()


@cli.group()
def docker() -> None:
    """The docker backend's node image."""


@docker.command("build")
@click.option("--base-image", default=None, help="Build on this local image instead of debootstrap.")
@click.option("--tag", default="dynamo-harness-node", show_default=True)
def docker_build(base_image: str | None, tag: str) -> None:
    """Build (or find cached) the node image, offline: a debootstrapped
    Debian imported into the engine, with this project installed from wheels."""
    from harness.backends import image

    try:
        built = image.build_image(base_image=base_image, tag=tag, progress=lambda s: click.echo(s, err=True))
    except RuntimeError as e:  # no engine, debootstrap failed ...: the environment, not the arguments
        click.echo(f"Error: {e}", err=True)
        _exit(EXIT_INTERNAL)
    click.echo(f"{built.tag} {built.id} ({'cached' if built.reused else 'built'}, {built.seconds:.1f} s)")


@cli.command()
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("store"), show_default=True,
              help="The run store whose local node processes to look for.")
@click.option("--nodes-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ssh: also clean these hosts.")
@click.option("--insecure-accept-host-keys", is_flag=True, help="ssh: accept unknown host keys.")
def clean(store: Path, nodes_file: Path | None, insecure_accept_host_keys: bool) -> None:
    """Remove what crashed runs left behind, and only that: node processes
    recorded in pid files, network namespaces, bridges and iptables rules of
    ours, containers and networks labelled as ours."""
    from harness.backends import docker, local, netns, ssh

    removed: list[str] = []
    problems: list[str] = []
    cleaners: list[tuple[str, Any]] = [("local", lambda: local.clean(store)), ("netns", netns.clean),
                                       ("docker", docker.clean)]
    for name, clean_one in cleaners:
        try:
            removed += [f"{name}: {line}" for line in clean_one()]
        except Exception as e:  # one backend's trouble must not stop the others' cleaning
            problems.append(f"{name}: {type(e).__name__}: {e}")
    if nodes_file is not None:
        removed += [f"ssh: {line}" for line in ssh.clean(nodes_file, insecure_accept_host_keys=insecure_accept_host_keys)]
    for line in removed:
        click.echo(line)
    for line in problems:
        click.echo(f"could not clean {line}", err=True)
    if not removed and not problems:
        click.echo("nothing to clean")


@cli.command("ci")
@click.option("--matrix", "matrix_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The matrix: rows and their expected verdicts [default: ci/matrix.toml; with --mutants, "
                   "DIR/matrix.toml].")
@click.option("--backend", default=None, help="Run only the rows meant for this backend (its `backend`, or one "
                                                "of its `backends`).")
@click.option("--only", multiple=True, metavar="ROW", help="Run only this row (repeatable); with --mutants, only "
                                                            "these of each mutant's rows.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, metavar="K",
              help="Seeds a row may use: a must-be-found row tries up to K, a valid row runs K [default: the "
                   "row's, else 3].")
@click.option("--junit", "junit_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="OUT.xml", help="Write the results as JUnit XML.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("store"), show_default=True,
              help="Where the runs (and their reports) are kept.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rows (with --mutants: runs) at once, each in a process of its own.")
@click.option("--mutants", "mutants_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Mutation testing: apply each DIR/*.patch to a scratch copy of kvnode, run the "
                                  "rows its header names over K seeds, and print the detection table; the "
                                  "unmutated code runs the same rows as the false-alarm baseline.")
@click.option("--mutant", "mutant_names", multiple=True, metavar="NAME",
              help="With --mutants: only this mutant (repeatable).")
def ci_command(matrix_file: Path | None, backend: str | None, only: tuple[str, ...], seeds: int | None,
               junit_out: Path | None, store: Path, jobs: int, mutants_dir: Path | None,
               mutant_names: tuple[str, ...]) -> None:
    """Run a matrix of configurations and hold each to its expected verdicts
    (CI consistency regression). Exits 0 when every row is as expected (or
    skipped, with the reason), 1 on any mismatch or error, 130 if
    interrupted (the table so far is printed), 254 for a bad matrix.

    With --mutants: exits 0 when every mutant was caught by some run and the
    unmutated code by none, 1 otherwise."""
    from harness import ci, matrix

    if mutant_names and mutants_dir is None:
        raise click.UsageError("--mutant needs --mutants DIR")
    if matrix_file is None:
        matrix_file = mutants_dir / "matrix.toml" if mutants_dir is not None else Path("ci/matrix.toml")
    m = matrix.load(matrix_file, seeds=seeds, backend=backend)
    if mutants_dir is not None:
        _ci_mutants(mutants_dir, m, mutant_names, only, store, jobs, junit_out)
        return
    if only:
        m = m.only(only)
    click.echo(f"{len(m.rows)} row{'s' if len(m.rows) != 1 else ''} of {matrix_file}; runs kept in {store}",
               err=True)

    def done(r: ci.RowResult) -> None:
        click.echo(f"{r.row.name}: {r.status} ({r.detection()}, {r.seconds:.0f} s)", err=True)

    results = ci.run_matrix(m, str(store), jobs=jobs, echo=lambda s: click.echo(f"  {s}", err=True), done=done)
    interrupted = len(results) < len(m.rows) or any(r.status == "interrupted" for r in results)
    click.echo(ci.table(results))
    if junit_out is not None:
        junit_out.parent.mkdir(parents=True, exist_ok=True)
        junit_out.write_text(ci.junit(results, m), encoding="utf-8")
        click.echo(f"wrote {junit_out}", err=True)
    if interrupted:
        click.echo(f"interrupted after {len(results)} of {len(m.rows)} rows", err=True)
        _exit(EXIT_INTERRUPTED)
    bad = [r for r in results if not r.ok]
    skipped = [r for r in results if r.status == "skip"]
    click.echo(f"\n{len(results) - len(bad) - len(skipped)} as expected, {len(bad)} not, {len(skipped)} skipped")
    _exit(1 if bad else 0)


def _ci_mutants(directory: Path, m: Any, names: tuple[str, ...], only: tuple[str, ...], store: Path, jobs: int,
                junit_out: Path | None) -> None:
    from harness import mutants

    chosen = mutants.load(directory, m, names)
    if only:
        m = m.only(only)
        chosen = [dataclasses.replace(mu, rows=tuple(r for r in mu.rows if r in only)) for mu in chosen]
        chosen = [mu for mu in chosen if mu.rows]
        if not chosen:
            raise click.UsageError(f"no mutant names the rows {', '.join(only)}")
    rows = {r for mu in chosen for r in mu.rows}
    runs = sum(len(row.seeds) for row in m.rows if row.name in rows) + sum(
        len(row.seeds) for mu in chosen for row in m.rows if row.name in mu.rows)
    click.echo(f"{len(chosen)} mutant{'s' if len(chosen) != 1 else ''} of {directory} and the unmutated code: "
               f"{runs} runs; kept in {store}", err=True)

    def done(name: str, run: Any) -> None:
        click.echo(f"  {name} {run.row} seed {run.seed}: {run.status} ({run.seconds:.0f} s)"
                   + (f": {run.reason}" if run.reason else ""), err=True)

    results = mutants.run_mutants(chosen, m, str(store), jobs=jobs, done=done)
    click.echo(mutants.table(results))
    if junit_out is not None:
        junit_out.parent.mkdir(parents=True, exist_ok=True)
        junit_out.write_text(mutants.junit(results, directory), encoding="utf-8")
        click.echo(f"wrote {junit_out}", err=True)
    ran = sum(len(r.runs) for r in results)
    if ran < runs:
        click.echo(f"interrupted after {ran} of {runs} runs", err=True)
        _exit(EXIT_INTERRUPTED)
    survived = [r.name for r in results if r.mutant is not None and not r.ok]
    alarms = [r.name for r in results if r.mutant is None and not r.ok]
    killed = sum(r.mutant is not None and r.ok for r in results)
    click.echo(f"\n{killed} of {len(chosen)} mutants killed" + (f"; survived: {', '.join(survived)}" if survived else "")
               + ("; the unmutated code was FLAGGED (or errored)" if alarms else ""))
    _exit(1 if survived or alarms else 0)


cli.add_command(serve_command)
cli.add_command(sim_command)


def main() -> None:
    cli()
