"""Loading a benchmark module by its path for its smoke test: `bench` is not
an installed package. One loader for the bench smoke tests to share."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_bench(stem: str) -> ModuleType:
    """`bench/<stem>.py`, loaded once under a private module name."""
    name = f"_bench_{stem}_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
