"""Send every metric tsf records to a StatsD server, as ``name:value|type|#tag:value,...``.

Off unless ``TSF_STATSD_ADDRESS`` (``host:port``) is set: the entry point then is an object
with no hooks, so tsf does not route metrics through plugins at all.  Counters become ``c``,
gauges ``g`` and histograms ``ms`` (seconds are sent as milliseconds; other histograms as
``h``).  Labels become DogStatsD tags.  ``TSF_STATSD_PREFIX`` prefixes every name.  Sending
never blocks or raises: a full buffer or an absent server drops the datagram.
"""

from __future__ import annotations

import os
import socket

TYPES = {"counter": "c", "gauge": "g"}


def format_line(prefix: str, name: str, kind: str, value: float, labels: dict) -> bytes:
    if kind == "histogram" and name.endswith("_seconds"):
        kind_code, value = "ms", value * 1000.0
    else:
        kind_code = TYPES.get(kind, "h")
    tags = ",".join(f"{k}:{v}" for k, v in sorted(labels.items()))
    line = f"{prefix}{name}:{value:g}|{kind_code}" + (f"|#{tags}" if tags else "")
    return line.encode()


class StatsdExporter:
    """Implements ``tsf_record_metric`` with one UDP datagram per value."""

    def __init__(self, host: str, port: int, prefix: str = "") -> None:
        self.address = (host, port)
        self.prefix = prefix
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def tsf_record_metric(self, name: str, kind: str, value: float, labels: dict) -> None:
        try:
            self.sock.sendto(format_line(self.prefix, name, kind, value, labels), self.address)
        except OSError:
            pass


class Disabled:
    """Registered when no address is configured: contributes no hooks."""


def from_env() -> object:
    address = os.environ.get("TSF_STATSD_ADDRESS", "").strip()
    if not address:
        return Disabled()
    host, _, port = address.rpartition(":")
    return StatsdExporter(host or "127.0.0.1", int(port), os.environ.get("TSF_STATSD_PREFIX", ""))


plugin = from_env()
