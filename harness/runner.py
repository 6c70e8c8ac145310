"""`harness run`: one test from start to verdict.

Phases, as in Jepsen: set up the backend's places and start every node; run
the workload's clients and the nemesis until the time limit; heal every fault;
wait for the system to converge (its own signal, or a time-out); read every
key from every node (the final reads); collect the nodes' logs and tear the
cluster down; check the history with the workload's checkers; store
`results.json` and print the verdict.

Whatever happens (an error, Ctrl-C, SIGTERM) the faults are healed and the
backend torn down on the way out, and the history written so far stays on
disk: it is appended and flushed op by op.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import logging
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checkers.result import Result
from harness import results as results_mod
from harness import store
from harness.backends.base import Backend, NodePlace
from harness.generator import Pace, invoke, record_completion, worker
from harness.history import read_jsonl
from harness.live import Live
from harness.nemesis.base import ClusterHandle
from harness.nemesis.schedule import FaultOptions, Nemesis, build_faults, check_available
from harness.recorder import Recorder
from harness.systems.base import Client, NodeSetup, System
from workloads.base import Workload, WorkloadOptions

log = logging.getLogger("harness")

WORKLOADS = ("register", "cart")
BACKENDS = ("local", "netns", "docker", "ssh")
RESOLUTIONS, QUORUMS, READ_REPAIRS = ("dvv", "lww"), ("sloppy", "strict"), ("off", "async", "sync")


class ConfigError(ValueError):
    """A configuration that cannot run (a bad argument: exit 254)."""


@dataclass
class RunConfig:
    system: str = "kvnode"
    backend: str = "local"
    nodes: int = 5
    workload: str = "register"
    nemesis: tuple[str, ...] = ()
    n: int = 3
    w: int = 2
    r: int = 2
    resolution: str = "dvv"
    quorum: str = "sloppy"
    read_repair: str = "async"
    concurrency: int | None = None  # default: 2 per node
    rate: float | None = 100.0  # ops/s in total; None: unpaced
    time_limit: float = 60.0
    nemesis_interval: float = 10.0
    seed: int | None = None
    store: str = "store"
    name: str | None = None
    op_timeout: float = 5.0  # a client operation with no answer by then is `info`
    recovery_timeout: float = 60.0
    active_keys: int = 4
    max_ops_per_key: int = 150
    node_settings: dict[str, Any] = field(default_factory=dict)  # more kvnode settings (gossip_interval ...)
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

    def validate(self) -> None:
        def bad(msg: str) -> ConfigError:
            return ConfigError(msg)

        if self.nodes < 1:
            raise bad("--nodes must be at least 1")
        if not 1 <= self.n <= self.nodes:
            raise bad(f"--n {self.n} must be between 1 and --nodes {self.nodes}")
        if not (1 <= self.w <= self.n and 1 <= self.r <= self.n):
            raise bad(f"--w {self.w} and --r {self.r} must be between 1 and --n {self.n}")
        for name, value, allowed in (("--workload", self.workload, WORKLOADS),
                                     ("--backend", self.backend, BACKENDS),
                                     ("--resolution", self.resolution, RESOLUTIONS),
                                     ("--quorum", self.quorum, QUORUMS),
                                     ("--read-repair", self.read_repair, READ_REPAIRS)):
            if value not in allowed:
                raise bad(f"{name} {value!r} is not one of {', '.join(allowed)}")
        if self.concurrency is not None and self.concurrency < 1:
            raise bad("--concurrency must be at least 1")
        if self.time_limit <= 0 or self.nemesis_interval <= 0:
            raise bad("--time-limit and --nemesis-interval must be positive")
        if self.rate is not None and self.rate <= 0:
            raise bad("--rate must be positive")

    @property
    def settings(self) -> dict[str, Any]:
        return {"n": self.n, "w": self.w, "r": self.r, "resolution": self.resolution, "quorum": self.quorum,
                "read_repair": self.read_repair, **self.node_settings}

    @property
    def test_name(self) -> str:
        if self.name:
            return self.name
        faults = "+".join(self.nemesis) or "none"
        return f"{self.system.split(':')[-1]}-{self.workload}-{faults}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class RunOutcome:
    run_dir: Path
    results: list[Result]
    valid: Any
    exit_code: int
    faults: dict[str, int] = field(default_factory=dict)  # nemesis operations invoked, by f


def load_system(spec: str) -> System:
    """`kvnode`, or `package.module:Name` (a class, called with no arguments,
    or an object with `db` and `client(workload)`)."""
    if spec == "kvnode":
        from harness.systems.kvnode import KvnodeSystem
        return KvnodeSystem()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"--system {spec!r}: expected 'kvnode' or 'package.module:Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"--system {spec!r}: cannot import {module_name}: {e}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"--system {spec!r}: {module_name} has no {attr}") from None
    system = obj() if isinstance(obj, type) else obj
    if not hasattr(system, "db") or not callable(getattr(system, "client", None)):
        raise ConfigError(f"--system {spec!r}: {attr} has no `db` and `client(workload)`")
    return system


def make_workload(config: RunConfig) -> Workload:
    options = WorkloadOptions(concurrency=config.concurrency or 1, active_keys=config.active_keys,
                              max_ops_per_key=config.max_ops_per_key, settings=config.settings)
    if config.workload == "register":
        from workloads.register import RegisterWorkload
        return RegisterWorkload(options)
    from workloads.cart import CartWorkload
    return CartWorkload(options)


def make_backend(config: RunConfig) -> Backend:
    """The backend the configuration names, or ConfigError saying why it
    cannot be used here."""
    name = config.backend
    try:
        if name == "local":
            from harness.backends.local import LocalBackend
            return LocalBackend()
        if name == "netns":
            from harness.backends.netns import NetnsBackend
            return NetnsBackend(subnet=config.subnet)
        if name == "docker":
            from harness.backends.docker import DockerBackend
            return DockerBackend(image=config.image, base_image=config.base_image, subnet=config.subnet)
        if name == "ssh":
            if not config.nodes_file:
                raise ConfigError("--backend ssh needs --nodes-file nodes.toml")
            from harness.backends.ssh import SshBackend
            return SshBackend.from_file(Path(config.nodes_file),
                                        insecure_accept_host_keys=config.insecure_accept_host_keys)
    except ImportError as e:
        raise ConfigError(f"--backend {name}: not available in this version ({e})") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"--backend {name}: {e}") from None
    raise ConfigError(f"--backend {name}: unknown")


def check_run(run_dir: Path, history: Sequence[Any] | None = None) -> list[Result]:
    """Judge a stored run with its workload's checkers and its settings."""
    test = store.read_test(run_dir)
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    kwargs: dict[str, Any] = {k: v for k, v in test.items() if k in fields}
    kwargs["nemesis"] = tuple(kwargs.get("nemesis", ()))
    config = RunConfig(**kwargs)
    config.validate()
    if history is None:
        history = read_jsonl(run_dir / "history.jsonl")
    return make_workload(config).check(history, config.settings)


class Run:
    """One test run; `await Run(config).execute()`."""

    def __init__(self, config: RunConfig, *, echo: Callable[[str], None] | None = None,
                 live: bool = True) -> None:
        config.validate()
        self.config = config
        self.system = load_system(config.system)
        self.workload = make_workload(config)
        self.backend = make_backend(config)
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

    # ------------------------------------------------------------ phases

    async def execute(self) -> RunOutcome:
        config = self.config
        self.run_dir = run_dir = store.new_run(Path(config.store), config.test_name)
        handler = _log_to(run_dir / "harness.log")
        store.write_json(run_dir / "test.json", config.to_json())
        self.recorder = Recorder(run_dir / "history.jsonl")
        self.echo(f"run {run_dir}: {config.nodes} nodes, {config.workload}, nemesis "
                  f"{','.join(config.nemesis) or 'none'}, seed {config.seed}")
        try:
            await self._run_test()
        finally:
            await self._shutdown()
            self.recorder.close()
        history = read_jsonl(run_dir / "history.jsonl")
        results = check_run(run_dir, history)
        faults = Counter(str(o.f) for o in history if o.process == "nemesis" and o.type == "invoke")
        summary = results_mod.as_dict(results, run=str(run_dir), seed=config.seed, faults=dict(faults))
        store.write_json(run_dir / "results.json", summary)
        log.info("verdict %s", results_mod.verdict_text(summary["valid"]))
        logging.getLogger().removeHandler(handler)
        handler.close()
        return RunOutcome(run_dir, results, summary["valid"], results_mod.exit_code(summary["valid"]),
                          dict(faults))

    async def _run_test(self) -> None:
        config = self.config
        assert self.run_dir is not None and self.recorder is not None
        places = await self.backend.setup(self.node_names, self.run_dir)
        self.setups = {n: NodeSetup(place=places[n], nodes=tuple(self.node_names), settings=config.settings,
                                    seed=config.seed or 0, op_timeout=config.op_timeout) for n in self.node_names}
        handle = self._handle()
        faults = build_faults(config.nemesis, handle, FaultOptions())
        problems = check_available(faults, self.backend.capabilities())
        if problems:
            raise ConfigError("; ".join(problems))
        log.info("starting %d nodes", len(self.node_names))
        await asyncio.gather(*(self._start(n) for n in self.node_names))
        # Each node serves; now let them find each other (a node that has not
        # yet heard of its peers refuses quorum operations as unavailable).
        await self._recover(timeout=15.0, phase="start-up", blind_wait=1.0)

        recorder = self.recorder
        self.nemesis = Nemesis(faults, handle, self._record_nemesis, random.Random(f"{config.seed}:nemesis"),
                               interval=config.nemesis_interval)
        deadline = time.monotonic() + config.time_limit
        pace = Pace(config.rate, config.concurrency or 1)
        workers = [
            worker(i, self.node_names[i % len(self.node_names)], workload=self.workload, open_client=self._open,
                   recorder=recorder, deadline=deadline, pace=pace, seed=config.seed or 0,
                   op_timeout=config.op_timeout)
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
            await self._recover()
            log.info("final reads")
            await self._final_reads()

    async def _shutdown(self) -> None:
        """Heal, collect logs, tear down: on every exit path, and not to be
        interrupted by a second cancellation."""
        async def shutdown() -> None:
            if self.nemesis is not None:
                with contextlib.suppress(Exception):
                    await self.nemesis.heal()
            with contextlib.suppress(Exception):
                await self.backend.heal_all()
            if self.run_dir is not None:
                for n in self.setups:
                    try:
                        await self.backend.collect_logs(n, self.run_dir / "nodes" / n / "log")
                    except Exception as e:
                        log.warning("could not collect the logs of %s: %s", n, e)
            await self.backend.teardown()

        task = asyncio.ensure_future(shutdown())
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue
        task.result()

    # ------------------------------------------------------------ helpers

    def _handle(self) -> ClusterHandle:
        return ClusterHandle(backend=self.backend, nodes=list(self.node_names), restart=self._restart)

    def _record_nemesis(self, type: str, f: str, value: Any) -> None:
        assert self.recorder is not None
        self.recorder.record("nemesis", type, f, value=value)  # type: ignore[arg-type]
        log.info("nemesis %s %s %s", type, f, value)

    async def _start(self, node: str) -> None:
        argv, env = self.system.db.command(self.setups[node])
        await self.backend.start(node, argv, env)
        if not await self.system.db.ready(self.setups[node], timeout=30.0):
            raise RuntimeError(f"{node} did not become ready in 30 s (see {self.run_dir}/nodes/{node}/)")

    async def _restart(self, node: str) -> None:
        await self.backend.kill(node)
        await self._start(node)

    async def _restart_missing(self) -> None:
        for node in self.node_names:
            if not self.backend.running(node):
                log.info("restarting %s before the final reads", node)
                await self._start(node)

    async def _open(self, node: str) -> Client:
        client = self.system.client(self.config.workload)
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

    async def _final_reads(self) -> None:
        reads = self.workload.final_reads()
        await asyncio.gather(*(self._final_reads_at(node, reads) for node in self.node_names))

    async def _final_reads_at(self, node: str, reads: Sequence[Any]) -> None:
        assert self.recorder is not None
        process = self._new_process()
        client = await self._open(node)
        try:
            for op in reads:
                for _attempt in range(3):
                    self.recorder.record(process, "invoke", op.f, key=op.key, value=op.value, node=node,
                                         extra=op.extra)
                    c = await invoke(client, op, self.config.op_timeout)
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


def run(config: RunConfig, *, live: bool = True, echo: Callable[[str], None] | None = None) -> RunOutcome:
    """Run a test in a fresh event loop; SIGTERM is treated like Ctrl-C (the
    run is cancelled, healed and torn down)."""
    async def main() -> RunOutcome:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        return await Run(config, live=live, echo=echo).execute()

    return asyncio.run(main())


__all__ = ["ConfigError", "NodePlace", "Run", "RunConfig", "RunOutcome", "check_run", "load_system", "run"]
