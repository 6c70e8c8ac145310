"""Mutation testing (`harness ci --mutants`, `harness.mutants`): mutant
headers and what a bad one is told, the project's own mutants still apply to
the node as it is, the detection table and JUnit, and end to end a planted
bug caught while the unmutated code is not flagged."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness import matrix, mutants
from harness.cli import cli
from harness.mutants import BASELINE, Mutant, MutantError, MutantResult, MutantRun

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data"

HEADER = """Mutant: phantom
Class: a made-up value
Breaks: every get answers one value more, which nobody wrote,
  so every read is a phantom.
Shows as: phantom
Rows: quick

"""

FAST = """
[defaults]
nodes = 3
time_limit = 3
rate = 40
op_timeout = 2
recovery_timeout = 10
seeds = 1
system = { gossip_interval = 0.2, suspect_after = 1.0, dead_after = 2.0 }

[[row]]
name = "quick"
expect = "valid"
"""


def phantom_patch(tmp: Path) -> str:
    """A patch that makes every get answer a value nobody wrote, made
    against the node as it is."""
    work = tmp / "phantom-src"
    shutil.copytree(mutants.source() / "kvnode", work / "kvnode", ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=work, check=True)
    subprocess.run([*git, "add", "-A"], cwd=work, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=work, check=True)
    server = work / "kvnode" / "server.py"
    text = server.read_text()
    line = '"values": result.values, "context": result.context}'
    assert line in text, "the line the test mutant patches has moved: update phantom_patch"
    server.write_text(text.replace(line, '"values": [*result.values, b"phantom"], "context": result.context}'))
    return subprocess.run(["git", "diff"], cwd=work, check=True, capture_output=True, text=True).stdout


def test_a_header_is_read_with_its_continued_lines(tmp_path: Path) -> None:
    path = tmp_path / "phantom.patch"
    path.write_text(HEADER + "diff --git a/x b/x\n")
    m = mutants.parse(path)
    assert (m.name, m.kind, m.shows, m.rows) == ("phantom", "a made-up value", ("phantom",), ("quick",))
    assert m.breaks.endswith("which nobody wrote, so every read is a phantom.")


@pytest.mark.parametrize(("text", "message"), [
    ("Mutant: x\nRows: quick\n\ndiff --git a/x b/x\n", "lacks 'Class', 'Breaks', 'Shows As'"),
    ("Mutant: x\n", "no diff in it"),
])
def test_a_bad_header_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.patch"
    path.write_text(text)
    with pytest.raises(MutantError, match=message) as e:
        mutants.parse(path)
    assert str(path) in str(e.value)


def test_rows_and_names_are_checked_against_the_matrix(tmp_path: Path) -> None:
    (tmp_path / "matrix.toml").write_text(FAST)
    m = matrix.load(tmp_path / "matrix.toml")
    (tmp_path / "a.patch").write_text(HEADER.replace("Rows: quick", "Rows: quick, nowhere") + "diff --git\n")
    with pytest.raises(MutantError, match="row 'nowhere' is not in"):
        mutants.load(tmp_path, m)
    (tmp_path / "a.patch").write_text(HEADER + "diff --git\n")
    (tmp_path / "b.patch").write_text(HEADER + "diff --git\n")
    with pytest.raises(MutantError, match="mutant 'phantom' is also"):
        mutants.load(tmp_path, m)
    (tmp_path / "b.patch").unlink()
    with pytest.raises(MutantError, match="--mutant other: no such mutant"):
        mutants.load(tmp_path, m, ["other"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MutantError, match=r"no \*.patch files"):
        mutants.load(tmp_path / "empty", m)


def test_a_patch_that_does_not_apply_is_refused_with_its_file(tmp_path: Path) -> None:
    path = tmp_path / "stale.patch"
    path.write_text(HEADER + "diff --git a/kvnode/server.py b/kvnode/server.py\n--- a/kvnode/server.py\n"
                    "+++ b/kvnode/server.py\n@@ -1,1 +1,1 @@\n-no such line\n+other\n")
    with pytest.raises(MutantError, match=r"stale\.patch: does not apply"):
        mutants.make_copy(mutants.parse(path), tmp_path / "copy")


def test_the_projects_mutants_apply_to_the_node_as_it_is(tmp_path: Path) -> None:
    """Every `ci/mutants/*.patch` parses, names rows of `ci/mutants/matrix.toml`
    and applies: a change to kvnode that breaks one fails here, not in the
    middle of a detection run."""
    directory = ROOT / "ci" / "mutants"
    found = mutants.load(directory, matrix.load(directory / "matrix.toml"))
    assert len(found) >= 12
    assert len({m.kind for m in found}) == len(found)  # each its own class of bug
    for m in found:
        copy = mutants.make_copy(m, tmp_path / m.name)
        changed = [p for p in (copy / "kvnode").rglob("*.py")
                   if p.read_bytes() != (mutants.source() / p.relative_to(copy)).read_bytes()]
        assert changed, f"{m.name} changes nothing"


def result(name: str | None, statuses: list[str]) -> MutantResult:
    mutant = None if name is None else Mutant(name, Path(f"{name}.patch"), f"class {name}", "breaks it", (),
                                              ("quick",), "")
    return MutantResult(mutant, [MutantRun("quick", seed, s, seconds=10.0,
                                           anomalies=["siblings/lost-write"] if s == "caught" else [])
                                 for seed, s in enumerate(statuses)])


def test_the_table_counts_catches_and_the_time_to_the_first() -> None:
    results = [result(None, ["missed", "missed"]), result("a", ["missed", "caught", "caught"]),
               result("b", ["missed", "missed"])]
    text = mutants.table(results)
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert "flagged 0/2" in lines[BASELINE] and lines[BASELINE].rstrip().endswith("ok")
    assert "caught 2/3" in lines["a"] and "20 s" in lines["a"] and "siblings/lost-write" in lines["a"]
    assert "caught 0/2" in lines["b"] and lines["b"].rstrip().endswith("SURVIVED")
    assert "(seeds 2/3)" in text and "(seeds 0/2)" in text
    # A seed counts once, caught if any of the mutant's rows caught it.
    two_rows = result("c", ["missed", "caught", "missed"])
    two_rows.runs += [MutantRun("other", 0, "caught"), MutantRun("other", 1, "caught"), MutantRun("other", 2, "skip")]
    assert two_rows.seeds_caught() == (2, 3)
    assert [r.ok for r in results] == [True, True, False]
    assert not result(None, ["caught"]).ok  # a flagged baseline is a false alarm


def test_junit_has_a_case_per_mutant_valid_against_the_schema(tmp_path: Path) -> None:
    xmlschema = pytest.importorskip("xmlschema")
    out = tmp_path / "mutants.xml"
    out.write_text(mutants.junit([result(None, ["caught"]), result("a", ["caught"]), result("b", ["missed"])],
                                 tmp_path))
    xmlschema.XMLSchema(str(DATA / "junit.xsd")).validate(str(out))
    text = out.read_text()
    assert 'name="unmutated"' in text and 'type="false-alarm"' in text
    assert 'type="survived"' in text and 'failures="2"' in text


@pytest.mark.slow
def test_a_planted_bug_is_caught_and_the_unmutated_code_is_not(tmp_path: Path) -> None:
    directory = tmp_path / "mutants"
    directory.mkdir()
    (directory / "matrix.toml").write_text(FAST)
    (directory / "phantom.patch").write_text(HEADER + phantom_patch(tmp_path))
    junit = tmp_path / "out.xml"
    got = CliRunner().invoke(cli, ["ci", "--mutants", str(directory), "--store", str(tmp_path / "store"),
                                   "--junit", str(junit), "--jobs", "2"])
    assert got.exit_code == 0, got.output
    lines = {line.split()[0]: line for line in got.output.splitlines() if line.split()[:1] in
             (["phantom"], [BASELINE])}
    assert "caught 1/1" in lines["phantom"] and "phantom" in lines["phantom"].split("1/1")[1]
    assert "flagged 0/1" in lines[BASELINE]
    assert "1 of 1 mutants killed" in got.output
    runs = sorted({p.parent.parent.name for p in (tmp_path / "store").glob("*/2*/history.jsonl")})
    assert runs == ["mutant-phantom.quick", "mutant-unmutated.quick"]
    assert 'name="phantom"' in junit.read_text()


@pytest.mark.slow
def test_ctrl_c_interrupts_the_runs_going_on_and_leaves_nothing(tmp_path: Path) -> None:
    import os
    import signal
    import sys
    import time

    directory = tmp_path / "mutants"
    directory.mkdir()
    (directory / "matrix.toml").write_text(FAST.replace("time_limit = 3", "time_limit = 60"))
    (directory / "phantom.patch").write_text(HEADER + phantom_patch(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "harness", "ci", "--mutants", str(directory), "--store", "store",
                             "--jobs", "2"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list((tmp_path / "store").glob("*/2*/history.jsonl"))) < 2:
            time.sleep(0.2)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "interrupted after" in err
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert left == [], "processes of the interrupted runs are still there"
    assert not list(tmp_path.glob("harness-mutants-*"))  # the scratch copies are gone
