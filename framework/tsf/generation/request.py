"""Generation and embedding requests: the checked form of an OpenAI request body.

The OpenAI routes parse a body with :func:`parse_request` (a 400 in OpenAI's terms for anything
wrong) and send the worker :meth:`GenerationRequest.to_json`; the worker parses that again with
the same function, so a body that reaches it another way (``POST /predictions/{model}``) is
held to the same rules.  Limits that need the tokenizer (a prompt longer than the context) are
the engine's to check.

The worker answers a generation with::

    PARTIAL  {"c": choice, "t": text}                    a streamed request's next text
    RESULT   {"choices": [{"index", "text", "finish_reason", "token_ids"}],
              "usage": {"prompt_tokens", "completion_tokens"},
              "timing": {"ttft": s, "itl": [s, ...]}}    text left out when it was streamed

and an embedding request with ``{"data": [[float, ...], ...], "usage": {"prompt_tokens"}}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadRequest

CHAT, COMPLETION, EMBEDDING = "chat", "completion", "embedding"
KINDS = (CHAT, COMPLETION, EMBEDDING)
ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_CHOICES = 16        # n x prompts, per request
MAX_STOP = 4            # stop strings, as OpenAI allows
MAX_STOP_LENGTH = 256   # characters of one stop string
MAX_INPUTS = 2048       # embedding inputs per request, as OpenAI allows
FINISH_REASONS = ("stop", "length")


class InvalidRequest(BadRequest):
    """A 400 that names the offending field (``param``) and, where OpenAI has one, its error
    ``code`` (``context_length_exceeded``)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.param = param
        self.openai_code = code

    def to_dict(self) -> dict:
        document = super().to_dict()
        if self.param is not None:
            document["param"] = self.param
        if self.openai_code is not None:
            document["openai_code"] = self.openai_code
        return document


@dataclass
class SamplingParams:
    """How the tokens of one choice are picked; ``temperature`` 0 is greedy."""

    max_tokens: int | None = None   # None: up to the end of the context
    min_tokens: int = 0             # end-of-sequence is not taken before this many tokens
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                  # 0: off
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationRequest:
    """A chat, completion or embedding request, checked."""

    kind: str
    messages: list[dict] | None = None           # chat: [{"role", "content": str}]
    prompts: list[str | list[int]] | None = None  # completion and embedding: text or token ids
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    return_token_ids: bool = False  # vLLM's extension: each choice's token ids in the answer
    model: str = ""

    @property
    def choices(self) -> int:
        """Sequences generated: ``n`` for each prompt."""
        return self.n * (1 if self.kind == CHAT else len(self.prompts or ()))

    def to_json(self) -> bytes:
        document: dict[str, Any] = {"tsf_kind": self.kind, "model": self.model}
        if self.kind == EMBEDDING:
            document["input"] = self.prompts
            return json.dumps(document).encode()
        if self.kind == CHAT:
            document["messages"] = self.messages
        else:
            document["prompt"] = self.prompts
        document.update({k: v for k, v in asdict(self.params).items() if v is not None})
        document.update(n=self.n, stream=self.stream, return_token_ids=self.return_token_ids)
        if self.stream:
            document["stream_options"] = {"include_usage": self.include_usage}
        return json.dumps(document).encode()


def parse_request(document: Any, kind: str | None = None) -> GenerationRequest:
    """The request ``document`` (a parsed JSON body) describes; ``kind`` is the route's, else
    read from the body (``tsf_kind``; ``messages`` means chat, ``input`` embedding)."""
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if kind is None:
        kind = document.get("tsf_kind")
        if kind is None:
            kind = CHAT if "messages" in document else \
                EMBEDDING if "input" in document else COMPLETION
        if kind not in KINDS:
            raise InvalidRequest(f"tsf_kind must be one of {', '.join(KINDS)}", "tsf_kind")
    model = document.get("model", "")
    if not isinstance(model, str):
        raise InvalidRequest("model must be a string", "model")
    if kind == EMBEDDING:
        return _embedding(document, model)
    request = GenerationRequest(kind, model=model)
    if kind == CHAT:
        request.messages = _messages(document.get("messages"))
    else:
        request.prompts = _prompts(document.get("prompt"), "prompt")
    request.params = _sampling(document)
    request.n = _integer(document, "n", 1, 1, MAX_CHOICES)
    request.stream = _boolean(document, "stream", False)
    request.return_token_ids = _boolean(document, "return_token_ids", False)
    options = document.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("stream_options must be an object", "stream_options")
        if not request.stream:
            raise InvalidRequest("stream_options is only allowed with stream: true",
                                 "stream_options")
        request.include_usage = _boolean(options, "include_usage", False,
                                         "stream_options.include_usage")
    if request.choices > MAX_CHOICES:
        raise InvalidRequest(f"n x prompts is {request.choices}; at most {MAX_CHOICES} choices "
                             "per request", "n")
    _refuse_unsupported(document)
    return request


def _embedding(document: dict, model: str) -> GenerationRequest:
    prompts = _prompts(document.get("input"), "input", MAX_INPUTS)
    fmt = document.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise InvalidRequest("encoding_format must be float or base64", "encoding_format")
    if document.get("dimensions") is not None:
        raise InvalidRequest("dimensions is not supported: the model's own size is returned",
                             "dimensions")
    return GenerationRequest(EMBEDDING, prompts=prompts, model=model)


def _messages(value: Any) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("messages must be a non-empty array of messages", "messages")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object with role and content", where)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLES)}, got "
                                 f"{json.dumps(role)[:60]}", f"{where}.role")
        out.append({"role": role, "content": _content(message.get("content"), where)})
    return out


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or an array of text parts (joined)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{where}.content[{j}] must be a text part "
                                     '{"type": "text", "text": "..."}: this model reads text '
                                     "only", f"{where}.content")
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequest(f"{where}.content must be a string or an array of text parts",
                         f"{where}.content")


def _prompts(value: Any, name: str, limit: int = MAX_CHOICES) -> list[str | list[int]]:
    """A string, an array of strings, an array of token ids or an array of such arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(_is_token(t) for t in value):
            return [list(value)]
        if len(value) > limit:
            raise InvalidRequest(f"{name} holds {len(value)} entries; at most {limit}", name)
        prompts: list[str | list[int]] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                prompts.append(item)
            elif isinstance(item, list) and item and all(_is_token(t) for t in item):
                prompts.append(list(item))
            else:
                raise InvalidRequest(f"{name}[{i}] must be a string or a non-empty array of "
                                     "token ids", name)
        return prompts
    raise InvalidRequest(f"{name} must be a string, an array of strings or an array of token "
                         "ids", name)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _sampling(document: dict) -> SamplingParams:
    params = SamplingParams()
    limit = document.get("max_completion_tokens")
    key = "max_completion_tokens" if limit is not None else "max_tokens"
    if document.get(key) is not None:
        params.max_tokens = _integer(document, key, None, 1, 2**31 - 1)
    params.min_tokens = _integer(document, "min_tokens", 0, 0, 2**31 - 1)
    params.temperature = _number(document, "temperature", 1.0, 0.0, 2.0)
    params.top_p = _number(document, "top_p", 1.0, 0.0, 1.0)
    if params.top_p == 0.0:
        raise InvalidRequest("top_p must be greater than 0", "top_p")
    params.top_k = _integer(document, "top_k", 0, -1, 2**31 - 1)
    params.top_k = max(params.top_k, 0)  # -1 (vLLM's "off") or 0
    seed = document.get("seed")
    if seed is not None:
        params.seed = _integer(document, "seed", None, -2**63, 2**64 - 1)
    params.stop = _stop(document.get("stop"))
    ids = document.get("stop_token_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(_is_token(t) for t in ids):
            raise InvalidRequest("stop_token_ids must be an array of token ids", "stop_token_ids")
        params.stop_token_ids = list(ids)
    params.ignore_eos = _boolean(document, "ignore_eos", False)
    if params.max_tokens is not None and params.min_tokens > params.max_tokens:
        raise InvalidRequest("min_tokens must not exceed max_tokens", "min_tokens")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(document, name, 0.0, -2.0, 2.0) != 0.0:
            raise InvalidRequest(f"{name} is not supported by this server; leave it at 0", name)
    return params


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("stop must be a string or an array of strings", "stop")
    if len(stops) > MAX_STOP:
        raise InvalidRequest(f"stop holds {len(stops)} strings; at most {MAX_STOP}", "stop")
    if any(not s or len(s) > MAX_STOP_LENGTH for s in stops):
        raise InvalidRequest(f"each stop string must have 1 to {MAX_STOP_LENGTH} characters",
                             "stop")
    return list(stops)


def _refuse_unsupported(document: dict) -> None:
    """Fields that ask for what this server does not do get a 400, never silence."""
    for name in ("tools", "functions", "response_format", "logit_bias"):
        value = document.get(name)
        if value and not (name == "response_format" and value == {"type": "text"}):
            raise InvalidRequest(f"{name} is not supported by this server", name)
    for name in ("logprobs", "echo"):
        value = document.get(name)
        if value not in (None, False, 0):
            raise InvalidRequest(f"{name} is not supported by this server", name)


def _integer(document: dict, name: str, default: Any, low: int, high: int,
             label: str | None = None) -> Any:
    value = document.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{label or name} must be an integer", label or name)
    if not low <= value <= high:
        raise InvalidRequest(f"{label or name} must be between {low} and {high}, got {value}",
                             label or name)
    return value


def _number(document: dict, name: str, default: float, low: float, high: float) -> float:
    value = document.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number", name)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}, got {value:g}", name)
    return float(value)


def _boolean(document: dict, name: str, default: bool, label: str | None = None) -> bool:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{label or name} must be true or false", label or name)
    return value
