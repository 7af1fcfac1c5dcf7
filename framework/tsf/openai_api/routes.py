"""The HTTP routes of OpenAI's API (``/v1/...``) and their TorchServe 0.12 aliases
(``/predictions/{model}[/{version}]/v1/...``), where the path names the model.

A request's ``model`` picks the registered model; traffic splits, shadows and the routing
header apply as for ``/predictions``.  A streamed answer is server-sent events; its status (200)
goes out with the first text, so an error found before then (a prompt longer than the context)
still gets its own status, and one found later ends the stream with an error event.  A client
that leaves mid-stream cancels its request: the engine frees its slot at its next step.

``GET /v1/models/{id}`` is also KServe v1's model readiness route: its answer carries both
shapes (OpenAI's model card and KServe's ``name`` and ``ready``).
"""

from __future__ import annotations

import json
from typing import Any

from ..dataplane import derive_request_id
from ..errors import ClientGone, ResourceNotFound, TsfError, check_response_size
from ..generation.request import EMBEDDING, InvalidRequest, parse_request
from ..json_body import load_json
from ..server.api_handler import ApiHandler
from ..server.model_request import ModelRequestHandler
from ..workers.messages import Answer, Part, Request
from . import spec


class OpenAIRoute(ApiHandler):
    """A route whose errors have OpenAI's body."""

    def error_document(self, error: TsfError) -> dict:
        return spec.error_body(error)


class GenerationRoute(OpenAIRoute, ModelRequestHandler):
    """``POST /v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings``."""

    completion: spec.Completion | None = None
    started = False  # the stream's head and first chunks went out
    broken = False  # the client left mid-stream

    async def post(self, path: str, model: str | None = None,
                   version: str | None = None) -> None:
        kind = spec.route_kinds()[path]
        document = load_json(self.body() or b"null", "body")
        request = parse_request(document, kind)
        name = model or request.model
        if not name:
            raise InvalidRequest("model is required: the name of a registered model", "model")
        request_id = derive_request_id(self.request.headers.get("X-Request-Id"))
        self.request_id = request_id
        route = ("/predictions/{model_name}/" if model else "/") + "v1/" + path
        with self.observed(route, name, "embed" if kind == EMBEDDING else "generate",
                           version or "default") as outcome:
            self.services.dataplane.check_generative(name, version)
            message = Request(request_id, [Part("body", request.to_json(), "application/json")],
                              dict(self.request.headers.get_all()))
            outcome.model_version, job = self.submit(name, version, message, outcome.span)
            self.set_header("X-Request-Id", request_id)
            served = request.model or name
            if request.stream:
                self.completion = spec.Completion(request, request_id, served)
                job.on_partial = self._partial
            try:
                answer = await job.future
            except ClientGone:
                outcome.code = ClientGone.status
                return
            except TsfError as error:
                if not self.started:
                    raise
                outcome.code = error.status
                self._end_stream(spec.error_event(error))
                return
            if answer.error or answer.status >= 400:
                error = spec.answer_error(answer.status, answer.body)
                if not self.started:
                    raise error
                outcome.code = error.status
                self._end_stream(spec.error_event(error))
                return
            result = json.loads(answer.body)
            _annotate(self.services.tracing, outcome.span, served, result)
            outcome.code = 200
            if kind == EMBEDDING:
                encoding = document.get("encoding_format") or "float"
                self._write_json(spec.embeddings(result, served, encoding))
            elif request.stream:
                self._begin_stream()
                self._end_stream(self.completion.closing(result))  # type: ignore[union-attr]
            else:
                self._write_json(spec.Completion(request, request_id, served).body(result))

    def _write_json(self, document: dict) -> None:
        body = json.dumps(document).encode()
        check_response_size(len(body), self.services.config.max_response_size)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def _partial(self, answer: Answer) -> None:
        """One streamed piece of text: a chunk, flushed at once."""
        if self.broken:
            return
        piece = json.loads(answer.body)
        self._begin_stream()
        self.write(self.completion.text_chunk(piece["c"], piece["t"]))  # type: ignore[union-attr]
        self.flush().add_done_callback(self._flushed)

    def _begin_stream(self) -> None:
        if self.started:
            return
        self.started = True
        self.set_status(200)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.write(self.completion.opening())  # type: ignore[union-attr]

    def _end_stream(self, closing: bytes) -> None:
        if not self.broken:
            self.finish(closing)

    def _flushed(self, future: Any) -> None:
        if future.exception() is not None:
            self.broken = True


class ModelsRoute(OpenAIRoute):
    """``GET /v1/models``: the models a generation engine serves (their default versions)."""

    def get(self, model: str | None = None, version: str | None = None) -> None:
        dataplane = self.services.dataplane
        if model is not None:  # TorchServe's alias lists the model its path names
            dataplane.check_generative(model, version)
            versions = [dataplane.manager.registry.get(model, version)]
        else:
            versions = dataplane.generative_models()
        self.write_json({"object": "list", "data": [_card(mv) for mv in versions]})


class ModelRoute(OpenAIRoute):
    """``GET /v1/models/{id}``: OpenAI's model card, with KServe v1's readiness beside it."""

    def get(self, model: str) -> None:
        mv = self.services.dataplane.manager.registry.get(model)
        self.write_json(dict(_card(mv), name=model,
                             ready=self.services.dataplane.model_ready(model, None)))

    def post(self, model: str) -> None:
        raise ResourceNotFound(f"POST /v1/models/{model} needs a verb: "
                               f"/v1/models/{model}:predict or :explain")


def _card(mv: Any) -> dict:
    engine = mv.engine or {}
    return spec.model_card(mv.name, mv.registered_at, version=mv.version,
                           **({"max_num_sequence": engine["max_sequences"]} if engine else {}))


def _annotate(tracing: Any, span: Any, model: str, document: dict) -> None:
    """The request's span gets its token counts (OpenTelemetry's gen_ai attributes)."""
    if span is None:
        return
    found = document.get("usage") or {}
    reasons = [c.get("finish_reason") for c in document.get("choices") or ()]
    tracing.annotate(span, {"gen_ai.request.model": model,
                            "gen_ai.usage.input_tokens": int(found.get("prompt_tokens", 0)),
                            "gen_ai.usage.output_tokens": int(found.get("completion_tokens", 0)),
                            "gen_ai.response.finish_reasons": [r for r in reasons if r]})


def routes(options: dict[str, Any]) -> list:
    model, version = r"(?P<model>[^/]+)", r"(?P<version>[^/]+)"
    path = r"(?P<path>chat/completions|completions|embeddings)"
    return [
        (rf"/v1/{path}", GenerationRoute, options),
        (r"/v1/models", ModelsRoute, options),
        (r"/v1/models/([^/:]+)", ModelRoute, options),
        (rf"/predictions/{model}/v1/{path}", GenerationRoute, options),
        (rf"/predictions/{model}/{version}/v1/{path}", GenerationRoute, options),
        (rf"/predictions/{model}/v1/models", ModelsRoute, options),
        (rf"/predictions/{model}/{version}/v1/models", ModelsRoute, options),
    ]

