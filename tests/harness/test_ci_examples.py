"""The CI examples a user copies (examples/github-actions.yml,
examples/gitlab-ci.yml): valid YAML, a `harness ci` command whose flags the
CLI accepts, the JUnit XML and the store kept as artifacts."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from harness.cli import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def commands(node: object) -> list[str]:
    """Every shell line of a CI file that runs `harness ci`."""
    if isinstance(node, dict):
        return [c for v in node.values() for c in commands(v)]
    if isinstance(node, list):
        return [c for v in node for c in commands(v)]
    if isinstance(node, str):
        return [line.strip() for line in node.splitlines() if line.strip().startswith("harness ci")]
    return []


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_the_example_runs_harness_ci_with_flags_it_has_and_keeps_the_results(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    found = commands(yaml.safe_load(text))
    assert found, f"{name} runs no harness ci"
    for line in found:
        args = shlex.split(line)[2:]
        ci = cli.commands["ci"]
        ctx = ci.make_context("ci", list(args))  # raises on an unknown flag or a bad value
        assert ctx.params["junit_out"] is not None and ctx.params["store"] is not None
        assert str(ctx.params["junit_out"]) in text.split(line, 1)[1], "the JUnit XML is published"
        assert f"{ctx.params['store']}/" in text, "the runs are kept as artifacts"
