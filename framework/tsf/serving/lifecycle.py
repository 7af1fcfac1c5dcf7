"""The server's lifecycle phase (serving, draining, stopping) and its count of open HTTP requests.

Drain, as a SIGTERM starts it: readiness fails at once, the listeners close, requests already
accepted (or arriving on connections already open) are finished and answered with
``Connection: close``; once none is left, or ``graceful_shutdown_timeout`` has passed, the server
stops.  While stopping, anything that still arrives gets a 503.
"""

from __future__ import annotations

import asyncio
import enum
import time


class Phase(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"
    STOPPING = "stopping"


class Lifecycle:
    """Where the server is in its life, and how many HTTP requests it is still answering."""

    def __init__(self) -> None:
        self.phase = Phase.SERVING
        self.open_requests = 0
        self.drain_started: float | None = None
        self._idle: asyncio.Event | None = None

    @property
    def serving(self) -> bool:
        return self.phase is Phase.SERVING

    def request_opened(self) -> None:
        self.open_requests += 1

    def request_closed(self) -> None:
        self.open_requests -= 1
        if self.open_requests <= 0 and self._idle is not None:
            self._idle.set()

    def start_draining(self) -> None:
        if self.phase is Phase.SERVING:
            self.phase = Phase.DRAINING
            self.drain_started = time.monotonic()

    def start_stopping(self) -> None:
        self.phase = Phase.STOPPING

    async def requests_finished(self, timeout: float) -> bool:
        """Wait until no HTTP request is open; False if ``timeout`` passed first."""
        if self.open_requests <= 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            self._idle = None
