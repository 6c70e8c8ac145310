"""`harness ci` end to end on the local backend: a valid row, a row that
must be found, a deliberately wrong expectation and a row the system
refuses; the exit status, the table, JUnit XML valid against the JUnit
schema, the runs kept in the store with their reports; Ctrl-C; and the
pytest plugin collecting a matrix as tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import cli

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"

FAST = """
[defaults]
nodes = 1
time_limit = 2
rate = 40
op_timeout = 2
recovery_timeout = 10
seeds = 1
system = { n = 1, w = 1, r = 1, gossip_interval = 0.2, suspect_after = 1.0, dead_after = 2.0 }
"""

MATRIX = FAST + """
[[row]]
name = "valid"
expect = "valid"

[[row]]
name = "found"
nodes = 3
time_limit = 8
nemesis = ["partition"]
nemesis_interval = 1
seeds = 3
check = ["linearizable"]
system = { n = 3, w = 1, r = 1, resolution = "lww", ae_interval = 2.0, handoff_interval = 0.3, request_timeout = 1.0 }
expect = { linearizable = { verdict = "invalid", anomalies = ["nonlinearizable"] } }

[[row]]
name = "wrong"
expect = "invalid"

[[row]]
name = "refused"
system = "etcd"
backend = "docker"
expect = "valid"
"""


def test_a_matrix_is_run_judged_and_reported(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(MATRIX)
    junit = tmp_path / "out.xml"
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, ["ci", "--matrix", str(tmp_path / "m.toml"), "--junit", str(junit),
                                      "--store", str(store)])
    assert result.exit_code == 1, result.output
    table = {line.split()[0]: line for line in result.output.splitlines() if line.split()[:1] and
             line.split()[0] in ("valid", "found", "wrong", "refused")}
    assert table["valid"].rstrip().endswith("ok") and "1/1 runs as expected" in table["valid"]
    assert table["found"].rstrip().endswith("ok") and "found on seed" in table["found"]
    assert "nonlinearizable" in table["found"]
    assert table["wrong"].rstrip().endswith("MISMATCH") and "not found in 1 run" in table["wrong"]
    assert table["refused"].rstrip().endswith("skipped") and "etcd cannot run here" in table["refused"]
    assert "2 as expected, 1 not, 1 skipped" in result.output

    import xmlschema

    xmlschema.XMLSchema(str(DATA / "junit.xsd")).validate(str(junit))
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["wrong"].find("failure")
    assert failure is not None and "expected invalid, got valid" in (failure.get("message") or "")
    assert "report.html" in (failure.text or "")
    skipped = cases["refused"].find("skipped")
    assert skipped is not None and "docker" in (skipped.get("message") or "")
    found_out = cases["found"].findtext("system-out") or ""
    assert "linearizable/nonlinearizable:" in found_out

    runs = sorted(p.parent for p in store.glob("*/*/test.json"))
    assert {p.parent.name for p in runs} == {"valid", "found", "wrong"}
    assert all((p / "report.html").is_file() for p in runs)


def test_all_as_expected_exits_0_also_two_rows_at_once_and_a_bad_matrix_254(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(FAST + '[[row]]\nname = "one"\nexpect = "valid"\n'
                                     '[[row]]\nname = "two"\nworkload = "cart"\nexpect = "valid"\n')
    ok = CliRunner().invoke(cli, ["ci", "--matrix", str(tmp_path / "m.toml"), "--store", str(tmp_path / "s"),
                                  "--jobs", "2"])
    assert ok.exit_code == 0, ok.output
    assert "2 as expected, 0 not, 0 skipped" in ok.output
    assert {p.parent.parent.name for p in (tmp_path / "s").glob("*/*/report.html")} == {"one", "two"}
    (tmp_path / "bad.toml").write_text('[[row]]\nname = "x"\nexpect = "valid"\nnodez = 1\n')
    bad = CliRunner().invoke(cli, ["ci", "--matrix", str(tmp_path / "bad.toml")])
    assert bad.exit_code == 254 and "bad.toml: row x: unknown key 'nodez'" in bad.output


def test_ctrl_c_stops_cleanly_and_prints_the_table_so_far(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text(FAST + '[[row]]\nname = "first"\nexpect = "valid"\n'
                                     '[[row]]\nname = "second"\ntime_limit = 60\nexpect = "valid"\n')
    proc = subprocess.Popen([sys.executable, "-m", "harness", "ci", "--matrix", "m.toml", "--store", "store"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((tmp_path / "store").glob("second/*/history.jsonl")):
            time.sleep(0.2)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "first" in out and "ok" in out.split("first", 1)[1].splitlines()[0]
    assert "interrupted after" in err


def test_the_pytest_plugin_makes_each_row_a_test(pytester: pytest.Pytester, tmp_path: Path) -> None:
    matrix = tmp_path / "m.toml"
    matrix.write_text(FAST + '[[row]]\nname = "holds"\nexpect = "valid"\n'
                      '[[row]]\nname = "refused"\nsystem = "etcd"\nbackend = "docker"\nexpect = "valid"\n')
    result = pytester.runpytest_subprocess("--harness-matrix", str(matrix), "--harness-store",
                                           str(tmp_path / "store"), "-rs", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*::holds PASSED*", "*SKIPPED*etcd cannot run here*"])
    listed = pytester.runpytest_subprocess("--harness-matrix", str(matrix), "--collect-only", "-q",
                                           "-m", "not docker")
    listed.stdout.fnmatch_lines(["*holds*"])
    assert "refused" not in listed.stdout.str()
