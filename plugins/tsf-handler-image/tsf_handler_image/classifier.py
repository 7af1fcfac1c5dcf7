"""``image_classifier``: top-k ``{label: probability}`` per image (TorchServe's response).

Options: ``topk`` (default 5) in model-config.yaml's ``handler:`` section.
"""

from __future__ import annotations

from typing import Any

from tsf.handler import Ragged

from .vision import VisionHandler


class ImageClassifier(VisionHandler):
    """Classifies images; works with TorchScript, eager and torch.export archives."""

    task = "image_classification"

    def forward(self, context: Any, batch: Any) -> Any:
        """Logits, ``N x classes`` (one row per image)."""
        import torch

        if isinstance(batch, Ragged):
            return torch.cat([self.forward(context, x) for x in batch])
        logits = context.model(batch)
        return logits[0] if isinstance(logits, (tuple, list)) else logits

    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        import torch

        rows = outputs
        probs = torch.softmax(rows.float(), dim=1)
        k = min(int(self.options.get("topk", 5)), probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        return [{self.labels(i): p for i, p in zip(idx.tolist(), val.tolist())}
                for val, idx in zip(values, indices)]
