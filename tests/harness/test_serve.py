"""`harness serve` (harness/serve.py): the index of a store built here (order,
verdicts, links, sorting, paging, runs without a readable result), the files
of a run with their content types, the zip of a run, and every way a path
could leave the store, against a real server on a free loopback port."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from click.testing import CliRunner

from harness import serve as serve_mod
from harness.cli import HarnessGroup
from harness.serve import RunIndex, StoreServer, index_page, last_line, make_server, serve, serving

SECRET = "TOP-SECRET-OUTSIDE-THE-STORE"


def make_run(store: Path, name: str, stamp: str, *, valid: Any = True, anomalies: tuple[str, ...] = (),
             nemesis: tuple[str, ...] = (), started: str | None = None, duration: float | None = None,
             last_time_ns: int = 5_000_000_000, results: str | None = None) -> Path:
    """A run directory as `harness run` leaves it, small."""
    run = store / name / stamp
    (run / "nodes" / "n1" / "log").mkdir(parents=True)
    (run / "test.json").write_text(json.dumps({
        "name": name, "system": "kvnode", "system_name": "kvnode", "backend": "local", "nodes": 1,
        "workload": "register", "nemesis": list(nemesis), "seed": 42, "time_limit": 5}))
    ops = [{"index": 0, "time": 1000, "process": 0, "type": "invoke", "f": "read", "key": "k", "value": None},
           {"index": 1, "time": last_time_ns, "process": 0, "type": "ok", "f": "read", "key": "k", "value": None}]
    (run / "history.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))
    if results is None:
        data: dict[str, Any] = {"valid": valid, "checkers": {"linearizable": {
            "checker": "linearizable", "valid": valid, "counts": {},
            "anomalies": [{"type": t, "ops": [], "explanation": "", "details": {}} for t in anomalies],
            "details": {}, "reason": "ran out of time" if valid == "unknown" else None}}}
        if started is not None:
            data["started"] = started
        if duration is not None:
            data["duration_s"] = duration
        results = json.dumps(data)
    if results != "":
        (run / "results.json").write_text(results)
    (run / "harness.log").write_text("harness log\n")
    (run / "nodes" / "n1" / "log" / "kvnode.log").write_text("node log\n")
    for link in (store / "latest", store / name / "latest"):
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(run, link.parent))
    return run


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Four runs, one of each verdict and one corrupt; a secret beside the store."""
    store = tmp_path / "store"
    make_run(store, "alpha", "20240101T000000", valid=True, nemesis=("partition",), duration=12.5)
    make_run(store, "beta", "20240102T000000", valid=False, anomalies=("nonlinearizable",) * 3 + ("lost",),
             nemesis=("kill", "pause"), started="2024-01-02T00:00:00+00:00")
    make_run(store, "alpha", "20240103T000000", valid="unknown", last_time_ns=90_000_000_000)
    make_run(store, "gamma", "20240104T000000", results="{not json")
    (tmp_path / "secret.txt").write_text(SECRET)
    return store


@pytest.fixture
def server(store: Path) -> Iterator[StoreServer]:
    with serving(store) as srv:
        yield srv


def get(srv: StoreServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urlopen(Request(srv.url.rstrip("/") + path, headers=headers or {}), timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw_get(srv: StoreServer, target: bytes) -> tuple[int, bytes]:
    """Send the request target as it is, without a client's normalizing."""
    host, port = srv.server_address[:2]
    with socket.create_connection((str(host), port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def rows(page: bytes) -> list[tuple[str, str]]:
    """(test name, run stamp) of each row of the index, in order."""
    return re.findall(r'<tr><td><a href="/([^/"]+)/([^/"]+)/">', page.decode())


def test_index_lists_runs_newest_first_with_verdicts_and_links(server: StoreServer, store: Path) -> None:
    status, headers, body = get(server, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert rows(body) == [("gamma", "20240104T000000"), ("alpha", "20240103T000000"),
                          ("beta", "20240102T000000"), ("alpha", "20240101T000000")]
    page = body.decode()
    assert "4 runs" in page and "latest" not in re.sub(r"<title>.*?</title>", "", page)
    for verdict, colour in (("valid", "#6DB6FE"), ("unknown", "#FFAA26"), ("invalid", "#FEB5DA")):
        assert re.search(f'style="background:{colour}"( title="[^"]*")?>{verdict}</td>', page), verdict
    assert 'title="linearizable: ran out of time">unknown<' in page
    assert ">unreadable</td>" in page
    assert "lost &times;1, nonlinearizable &times;3" in page
    assert "kill, pause" in page and "partition" in page
    assert "12.5 s" in page  # results.json's duration_s
    assert "1 min 30 s" in page  # the last history line's time
    assert "2024-01-02 00:00:00 UTC" in page  # results.json's started
    assert "2024-01-03 00:00:00" in page  # the directory's name
    base = "/alpha/20240101T000000/"
    for link in ("history.jsonl", "results.json", "harness.log", "#node-n1"):
        assert f'href="{base}{link}"' in page
    assert 'href="/alpha/20240101T000000.zip"' in page
    assert f"harness report {store / 'alpha' / '20240101T000000'}" in page  # no report.html yet
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained

    (store / "alpha" / "20240101T000000" / "report.html").write_text("<html>report</html>")
    page = get(server, "/")[2].decode()
    assert f'href="{base}report.html"' in page
    status, headers, body = get(server, f"{base}report.html")
    assert (status, headers["Content-Type"], body) == (200, "text/html; charset=utf-8", b"<html>report</html>")


def test_results_missing_or_corrupt_is_listed(store: Path, server: StoreServer) -> None:
    (store / "beta" / "20240102T000000" / "results.json").unlink()
    (store / "alpha" / "20240101T000000" / "results.json").write_text('["a list, not a verdict"]')
    (store / "alpha" / "20240103T000000" / "test.json").write_bytes(b"\xff\xfe not utf-8")
    (store / "delta" / "20240105T000000").mkdir(parents=True)  # a run that stored nothing yet
    status, _, body = get(server, "/")
    assert status == 200
    assert len(rows(body)) == 5
    page = body.decode()
    assert page.count(">unreadable</td>") == 2 and page.count(">no result</td>") == 2
    for sort in serve_mod.SORTS:
        assert get(server, f"/?sort={sort}")[0] == 200


@pytest.mark.parametrize(("query", "expected"), [
    ("sort=verdict&order=asc", ["beta", "alpha/20240103T000000", "gamma", "alpha/20240101T000000"]),
    ("sort=verdict&order=desc", ["alpha/20240101T000000", "gamma", "alpha/20240103T000000", "beta"]),
    ("sort=name&order=asc", ["alpha/20240103T000000", "alpha/20240101T000000", "beta", "gamma"]),
    ("sort=name&order=desc", ["gamma", "beta", "alpha/20240103T000000", "alpha/20240101T000000"]),
    ("sort=start&order=asc", ["alpha/20240101T000000", "beta", "alpha/20240103T000000", "gamma"]),
    ("sort=anomalies&order=desc", ["beta", "gamma", "alpha/20240103T000000", "alpha/20240101T000000"]),
    ("sort=faults&order=asc", ["gamma", "alpha/20240103T000000", "beta", "alpha/20240101T000000"]),
    ("sort=duration&order=desc", ["alpha/20240103T000000", "alpha/20240101T000000", "gamma", "beta"]),
    ("sort=nonsense&order=sideways", ["gamma", "alpha/20240103T000000", "beta", "alpha/20240101T000000"]),
])
def test_sorting(server: StoreServer, query: str, expected: list[str]) -> None:
    status, _, body = get(server, f"/?{query}")
    assert status == 200
    shown = [name if name != "alpha" else f"{name}/{stamp}" for name, stamp in rows(body)]
    assert shown == expected


def test_sort_links_toggle_the_order(server: StoreServer) -> None:
    page = get(server, "/?sort=verdict&order=asc")[2].decode()
    assert 'href="?sort=verdict&amp;order=desc">verdict ▲</a>' in page
    assert 'href="?sort=duration&amp;order=desc">duration</a>' in page


def test_paging(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for i in range(120):
        make_run(store, f"t{i % 3}", f"20240101T{i // 60:02d}{i % 60:02d}00",
                 valid=[True, False, "unknown"][i % 3], duration=float(i))
    srv = make_server(store, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        seen: list[tuple[str, str]] = []
        for n, size in ((1, 50), (2, 50), (3, 20)):
            page = get(srv, f"/?page={n}")[2]
            assert len(rows(page)) == size
            assert f"page {n} of 3" in page.decode() and "120 runs" in page.decode()
            assert ('rel="next"' in page.decode()) == (n < 3)
            assert ('rel="prev"' in page.decode()) == (n > 1)
            seen += rows(page)
        assert seen == sorted(seen, key=lambda r: r[1], reverse=True) and len(set(seen)) == 120
        assert rows(get(srv, "/?page=99")[2]) == rows(get(srv, "/?page=3")[2])  # clamped to the last
        assert rows(get(srv, "/?page=x")[2]) == rows(get(srv, "/")[2])
        # Sorting holds across pages: the next link keeps it.
        page2 = get(srv, "/?sort=duration&order=asc&page=2")[2].decode()
        assert 'href="?sort=duration&amp;order=asc&amp;page=3"' in page2
        durations = [float(d) for d in re.findall(r'class="num">([\d.]+) s<', page2)]
        assert durations == [float(i) for i in range(50, 60)]  # then "1 min 00 s" ...
        assert len(rows(get(srv, "/?per=7")[2])) == 7
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=10)


def test_files_are_served_with_content_types(server: StoreServer) -> None:
    base = "/alpha/20240101T000000"
    for path, kind in (("test.json", "application/json; charset=utf-8"),
                       ("history.jsonl", "text/plain; charset=utf-8"),
                       ("harness.log", "text/plain; charset=utf-8"),
                       ("nodes/n1/log/kvnode.log", "text/plain; charset=utf-8")):
        status, headers, _ = get(server, f"{base}/{path}")
        assert (status, headers["Content-Type"]) == (200, kind), path
    # The store's own latest links are fine.
    status, _, body = get(server, "/latest/test.json")
    assert status == 200 and json.loads(body)["name"] == "gamma"
    assert get(server, "/alpha/latest/history.jsonl")[0] == 200
    # A run lists its files; a test directory lists nothing; a run without its slash is redirected.
    status, _, body = get(server, f"{base}/")
    assert status == 200 and 'id="node-n1"' in body.decode() and 'href="nodes/n1/log/kvnode.log"' in body.decode()
    assert get(server, "/alpha/")[0] == 404
    assert get(server, base)[0] == 200  # urllib follows the redirect
    assert raw_get(server, base.encode())[0] == 301
    assert get(server, f"{base}/no-such-file")[0] == 404


def test_zip_download_holds_the_run(server: StoreServer, store: Path) -> None:
    status, headers, body = get(server, "/beta/20240102T000000.zip")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    assert 'filename="beta-20240102T000000.zip"' in headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {f"beta-20240102T000000/{f}" for f in (
            "test.json", "history.jsonl", "results.json", "harness.log", "nodes/n1/log/kvnode.log")}
        run = store / "beta" / "20240102T000000"
        assert zf.read("beta-20240102T000000/history.jsonl") == (run / "history.jsonl").read_bytes()
    status, _, body = get(server, "/latest.zip")
    assert status == 200 and "gamma-20240104T000000/test.json" in zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert get(server, "/alpha.zip")[0] == 404  # a test directory is not a run
    assert get(server, "/alpha/20990101T000000.zip")[0] == 404


TRAVERSALS = [
    b"/../secret.txt", b"/../../../../etc/passwd", b"/alpha/../../secret.txt", b"/alpha/./../../secret.txt",
    b"/%2e%2e/secret.txt", b"/%2E%2E/%2E%2E/etc/passwd", b"/alpha/%2e%2e/%2e%2e/secret.txt",
    b"/..%2fsecret.txt", b"/%2e%2e%2f%2e%2e%2fetc%2fpasswd", b"/%252e%252e/secret.txt",
    b"/%252e%252e%252fsecret.txt", b"/..\\secret.txt", b"/..%5csecret.txt", b"/alpha\\..\\..\\secret.txt",
    b"//etc/passwd", b"/%2fetc/passwd", b"/etc/passwd", b"http://127.0.0.1/../secret.txt",
    b"/alpha/20240101T000000/test.json%00.txt", b"/alpha/20240101T000000/test.json\x00",
    b"/..%c0%afsecret.txt", b"/.%2e/secret.txt", b"/latest/../../secret.txt", b"/../secret.txt.zip",
    b"/%2e%2e.zip",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode(errors="replace") for t in TRAVERSALS])
def test_traversal_is_refused(server: StoreServer, target: bytes) -> None:
    status, body = raw_get(server, target)
    assert status in (403, 404)
    assert SECRET.encode() not in body and b"root:" not in body


def test_symlinks_out_of_the_store_are_refused(server: StoreServer, store: Path, tmp_path: Path) -> None:
    run = store / "alpha" / "20240101T000000"
    # A sibling whose name starts like the store's: a prefix check would let it through.
    sibling = tmp_path / "store-evil"
    sibling.mkdir()
    (sibling / "secret.txt").write_text(SECRET)
    (run / "passwd").symlink_to("/etc/passwd")
    (run / "sibling").symlink_to(sibling)
    (run / "secret.txt").symlink_to(tmp_path / "secret.txt")
    (run / "inside.json").symlink_to(run / "test.json")  # inside the store: fine
    (store / "evil").symlink_to(sibling)
    for path in ("passwd", "sibling/secret.txt", "sibling/", "secret.txt"):
        status, body = raw_get(server, f"/alpha/20240101T000000/{path}".encode())
        assert status in (403, 404), path
        assert SECRET.encode() not in body and b"root:" not in body
    assert raw_get(server, b"/evil/secret.txt")[0] in (403, 404)
    assert get(server, "/alpha/20240101T000000/inside.json")[0] == 200
    listing = get(server, "/alpha/20240101T000000/")[2].decode()
    assert "passwd" not in listing and "sibling" not in listing and "secret" not in listing
    body = get(server, "/alpha/20240101T000000.zip")[2]
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        names = zf.namelist()
        assert not [n for n in names if "passwd" in n or "secret" in n or "sibling" in n]
        assert all(SECRET.encode() not in zf.read(n) for n in names)
    assert "evil" not in get(server, "/")[2].decode()


def test_other_host_names_are_refused_on_loopback(server: StoreServer) -> None:
    assert get(server, "/", headers={"Host": "attacker.example"})[0] == 403
    assert get(server, "/", headers={"Host": f"localhost:{server.server_address[1]}"})[0] == 200


def test_summaries_follow_changed_files(store: Path) -> None:
    index = RunIndex(store.resolve())
    assert ">valid</td>" in index_page(index, store, {"sort": ["verdict"], "order": ["desc"]})
    run = store / "alpha" / "20240101T000000"
    (run / "results.json").write_text(json.dumps({"valid": False, "checkers": {}, "note": "changed"}))
    page = index_page(index, store, {"sort": ["verdict"], "order": ["desc"]})
    assert ">valid</td>" not in page and page.count(">invalid</td>") == 2


@pytest.mark.parametrize(("content", "expected"), [
    (b"", None), (b"\n\n", None), (b"one", b"one"), (b"one\n", b"one"), (b"one\ntwo\n", b"two"),
    (b"a\n" * 10000 + b"last\n\n", b"last"), (b"x" * 20000 + b"\n" + b"y" * 9000, b"y" * 9000),
])
def test_last_line(tmp_path: Path, content: bytes, expected: bytes | None) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    assert last_line(path) == expected
    assert last_line(tmp_path / "missing") is None


def test_command_help_and_bad_arguments(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(serve, ["--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--store" in result.output
    for port in ("abc", "70000", "-1"):
        result = runner.invoke(serve, ["--store", str(tmp_path), "--port", port])
        assert result.exit_code == 2 and "Invalid value for '--port'" in result.output, port
    result = runner.invoke(serve, ["--store", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output
    # As the harness registers it: a usage error exits 254.
    group = HarnessGroup(commands={"serve": serve})
    assert runner.invoke(group, ["serve", "--port", "http"]).exit_code == 254


def test_command_prints_its_url_and_stops_on_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[StoreServer] = []

    def interrupted(self: StoreServer, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    real_close = StoreServer.server_close

    def close(self: StoreServer) -> None:
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(StoreServer, "serve_forever", interrupted)
    monkeypatch.setattr(StoreServer, "server_close", close)
    result = CliRunner().invoke(serve, ["--store", str(tmp_path), "--port", "0"])
    assert result.exit_code == 0, result.output
    assert re.search(r"serving .* at http://127\.0\.0\.1:\d+/", result.output)
    assert "stopped" in result.output and len(closed) == 1


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(serve, ["--store", str(tmp_path), "--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
