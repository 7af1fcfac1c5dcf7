"""LitServe 0.2.19's ``OpenAISpec`` serving a Hugging Face causal LM, for the ``llm`` benchmark
(runs in ``.venv-lit``, which shares the project's torch and transformers).

    .venv-lit/bin/python benchmarks/litserve_llm.py --model DIR --port 8000 [--threads 1]

The recipe LitServe documents: ``model.generate`` on a thread with a ``TextIteratorStreamer``,
yielding each piece of text, then the usage.  ``min_new_tokens`` = ``max_new_tokens``: every
request makes exactly the tokens asked for (as ``ignore_eos`` does in tsf), so both sides
generate the same amount.
"""

from __future__ import annotations

import argparse
import threading

import litserve as ls
import torch
from litserve.specs import OpenAISpec
from transformers import AutoModelForCausalLM, AutoTokenizer, TextIteratorStreamer


class CausalLM(ls.LitAPI):
    def __init__(self, model_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_dir = model_dir

    def setup(self, device):
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir).eval()

    def decode_request(self, request, context):
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  return_tensors="pt", return_dict=False)

    def predict(self, input_ids, context):
        limit = context.get("max_completion_tokens") or context.get("max_tokens") or 64
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True,
                                        skip_special_tokens=True)
        arguments = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         max_new_tokens=limit, min_new_tokens=limit, do_sample=False,
                         streamer=streamer)
        thread = threading.Thread(target=self._generate, args=(arguments,))
        thread.start()
        for text in streamer:
            if text:
                yield {"role": "assistant", "content": text}
        thread.join()
        prompt = int(input_ids.shape[-1])
        yield {"role": "assistant", "content": "", "prompt_tokens": prompt,
               "completion_tokens": limit, "total_tokens": prompt + limit}

    def _generate(self, arguments):
        with torch.inference_mode():
            self.model.generate(**arguments)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    server = ls.LitServer(CausalLM(args.model, spec=OpenAISpec()), accelerator="cpu",
                          devices=1, workers_per_device=1, timeout=600)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
