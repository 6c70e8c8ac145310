"""Which programs libfaketime cannot skew (`harness.backends.binaries`),
read from real files on this machine: Debian's etcd (a dynamically linked Go
binary), this Python, scripts that `#!/usr/bin/env` them, and a statically
linked program built here with `gcc -static`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends import binaries
from harness.backends.binaries import GO_REASON, STATIC_REASON, blindness, refusal

ETCD = Path("/usr/bin/etcd")
needs_etcd = pytest.mark.skipif(not ETCD.is_file(), reason="no /usr/bin/etcd (Debian: etcd-server)")


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def static_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A statically linked program, built here (gcc and a static libc needed)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build a statically linked program with")
    where = tmp_path_factory.mktemp("static")
    (where / "hello.c").write_text("int main(void) { return 0; }\n")
    built = subprocess.run([gcc, "-static", "-o", str(where / "hello"), str(where / "hello.c")],
                           capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"gcc -static failed (no static libc? Debian: libc6-dev): {built.stderr.strip()[-200:]}")
    return where / "hello"


@needs_etcd
def test_a_dynamically_linked_go_program_is_blind() -> None:
    found = blindness([str(ETCD), "--version"])
    assert found is not None and found.reason == GO_REASON and found.program == found.binary == str(ETCD)
    assert found.describe() == f"{ETCD}, {GO_REASON}"
    # Found on PATH, and behind `env`, as execvp and env would find it.
    assert blindness(["etcd"], path=f"/nonexistent:{ETCD.parent}") == found
    behind_env = blindness(["env", "ETCDCTL_API=3", "-u", "HOME", "etcd", "--name", "n1"])
    assert behind_env is not None and behind_env.binary == str(ETCD) and behind_env.reason == GO_REASON


@needs_etcd
def test_a_script_run_by_a_go_program_is_blind(tmp_path: Path) -> None:
    for line in ("#!/usr/bin/env etcd", f"#!{ETCD} --data-dir /tmp/x", "#!/usr/bin/env -S etcd --name x"):
        path = script(tmp_path, "run-etcd", f"{line}\n")
        found = blindness([str(path)])
        assert found is not None and found.binary == str(ETCD), line
        assert found.describe() == f"{path}, a script run by {ETCD}, {GO_REASON}"


def test_python_and_a_python_script_are_fine(tmp_path: Path) -> None:
    assert blindness([sys.executable, "-m", "kvnode", "serve"]) is None
    assert blindness(["python3", "-c", "pass"]) is None
    path = script(tmp_path, "tool.py", "#!/usr/bin/env python3\nprint('hi')\n")
    assert blindness([str(path)]) is None
    assert blindness(["/bin/sh", "-c", "exec etcd"]) is None  # what a shell line runs is not ours to guess


def test_a_statically_linked_program_is_blind(tmp_path: Path, static_binary: Path) -> None:
    found = blindness([str(static_binary)])
    assert found is not None and found.reason == STATIC_REASON
    path = script(tmp_path, "wrapped", f"#!{static_binary}\n")
    wrapped = blindness([str(path)])
    assert wrapped is not None and wrapped.binary == str(static_binary) and wrapped.program == str(path)


def test_what_cannot_be_found_or_read_is_not_judged(tmp_path: Path) -> None:
    assert blindness([]) is None
    assert blindness(["no-such-program-here"]) is None
    assert blindness([str(tmp_path / "missing")]) is None
    text = tmp_path / "notes.txt"
    text.write_text("not a program\n")
    assert blindness([str(text)]) is None
    assert blindness([str(script(tmp_path, "orphan", "#!/nonexistent/interpreter\n"))]) is None
    loop = script(tmp_path, "loop", "#!/bin/true\n")  # a shebang chain that ends in a plain program
    assert blindness([str(loop)]) is None


def test_the_command_line_answers_one_json_line(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{ETCD.parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "harness.backends.binaries", sys.executable, "-V"],
                          capture_output=True, text=True, check=True, env=env)
    assert json.loads(done.stdout) == {"program": sys.executable, "blind": None}
    usage = subprocess.run([sys.executable, "-m", "harness.backends.binaries"], capture_output=True, text=True,
                           check=False)
    assert usage.returncode == 1 and "usage" in json.loads(usage.stdout)["error"]
    if ETCD.is_file():
        done = subprocess.run([sys.executable, "-m", "harness.backends.binaries", "etcd"],
                              capture_output=True, text=True, check=True, env=env)
        assert json.loads(done.stdout)["blind"] == f"{ETCD}, {GO_REASON}"


def test_the_refusal_names_the_node_the_program_and_what_to_do() -> None:
    assert refusal("n1", f"{ETCD}, {GO_REASON}") == (
        f"n1 runs {ETCD}, a Go program: Go reads the clock without libc, so libfaketime cannot skew it "
        '(use the ssh backend with clock = "real")')
    assert binaries.REAL_CLOCK_ADVICE in refusal("n2", "x")
