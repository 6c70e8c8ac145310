"""The `harness` command line.

Commands: `harness run` (a test: cluster, workload, faults, checks) and
`harness check PATH` (judge a recorded history for linearizability, or
re-check a stored run with its workload's checkers).

Exit codes, as in Jepsen (DESIGN.md): 0 valid, 1 invalid, 2 unknown,
254 bad arguments (a usage error, a missing file, a history that cannot be
read), 255 internal error. Ctrl-C exits 130.
"""

from __future__ import annotations

import dataclasses
import html
import importlib
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
from tabulate import tabulate

from checkers.history import HistoryError, Op

from .history import FORMATS, HistoryFormatError, detect_format, read_history, resolve_history_path

EXIT_VALID, EXIT_INVALID, EXIT_UNKNOWN = 0, 1, 2
EXIT_BAD_ARGS, EXIT_INTERNAL, EXIT_INTERRUPTED = 254, 255, 130

MODELS = ("register", "cas-register", "multi-register", "kv", "set", "mutex", "queue")
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
        except (FileNotFoundError, HistoryFormatError, HistoryError) as e:
            click.echo(f"Error: {e}", err=True)
            _exit(EXIT_BAD_ARGS)
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


def _check_run(run_dir: Path, as_json: bool) -> int:
    """Re-check a stored run with its workload's checkers and settings."""
    runner = importlib.import_module("harness.runner")
    results = importlib.import_module("harness.results")
    try:
        checked = runner.check_run(run_dir)
    except runner.ConfigError as e:
        raise BadInput(f"{run_dir}/test.json: {e}") from None
    except ValueError as e:
        raise BadInput(str(e)) from None
    summary = results.as_dict(checked, run=str(run_dir))
    click.echo(results.table(checked), err=as_json)
    for line in results.first_explanations(checked):
        click.echo(f"  {line}", err=as_json)
    if as_json:
        click.echo(json.dumps(summary, default=_json_default, indent=2))
    return int(results.exit_code(summary["valid"]))


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(("auto", *FORMATS)), default="auto", show_default=True,
    help="History format; auto detects it from the content.",
)
@click.option(
    "--model", type=click.Choice(MODELS), default=None,
    help="Model to check against [default: kv for porcupine-kv, cas-register for porcupine-etcd, else register].",
)
@click.option("--initial", metavar="VALUE", default=None,
              help="The model's initial value: JSON if it parses, else a string.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), metavar="S",
              default=None, help="Give up (verdict unknown) after S seconds.")
@click.option("--memory-limit", type=click.IntRange(min=1), metavar="MB", default=None,
              help="Give up (verdict unknown) past MB mebibytes of search state.")
@click.option("--html", "html_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="OUT.html", help="Write the counterexample (or the verdict) as HTML.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON on stdout (the table goes to stderr).")
@click.pass_context
def check(
    ctx: click.Context,
    path: Path,
    fmt: str,
    model: str | None,
    initial: str | None,
    time_limit: float | None,
    memory_limit: int | None,
    html_out: Path | None,
    as_json: bool,
) -> None:
    """Check the history at PATH for linearizability.

    PATH is a history file (this project's history.jsonl, a Jepsen EDN
    history, a Porcupine etcd or kv log) or a run directory of the store.
    Exits 0 valid, 1 invalid, 2 unknown, 254 bad arguments.
    """
    if path.is_dir() and model is None and fmt in ("auto", "jsonl"):
        run_dir = path.resolve()
        if (run_dir / "test.json").is_file():
            ctx.exit(_check_run(run_dir, as_json))
    file = resolve_history_path(path)
    if fmt == "auto":
        fmt = detect_format(file)
    history = read_history(file, fmt)
    model_name = model or DEFAULT_MODEL.get(fmt, "register")

    linearizable = importlib.import_module("checkers.linearizable")
    started = time.perf_counter()
    result = linearizable.check(
        history,
        model_name,
        initial=_parse_initial(initial),
        time_limit=time_limit,
        memory_limit=None if memory_limit is None else memory_limit * 1024 * 1024,
    )
    elapsed = time.perf_counter() - started

    rows = _verdict_rows(result, history, path=file, fmt=fmt, model=model_name, elapsed=elapsed)
    text = tabulate(rows, tablefmt="plain")
    if result.valid is False:
        text += "\n\n" + "\n".join(_anomaly_lines(result, history))
    click.echo(text, err=as_json)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), default=_json_default, indent=2))

    if html_out is not None:
        title = f"{file.name}: {model_name}"
        if result.valid is False:
            report = importlib.import_module("harness.report.linearizability")
            page = report.render_counterexample(result, history, title=title)
        else:
            page = _simple_page(title, result)
        html_out.write_text(page, encoding="utf-8")
        click.echo(f"wrote {html_out}", err=True)

    ctx.exit({True: EXIT_VALID, False: EXIT_INVALID}.get(result.valid, EXIT_UNKNOWN)
             if isinstance(result.valid, bool) else
             (EXIT_UNKNOWN if result.valid == "unknown" else EXIT_INTERNAL))


def _nemesis_names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    schedule = importlib.import_module("harness.nemesis.schedule")
    try:
        return tuple(schedule.parse_fault_names([value]))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@cli.command()
@click.option("--system", default="kvnode", show_default=True, metavar="NAME",
              help="The system under test: kvnode, or package.module:Name.")
@click.option("--backend", type=click.Choice(("local", "netns", "docker", "ssh")), default="local",
              show_default=True, help="Where the nodes run.")
@click.option("--nodes", type=click.IntRange(min=1, max=64), default=5, show_default=True)
@click.option("--workload", type=click.Choice(("register", "cart")), default="register", show_default=True)
@click.option("--nemesis", default="none", show_default=True, callback=_nemesis_names,
              help="Faults, comma-separated: none, partition, kill, pause, clock, packet, all.")
@click.option("--n", "n", type=click.IntRange(min=1), default=3, show_default=True, help="Replicas per key.")
@click.option("--w", "w", type=click.IntRange(min=1), default=2, show_default=True, help="Write quorum.")
@click.option("--r", "r", type=click.IntRange(min=1), default=2, show_default=True, help="Read quorum.")
@click.option("--resolution", type=click.Choice(("dvv", "lww")), default="dvv", show_default=True)
@click.option("--quorum", type=click.Choice(("sloppy", "strict")), default="sloppy", show_default=True)
@click.option("--read-repair", type=click.Choice(("off", "async", "sync")), default="async", show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Client workers [default: 2 per node].")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0, show_default=True,
              help="Operations per second over all workers.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="S", help="Seconds of workload (healing, recovery and final reads come after).")
@click.option("--nemesis-interval", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              metavar="S", help="Mean seconds between a fault's start and stop, and between faults.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Makes the schedule reproducible.")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=Path("store"), show_default=True,
              help="Where runs are stored.")
@click.option("--name", default=None, help="Test name [default: system-workload-nemesis].")
@click.option("--op-timeout", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              metavar="S", help="A client operation unanswered after S seconds is indeterminate (info).")
@click.option("--recovery-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="S",
              help="How long to wait for the cluster to converge after healing.")
@click.option("--node-setting", "node_settings", multiple=True, metavar="KEY=VALUE",
              help="Another setting for every node, e.g. gossip_interval=0.5 (repeatable).")
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
def run(ctx: click.Context, node_settings: tuple[str, ...], no_live: bool, **options: Any) -> None:
    """Start a cluster, run a workload under faults, check the history.

    Stores the run under --store and exits 0 valid, 1 invalid, 2 unknown,
    254 bad arguments, 255 internal error.
    """
    runner = importlib.import_module("harness.runner")
    results = importlib.import_module("harness.results")
    extra: dict[str, Any] = {}
    for item in node_settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--node-setting")
        extra[key.strip().replace("-", "_")] = _parse_initial(value)
    options["store"] = str(options["store"])
    try:
        config = runner.RunConfig(**options, node_settings=extra)
        config.validate()
        outcome = runner.run(config, live=not no_live)
    except runner.ConfigError as e:
        raise BadInput(str(e)) from None
    click.echo(results.operations_line(outcome.results, outcome.faults))
    click.echo(results.table(outcome.results))
    for line in results.first_explanations(outcome.results):
        click.echo(f"  {line}")
    click.echo(f"\n{results.verdict_text(outcome.valid)}: {outcome.run_dir}")
    ctx.exit(outcome.exit_code)


@cli.group()
def docker() -> None:
    """The docker backend's node image."""


@docker.command("build")
@click.option("--base-image", default=None, help="Build on this local image instead of debootstrap.")
@click.option("--tag", default="dynamo-harness-node", show_default=True)
def docker_build(base_image: str | None, tag: str) -> None:
    """Build (or find cached) the node image, offline: a debootstrapped
    Debian imported into the engine, with this project installed from wheels."""
    image = importlib.import_module("harness.backends.image")
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
    removed: list[str] = []
    problems: list[str] = []
    for name, args in (("local", (store,)), ("netns", ()), ("docker", ())):
        try:
            module = importlib.import_module(f"harness.backends.{name}")
        except ImportError:
            continue
        fn = getattr(module, "clean", None)
        if fn is None:
            continue
        try:
            removed += [f"{name}: {line}" for line in fn(*args)]
        except Exception as e:  # one backend's trouble must not stop the others' cleaning
            problems.append(f"{name}: {type(e).__name__}: {e}")
    if nodes_file is not None:
        ssh = importlib.import_module("harness.backends.ssh")
        removed += [f"ssh: {line}" for line in ssh.clean(nodes_file, insecure_accept_host_keys=insecure_accept_host_keys)]
    for line in removed:
        click.echo(line)
    for line in problems:
        click.echo(f"could not clean {line}", err=True)
    if not removed and not problems:
        click.echo("nothing to clean")


def main() -> None:
    cli()
