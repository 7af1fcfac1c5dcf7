"""Build the demo model store used by `make serve` and the benchmark (random-weight models).

* ``mlp.mar``: an MLP (64 -> 256 -> 256 -> 10) as a ``torch.export`` program, built-in ``base``
  handler.
* ``resnet18.mar``: torchvision ResNet-18 (a ``torch.export`` program, random weights),
  ``image_classifier``.
* ``sentiment.mar``: a small embedding-bag text model with a vocabulary, ``text_classifier``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from tsf.archives.writer import ArchiveSpec, write_archive

VOCAB = ["[PAD]", "[UNK]", "the", "a", "movie", "film", "was", "is", "great", "good", "bad",
         "awful", "plot", "acting", "!", "."]


class SentimentNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(len(VOCAB), 32, padding_idx=0)
        self.fc = torch.nn.Linear(32, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.fc(pooled)


def _export(model: torch.nn.Module, example: torch.Tensor, max_batch: int, path: Path) -> None:
    """``model`` as a ``torch.export`` program (TorchScript's successor) taking 1 to
    ``max_batch`` samples."""
    from torch.export import Dim

    program = torch.export.export(model, (example,),
                                  dynamic_shapes=({0: Dim("batch", min=1, max=max_batch)},))
    torch.export.save(program, str(path))


def build(store: Path) -> None:
    from torchvision.models import resnet18

    store.mkdir(parents=True, exist_ok=True)
    work = store / ".src"
    work.mkdir(exist_ok=True)
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 256), torch.nn.ReLU(),
                              torch.nn.Linear(256, 10))
    _export(mlp.eval(), torch.zeros(2, 64), 1024, work / "mlp.pt2")
    write_archive(ArchiveSpec(model_name="mlp", serialized_file=str(work / "mlp.pt2"),
                              export_path=str(store), force=True))

    _export(resnet18(weights=None).eval(), torch.zeros(2, 3, 224, 224), 64,
            work / "resnet18.pt2")
    (work / "index_to_name.json").write_text(json.dumps({str(i): f"class_{i}"
                                                         for i in range(1000)}))
    write_archive(ArchiveSpec(model_name="resnet18", serialized_file=str(work / "resnet18.pt2"),
                              handler="image_classifier",
                              extra_files=str(work / "index_to_name.json"),
                              export_path=str(store), force=True))

    torch.jit.script(SentimentNet().eval()).save(str(work / "sentiment.pt"))
    text_dir = work / "text"
    text_dir.mkdir(exist_ok=True)
    (text_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (text_dir / "index_to_name.json").write_text('{"0": "negative", "1": "positive"}')
    write_archive(ArchiveSpec(model_name="sentiment", serialized_file=str(work / "sentiment.pt"),
                              handler="text_classifier", extra_files=str(text_dir),
                              export_path=str(store), force=True))
    print(f"demo model store ready in {store}: mlp.mar, resnet18.mar, sentiment.mar")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-store"))
