"""Weighted traffic split between a model's versions, with sticky routing by a key.

A request that names no version goes to a version drawn by the weights.  A request that carries
a routing key (the ``X-Routing-Key`` header) is placed by a hash of the key instead of a random
draw, so the same key lands on the same version for as long as the weights stand.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any, Iterable, Mapping

from ..errors import BadRequest

ROUTING_HEADER = "X-Routing-Key"
MODEL_VERSION_HEADER = "X-Model-Version"  # on every answer: the version that served it


def parse_weights(document: Any, versions: Iterable[str]) -> dict[str, float]:
    """Validated weights from a ``PUT /models/{m}/traffic`` body; BadRequest when invalid.

    ``document`` must be a non-empty object of registered version -> non-negative finite number,
    with at least one weight above zero.
    """
    if not isinstance(document, dict) or not document:
        raise BadRequest('traffic weights must be a non-empty JSON object such as '
                         '{"1.0": 90, "2.0": 10}')
    known = set(versions)
    weights: dict[str, float] = {}
    for version, weight in document.items():
        if version not in known:
            raise BadRequest(f"version {version!r} is not registered for this model "
                             f"(registered: {', '.join(sorted(known))})")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) \
                or not math.isfinite(weight):
            raise BadRequest(f"the weight of version {version!r} must be a number, got "
                             f"{weight!r:.50}")
        if weight < 0:
            raise BadRequest(f"the weight of version {version!r} must be >= 0, got {weight}")
        weights[version] = float(weight)
    if sum(weights.values()) <= 0:
        raise BadRequest("at least one version needs a weight above 0")
    return weights


def key_point(key: str) -> float:
    """A stable point in [0, 1) for a routing key (the same in every process and run)."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def header_value(headers: Mapping[str, Any], name: str) -> str | None:
    """``name``'s value in ``headers``, matched without regard to case (gRPC metadata is
    lower-case)."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted and isinstance(value, str):
            return value
    return None


def routing_key(headers: Mapping[str, Any]) -> str | None:
    """A request's sticky routing key (its ``X-Routing-Key`` header), if it has one."""
    return header_value(headers, ROUTING_HEADER)


class TrafficSplit:
    """Weights over a model's versions and the choice of a version for one request."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        total = sum(weights.values())
        self.weights = dict(weights)
        self._cumulative: list[tuple[float, str]] = []
        running = 0.0
        for version in sorted(weights):  # sorted: the same key maps the same way every time
            if weights[version] > 0:
                running += weights[version] / total
                self._cumulative.append((running, version))

    def choose(self, routing_key: str | None = None) -> str:
        """The version for a request: by the key's hash when given, else at random."""
        point = key_point(routing_key) if routing_key is not None else random.random()
        for bound, version in self._cumulative:
            if point < bound:
                return version
        return self._cumulative[-1][1]

    def percentages(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {v: round(100.0 * w / total, 4) for v, w in sorted(self.weights.items())}

    def without(self, version: str) -> "TrafficSplit | None":
        """The split once ``version`` is unregistered: the others keep their relative weights;
        None when no version with a weight above zero is left."""
        rest = {v: w for v, w in self.weights.items() if v != version}
        if sum(rest.values()) <= 0:
            return None
        return TrafficSplit(rest)
