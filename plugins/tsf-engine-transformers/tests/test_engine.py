"""The engine in process: continuous batching that stays exact, cancellation, sampling, stop
strings, incremental text."""

from __future__ import annotations

import queue
import random
import threading
import time

import pytest

torch = pytest.importorskip("torch")

from tsf.errors import TsfError
from tsf.generation.engine import Outbox
from tsf.generation.request import InvalidRequest, parse_request


class Recorder(Outbox):
    """Collects what the engine reports, per request."""

    def __init__(self) -> None:
        self.texts: dict = {}
        self.answers: dict = {}
        self.errors: dict = {}
        self.events: queue.SimpleQueue = queue.SimpleQueue()

    def text(self, key, choice, text):
        self.texts.setdefault(key, []).append((choice, text))

    def done(self, key, answer):
        self.answers[key] = answer
        self.events.put(key)

    def failed(self, key, error: TsfError):
        self.errors[key] = error
        self.events.put(key)

    def flush(self):
        pass

    def wait(self, keys, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not set(keys) <= set(self.answers) | set(self.errors):
            self.events.get(timeout=max(0.01, deadline - time.monotonic()))


class Context:
    def __init__(self, model_dir):
        self.model_dir = str(model_dir)
        self.device = "cpu"


@pytest.fixture(scope="module")
def engine(tiny_llm):
    from tsf_engine_transformers.engine import TransformersEngine

    engine = TransformersEngine.create(Context(tiny_llm), {"max_num_sequence": 4,
                                                          "max_model_len": 256,
                                                          "prefill_chunk": 64})
    outbox = Recorder()
    engine.start(outbox)
    yield engine, outbox
    engine.close()


def generate(engine, prompt, max_tokens, **kwargs):
    with torch.inference_mode():
        out = engine.model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens,
                                    attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                    do_sample=False, **kwargs)
    return out[0, len(prompt):].tolist()


def completion(prompt, **fields):
    return parse_request({"prompt": prompt, "temperature": 0, **fields}, "completion")


def test_greedy_equals_generate_while_sequences_join_and_leave(engine):
    """Prompts of 3 to 150 tokens (the long ones prefilled in chunks) arrive while others
    decode, in more sequences than there are slots; each equals generate() alone."""
    engine, outbox = engine
    rng = random.Random(1)
    lengths = [3, 17, 40, 9, 150, 24, 70, 5]
    prompts = [[rng.randrange(6, 900) for _ in range(n)] for n in lengths]
    limits = [rng.choice([8, 20, 33]) for _ in lengths]
    keys = []
    for i, (prompt, limit) in enumerate(zip(prompts, limits)):
        key = ("greedy", i)
        engine.submit(key, completion(prompt, max_tokens=limit))
        keys.append(key)
        time.sleep(0.01 * (i % 3))  # arrivals spread over the running steps
    outbox.wait(keys)
    for key, prompt, limit in zip(keys, prompts, limits):
        assert key not in outbox.errors, outbox.errors.get(key)
        got = outbox.answers[key]["choices"][0]["token_ids"]
        assert got == generate(engine, prompt, limit), key


def test_a_step_carries_several_sequences_and_a_late_short_request_finishes_first(engine):
    engine, outbox = engine
    engine.stats()  # forget earlier steps
    long_key, short_key = ("long", 0), ("short", 0)
    engine.submit(long_key, completion("the model", max_tokens=150, ignore_eos=True))
    time.sleep(0.05)
    engine.submit(short_key, completion("hello", max_tokens=3, ignore_eos=True))
    outbox.wait([short_key])
    assert long_key not in outbox.answers  # the late short one did not wait for the long one
    outbox.wait([long_key])
    steps = engine.stats().steps
    assert max(steps) >= 2, steps
    assert outbox.answers[long_key]["choices"][0]["finish_reason"] == "length"
    assert len(outbox.answers[long_key]["choices"][0]["token_ids"]) == 150


def test_cancel_frees_the_slot_at_the_next_step(engine):
    engine, outbox = engine
    key = ("cancel", 0)
    engine.submit(key, completion("a worker", max_tokens=200, ignore_eos=True))
    deadline = time.monotonic() + 30
    while engine.stats().running == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    engine.cancel(key)
    outbox.wait([key])
    assert outbox.errors[key].status == 499
    assert engine.stats().running == 0
    assert engine.stats().cache_used == 0


def test_seeded_sampling_is_the_same_alone_and_in_a_busy_batch(engine):
    engine, outbox = engine
    fields = dict(prompt="the scheduler", max_tokens=24, temperature=0.9, top_p=0.9, top_k=40,
                  seed=7, ignore_eos=True)
    engine.submit(("seed", "alone"), parse_request(fields, "completion"))
    outbox.wait([("seed", "alone")])
    noise = [("seed", f"noise{i}") for i in range(3)]
    for i, key in enumerate(noise):
        engine.submit(key, parse_request(dict(fields, seed=100 + i, prompt="x" * (i + 1)),
                                         "completion"))
    engine.submit(("seed", "busy"), parse_request(fields, "completion"))
    outbox.wait(noise + [("seed", "busy")])
    alone = outbox.answers[("seed", "alone")]["choices"][0]["token_ids"]
    assert alone == outbox.answers[("seed", "busy")]["choices"][0]["token_ids"]
    other = outbox.answers[noise[0]]["choices"][0]["token_ids"]
    assert other != alone


def test_n_choices_and_streamed_text_add_up_to_the_answer(engine):
    engine, outbox = engine
    key = ("n", 0)
    request = parse_request({"messages": [{"role": "user", "content": "hi caf\u00e9"}],
                             "n": 2, "max_tokens": 12, "temperature": 1.0, "seed": 3,
                             "stream": True}, "chat")
    engine.submit(key, request)
    outbox.wait([key])
    answer = outbox.answers[key]
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    streamed = {0: "", 1: ""}
    for choice, text in outbox.texts.get(key, []):
        streamed[choice] += text
    for choice in answer["choices"]:
        expected = engine.tokenizer.decode(
            [t for t in choice["token_ids"] if t not in engine.eos_ids], skip_special_tokens=True)
        assert streamed[choice["index"]] == expected
    assert answer["usage"]["completion_tokens"] == sum(len(c["token_ids"])
                                                       for c in answer["choices"])


def test_stop_strings_end_the_text_before_them(engine):
    engine, outbox = engine
    free = ("stop", "free")
    engine.submit(free, completion("the model", max_tokens=40, ignore_eos=True))
    outbox.wait([free])
    text = engine.tokenizer.decode(outbox.answers[free]["choices"][0]["token_ids"],
                                   skip_special_tokens=True)
    stop = text[len(text) // 2:len(text) // 2 + 3]
    assert stop.strip(), text
    key = ("stop", "cut")
    engine.submit(key, completion("the model", max_tokens=40, ignore_eos=True, stop=[stop],
                                  stream=True))
    outbox.wait([key])
    choice = outbox.answers[key]["choices"][0]
    assert choice["finish_reason"] == "stop"
    streamed = "".join(t for _, t in outbox.texts.get(key, []))
    assert streamed == text[:text.index(stop)]
    assert stop not in streamed


def test_input_the_engine_cannot_take_is_refused_with_the_field_named(engine):
    engine, _ = engine
    with pytest.raises(InvalidRequest) as caught:
        engine.submit(("bad", 0), completion("word " * 300))
    assert caught.value.openai_code == "context_length_exceeded"
    with pytest.raises(InvalidRequest) as caught:
        engine.submit(("bad", 1), completion("hello there", max_tokens=255))
    assert caught.value.param == "max_tokens"
    with pytest.raises(InvalidRequest):
        engine.submit(("bad", 2), completion([5, 99999]))
    with pytest.raises(InvalidRequest):
        engine.submit(("bad", 3), parse_request({"input": "x"}, "embedding"))


def test_text_stream_holds_back_partial_characters_and_stop_prefixes(tiny_llm):
    from transformers import AutoTokenizer
    from tsf_engine_transformers.text import TextStream

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    text = "Q: caf\u00e9 \u4e16\u754c ok END tail"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer, [1], ["END"])
    pieces = []
    stopped = False
    for token in ids:
        piece, stopped = stream.add(token)
        assert "\ufffd" not in piece
        pieces.append(piece)
        if stopped:
            break
    assert stopped
    assert "".join(pieces) == "Q: caf\u00e9 \u4e16\u754c ok "
    assert threading.active_count() >= 1
