"""Build the demo model store used by `make serve` and the benchmark: random-weight models.

* ``mlp.mar``: a TorchScript MLP (64 -> 256 -> 256 -> 10), served by the built-in base handler.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tsf.archiver import ArchiveSpec, write_archive


def build(store: Path) -> None:
    store.mkdir(parents=True, exist_ok=True)
    work = store / ".src"
    work.mkdir(exist_ok=True)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10))
    torch.jit.script(mlp).save(str(work / "mlp.pt"))
    write_archive(ArchiveSpec(model_name="mlp", serialized_file=str(work / "mlp.pt"),
                              export_path=str(store), force=True))
    print(f"demo model store ready in {store}")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-store"))
