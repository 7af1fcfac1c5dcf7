"""Metrics API (port 8082): ``GET /metrics`` in Prometheus text format."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .api_handler import ApiHandler

_SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


class MetricsHandler(ApiHandler):
    """All metrics, or only those named by ``?name[]=...`` (as TorchServe)."""

    def get(self) -> None:
        registry = self.services.metrics.registry
        names = self.get_query_arguments("name[]") or self.get_query_arguments("name")
        if names:  # family names: expand to the sample names prometheus_client filters on
            registry = registry.restricted_registry(
                [n + suffix for n in names for suffix in _SAMPLE_SUFFIXES])
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(registry))


def routes(options: dict[str, Any]) -> list:
    return [(r"/metrics", MetricsHandler, options)]
