"""A small closed-loop HTTP/1.1 load generator: N keep-alive connections for a fixed time.

Used by bench.py for every system under test, so all are driven the same way.  Targets must be
on the loopback interface.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    """Latencies (seconds) of successful requests, error count and elapsed time."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


async def _connection(host: str, port: int, request: bytes, stop_at: float,
                      result: LoadResult) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            if head[9:12] == b"200":
                result.latencies.append(time.perf_counter() - start)
            else:
                result.errors += 1
    finally:
        writer.close()


async def run_load(url: str, body: bytes, concurrency: int, duration: float,
                   content_type: str = "application/json") -> LoadResult:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if not host.startswith("127.") and host != "localhost":
        raise ValueError("load is only ever sent to the loopback interface")
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    result = LoadResult()
    start = time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(*(_connection(host, parts.port or 80, request, stop_at, result)
                           for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result
