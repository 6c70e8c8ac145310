"""`harness serve`: browse the run store (DESIGN.md, "Run store") in a web
browser, as Jepsen's `serve` command does.

`/` is the index: one row a run, newest first, sortable by each column
(`?sort=start|name|verdict|anomalies|faults|duration&order=asc|desc`) and
paged (`?page=2`, `?per=50`). Every other path names something in the store
as the store names it: `/<test>/<stamp>/history.jsonl`, `/latest/results.json`;
`/<test>/<stamp>/` lists a run's files and `/<test>/<stamp>.zip` downloads the
run, zipped as it is sent.

Only `test.json` and `results.json` are read for a row (and the last line of
`history.jsonl` when `results.json` has no `duration_s`); a row is kept until
one of those files changes. Sorting by start or by name reads only the rows of
the page shown.

Nothing outside the store is served: a path with `.` or `..` segments,
percent-encoded slashes or double encoding, backslashes, NUL or other control
characters is refused (403), and a path whose real location (symlinks
resolved) is outside the store's real location is not found (404). The store's
own `latest` links resolve inside it and are served. On a loopback address a
request naming another host is refused, so a web page cannot reach the store
by rebinding its DNS name to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import ipaddress
import json
import mimetypes
import os
import shutil
import socket
import stat
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlencode

import click

PER_PAGE = 50
MAX_PER_PAGE = 500
MAX_LISTED_FILES = 2000

# Jepsen's colours (jepsen.web): valid blue, unknown orange, invalid pink.
COLOURS = {"valid": "#6DB6FE", "unknown": "#FFAA26", "invalid": "#FEB5DA",
           "no result": "#EAEAEA", "unreadable": "#EAEAEA"}
# Ascending verdict order: the runs most worth a look first.
_VERDICT_RANK = {"invalid": 0, "unknown": 1, "unreadable": 2, "no result": 3, "valid": 4}

# Columns that can be sorted on, with the order a click on the header starts with.
SORTS = {"name": "asc", "start": "desc", "verdict": "asc", "anomalies": "desc",
         "faults": "asc", "duration": "desc"}
DEFAULT_SORT = "start"

_TEXT = "text/plain"
_TYPES = {".html": "text/html", ".htm": "text/html", ".json": "application/json", ".jsonl": _TEXT,
          ".log": _TEXT, ".txt": _TEXT, ".edn": _TEXT, ".toml": _TEXT, ".csv": _TEXT, ".md": _TEXT,
          ".svg": "image/svg+xml", ".png": "image/png", ".zip": "application/zip"}


# -- reading the store ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSummary:
    """One row of the index, read from a run's `test.json` and `results.json`."""

    name: str  # the test's directory in the store
    stamp: str  # the run's directory, YYYYmmddTHHMMSS[-n]
    path: Path
    started: str  # as shown
    verdict: str  # valid, invalid, unknown, "no result" or "unreadable"
    reason: str = ""  # why, when not plainly valid or invalid
    anomalies: Mapping[str, int] = field(default_factory=dict)  # type -> count
    faults: tuple[str, ...] = ()
    duration_s: float | None = None
    about: str = ""  # system, workload, backend, seed


def list_runs(store: Path) -> list[Path]:
    """The run directories of `store`: `<test-name>/<stamp>/`, not the
    `latest` links, nor hidden files, nor anything but directories."""
    runs = []
    for test in _subdirs(store):
        runs += _subdirs(test)
    return runs


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [Path(e.path) for e in it
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _stamp_key(run: Path) -> tuple[str, int, str]:
    """Start order from the directory name alone (`new_run` names a run by its
    start, with `-2`, `-3` for runs in the same second)."""
    stamp, _, n = run.name.partition("-")
    return stamp, int(n) if n.isdigit() else 0, run.parent.name


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _read_json(path: Path) -> tuple[Any, str]:
    """(data, "") or (None, "missing" | why it cannot be read)."""
    try:
        return json.loads(path.read_bytes()), ""
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None, f"{path.name}: {e}"


def last_line(path: Path, limit: int = 1 << 16) -> bytes | None:
    """The last non-empty line of a file, read backwards from its end (at most
    `limit` bytes), or None."""
    try:
        with open(path, "rb") as f:
            pos = f.seek(0, os.SEEK_END)
            buf = b""
            while pos > 0 and len(buf) < limit:
                step = min(8192, pos)
                pos -= step
                f.seek(pos)
                buf = f.read(step) + buf
                body = buf.rstrip(b"\r\n")
                cut = body.rfind(b"\n")
                if cut >= 0:
                    return body[cut + 1:] or None
            return (buf.strip() or None) if pos == 0 else None
    except OSError:
        return None


def _history_duration(run: Path) -> float | None:
    line = last_line(run / "history.jsonl")
    if line is None:
        return None
    try:
        t = json.loads(line).get("time")
    except (ValueError, AttributeError):
        return None
    return t / 1e9 if isinstance(t, int | float) and not isinstance(t, bool) else None


def _show_started(started: Any, stamp: str) -> str:
    if isinstance(started, str):
        try:
            when = dt.datetime.fromisoformat(started)
        except ValueError:
            return started
        if when.tzinfo is not None:
            return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return when.strftime("%Y-%m-%d %H:%M:%S")
    try:  # the directory's name: the local time of the machine that ran it
        return dt.datetime.strptime(stamp[:15], "%Y%m%dT%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp


def _faults(test: Mapping[str, Any]) -> tuple[str, ...]:
    nemesis = test.get("nemesis")
    if isinstance(nemesis, str):
        nemesis = [n for n in nemesis.split(",") if n]
    if not isinstance(nemesis, list):
        return ()
    return tuple(str(n) for n in nemesis if n not in (None, "", "none"))


def _anomalies(checkers: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    if not isinstance(checkers, dict):
        return counts
    for result in checkers.values():
        found = result.get("anomalies") if isinstance(result, dict) else None
        for a in found if isinstance(found, list) else ():
            kind = str(a.get("type", "?")) if isinstance(a, dict) else "?"
            counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _reason(results: Mapping[str, Any]) -> str:
    checkers = results.get("checkers")
    if not isinstance(checkers, dict):
        return ""
    return "; ".join(f"{name}: {r.get('reason')}" for name, r in checkers.items()
                     if isinstance(r, dict) and r.get("valid") == "unknown" and r.get("reason"))


def summarize(run: Path) -> RunSummary:
    """A run's row. Never raises on a run's files: a missing or corrupt
    `results.json` is the verdict "no result" or "unreadable"."""
    test, _ = _read_json(run / "test.json")
    test = test if isinstance(test, dict) else {}
    results, trouble = _read_json(run / "results.json")
    reason = ""
    if trouble == "missing":
        verdict, results = "no result", {}
    elif not isinstance(results, dict) or "valid" not in results:
        verdict, reason = "unreadable", trouble or "results.json: not a verdict"
        results = {}
    else:
        valid = results["valid"]
        verdict = "valid" if valid is True else "invalid" if valid is False else "unknown"
        reason = _reason(results) if verdict == "unknown" else ""
    duration = results.get("duration_s")
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        duration = _history_duration(run)
    about = " · ".join(str(v) for v in (test.get("system_name") or test.get("system"), test.get("workload"),
                                        test.get("backend")) if v)
    if test.get("seed") is not None:
        about += f" · seed {test['seed']}"
    return RunSummary(name=run.parent.name, stamp=run.name, path=run,
                      started=_show_started(results.get("started"), run.name), verdict=verdict,
                      reason=reason, anomalies=_anomalies(results.get("checkers")), faults=_faults(test),
                      duration_s=float(duration) if duration is not None else None, about=about)


class RunIndex:
    """The store's runs, each summary kept until its files change (by mtime
    and size), so that a page of a large store reads only what changed."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._cache: dict[Path, tuple[tuple[Any, ...], RunSummary]] = {}
        self._lock = threading.Lock()

    def summary(self, run: Path) -> RunSummary:
        key = tuple(_stat_key(run / f) for f in ("test.json", "results.json", "history.jsonl"))
        with self._lock:
            hit = self._cache.get(run)
        if hit is not None and hit[0] == key:
            return hit[1]
        row = summarize(run)
        with self._lock:
            self._cache[run] = (key, row)
        return row

    def warm(self) -> None:
        """Read every run's summary (for a thread started with the server)."""
        for run in list_runs(self.store):
            self.summary(run)

    def page(self, sort: str, order: str, page: int, per: int) -> tuple[list[RunSummary], int, int, int]:
        """(rows, total, page, pages): the page shown of the runs sorted,
        `page` clamped to those that exist. Ties stay newest first."""
        runs = sorted(list_runs(self.store), key=_stamp_key, reverse=True)
        with self._lock:  # forget runs removed from the store
            for gone in self._cache.keys() - set(runs):
                del self._cache[gone]
        total = len(runs)
        pages = max(1, -(-total // per))
        page = min(max(page, 1), pages)
        window = slice((page - 1) * per, page * per)
        if sort in ("start", "name"):  # from directory names: read only the page's runs
            if sort == "start" and order == "asc":
                runs.reverse()
            elif sort == "name":
                runs.sort(key=lambda r: r.parent.name, reverse=order == "desc")
            return [self.summary(r) for r in runs[window]], total, page, pages
        rows = _sorted([self.summary(r) for r in runs], sort, order)
        return rows[window], total, page, pages


def _sort_key(sort: str) -> Callable[[RunSummary], Any]:
    if sort == "verdict":
        return lambda r: _VERDICT_RANK.get(r.verdict, 9)
    if sort == "anomalies":
        return lambda r: (sum(r.anomalies.values()), ", ".join(r.anomalies))
    if sort == "faults":
        return lambda r: ", ".join(r.faults)
    if sort == "duration":
        return lambda r: r.duration_s
    return lambda r: _stamp_key(r.path)


def _sorted(rows: list[RunSummary], sort: str, order: str) -> list[RunSummary]:
    key = _sort_key(sort)
    known = [r for r in rows if key(r) is not None]
    unknown = [r for r in rows if key(r) is None]  # last, whichever the order
    return sorted(known, key=key, reverse=order == "desc") + unknown


# -- confinement ----------------------------------------------------------------------------


class Refused(Exception):
    """A request path that could name something outside the store."""


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def resolve(store_real: Path, raw_path: str) -> Path | None:
    """The real path in the store that the URL path `raw_path` (still
    percent-encoded, without its query) names, or None when there is nothing
    there or it resolves outside the store. Raises Refused for a path that
    tries to leave the store by its spelling."""
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        raise Refused("not a path in the store")
    low = raw_path.lower()
    if "\\" in raw_path or "%5c" in low or "%2f" in low or "%25" in low or "%00" in low:
        raise Refused("encoded slash, backslash, NUL or double encoding")
    path = unquote(raw_path, errors="strict")
    if any(ord(c) < 0x20 or c in "\\%\x7f" for c in path):
        raise Refused("control characters")
    parts = path.split("/")[1:]
    if parts and parts[-1] == "":
        parts.pop()
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise Refused("empty, dot or hidden segment")
    real = os.path.realpath(store_real.joinpath(*parts))
    if not _inside(real, str(store_real)) or not os.path.exists(real):
        return None
    return Path(real)


def _is_run(store_real: Path, real: Path) -> bool:
    return real.is_dir() and real.parent.parent == store_real


# -- pages ----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em;color:#222;font-size:14px}
h1{font-size:1.4em;margin:0 0 .3em}
table{border-collapse:collapse;width:100%}
th,td{padding:.35em .6em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th a{color:#222;text-decoration:none}
th a:hover{text-decoration:underline}
td.verdict{font-weight:600;white-space:nowrap}
.dim{color:#777;font-size:.9em}
.num{text-align:right;white-space:nowrap}
code{background:#f4f4f4;padding:0 .25em;border-radius:3px}
a{color:#0b57d0}
nav{margin:.8em 0}
nav a,nav span{margin-right:1em}
ul.files{list-style:none;padding-left:0;columns:2}
ul.files li{padding:.1em 0}
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _href(*parts: str) -> str:
    return "/" + "/".join(quote(p) for p in parts)


def show_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def _verdict_cell(r: RunSummary) -> str:
    title = f' title="{_e(r.reason)}"' if r.reason else ""
    return f'<td class="verdict" style="background:{COLOURS[r.verdict]}"{title}>{_e(r.verdict)}</td>'


def _links(r: RunSummary, store: Path) -> str:
    base = (r.name, r.stamp)
    links = []
    if (r.path / "report.html").is_file():
        links.append(f'<a href="{_href(*base, "report.html")}">report</a>')
    else:
        cmd = f"harness report {store / r.name / r.stamp}"
        links.append(f'<span class="dim">no report: <code>{_e(cmd)}</code> writes it</span>')
    for label, name in (("history", "history.jsonl"), ("results", "results.json"), ("harness.log", "harness.log")):
        if (r.path / name).is_file():
            links.append(f'<a href="{_href(*base, name)}">{label}</a>')
        else:
            links.append(f'<span class="dim">no {label}</span>')
    nodes = [n.name for n in sorted(_subdirs(r.path / "nodes"))]
    if nodes:
        logs = " ".join(f'<a href="{_href(*base, "")}#node-{quote(n)}">{_e(n)}</a>' for n in nodes)
        links.append(f"logs: {logs}")
    links.append(f'<a href="{_href(*base, "")}">files</a>')
    links.append(f'<a href="{_href(r.name, r.stamp + ".zip")}">zip</a>')
    return " · ".join(links)


def _query(**params: Any) -> str:
    return "?" + urlencode({k: v for k, v in params.items() if v is not None})


def index_page(index: RunIndex, store_shown: Path, query: Mapping[str, list[str]]) -> str:
    """The index: the runs as a table, one page of them, sorted as asked."""

    def arg(name: str) -> str:
        return (query.get(name) or [""])[0]

    sort = arg("sort") if arg("sort") in SORTS else DEFAULT_SORT
    order = arg("order") if arg("order") in ("asc", "desc") else SORTS[sort]
    try:
        per = min(max(int(arg("per")), 1), MAX_PER_PAGE)
    except ValueError:
        per = PER_PAGE
    try:
        page = int(arg("page"))
    except ValueError:
        page = 1
    rows, total, page, pages = index.page(sort, order, page, per)
    per_q = per if per != PER_PAGE else None

    heads = []
    for col, label in (("name", "test"), ("start", "started"), ("verdict", "verdict"),
                       ("anomalies", "anomalies"), ("faults", "faults"), ("duration", "duration")):
        if col == sort:
            flip = "asc" if order == "desc" else "desc"
            arrow = " ▲" if order == "asc" else " ▼"
            heads.append(f'<th><a href="{_e(_query(sort=col, order=flip, per=per_q))}">{label}{arrow}</a></th>')
        else:
            heads.append(f'<th><a href="{_e(_query(sort=col, order=SORTS[col], per=per_q))}">{label}</a></th>')
    heads.append("<th>files</th>")

    body_rows = []
    for r in rows:
        anomalies = ", ".join(f"{_e(t)} &times;{n}" for t, n in r.anomalies.items()) or '<span class="dim">none</span>'
        faults = _e(", ".join(r.faults)) or '<span class="dim">none</span>'
        body_rows.append(
            f'<tr><td><a href="{_href(r.name, r.stamp, "")}">{_e(r.name)}</a>'
            f'<br><span class="dim">{_e(r.about or r.stamp)}</span></td>'
            f'<td title="{_e(r.stamp)}">{_e(r.started)}</td>{_verdict_cell(r)}'
            f"<td>{anomalies}</td><td>{faults}</td>"
            f'<td class="num">{_e(show_duration(r.duration_s))}</td><td>{_links(r, store_shown)}</td></tr>')

    first, last = (page - 1) * per + 1, (page - 1) * per + len(rows)
    nav = [f"<span>{total} run{'s' if total != 1 else ''}"
           + (f", {first}&ndash;{last} shown" if total else "") + f" · page {page} of {pages}</span>"]
    if page > 1:
        nav.append(f'<a rel="prev" href="{_e(_query(sort=sort, order=order, page=page - 1, per=per_q))}">&lsaquo; previous</a>')
    if page < pages:
        nav.append(f'<a rel="next" href="{_e(_query(sort=sort, order=order, page=page + 1, per=per_q))}">next &rsaquo;</a>')
    nav_html = "<nav>" + "".join(nav) + "</nav>"
    if not total:
        table = f"<p>No runs in <code>{_e(store_shown)}</code> yet: <code>harness run</code> stores one there.</p>"
    else:
        table = (f"<table><thead><tr>{''.join(heads)}</tr></thead>\n<tbody>\n"
                 + "\n".join(body_rows) + "\n</tbody></table>")
    return _page(f"runs in {store_shown}",
                 f"<h1>Runs in <code>{_e(store_shown)}</code></h1>\n{nav_html}\n{table}\n{nav_html}")


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def run_files(run: Path, store_real: Path) -> Iterator[tuple[str, Path, int]]:
    """(path relative to the run, real path, size) of each regular file under
    the run, in order; symlinks only when they resolve to a file in the store."""
    for top, dirs, files in os.walk(run, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(top) / name
            real = os.path.realpath(path)
            if name.startswith(".") or not _inside(real, str(store_real)):
                continue
            try:
                st = os.stat(real)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path.relative_to(run).as_posix(), Path(real), st.st_size


def run_page(index: RunIndex, run: Path, store_real: Path) -> str:
    """A run's files: its own first, then each node's (anchored `#node-<n>`)."""
    r = index.summary(run)
    groups: dict[str, list[str]] = {}
    listed = 0
    more = 0
    for rel, _, size in run_files(run, store_real):
        if listed >= MAX_LISTED_FILES:
            more += 1
            continue
        listed += 1
        parts = rel.split("/")
        group = parts[1] if parts[0] == "nodes" and len(parts) > 2 else ""
        groups.setdefault(group, []).append(
            f'<li><a href="{_e(quote(rel))}">{_e(rel)}</a> <span class="dim">{_size(size)}</span></li>')
    sections = []
    for group in sorted(groups):
        head = f'<h2 id="node-{_e(group)}">node {_e(group)}</h2>' if group else ""
        sections.append(f"{head}<ul class=\"files\">{''.join(groups[group])}</ul>")
    if more:
        sections.append(f"<p class=\"dim\">and {more} more files (in the zip)</p>")
    anomalies = ", ".join(f"{_e(t)} &times;{n}" for t, n in r.anomalies.items()) or "none"
    head = (f'<p><a href="/">all runs</a> · <a href="{_href(r.name, r.stamp + ".zip")}">zip</a></p>'
            f"<h1>{_e(r.name)} <span class=\"dim\">{_e(r.stamp)}</span></h1>"
            f'<table style="width:auto"><tr><th>verdict</th>{_verdict_cell(r)}</tr>'
            f"<tr><th>started</th><td>{_e(r.started)}</td></tr>"
            f"<tr><th>duration</th><td>{_e(show_duration(r.duration_s))}</td></tr>"
            f"<tr><th>anomalies</th><td>{anomalies}</td></tr>"
            f"<tr><th>faults</th><td>{_e(', '.join(r.faults) or 'none')}</td></tr>"
            f"<tr><th>run</th><td>{_e(r.about)}</td></tr></table>")
    return _page(f"{r.name} {r.stamp}", head + "".join(sections))


def content_type(path: Path) -> str:
    """The Content-Type a stored file is served with (text in UTF-8)."""
    kind = _TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
    if kind is None:
        try:
            with open(path, "rb") as f:
                kind = "application/octet-stream" if b"\0" in f.read(1024) else _TEXT
        except OSError:
            kind = "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/json", "image/svg+xml"):
        kind += "; charset=utf-8"
    return kind


class _Stream:
    """A write-only stream without `tell` or `seek`, so that zipfile writes the
    same streamed zip to a socket and to a file in a test."""

    def __init__(self, out: Any) -> None:
        self.out = out

    def write(self, data: bytes) -> int:
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def close(self) -> None:
        """Leaves `out` open: its owner closes it."""


def write_zip(out: Any, run: Path, store_real: Path) -> None:
    """Zip a run's files into the writable binary stream `out` as they are
    read (no seeking: the zip is streamed), under `<test>-<stamp>/`."""
    top = f"{run.parent.name}-{run.name}"
    with zipfile.ZipFile(_Stream(out), "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for rel, real, _ in run_files(run, store_real):
            with contextlib.suppress(OSError):  # a file removed meanwhile: left out
                zf.write(real, f"{top}/{rel}")


# -- the server -----------------------------------------------------------------------------


class StoreServer(ThreadingHTTPServer):
    """Serves one store (see the module docstring). `serve_forever` answers
    until `shutdown`; `server_close` frees the port."""

    daemon_threads = True

    def __init__(self, store: Path, host: str = "127.0.0.1", port: int = 0,
                 log: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.store_real = Path(os.path.realpath(store))
        self.index = RunIndex(self.store_real)
        self.log = log
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.loopback = _is_loopback(host)
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(store: Path, host: str = "127.0.0.1", port: int = 0,
                log: Callable[[str], None] | None = None) -> StoreServer:
    """A server of `store` bound to host:port (0: any free port), not yet
    answering: run its `serve_forever`, then `shutdown` and `server_close`."""
    return StoreServer(store, host, port, log)


@contextlib.contextmanager
def serving(store: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[StoreServer]:
    """A server of `store` answering from a thread of its own while the block
    runs (tests, or a tool that embeds the browser); stopped and closed after."""
    srv = make_server(store, host, port)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, name="harness-serve",
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    server_version = "harness-serve"

    @property
    def _server(self) -> StoreServer:
        return cast(StoreServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        if self._server.log is not None:
            self._server.log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the browser went away
            self._route(body)

    def _host_allowed(self) -> bool:
        if not self._server.loopback:
            return True
        host = self.headers.get("Host")
        if not host:
            return True
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        return name.lower() == "localhost" or _is_loopback(name) or name == self._server.server_address[0]

    def _route(self, body: bool) -> None:
        if not self._host_allowed():
            self._text(HTTPStatus.FORBIDDEN, "this server answers only for localhost", body)
            return
        raw, _, query = self.path.partition("?")
        raw = raw.partition("#")[0]
        if raw == "/":
            page = index_page(self._server.index, self._server.store, parse_qs(query))
            self._bytes(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), body)
            return
        store_real = self._server.store_real
        try:
            zipped = raw.endswith(".zip")
            real = resolve(store_real, raw[: -len(".zip")] if zipped else raw)
        except (Refused, UnicodeDecodeError):
            self._text(HTTPStatus.FORBIDDEN, "refused: not a path in the store", body)
            return
        if zipped and real is not None and not _is_run(store_real, real):
            real = resolve(store_real, raw)  # a stored file that happens to end in .zip
            zipped = False
        if real is None:
            self._text(HTTPStatus.NOT_FOUND, "not found in the store", body)
        elif zipped:
            self._zip(real, body)
        elif real.is_dir():
            if not _is_run(store_real, real):
                self._text(HTTPStatus.NOT_FOUND, "no listing here: the index links to every run", body)
            elif not raw.endswith("/"):
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", raw + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                page = run_page(self._server.index, real, store_real)
                self._bytes(HTTPStatus.OK, "text/html; charset=utf-8", page.encode(), body)
        else:
            self._file(real, body)

    def _text(self, status: HTTPStatus, message: str, body: bool) -> None:
        self._bytes(status, "text/plain; charset=utf-8", f"{status.value} {message}\n".encode(), body)

    def _bytes(self, status: HTTPStatus, kind: str, data: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _file(self, real: Path, body: bool) -> None:
        try:
            f = open(real, "rb")  # noqa: SIM115 (closed below; a failure to open is a 404)
        except OSError:
            self._text(HTTPStatus.NOT_FOUND, "not found in the store", body)
            return
        with f:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type(real))
            self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if body:
                shutil.copyfileobj(f, self.wfile)

    def _zip(self, run: Path, body: bool) -> None:
        # HTTP/1.0 without a Content-Length: the zip ends when the connection closes.
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Disposition", f'attachment; filename="{run.parent.name}-{run.name}.zip"')
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if body:
            write_zip(self.wfile, run, self._server.store_real)


@click.command()
@click.option("--store", type=click.Path(file_okay=False, exists=True, path_type=Path), default=Path("store"),
              show_default=True, help="The run store to browse.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on (anything but loopback lets others read the store).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The port to listen on (0: any free port).")
@click.option("--quiet", is_flag=True, help="Do not log each request.")
def serve(store: Path, host: str, port: int, quiet: bool) -> None:
    """Browse the run store in a web browser: every run with its verdict,
    anomalies and faults, its report, history, results and logs, and a zip of
    it. Ctrl-C stops the server."""
    try:
        server = make_server(store, host, port, log=None if quiet else lambda m: click.echo(m, err=True))
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    threading.Thread(target=server.index.warm, name="serve-warm", daemon=True).start()
    click.echo(f"serving {store} at {server.url} (Ctrl-C stops)")
    if not server.loopback:
        click.echo(f"warning: listening on {host}: anyone who can reach it can read the store", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
