"""tsf's transformers engine: iteration-level (continuous) batching over a causal LM's forward
with a per-slot KV cache, and pooled embeddings for encoder models.

Modules: :mod:`.engine` (the engine tsf builds), :mod:`.scheduler` (the step loop),
:mod:`.kv_cache`, :mod:`.forward` (the model's forward, two ways), :mod:`.sampling`,
:mod:`.text` (prompts, incremental detokenizing, stop strings), :mod:`.embeddings`.
"""
