"""bench/mutants.py: on a one-row matrix with one planted bug, the table and
the per-row counts are printed, the JSON holds both results. Figures are
never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import mutants as bench
from tests.harness.test_mutants import FAST, HEADER, phantom_patch


@pytest.mark.slow
def test_the_detection_table_is_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "mutants"
    directory.mkdir()
    (directory / "matrix.toml").write_text(FAST)
    (directory / "phantom.patch").write_text(HEADER + phantom_patch(tmp_path))
    out_json = tmp_path / "out.json"
    assert bench.main(["--mutants", str(directory), "--seeds", "1", "--jobs", "2", "--store",
                       str(tmp_path / "store"), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "until first catch" in out and "caught 1/1" in out and "flagged 0/1" in out
    assert "1 of 1 mutants killed" in out and "target:" in out
    assert any(line.split()[:3] == ["phantom", "quick", "1/1"] for line in out.splitlines())
    data = json.loads(out_json.read_text())
    assert data["phantom"]["caught"] == 1 and data["unmutated"]["caught"] == 0
