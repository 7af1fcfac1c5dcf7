"""Registers the ``vllm`` engine; vLLM itself is imported only when a model uses it."""

from tsf import hookimpl


@hookimpl
def tsf_register_engines() -> dict:
    return {"vllm": "tsf_engine_vllm.engine:VLLMEngine"}
