"""report.html in headless Chromium, opened from disk as a user opens it:
the verdict, the timeline drawn, the plots shown, an anomaly's "show in the
timeline" link, zoom, event order, and the filters (`window.harnessTimeline`
reports what the canvas shows)."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.conftest import WAIT, Report

pytestmark = pytest.mark.browser

ANOMALY_LINKS = "li[id^='anomaly-linearizable-nonlinearizable'] a.show"


def open_report(driver: Any, report: Report) -> None:
    driver.get(report.page.as_uri())
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script("return !!window.harnessTimeline"))


def timeline(driver: Any, call: str) -> Any:
    return driver.execute_script(f"return window.harnessTimeline.{call};")


def operations(report: Report) -> int:
    """Operations the timeline shows: one per completion (every one completed here)."""
    completions = sum(op.type != "invoke" for op in report.history)
    assert completions * 2 == len(report.history)
    return completions


def test_report_shows_verdict_timeline_and_plots(browser: Any, report: Report) -> None:
    open_report(browser, report)
    assert browser.find_element(By.ID, "verdict").text == "INVALID"
    table = browser.find_element(By.ID, "verdict-table").text
    assert "linearizable" in table and "nonlinearizable: 1" in table
    canvas = browser.find_element(By.ID, "timeline")
    assert canvas.is_displayed() and canvas.size["width"] > 500 and canvas.size["height"] > 100
    assert timeline(browser, "drawn()") > 0
    assert timeline(browser, "count()") == operations(report)
    assert "drawn" in browser.find_element(By.ID, "timeline-range").text
    plots = browser.find_elements(By.CSS_SELECTOR, "#plots ~ .plot")
    assert plots and all(p.get_attribute("id").startswith("plot-") for p in plots)
    for svg in (p.find_element(By.TAG_NAME, "svg") for p in plots):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", svg)
        assert svg.is_displayed() and svg.size["width"] > 300 and svg.size["height"] > 100
    assert "partition" in browser.find_element(By.ID, "fault-table").text
    # self-contained: nothing fetched but the file itself, and no script error
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert [u for u in fetched if not u.startswith(("file:", "data:", "about:"))] == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_show_in_timeline_moves_to_the_anomaly(browser: Any, report: Report) -> None:
    open_report(browser, report)
    link = browser.find_element(By.CSS_SELECTOR, ANOMALY_LINKS)
    indexes = [int(i) for i in link.get_attribute("data-ops").split(",")]
    assert report.run.stale[0] in indexes  # the planted stale read is what the checker names
    times = [report.history[i].time / 1e6 for i in indexes]  # ms, as the timeline's axis
    browser.execute_script("window.harnessTimeline.zoom(0.02);")  # a narrow view, around the middle
    x0, x1 = timeline(browser, "view()")
    assert not all(x0 <= t <= x1 for t in times), "the anomaly was on screen before the click"
    browser.execute_script("window.scrollTo(0, 0);")
    link.click()
    x0, x1 = timeline(browser, "view()")
    assert all(x0 <= t <= x1 for t in times), (x0, x1, times)
    assert x1 - x0 < 0.5 * report.run.duration_s * 1000  # zoomed to it, not the whole run
    assert sorted(timeline(browser, "focused()")) == sorted({report.invocation_of(i) for i in indexes})
    detail = browser.find_element(By.ID, "timeline-detail").text
    assert "history.jsonl line" in detail and "read" in detail
    top, bottom, height = browser.execute_script(
        "const r = document.getElementById('timeline').getBoundingClientRect();"
        "return [r.top, r.bottom, window.innerHeight];")
    assert bottom > 0 and top < height, "the timeline was not scrolled into the window"
    WebDriverWait(browser, WAIT).until(lambda d: timeline(d, "drawn()") > 0)


def test_zoom_and_pan_buttons(browser: Any, report: Report) -> None:
    open_report(browser, report)
    a0, a1 = timeline(browser, "view()")
    browser.find_element(By.ID, "zoom-in").click()
    b0, b1 = timeline(browser, "view()")
    assert b1 - b0 == pytest.approx((a1 - a0) / 2, rel=1e-6)
    assert a0 < b0 < b1 < a1
    browser.find_element(By.ID, "pan-right").click()
    c0, c1 = timeline(browser, "view()")
    assert c0 > b0 and c1 - c0 == pytest.approx(b1 - b0, rel=1e-6)
    browser.find_element(By.ID, "zoom-reset").click()
    assert timeline(browser, "view()") == pytest.approx([a0, a1])
    WebDriverWait(browser, WAIT).until(lambda d: timeline(d, "drawn()") == operations(report))


def test_event_order_toggle(browser: Any, report: Report) -> None:
    open_report(browser, report)
    ordinal = browser.find_element(By.ID, "ordinal")
    assert not ordinal.is_selected()
    timed_end = timeline(browser, "view()")[1]
    ordinal.click()
    assert ordinal.is_selected()
    x0, x1 = timeline(browser, "view()")
    last = report.history[-1].index
    assert x0 < 0 < last < x1 < last * 1.05  # history indexes now, the whole run
    WebDriverWait(browser, WAIT).until(
        lambda d: d.find_element(By.ID, "timeline-range").text.startswith("#"))
    ordinal.click()
    assert timeline(browser, "view()")[1] == pytest.approx(timed_end)


def test_filters_narrow_the_operations(browser: Any, report: Report) -> None:
    open_report(browser, report)
    total = timeline(browser, "count()")
    Select(browser.find_element(By.ID, "f-outcome")).select_by_visible_text("info")
    infos = sum(op.type == "info" for op in report.history)  # nemesis infos too: its lane's ops
    assert 0 < timeline(browser, "count()") == infos < total
    assert browser.find_element(By.ID, "f-count").text.startswith(f"{infos:,} of {total:,}")
    Select(browser.find_element(By.ID, "f-outcome")).select_by_visible_text("all")
    assert timeline(browser, "count()") == total
    Select(browser.find_element(By.ID, "f-key")).select_by_visible_text("k0")
    on_k0 = sum(op.type == "invoke" and op.key == "k0" for op in report.history)
    assert 0 < timeline(browser, "count()") == on_k0 < total
