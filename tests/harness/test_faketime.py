"""Clock skew through libfaketime (`harness.backends.faketime`), checked by
experiment on a real child process: its wall clock follows the control file
while it runs, its monotonic clock does not, and it can still sleep."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.backends import faketime
from harness.backends.faketime import (
    ClockControl,
    child_environ,
    env,
    find_libfaketime,
    format_offset,
    libfaketime_missing_reason,
)

LIBRARY = find_libfaketime()
needs_libfaketime = pytest.mark.skipif(
    LIBRARY is None, reason=f"no usable libfaketime: {libfaketime_missing_reason()}"
)

# Answers each line on stdin with: wall clock, monotonic clock before and
# after a 0.1 s sleep.
CHILD = """
import sys, time
for _ in sys.stdin:
    before = time.monotonic()
    time.sleep(0.1)
    print(time.time(), before, time.monotonic(), flush=True)
"""


def test_format_offset_uses_libfaketimes_relative_syntax() -> None:
    assert format_offset(12.5) == "+12.5s"
    assert format_offset(-3) == "-3s"
    assert format_offset(0) == format_offset(-0.0) == format_offset(1e-9) == "+0s"
    assert format_offset(-0.25) == "-0.25s"


def test_clock_control_writes_the_file_atomically(tmp_path: Path) -> None:
    control = ClockControl(tmp_path / "n1.faketime", Path("/nonexistent/libfaketime.so.1"))
    assert control.path.read_text() == "+0s\n"
    control.set_offset(12.5)
    assert control.path.read_text() == "+12.5s\n" and control.offset == 12.5
    control.set_offset(-3)
    assert control.path.read_text() == "-3s\n"
    assert [p.name for p in tmp_path.iterdir()] == ["n1.faketime"]  # no temporary left behind
    control.remove()
    assert not control.path.exists()


def test_env_names_the_library_and_control_file_absolutely(tmp_path: Path) -> None:
    library = tmp_path / "libfaketime.so.1"
    e = env(Path("relative.faketime"), library)
    assert e["LD_PRELOAD"] == str(library.resolve())
    assert Path(e["FAKETIME_TIMESTAMP_FILE"]).is_absolute()
    assert e["FAKETIME_NO_CACHE"] == "1"
    assert e["FAKETIME_DONT_FAKE_MONOTONIC"] == e["DONT_FAKE_MONOTONIC"] == "1"


def test_child_environ_drops_inherited_faketime_settings_that_would_win(tmp_path: Path) -> None:
    library = tmp_path / "libfaketime.so.1"
    merged = child_environ(tmp_path / "c", {"FAKETIME": "+1d", "LD_PRELOAD": "/other.so", "X": "1"}, library)
    assert "FAKETIME" not in merged  # it would override the control file
    assert merged["LD_PRELOAD"] == f"{library.resolve()} /other.so"
    assert merged["X"] == "1"


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    faketime._lookup.cache_clear()
    yield
    faketime._lookup.cache_clear()


@needs_libfaketime
def test_a_library_that_fails_the_probe_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_lookup: None
) -> None:
    bogus = tmp_path / "libfaketime.so.1"
    bogus.write_bytes(b"not a shared object")
    monkeypatch.setenv(faketime.OVERRIDE_VAR, str(bogus))
    assert find_libfaketime() == LIBRARY  # the next candidate that works


@needs_libfaketime
def test_child_wall_clock_follows_the_control_file_while_monotonic_time_and_sleep_stay_true(
    tmp_path: Path,
) -> None:
    control = ClockControl(tmp_path / "clock.faketime", LIBRARY)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=child_environ(control.path, library=LIBRARY), text=True,
    ) as child:
        try:
            _skew_follows_the_file(child, control)
        finally:
            child.kill()


def _skew_follows_the_file(child: subprocess.Popen[str], control: ClockControl) -> None:
    assert child.stdin is not None and child.stdout is not None
    for offset in (0.0, 3600.0, -7200.5, 0.0):
        control.set_offset(offset)  # while the child runs
        child.stdin.write("?\n")
        child.stdin.flush()
        wall, before, after = map(float, child.stdout.readline().split())
        assert after - before >= 0.1  # its 0.1 s sleep took 0.1 s
        assert wall - time.time() == pytest.approx(offset, abs=2.0)
        assert after - time.monotonic() == pytest.approx(0.0, abs=2.0)
