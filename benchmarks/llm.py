"""The ``llm`` workload: streamed generation side by side, tsf against one request at a time
with ``model.generate`` in process, LitServe 0.2.19's ``OpenAISpec`` and, when installed in
``.venv-vllm``, vLLM's CPU build.

    python benchmarks/llm.py [--streams 1 8 32] [--tokens 64] [--rounds 2] [--threads 1]
                             [--systems tsf generate litserve vllm] [--model DIR] [--out DIR]

The model is a tiny-but-not-toy Llama built here with random weights (4 layers, hidden 256,
8 heads over 4 KV heads, a 4096-token BPE vocabulary; ``--model`` serves another folder).  At
each point, N clients each send one chat request at once (greedy, exactly ``--tokens`` tokens:
``ignore_eos`` for tsf and vLLM, ``min_new_tokens`` for the others) and read its server-sent
events; the point reports output tokens/s over the whole run, time to first token p50/p99 and
the inter-token gap p99 over every stream.  The in-process baseline serves the same N requests
one after another (each one's TTFT counts its wait), as a server without batching would.  Each
round runs every system in turn, in an order that rotates, so the machine's load drifts over
all alike; the table gives each system's median over the rounds and its ratios to tsf taken
within each round.  Every system gets ``--threads`` torch threads.

Writes ``llm.md`` and ``llm.json`` to ``--out``.  ``make bench-litserve`` creates
``.venv-lit``; vLLM's CPU build goes into ``.venv-vllm`` by hand (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROMPTS = ["what does the scheduler do?", "tell me about the cache", "hello there",
           "a worker streams tokens to the user", "why is the queue long today?"]


# --- the client -------------------------------------------------------------------------------

async def stream_chat(port: int, path: str, body: dict) -> dict:
    """One streamed chat request over a plain HTTP/1.1 connection: the times of its events."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                 b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    started = time.perf_counter()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    times, buffer, done = [], b"", False
    while not done:
        if chunked:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                break
            data = await reader.readexactly(size + 2)
            data = data[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                break
        now = time.perf_counter()
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            line = event.strip()
            if line == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: ") and b'"content":"' in line.replace(b'": "', b'":"') \
                    and b'"content":""' not in line.replace(b'": "', b'":"'):
                times.append(now)
    writer.close()
    return {"status": status, "started": started, "times": times}


async def run_clients(port: int, path: str, streams: int, tokens: int, model: str,
                      extra: dict) -> list[dict]:
    bodies = [{"model": model, "max_tokens": tokens, "temperature": 0, "stream": True,
               "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], **extra}
              for i in range(streams)]
    return await asyncio.gather(*(stream_chat(port, path, b) for b in bodies))


def summarize(results: list[dict], tokens: int, started: float, ended: float) -> dict:
    ttft = sorted(r["times"][0] - r["started"] for r in results if r["times"])
    gaps = sorted(b - a for r in results for a, b in zip(r["times"], r["times"][1:]))
    return {"tok_s": len(results) * tokens / (ended - started),
            "ttft_p50_ms": 1000 * _quantile(ttft, 0.5), "ttft_p99_ms": 1000 * _quantile(ttft, 0.99),
            "itl_p99_ms": 1000 * _quantile(gaps, 0.99),
            "errors": sum(1 for r in results if r["status"] != 200 or not r["times"])}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


# --- the systems ------------------------------------------------------------------------------

class Server:
    """A server process on 127.0.0.1, stopped by PID (its whole process group)."""

    name = ""
    path = "/v1/chat/completions"
    extra: dict = {}

    def __init__(self, command: list[str], port: int, env: dict | None = None,
                 log: Path | None = None) -> None:
        self.port = port
        self.log = open(log or os.devnull, "wb")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True,
                                     cwd=ROOT)

    def wait(self, probe: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                if requests.get(f"http://127.0.0.1:{self.port}{probe}", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} was not ready in {timeout} s")

    def run(self, streams: int, tokens: int) -> dict:
        started = time.perf_counter()
        results = asyncio.run(run_clients(self.port, self.path, streams, tokens, "tiny",
                                          self.extra))
        return summarize(results, tokens, started, time.perf_counter())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TsfServer(Server):
    name = "tsf"
    extra = {"ignore_eos": True}

    def __init__(self, model: Path, threads: int, slots: int, work: Path) -> None:
        port = free_port()
        properties = work / "tsf.properties"
        properties.write_text(f"number_of_threads_per_worker={threads}\n")
        if model.is_relative_to(work):  # the model built here (a folder given is left alone)
            (model / "model-config.yaml").write_text(
                f"maxNumSequence: {slots}\nhandler:\n  max_model_len: 512\n")
        super().__init__([sys.executable, "-m", "tsf.cli", "serve", "--llm", str(model),
                          "--llm-name", "tiny", "--ts-config", str(properties),
                          "--inference-address", f"http://127.0.0.1:{port}",
                          "--management-address", "http://127.0.0.1:0",
                          "--metrics-address", "http://127.0.0.1:0",
                          "--workspace", str(work / "tsf-workspace")], port,
                         log=work / "tsf.log")
        self.wait("/v1/models/tiny")
        deadline = time.monotonic() + 300
        while requests.get(f"http://127.0.0.1:{port}/ping").json()["status"] != "Healthy":
            if time.monotonic() > deadline:
                raise RuntimeError("tsf's model did not load")
            time.sleep(0.5)


class LitServeServer(Server):
    name = "litserve"

    def __init__(self, model: Path, threads: int, work: Path) -> None:
        python = ROOT / ".venv-lit" / "bin" / "python"
        if not python.exists():
            raise RuntimeError("LitServe is not installed: make bench-litserve")
        port = free_port()
        super().__init__([str(python), str(HERE / "litserve_llm.py"), "--model", str(model),
                          "--port", str(port), "--threads", str(threads)], port,
                         env={"OMP_NUM_THREADS": str(threads)}, log=work / "litserve.log")
        self.wait("/health")


class VLLMServer(Server):
    name = "vllm"
    extra = {"ignore_eos": True}

    def __init__(self, model: Path, threads: int, slots: int, work: Path) -> None:
        python = ROOT / ".venv-vllm" / "bin" / "python"
        if not python.exists():
            raise RuntimeError("vLLM's CPU build is not installed in .venv-vllm")
        port = free_port()
        super().__init__([str(python), "-m", "vllm.entrypoints.openai.api_server",
                          "--model", str(model), "--served-model-name", "tiny",
                          "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
                          "--max-model-len", "512", "--max-num-seqs", str(slots)], port,
                         env={"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS":
                              str(threads), "VLLM_CPU_KVCACHE_SPACE": "1"},
                         log=work / "vllm.log")
        self.wait("/health", timeout=900)


class InProcess:
    """One request at a time with ``model.generate``: the baseline without batching."""

    name = "generate"

    def __init__(self, model: Path, threads: int) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()

    def run(self, streams: int, tokens: int) -> dict:
        from transformers.generation.streamers import BaseStreamer

        class Clock(BaseStreamer):
            def __init__(self) -> None:
                self.times: list[float] = []
                self.prompt = True

            def put(self, value) -> None:
                if self.prompt:  # generate passes the prompt first
                    self.prompt = False
                    return
                self.times.append(time.perf_counter())

            def end(self) -> None:
                pass

        results, started = [], time.perf_counter()
        for i in range(streams):
            messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=False)
            clock = Clock()
            with self.torch.inference_mode():
                self.model.generate(ids, attention_mask=self.torch.ones_like(ids),
                                    max_new_tokens=tokens, min_new_tokens=tokens,
                                    do_sample=False, streamer=clock)
            results.append({"status": 200, "started": started, "times": clock.times})
        return summarize(results, tokens, started, time.perf_counter())

    def stop(self) -> None:
        pass


# --- the run ----------------------------------------------------------------------------------

SMALL = dict(layers=2, hidden=64, heads=4, kv_heads=2, intermediate=128, vocab_size=1024,
             corpus_lines=3000, max_positions=512)  # --small: for smoke runs of the tooling


def build_model(folder: Path, small: bool) -> Path:
    sys.path.insert(0, str(ROOT / "plugins" / "tsf-engine-transformers"))
    from tsf_engine_transformers.tiny import build_tiny_llm

    return build_tiny_llm(folder, **(SMALL if small else {}))


def start(name: str, model: Path, args: argparse.Namespace, work: Path):
    slots = max(args.streams)
    if name == "tsf":
        return TsfServer(model, args.threads, slots, work)
    if name == "litserve":
        return LitServeServer(model, args.threads, work)
    if name == "vllm":
        return VLLMServer(model, args.threads, slots, work)
    return InProcess(model, args.threads)


def table(rows: list[dict]) -> str:
    lines = ["| system | streams | output tok/s | TTFT p50 ms | TTFT p99 ms | inter-token p99 ms "
             "| errors | tok/s vs tsf | TTFT p99 vs tsf |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['streams']} | {r['tok_s']:.0f} | "
                     f"{r['ttft_p50_ms']:.1f} | {r['ttft_p99_ms']:.1f} | {r['itl_p99_ms']:.1f} | "
                     f"{r['errors']} | {r['tok_s_vs_tsf']:.2f}x | {r['ttft_p99_vs_tsf']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--systems", nargs="+", default=["tsf", "generate", "litserve"])
    parser.add_argument("--model", type=Path, help="a Hugging Face causal LM folder "
                        "(default: the tiny Llama, built here)")
    parser.add_argument("--small", action="store_true", help="a 2-layer model, to check the "
                        "tooling quickly (no figures worth reporting)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "llm")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the servers are stopped below
    work = Path(tempfile.mkdtemp(prefix="tsf-bench-llm-"))
    model = args.model or build_model(work / "tiny-llm", args.small)
    systems, samples = {}, {}
    try:
        for name in args.systems:
            started = time.monotonic()
            try:
                systems[name] = start(name, model, args, work)
            except RuntimeError as exc:
                print(f"{name}: not run ({exc})")
                continue
            print(f"time to ready: {name} {time.monotonic() - started:.1f} s", flush=True)
        names = list(systems)
        for streams in args.streams if names else ():
            for system in systems.values():  # warm-up
                system.run(min(streams, 2), 8)
            for round_ in range(args.rounds):
                order = names[round_ % len(names):] + names[:round_ % len(names)]
                for name in order:
                    result = systems[name].run(streams, args.tokens)
                    samples.setdefault((name, streams), []).append(result)
                    print(f"round {round_ + 1} {name} x{streams}: {result['tok_s']:.0f} tok/s, "
                          f"TTFT p99 {result['ttft_p99_ms']:.1f} ms", flush=True)
    finally:
        for system in systems.values():
            system.stop()
    rows = []
    for (name, streams), results in samples.items():
        tsf = samples.get(("tsf", streams), results)
        row = {key: statistics.median(r[key] for r in results)
               for key in ("tok_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms")}
        row.update(system=name, streams=streams, errors=sum(r["errors"] for r in results),
                   tok_s_vs_tsf=statistics.median(
                       r["tok_s"] / t["tok_s"] for r, t in zip(results, tsf)),
                   ttft_p99_vs_tsf=statistics.median(
                       r["ttft_p99_ms"] / t["ttft_p99_ms"] for r, t in zip(results, tsf)))
        rows.append(row)
    rows.sort(key=lambda r: (r["streams"], r["system"] != "tsf", r["system"]))
    text = table(rows)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm.md").write_text(text + "\n")
    (args.out / "llm.json").write_text(json.dumps({"args": {k: str(v) for k, v in
                                                           vars(args).items()},
                                                  "load": os.getloadavg(), "rows": rows},
                                                 indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
