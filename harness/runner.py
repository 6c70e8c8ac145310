"""`harness run`: one test from start to verdict.

Phases, as in Jepsen:

1. prepare (`prepare`), before anything starts: find the system, the
   workload, the faults and the backend in the plug-in registry; check the
   system's options (`--set`) and build it with them; ask the system whether
   it supports this deployment and what it promises for the workload, add
   the claims the user asked for (`--check`), and plan the checkers. Any
   problem here is a `ConfigError` (exit 254) and nothing has started;
2. set up the backend's places (with the ports the system names) and, for a
   run with clock faults, make sure every node's program can see a skewed
   clock; for a run with power faults, mount a lazy disk (`harness.lazyfs`)
   over every node's data directory; start every node and wait until each is ready (a node whose
   process exits meanwhile stops the run at once, with its exit status and
   the last lines of its log), then for the cluster to converge;
3. run the workload's clients and the nemesis until the time limit, checking
   each completion the system's client returns (a malformed one stops the
   run: `AdapterError`);
4. heal every fault, restart any node that is down; if the system can read
   one replica's own copy (`ReplicaReads`), poll every key used at each of
   its replicas until they agree by themselves, or `recovery_timeout`,
   recording each key's last read at each replica (`replica-read` ops,
   judged by `checkers.replicas`); then wait for the system to converge (its
   own signal, which may force it, or a time-out) and read every key from
   every node (the final reads);
5. collect the nodes' logs and tear the cluster down;
6. check the history with the planned checkers (one checker's crash makes
   only its verdict `unknown`), store `results.json` and print the verdict.

Whatever happens (an error, Ctrl-C, SIGTERM) the faults are healed and the
backend torn down on the way out, and the history written so far stays on
disk: it is appended and flushed op by op.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkers.history import REPLICA_READ
from checkers.result import Result
from contract.ops import Completion, Invocation, completion_problem
from contract.promise import Promise
from harness import registry, store
from harness import results as results_mod
from harness.backends.base import Backend, BackendOptions, PowerLoss
from harness.errors import AdapterError, ConfigError, RunError
from harness.generator import Pace, invoke, record_completion, worker
from harness.history import read_jsonl
from harness.live import Live
from harness.nemesis.base import ClusterHandle
from harness.nemesis.schedule import (
    DEFAULT_INTERVAL,
    FaultOptions,
    Nemesis,
    auto_interval,
    build_faults,
    check_available,
    parse_fault_names,
)
from harness.recorder import Recorder
from harness.systems.base import (
    Client,
    Deployment,
    NodeInfo,
    NodeSetup,
    NodeTime,
    ReplicaRead,
    ReplicaReads,
    Supports,
    System,
    ports_of,
    replicas_agree,
)
from harness.systems.options import OptionError, construct, options_of, parse
from workloads.base import MIXES, Plan, Workload, WorkloadOptions, judge, plan, speaks

log = logging.getLogger("harness")

LOG_TAIL_LINES = 12  # of a node's log, shown when it fails to start


@dataclass
class RunConfig:
    """A run, as `harness run`'s flags (or a run file) describe it: harness
    concerns only. What the system under test is configured with is
    `system_options`, which the system itself checks."""

    system: str = "kvnode"  # a registered system, or package.module:Name
    system_options: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE
    system_path: tuple[str, ...] = ()  # --system-path: directories to import a user's system from
    check: tuple[str, ...] = ()  # --check: claims to check beyond what the system promises
    backend: str = "local"
    nodes: int = 5
    workload: str = "register"
    nemesis: tuple[str, ...] = ()
    nemesis_options: dict[str, Any] = field(default_factory=dict)  # FaultOptions by name: kill_targets="all" ...
    concurrency: int | None = None  # default: 2 per node
    rate: float | None = 100.0  # ops/s in total; None: unpaced
    time_limit: float = 60.0
    nemesis_interval: float | None = None  # None: auto_interval (10 s, shorter for a short run)
    seed: int | None = None
    store: str = "store"
    name: str | None = None
    op_timeout: float = 5.0  # a client operation with no answer by then is `info`
    recovery_timeout: float = 60.0
    start_timeout: float = 30.0  # for each node to become ready
    active_keys: int = 4
    max_ops_per_key: int = 150
    mix: str = "default"  # the workload's operation mix: workloads.base.MIXES
    deletes: float | None = None  # share of operations that delete (register); None: the mix's, 0: none
    # backend options
    subnet: str = "10.77.0.0/24"  # netns, docker: the nodes' addresses
    image: str | None = None  # docker: the node image (default: build one)
    base_image: str | None = None  # docker: build on this local image instead of debootstrap
    nodes_file: str | None = None  # ssh: the hosts
    insecure_accept_host_keys: bool = False  # ssh

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(2**31)
        if self.concurrency is None:
            self.concurrency = 2 * self.nodes
        self.nemesis = tuple(self.nemesis)
        self.check = tuple(self.check)
        self.system_path = tuple(self.system_path)

    def validate(self) -> None:
        """The harness's own settings; the system's are its own to check."""
        if self.nodes < 1:
            raise ConfigError("--nodes must be at least 1")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.time_limit <= 0 or (self.nemesis_interval is not None and self.nemesis_interval <= 0):
            raise ConfigError("--time-limit and --nemesis-interval must be positive")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("--rate must be positive")
        if self.op_timeout <= 0 or self.start_timeout <= 0 or self.recovery_timeout < 0:
            raise ConfigError("--op-timeout and --start-timeout must be positive, --recovery-timeout not negative")
        if self.mix not in MIXES:
            raise ConfigError(f"--mix {self.mix!r}: not a mix (mixes: {', '.join(MIXES)})")
        if self.deletes is not None and (isinstance(self.deletes, bool) or not isinstance(self.deletes, int | float)
                                         or not 0 <= self.deletes < 1):
            raise ConfigError(f"--deletes {self.deletes!r}: a share of the operations, at least 0 and below 1")
        try:
            store.check_name(self.test_name)
        except ValueError as e:
            raise ConfigError(f"--name: {e}") from None

    @property
    def test_name(self) -> str:
        if self.name:
            return self.name
        faults = "+".join(self.nemesis) or "none"
        return f"{self.system.split(':')[-1]}-{self.workload}-{faults}".replace("/", "_").lstrip(".")

    def backend_options(self) -> BackendOptions:
        return BackendOptions(seed=self.seed, subnet=self.subnet, image=self.image, base_image=self.base_image,
                              nodes_file=self.nodes_file, insecure_accept_host_keys=self.insecure_accept_host_keys)

    def workload_options(self) -> WorkloadOptions:
        return WorkloadOptions(concurrency=self.concurrency or 1, active_keys=self.active_keys,
                               max_ops_per_key=self.max_ops_per_key, mix=self.mix,
                               deletes=None if self.deletes is None else float(self.deletes))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunOutcome:
    run_dir: Path
    results: list[Result]
    valid: Any
    exit_code: int
    faults: dict[str, int] = field(default_factory=dict)  # nemesis operations invoked, by f
    promise: Promise = field(default_factory=Promise)
    not_checked: dict[str, str] = field(default_factory=dict)
    report: Any = None  # the run as report.html shows it (harness.report.page.RunRecord), if it was written


# ------------------------------------------------------------------ preparing


@dataclass
class Prepared:
    """Everything `prepare` found and checked: a run can start from it."""

    config: RunConfig
    system: System
    system_name: str
    system_settings: dict[str, Any]  # the options as given and converted
    workload: Workload
    backend: Backend
    faults: tuple[str, ...]
    promise: Promise
    plan: Plan
    fault_options: FaultOptions = field(default_factory=FaultOptions)


def load_system(spec: str, options: Mapping[str, Any] | None = None,
                path: Sequence[str] = ()) -> tuple[System, str, dict[str, Any]]:
    """The system `spec` names (a registered name, or `package.module:Name`
    from `path`, the current directory or the installed packages), built
    with `options` after checking them: (system, its name, the options
    converted). ConfigError says what is wrong."""
    try:
        if ":" in spec:
            factory = registry.load_object(spec, "--system", [Path(p) for p in path])
        else:
            factory = registry.load("systems", spec)
    except registry.PluginError as e:
        raise ConfigError(str(e)) from None
    name = getattr(factory, "name", None) or spec
    try:
        values = parse(name, options_of(factory), options or {})
        system = construct(factory, name, values) if callable(factory) else factory
    except OptionError as e:
        raise ConfigError(str(e)) from None
    missing = [m for m in ("db", "client", "promise") if not hasattr(system, m)]
    if missing:
        raise ConfigError(f"--system {spec!r}: {type(system).__name__} has no {', '.join(missing)} "
                          "(a system has `db`, `client(workload)` and `promise(workload)`: "
                          "harness/systems/base.py)")
    return system, str(getattr(system, "name", name)), values


def make_workload(name: str, options: WorkloadOptions) -> Workload:
    try:
        factory = registry.load("workloads", name)
    except registry.PluginError as e:
        raise ConfigError(f"--workload: {e}") from None
    workload: Workload = factory(options)
    return workload


def make_backend(config: RunConfig) -> Backend:
    """The backend the configuration names, or ConfigError saying why it
    cannot be used here."""
    try:
        factory = registry.load("backends", config.backend)
    except registry.PluginError as e:
        raise ConfigError(f"--backend: {e}") from None
    try:
        backend: Backend = factory.from_options(config.backend_options())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--backend {config.backend}: {e}") from None
    return backend


def prepare(config: RunConfig) -> Prepared:
    """Everything that can be checked before anything starts (phase 1 of the
    module docstring); ConfigError for the first problem found."""
    config.validate()
    system, name, settings = load_system(config.system, config.system_options, config.system_path)
    try:
        faults = parse_fault_names(config.nemesis)
    except ValueError as e:
        raise ConfigError(f"--nemesis: {e}") from None
    fault_options = parse_fault_options(config.nemesis_options)
    if config.nemesis_interval is None:
        config.nemesis_interval = auto_interval(config.time_limit, len(faults))
    workload = make_workload(config.workload, config.workload_options())
    language = speaks(workload)
    deployment = Deployment(backend=config.backend, nodes=config.nodes, workload=language, faults=faults)
    if isinstance(system, Supports):
        reason = system.supports(deployment)
        if reason:
            raise ConfigError(f"{name} cannot run here: {reason}")
    try:
        system.client(language)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None
    promise = system.promise(language)
    if not isinstance(promise, Promise):
        raise ConfigError(f"{name}.promise({language!r}) returned {type(promise).__name__}, "
                          "not a contract.Promise")
    unknown = [c for c in config.check if c not in workload.claims]
    if unknown:
        raise ConfigError(f"--check {unknown[0]}: the {workload.name} workload cannot check it "
                          f"(it checks: {', '.join(workload.claims)})")
    promise = promise.asking(config.check)
    if not promise.claims:
        raise ConfigError(f"{name} promises nothing for the {language} workload, so there is nothing "
                          f"to check: declare its promise, or ask with --check "
                          f"({', '.join(workload.claims)})")
    backend = make_backend(config)
    return Prepared(config=config, system=system, system_name=name, system_settings=settings,
                    workload=workload, backend=backend, faults=faults, promise=promise,
                    plan=plan(workload, promise, replicas=isinstance(system.db, ReplicaReads)),
                    fault_options=fault_options)


def parse_fault_options(options: Mapping[str, Any]) -> FaultOptions:
    """`--nemesis-option KEY=VALUE`s (or a run file's table) as FaultOptions:
    texts are converted to each field's type (a tuple from a comma-separated
    text); ConfigError naming the option otherwise."""
    fields = {f.name: f for f in dataclasses.fields(FaultOptions)}
    converted: dict[str, Any] = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(f"--nemesis-option {key}: no such option (options: {', '.join(fields)})")
        default = getattr(FaultOptions(), name)
        try:
            if isinstance(default, tuple):
                items = value.split(",") if isinstance(value, str) else list(value)
                kind = type(default[0]) if default else str
                converted[name] = tuple(kind(x.strip() if isinstance(x, str) else x) for x in items)
            elif isinstance(default, float):
                converted[name] = float(value)
            else:
                converted[name] = str(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--nemesis-option {key}={value!r}: expected {type(default).__name__}") from None
    try:
        return FaultOptions(**converted)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--nemesis-option: {e}") from None


# ------------------------------------------------------------------ checking


def check_run(run_dir: Path, history: Sequence[Any] | None = None, *, time_limit: float | None = None,
              memory_limit: int | None = None) -> tuple[list[Result], Promise, dict[str, str]]:
    """Judge a stored run with its workload's checkers, for the promise it
    was run with: (results, promise, claims not checked). `time_limit`
    (seconds) and `memory_limit` (bytes) bound the linearizability search."""
    test = store.read_test(run_dir)
    workload_name = str(test.get("workload", "register"))
    limits: dict[str, Any] = {"linearizability_memory_limit": memory_limit}
    if time_limit is not None:
        limits["linearizability_time_limit"] = time_limit
    options = WorkloadOptions(concurrency=int(test.get("concurrency") or 1),
                              active_keys=int(test.get("active_keys", 4)),
                              max_ops_per_key=int(test.get("max_ops_per_key", 150)), **limits)
    workload = make_workload(workload_name, options)
    promise = stored_promise(test, workload_name)
    if history is None:
        history = read_jsonl(run_dir / "history.jsonl")
    p = plan(workload, promise, replicas=any(op.f == REPLICA_READ for op in history))
    return judge(history, p.checks), promise, p.not_checked


def stored_promise(test: Mapping[str, Any], workload: str) -> Promise:
    """The promise a stored run was checked for. A run stored before
    promises were kept its system's options at the top of test.json: the
    system (if it can still be loaded) says what those options promise."""
    if isinstance(test.get("promise"), Mapping):
        return Promise.from_json(test["promise"])
    spec = str(test.get("system", "kvnode"))
    try:
        factory = registry.load_object(spec, "--system") if ":" in spec else registry.load("systems", spec)
    except registry.PluginError as e:
        raise ConfigError(f"test.json holds no promise, and its system cannot be loaded: {e}") from None
    names = {o.name for o in options_of(factory)}
    system, _, _ = load_system(spec, {k: v for k, v in test.items() if k in names and v is not None})
    return system.promise(workload)


# ------------------------------------------------------------------ running


class Run:
    """One test run; `await Run(config).execute()` (or a `Prepared`)."""

    def __init__(self, config: RunConfig | Prepared, *, echo: Callable[[str], None] | None = None,
                 live: bool = True) -> None:
        prepared = config if isinstance(config, Prepared) else prepare(config)
        self.prepared = prepared
        self.config = config = prepared.config
        self.system = prepared.system
        self.workload = prepared.workload
        self.backend = prepared.backend
        self.echo = echo or (lambda s: print(s, file=sys.stderr))
        self.live_enabled = live
        # A backend with fixed hosts (ssh) names its nodes; others get n1..nN.
        fixed = getattr(self.backend, "node_names", None)
        if callable(fixed):
            names = list(fixed())
            if len(names) < config.nodes:
                raise ConfigError(f"--nodes {config.nodes}: the nodes file has only {len(names)} hosts "
                                  f"({', '.join(names)})")
            self.node_names = names[:config.nodes]
        else:
            self.node_names = [f"n{i + 1}" for i in range(config.nodes)]
        self.setups: dict[str, NodeSetup] = {}
        self.nemesis: Nemesis | None = None
        self.recorder: Recorder | None = None
        self.run_dir: Path | None = None
        self._next_process = (config.concurrency or 1) * 1000
        self._hot_key: str | None = None  # the key of the latest acknowledged write
        self._grudge: dict[str, list[str]] = {}  # the partition in force: node -> the nodes it cannot reach
        self.shutdown_notes: list[str] = []  # what the shutdown did, for an interrupted run's message

    # ------------------------------------------------------------ phases

    async def execute(self) -> RunOutcome:
        config, prepared = self.config, self.prepared
        self.run_dir = run_dir = store.new_run(Path(config.store), config.test_name)
        handler = _log_to(run_dir / "harness.log")
        store.write_json(run_dir / "test.json", {
            **config.to_json(), "system_name": prepared.system_name,
            "system_settings": prepared.system_settings, "promise": prepared.promise.to_json(),
        })
        self.recorder = Recorder(run_dir / "history.jsonl")
        started_at, started = datetime.datetime.now(datetime.UTC), time.monotonic()
        self.echo(f"run {run_dir}: {prepared.system_name} on {config.nodes} nodes ({config.backend}), "
                  f"{config.workload}, nemesis {','.join(prepared.faults) or 'none'}, seed {config.seed}")
        self.echo(f"promise: {prepared.promise.describe()}")
        try:
            try:
                await self._run_test()
            finally:
                await self._shutdown()
                self.recorder.close()
            history = read_jsonl(run_dir / "history.jsonl")
            results = judge(history, prepared.plan.checks)
            faults = Counter(str(o.f) for o in history if o.process == "nemesis" and o.type == "invoke")
            summary = results_mod.as_dict(results, run=str(run_dir), seed=config.seed, faults=dict(faults),
                                          system=prepared.system_name, promise=prepared.promise,
                                          not_checked=prepared.plan.not_checked,
                                          started=started_at.isoformat(timespec="seconds"),
                                          duration_s=round(time.monotonic() - started, 3))
            store.write_json(run_dir / "results.json", summary)
            log.info("verdict %s", results_mod.verdict_text(summary["valid"]))
            report = self._write_report(run_dir)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
        return RunOutcome(run_dir, results, summary["valid"], results_mod.exit_code(summary["valid"]),
                          dict(faults), prepared.promise, prepared.plan.not_checked, report)

    async def _record_node_info(self) -> None:
        """What the system says of each node (kvnode: its ring share), in
        `nodes.json` for the report."""
        db = self.system.db
        if not isinstance(db, NodeInfo) or self.run_dir is None:
            return
        infos = await asyncio.gather(*(asyncio.wait_for(db.node_info(self.setups[n]), 5.0) for n in self.node_names),
                                     return_exceptions=True)
        nodes = {n: info for n, info in zip(self.node_names, infos, strict=True) if isinstance(info, dict)}
        store.write_json(self.run_dir / "nodes.json", nodes)

    def _write_report(self, run_dir: Path) -> Any:
        """report.html, and the run as it shows it; a report that cannot be
        written costs the run nothing (`harness report RUN_DIR` tries again)."""
        from harness.report.page import load_run, write_report

        try:
            record = load_run(run_dir)
            write_report(run_dir, record)
            return record
        except Exception:
            log.exception("report.html not written (harness report %s tries again)", run_dir)
            self.echo(f"report.html not written: see {run_dir / 'harness.log'}")
            return None

    async def _run_test(self) -> None:
        config = self.config
        assert self.run_dir is not None and self.recorder is not None
        places = await self.backend.setup(self.node_names, self.run_dir, ports_of(self.system))
        self.setups = {n: NodeSetup(place=places[n], nodes=tuple(self.node_names), seed=config.seed or 0,
                                    op_timeout=config.op_timeout) for n in self.node_names}
        handle = self._handle()
        faults = build_faults(self.prepared.faults, handle, self.prepared.fault_options)
        problems = check_available(faults, self.backend.capabilities())
        if "clock" in self.prepared.faults:
            problems += await self._clock_blind()
        if "power" in self.prepared.faults and not problems:
            problems += await self._prepare_disks()
        if problems:
            raise ConfigError("; ".join(problems))
        log.info("starting %d nodes", len(self.node_names))
        await self._start_all()
        # Each node serves; now let them find each other (a node that has not
        # yet heard of its peers refuses quorum operations as unavailable).
        await self._recover(timeout=max(15.0, config.start_timeout), phase="start-up", blind_wait=1.0)
        await self._record_node_info()

        recorder = self.recorder
        self.nemesis = Nemesis(faults, handle, self._record_nemesis, random.Random(f"{config.seed}:nemesis"),
                               interval=config.nemesis_interval or DEFAULT_INTERVAL)
        deadline = time.monotonic() + config.time_limit
        pace = Pace(config.rate, config.concurrency or 1)
        workers = [
            worker(i, self.node_names[i % len(self.node_names)], workload=self.workload, open_client=self._open,
                   recorder=recorder, deadline=deadline, pace=pace, seed=config.seed or 0,
                   op_timeout=config.op_timeout, check=self._check_completion, route=self._far_side)
            for i in range(config.concurrency or 1)
        ]
        log.info("workload %s for %.1f s", config.workload, config.time_limit)
        async with Live(recorder, self.nemesis, enabled=self.live_enabled, echo=self.echo):
            nemesis_task = asyncio.create_task(self.nemesis.run(deadline))
            try:
                await asyncio.gather(*workers)
            finally:
                nemesis_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await nemesis_task
            log.info("healing")
            await self.nemesis.heal()
            await self._restart_missing()
            await self._replica_convergence()
            await self._recover()
            log.info("final reads")
            await self._final_reads()

    async def _shutdown(self) -> None:
        """Heal, collect logs, tear down: on every exit path, and not to be
        interrupted by a second cancellation."""
        async def shutdown() -> None:
            healed = True
            if self.nemesis is not None:
                try:
                    await self.nemesis.heal()
                except Exception:
                    healed = False
            try:
                await self.backend.heal_all()
            except Exception:
                healed = False
            self.shutdown_notes.append("faults healed" if healed else "healing failed (see harness.log; "
                                       "`harness clean` removes what is left)")
            if self.run_dir is not None:
                for n in self.setups:
                    try:
                        await self.backend.collect_logs(n, self.run_dir / "nodes" / n / "log")
                    except Exception as e:
                        log.warning("could not collect the logs of %s: %s", n, e)
            await self.backend.teardown()
            self.shutdown_notes.append(f"{len(self.setups)} node{'s' if len(self.setups) != 1 else ''} stopped")

        task = asyncio.ensure_future(shutdown())
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue
        task.result()

    # ------------------------------------------------------------ nodes

    async def _start_all(self) -> None:
        """Start every node at once; the first to fail fails the start, the
        others are still waited for (and torn down with the rest)."""
        outcomes = await asyncio.gather(*(self._start(n) for n in self.node_names), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _start(self, node: str) -> None:
        """Start the node and wait until it serves; RunError, at once, if its
        process exits meanwhile, or after `start_timeout`."""
        setup = self.setups[node]
        argv, env = self.system.db.command(setup)
        await self.backend.start(node, argv, env)
        timeout = self.config.start_timeout
        ready = asyncio.ensure_future(self.system.db.ready(setup, timeout))
        try:
            while True:
                done, _ = await asyncio.wait({ready}, timeout=0.2)
                if done:
                    break
                exited = await self.backend.exited(node)
                if exited is not None:
                    raise RunError(f"{node} {exited.describe()} while starting"
                                   f"{await self._log_tail(node)}")
        finally:
            if not ready.done():
                ready.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await ready
        if not ready.result():
            exited = await self.backend.exited(node)
            what = exited.describe() if exited is not None else f"did not become ready in {timeout:g} s"
            raise RunError(f"{node} {what} (--start-timeout){await self._log_tail(node)}")

    async def _log_tail(self, node: str) -> str:
        """The last lines of the node's logs, as a message's tail."""
        assert self.run_dir is not None
        dest = self.run_dir / "nodes" / node / "log"
        try:
            files = await self.backend.collect_logs(node, dest)
        except Exception as e:
            return f"; its logs could not be collected: {e}"
        files = [f for f in files if f.name != "backend.log" and f.is_file() and f.stat().st_size > 0]
        if not files:
            return f"; its logs ({dest}) are empty"
        order = {"stderr.log": 0, "stdout.log": 2}
        newest = sorted(files, key=lambda f: (order.get(f.name, 1), -f.stat().st_mtime))[0]
        lines = newest.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        return f"; the last lines of {newest}:\n" + "\n".join(f"    {line}" for line in lines)

    async def _clock_blind(self) -> list[str]:
        """Why the clock fault cannot reach some node's program, if it cannot."""
        reasons: list[str] = []
        for node in self.node_names:
            argv, _ = self.system.db.command(self.setups[node])
            reason = await self.backend.clock_blind(node, argv)
            if reason:
                reasons.append(f"clock: {reason}")
                break  # every node runs the same program
        return reasons

    async def _prepare_disks(self) -> list[str]:
        """Put every node's data directory on a lazy disk (the power fault's
        `PowerLoss`), before any node starts; why it cannot, if it cannot."""
        if not isinstance(self.backend, PowerLoss):
            return [f"power: the {self.backend.name} backend has no lazy disks"]
        try:
            await self.backend.prepare_disks(self.node_names)
        except (OSError, RuntimeError) as e:
            return [f"power: {e}"]
        return []

    async def _restart(self, node: str) -> None:
        await self.backend.kill(node)
        await self._start(node)

    async def _restart_missing(self) -> None:
        for node in self.node_names:
            if not self.backend.running(node):
                log.info("restarting %s before the final reads", node)
                await self._start(node)

    # ------------------------------------------------------------ helpers

    def _handle(self) -> ClusterHandle:
        db = self.system.db
        node_time = None
        if isinstance(db, NodeTime):
            async def node_time_of(node: str) -> float | None:
                return await db.node_time(self.setups[node])
            node_time = node_time_of
        async def converge() -> bool | None:
            return await db.converged(list(self.setups.values()))
        hot_replicas = None
        if isinstance(db, ReplicaReads):
            async def replicas_of_hot_key() -> list[str]:
                if self._hot_key is None:
                    return []
                try:
                    held = await asyncio.wait_for(db.replica_reads(list(self.setups.values()), self._hot_key), 5.0)
                except Exception as e:  # the fault then falls back to a random node
                    log.info("the replicas of %r are unknown: %s", self._hot_key, e)
                    return []
                return sorted(held)
            hot_replicas = replicas_of_hot_key
        return ClusterHandle(backend=self.backend, nodes=list(self.node_names), restart=self._restart,
                             node_time=node_time, converge=converge, hot_replicas=hot_replicas)

    def _far_side(self, node: str, rng: random.Random) -> str | None:
        """A node that `node` cannot reach through the partition in force
        (where a read right after a write acknowledged via `node` goes)."""
        cut = self._grudge.get(node)
        return rng.choice(cut) if cut else None

    def _record_nemesis(self, type: str, f: str, value: Any) -> None:
        assert self.recorder is not None
        if type == "info" and f == "start-partition" and isinstance(value, dict):
            grudge = value.get("grudge")
            self._grudge = {n: sorted(d) for n, d in grudge.items()} if isinstance(grudge, dict) else {}
        elif f == "stop-partition":
            self._grudge = {}
        self.recorder.record("nemesis", type, f, value=value)  # type: ignore[arg-type]
        log.info("nemesis %s %s %s", type, f, value)

    def _check_completion(self, op: Invocation, completion: Completion) -> None:
        """Stop the run on a completion the history cannot hold; note the key
        of an acknowledged write (the `primaries` fault targets)."""
        if completion.type == "ok" and op.f != "read" and op.key is not None:
            self._hot_key = str(op.key)
        problem = completion_problem(completion)
        if problem is None:
            problem = self.workload.validate(op, completion)
        if problem is not None:
            what = f"{op.f} of key {op.key!r}" + (f" with {op.value!r}" if op.value is not None else "")
            raise AdapterError(f"adapter {self.config.system} ({self.prepared.system_name}), asked for a "
                               f"{what}: {problem}")

    async def _open(self, node: str) -> Client:
        client = self.system.client(speaks(self.workload))
        await client.open(self.setups[node])
        return client

    async def _recover(self, timeout: float | None = None, phase: str = "recovery",
                       blind_wait: float = 5.0) -> None:
        """Wait for the system's convergence signal (or a fixed time when it
        has none), at most `timeout` (default `recovery_timeout`) seconds."""
        started = time.monotonic()
        deadline = started + (self.config.recovery_timeout if timeout is None else timeout)
        nodes = list(self.setups.values())
        while time.monotonic() < deadline:
            try:
                done = await asyncio.wait_for(self.system.db.converged(nodes),
                                              max(1.0, deadline - time.monotonic()))
            except TimeoutError:
                done = False
            if done is None:
                wait = min(blind_wait, max(0.0, deadline - time.monotonic()))
                await asyncio.sleep(wait)
                log.info("%s: the system gives no convergence signal; waited %.1f s", phase, wait)
                return
            if done:
                log.info("%s: converged in %.1f s", phase, time.monotonic() - started)
                return
            await asyncio.sleep(0.5)
        log.warning("%s: not converged after %.0f s; going on", phase, time.monotonic() - started)

    async def _replica_convergence(self) -> None:
        """Phase 4's replica reads: poll each key's replicas, without repair,
        until they hold the same values or `recovery_timeout` passes; record
        each key's last read at each replica as it agrees (the rest at the
        deadline), as `replica-read` ops of a process of their own."""
        db = self.system.db
        if not isinstance(db, ReplicaReads):
            return
        assert self.recorder is not None
        keys = list(dict.fromkeys(str(op.key) for op in self.workload.final_reads()))
        nodes = list(self.setups.values())
        started = time.monotonic()
        deadline = started + self.config.recovery_timeout
        limit = asyncio.Semaphore(8)  # keys read at once
        process = self._new_process()

        async def read(key: str) -> dict[str, ReplicaRead | None]:
            async with limit:
                try:
                    return await asyncio.wait_for(db.replica_reads(nodes, key), 10.0)
                except TimeoutError:
                    return {}

        def record(key: str, reads: dict[str, ReplicaRead | None]) -> None:
            nonlocal process
            assert self.recorder is not None
            waited = {"waited_s": round(time.monotonic() - started, 3)}
            found: list[tuple[str | None, ReplicaRead | None]] = list(sorted(reads.items())) or [(None, None)]
            for node, got in found:
                self.recorder.record(process, "invoke", REPLICA_READ, key=key, node=node)
                if got is None:
                    why = "could not be read" if node is not None else "its replicas could not be found"
                    self.recorder.record(process, "info", REPLICA_READ, key=key, node=node, error=why,
                                         extra=waited)
                    process = self._new_process()
                else:
                    self.recorder.record(process, "ok", REPLICA_READ, key=key, node=node,
                                         value=list(got.values), extra=waited)

        pending = keys
        last: dict[str, dict[str, ReplicaRead | None]] = {}
        while pending:
            results = await asyncio.gather(*(read(k) for k in pending))
            for key, reads in zip(pending, results, strict=True):
                last[key] = reads
                if replicas_agree(reads):
                    record(key, reads)
            pending = [k for k in pending if not replicas_agree(last[k])]
            if not pending or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        for key in pending:
            record(key, last[key])
        took = time.monotonic() - started
        if pending:
            log.warning("replica convergence: %d of %d keys still differ between replicas after %.1f s "
                        "(--recovery-timeout); going on", len(pending), len(keys), took)
        else:
            log.info("replica convergence: the replicas of all %d keys agree, after %.1f s", len(keys), took)

    async def _final_reads(self) -> None:
        reads = self.workload.final_reads()
        await asyncio.gather(*(self._final_reads_at(node, reads) for node in self.node_names))

    async def _final_reads_at(self, node: str, reads: Sequence[Invocation]) -> None:
        assert self.recorder is not None
        process = self._new_process()
        client = await self._open(node)
        try:
            for op in reads:
                for _attempt in range(3):
                    self.recorder.record(process, "invoke", op.f, key=op.key, value=op.value, node=node,
                                         extra=op.extra)
                    c = await invoke(client, op, self.config.op_timeout)
                    self._check_completion(op, c)
                    record_completion(self.recorder, process, node, op,
                                      dataclasses.replace(c, extra={**c.extra, **op.extra}))
                    if c.type == "ok":
                        break
                    if c.type == "info":
                        await client.close()
                        process = self._new_process()
                        client = await self._open(node)
                    await asyncio.sleep(0.5)
        finally:
            await client.close()

    def _new_process(self) -> int:
        self._next_process += 1
        return self._next_process


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def run(config: RunConfig | Prepared, *, live: bool = True,
        echo: Callable[[str], None] | None = None) -> RunOutcome:
    """Run a test in a fresh event loop; SIGTERM is treated like Ctrl-C (the
    run is cancelled, healed and torn down)."""
    prepared = config if isinstance(config, Prepared) else prepare(config)

    the_run = Run(prepared, live=live, echo=echo)

    async def main() -> RunOutcome:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await the_run.execute()

    try:
        return asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise Interrupted(the_run.run_dir, the_run.shutdown_notes) from None


class Interrupted(Exception):
    """The run was stopped (Ctrl-C, SIGTERM) before its end; it was healed
    and torn down, and its history kept."""

    def __init__(self, run_dir: Path | None, notes: Sequence[str]) -> None:
        self.run_dir, self.notes = run_dir, list(notes)
        done = ", ".join(self.notes) or "nothing had started"
        kept = (f"; history kept at {run_dir / 'history.jsonl'} (`harness report {run_dir}` checks it and "
                "writes its report)") if run_dir is not None else ""
        super().__init__(f"interrupted: {done}{kept}")


__all__ = ["AdapterError", "ConfigError", "Interrupted", "Prepared", "Run", "RunConfig", "RunError", "RunOutcome", "check_run",
           "load_system", "prepare", "run"]
