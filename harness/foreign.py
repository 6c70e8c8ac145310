"""Readers of the histories other tools record: Jepsen EDN, Porcupine's
etcd logs and kv logs. `harness.history` dispatches to them by format
(`read_history`) and keeps this project's own `history.jsonl`; this module
is imported only when a foreign file is read, so that reading a run's own
history (and `harness check` on one) does not load edn_format; nor does
reading a foreign file whose values the simple reader below reads (importing
edn_format takes 20-30 ms, a tenth of `harness check`'s start-up).

Formats:

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

An `ok` completion's value fills in its invocation's, as Knossos does:
Jepsen records a read's value only at its completion, so the invocation of
`read` is given the value read (and a multi-register invocation
`[[:read :x nil]]` the completed `[[:read :x 1]]`). A completion whose value
is nil leaves the invocation alone, so a write's argument is never lost.
Completions are not changed.

Each reader has a `*_lines` twin that also returns the line of each op, for
the errors `harness.history.read_history` reports about the whole history
(a completion without its invocation, ...).

EDN values are read by `_simple_edn`, a tokenizer for the subset histories
use, and by edn_format for anything outside it (one parser call for many
forms at once, the forms it fails on then one at a time to name the line);
the results are the same either way (the tests compare them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from checkers.history import TYPES, Op, OpType, Process
from harness.history import HistoryFormatError, make_op, read_text, sorted_list


def __getattr__(name: str) -> Any:
    """`harness.foreign.edn_format`, imported when first asked for (the
    functions here import it where they need it)."""
    if name == "edn_format":
        import edn_format

        return edn_format
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "fill_invocations",
    "read_edn",
    "read_edn_lines",
    "read_porcupine_etcd",
    "read_porcupine_etcd_lines",
    "read_porcupine_kv",
]


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
    import edn_format

    if isinstance(v, edn_format.Keyword | edn_format.Symbol):
        return v.name
    if isinstance(v, str | int | float | bool) or v is None:
        return str(v) if isinstance(v, edn_format.Char) else v
    if isinstance(v, Mapping):
        return {_hashable(_plain(k)): _plain(x) for k, x in v.items()}
    if isinstance(v, set | frozenset):
        return sorted_list([_plain(x) for x in v])
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
    import edn_format

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


# A flat op map, `{:name value, ...}` with values that are nil, true, false,
# integers, keywords, strings without escapes, or vectors of such atoms (not
# strings): what Jepsen writes for most ops. `_flat_map` reads one with one
# regular expression match per entry; anything else goes to `_simple_edn`.
_NAME = r"[A-Za-z][\w\-]*"
_FLAT_ATOM = rf"nil|true|false|-?(?:0|[1-9]\d*)|:{_NAME}"
_FLAT_ENTRY = re.compile(
    rf"[ \t,]*:({_NAME})[ \t,]+(?:({_FLAT_ATOM})|\"([^\"\\\n]*)\""
    rf"|\[((?:[ \t,]*(?:{_FLAT_ATOM})(?=[ \t,\]]))*)[ \t,]*\])"
    r"(?=[ \t,}])")
_FLAT_ATOMS = re.compile(rf"[ \t,]*({_FLAT_ATOM})")
_FLAT_END = re.compile(r"[ \t,]*\}\Z")


def _flat_atom(token: str) -> Any:
    c = token[0]
    if c == ":":
        return token[1:]
    if c == "n":
        return None
    if c == "t":
        return True
    if c == "f":
        return False
    return int(token)


def _flat_map(t: str) -> dict[str, Any] | None:
    """The value of a flat op map `t` (starting with `{`), the same as
    `_simple_edn` gives; None for anything but a flat map (a repeated key
    included): the caller then asks `_simple_edn`."""
    out: dict[str, Any] = {}
    pos = 1
    match = _FLAT_ENTRY.match
    atom = _flat_atom
    n = 0
    while True:
        m = match(t, pos)
        if m is None:
            break
        name, plain, string, vector = m.groups()
        if plain is not None:
            out[name] = atom(plain)
        elif string is not None:
            out[name] = string
        else:
            out[name] = [atom(x) for x in _FLAT_ATOMS.findall(vector)]
        n += 1
        pos = m.end()
    if _FLAT_END.match(t, pos) is None or len(out) != n:
        return None
    return out


def _one_map_per_line(text: str) -> tuple[list[tuple[int, str]], list[Any]] | None:
    """The fast path for the common layout, one op map per line (blank and
    `;` comment lines aside; a `#tag` before a map dropped): the forms and
    their values, read by `_simple_edn` without splitting the text into
    forms first. None as soon as a line is anything else; the general path
    then reads the file (and reports any error)."""
    texts: list[tuple[int, str]] = []
    values: list[Any] = []
    simple = _simple_edn
    flat = _flat_map
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
        v = flat(t)
        if v is None:
            try:
                v = simple(t)
            except _NotSimple:
                return None
        values.append(v)
        texts.append((lineno, t))
    return texts, values


def read_edn_lines(path: str | Path) -> tuple[list[Op], list[int]]:
    """`read_edn`, with the line each op starts on."""
    text = read_text(path)
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
    lines: list[int] = []
    for (line, t), m in zip(texts, values, strict=True):
        if not isinstance(m, dict):
            import edn_format

            raise HistoryFormatError(path, line, f"expected an op map, not {_short_repr(edn_format.loads(t))}")
        if not all(isinstance(k, str) for k in m):
            raise HistoryFormatError(path, line, "an op map's keys must be keywords")
        if m.get("process") == "nemesis":
            continue
        ops.append(make_op(m, len(ops), path, line, source_index=True))
        lines.append(line)
    return fill_invocations(ops), lines


def _short_repr(v: Any) -> str:
    import edn_format

    s = edn_format.dumps(v) if not isinstance(v, str) else repr(v)
    return s if len(s) < 80 else s[:80] + "..."


def read_edn(path: str | Path) -> list[Op]:
    """Read a Jepsen EDN history (see the module docstring)."""
    return read_edn_lines(path)[0]


def read_porcupine_kv(path: str | Path) -> list[Op]:
    """Read a Porcupine-style kv log: one EDN op map per line, with `:key`."""
    return read_edn_lines(path)[0]


# --------------------------------------------------------------------------
# Porcupine's etcd logs


_ETCD_PREFIX = re.compile(r"\bjepsen\.util\s*[-:]\s+(.*?)\s*$")
_ETCD_OPLIKE = re.compile(r"^(\d+|:[\w.\-]+)\s+:\S")
_ETCD_OP = re.compile(r"^(\d+|:[\w.\-]+)\s+:([\w.\-]+)\s+:([\w.\-]+)(?:\s+(.*))?$")


def read_porcupine_etcd(path: str | Path) -> list[Op]:
    """Read the jepsen.util op lines of a Jepsen etcd log (see the module
    docstring for what each outcome means)."""
    return read_porcupine_etcd_lines(path)[0]


def is_etcd_op_line(line: str) -> bool:
    """Does `line` look like a jepsen.util op line of an etcd log?"""
    m = _ETCD_PREFIX.search(line)
    return m is not None and _ETCD_OPLIKE.match(m.group(1)) is not None


def _edn_value(text: str) -> Any:
    """One EDN value as plain Python: by `_simple_edn` where it can (a
    fraction of edn_format's cost, which builds a parser on every call),
    else by edn_format; the same value either way."""
    try:
        return _simple_edn(text)
    except _NotSimple:
        import edn_format

        return _plain(edn_format.loads(text))


def read_porcupine_etcd_lines(path: str | Path) -> tuple[list[Op], list[int]]:
    """`read_porcupine_etcd`, with the line of each op."""
    ops: list[Op] = []
    lines: list[int] = []
    # A log holds more than ops (stack traces, server output, possibly in
    # other encodings): undecodable bytes become U+FFFD rather than an
    # error, and an op line holding one fails to parse with its line.
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
                    value = _edn_value(value_s)
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
            lines.append(lineno)
    return fill_invocations(ops), lines

