"""Monitoring routes: ground truth on the inference port, what a model's monitoring sees and its
drift baseline on the management port.

* ``POST /feedback/{model}``: ``{"id", "label", "groups"}`` or a list of them (see
  :mod:`tsf.monitoring.feedback`): 200 ``{"accepted": n}``, 404 for an unknown model or id,
  409 for a prediction labelled already, 400 for a malformed body;
* ``GET /models/{m}/monitoring``: per version, its capture settings and the latest quality,
  fairness and drift figures;
* ``PUT /models/{m}/monitoring/baseline[?version=v]``: a baseline file as the body (``tsf
  monitor baseline`` writes and sends one); ``DELETE`` drops it (a capture baseline is then
  collected again).
"""

from __future__ import annotations

from typing import Any

from ..json_body import load_json
from .api_handler import ApiHandler, BodyHandler


class FeedbackHandler(BodyHandler):
    async def post(self, model: str) -> None:
        document = load_json(self.body() or b"null", "feedback body")
        self.write_json(await self.services.monitor.feedback(model, document))


class MonitoringHandler(ApiHandler):
    def get(self, model: str) -> None:
        self.write_json(self.services.monitor.describe(model))


class BaselineHandler(BodyHandler):
    def version(self) -> str | None:
        return self.get_query_argument("version", None) or None

    async def put(self, model: str) -> None:
        document = load_json(self.body() or b"null", "baseline")
        self.write_json(await self.services.monitor.set_baseline(model, self.version(),
                                                                 document))

    async def delete(self, model: str) -> None:
        self.write_json(await self.services.monitor.set_baseline(model, self.version(), None))


def inference_routes(options: dict[str, Any]) -> list:
    return [(r"/feedback/([^/]+)", FeedbackHandler, options)]


def management_routes(options: dict[str, Any]) -> list:
    return [(r"/models/([^/]+)/monitoring", MonitoringHandler, options),
            (r"/models/([^/]+)/monitoring/baseline", BaselineHandler, options)]
