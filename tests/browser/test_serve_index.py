"""`harness serve` in headless Chromium: the index lists the stored runs
newest first with their verdicts, and a run's report link opens its report
page (127.0.0.1 only)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from bench.report import make_run
from harness.serve import StoreServer
from tests.browser.conftest import SEED, SMALL, WAIT, Report, save_screenshot

pytestmark = pytest.mark.browser

LATER = "20240101T130000"  # after the report's run; linearizable, and no report.html written


def test_index_lists_runs_and_opens_a_report(browser: Any, report: Report, server: StoreServer) -> None:
    if not (report.store / SMALL.name / LATER).exists():
        make_run(report.store, replace(SMALL, stale=0), SEED, stamp=LATER)
    assert server.url.startswith("http://127.0.0.1:")
    browser.get(server.url)
    save_screenshot(browser, "serve-index")
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    stamps = [r.find_element(By.CSS_SELECTOR, "td:nth-child(2)").get_attribute("title") for r in rows]
    assert stamps == [LATER, report.run.dir.name]  # newest first
    later, row = rows
    assert later.find_element(By.CSS_SELECTOR, "td.verdict").text == "valid"
    assert "no report" in later.text
    assert row.find_element(By.CSS_SELECTOR, "td.verdict").text == "invalid"
    assert "nonlinearizable" in row.text and "partition" in row.text
    row.find_element(By.LINK_TEXT, "report").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script("return !!window.harnessTimeline"))
    assert browser.current_url == f"{server.url}{SMALL.name}/{report.run.dir.name}/report.html"
    assert browser.find_element(By.ID, "verdict").text == "INVALID"
    assert browser.execute_script("return window.harnessTimeline.drawn();") > 0
