"""Between tsf and vLLM: sampling parameters in, text deltas and answers out.

vLLM reports each request's choices (``RequestOutput.outputs``, each a ``CompletionOutput`` with
``index``, cumulative ``text`` and ``token_ids``, ``finish_reason``) as they grow;
:class:`Choices` turns those into the text each choice gained since the last report and, once
all are finished, tsf's answer.
"""

from __future__ import annotations

from typing import Any

from tsf.generation.request import SamplingParams


def sampling_arguments(params: SamplingParams, n: int, prompt_tokens: int,
                       max_len: int) -> dict[str, Any]:
    """``vllm.SamplingParams(**...)`` for one prompt of a request."""
    arguments: dict[str, Any] = {
        "n": n, "temperature": params.temperature, "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "max_tokens": params.max_tokens or max(1, max_len - prompt_tokens),
        "min_tokens": params.min_tokens, "stop": list(params.stop) or None,
        "stop_token_ids": list(params.stop_token_ids) or None,
        "ignore_eos": params.ignore_eos, "skip_special_tokens": True,
    }
    if params.seed is not None:
        arguments["seed"] = params.seed % 2**63
    return arguments


class Choices:
    """The choices of one prompt: what each gained, and how they ended."""

    def __init__(self, first_index: int) -> None:
        self.first = first_index  # the request-wide index of this prompt's choice 0
        self.texts: dict[int, str] = {}
        self.tokens: dict[int, list[int]] = {}
        self.finished: dict[int, str] = {}

    def update(self, outputs: list[Any]) -> list[tuple[int, str]]:
        """Take vLLM's outputs (cumulative); the (choice, new text) pairs since the last."""
        deltas = []
        for output in outputs:
            before = self.texts.get(output.index, "")
            text = output.text or ""
            if len(text) > len(before):
                deltas.append((self.first + output.index, text[len(before):]))
            self.texts[output.index] = text
            self.tokens[output.index] = list(output.token_ids or ())
            if output.finish_reason is not None:
                reason = "length" if output.finish_reason == "length" else "stop"
                self.finished[output.index] = reason
        return deltas

    def answer_choices(self, stream: bool) -> list[dict]:
        return [{"index": self.first + i, "text": "" if stream else self.texts.get(i, ""),
                 "finish_reason": self.finished.get(i, "stop"),
                 "token_ids": self.tokens.get(i, [])} for i in sorted(self.texts)]
