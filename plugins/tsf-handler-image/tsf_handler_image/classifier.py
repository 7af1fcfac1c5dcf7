"""``image_classifier``: top-k ``{label: probability}`` per image (TorchServe's response).

Options: ``topk`` (default 5) in model-config.yaml's ``handler:`` section.
"""

from __future__ import annotations

from typing import Any

from tsf.handler import Ragged

from .vision import VisionHandler


class ImageClassifier(VisionHandler):
    """Classifies images; works with TorchScript, eager and torch.export archives."""

    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        import torch

        rows = torch.cat(list(outputs)) if isinstance(outputs, Ragged) else outputs
        if isinstance(rows, (tuple, list)):
            rows = rows[0]
        probs = torch.softmax(rows.float(), dim=1)
        k = min(int(self.options.get("topk", 5)), probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        return [{self.labels(i): p for i, p in zip(idx.tolist(), val.tolist())}
                for val, idx in zip(values, indices)]
