"""`harness.history` (the JSON Lines writer and reader, `read_history`) and
`harness.foreign` (the readers of Jepsen EDN and Porcupine etcd/kv histories), on hand-written fixtures in
`tests/data/histories/`."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import edn_format
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness.foreign as hh
from checkers.history import Op, pair
from harness.foreign import fill_invocations, read_edn, read_porcupine_etcd, read_porcupine_kv
from harness.history import (
    HistoryFormatError,
    HistoryWriter,
    detect_format,
    read_history,
    read_jsonl,
    resolve_history_path,
)

DATA = Path(__file__).parent.parent / "data" / "histories"


def _dense(ops: list[Op]) -> None:
    assert [o.index for o in ops] == list(range(len(ops)))


# -- JSON Lines -------------------------------------------------------------


def test_writer_round_trip(tmp_path: Path) -> None:
    ops = [
        Op(index=0, time=0, process=0, type="invoke", f="write", key="k", value=b"\x00\xff", node="n1"),
        Op(index=1, time=5, process="nemesis", type="info", f="start-partition",
           value={"n1": ["n2", "n3"]}),
        Op(index=2, time=9, process=0, type="ok", f="write", key="k", value=b"\x00\xff", node="n1"),
        Op(index=3, time=10, process=1, type="invoke", f="write", key="k", value=[1, "a", None],
           extra={"obs": ["x", "y"]}),
        Op(index=4, time=20, process=1, type="info", f="write", key="k", value=[1, "a", None],
           error="timeout", extra={"obs": ["x", "y"]}),
        Op(index=5, time=21, process=2, type="invoke", f="read", value=None),
        Op(index=6, time=22, process=2, type="ok", f="read", value={"$bytes": 3, "é": True}),
    ]
    path = tmp_path / "history.jsonl"
    with HistoryWriter(path) as w:
        for op in ops[:3]:
            w.write(op)
        # flushed per line: readable while the writer is still open
        assert read_jsonl(path) == ops[:3]
        for op in ops[3:]:
            w.write(op)
    assert read_jsonl(path) == ops
    first = json.loads(path.read_text().splitlines()[0])
    assert first["value"] == {"$bytes": "00ff"}
    assert "error" not in first and first["key"] == "k"
    # appending continues the same file
    with HistoryWriter(path) as w:
        w.write(Op(index=7, time=30, process=2, type="invoke", f="read"))
    assert len(read_jsonl(path)) == 8


def test_writer_sets_become_lists_and_bad_values_fail(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        w.write(Op(index=0, time=0, process=0, type="ok", f="read", value=frozenset({3, 1, 2})))
        with pytest.raises(TypeError):
            w.write(Op(index=1, time=0, process=0, type="ok", f="read", value=object()))
        with pytest.raises(ValueError, match="shadows"):
            w.write(Op(index=1, time=0, process=0, type="ok", f="read", extra={"value": 1}))
    assert [o.value for o in read_jsonl(path)] == [[1, 2, 3]]


def test_writer_threads(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        def work(p: int) -> None:
            for i in range(200):
                w.write(Op(index=0, time=i, process=p, type="invoke", f="write", value="x" * 50))
        threads = [threading.Thread(target=work, args=(p,)) for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ops = read_jsonl(path)
    assert len(ops) == 800
    _dense(ops)


def test_jsonl_fixture_keeps_nemesis_and_fields() -> None:
    ops = read_jsonl(DATA / "register.jsonl")
    _dense(ops)
    assert ops[1].process == "nemesis" and ops[1].value == {"n1": ["n2", "n3"]}
    assert ops[4].error == "timeout" and ops[4].node == "n2"
    assert ops[3].value is None  # our own format is not rewritten


def test_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"process":0,"type":"invoke","f":"read"}\n\n{"process":0,"type":"ok",\n')
    with pytest.raises(HistoryFormatError, match=r"h\.jsonl:3: not JSON"):
        read_jsonl(path)
    path.write_text('{"process":0,"type":"begin","f":"read"}\n')
    with pytest.raises(HistoryFormatError, match=r"h\.jsonl:1: type must be"):
        read_jsonl(path)
    path.write_text('{"type":"invoke","f":"read"}\n')
    with pytest.raises(HistoryFormatError, match=r":1: op has no process"):
        read_jsonl(path)


# -- EDN --------------------------------------------------------------------


def test_edn_vector_with_comments_multiline_maps_and_nemesis() -> None:
    ops = read_edn(DATA / "register-valid.edn")
    _dense(ops)
    assert [(o.process, o.type, o.f) for o in ops] == [
        (0, "invoke", "write"), (0, "ok", "write"), (1, "invoke", "read"), (1, "ok", "read")]
    assert [o.time for o in ops] == [1000, 2000, 3000, 4000]
    assert ops[2].extra["source_index"] == 3
    # the ok read's value fills in its invocation's; the completion keeps it
    assert ops[2].value == 1 and ops[3].value == 1
    assert len(pair(ops)) == 2


def test_edn_one_map_per_line_without_time() -> None:
    ops = read_edn(DATA / "register-invalid.edn")
    _dense(ops)
    assert [o.time for o in ops] == [0, 1, 2, 3]
    assert ops[2].value == 2 and ops[3].value == 2


def test_edn_multi_register_values() -> None:
    ops = read_edn(DATA / "multi-register.edn")
    assert ops[0].value == [["write", "x", 1], ["write", "y", 2]]
    assert ops[2].value == [["read", "x", 1], ["read", "y", 2]]  # filled from the ok
    assert ops[3].value == [["read", "x", 1], ["read", "y", 2]]


def test_edn_mutex_records_without_values() -> None:
    ops = read_edn(DATA / "mutex.edn")
    _dense(ops)
    assert [o.f for o in ops] == ["acquire", "acquire", "acquire", "release", "release", "acquire"]
    assert all(o.value is None for o in ops)
    assert ops[5].type == "fail" and ops[5].error == "timeout"


def test_edn_odds_and_ends(tmp_path: Path) -> None:
    path = tmp_path / "h.edn"
    path.write_text(
        '{:process 0 :type :invoke :f :add :value 1 :node "n1" :extra-field [:a "b;c]"]}\n'
        "{:process 0 :type :ok :f :add :value 1 :error nil}\n"
        "{:process 1 :type :invoke :f :read :value nil}\n"
        "{:process 1 :type :ok :f :read :value #{3 1 2}}\n"
        "{:process 2 :type :invoke :f :write :value 5}\n"
        "{:process 2 :type :ok :f :write :value nil}\n"
    )
    ops = read_edn(path)
    assert ops[0].node == "n1" and ops[0].extra == {"extra-field": ["a", "b;c]"]}
    assert ops[3].value == [1, 2, 3]
    assert ops[4].value == 5  # a nil completion does not erase the argument


@pytest.mark.parametrize(
    ("text", "line", "match"),
    [
        ("{:process 0 :type :invoke :f :read}\n\n{:process 0 :type :ok\n :f :read", 3, "unterminated"),
        ("{:process 0 :type :invoke :f :read}\n[1 2]\n", 2, "expected an op map"),
        ("; c\n{:process 0 :type :invoke :f :read}\n{:process 0 :type :nope :f :read}\n", 3, "type"),
        ("{:process 0 :type :invoke :f :read}\n}\n", 2, "unmatched"),
        ("{:process 0 :type :invoke :f :read :time :soon}\n", 1, "time"),
    ],
)
def test_edn_errors_name_file_and_line(tmp_path: Path, text: str, line: int, match: str) -> None:
    path = tmp_path / "bad.edn"
    path.write_text(text)
    with pytest.raises(HistoryFormatError, match=rf"bad\.edn:{line}: .*{match}"):
        read_edn(path)


def test_edn_malformed_fixture() -> None:
    with pytest.raises(HistoryFormatError, match=r"malformed\.edn:3: cannot parse EDN") as e:
        read_edn(DATA / "malformed.edn")
    assert e.value.line == 3 and isinstance(e.value, ValueError)


def test_edn_many_ops_batched(tmp_path: Path) -> None:
    path = tmp_path / "h.edn"
    lines = []
    for i in range(600):
        lines.append(f"{{:process {i % 5} :type :invoke :f :write :value {i}}}")
        lines.append(f"{{:process {i % 5} :type :ok :f :write :value {i}}}")
    lines[1001] = "{:process 0 :type :ok :f :write :value 1 2}"  # 1-based line 1002
    path.write_text("\n".join(lines))
    with pytest.raises(HistoryFormatError, match=r"h\.edn:1002:"):
        read_edn(path)
    lines[1001] = "{:process 0 :type :ok :f :write :value 1}"
    path.write_text("\n".join(lines))
    ops = read_edn(path)
    assert len(ops) == 1200
    _dense(ops)


# -- Porcupine --------------------------------------------------------------


def test_porcupine_etcd() -> None:
    ops = read_porcupine_etcd(DATA / "etcd-valid.log")
    _dense(ops)
    got = [(o.process, o.type, o.f, o.value, o.error) for o in ops]
    assert got == [
        (0, "invoke", "read", None, None),  # read of nil: the key is absent
        (1, "invoke", "write", 3, None),
        (0, "ok", "read", None, None),
        (1, "ok", "write", 3, None),
        (2, "invoke", "cas", [3, 0], None),
        (2, "ok", "cas", [3, 0], None),
        (3, "invoke", "cas", [1, 4], None),
        (3, "fail", "cas", [1, 4], None),  # the compare did not match: definite
        (4, "invoke", "write", 2, None),
        (4, "info", "write", None, "timed-out"),
        (0, "invoke", "read", None, None),
        (0, "info", "read", None, "timed-out"),  # :fail :read :timed-out is unknown
        (1, "invoke", "read", 0, None),  # filled in from the ok
        (1, "ok", "read", 0, None),
    ]
    assert [o.time for o in ops] == list(range(len(ops)))


def test_porcupine_etcd_bad_op_line() -> None:
    with pytest.raises(HistoryFormatError, match=r"etcd-malformed\.log:3: cannot parse value"):
        read_porcupine_etcd(DATA / "etcd-malformed.log")


def test_porcupine_etcd_garbled_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("INFO  jepsen.util - 0 :invoke :read nil\nINFO  jepsen.util - 0 :ok\n"
                    "INFO  jepsen.util - Something else entirely\n")
    with pytest.raises(HistoryFormatError, match=r"x\.log:2: cannot parse op line"):
        read_porcupine_etcd(path)


def test_porcupine_kv() -> None:
    ops = read_porcupine_kv(DATA / "kv-c01.txt")
    _dense(ops)
    assert [(o.process, o.type, o.f, o.key) for o in ops][:2] == [
        (9, "invoke", "append", "0"), (4, "invoke", "get", "0")]
    assert ops[1].value == "x 9 0 y" and ops[3].value == "x 9 0 y"
    assert ops[4].key == "5" and ops[4].value == "x 2 0 y"


def test_fill_invocations_leaves_unpaired_alone() -> None:
    ops = [Op(index=0, time=0, process=0, type="ok", f="read", value=1)]
    assert fill_invocations(ops) == ops


# -- detection and run directories -------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("register.jsonl", "jsonl"),
        ("register-valid.edn", "edn"),
        ("register-invalid.edn", "edn"),
        ("multi-register.edn", "edn"),
        ("mutex.edn", "edn"),
        ("etcd-valid.log", "porcupine-etcd"),
        ("kv-c01.txt", "porcupine-kv"),
    ],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(DATA / name) == fmt


def test_detect_by_content_not_extension(tmp_path: Path) -> None:
    for src, fmt in [("register.jsonl", "jsonl"), ("register-valid.edn", "edn"),
                     ("etcd-valid.log", "porcupine-etcd"), ("kv-c01.txt", "porcupine-kv")]:
        p = tmp_path / f"{fmt}.dat"
        p.write_bytes((DATA / src).read_bytes())
        assert detect_format(p) == fmt
        assert len(read_history(p)) > 0
    unknown = tmp_path / "x.dat"
    unknown.write_text("hello\n")
    with pytest.raises(HistoryFormatError, match="format"):
        detect_format(unknown)


def test_read_history_explicit_format() -> None:
    assert len(read_history(DATA / "kv-c01.txt", "edn")) == 6
    with pytest.raises(ValueError, match="unknown history format"):
        read_history(DATA / "kv-c01.txt", "csv")


def test_run_directories(tmp_path: Path) -> None:
    store = tmp_path / "store"
    old = store / "register" / "20240101T000000"
    new = store / "register" / "20240102T000000"
    for d in (old, new):
        d.mkdir(parents=True)
    (old / "history.jsonl").write_text("")
    (new / "history.jsonl").write_bytes((DATA / "register.jsonl").read_bytes())
    assert resolve_history_path(new) == new / "history.jsonl"
    assert resolve_history_path(store / "register") == new / "history.jsonl"  # newest run
    os.symlink(old, store / "latest")
    assert resolve_history_path(store) == store / "latest" / "history.jsonl"
    (store / "latest").unlink()
    (store / "latest").write_text("register/20240102T000000\n")
    assert len(read_history(store)) == 5
    with pytest.raises(FileNotFoundError):
        resolve_history_path(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        resolve_history_path(old.parent.parent.parent)  # tmp_path: no history anywhere


# -- the EDN fast path against edn_format ----------------------------------

_KW_CHARS = "abcxyz019_-.*+!?$%&=<>:#@é"
_keywords = st.text(_KW_CHARS, min_size=1, max_size=6).map(lambda s: ":" + s) | st.builds(
    lambda a, b: f":{a}/{b}", st.text("abc.-", min_size=1, max_size=3), st.text("xyz", min_size=1, max_size=3))
_strings = st.text(st.sampled_from(list('ab 9;,[]{}()#:"\\\n\té')), max_size=8).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"') | st.text("ab 9;]", max_size=5).map(
    lambda s: f'"{s}"')
_numbers = st.sampled_from(["0", "-0", "7", "-12", "123456789012345678901234", "1.5", "-0.25", "2.0", "007",
                            "1e5", "1.5M", "3N", "+4", "0x1F", "1/2", "1."])
_atoms = _keywords | _strings | _numbers | st.sampled_from(["nil", "true", "false", "foo", "\\a", "nilly"])
_SEPS = st.sampled_from([" ", ", ", "\n", "  ", ",", "\t"])


@st.composite
def _edn_texts(draw: Any, depth: int = 0) -> str:
    """EDN-ish text: mostly valid forms of the kinds histories hold, with
    odd tokens mixed in (some of which edn_format rejects)."""
    kind = draw(st.sampled_from(["atom", "atom", "map", "vec", "list", "set"] if depth < 3 else ["atom"]))
    if kind == "atom":
        return draw(_atoms)
    n = draw(st.integers(0, 4))
    if kind == "map":
        parts = []
        for _ in range(n):
            parts += [draw(_keywords | _numbers | _strings), draw(_edn_texts(depth + 1))]
    else:
        parts = [draw(_edn_texts(depth + 1)) for _ in range(n)]
    body = "".join(p + draw(_SEPS) for p in parts).rstrip()
    if draw(st.integers(0, 9)) == 0:
        body += draw(st.sampled_from([" ;c\n", " ]", ""]))
    return {"map": "{%s}", "vec": "[%s]", "list": "(%s)", "set": "#{%s}"}[kind] % body


def _edn_format_value(text: str) -> Any:
    try:
        return ("ok", hh._plain(edn_format.loads(text)))
    except Exception:
        return ("error",)


@settings(max_examples=600, deadline=None)
@given(text=_edn_texts())
def test_simple_edn_reader_agrees_with_edn_format(text: str) -> None:
    try:
        fast = ("ok", hh._simple_edn(text))
    except hh._NotSimple:
        return  # edn_format reads it
    assert fast == _edn_format_value(text), text
    assert repr(fast) == repr(_edn_format_value(text)), text  # 1 vs 1.0 vs True


@st.composite
def _op_lines(draw: Any) -> str:
    lines = []
    for i in range(draw(st.integers(1, 12))):
        process = draw(st.sampled_from(["0", "1", "4", ":nemesis", "-3"]))
        typ = draw(st.sampled_from([":invoke", ":ok", ":fail", ":info", ":bogus"]))
        f = draw(st.sampled_from([":read", ":write", ":cas", ":append", ":txn"]))
        value = draw(st.sampled_from(["nil", "3", "[3 0]", "[[:read :x nil] [:write :y 2]]", '"x 1 y"', "#{1 3}",
                                      ":timed-out", "-2.5", "{:a [1 2]}"]) if draw(st.integers(0, 3))
                     else _edn_texts(1))
        fields = [f":process {process}", f":type {typ}", f":f {f}", f":value {value}"]
        if draw(st.booleans()):
            key = draw(st.sampled_from(['"0"', '"k 1"']) | _strings)
            fields.append(f":key {key}")
        if draw(st.booleans()):
            fields.append(f":time {i * 10}")
        if draw(st.booleans()):
            fields.append(f":index {i}")
        fields = draw(st.permutations(fields))
        sep = draw(_SEPS) if draw(st.integers(0, 7)) == 0 else draw(st.sampled_from([" ", ", ", ",", "\t"]))
        line = "{" + sep.join(fields) + "}"
        if draw(st.integers(0, 6)) == 0:
            line = "#jepsen.history.Op" + line
        lines.append(line)
        if draw(st.integers(0, 20)) == 0:
            lines.append(draw(st.sampled_from(["", "; a comment", "   ", "{:process 0", "[1 2]", "{:a 1} {:b 2}"])))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


def _read_slow(path: Path) -> Any:
    """read_edn with the fast paths off: the edn_format reading."""
    def never(text: str) -> Any:
        raise hh._NotSimple

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hh, "_one_map_per_line", lambda text: None)
        mp.setattr(hh, "_simple_edn", never)
        return _outcome(path)


def _outcome(path: Path) -> Any:
    try:
        return ("ok", read_edn(path))
    except HistoryFormatError as e:
        return ("error", str(e))


@settings(max_examples=150, deadline=None)
@given(text=_op_lines())
def test_edn_fast_paths_read_files_as_edn_format_does(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("edn") / "h.edn"
    path.write_text(text, encoding="utf-8")
    assert _outcome(path) == _read_slow(path), text


def test_edn_fast_path_is_taken_for_one_map_per_line(tmp_path: Path) -> None:
    path = tmp_path / "kv.txt"
    path.write_text("".join(f'{{:process {i % 7}, :type :invoke, :f :append, :key "{i % 3}", :value "x {i} y"}}\n'
                            for i in range(50)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hh.edn_format, "loads_all", None)  # would raise if reached
        mp.setattr(hh.edn_format, "loads", None)
        ops = read_porcupine_kv(path)
    assert len(ops) == 50 and ops[7].key == "1" and ops[7].value == "x 7 y" and ops[7].process == 0
    assert ops == _read_slow(path)[1]


# -- what is not a history (issue 16) -----------------------------------------

_PAIR = ('{"index":0,"time":0,"process":0,"type":"invoke","f":"write","value":1}\n'
         '{"index":1,"time":1,"process":0,"type":"ok","f":"write","value":1}\n')


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    for name, text in [("h.jsonl", _PAIR.encode()), ("h.edn", (DATA / "register-valid.edn").read_bytes())]:
        path = tmp_path / name
        lines = text.split(b"\n")
        lines[1] = lines[1][:5] + b"\xff\xfe" + lines[1][5:]
        path.write_bytes(b"\n".join(lines))
        with pytest.raises(HistoryFormatError, match=rf"{name}:2: not UTF-8: byte 0xff at column 6") as e:
            read_history(path)
        assert e.value.line == 2


def test_a_json_array_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps([json.loads(line) for line in _PAIR.splitlines()], indent=1))
    assert detect_format(path) == "jsonl"  # not read as EDN
    for fmt in ("auto", "jsonl"):
        with pytest.raises(HistoryFormatError, match=r"h\.json:1: a JSON array; expected JSON Lines.*jq"):
            read_history(path, fmt)
    path.write_text(json.dumps([json.loads(line) for line in _PAIR.splitlines()]))  # on one line
    with pytest.raises(HistoryFormatError, match=r"h\.json:1: a JSON array"):
        read_history(path)


@pytest.mark.parametrize(
    ("lines", "line", "match"),
    [
        (['{"process":0,"type":"ok","f":"read","value":1}'], 1,
         r"ok read by process 0 completes nothing \(expected an invoke by process 0 before it\)"),
        (['{"process":0,"type":"invoke","f":"read"}', '{"process":1,"type":"invoke","f":"read"}',
          '{"process":0,"type":"invoke","f":"write","value":2}'], 3,
         r"process 0 invokes write while its operation invoked on line 1 is in flight"),
        (['{"process":0,"type":"invoke","f":"read"}', '{"process":0,"type":"ok","f":"read","value":1}',
          '{"process":0,"type":"fail","f":"read"}'], 3, r"fail read by process 0 completes nothing"),
        (['{"process":true,"type":"invoke","f":"read"}'], 1, r"process must be an integer or a name, not True"),
        (['{"process":0,"type":"invoke","f":["read"]}'], 1, r"f must be a name"),
        (['{"process":0,"type":"invoke","f":"read","time":1e999}'], 1, r"time must be a number"),
        (['{"process":0,"type":"invoke","f":"read"}', '[1, 2]'], 2, r"expected a JSON object \(an op\), not an array"),
        (['{"process":0,"type":"invoke","f":"read"', ''], 1, r"not JSON: .* \(expected one JSON object per line\)"),
    ],
)
def test_what_no_checker_can_judge_names_file_and_line(tmp_path: Path, lines: list[str], line: int,
                                                       match: str) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryFormatError, match=rf"h\.jsonl:{line}: {match}"):
        read_history(path)


def test_unpaired_ops_in_edn_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "h.edn"
    path.write_text("{:process 0 :type :invoke :f :read}\n; note\n{:process 1 :type :ok :f :read :value 1}\n")
    with pytest.raises(HistoryFormatError, match=r"h\.edn:3: ok read by process 1 completes nothing"):
        read_history(path)


def test_a_file_with_no_client_operations_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(HistoryFormatError, match=r"empty\.jsonl: no client operations"):
        read_history(empty)
    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(b"\x00\x01 hello\nworld\xff\n")
    with pytest.raises(HistoryFormatError, match=r"garbage\.txt: no client operations"):
        read_history(garbage, "porcupine-etcd")
    nemesis_only = tmp_path / "n.jsonl"
    nemesis_only.write_text('{"process":"nemesis","type":"info","f":"start-partition"}\n')
    with pytest.raises(HistoryFormatError, match="no client operations"):
        read_history(nemesis_only)


def test_etcd_values_are_read_without_building_an_edn_parser_per_line(tmp_path: Path) -> None:
    # edn_format builds a parser on every loads() (0.6-0.9 ms a line): the
    # values of op lines go through the simple reader, edn_format only for
    # what it cannot read.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hh.edn_format, "loads", None)  # would raise if reached
        ops = read_porcupine_etcd(DATA / "etcd-valid.log")
    assert ops == read_porcupine_etcd(DATA / "etcd-valid.log")
    assert len(ops) == 14


# -- fuzzing the readers: a history, or the clean error with a line -----------

# Whole-file verdicts, which have no line to name.
_WHOLE_FILE = ("no client operations", "cannot tell the history format")


def _read_or_clean_error(path: Path, fmt: str) -> None:
    try:
        ops = read_history(path, fmt)
    except HistoryFormatError as e:
        assert e.line is not None or any(w in str(e) for w in _WHOLE_FILE), str(e)
        assert str(e).startswith(str(path)), str(e)
    else:
        assert ops and [o.index for o in ops] == list(range(len(ops)))
        pair(ops)  # what read_history lets through pairs


_SAMPLES = [DATA / n for n in ("register.jsonl", "register-valid.edn", "multi-register.edn", "etcd-valid.log",
                               "kv-c01.txt", "mutex.edn")]
_FORMATS = ["auto", "jsonl", "edn", "porcupine-etcd", "porcupine-kv"]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), fmt=st.sampled_from(_FORMATS))
def test_fuzz_random_bytes(tmp_path_factory: pytest.TempPathFactory, data: bytes, fmt: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "h.dat"
    path.write_bytes(data)
    _read_or_clean_error(path, fmt)


@settings(max_examples=300, deadline=None)
@given(sample=st.sampled_from(_SAMPLES), cut=st.floats(0, 1), fmt=st.sampled_from(_FORMATS),
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-8-sig", "cp1252"]),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3))
def test_fuzz_truncated_reencoded_and_flipped_histories(
    tmp_path_factory: pytest.TempPathFactory, sample: Path, cut: float, fmt: str, encoding: str,
    flips: list[tuple[float, int]],
) -> None:
    text = sample.read_text(encoding="utf-8") + '{"process":0,"type":"ok","f":"read","value":"é"}\n'
    data = bytearray(text.encode(encoding, errors="replace")[: int(len(text) * cut) + 1])
    for where, byte in flips:
        data[min(int(where * len(data)), len(data) - 1)] = byte
    path = tmp_path_factory.mktemp("fuzz") / sample.name
    path.write_bytes(bytes(data))
    _read_or_clean_error(path, fmt)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
_op_objects = st.fixed_dictionaries(
    {"process": st.sampled_from([0, 1, "nemesis"]) | _json_values,
     "type": st.sampled_from(["invoke", "ok", "fail", "info"]) | _json_values,
     "f": st.sampled_from(["read", "write"]) | _json_values},
    optional={"value": _json_values, "time": _json_values, "key": _json_values, "index": _json_values})


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op_objects, max_size=8), layout=st.sampled_from(["lines", "array", "array-indented"]),
       fmt=st.sampled_from(["auto", "jsonl", "edn"]))
def test_fuzz_json_ops_and_arrays(tmp_path_factory: pytest.TempPathFactory, ops: list[dict[str, Any]],
                                  layout: str, fmt: str) -> None:
    if layout == "lines":
        text = "".join(json.dumps(o) + "\n" for o in ops)
    else:
        text = json.dumps(ops, indent=1 if layout == "array-indented" else None)
    path = tmp_path_factory.mktemp("fuzz") / "h.json"
    path.write_text(text, encoding="utf-8")
    _read_or_clean_error(path, fmt)


@settings(max_examples=400, deadline=None)
@given(text=_op_lines() | _edn_texts())
def test_flat_map_reader_agrees_with_the_simple_reader(text: str) -> None:
    for line in text.split("\n"):
        t = line.strip(" \t\r,")
        if not t.startswith("{"):
            continue
        flat = hh._flat_map(t)
        if flat is None:
            continue  # the simple reader reads it
        assert repr(("ok", flat)) == repr(_edn_format_value(t)), t  # 1 vs 1.0 vs True
        assert repr(flat) == repr(hh._simple_edn(t)), t
