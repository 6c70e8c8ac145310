"""The run store (DESIGN.md, "Run store"): one directory per run,
`store/<test-name>/<YYYYmmddTHHMMSS>/`, holding `test.json`, `history.jsonl`,
`results.json`, `harness.log` and `nodes/<node>/`; `store/latest` (and
`store/<test-name>/latest`) point at the newest run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def check_name(name: str) -> str:
    """`name` if it can name a test in the store: one path component of its
    own (no separator, not `.`, `..`, a hidden name or `latest`, the link to
    the newest run), so that a run is written inside the store and nowhere
    else; else ValueError saying why."""
    if not name or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"test name {name!r}: must be a non-empty name without '/', '\\' or NUL")
    if name.startswith(".") or name == "latest":
        raise ValueError(f"test name {name!r}: may not start with '.' or be 'latest' (the store's link to the newest run)")
    return name


def new_run(store: Path, name: str) -> Path:
    """Create the run directory (a suffix keeps two runs in one second apart)."""
    root = store.resolve()
    base = root / check_name(name)
    if base.resolve().parent != root:  # a symlink planted in the store
        raise ValueError(f"test name {name!r}: {base} leads outside the store {root}")
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run = base / stamp
    n = 1
    while True:
        try:
            run.mkdir()
            break
        except FileExistsError:
            n += 1
            run = base / f"{stamp}-{n}"
    _point(store / "latest", run)
    _point(base / "latest", run)
    return run


def _point(link: Path, target: Path) -> None:
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_test(run: Path) -> dict[str, Any]:
    """The stored configuration of a run (its `test.json`)."""
    path = run / "test.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{run} is not a run directory: no test.json") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data
