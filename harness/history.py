"""Histories on disk: this project's `history.jsonl` (written as a run goes,
read back), and `read_history`, which reads any history file for
`harness check` and judges whether it is a history at all. The readers of
other tools' formats (Jepsen EDN, Porcupine's etcd and kv logs) live in
`harness.foreign`, loaded only when such a file is read.

Every reader returns a list of `checkers.history.Op` with a dense `index`
(0, 1, 2 ... in file order, after dropping what the reader ignores) and a
`time` in nanoseconds: the file's own time where it has one, else the index.
A line or form that cannot be understood raises `HistoryFormatError`, whose
message starts with `FILE:LINE:` and says what was expected.

Formats (`FORMATS`):

- `jsonl`: DESIGN.md's history, one JSON object per line. Values that JSON
  cannot hold are encoded by `HistoryWriter`: bytes as `{"$bytes": "<hex>"}`
  (decoded back to bytes by `read_jsonl`), sets as lists (sorted when their
  elements sort). Fields beyond DESIGN.md's go to `Op.extra`. Nemesis ops are
  kept. A file holding one JSON array of ops is refused with a hint (JSON
  Lines is one object per line: `jq -c '.[]'` converts it).
- `edn`, `porcupine-etcd`, `porcupine-kv`: see `harness.foreign`.

`read_history(path, format="auto")` takes a history file, a run directory of
the store (`store/<test>/<time>/`, holding `history.jsonl`), a directory with
a `latest` entry (`store/latest`), or a Jepsen run directory (`history.edn`).
Beyond each line's own form it refuses, with the line, what no checker can
judge: a completion without its invocation, a process that invokes while
its operation is in flight, and a file with no client operation at all (a
check of nothing would say "valid").
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from checkers.history import REPLICA_READ, TYPES, Op, OpType, Process

__all__ = [
    "FORMATS",
    "HistoryFormatError",
    "HistoryWriter",
    "check_history",
    "detect_format",
    "make_op",
    "read_history",
    "read_jsonl",
    "read_text",
    "resolve_history_path",
    "sorted_list",
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
        return sorted_list([_encode(v) for v in value])
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


def sorted_list(items: list[Any]) -> list[Any]:
    """`items` sorted if they sort, else as they are (a set's elements)."""
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


def read_text(path: str | Path) -> str:
    """The text of a history file, which must be UTF-8: undecodable bytes
    raise HistoryFormatError naming the line and the byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise HistoryFormatError(
            path, line, f"not UTF-8: byte 0x{data[e.start]:02x} at column {column} (expected a UTF-8 text file)"
        ) from None


# The start of a JSON array of op objects (or an empty one), as far as the
# first lines show it: EDN vectors of maps open `[{:`.
_JSON_ARRAY = re.compile(r'\s*\[\s*(?:\{\s*(?:"|$)|\]|$)')


def read_jsonl(path: str | Path) -> list[Op]:
    """Read a `history.jsonl` (blank lines skipped)."""
    return read_jsonl_lines(path)[0]


def read_jsonl_lines(path: str | Path) -> tuple[list[Op], list[int]]:
    """`read_jsonl`, with the line of each op."""
    ops: list[Op] = []
    lines: list[int] = []
    loads = json.loads
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as e:
            if not ops and _JSON_ARRAY.match(line):
                raise HistoryFormatError(path, lineno, _ARRAY_HINT) from None
            raise HistoryFormatError(
                path, lineno, f"not JSON: {e.msg} at column {e.colno} (expected one JSON object per line)"
            ) from None
        if not isinstance(obj, dict):
            if isinstance(obj, list) and not ops:
                raise HistoryFormatError(path, lineno, _ARRAY_HINT)
            raise HistoryFormatError(path, lineno, f"expected a JSON object (an op), not {_json_kind(obj)}")
        obj = _decode(obj)
        ops.append(make_op(obj, len(ops), path, lineno, source_index=False))
        lines.append(lineno)
    return ops, lines


_ARRAY_HINT = ("a JSON array; expected JSON Lines, one op object per line "
               "(`jq -c '.[]' FILE` converts an array of ops)")


def _json_kind(obj: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number")


def _brief(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


# --------------------------------------------------------------------------
# Building ops from decoded maps (shared by every reader)


def make_op(
    m: Mapping[str, Any], index: int, path: str | Path, line: int, *, source_index: bool
) -> Op:
    """The op a decoded map describes (every reader's last step), its fields
    checked: a HistoryFormatError at `path:line` says which is wrong and
    what it should be. `source_index`: keep the map's own `index` in
    `extra["source_index"]` (a foreign file's numbering)."""
    def bad(msg: str) -> HistoryFormatError:
        return HistoryFormatError(path, line, msg)

    if "process" not in m:
        raise bad("op has no process (expected an integer client process, or nemesis)")
    process = m["process"]
    if isinstance(process, bool) or not isinstance(process, int | str):
        raise bad(f"process must be an integer or a name, not {_brief(process)}")
    type_ = m.get("type")
    if type_ not in TYPES:
        raise bad(f"type must be one of {', '.join(TYPES)}, not {_brief(type_)}")
    f = m.get("f")
    if not isinstance(f, str):
        raise bad(f"f must be a name (read, write, ...), not {_brief(f)}")
    t = m.get("time")
    if t is None:
        time = index
    elif (isinstance(t, int) and not isinstance(t, bool)) or (isinstance(t, float) and math.isfinite(t)):
        time = int(t)
    else:
        raise bad(f"time must be a number of nanoseconds, not {_brief(t)}")
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


def detect_format(path: str | Path) -> str:
    """Guess the format of a history file by its content (the extension
    breaks ties): jsonl, edn, porcupine-etcd or porcupine-kv. A JSON array
    is taken for jsonl, whose reader refuses it with a hint."""
    from harness.foreign import is_etcd_op_line

    p = Path(path)
    lines = list(_significant_lines(p))
    if any(is_etcd_op_line(s) for s in lines):
        return "porcupine-etcd"
    first = lines[0] if lines else ""
    if first.startswith("{"):
        # A string key first is JSON (broken or not: its reader says where);
        # Jepsen's op maps have keywords for keys.
        if re.match(r'\{\s*"', first):
            return "jsonl"
        if re.search(r":key\s", first) and re.search(r":f\s+:(get|put|append)\b", first):
            return "porcupine-kv"
        return "edn"
    if first.startswith("[") and _JSON_ARRAY.match("\n".join(lines[:3])):
        return "jsonl"
    if first.startswith(("[", "(", "#")):
        return "edn"
    ext = p.suffix.lower()
    if ext in (".jsonl", ".json"):
        return "jsonl"
    if ext == ".edn":
        return "edn"
    if ext == ".log":
        return "porcupine-etcd"
    raise HistoryFormatError(p, None, "cannot tell the history format (expected JSON Lines, Jepsen EDN, or a "
                                      "Porcupine etcd or kv log); pass --format")


def _reader(fmt: str) -> Callable[[str | Path], tuple[list[Op], list[int]]]:
    if fmt == "jsonl":
        return read_jsonl_lines
    from harness import foreign  # edn_format and the foreign readers: only for foreign files

    readers = {"edn": foreign.read_edn_lines, "porcupine-kv": foreign.read_edn_lines,
               "porcupine-etcd": foreign.read_porcupine_etcd_lines}
    if fmt not in readers:
        raise ValueError(f"unknown history format {fmt!r}; one of auto, {', '.join(FORMATS)}")
    return readers[fmt]


def check_history(ops: Sequence[Op], lines: Sequence[int], path: str | Path) -> None:
    """Refuse, naming the line, what no checker can judge: a completion
    without its invocation, a second invocation by a process while its
    operation is in flight, a history without a client operation. Nemesis
    ops are not paired (as `checkers.history.pair` leaves them)."""
    open_: dict[Process, int] = {}  # process -> line of its invocation in flight
    clients = 0
    for op, line in zip(ops, lines, strict=True):
        process = op.process
        if process == "nemesis":
            continue
        if op.type == "invoke":
            if process in open_:
                raise HistoryFormatError(
                    path, line, f"process {process!r} invokes {op.f} while its operation invoked on line "
                                f"{open_[process]} is in flight (expected that one's ok, fail or info first)")
            open_[process] = line
            if op.f != REPLICA_READ:
                clients += 1
        elif open_.pop(process, None) is None:
            raise HistoryFormatError(
                path, line, f"{op.type} {op.f} by process {process!r} completes nothing (expected an invoke "
                            f"by process {process!r} before it)")
    if clients == 0:
        raise HistoryFormatError(
            path, None, f"no client operations in {len(ops)} lines read: nothing to check (expected invocations "
                        "and completions of client processes; is this a history, in this format?)")


def read_history(path: str | Path, format: str = "auto") -> list[Op]:
    """Read a history file or run directory in `format` (or detect it), and
    refuse one that `check_history` finds no history."""
    p = resolve_history_path(path)
    fmt = detect_format(p) if format == "auto" else format
    ops, lines = _reader(fmt)(p)
    check_history(ops, lines, p)
    return ops
