"""The GPU checks of the image path, in one run on a machine with a CUDA GPU.

    .venv/bin/python benchmarks/gpu_check.py [--seconds 10] [--batch 8] [--out DIR]

Prints (and writes to ``DIR/gpu.md``) a Markdown report naming the card:

1. JPEG decoding: ``torchvision.io.decode_jpeg`` on the CPU (one thread, and a batch in a
   pool of threads) against ``decode_jpeg(..., device="cuda")`` on a batch, pictures per second,
   and the largest pixel difference between the two decoders;
2. AOTInductor on CUDA: ResNet-18 exported with a dynamic batch, compiled for the GPU with
   ``tsf optimize --aot --device cuda`` from an eager archive, loaded by the worker's own loader
   (``tsf.runtime.pt2``), against eager on the GPU: latency, throughput, max |difference|;
3. ``deviceIds`` placement: a real ``tsf serve`` with two workers of a model whose
   model-config says ``deviceType: gpu`` and ``deviceIds: [0]``, each worker answering the
   device it runs on;
4. the JPEG benchmark on the GPU: ``image_classifier`` serving the eager archive and the AOT
   archive on ``cuda:0`` (JPEG in, top-5 out, batch 8), driven with wrk (or the Python load
   generator) at concurrency 32, against the in-process GPU ceiling (decode in threads, the next
   batch's while the model runs this one, the same model on the GPU).

Nothing here runs without a GPU: it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import workloads  # noqa: E402
from drive import drive  # noqa: E402

from tsf.testing import ServerProcess  # noqa: E402

DEVICE_ECHO = '''
def handle(data, context):
    if data is None:
        return None
    return [{"device": str(context.device)} for _ in data]
'''


def timed(fn, seconds: float, minimum: int = 5) -> list[float]:
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < minimum:
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def check_decode(pictures: list[bytes], seconds: float) -> list[str]:
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(p), dtype=torch.uint8) for p in pictures]
    pool = ThreadPoolExecutor(4)
    cpu_one = timed(lambda: [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data], seconds)
    cpu_pool = timed(lambda: list(pool.map(lambda d: decode_jpeg(d, mode=ImageReadMode.RGB),
                                           data)), seconds)
    gpu = timed(lambda: decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda"), seconds)
    on_cpu = [decode_jpeg(d, mode=ImageReadMode.RGB) for d in data]
    on_gpu = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
    diff = max(int((a.int() - b.cpu().int()).abs().max()) for a, b in zip(on_cpu, on_gpu))
    n = len(pictures)
    return ["## JPEG decoding (500x375 pictures, batches of %d)" % n, "",
            "| decoder | pictures/s |", "|---|---|",
            f"| CPU, one thread | {n / statistics.median(cpu_one):.0f} |",
            f"| CPU, 4 threads | {n / statistics.median(cpu_pool):.0f} |",
            f"| GPU (nvjpeg), one batched call | {n / statistics.median(gpu):.0f} |", "",
            f"Largest pixel difference GPU vs CPU decoder: {diff} grey levels.", ""]


def build_archives(store: Path, batch: int) -> None:
    workloads.build(store, ("jpeg",))
    config = store / "src" / "gpu.yaml"
    config.write_text(f"deviceType: gpu\ndeviceIds: [0]\nbatchSize: {batch}\n"
                      "maxBatchDelay: 5\n")
    src = store / "src"
    workloads._archive(store, "jpeg_gpu", src / "resnet18.pth", "image_classifier",
                       model_file=src / "resnet18_model.py",
                       extra=[src / "index_to_name.json"], config=config)
    samples = src / "samples"
    samples.mkdir(exist_ok=True)
    files = []
    for seed in range(16):
        files.append(samples / f"{seed}.jpg")
        files[-1].write_bytes(workloads.photo(seed + 1))
    subprocess.run([sys.executable, "-m", "tsf.cli", "optimize", str(store / "jpeg_gpu.mar"),
                    "-o", str(store / "jpeg_gpu_aot.mar"), "--aot", "--device", "cuda",
                    "--max-batch", str(batch), "--sample-input", *map(str, files), "-f"],
                   check=True)
    echo = src / "device_echo.py"
    echo.write_text(DEVICE_ECHO)
    placement = src / "placement.yaml"
    placement.write_text("deviceType: gpu\ndeviceIds: [0]\nminWorkers: 2\nmaxWorkers: 2\n")
    workloads._archive(store, "placement", echo, str(echo), config=placement)


def check_aot(store: Path, batch: int, seconds: float) -> list[str]:
    import zipfile

    from tsf.runtime.pt2 import load_pt2

    namespace: dict = {}
    exec(workloads.RESNET, namespace)
    eager = namespace["ResNet18"]()
    eager.load_state_dict(torch.load(store / "src" / "resnet18.pth", weights_only=True))
    eager = eager.eval().cuda()
    with zipfile.ZipFile(store / "jpeg_gpu_aot.mar") as archive:
        name = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]["serializedFile"]
        (store / name).write_bytes(archive.read(name))
    aot = load_pt2(store / name, "cuda:0")
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    rows = ["## AOTInductor on CUDA (ResNet-18, fp32)", "",
            "| form | batch 1 p50 ms | batch %d images/s |" % batch, "|---|---|---|"]
    with torch.inference_mode():
        diff = float((aot(x) - eager(x)).abs().max())
        for label, model in (("eager", eager), ("AOTInductor", aot)):
            for _ in range(5):
                model(x)
            one = timed(lambda: model(x[:1]), seconds / 2)
            many = timed(lambda: model(x), seconds / 2)
            rows.append(f"| {label} | {statistics.median(one) * 1e3:.2f} | "
                        f"{batch / statistics.median(many):.0f} |")
    return rows + ["", f"Largest logit difference AOTInductor vs eager: {diff:.2e}.", ""]


def check_placement(server: ServerProcess) -> list[str]:
    assert server.register("placement.mar", initial_workers=2).status_code == 200
    devices = {server.post("/predictions/placement", data=b"x").json()["device"]
               for _ in range(20)}
    described = server.manage("GET", "/models/placement").json()[0]["workers"]
    return ["## deviceIds placement", "",
            f"`deviceIds: [0]`, two workers: answered from {sorted(devices)}; "
            f"describe: {[w.get('gpu') or w.get('device') for w in described]}", ""]


def gpu_ceiling(store: Path, body: bytes, batch: int, seconds: float) -> float:
    from tsf_handler_image.decoding import decode_image
    from tsf_handler_image.vision import VisionHandler

    namespace: dict = {}
    exec(workloads.RESNET, namespace)
    model = namespace["ResNet18"]()
    model.load_state_dict(torch.load(store / "src" / "resnet18.pth", weights_only=True))
    model = model.eval().cuda()
    transform = VisionHandler().build_transform(dict(VisionHandler.defaults))
    pool = ThreadPoolExecutor(4)

    def submit():
        return [pool.submit(lambda: transform(decode_image(body))) for _ in range(batch)]

    pending = submit()
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            futures, pending = pending, submit()
            model(torch.stack([f.result() for f in futures]).cuda()).argmax(1).tolist()
            done += batch
    return done / (time.perf_counter() - started)


def check_serving(server: ServerProcess, store: Path, batch: int, seconds: float,
                  load: str) -> list[str]:
    body = workloads.photo()
    rows = ["## JPEG ResNet-18 on the GPU, batch %d, concurrency 32" % batch, "",
            "| system | req/s | p50 ms | p99 ms | errors | x ceiling |",
            "|---|---|---|---|---|---|"]
    for name in ("jpeg_gpu", "jpeg_gpu_aot"):
        assert server.register(f"{name}.mar", batch_size=batch,
                               max_batch_delay=5).status_code == 200
        url = f"{server.inference}/predictions/{name}"
        drive(load, url, body, "image/jpeg", 32, 2.0)
        ceiling = gpu_ceiling(store, body, batch, seconds / 2)
        run = drive(load, url, body, "image/jpeg", 32, seconds)
        rows.append(f"| tsf {name} | {run.rps:.0f} | {run.p50:.1f} | {run.p99:.1f} | "
                    f"{run.errors} | {run.rps / ceiling:.2f} (ceiling {ceiling:.0f}/s) |")
    return rows + [""]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--load", choices=["wrk", "python"],
                        default="wrk" if shutil.which("wrk") else "python")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: gpu_check.py runs only on a machine with one", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(0)
    report = [f"# GPU checks on {card} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"torch {torch.__version__})", ""]
    pictures = [workloads.photo(seed) for seed in range(args.batch)]
    report += check_decode(pictures, args.seconds / 2)
    store = Path(tempfile.mkdtemp(prefix="tsf-gpu-check-"))
    try:
        build_archives(store, args.batch)
        report += check_aot(store, args.batch, args.seconds)
        server = ServerProcess(model_store=store, config={"log_level": "WARNING"})
        try:
            report += check_placement(server)
            report += check_serving(server, store, args.batch, args.seconds, args.load)
        finally:
            server.stop()
    finally:
        shutil.rmtree(store, ignore_errors=True)
    text = "\n".join(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
