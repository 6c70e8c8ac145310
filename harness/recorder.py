"""The history as the run records it: every invocation and completion of the
clients and the nemesis, with a dense index and the time since the test
started, appended to `history.jsonl` and flushed as it happens (so a crash of
the harness leaves a checkable history), plus live counts for the status line.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from checkers.history import OpType, Process
from harness.history import HistoryWriter


class Recorder:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._writer = HistoryWriter(path, fsync=fsync)
        self._t0 = time.monotonic_ns()
        self._index = 0
        self.counts: Counter[str] = Counter()  # "ok", "fail", "info", "invoke" for client ops

    def elapsed(self) -> float:
        return (time.monotonic_ns() - self._t0) / 1e9

    def record(self, process: Process, type: OpType, f: str, *, key: Any = None, value: Any = None,
               node: str | None = None, error: str | None = None, extra: dict[str, Any] | None = None) -> int:
        """Append one op; returns its index."""
        index = self._index
        self._writer.write_fields(index, time.monotonic_ns() - self._t0, process, type, f, key, value, node,
                                  error, extra)
        self._index += 1
        if process != "nemesis":
            self.counts[type] += 1
        return index

    def close(self) -> None:
        self._writer.close()
