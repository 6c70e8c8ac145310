"""Fixtures of the browser tests: one headless Chromium a session (Debian's
`chromium` through its `chromedriver`; the tests skip, saying why, when
selenium, either program, or a browser start is missing here: tried once),
a run directory in a temporary store holding a real stale read and its
`report.html`, `harness serve` over that store on 127.0.0.1, and a
screenshot of the browser after every test.

The run is `bench.report.make_run` in small (`SMALL`): the register workload
on 4 workers and 3 nodes, one partition, one read answered by the cut-off
node that returns an old value after a newer write was acknowledged;
`results.json` comes from the project's own checkers, as a real run's does.

Screenshots go to `$HARNESS_ARTIFACTS/browser/`, else
`test-artifacts/browser/` in the repository: for each test, `<test>.png`
(the window as the test left it) and, on a report, `<test>-timeline.png`
(the canvas); a test may save more with `save_screenshot`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.report import PlantedRun, RunShape, browser_problem, make_run, start_browser
from checkers.history import Op
from harness.history import read_jsonl
from harness.report.page import write_report
from harness.serve import StoreServer, serving

ROOT = Path(__file__).resolve().parents[2]
SMALL = RunShape(ops=300, workers=4, nodes=3, rate=50.0, partitions=1, stale=1, name="t")
SEED = 1
WAIT = 10.0  # seconds for a page's script to be ready


def artifacts_dir() -> Path:
    base = os.environ.get("HARNESS_ARTIFACTS")
    return (Path(base) if base else ROOT / "test-artifacts") / "browser"


@dataclass(frozen=True, kw_only=True)
class Report:
    """A stored run with its report.html, and its history as read back."""

    run: PlantedRun
    history: list[Op]

    @property
    def page(self) -> Path:
        return self.run.dir / "report.html"

    @property
    def store(self) -> Path:
        return self.run.dir.parent.parent

    def invocation_of(self, index: int) -> int:
        """The history index of the invocation of the operation holding op `index`."""
        op = self.history[index]
        if op.type == "invoke":
            return index
        return next(o.index for o in reversed(self.history[:index])
                    if o.process == op.process and o.type == "invoke")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    problem = browser_problem()
    if problem is not None:
        pytest.skip(problem)
    try:
        driver = start_browser()
    except Exception as e:  # selenium's WebDriverException, or the binary not starting
        first = (str(e).strip().splitlines() or [""])[0]
        pytest.skip(f"headless chromium did not start here: {type(e).__name__}: {first}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    run = make_run(tmp_path_factory.mktemp("store"), SMALL, SEED)
    assert len(run.stale) == SMALL.stale, "the run holds no stale read: the tests below need one"
    write_report(run.dir)
    return Report(run=run, history=read_jsonl(run.dir / "history.jsonl"))


@pytest.fixture()
def server(report: Report) -> Iterator[StoreServer]:
    with serving(report.store) as srv:
        yield srv


def save_screenshot(driver: Any, name: str) -> Path:
    """A PNG of the browser's window, `name`.png in the artifacts directory."""
    out = artifacts_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / (re.sub(r"[^\w.-]+", "_", name) + ".png")
    driver.save_screenshot(str(path))
    return path


@pytest.fixture(autouse=True)
def screenshot(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that used the browser, whatever its outcome: a PNG of the
    window as the test left it, and one of the timeline if the page has one."""
    yield
    if "browser" not in request.fixturenames:
        return
    try:
        driver = request.getfixturevalue("browser")
    except pytest.skip.Exception:
        return
    path = save_screenshot(driver, request.node.name)
    canvases = driver.find_elements("id", "timeline")
    if canvases:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvases[0])
        canvases[0].screenshot(str(path.with_name(path.stem + "-timeline.png")))
