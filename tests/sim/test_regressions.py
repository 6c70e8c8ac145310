"""Shrunk counterexamples that must stay fixed: each file of
`tests/sim/regressions/` is a `harness sim --shrink` result (`shrunk.json`)
found against one of `ci/mutants/`, with the `harness sim` arguments it ran
under (`args`) and the mutant's name (`mutant`). Replayed with
`harness sim --replay SEED --schedule FILE`:

- against the node as it is, each must be valid (the bug stays fixed);
- (`slow`) against a scratch copy with its mutant applied, each must still
  fail the same way, with the same trace hash (the file still reaches the
  bug, and the replay is exact).

To add one: `harness sim ARGS --shrink` over a mutated copy (as
`python -m bench.sim` makes it), then copy the run directory's `shrunk.json`
here with "mutant" and "args" added."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import mutants

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((Path(__file__).parent / "regressions").glob("*.json"))


def replay(doc: dict[str, Any], file: Path, store: Path,
           code_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    path = str(ROOT) if code_dir is None else f"{code_dir}{os.pathsep}{ROOT}"
    # a --matrix file is named from the repository's root
    args = [str(ROOT / a) if i and doc["args"][i - 1] == "--matrix" else a for i, a in enumerate(doc["args"])]
    return subprocess.run(
        [sys.executable, "-m", "harness", "sim", "--replay", str(doc["seed"]), *args,
         "--schedule", str(file), "--store", str(store)],
        capture_output=True, text=True, timeout=300, cwd=store.parent,
        env={**os.environ, "PYTHONPATH": path},
    )


def test_there_are_regressions_and_each_names_a_mutant_of_the_project() -> None:
    names = {mutants.parse(p).name for p in (ROOT / "ci" / "mutants").glob("*.patch")}
    assert len(FILES) >= 3
    for file in FILES:
        doc = json.loads(file.read_text())
        assert doc["mutant"] in names, file
        assert doc["schedule"] and doc["anomalies"], file


@pytest.mark.parametrize("file", FILES, ids=[f.stem for f in FILES])
def test_a_shrunk_counterexample_is_valid_on_the_node_as_it_is(file: Path, tmp_path: Path) -> None:
    doc = json.loads(file.read_text())
    done = replay(doc, file, tmp_path / "store")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert f"seed {doc['seed']}: valid" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("file", FILES, ids=[f.stem for f in FILES])
def test_a_shrunk_counterexample_still_fails_with_its_mutant(file: Path, tmp_path: Path) -> None:
    doc = json.loads(file.read_text())
    mutant = mutants.parse(ROOT / "ci" / "mutants" / f"{doc['mutant']}.patch")
    code = mutants.make_copy(mutant, tmp_path / "code")
    done = replay(doc, file, tmp_path / "store", code)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"trace {doc['trace_hash']}" in done.stdout, "the replay is not the run that was shrunk"
    assert any(a.split(": ")[1] in done.stdout for a in doc["anomalies"]), done.stdout
