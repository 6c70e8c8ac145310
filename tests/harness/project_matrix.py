"""This project's own matrix, `ci/matrix.toml`, for the tests that need its
settings or one of its rows: one matrix, not two."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from harness import matrix

MATRIX = Path(__file__).resolve().parents[2] / "ci" / "matrix.toml"

# The defaults' system options: kvnode's faster failure detection and repair.
FAST: dict[str, Any] = dict(tomllib.loads(MATRIX.read_text())["defaults"]["system"])


def row(name: str, **overrides: Any) -> matrix.Row:
    """A row of the matrix, its run options overridden."""
    (found,) = matrix.load(MATRIX).only([name]).rows
    return matrix.Row(found.name, {**found.run, **overrides}, found.seeds, found.overall, found.checkers)
