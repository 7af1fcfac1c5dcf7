"""The vLLM engine without vLLM: the error a model gets when vLLM is missing, and the
translation between tsf's requests and vLLM's outputs.  With vLLM and a GPU, a tiny model
generates through it."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from tsf_engine_vllm.convert import Choices, sampling_arguments

from tsf.errors import ModelLoadError
from tsf.generation.handler import engine_class
from tsf.generation.request import parse_request

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_the_engine_is_found_through_the_tsf_entry_points():
    assert engine_class("vllm").__name__ == "VLLMEngine"


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed: the missing-vLLM error cannot occur")
def test_without_vllm_a_model_fails_to_load_saying_how_to_install_it(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    context = SimpleNamespace(model_dir=str(tmp_path), model_config={}, worker_index=0)
    with pytest.raises(ModelLoadError, match=r"pip install 'tsf-engine-vllm\[vllm\]'"):
        engine_class("vllm").create(context, {"engine": "vllm", "max_num_sequence": 4})


def test_sampling_parameters_follow_the_request():
    request = parse_request({"prompt": "x", "max_tokens": 7, "temperature": 0, "top_k": -1,
                             "stop": ["\n"], "seed": -5, "n": 2, "min_tokens": 1,
                             "ignore_eos": True}, "completion")
    arguments = sampling_arguments(request.params, request.n, prompt_tokens=3, max_len=64)
    assert arguments == {"n": 2, "temperature": 0.0, "top_p": 1.0, "top_k": -1,
                         "max_tokens": 7, "min_tokens": 1, "stop": ["\n"],
                         "stop_token_ids": None, "ignore_eos": True,
                         "skip_special_tokens": True, "seed": (-5) % 2**63}
    unbounded = parse_request({"prompt": "x"}, "completion")
    assert sampling_arguments(unbounded.params, 1, 10, 64)["max_tokens"] == 54


def test_cumulative_outputs_become_deltas_and_an_answer():
    def output(index, text, tokens, reason=None):
        return SimpleNamespace(index=index, text=text, token_ids=tokens, finish_reason=reason)

    choices = Choices(first_index=2)  # the second prompt of a request with n=2
    assert choices.update([output(0, "Hel", [1]), output(1, "", [])]) == [(2, "Hel")]
    assert choices.update([output(0, "Hello", [1, 2], "stop"),
                           output(1, "Yo", [5], "length")]) == [(2, "lo"), (3, "Yo")]
    assert choices.answer_choices(stream=False) == [
        {"index": 2, "text": "Hello", "finish_reason": "stop", "token_ids": [1, 2]},
        {"index": 3, "text": "Yo", "finish_reason": "length", "token_ids": [5]}]
    assert choices.answer_choices(stream=True)[0]["text"] == ""


@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed (it needs a CUDA GPU)")
def test_vllm_generates_with_a_tiny_model(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    from tsf_engine_transformers.tiny import build_tiny_llm

    from tsf.generation.engine import Outbox

    folder = build_tiny_llm(tmp_path / "m", layers=2, hidden=64, heads=4, kv_heads=2,
                            intermediate=128, vocab_size=1024, corpus_lines=3000,
                            max_positions=512)
    answers = {}

    class Recorder(Outbox):
        def text(self, key, choice, text): pass
        def done(self, key, answer): answers[key] = answer
        def failed(self, key, error): answers[key] = error
        def flush(self): pass

    context = SimpleNamespace(model_dir=str(folder), model_config={}, worker_index=0)
    engine = engine_class("vllm").create(context, {"max_num_sequence": 4, "max_model_len": 256,
                                                   "vllm_engine_config": {
                                                       "gpu_memory_utilization": 0.2}})
    engine.start(Recorder())
    engine.submit((0, 0), parse_request({"prompt": "hello", "max_tokens": 5,
                                         "temperature": 0, "ignore_eos": True}, "completion"))
    import time

    deadline = time.monotonic() + 120
    while (0, 0) not in answers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert answers[(0, 0)]["usage"]["completion_tokens"] == 5
    engine.close()
