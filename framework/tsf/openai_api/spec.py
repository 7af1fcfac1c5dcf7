"""OpenAI's API as tsf speaks it: request bodies in, answer bodies out.

Every answer has OpenAI's shape (``chat.completion``, ``chat.completion.chunk``,
``text_completion``, ``list`` of ``embedding``, ``model``).  Errors carry OpenAI's body
``{"error": {"message", "type", "param", "code"}}`` beside tsf's own ``code``, ``type`` and
``message``, so both kinds of client read them.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any

from ..errors import TsfError, from_dict
from ..generation.request import CHAT, COMPLETION, EMBEDDING, GenerationRequest

OWNER = "tsf"
# HTTP status -> OpenAI's error type
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 409: "conflict_error",
               413: "invalid_request_error", 429: "rate_limit_error"}
ERROR_CODES = {"ModelNotFoundException": "model_not_found",
               "ModelVersionNotFoundException": "model_not_found",
               "ServiceUnavailableException": "service_unavailable",
               "WorkerDiedException": "service_unavailable"}


def error_body(error: TsfError) -> dict:
    """OpenAI's error body, with tsf's fields beside it."""
    document = error.to_dict()
    param = document.pop("param", None) or getattr(error, "param", None)
    code = document.pop("openai_code", None) or getattr(error, "openai_code", None) \
        or ERROR_CODES.get(error.type)
    openai_type = ERROR_TYPES.get(error.status, "invalid_request_error"
                                  if error.status < 500 else "server_error")
    document["error"] = {"message": error.message, "type": openai_type, "param": param,
                         "code": code}
    return document


def answer_error(status: int, body: bytes) -> TsfError:
    """The error a worker answered, with the field it named (``param``) kept."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict) or "message" not in document:
        return TsfError(body.decode("utf-8", "replace")[:1000] or f"the model answered {status}",
                        status=status)
    error = from_dict(document)
    error.param = document.get("param")  # type: ignore[attr-defined]
    error.openai_code = document.get("openai_code")  # type: ignore[attr-defined]
    return error


class Completion:
    """The answers to one chat or completion request: the whole body, or its stream."""

    def __init__(self, request: GenerationRequest, request_id: str, model: str) -> None:
        self.request = request
        self.chat = request.kind == CHAT
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + request_id
        self.object = "chat.completion" if self.chat else "text_completion"
        self.model = model
        self.created = int(time.time())

    def body(self, answer: dict) -> dict:
        """The whole answer (not streamed)."""
        choices = []
        for choice in answer.get("choices", ()):
            entry: dict[str, Any] = {"index": choice["index"]}
            if self.chat:
                entry["message"] = {"role": "assistant", "content": choice.get("text", "")}
            else:
                entry["text"] = choice.get("text", "")
            entry.update(logprobs=None, finish_reason=choice.get("finish_reason"))
            if self.request.return_token_ids:
                entry["token_ids"] = choice.get("token_ids", [])
            choices.append(entry)
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": choices,
                "usage": usage(answer)}

    # --- streaming ----------------------------------------------------------------------------
    def _chunk(self, choices: list[dict], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {"id": self.id, "object": self.object + (".chunk" if self.chat
                                                                          else ""),
                                 "created": self.created, "model": self.model,
                                 "system_fingerprint": None, "choices": choices}
        if self.request.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def _choice(self, index: int, text: str | None, finish: str | None = None,
                role: bool = False) -> dict:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}

    def opening(self) -> bytes:
        """The first chunks: each chat choice's role (nothing for completions)."""
        if not self.chat:
            return b""
        return b"".join(self._chunk([self._choice(i, "", role=True)])
                        for i in range(self.request.choices))

    def text_chunk(self, choice: int, text: str) -> bytes:
        return self._chunk([self._choice(choice, text)])

    def closing(self, answer: dict) -> bytes:
        """Each choice's finish reason, the usage chunk when asked for, then ``[DONE]``."""
        parts = []
        for c in answer.get("choices", ()):
            choice = self._choice(c["index"], None if self.chat else "", c.get("finish_reason"))
            if self.request.return_token_ids:
                choice["token_ids"] = c.get("token_ids", [])
            parts.append(self._chunk([choice]))
        if self.request.include_usage:
            parts.append(self._chunk([], usage=usage(answer)))
        parts.append(DONE)
        return b"".join(parts)


DONE = b"data: [DONE]\n\n"


def error_event(error: TsfError) -> bytes:
    """An error after the stream began: the openai client raises APIError on it."""
    return b"data: " + json.dumps(error_body(error)).encode() + b"\n\n" + DONE


def usage(answer: dict) -> dict:
    found = answer.get("usage") or {}
    prompt = int(found.get("prompt_tokens", 0))
    completion = int(found.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def embeddings(answer: dict, model: str, encoding: str) -> dict:
    """The embeddings list; ``base64`` packs each vector as little-endian float32."""
    data = []
    for index, vector in enumerate(answer.get("data", ())):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    prompt = int((answer.get("usage") or {}).get("prompt_tokens", 0))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}


def model_card(name: str, created: float, **extra: Any) -> dict:
    return {"id": name, "object": "model", "created": int(created), "owned_by": OWNER, **extra}


def route_kinds() -> dict[str, str]:
    """The generation routes, by the path after ``/v1/``."""
    return {"chat/completions": CHAT, "completions": COMPLETION, "embeddings": EMBEDDING}
