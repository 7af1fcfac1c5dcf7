"""``tsf batch``'s progress line (records done, rate, ETA) and its closing summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else \
        f"{rest // 60}:{rest % 60:02d}"


@dataclass
class Progress:
    """Counts records as they end; on a terminal redraws one line, elsewhere prints a line
    every ``every`` seconds."""

    total: int | None = None  # records to run (those an earlier run finished left out)
    skipped: int = 0  # done by an earlier run (--resume)
    failed_before: int = 0  # failures an earlier run reported
    succeeded: int = 0
    failed: int = 0
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    every: float = 10.0
    started: float = field(default_factory=time.monotonic)
    load_seconds: float = 0.0  # starting workers and loading the handler
    _shown: float = 0.0

    def loaded(self) -> None:
        """The handler is loaded: the rate counts from now (the load time is reported)."""
        now = time.monotonic()
        self.load_seconds, self.started = now - self.started, now

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        todo = self.total
        count = f"{self.done:,}" + (f"/{todo:,}" if todo is not None else "")
        share = f" {100.0 * self.done / todo:5.1f}%" if todo else ""
        eta = f" ETA {_clock((todo - self.done) / rate)}" if todo and rate > 0 else ""
        failed = f", {self.failed:,} failed" if self.failed else ""
        return f"{count}{share} {rate:,.1f} records/s{eta}{failed}"

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        tty = self.stream.isatty()
        if not force and now - self._shown < (0.2 if tty else self.every):
            return
        self._shown = now
        if tty:
            self.stream.write("\r\x1b[K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self.update(force=True)
        if self.stream.isatty():
            self.stream.write("\n")

    def summary(self, output: str, failures: str, interrupted: bool) -> str:
        elapsed = time.monotonic() - self.started
        loading = f" after {self.load_seconds:.1f} s loading the handler" \
            if self.load_seconds else ""
        lines = [f"{self.done:,} records in {elapsed:.1f} s ({self.rate():,.1f} records/s)"
                 f"{loading}: {self.succeeded:,} succeeded, {self.failed:,} failed"
                 + (f", {self.skipped:,} done by an earlier run" if self.skipped else ""),
                 f"results: {output}"]
        if self.failed_before:
            lines[0] += f" ({self.failed_before:,} failed in earlier runs)"
        if self.failed or self.failed_before:
            lines.append(f"failures: {failures}")
        if interrupted:
            lines.append("interrupted: run the same command with --resume to finish")
        return "\n".join(lines)
