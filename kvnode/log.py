"""Structured logging: one JSON object per line, one event per object.

    {"ts": 1764301234.123456, "node": "n1", "event": "put", "key": "6b31", ...}

Lines go to stderr or to the file given by `--log`. Timestamps come from the
node's clock (so a skewed clock shows in the log, as it would in production).
Bytes are written as hex.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any

from .clock import Clock


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


class EventLog:
    def __init__(self, node: str, clock: Clock, stream: IO[str] | None = None) -> None:
        self._node = node
        self._clock = clock
        self._stream = stream or sys.stderr

    def event(self, name: str, **fields: Any) -> None:
        record = {"ts": round(self._clock.wall_ns() / 1e9, 6), "node": self._node, "event": name}
        record.update({k: _plain(v) for k, v in fields.items()})
        self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._stream not in (sys.stderr, sys.stdout):
            self._stream.close()
