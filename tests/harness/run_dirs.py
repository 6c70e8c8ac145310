"""Run directories of the store made by hand, for the tests of what reads
them (reports, `harness check`, `harness serve`): a `test.json`, a
`history.jsonl` and, unless asked not to, the `results.json` the project's
own checkers give for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import results as results_mod
from harness import store
from harness.runner import check_run

S = 1_000_000_000  # ns


def run_config(**overrides: Any) -> dict[str, Any]:
    claims = [{"name": "linearizable", "params": {}, "why": "asked for with --check", "asked": True}]
    return {"name": "hand", "system": "kvnode", "system_name": "kvnode", "backend": "local", "nodes": 3,
            "workload": "register", "nemesis": ["partition"], "nemesis_interval": 2.0, "seed": 1,
            "concurrency": 2, "rate": 10.0, "time_limit": 5.0,
            "system_settings": {"n": 3, "w": 1, "r": 1, "resolution": "lww"},
            "promise": {"claims": claims}, **overrides}


def stale_read_history() -> list[dict[str, Any]]:
    """n1 is cut off from n2 and n3; a write of 'b' through n2 is
    acknowledged, then a read through n1 returns the older 'a': not
    linearizable, with the fault in force and the node that answered."""
    ops: list[dict[str, Any]] = []

    def op(t: float, process: Any, type: str, f: str, **fields: Any) -> None:
        ops.append({"index": len(ops), "time": int(t * S), "process": process, "type": type, "f": f, **fields})

    op(0.10, 0, "invoke", "write", key="k1", value="0.1", node="n1")
    op(0.12, 0, "ok", "write", key="k1", value="0.1", node="n1")
    op(1.00, "nemesis", "invoke", "start-partition", value=None)
    op(1.01, "nemesis", "info", "start-partition",
       value={"shape": "halves", "grudge": {"n1": ["n2", "n3"], "n2": ["n1"], "n3": ["n1"]}})
    op(1.20, 1, "invoke", "write", key="k1", value="1.1", node="n2")
    op(1.22, 1, "ok", "write", key="k1", value="1.1", node="n2")
    op(1.30, 0, "invoke", "read", key="k1", value=None, node="n1")
    op(1.31, 0, "ok", "read", key="k1", value=["0.1"], node="n1")
    op(2.00, "nemesis", "invoke", "stop-partition", value=None)
    op(2.01, "nemesis", "info", "stop-partition", value={"healed": "halves"})
    for n, node in enumerate(("n1", "n2", "n3")):
        op(3.0 + n / 10, 2000 + n, "invoke", "read", key="k1", value=None, node=node, final=True)
        op(3.01 + n / 10, 2000 + n, "ok", "read", key="k1", value=["1.1"], node=node, final=True)
    return ops


def make_run(store_dir: Path, history: list[dict[str, Any]] | None = None, *, name: str = "hand",
             stamp: str = "20261203T120000", results: bool = True, **test: Any) -> Path:
    run_dir = store_dir / name / stamp
    run_dir.mkdir(parents=True)
    store.write_json(run_dir / "test.json", run_config(name=name, **test))
    lines = history if history is not None else stale_read_history()
    (run_dir / "history.jsonl").write_text("".join(json.dumps(o) + "\n" for o in lines))
    if results:
        checked, promise, not_checked = check_run(run_dir)
        store.write_json(run_dir / "results.json",
                         results_mod.as_dict(checked, promise=promise, not_checked=not_checked,
                                             started="2026-12-03T12:00:00+00:00", duration_s=3.5))
    return run_dir
