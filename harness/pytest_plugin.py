"""The pytest plugin of `harness ci` (entry point `pytest11`): with
`pytest --harness-matrix FILE`, each row of a matrix file (harness/matrix.py)
is a test, named after the row and marked with its backend, so that a
project that already runs pytest adds consistency regression with one flag.

    pytest --harness-matrix ci/matrix.toml --harness-store store -m "not docker"

A row that is as expected passes; one the system or backend refuses is
skipped with the reason; otherwise it fails with the verdicts, the anomaly
sentences and the path of each run's report. Without the flag the plugin
does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

BACKEND_MARKERS = {
    "local": "harness ci row on the local backend",
    "netns": "needs root to make network namespaces, veth and iptables rules",
    "docker": "needs a running Docker engine",
    "ssh": "needs SSH access to test hosts",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "consistency regression (harness ci)")
    group.addoption("--harness-matrix", action="append", default=[], metavar="FILE",
                    help="Run each row of this harness ci matrix as a test (repeatable).")
    group.addoption("--harness-store", default="store", metavar="DIR",
                    help="Where the matrix's runs and reports are kept [store].")
    group.addoption("--harness-seeds", type=int, default=None, metavar="K",
                    help="Seeds a row may use (overrides the matrix's).")
    group.addoption("--harness-backend", default=None, metavar="NAME",
                    help="Run only the rows meant for this backend.")


def pytest_configure(config: pytest.Config) -> None:
    known = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, text in BACKEND_MARKERS.items():
        if name not in known:
            config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    for file in config.getoption("harness_matrix") or ():
        items.extend(MatrixFile.from_parent(session, path=Path(file).resolve()).collect())


class MatrixFile(pytest.File):
    def collect(self) -> Iterable[pytest.Item]:
        from harness import matrix

        try:
            m = matrix.load(self.path, seeds=self.config.getoption("harness_seeds"),
                            backend=self.config.getoption("harness_backend"))
        except matrix.MatrixError as e:
            raise pytest.UsageError(str(e)) from None
        for row in m.rows:
            item = MatrixRow.from_parent(self, name=row.name, row=row)
            backend = str(row.run.get("backend", "local"))
            item.add_marker(getattr(pytest.mark, backend))
            yield item


class RowMismatch(Exception):
    """A row whose runs were not as its matrix expects."""


class MatrixRow(pytest.Item):
    def __init__(self, *, row: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.row = row

    def runtest(self) -> None:
        from harness import ci

        result = ci.run_row(self.row, str(self.config.getoption("harness_store")))
        if result.status == "skip":
            pytest.skip(result.reason)
        if not result.ok:
            raise RowMismatch(ci.details(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RowMismatch):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"harness ci row {self.name}"
