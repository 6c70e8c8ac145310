"""`harness check`: exit codes, output and options, with the checker and the
HTML report replaced by fakes (so these tests do not wait on
`checkers.linearizable`), plus one run of the real checker when it exists."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from checkers.history import Op
from checkers.result import Anomaly, Result
from harness.cli import cli

DATA = Path(__file__).parent.parent / "data" / "histories"


class FakeChecker:
    """Stands in for `checkers.linearizable.check`, recording its calls."""

    def __init__(self, result: Result | Exception) -> None:
        self.result = result
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self, history: Sequence[Op], model: Any, *, initial: Any = None,
        time_limit: float | None = None, memory_limit: int | None = None,
    ) -> Result:
        # The command line builds the model (a registered plug-in) with its
        # initial value, and passes the instance.
        self.calls.append(dict(history=list(history), model=model.name, instance=model,
                               initial=getattr(model, "initial", initial),
                               time_limit=time_limit, memory_limit=memory_limit))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def _install(monkeypatch: pytest.MonkeyPatch, result: Result | Exception) -> FakeChecker:
    from checkers import linearizable

    fake = FakeChecker(result)
    monkeypatch.setattr(linearizable, "check", fake)
    return fake


VALID = Result(checker="linearizable", valid=True,
               counts={"operations": 2, "partitions": 1, "steps": 7})
INVALID = Result(
    checker="linearizable", valid=False,
    anomalies=(Anomaly(type="nonlinearizable", ops=(2, 3),
                       explanation="read of 2 by process 1 at 0.000 s: the register can only hold 1 here",
                       details={"states": {1}}),),
    counts={"operations": 2, "partitions": 1, "steps": 5},
)
UNKNOWN = Result(checker="linearizable", valid="unknown", reason="time limit of 0.5 s reached")


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_valid_exits_0_with_table(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _install(monkeypatch, VALID)
    r = run("check", str(DATA / "register-valid.edn"))
    assert r.exit_code == 0, r.output
    assert "valid" in r.output and "steps" in r.output and "7" in r.output
    call = fake.calls[0]
    assert call["model"] == "register" and call["initial"] is None
    assert len(call["history"]) == 4


def test_invalid_exits_1_and_explains(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, INVALID)
    r = run("check", str(DATA / "register-invalid.edn"))
    assert r.exit_code == 1, r.output
    assert "INVALID" in r.output
    assert "the register can only hold 1 here" in r.output
    assert "#2 process 1 invoke read 2" in r.output


def test_unknown_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _install(monkeypatch, UNKNOWN)
    r = run("check", str(DATA / "register-valid.edn"), "--time-limit", "0.5",
            "--memory-limit", "64")
    assert r.exit_code == 2, r.output
    assert "time limit" in r.output
    assert fake.calls[0]["time_limit"] == 0.5
    assert fake.calls[0]["memory_limit"] == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("name", "model"),
    [("kv-c01.txt", "kv"), ("etcd-valid.log", "cas-register"), ("register.jsonl", "register")],
)
def test_default_models(monkeypatch: pytest.MonkeyPatch, name: str, model: str) -> None:
    fake = _install(monkeypatch, VALID)
    assert run("check", str(DATA / name)).exit_code == 0
    assert fake.calls[0]["model"] == model


def test_model_format_and_initial(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _install(monkeypatch, VALID)
    path = str(DATA / "kv-c01.txt")
    assert run("check", path, "--format", "edn", "--model", "multi-register",
               "--initial", "[1, 2]").exit_code == 0
    assert run("check", path, "--initial", "hello").exit_code == 0
    assert run("check", path, "--initial", "null").exit_code == 0
    assert [c["model"] for c in fake.calls] == ["multi-register", "kv", "kv"]
    assert fake.calls[0]["instance"].default == (1, 2)  # every register starts at [1, 2]
    assert [c["initial"] for c in fake.calls[1:]] == ["hello", None]


def test_run_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _install(monkeypatch, VALID)
    run_dir = tmp_path / "store" / "t" / "20240101T000000"
    run_dir.mkdir(parents=True)
    (run_dir / "history.jsonl").write_bytes((DATA / "register.jsonl").read_bytes())
    (tmp_path / "store" / "latest").symlink_to(run_dir)
    assert run("check", str(tmp_path / "store")).exit_code == 0
    assert len(fake.calls[0]["history"]) == 5


def test_json_output(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, INVALID)
    r = CliRunner().invoke(cli, ["check", str(DATA / "register-invalid.edn"), "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)  # the table goes to stderr
    assert doc["valid"] is False
    assert doc["anomalies"][0]["ops"] == [2, 3]
    assert doc["anomalies"][0]["details"] == {"states": [1]}
    assert "INVALID" in r.stderr


def test_html_invalid_uses_the_report(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install(monkeypatch, INVALID)
    seen: list[tuple[Result, int, str]] = []

    def render(result: Result, history: Sequence[Op], *, title: str) -> str:
        seen.append((result, len(history), title))
        return "<html>counterexample</html>"

    from harness.report import linearizability as report

    monkeypatch.setattr(report, "render_counterexample", render)
    out = tmp_path / "out.html"
    r = run("check", str(DATA / "register-invalid.edn"), "--html", str(out))
    assert r.exit_code == 1
    assert out.read_text() == "<html>counterexample</html>"
    assert seen[0][0] is INVALID and seen[0][1] == 4


def test_html_valid_writes_a_simple_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _install(monkeypatch, VALID)
    out = tmp_path / "out.html"
    assert run("check", str(DATA / "register-valid.edn"), "--html", str(out)).exit_code == 0
    assert "valid" in out.read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["check"],  # missing PATH
        ["check", "--model", "stack", str(DATA / "register-valid.edn")],
        ["check", "--format", "csv", str(DATA / "register-valid.edn")],
        ["check", "--time-limit", "-1", str(DATA / "register-valid.edn")],
        ["check", "--time-limit", "soon", str(DATA / "register-valid.edn")],
        ["check", "--bogus", str(DATA / "register-valid.edn")],
        ["nosuchcommand"],
        ["check", str(DATA / "no-such-file.edn")],  # FileNotFoundError
        ["check", str(DATA / "malformed.edn")],  # HistoryFormatError
        ["check", "--format", "porcupine-etcd", str(DATA / "etcd-malformed.log")],
    ],
)
def test_bad_arguments_exit_254(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    _install(monkeypatch, VALID)
    r = run(*args)
    assert r.exit_code == 254, r.output
    assert "Error" in r.output


def test_bad_history_message_names_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, VALID)
    r = run("check", str(DATA / "malformed.edn"))
    assert "malformed.edn:3:" in r.output


def test_inconsistent_history_exits_254(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from checkers.history import HistoryError

    _install(monkeypatch, HistoryError("op 3: process 0 invokes while op 1 is in flight"))
    r = run("check", str(DATA / "register-valid.edn"))
    assert r.exit_code == 254
    assert "in flight" in r.output


def test_checker_crash_exits_255(monkeypatch: pytest.MonkeyPatch) -> None:
    _install(monkeypatch, RuntimeError("boom"))
    r = run("check", str(DATA / "register-valid.edn"))
    assert r.exit_code == 255
    assert "Internal error: RuntimeError: boom" in r.output


def test_help_and_version_exit_0() -> None:
    assert run("check", "--help").exit_code == 0
    assert run("--version").exit_code == 0


def test_main_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import cli as cli_module

    monkeypatch.setattr(sys, "argv", ["harness", "check", "--model", "stack", "x"])
    with pytest.raises(SystemExit) as e:
        cli_module.main()
    assert e.value.code == 254


def _real_checker_available() -> bool:
    try:
        importlib.import_module("checkers.linearizable")
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _real_checker_available(), reason="checkers.linearizable not written yet")
@pytest.mark.parametrize(("name", "code"), [("register-valid.edn", 0), ("register-invalid.edn", 1)])
def test_real_checker(name: str, code: int) -> None:
    r = run("check", str(DATA / name), "--model", "register")
    assert r.exit_code == code, r.output
