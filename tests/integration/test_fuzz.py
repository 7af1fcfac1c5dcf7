"""Seeded fuzzing of the wire: malformed HTTP, JSON and multipart against the client-facing APIs.

A few thousand generated requests (``TSF_FUZZ_SEED`` picks the seed; each case is rebuilt from
it and its index) go to the inference, KServe v1/v2 and management routes of a real server.
Every answer must be well formed: no 500 of the framework's own making, every error the JSON
shape ``{"code", "type", "message"}`` (bytes that are not HTTP at all included), no worker
dies, and ``/ping`` stays 200 throughout.  The edge cases (chunk-size lines with long
extensions, header blocks and request lines over 64 KiB) are complete requests: each must get
an answer, with the status it calls for.
"""

from __future__ import annotations

import json
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import requests

from tsf.testing import ServerProcess, exchange_raw

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("TSF_FUZZ_SEED", "1325"))
COUNTS = {"raw": 500, "json": 1400, "multipart": 500, "register": 300, "valid": 300,
          "edge": 120}
HEADER_LIMIT = 64 * 1024
LIMIT = 200_000


@dataclass
class Case:
    """One request: where it goes and what it carries (raw bytes skip the HTTP client)."""

    name: str
    api: str = "inference"
    method: str = "POST"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes | None = None
    expect: int | None = None  # the status a well-formed case must get


# --- generators ---------------------------------------------------------------------------

def random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > rng.choice([3, 6, 40]) or roll < 0.35:
        return rng.choice([
            rng.randint(-10, 10), rng.random() * 1e6, 10 ** rng.randint(10, 400),
            -(10 ** rng.randint(5, 60)), "".join(chr(rng.randint(0, 0x2FFF))
                                                for _ in range(rng.randint(0, 12))),
            None, True, False, 1e308 * 10, "[", "{\"",
        ])
    if roll < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {rng.choice(["data", "inputs", "instances", "body", "x", "", "name", "shape",
                        "datatype"]) + str(rng.randint(0, 3)) * rng.randint(0, 1):
            random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def corrupt(rng: random.Random, data: bytes) -> bytes:
    """Flip, cut, duplicate or inject invalid UTF-8 into ``data`` (or leave it alone)."""
    roll = rng.random()
    if not data or roll < 0.3:
        return data
    pos = rng.randrange(len(data))
    if roll < 0.45:
        return data[:pos]
    if roll < 0.6:
        return data[:pos] + bytes([rng.randrange(256)]) + data[pos + 1:]
    if roll < 0.75:
        return data[:pos] + rng.choice([b"\xff\xfe", b"\xc3(", b"\xed\xa0\x80", b"\x00"]) + \
            data[pos:]
    if roll < 0.85:
        return rng.choice([b"[", b"{\"a\":"]) * rng.choice([150, 1000, 5000]) + data
    return data + data[: rng.randrange(len(data))]


def json_case(rng: random.Random) -> Case:
    value = random_json(rng)
    route = rng.choice(["predict", "predict-text", "v1", "v1-explain", "v2"])
    if route == "v1" or route == "v1-explain":
        document: Any = {"instances": value} if rng.random() < 0.6 else value
        path = "/v1/models/mlp:" + ("explain" if route == "v1-explain" else "predict")
    elif route == "v2":
        document = {"inputs": [{"name": rng.choice(["x", "", 5]),
                                "shape": rng.choice([[4], [1, 4], [-1], [10 ** 20], "4", []]),
                                "datatype": rng.choice(["FP32", "INT64", "BYTES", "BOOL",
                                                        "FP99", None]),
                                "data": value}]} if rng.random() < 0.7 else value
        if rng.random() < 0.2 and isinstance(document, dict):
            document["outputs"] = random_json(rng)
        path = "/v2/models/mlp/infer"
    else:
        document, path = value, "/predictions/mlp"
    try:
        text = json.dumps(document).encode()
    except (ValueError, RecursionError):
        text = b"[]"
    ctype = "text/plain" if route == "predict-text" else "application/json"
    return Case(f"json {route}", path=path, body=corrupt(rng, text),
                headers={"Content-Type": ctype})


def multipart_case(rng: random.Random) -> Case:
    boundary = "".join(rng.choice("abcXYZ019-_") for _ in range(rng.randint(1, 30)))
    parts = []
    for i in range(rng.randint(0, 3)):
        disposition = rng.choice([f'form-data; name="data{i}"',
                                  f'form-data; name="f{i}"; filename="a\x00b.bin"',
                                  "form-data", f'form-data; name="{"n" * 300}"', "attachment"])
        headers = [f"Content-Disposition: {disposition}"] if rng.random() < 0.9 else []
        if rng.random() < 0.3:
            headers.append(f"Content-Type: {rng.choice(['application/json', 'text/plain'])}")
        payload = json.dumps(random_json(rng)).encode() if rng.random() < 0.7 else \
            bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        parts.append(("\r\n".join(headers) + "\r\n\r\n").encode() + payload)
    sep = f"--{boundary}\r\n".encode()
    body = b"".join(sep + p + b"\r\n" for p in parts) + f"--{boundary}--\r\n".encode()
    ctype = rng.choice([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                        f"multipart/form-data; boundary={boundary}x",
                        f'multipart/form-data; boundary="{boundary}"',
                        "application/x-www-form-urlencoded"])
    return Case("multipart", path=rng.choice(["/predictions/mlp", "/explanations/mlp"]),
                body=corrupt(rng, body), headers={"Content-Type": ctype})


def register_case(rng: random.Random) -> Case:
    """Register bodies that can never name a real archive (the store holds no ``zz-*``)."""
    params: dict[str, Any] = {}
    for key in ("url", "model_name", "handler", "batch_size", "max_batch_delay",
                "initial_workers", "synchronous", "response_timeout", "sha256", "extra"):
        if rng.random() < 0.5:
            params[key] = random_json(rng, 2)
    if isinstance(params.get("url"), str) or "url" not in params and rng.random() < 0.5:
        params["url"] = "zz-" + str(rng.random()) + rng.choice([".mar", ".zip", "", "/../x"])
    text = json.dumps(params).encode()
    return Case("register", api="management", path="/models", body=corrupt(rng, text),
                headers={"Content-Type": rng.choice(["application/json", "text/plain"])})


def valid_case(rng: random.Random) -> Case:
    """A good request mixed into the bad ones: it must still be answered 200."""
    sample = [rng.uniform(-5, 5) for _ in range(4)]
    path, document = rng.choice([
        ("/predictions/mlp", sample), ("/predictions/mlp", {"data": sample}),
        ("/v1/models/mlp:predict", {"instances": [sample, sample]}),
        ("/v2/models/mlp/infer", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                              "data": sample}]}),
    ])
    return Case("valid", path=path, body=json.dumps(document).encode(),
                headers={"Content-Type": "application/json"}, expect=200)


def raw_case(rng: random.Random) -> Case:
    path = rng.choice(["/predictions/mlp", "/v1/models/mlp:predict", "/v2/models/mlp/infer",
                       "/ping", "/no/route", "/models", "/%ff%00", "*", "/" + "a" * 5000])
    method = rng.choice(["POST", "GET", "PUT", "DELETE", "FOO", "", "P\x00ST", "GET GET"])
    version = rng.choice(["HTTP/1.1", "HTTP/1.0", "HTTP/9.9", "", "http/1.1", "HTTP/1.1 x"])
    body = json.dumps(random_json(rng)).encode()
    headers = ["Host: x", "Content-Type: application/json"]
    framing = rng.choice(["length", "bad-length", "chunked", "bad-chunk", "both", "none"])
    if framing == "length":
        headers.append(f"Content-Length: {len(body)}")
    elif framing == "bad-length":
        headers.append("Content-Length: " + rng.choice(["abc", "-1", "1, 2", str(10 ** 30),
                                                        "0x10", " ", str(len(body) + 5)]))
    elif framing in ("chunked", "bad-chunk", "both"):
        headers.append("Transfer-Encoding: " + rng.choice(["chunked", "chunked, gzip", "gzip",
                                                           "Chunked"]))
        size = b"%x" % len(body) if framing != "bad-chunk" else rng.choice(
            [b"zz", b"-5", b"f" * 40, b"", b"5;ext=\x00"])
        body = size + b"\r\n" + body + b"\r\n0\r\n\r\n"
        if framing == "both":
            headers.append("Content-Length: 3")
    if rng.random() < 0.3:
        headers.append(rng.choice(["NoColonHeader", "X-Long: " + "v" * 70000, ": empty-name",
                                   "X-Bin: \xff\xfe", "Content-Type: multipart/form-data",
                                   "Authorization: Bearer " + "x" * 1000, " folded: x"]))
    head = f"{method} {path} {version}\r\n" + "\r\n".join(headers) + "\r\n\r\n"
    raw = head.encode("latin-1", "replace") + body
    if rng.random() < 0.2:
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
    return Case("raw http", api=rng.choice(["inference", "management"]), raw=corrupt(rng, raw))


def edge_case(rng: random.Random) -> Case:
    """A complete request at one of the read limits; ``expect`` is the status it must get."""
    api = rng.choice(["inference", "management"])
    path = rng.choice(["/predictions/mlp", "/ping", "/models", "/v2/models/mlp/infer",
                       "/no/route"])
    kind = rng.choice(["chunk-extension", "short-extension", "headers", "many-headers",
                       "query", "path", "long-line-and-headers"])
    head = ["Host: x", "Content-Type: application/json"]
    body = b""
    expect = 400
    target = path
    if kind in ("chunk-extension", "short-extension"):
        # a route that reads the body (the others answer 404 or 405 before reading it)
        target = rng.choice(["/predictions/mlp", "/v2/models/mlp/infer"]) \
            if api == "inference" else "/models"
        data = json.dumps([rng.uniform(-5, 5) for _ in range(4)]).encode()
        extension = b";" + (b"e" * rng.randint(65, 10_000) if kind == "chunk-extension"
                            else rng.choice([b"a=b", b"x", b'q="v"']))
        head.append("Transfer-Encoding: chunked")
        body = b"%x" % len(data) + extension + b"\r\n" + data + b"\r\n0\r\n\r\n"
    elif kind == "headers":  # one header over the limit
        head.append("X-Big: " + "v" * rng.randint(HEADER_LIMIT, 3 * HEADER_LIMIT))
        expect = 431
    elif kind == "many-headers":
        size = rng.randint(20, 200)
        head += [f"X-H{i}: " + "v" * size for i in range(HEADER_LIMIT // size + 10)]
        expect = 431
    elif kind == "query":
        target = path + "?q=" + "a" * rng.randint(HEADER_LIMIT, 3 * HEADER_LIMIT)
        expect = 414
    elif kind == "path":
        target = path + "/" + "p" * rng.randint(HEADER_LIMIT, 2 * HEADER_LIMIT)
        expect = 414
    else:  # the request line ends within the limit, the header block does not
        target = path + "?q=" + "a" * rng.randint(HEADER_LIMIT // 2, HEADER_LIMIT - 1000)
        head.append("X-Rest: " + "v" * HEADER_LIMIT)
        expect = 431
    raw = (f"POST {target} HTTP/1.1\r\n" + "\r\n".join(head) + "\r\n\r\n").encode() + body
    return Case(f"edge {kind}", api=api, raw=raw, expect=expect)


GENERATORS: dict[str, Callable[[random.Random], Case]] = {
    "raw": raw_case, "json": json_case, "multipart": multipart_case, "register": register_case,
    "valid": valid_case, "edge": edge_case}


def cases() -> list[tuple[str, Case]]:
    out = []
    for kind, count in COUNTS.items():
        for index in range(count):
            label = f"seed={SEED} {kind}#{index}"
            out.append((label, GENERATORS[kind](random.Random(f"{SEED}-{kind}-{index}"))))
    random.Random(SEED).shuffle(out)
    return out


# --- sending and checking -----------------------------------------------------------------

def check_error_body(label: str, status: int, body: bytes) -> None:
    if status < 400:
        return
    try:
        document = json.loads(body)
    except ValueError:
        raise AssertionError(f"{label}: {status} with a body that is not JSON: {body[:300]!r}")
    assert isinstance(document, dict) and {"code", "type", "message"} <= set(document), \
        f"{label}: {status} {body[:300]!r}"
    assert document["code"] == status, f"{label}: {body[:300]!r}"
    assert document["type"] not in ("InternalServerException", "WorkerDiedException"), \
        f"{label}: the framework failed: {body[:500]!r}"


def check_raw_answer(label: str, answer: bytes) -> list[int]:
    """Every HTTP message in ``answer`` (keep-alive may hold several) is well formed; their
    statuses."""
    statuses = []
    while answer:
        head, sep, rest = answer.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 "), f"{label}: {answer[:300]!r}"
        status = int(head.split()[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        check_error_body(label, status, rest[:length])
        statuses.append(status)
        answer = rest[length:]
    return statuses


def run_case(server: ServerProcess, label: str, case: Case) -> str:
    base = server.urls[case.api]
    if case.raw is not None:
        statuses = check_raw_answer(label, exchange_raw(base, case.raw, timeout=15, half_close=True))
        if case.expect is not None:
            assert statuses == [case.expect], f"{label}: {statuses} for {case.raw[:120]!r}"
            return str(case.expect)
        return "raw"
    response = requests.request(case.method, base + case.path, data=case.body,
                                headers=case.headers, timeout=60)
    check_error_body(label, response.status_code, response.content)
    if case.expect is not None:
        assert response.status_code == case.expect, f"{label}: {response.text[:300]}"
    return str(response.status_code)


@pytest.fixture(scope="module")
def fuzz_server(model_store):
    server = ServerProcess(model_store=model_store, models=["mlp=mlp.mar"],
                           config={"max_request_size": LIMIT, "body_idle_timeout": 1,
                                   "default_workers_per_model": 2})
    deadline = time.monotonic() + 120
    while server.get("/ping").status_code != 200:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    yield server
    server.stop()


def test_fuzzed_requests_never_break_the_server(fuzz_server):
    server = fuzz_server
    workers = sorted(server.worker_pids())
    assert len(workers) == 2
    all_cases = cases()
    started = time.monotonic()
    outcomes: dict[str, int] = {}
    with ThreadPoolExecutor(6) as pool:
        for start in range(0, len(all_cases), 300):
            batch = all_cases[start:start + 300]
            for outcome in pool.map(lambda item: run_case(server, *item), batch):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            ping = server.get("/ping", timeout=10)
            assert ping.status_code == 200, (start, ping.text, server.log()[-3000:])
    elapsed = time.monotonic() - started
    assert sorted(server.worker_pids()) == workers, server.log()[-3000:]
    log = server.log()
    for sign in ("uncaught error", "Exception in callback", "died"):
        assert sign not in log, log[log.index(sign) - 2000:log.index(sign) + 1000]
    print(f"{len(all_cases)} fuzzed requests in {elapsed:.1f} s: {sorted(outcomes.items())}")
    assert outcomes["200"] >= COUNTS["valid"] and outcomes["400"] > 1000
    assert outcomes.get("414", 0) and outcomes.get("431", 0), outcomes
