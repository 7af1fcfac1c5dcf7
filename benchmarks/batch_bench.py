"""``tsf batch`` against an in-process torch loop and against the online path: ResNet-18 behind
``image_classifier`` over a folder of JPEGs.

    python benchmarks/batch_bench.py [--images 256] [--batch-size 8] [--rounds 3]
                                     [--concurrency 2 4 8 16] [--load wrk|python] [--out DIR]

Three ways to classify the same images, in alternating order within each round:

* **in-process**: a ``DataLoader`` (``--loader-workers`` processes) decoding and transforming as
  the handler does, the TorchScript model and the handler's top-5 softmax, same batch size, in
  a process with the OpenMP settings tsf gives its workers;
* **tsf batch**: the CLI on the archive and the folder (one worker, ``--batch-size``);
* **online**: ``tsf serve`` with the same archive, driven on ``/predictions`` by ``wrk`` at each
  ``--concurrency``; the best one counts.

Throughput is images per second after the first batch (the model's warm-up) for the loop and
for ``tsf batch`` (timed by its output's growth), and on a warm server for the online path.  The
ratios are taken within a round and their median reported (on a shared machine the cores' speed
drifts).  Targets: tsf batch at least 0.85x the in-process loop and 1.3x the online path.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402

import workloads  # noqa: E402
from drive import drive  # noqa: E402
from servers import Tsf, wait_idle  # noqa: E402

from tsf.workers.process import WORKER_SPIN_COUNT  # noqa: E402



def make_images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        pixels = (torch.rand(3, 300, 400, generator=generator) * 255).to(torch.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, format="JPEG",
                                                               quality=90)
        (folder / f"img-{i:05d}.jpg").write_bytes(buffer.getvalue())


class Images(torch.utils.data.Dataset):
    """The folder's JPEGs, decoded and transformed as ``image_classifier`` does."""

    def __init__(self, folder: Path) -> None:
        from torchvision.transforms import v2

        self.paths = sorted(folder.glob("*.jpg"))
        self.transform = v2.Compose([
            v2.ToPILImage(), v2.Resize(256, antialias=True), v2.CenterCrop(224),
            v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        image = Image.open(self.paths[index]).convert("RGB")
        return self.transform(F.pil_to_tensor(image))


def in_process(folder: Path, model_path: Path, batch_size: int, loader_workers: int) -> float:
    """Images per second of the loop, run in a process of its own with the OpenMP settings
    tsf gives a worker (``GOMP_SPINCOUNT``, threads = cores), so both run torch alike."""
    env = dict(os.environ, GOMP_SPINCOUNT=WORKER_SPIN_COUNT,
               OMP_NUM_THREADS=str(os.cpu_count() or 1))
    done = subprocess.run([sys.executable, __file__, "--loop", str(folder), str(model_path),
                           str(batch_size), str(loader_workers)], capture_output=True,
                          text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the in-process loop failed: {done.stderr[-2000:]}")
    return float(done.stdout.split()[-1])


def loop(folder: Path, model_path: Path, batch_size: int, loader_workers: int) -> float:
    """Images per second of a plain DataLoader + model loop, from its first batch."""
    torch.set_num_threads(os.cpu_count() or 1)
    from ceiling import load_model_file

    model = load_model_file(model_path)
    loader = torch.utils.data.DataLoader(Images(folder), batch_size=batch_size,
                                         num_workers=loader_workers)
    done, started = 0, None
    with torch.inference_mode():
        for batch in loader:
            if started is None:
                model(batch)  # warm-up on the first batch, not counted
                started = time.perf_counter()
                continue
            top = torch.softmax(model(batch), dim=1).topk(5)
            top.indices.tolist(), top.values.tolist()
            done += len(batch)
    return done / (time.perf_counter() - started)


def tsf_batch(archive: Path, folder: Path, out: Path, batch_size: int, workers: int) -> float:
    """Images per second of ``tsf batch`` after its first batch, as the loop is counted: the
    first batch pays the model's warm-up (TorchScript optimises on its first calls)."""
    cmd = [sys.executable, "-m", "tsf.cli", "batch", str(archive), str(folder), "-o", str(out),
           "--batch-size", str(batch_size), "--overwrite", "--max-batch-delay", "20",
           "--workers", str(workers)]
    out.unlink(missing_ok=True)  # the last round's, which --overwrite would only truncate later
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = None
    while proc.poll() is None:
        if first is None and out.exists() and out.read_bytes().count(b"\n") >= batch_size:
            first = (time.perf_counter(), out.read_bytes().count(b"\n"))
        time.sleep(0.01)
    ended = time.perf_counter()
    _, err = proc.communicate()
    if proc.returncode != 0 or first is None:
        raise RuntimeError(f"tsf batch failed ({proc.returncode}): {err[-2000:]}")
    total = out.read_bytes().count(b"\n")
    return (total - first[1]) / (ended - first[0])


def main() -> int:
    if sys.argv[1:2] == ["--loop"]:  # the in-process loop, in its own process
        folder, model, size, loaders = sys.argv[2:6]
        print(loop(Path(folder), Path(model), int(size), int(loaders)))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--duration", type=float, default=10.0, help="s per online run")
    parser.add_argument("--load", choices=("wrk", "python"), default="wrk")
    parser.add_argument("--loader-workers", type=int, default=1,
                        help="the in-process loop's DataLoader processes")
    parser.add_argument("--batch-workers", type=int, default=1,
                        help="tsf batch's worker processes (each gets cores / workers threads)")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="the online server's worker processes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tsf-batch-bench-"))
    store = root / "store"
    [workload] = workloads.build(store, ("jpeg",))
    folder = root / "images"
    make_images(folder, args.images)
    server = Tsf(store)
    rows: dict[str, list[float]] = {"in-process": [], "tsf batch": [], "online": []}
    best_conc: list[int] = []
    try:
        server.server.register("jpeg.mar", model_name="jpeg", batch_size=args.batch_size,
                               max_batch_delay=20, initial_workers=args.server_workers
                               ).raise_for_status()
        url = f"{server.inference}/predictions/jpeg"
        drive(args.load, url, workload.body, workload.content_type, args.concurrency[0], 2.0)
        pids = server.front_pids() + server.worker_pids()
        for round_index in range(args.rounds):
            steps = ["in-process", "tsf batch", "online"]
            for step in steps if round_index % 2 == 0 else steps[::-1]:
                wait_idle(pids)
                if step == "in-process":
                    rows[step].append(in_process(folder, store / "src" / workload.model,
                                                 args.batch_size, args.loader_workers))
                elif step == "tsf batch":
                    rows[step].append(tsf_batch(store / "jpeg.mar", folder, root / "out.jsonl",
                                                args.batch_size, args.batch_workers))
                else:
                    runs = {}
                    for conc in args.concurrency:
                        wait_idle(pids)
                        runs[conc] = drive(args.load, url, workload.body,
                                           workload.content_type, conc, args.duration)
                    conc = max(runs, key=lambda c: runs[c].rps)
                    best_conc.append(conc)
                    rows[step].append(runs[conc].rps)
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s"
                                                          for k, v in rows.items()), flush=True)
    finally:
        server.stop()
    vs_loop = [b / i for b, i in zip(rows["tsf batch"], rows["in-process"])]
    vs_online = [b / o for b, o in zip(rows["tsf batch"], rows["online"])]
    table = [f"ResNet-18 + image_classifier, {args.images} JPEGs, batch {args.batch_size}, "
             f"{args.rounds} rounds (median images/s); DataLoader processes "
             f"{args.loader_workers}, tsf batch workers {args.batch_workers}, server workers "
             f"{args.server_workers}", "",
             "| path | images/s | runs |", "|---|---|---|"]
    for name, values in rows.items():
        extra = f" (best concurrency {statistics.mode(best_conc)})" if name == "online" else ""
        table.append(f"| {name}{extra} | {statistics.median(values):.1f} | "
                     f"{', '.join(f'{v:.1f}' for v in values)} |")
    table += ["", f"tsf batch / in-process: {statistics.median(vs_loop):.2f}x "
              f"(target >= 0.85; rounds {', '.join(f'{r:.2f}' for r in vs_loop)})",
              f"tsf batch / online: {statistics.median(vs_online):.2f}x "
              f"(target >= 1.3; rounds {', '.join(f'{r:.2f}' for r in vs_online)})"]
    print("\n".join(table))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "batch_bench.md").write_text("\n".join(table) + "\n")
        (args.out / "batch_bench.json").write_text(json.dumps(
            {"rows": rows, "vs_loop": vs_loop, "vs_online": vs_online,
             "best_concurrency": best_conc, "args": {k: str(v) for k, v in vars(args).items()}},
            indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
