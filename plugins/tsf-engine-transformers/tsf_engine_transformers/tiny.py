"""A tiny Llama with random weights and a tokenizer trained on the spot, saved as a Hugging Face
folder: for tests and benchmarks, with nothing downloaded.

``build_tiny_llm(folder)`` writes ``config.json``, the weights, ``generation_config.json`` and a
byte-level BPE tokenizer with a chat template (``<|user|>...</s><|assistant|>``).  The default
size is the benchmark's (4 layers, hidden 256, 8 heads over 4 KV heads, vocabulary 4096);
tests pass smaller numbers.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
PAD, BOS, EOS = 0, 1, 2
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def corpus(lines: int, seed: int = 0):
    """English-ish text, some code and numbers (what the tokenizer learns its merges from)."""
    rng = random.Random(seed)
    subjects = ["the model", "a server", "the engineer", "this request", "our queue", "a token",
                "the scheduler", "every batch", "the user", "a worker", "the tokenizer"]
    verbs = ["generates", "reads", "writes", "schedules", "cancels", "streams", "measures",
             "frees", "decodes", "serves", "prefills", "batches"]
    objects = ["tokens", "the answer", "a response", "many sequences", "its memory",
               "key value tensors", "a chat message", "the prompt", "latency numbers"]
    words = ("hello there hi thanks please what why how when where who is are was be have do "
             "can could would should will good bad new old big small first last long short "
             "time year people way day world life hand part place case week system program "
             "question work number night point home water room money story fact month").split()
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.6:
            line = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}."
            yield line[0].upper() + line[1:]
        elif kind < 0.9:
            yield " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        else:
            yield f"Q: what is {rng.randint(0, 9999)} plus {rng.randint(0, 9999)}? A: " \
                  f"{rng.randint(0, 20000)} (caf\u00e9 \u00fcber \u4e16\u754c)"


def build_tokenizer(vocab_size: int, lines: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tokenizer.train_from_iterator(corpus(lines), trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=SPECIALS[3:], model_max_length=2048,
        chat_template=CHAT_TEMPLATE)


def build_tiny_llm(folder: str | Path, *, layers: int = 4, hidden: int = 256, heads: int = 8,
                   kv_heads: int = 4, intermediate: int = 688, vocab_size: int = 4096,
                   corpus_lines: int = 20000, max_positions: int = 2048, seed: int = 0) -> Path:
    """Write the model and tokenizer into ``folder``; returns it."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size, corpus_lines)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=max_positions, rms_norm_eps=1e-6,
                         pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS,
                                               pad_token_id=PAD, do_sample=False)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
