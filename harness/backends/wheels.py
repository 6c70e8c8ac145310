"""What a remote node needs to run `kvnode serve`, as wheels: this project
(built from the working tree) and the node's own dependencies, so that a
host or an image with no internet access installs them with `pip install
--no-index`. Built once per content of the project and cached.

Only the node's dependencies are shipped (`NODE_REQUIREMENTS`); the
harness's own (matplotlib, docker, paramiko ...) stay on the control
machine. The project's wheel is installed with `--no-deps` for that reason.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# pyelftools: `python -m harness.backends.binaries` runs where the nodes run
# (in a container, on a host) to tell whether libfaketime can skew a program.
NODE_REQUIREMENTS = ("msgpack", "mmh3", "sortedcontainers", "click", "rich", "libfaketime", "pyelftools")
PROJECT = "dynamo-harness"
_SOURCES = ("pyproject.toml", "kvnode", "harness", "checkers", "workloads", "contract", "examples")


def source_digest(root: Path = ROOT) -> str:
    """A digest of the project's sources: a changed file means a new build."""
    h = hashlib.sha256()
    for name in _SOURCES:
        path = root / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        for f in files:
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dynamo-harness" / "wheels"


def wheelhouse(dest: Path | None = None, *, root: Path = ROOT) -> Path:
    """A directory holding the project's wheel and the node's dependencies'
    wheels (built if this content has none yet). Raises RuntimeError with
    pip's output if a build fails."""
    dest = dest or cache_dir() / source_digest(root)
    done = dest / ".complete"
    if done.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for args in (["--no-deps", str(root)], list(NODE_REQUIREMENTS)):
        got = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(dest), *args],
                             capture_output=True, text=True)
        if got.returncode != 0:
            raise RuntimeError(f"pip wheel {' '.join(args)} failed: {got.stderr[-2000:]}")
    done.touch()
    return dest


def install_commands(python: str, venv: str, wheels: str) -> list[list[str]]:
    """Argument lists that, run on the node in order, create `venv` and
    install the node from the wheel directory `wheels` without any index."""
    pip = f"{venv}/bin/pip"
    return [
        [python, "-m", "venv", venv],
        [pip, "install", "-q", "--no-index", "--find-links", wheels, *NODE_REQUIREMENTS],
        [pip, "install", "-q", "--no-index", "--no-deps", "--force-reinstall", "--find-links", wheels, PROJECT],
    ]
