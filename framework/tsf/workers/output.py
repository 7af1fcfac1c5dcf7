"""A worker's stdout and stderr as log records: lines cut to a bounded length, levels, a budget.

The front end reads a worker's output in chunks and never stops reading while the process
lives, whatever it writes: a line longer than ``MAX_LINE`` bytes is logged cut, with a marker
saying how much was left out, and lines beyond ``LINES_PER_SECOND`` per stream are counted and
dropped (one line reports how many), so that a noisy handler neither blocks on a full pipe nor
floods the front end's log.
"""

from __future__ import annotations

import logging
import re
import time

MAX_LINE = 16 * 1024       # bytes of one line that reach the log
CHUNK = 64 * 1024          # bytes read from the pipe at a time
LINES_PER_SECOND = 1000    # per stream; the rest are counted, not logged

# the worker's log format starts with the level name (see tsf.runtime.main)
LEVEL_PREFIX = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
TRACEBACK = "Traceback (most recent call last):"
CRASH = "Fatal Python error:"  # faulthandler's first line


class LineSplitter:
    """Bytes in, whole lines out; a line over ``max_line`` bytes keeps its start and a marker."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._line = bytearray()
        self._cut = 0  # bytes of the current line left out

    def feed(self, data: bytes) -> list[str]:
        lines, start = [], 0
        while (end := data.find(b"\n", start)) >= 0:
            self._keep(data[start:end])
            lines.append(self._finish())
            start = end + 1
        self._keep(data[start:])
        return lines

    def flush(self) -> list[str]:
        """The last line if the output did not end with a newline."""
        return [self._finish()] if self._line or self._cut else []

    def _keep(self, piece: bytes) -> None:
        room = max(0, self.max_line - len(self._line))
        self._line += piece[:room]
        self._cut += max(0, len(piece) - room)

    def _finish(self) -> str:
        text = self._line.decode("utf-8", "replace").rstrip("\r")
        if self._cut:
            text += f" ... [cut {self._cut} bytes]"
        self._line = bytearray()
        self._cut = 0
        return text


class LevelReader:
    """The level of each stderr line of a worker.

    A line that starts with a level name (the worker's log format) has that level; a line that
    does not continues the record above it (the traceback under ``log.error``); a bare
    ``Traceback``, or faulthandler's ``Fatal Python error`` (a crash), starts an ERROR record.
    """

    def __init__(self, default: int = logging.INFO) -> None:
        self.current = default

    def level(self, line: str) -> int:
        match = LEVEL_PREFIX.match(line)
        if match:
            self.current = logging.getLevelName(match.group(1))
        elif line.startswith((TRACEBACK, CRASH)):
            self.current = logging.ERROR
        return self.current


class LineBudget:
    """At most ``per_second`` lines a second; counts the lines refused."""

    def __init__(self, per_second: int = LINES_PER_SECOND) -> None:
        self.per_second = per_second
        self._window = time.monotonic()
        self._used = 0
        self.dropped = 0

    def take(self) -> bool:
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._used = now, 0
        if self._used < self.per_second:
            self._used += 1
            return True
        self.dropped += 1
        return False

    def report_dropped(self) -> int:
        """Lines dropped since the last call (and reset the count)."""
        dropped, self.dropped = self.dropped, 0
        return dropped
