"""Wall-clock skew for node processes, with libfaketime: where the library is,
and a per-node control file that the clock nemesis rewrites while the node runs.

A node started with `ClockControl.env()` in its environment preloads
libfaketime, which reads the control file on every wall-clock reading
(`FAKETIME_NO_CACHE=1`; about 7 us a call instead of 0.2 us, which a node that
reads the wall clock a few times a request does not notice) and adds the
offset written there. The monotonic clock is left alone
(`FAKETIME_DONT_FAKE_MONOTONIC=1`), so the node's timeouts, failure detector
and sleeps keep real time while its timestamps, log lines and hint ages move:
the skew a real NTP failure causes.

    control = ClockControl(run_dir / "nodes" / "n1" / "clock.faketime")
    subprocess.Popen(argv, env={**os.environ, **control.env()})
    control.set_offset(+30.0)   # n1's time.time() is 30 s ahead from now on
    control.set_offset(0)       # and back

Which libfaketime (`find_libfaketime`), in this order, each accepted only if a
child Python started under it sees its wall clock shifted, its monotonic
clock not shifted, and can sleep and wait on locks, queues and an event loop:

1. `$HARNESS_LIBFAKETIME`, a path, for a library built by hand;
2. the build vendored by the PyPI package `libfaketime` (a dependency of this
   project; we locate it without importing the package, which pulls in pytz
   and dateutil);
3. the distribution's `libfaketime.so.1` (Debian/Ubuntu's package
   `libfaketime`). Debian's 0.9.10 fails the check: with
   `FAKETIME_DONT_FAKE_MONOTONIC=1` its `clock_nanosleep` wrapper makes
   Python's `time.sleep` raise EINVAL, which would crash every node. We do
   not fall back to a library that fails the check; a later fixed
   distribution build passes it and is used.

The check costs one short child process per candidate, once per process.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["ClockControl", "env", "find_libfaketime", "format_offset", "libfaketime_missing_reason"]

OVERRIDE_VAR = "HARNESS_LIBFAKETIME"
SYSTEM_PATHS = (
    Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
    Path("/usr/lib/faketime/libfaketime.so.1"),
    Path("/usr/lib64/faketime/libfaketime.so.1"),
    Path("/usr/local/lib/faketime/libfaketime.so.1"),
)
INSTALL_HINT = "pip install libfaketime (its wheel vendors a working libfaketime.so.1)"

# The probe's offset: large enough that no real clock drift passes for it.
_PROBE_OFFSET_S = 1000.0
_PROBE = """
import asyncio, queue, threading, time
wall, mono = time.time(), time.monotonic()
time.sleep(0.01)
threading.Event().wait(0.01)
try:
    queue.Queue().get(timeout=0.01)
except queue.Empty:
    pass
asyncio.run(asyncio.sleep(0.01))
print(wall, mono)
"""


def format_offset(seconds: float) -> str:
    """libfaketime's relative-offset syntax: "+12.5s", "-3s", "+0s"."""
    text = f"{seconds:+.6f}".rstrip("0").rstrip(".")
    return ("+0" if text in ("+", "-", "-0", "+0") else text) + "s"


def env(control_file: Path, library: Path | None = None) -> dict[str, str]:
    """The environment additions that start a process under libfaketime, its
    wall clock offset by what `control_file` says. `library` defaults to
    `find_libfaketime()`; raises RuntimeError if there is none."""
    if library is None:
        library = find_libfaketime()
        if library is None:
            raise RuntimeError(f"no usable libfaketime: {libfaketime_missing_reason()}")
    return {
        "LD_PRELOAD": str(library.resolve()),
        "FAKETIME_TIMESTAMP_FILE": str(Path(control_file).resolve()),
        # Re-read the control file on every reading, so a rewrite takes effect at once.
        "FAKETIME_NO_CACHE": "1",
        # Wall clock only: timeouts and sleeps must keep real time. Both
        # spellings, since libfaketime versions differ in which they read.
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "DONT_FAKE_MONOTONIC": "1",
        # As the PyPI package sets it: with monotonic time unfaked, the
        # "monotonic fix" for pthread_cond_timedwait is not needed, and
        # (measured) turning it off keeps timed waits exact.
        "FAKETIME_FORCE_MONOTONIC_FIX": "0",
    }


def _clean_environ(base: dict[str, str]) -> dict[str, str]:
    """`base` without libfaketime settings that would override ours: a
    `FAKETIME` variable, for one, takes precedence over the control file."""
    return {k: v for k, v in base.items() if not k.startswith("FAKETIME") and k != "DONT_FAKE_MONOTONIC"}


def child_environ(control_file: Path, extra: dict[str, str] | None = None,
                  library: Path | None = None) -> dict[str, str]:
    """A whole environment for a child under libfaketime: ours, minus any
    inherited libfaketime settings, plus `extra`, plus `env(...)`; an
    inherited or given LD_PRELOAD is kept after libfaketime."""
    merged = _clean_environ({**os.environ, **(extra or {})})
    faked = env(control_file, library)
    preload = " ".join(p for p in (faked["LD_PRELOAD"], merged.get("LD_PRELOAD", "")) if p)
    return {**merged, **faked, "LD_PRELOAD": preload}


def _probe(library: Path) -> str:
    """Why `library` will not do ("" if it will): run a child Python under
    it at +1000 s and check what it saw."""
    if not library.is_file():
        return f"{library} does not exist"
    with tempfile.TemporaryDirectory(prefix="harness-faketime-probe-") as tmp:
        control = Path(tmp) / "probe.faketime"
        control.write_text(format_offset(_PROBE_OFFSET_S) + "\n")
        try:
            before_wall, before_mono = time.time(), time.monotonic()
            done = subprocess.run(
                [sys.executable, "-c", _PROBE], env=child_environ(control, library=library),
                capture_output=True, text=True, timeout=20, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{library}: a Python child under it failed to run: {e}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"{library}: a Python child under it failed ({last})"
    try:
        wall, mono = (float(x) for x in done.stdout.split())
    except ValueError:
        return f"{library}: unexpected probe output {done.stdout!r:.100}"
    if abs(wall - before_wall - _PROBE_OFFSET_S) > 60:
        return f"{library}: the wall clock did not move by the control file's offset"
    if abs(mono - before_mono) > 60:
        return f"{library}: the monotonic clock moved too"
    return ""


def _vendored() -> Path | None:
    spec = importlib.util.find_spec("libfaketime")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "vendor" / "libfaketime" / "src" / "libfaketime.so.1"


@functools.cache
def _lookup() -> tuple[Path | None, str]:
    reasons: list[str] = []
    override = os.environ.get(OVERRIDE_VAR)
    candidates: list[Path] = []
    if override:
        candidates.append(Path(override))
    vendored = _vendored()
    if vendored is not None:
        candidates.append(vendored)
    else:
        reasons.append("the PyPI package libfaketime is not installed")
    candidates += [p for p in SYSTEM_PATHS if p.is_file()]
    for candidate in candidates:
        why = _probe(candidate)
        if not why:
            return candidate, ""
        reasons.append(why)
    return None, "; ".join([*reasons, INSTALL_HINT])


def find_libfaketime() -> Path | None:
    """The libfaketime.so.1 to preload (checked to work with this Python),
    or None; `libfaketime_missing_reason()` then says why."""
    return _lookup()[0]


def libfaketime_missing_reason() -> str:
    """Why `find_libfaketime()` is None, and what to install; "" if found."""
    return _lookup()[1]


class ClockControl:
    """One node's libfaketime control file. Making one writes offset +0, so
    a node can always be started under it; the file must exist while the
    node runs (without it, libfaketime falls back to ~/.faketimerc)."""

    def __init__(self, path: Path, library: Path | None = None) -> None:
        """`library`: the libfaketime to preload (default: `find_libfaketime()`,
        looked up when `env()` is called)."""
        self.path = Path(path)
        self._library = library
        self._offset = 0.0
        self.set_offset(0.0)

    @property
    def offset(self) -> float:
        return self._offset

    def env(self) -> dict[str, str]:
        """Environment additions for a process to follow this file."""
        return env(self.path, self._library)

    def set_offset(self, seconds: float) -> None:
        """Offset the wall clock of every process following this file by
        `seconds` (relative to true time; 0 resets). Atomic: a reader sees
        the old file or the new one, never a half-written one."""
        text = format_offset(float(seconds)) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._offset = float(seconds)

    def remove(self) -> None:
        """Delete the control file (after the processes following it ended)."""
        self.path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"ClockControl({str(self.path)!r}, offset={self._offset:+g})"
