"""Histories on disk: this project's `history.jsonl`, and readers for the
histories other tools record (Jepsen EDN, Porcupine's etcd and kv logs).

Every reader returns a list of `checkers.history.Op` with a dense `index`
(0, 1, 2 ... in file order, after dropping what the reader ignores) and a
`time` in nanoseconds: the file's own time where it has one, else the index.
A line or form that cannot be understood raises `HistoryFormatError`, whose
message starts with `FILE:LINE:`.

Formats (`FORMATS`):

- `jsonl`: DESIGN.md's history, one JSON object per line. Values that JSON
  cannot hold are encoded by `HistoryWriter`: bytes as `{"$bytes": "<hex>"}`
  (decoded back to bytes by `read_jsonl`), sets as lists (sorted when their
  elements sort). Fields beyond DESIGN.md's go to `Op.extra`. Nemesis ops are
  kept.
- `edn`: Jepsen histories. A vector or list of op maps, or op maps one after
  another (a map may span lines; `;` comments; a record tag such as
  `#jepsen.history.Op{...}` is read as the map). Keywords become plain
  strings (`:read` -> "read"), vectors and lists become lists, EDN sets
  become lists (sorted when they sort). Ops of `:process :nemesis` are
  dropped. The file's own `:index`, if any, is kept in
  `extra["source_index"]`; keys other than DESIGN.md's go to `extra`.
- `porcupine-etcd`: the `INFO  jepsen.util - 2	:invoke	:cas	[3 0]` lines
  of Jepsen's etcd logs (tabs or runs of spaces). Other lines are skipped;
  a jepsen.util line that starts like an op (a process, then a keyword) but
  does not parse is an error. A read of `nil` is a read of an absent key
  (value None); `:fail :cas` is a definite failure (the compare did not
  match); a `:fail` whose value is `:timed-out` (Jepsen's etcd client logs
  read timeouts so) is turned into `info`, and a keyword value on a `fail` or
  `info` becomes `error` (value None).
- `porcupine-kv`: one EDN map per line with `:key` (`:get`, `:put`,
  `:append` on strings). Read like `edn`.

For the foreign formats (not `jsonl`), an `ok` completion's value fills in
its invocation's, as Knossos does: Jepsen records a read's value only at its
completion, so the invocation of `read` is given the value read (and a
multi-register invocation `[[:read :x nil]]` the completed `[[:read :x 1]]`).
A completion whose value is nil leaves the invocation alone, so a write's
argument is never lost. Completions are not changed.

`read_history(path, format="auto")` takes a history file, a run directory of
the store (`store/<test>/<time>/`, holding `history.jsonl`), a directory with
a `latest` entry (`store/latest`), or a Jepsen run directory (`history.edn`).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import edn_format

from checkers.history import TYPES, Op, OpType, Process

__all__ = [
    "FORMATS",
    "HistoryFormatError",
    "HistoryWriter",
    "detect_format",
    "fill_invocations",
    "read_edn",
    "read_history",
    "read_jsonl",
    "read_porcupine_etcd",
    "read_porcupine_kv",
    "resolve_history_path",
]

FORMATS: tuple[str, ...] = ("jsonl", "edn", "porcupine-etcd", "porcupine-kv")
_CORE = ("index", "time", "process", "type", "f", "key", "value", "node", "error")


class HistoryFormatError(ValueError):
    """A history file that cannot be read; the message names `FILE:LINE`."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------
# This project's JSON Lines


def _encode(value: Any) -> Any:
    """JSON-native values pass through; bytes become {"$bytes": hex}; sets
    become (sorted where possible) lists; anything else is a TypeError."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, set | frozenset):
        return _sorted_list([_encode(v) for v in value])
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    raise TypeError(f"cannot write a {type(value).__name__} to a history: {value!r}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$bytes" in value and isinstance(value["$bytes"], str):
            return bytes.fromhex(value["$bytes"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _sorted_list(items: list[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:
        return items


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_PLAIN = (str, int, float, bool, type(None))


def _fields(index: int, time: int, process: Process, type: OpType, f: str, key: Any, value: Any,
            node: str | None, error: str | None, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "time": time, "process": process, "type": type, "f": f}
    if key is not None:
        out["key"] = key if isinstance(key, _PLAIN) else _encode(key)
    out["value"] = value if isinstance(value, _PLAIN) else _encode(value)
    if node is not None:
        out["node"] = node
    if error is not None:
        out["error"] = error
    if extra:
        for k, v in extra.items():
            if k in _CORE:
                raise ValueError(f"op {index}: extra field {k!r} shadows a core field")
            out[k] = _encode(v)
    return out


class HistoryWriter:
    """Appends ops to a `history.jsonl`, one line each, flushed as written
    (so a crash of the harness leaves every op written so far). Safe to share
    between threads. `fsync=True` also syncs each line to disk.

    Written fields: index, time, process, type, f, value always; key, node,
    error when not None; `extra` merged in at the top level."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        # Unbuffered binary: one write(2) per line is the flush, with no
        # text layer in between (the runner records tens of thousands a second).
        self._file: IO[bytes] | None = open(self.path, "ab", buffering=0)  # noqa: SIM115

    def write(self, op: Op) -> None:
        """Append one op. Raises TypeError for a value JSON cannot hold and
        ValueError for an `extra` field that shadows a core field."""
        self.write_fields(op.index, op.time, op.process, op.type, op.f, op.key, op.value, op.node, op.error,
                          op.extra)

    def write_fields(self, index: int, time: int, process: Process, type: OpType, f: str, key: Any = None,
                     value: Any = None, node: str | None = None, error: str | None = None,
                     extra: Mapping[str, Any] | None = None) -> None:
        """`write` without building an `Op` first (the runner's hot path)."""
        line = _ENCODER.encode(_fields(index, time, process, type, f, key, value, node, error, extra)) + "\n"
        with self._lock:
            if self._file is None:
                raise ValueError(f"{self.path}: history writer is closed")
            self._file.write(line.encode("utf-8"))
            if self._fsync:
                os.fsync(self._file.fileno())

    @staticmethod
    def encode(op: Op) -> dict[str, Any]:
        """The JSON object written for `op`."""
        return _fields(op.index, op.time, op.process, op.type, op.f, op.key, op.value, op.node, op.error,
                       op.extra)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[Op]:
    """Read a `history.jsonl` (blank lines skipped)."""
    ops: list[Op] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise HistoryFormatError(path, lineno, f"not JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise HistoryFormatError(path, lineno, "expected a JSON object")
            obj = _decode(obj)
            ops.append(_make_op(obj, len(ops), path, lineno, source_index=False))
    return ops


# --------------------------------------------------------------------------
# Building ops from decoded maps (shared by every reader)


def _make_op(
    m: Mapping[str, Any], index: int, path: str | Path, line: int, *, source_index: bool
) -> Op:
    def bad(msg: str) -> HistoryFormatError:
        return HistoryFormatError(path, line, msg)

    if "process" not in m:
        raise bad("op has no process")
    process = m["process"]
    if isinstance(process, bool) or not isinstance(process, int | str):
        raise bad(f"process must be an integer or a name, not {process!r}")
    type_ = m.get("type")
    if type_ not in TYPES:
        raise bad(f"type must be one of {', '.join(TYPES)}, not {type_!r}")
    f = m.get("f")
    if not isinstance(f, str):
        raise bad(f"op has no f (or a non-name f: {f!r})")
    t = m.get("time")
    if t is None:
        time = index
    elif isinstance(t, int | float) and not isinstance(t, bool):
        time = int(t)
    else:
        raise bad(f"time must be a number of nanoseconds, not {t!r}")
    node = m.get("node")
    if node is not None and not isinstance(node, str):
        node = str(node)
    error = m.get("error")
    if error is not None and not isinstance(error, str):
        error = json.dumps(error, default=str)
    extra = {k: v for k, v in m.items() if k not in _CORE}
    if source_index and "index" in m:
        extra["source_index"] = m["index"]
    proc: Process = process
    op_type: OpType = type_
    return Op(
        index=index,
        time=time,
        process=proc,
        type=op_type,
        f=f,
        key=m.get("key"),
        value=m.get("value"),
        node=node,
        error=error,
        extra=extra,
    )


def fill_invocations(ops: Sequence[Op]) -> list[Op]:
    """Knossos's rule: an `ok` completion's (non-nil) value fills in its
    invocation's value. Returns a new list; unpaired ops are left alone."""
    out = list(ops)
    open_: dict[Process, int] = {}
    for i, op in enumerate(out):
        if op.type == "invoke":
            open_[op.process] = i
            continue
        j = open_.pop(op.process, None)
        if j is None or op.type != "ok" or op.value is None:
            continue
        if out[j].value != op.value:
            out[j] = replace(out[j], value=op.value)
    return out


# --------------------------------------------------------------------------
# EDN


def _plain(v: Any) -> Any:
    """EDN values as plain Python: keywords and symbols -> str, vectors and
    lists -> list, maps -> dict, sets -> (sorted where possible) list."""
    if isinstance(v, edn_format.Keyword | edn_format.Symbol):
        return v.name
    if isinstance(v, str | int | float | bool) or v is None:
        return str(v) if isinstance(v, edn_format.Char) else v
    if isinstance(v, Mapping):
        return {_hashable(_plain(k)): _plain(x) for k, x in v.items()}
    if isinstance(v, set | frozenset):
        return _sorted_list([_plain(x) for x in v])
    if isinstance(v, Sequence):
        return [_plain(x) for x in v]
    return v


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, default=str, sort_keys=True)
    return v


_WS = " \t\r\n,"
_TAGGED_MAP = re.compile(r"#[A-Za-z][\w.\-$]*\s*(?=\{)")
# Runs of characters that need no attention: inside a form (depth > 0)
# anything but brackets, strings, character literals, comments and
# newlines; for an atom at depth 0, whitespace and commas end it too.
_RUN_INSIDE = re.compile(r'[^"\\;()\[\]{}\n]+')
_RUN_ATOM = re.compile(r'[^"\\;()\[\]{} \t\r\n,]+')
_RUN_STRING = re.compile(r'[^"\\\n]+')
_RUN_BLANK = re.compile(r"[ \t\r,]+")


def _edn_forms(
    text: str, start: int, end: int, line: int, path: str | Path
) -> list[tuple[int, int, int]]:
    """Split text[start:end] into top-level EDN forms: (line, begin, stop).
    Tracks strings, comments, character literals and brackets only; the
    forms themselves are parsed by `_parse_edn_forms`. Skips runs of plain
    characters by regular expression, not one character at a time."""
    forms: list[tuple[int, int, int]] = []
    run_inside = _RUN_INSIDE.match
    run_atom = _RUN_ATOM.match
    run_string = _RUN_STRING.match
    run_blank = _RUN_BLANK.match
    i = start
    while i < end:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c in _WS:
            m = run_blank(text, i, end)
            i = m.end() if m else i + 1
            continue
        if c == ";":
            j = text.find("\n", i, end)
            i = end if j < 0 else j
            continue
        begin, begin_line, depth = i, line, 0
        while i < end:
            c = text[i]
            if c == '"':
                i += 1
                while i < end:
                    m = run_string(text, i, end)
                    if m:
                        i = m.end()
                        if i >= end:
                            break
                    c = text[i]
                    if c == '"':
                        break
                    if c == "\\":
                        i += 2
                    else:  # a newline inside the string
                        line += 1
                        i += 1
                if i >= end:
                    raise HistoryFormatError(path, begin_line, "unterminated string")
                i += 1
                if depth == 0:
                    break
            elif c == "\\":
                i += 2
            elif c == ";" and depth > 0:
                j = text.find("\n", i, end)
                i = end if j < 0 else j
            elif c in "([{":
                depth += 1
                i += 1
            elif c in ")]}":
                if depth == 0:
                    if i == begin:
                        raise HistoryFormatError(path, line, f"unmatched {c!r}")
                    break
                depth -= 1
                i += 1
                if depth == 0:
                    break
            elif c in _WS or c == ";":
                if depth == 0:
                    break
                if c == "\n":
                    line += 1
                i += 1
            else:
                m = (run_inside if depth else run_atom)(text, i, end)
                i = m.end() if m else i + 1
        if depth > 0:
            raise HistoryFormatError(path, begin_line, "unterminated form (missing a closing bracket)")
        forms.append((begin_line, begin, min(i, end)))
    return forms


class _NotSimple(Exception):
    """`_simple_edn` met something it leaves to edn_format."""


_KEYWORD_CHARS = r"[\w.*+!\-?$%&=:#<>@]+"
_ATOM_END = r"(?=[ \t\n,\])}]|\Z)"
# One token per match, whitespace and commas before it skipped; an atom
# must end where edn_format's would (at a delimiter); anything else is
# `bad` (one character), so the matches cover the text without gaps.
_SIMPLE_TOKENS = re.compile(
    r"[ \t\n,]*(?:"
    rf":({_KEYWORD_CHARS}(?:/{_KEYWORD_CHARS})?){_ATOM_END}"  # 1: a keyword's name
    rf"|(-?(?:0|[1-9]\d*)(\.\d+)?){_ATOM_END}"  # 2: a number, 3: its decimals
    rf'|"([^"\\]*)"{_ATOM_END}'  # 4: a string without escapes
    r"|([\[({]|\#\{)"  # 5: an opening bracket
    r"|([\])}])"  # 6: a closing one
    rf"|(nil|true|false){_ATOM_END}"  # 7
    r"|(.))",  # 8: anything else
    re.DOTALL,
)
_CLOSES = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_SYMBOLS = {"nil": None, "true": True, "false": False}


def _simple_edn(text: str) -> Any:
    """The value of one EDN form as `_plain(edn_format.loads(text))` gives
    it, for the subset that histories use: maps, vectors, lists, sets of
    integers or of strings, keywords, strings without escapes, integers,
    decimal floats, nil, true and false (a `#tag` before a map is dropped by
    the caller). Raises _NotSimple for anything else, and edn_format reads
    the form instead; so the result is always edn_format's."""
    stack: list[tuple[str, list[Any]]] = []
    items: list[Any] = []
    value: Any
    for keyword, number, decimals, string, opener, closer, symbol, bad in _SIMPLE_TOKENS.findall(
            text.rstrip(" \t\n,")):
        if keyword:
            items.append(keyword)
        elif number:
            items.append(float(number) if decimals else int(number))
        elif opener:
            stack.append((opener, items))
            items = []
        elif closer:
            if not stack:
                raise _NotSimple
            opener, outer = stack.pop()
            if _CLOSES[opener] != closer:
                raise _NotSimple
            if opener == "{":
                keys = items[0::2]
                if len(items) % 2 or not all(type(k) is str or type(k) is int for k in keys):
                    raise _NotSimple
                value = dict(zip(keys, items[1::2], strict=True))
                if len(value) != len(keys):
                    raise _NotSimple  # a repeated key: leave it to edn_format
            elif opener == "#{":
                kinds = {type(x) for x in items}
                if len(kinds) > 1 or not kinds <= {int, str}:
                    raise _NotSimple
                value = sorted(set(items))
            else:
                value = items
            items = outer
            items.append(value)
        elif symbol:
            items.append(_SYMBOLS[symbol])
        elif bad:
            raise _NotSimple
        else:  # a string (maybe empty)
            items.append(string)
    if stack or len(items) != 1:
        raise _NotSimple
    return items[0]


def _parse_edn_forms(
    texts: list[tuple[int, str]], path: str | Path, batch: int = 500
) -> Iterator[tuple[int, Any]]:
    """Parse each (line, form text) into plain values (`_plain`). Forms in
    the simple subset of `_simple_edn` are read by it; the others by
    edn_format, which is much faster on many forms at once, so batch them
    and fall back to one at a time to find a bad one."""
    for b in range(0, len(texts), batch):
        chunk = texts[b : b + batch]
        values: list[Any] = [None] * len(chunk)
        hard: list[int] = []
        for j, (_, t) in enumerate(chunk):
            try:
                values[j] = _simple_edn(t)
            except _NotSimple:
                hard.append(j)
        if hard:
            try:
                parsed = edn_format.loads_all("\n".join(chunk[j][1] for j in hard))
            except Exception:
                parsed = None
            if parsed is None or len(parsed) != len(hard):
                parsed = []
                for j in hard:
                    ln, t = chunk[j]
                    try:
                        parsed.append(edn_format.loads(t))
                    except Exception as e:
                        raise HistoryFormatError(path, ln, f"cannot parse EDN: {_short(e)}") from None
            for j, v in zip(hard, parsed, strict=True):
                values[j] = _plain(v)
        yield from ((ln, v) for (ln, _), v in zip(chunk, values, strict=True))


def _short(e: BaseException) -> str:
    s = str(e).strip() or type(e).__name__
    return s if len(s) < 200 else s[:200] + "..."


def _one_map_per_line(text: str) -> tuple[list[tuple[int, str]], list[Any]] | None:
    """The fast path for the common layout, one op map per line (blank and
    `;` comment lines aside; a `#tag` before a map dropped): the forms and
    their values, read by `_simple_edn` without splitting the text into
    forms first. None as soon as a line is anything else; the general path
    then reads the file (and reports any error)."""
    texts: list[tuple[int, str]] = []
    values: list[Any] = []
    simple = _simple_edn
    for lineno, raw in enumerate(text.split("\n"), 1):
        t = raw.strip(" \t\r,")
        if not t or t[0] == ";":
            continue
        if t[0] == "#":
            m = _TAGGED_MAP.match(t)
            if m is None:
                return None
            t = t[m.end() :]
        if t[0] != "{":
            return None
        try:
            values.append(simple(t))
        except _NotSimple:
            return None
        texts.append((lineno, t))
    return texts, values


def _read_edn_maps(path: str | Path) -> list[Op]:
    text = Path(path).read_text(encoding="utf-8")
    fast = _one_map_per_line(text)
    if fast is not None:
        texts, values = fast
    else:
        forms = _edn_forms(text, 0, len(text), 1, path)
        if len(forms) == 1 and text[forms[0][1]] in "([":
            line, begin, stop = forms[0]
            forms = _edn_forms(text, begin + 1, stop - 1, line, path)
        texts = []
        for line, begin, stop in forms:
            t = text[begin:stop]
            m = _TAGGED_MAP.match(t)
            texts.append((line, t[m.end() :] if m else t))
        values = [v for _, v in _parse_edn_forms(texts, path)]
    ops: list[Op] = []
    for (line, t), m in zip(texts, values, strict=True):
        if not isinstance(m, dict):
            raise HistoryFormatError(path, line, f"expected an op map, not {_short_repr(edn_format.loads(t))}")
        if not all(isinstance(k, str) for k in m):
            raise HistoryFormatError(path, line, "an op map's keys must be keywords")
        if m.get("process") == "nemesis":
            continue
        ops.append(_make_op(m, len(ops), path, line, source_index=True))
    return fill_invocations(ops)


def _short_repr(v: Any) -> str:
    s = edn_format.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) < 80 else s[:80] + "..."


def read_edn(path: str | Path) -> list[Op]:
    """Read a Jepsen EDN history (see the module docstring)."""
    return _read_edn_maps(path)


def read_porcupine_kv(path: str | Path) -> list[Op]:
    """Read a Porcupine-style kv log: one EDN op map per line, with `:key`."""
    return _read_edn_maps(path)


# --------------------------------------------------------------------------
# Porcupine's etcd logs


_ETCD_PREFIX = re.compile(r"\bjepsen\.util\s*[-:]\s+(.*?)\s*$")
_ETCD_OPLIKE = re.compile(r"^(\d+|:[\w.\-]+)\s+:\S")
_ETCD_OP = re.compile(r"^(\d+|:[\w.\-]+)\s+:([\w.\-]+)\s+:([\w.\-]+)(?:\s+(.*))?$")


def read_porcupine_etcd(path: str | Path) -> list[Op]:
    """Read the jepsen.util op lines of a Jepsen etcd log (see the module
    docstring for what each outcome means)."""
    ops: list[Op] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            pm = _ETCD_PREFIX.search(raw)
            if pm is None or not _ETCD_OPLIKE.match(pm.group(1)):
                continue
            m = _ETCD_OP.match(pm.group(1))
            if m is None:
                raise HistoryFormatError(path, lineno, f"cannot parse op line: {raw.strip()!r}")
            proc_s, type_, f_, value_s = m.groups()
            if proc_s.startswith(":"):
                if proc_s == ":nemesis":
                    continue
                raise HistoryFormatError(path, lineno, f"unknown process {proc_s}")
            if type_ not in TYPES:
                raise HistoryFormatError(path, lineno, f"unknown op type :{type_}")
            value: Any = None
            if value_s:
                try:
                    value = _plain(edn_format.loads(value_s))
                except Exception as e:
                    raise HistoryFormatError(
                        path, lineno, f"cannot parse value {value_s!r}: {_short(e)}"
                    ) from None
            error: str | None = None
            if type_ in ("fail", "info") and isinstance(value, str) and value_s.startswith(":"):
                error, value = value, None
            if type_ == "fail" and error == "timed-out":
                type_ = "info"  # a timeout is an unknown outcome, never a definite failure
            op_type: OpType = type_  # type: ignore[assignment]
            ops.append(
                Op(
                    index=len(ops),
                    time=len(ops),
                    process=int(proc_s),
                    type=op_type,
                    f=f_,
                    value=value,
                    error=error,
                )
            )
    return fill_invocations(ops)


# --------------------------------------------------------------------------
# Finding and sniffing


def resolve_history_path(path: str | Path) -> Path:
    """The history file PATH names: PATH itself if a file; in a directory,
    its `history.jsonl` (or Jepsen's `history.edn`), else what its `latest`
    entry (a symlink or a file holding a path) points at, else the newest
    run directory under it. Raises FileNotFoundError."""
    p = Path(path)
    for _ in range(4):
        if p.is_file():
            return p
        if not p.is_dir():
            raise FileNotFoundError(f"{path}: no such file or directory")
        for name in ("history.jsonl", "history.edn"):
            if (p / name).is_file():
                return p / name
        latest = p / "latest"
        if latest.is_dir():
            p = latest
            continue
        if latest.is_file():
            target = latest.read_text(encoding="utf-8").strip()
            p = (p / target) if not Path(target).is_absolute() else Path(target)
            continue
        runs = sorted(
            d for d in p.iterdir() if d.is_dir() and (d / "history.jsonl").is_file()
        )
        if runs:
            return runs[-1] / "history.jsonl"
        break
    raise FileNotFoundError(f"{path}: no history.jsonl (nor history.edn, nor a latest run) here")


def _significant_lines(path: Path, limit: int = 200) -> Iterable[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            if n >= limit:
                return
            s = line.strip()
            if s and not s.startswith(";"):
                yield s


def _is_etcd_op_line(line: str) -> bool:
    m = _ETCD_PREFIX.search(line)
    return m is not None and _ETCD_OPLIKE.match(m.group(1)) is not None


def detect_format(path: str | Path) -> str:
    """Guess the format of a history file by its content (the extension
    breaks ties): jsonl, edn, porcupine-etcd or porcupine-kv."""
    p = Path(path)
    lines = list(_significant_lines(p))
    if any(_is_etcd_op_line(s) for s in lines):
        return "porcupine-etcd"
    first = lines[0] if lines else ""
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                return "jsonl"
        except json.JSONDecodeError:
            pass
        if re.search(r":key\s", first) and re.search(r":f\s+:(get|put|append)\b", first):
            return "porcupine-kv"
        return "edn"
    if first.startswith(("[", "(", "#")):
        return "edn"
    ext = p.suffix.lower()
    if ext in (".jsonl", ".json"):
        return "jsonl"
    if ext == ".edn":
        return "edn"
    if ext == ".log":
        return "porcupine-etcd"
    raise HistoryFormatError(p, None, "cannot tell the history format; pass --format")


_READERS = {
    "jsonl": read_jsonl,
    "edn": read_edn,
    "porcupine-etcd": read_porcupine_etcd,
    "porcupine-kv": read_porcupine_kv,
}


def read_history(path: str | Path, format: str = "auto") -> list[Op]:
    """Read a history file or run directory in `format` (or detect it)."""
    p = resolve_history_path(path)
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in _READERS:
        raise ValueError(f"unknown history format {format!r}; one of auto, {', '.join(FORMATS)}")
    return _READERS[fmt](p)
