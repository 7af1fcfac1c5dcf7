"""tsf's vLLM engine: :mod:`.engine` drives vLLM's AsyncLLMEngine on a loop of its own;
:mod:`.convert` translates tsf's requests into vLLM's sampling parameters and vLLM's outputs into
tsf's streamed text and answers (pure functions, tested without vLLM)."""
