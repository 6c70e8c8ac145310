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
        time_limit: float | None = None, memory_limit: int | None = None, all_keys: bool = True,
    ) -> Result:
        # The command line builds the model (a registered plug-in) with its
        # initial value, and passes the instance.
        self.calls.append(dict(history=list(history), model=model.name, instance=model,
                               initial=getattr(model, "initial", initial),
                               time_limit=time_limit, memory_limit=memory_limit, all_keys=all_keys))
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
            "--memory-limit", "4096")
    assert r.exit_code == 2, r.output
    assert "time limit" in r.output
    # The limits are the whole command's: the checker gets what reading left of them.
    assert 0 < fake.calls[0]["time_limit"] <= 0.5
    assert 0 < fake.calls[0]["memory_limit"] < 4096 * 1024 * 1024
    assert fake.calls[0]["all_keys"] is False


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


# -- bad input, limits and many files (issue 16) -------------------------------

_PAIR = ('{"process":0,"type":"invoke","f":"write","value":1}\n'
         '{"process":0,"type":"ok","f":"write","value":1}\n')


@pytest.mark.parametrize(
    ("name", "content", "where", "what"),
    [
        ("h.jsonl", _PAIR.encode().replace(b'"ok"', b'"\xffok"'), "h.jsonl:2:", "not UTF-8"),
        ("h.edn", b"{:process 0 :type :invoke :f :read}\n{:process 0 :type :ok :f :read :value \xe9}\n",
         "h.edn:2:", "not UTF-8"),
        ("h.jsonl", b'{"process":0,"type":"ok","f":"read","value":1}\n', "h.jsonl:1:", "completes nothing"),
        ("h.jsonl", _PAIR.encode().replace(b'"ok"', b'"invoke"'), "h.jsonl:2:", "in flight"),
        ("h.jsonl", b"", "h.jsonl:", "no client operations"),
        ("h.json", json.dumps([json.loads(x) for x in _PAIR.splitlines()]).encode(), "h.json:1:",
         "a JSON array; expected JSON Lines"),
        ("h.jsonl", b'{"process":0,"type":"invoke","f":"read","time":"soon"}\n', "h.jsonl:1:", "time must be"),
    ],
)
def test_unreadable_histories_exit_254_with_file_and_line(tmp_path: Path, name: str, content: bytes, where: str,
                                                          what: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    r = run("check", str(path))
    assert r.exit_code == 254, r.output
    assert f"{tmp_path}/{where}" in r.output and what in r.output
    assert "Traceback" not in r.output and "Internal error" not in r.output


def test_garbage_read_as_porcupine_etcd_is_not_valid(tmp_path: Path) -> None:
    path = tmp_path / "garbage.log"
    path.write_bytes(b"\x89PNG\r\n\x1a\n not a log at all\n")
    r = run("check", "--format", "porcupine-etcd", str(path))
    assert r.exit_code == 254 and "no client operations" in r.output


def _jsonl(path: Path, events: list[tuple[Any, ...]]) -> Path:
    """(process, type, f, value, key) tuples as a history.jsonl."""
    path.write_text("".join(json.dumps({"index": i, "time": i, "process": p, "type": t, "f": f, "value": v,
                                        "key": k}) + "\n" for i, (p, t, f, v, k) in enumerate(events)))
    return path


def _invalid_then_hard(path: Path, n: int = 18) -> Path:
    """Key "a" cannot be linearized (found at once); key "b" is n concurrent
    writes of distinct values then a read of one never written and a write
    that repeats a value (so the search must visit ~2^n configurations)."""
    events: list[tuple[Any, ...]] = [(0, "invoke", "write", 1, "a"), (0, "ok", "write", 1, "a"),
                                     (1, "invoke", "read", None, "a"), (1, "ok", "read", 2, "a")]
    events += [(10 + p, "invoke", "write", p, "b") for p in range(n)]
    events += [(10 + p, "ok", "write", p, "b") for p in range(n)]
    events += [(99, "invoke", "read", None, "b"), (99, "ok", "read", 99, "b"),
               (99, "invoke", "write", 0, "b"), (99, "ok", "write", 0, "b")]
    return _jsonl(path, events)


@pytest.mark.skipif(not _real_checker_available(), reason="checkers.linearizable not written yet")
def test_an_invalid_key_ends_the_command_and_names_the_keys_not_checked(tmp_path: Path) -> None:
    path = _invalid_then_hard(tmp_path / "h.jsonl")
    r = run("check", str(path), "--model", "register", "--initial", "0")
    assert r.exit_code == 1, r.output
    assert "not checked" in r.output and "'b'" in r.output and "--all-keys" in r.output


@pytest.mark.skipif(not _real_checker_available(), reason="checkers.linearizable not written yet")
def test_all_keys_searches_the_others_within_the_time_limit(tmp_path: Path) -> None:
    path = _invalid_then_hard(tmp_path / "h.jsonl")
    r = run("check", str(path), "--model", "register", "--initial", "0", "--all-keys", "--time-limit", "0.3",
            "--json")
    assert r.exit_code == 1, r.output  # invalid beats the unknown of key "b"
    doc = json.loads(r.stdout)
    assert doc["details"]["partitions"]["'b'"]["valid"] == "unknown"
    assert "time limit" in doc["reason"]


def test_many_files_in_one_call_a_table_and_the_worst_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    fake = _install(monkeypatch, VALID)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"process":0,"type":"ok","f":"read","value":1}\n')
    files = [str(DATA / "register-valid.edn"), str(bad), str(DATA / "etcd-valid.log")]
    r = run("check", *files)
    assert r.exit_code == 254, r.output  # the worst: a file that cannot be read
    assert len(fake.calls) == 2  # the bad file did not stop the third
    assert [c["model"] for c in fake.calls] == ["register", "cas-register"]
    for f in files:
        assert f in r.output
    assert "ERROR" in r.output and "bad.jsonl:1: ok read by process 0 completes nothing" in r.output
    assert "3 histories: 2 valid, 1 error" in r.output

    fake = _install(monkeypatch, INVALID)
    r = run("check", str(DATA / "register-valid.edn"), str(DATA / "register-invalid.edn"), "--json")
    assert r.exit_code == 1
    docs = json.loads(r.stdout)
    assert [d["exit_code"] for d in docs] == [1, 1] and docs[0]["result"]["valid"] is False


def test_many_files_share_one_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _install(monkeypatch, VALID)
    clock = iter(range(0, 1000, 3))  # 3 s pass at every reading of the clock
    monkeypatch.setattr("harness.cli.time.monotonic", lambda: float(next(clock)))
    files = [str(DATA / "register-valid.edn")] * 3
    r = run("check", *files, "--time-limit", "10")
    assert r.exit_code == 2, r.output
    assert len(fake.calls) == 1 and fake.calls[0]["time_limit"] is not None and fake.calls[0]["time_limit"] <= 7
    assert "the time limit was reached before this history was checked" in r.output


def test_many_files_refuse_html(tmp_path: Path) -> None:
    r = run("check", str(DATA / "register-valid.edn"), str(DATA / "register-valid.edn"),
            "--html", str(tmp_path / "x.html"))
    assert r.exit_code == 254 and "one PATH only" in r.output


def test_memory_limit_is_the_whole_process(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _install(monkeypatch, VALID)
    monkeypatch.setattr("harness.cli._rss", lambda: 100 * 2**20)
    r = run("check", str(DATA / "register-valid.edn"), "--memory-limit", "60")
    assert r.exit_code == 2 and not fake.calls
    assert "memory limit was reached before this history was checked" in r.output
    run("check", str(DATA / "register-valid.edn"), "--memory-limit", "160")
    assert fake.calls[0]["memory_limit"] == 60 * 2**20


def test_many_files_look_their_model_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A look-up reads every installed distribution's entry points (~4 ms):
    # once per command, not once per file.
    from harness import registry

    _install(monkeypatch, VALID)
    real = registry.load
    asked: list[str] = []

    def load(kind: str, name: str) -> Any:
        asked.append(name)
        return real(kind, name)

    monkeypatch.setattr(registry, "load", load)
    assert run("check", *[str(DATA / "register-valid.edn")] * 5).exit_code == 0
    assert asked == ["register"]
