"""The web processes' access log, written in batches.

One line per request written on its own costs a write to the pipe and wakes the supervisor that prefixes and
copies the line (`veratur up`), for every request: at a thousand lookups a second that is a thousand wake-ups of
a second process. Here lines are kept (already formatted, each with its own time) and written together, at most
`INTERVAL_S` late or every `MAX_LINES` lines; warnings and errors are not batched (they go through the root
logger as before), and whatever is kept is written when the process stops.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from typing import TextIO

from aiohttp import web

INTERVAL_S = 0.5
MAX_LINES = 256


class BatchedLines(logging.Handler):
    def __init__(self, stream: TextIO, interval_s: float = INTERVAL_S, max_lines: int = MAX_LINES) -> None:
        super().__init__()
        self._stream, self._interval, self._max = stream, interval_s, max_lines
        self._lines: list[str] = []
        self._last = time.monotonic()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        with self._guard:
            self._lines.append(line)
            due = len(self._lines) >= self._max or time.monotonic() - self._last >= self._interval
        if due:
            self.flush()

    def flush(self) -> None:
        with self._guard:
            lines, self._lines = self._lines, []
            self._last = time.monotonic()
        if lines:
            with contextlib.suppress(OSError, ValueError):
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()


def install(app: web.Application, logger: logging.Logger) -> BatchedLines:
    """Batch `logger`'s lines (formatted like the root logger's) while `app` runs; flushed on a timer too."""
    handler = BatchedLines(sys.stderr)
    root = logging.getLogger().handlers
    if root and root[0].formatter is not None:
        handler.setFormatter(root[0].formatter)
    logger.addHandler(handler)
    logger.propagate = False

    async def _flusher(_app: web.Application) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(INTERVAL_S)
                handler.flush()
        task = asyncio.get_running_loop().create_task(loop())

        async def _stop(_app: web.Application) -> None:
            task.cancel()
            handler.flush()
        app.on_cleanup.append(_stop)

    app.on_startup.append(_flusher)
    return handler
