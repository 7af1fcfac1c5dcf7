"""Text in and out: prompts as token ids, and generated tokens as text as they come.

:func:`prompt_ids` renders a chat with the tokenizer's chat template, or tokenizes a completion
prompt (token ids are taken as they are).  :class:`TextStream` turns one sequence's tokens into
text incrementally: a token that ends inside a multi-byte character, or whose text still depends
on the tokens after it, gives no text until it is settled; text that could be the start of a stop
string is held back until it is not, so a stop string never reaches the client, and the text
ends just before it.
"""

from __future__ import annotations

from typing import Any

from tsf.generation.request import CHAT, GenerationRequest, InvalidRequest

CONTEXT_TOKENS = 5  # prompt tokens decoded before the first generated one (spacing is right)


def prompt_ids(tokenizer: Any, request: GenerationRequest, vocab_size: int) -> list[list[int]]:
    """The token ids of each prompt of ``request`` (one for a chat)."""
    if request.kind == CHAT:
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest("this model's tokenizer has no chat template; send the text to "
                                 "/v1/completions instead", "messages")
        try:
            ids = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True,
                                                tokenize=True, return_dict=False)
        except Exception as exc:  # a template may refuse a conversation (raise_exception)
            raise InvalidRequest(f"the model's chat template refused these messages: {exc}",
                                 "messages") from None
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return [list(ids)]
    out = []
    for i, prompt in enumerate(request.prompts or ()):
        if isinstance(prompt, str):
            out.append(list(tokenizer(prompt)["input_ids"]))
        else:
            if max(prompt) >= vocab_size:
                raise InvalidRequest(f"prompt[{i}] holds token id {max(prompt)}, outside the "
                                     f"model's vocabulary of {vocab_size}", "prompt")
            out.append(list(prompt))
    for ids in out:
        if not ids:
            raise InvalidRequest("the prompt is empty once tokenized", "prompt")
    return out


class TextStream:
    """The text of one sequence's generated tokens, released as it settles."""

    def __init__(self, tokenizer: Any, prompt: list[int], stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt[-CONTEXT_TOKENS:])
        self.prefix = 0                    # decoding window start
        self.read = len(self.ids)          # tokens already turned into text
        self.text = ""                     # the settled text so far
        self.sent = 0                      # characters of it released
        self.stops = stops
        self.longest_stop = max((len(s) for s in stops), default=0)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token: int) -> tuple[str, bool]:
        """Take one token: (text to release now, whether a stop string ended the text)."""
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The text not released yet, the sequence having ended (not by a stop string)."""
        rest = self._decode(self.ids[self.prefix:])
        before = self._decode(self.ids[self.prefix:self.read])
        if len(rest) > len(before):
            self.text += rest[len(before):]
            self.read = len(self.ids)
        return self._release(final=True)[0]

    def _release(self, final: bool) -> tuple[str, bool]:
        if self.stops:
            start = max(0, self.sent - self.longest_stop)
            found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if found:
                self.text = self.text[:min(found)]
                return self._take(len(self.text)), True
        end = len(self.text) if final else len(self.text) - self._held()
        return self._take(end), False

    def _held(self) -> int:
        """Characters at the end that could begin a stop string."""
        for size in range(min(self.longest_stop - 1, len(self.text) - self.sent), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stops):
                return size
        return 0

    def _take(self, end: int) -> str:
        piece = self.text[self.sent:max(end, self.sent)]
        self.sent += len(piece)
        return piece
