"""The live status line of `harness run`: elapsed time, operations ok / fail /
info so far, and the faults in force. On a terminal it is one line redrawn in
place (rich); otherwise (CI logs) a plain line every ten seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.live import Live as RichLive
from rich.text import Text

from harness.recorder import Recorder


class HasActive(Protocol):
    def active(self) -> list[str]: ...


class Live:
    def __init__(self, recorder: Recorder, nemesis: HasActive | None, *, enabled: bool = True,
                 echo: Callable[[str], None] | None = None, period: float | None = None) -> None:
        self.recorder, self.nemesis = recorder, nemesis
        self.enabled = enabled
        self.echo = echo or (lambda s: print(s, file=sys.stderr))
        self.tty = sys.stderr.isatty()
        self.period = period if period is not None else (0.5 if self.tty else 10.0)
        self._task: asyncio.Task[None] | None = None
        self._rich: RichLive | None = None

    def line(self) -> str:
        c = self.recorder.counts
        faults = ", ".join(self.nemesis.active()) if self.nemesis is not None else ""
        return (f"{self.recorder.elapsed():7.1f} s  ok {c['ok']}  fail {c['fail']}  info {c['info']}"
                f"  faults: {faults or 'none'}")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            if self._rich is not None:
                # auto_refresh is off (no thread of rich's own): each update draws
                self._rich.update(Text(self.line()), refresh=True)
            else:
                self.echo(self.line())

    async def __aenter__(self) -> Live:
        if self.enabled:
            if self.tty:
                self._rich = RichLive(Text(self.line()), console=Console(stderr=True), auto_refresh=False,
                                      transient=False)
                self._rich.start()
            self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._rich is not None:
            self._rich.update(Text(self.line()), refresh=True)
            self._rich.stop()
        elif self.enabled:
            self.echo(self.line())
