"""``image_segmenter``: per-pixel top class and probability, or a PNG mask.

The JSON answer is TorchServe's: for each image an ``H x W`` grid of ``[class, probability]``,
after TorchServe's default transform (resize the short side to 256, center crop 224, ImageNet
normalisation), so a 224 x 224 grid.  ``handler: {resize: none, crop: none}`` segments the
picture at its own size instead.
With ``Accept: image/png`` on the request (or ``handler: {output: png}``), the answer is instead
a PNG at the model output's size whose pixel values are the class indices.  Works with models
returning a tensor or a dict with ``"out"`` (torchvision's segmentation models).
"""

from __future__ import annotations

import io
from typing import Any

from tsf.errors import HandlerError
from tsf.handler import Ragged
from tsf_handler_image.vision import VisionHandler


_OFF = ("none", "null", "off", "false", "")


class ImageSegmenter(VisionHandler):
    """Segments images after TorchServe's resize 256 / crop 224 / ImageNet normalisation."""

    task = "image_segmentation"
    defaults = {**VisionHandler.defaults, "output": "json"}

    def build_transform(self, options: dict) -> Any:
        """VisionHandler's transform; ``none`` (as a string too) turns a step off."""
        for step in ("resize", "crop"):
            if isinstance(options.get(step), str) and options[step].lower() in _OFF:
                options[step] = None
        return super().build_transform(options)

    def forward(self, context: Any, batch: Any) -> Any:
        """Per-image logits, ``classes x H x W`` each (a list, since sizes may differ)."""
        if isinstance(batch, Ragged):
            return [_logits(context.model(x))[0] for x in batch]
        return list(_logits(context.model(batch)))

    def wants_png(self, context: Any, index: int) -> bool:
        accept = (context.get_request_header(index, "accept") or "").lower()
        return "image/png" in accept or self.options.get("output") == "png"

    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        import torch

        results = []
        for index, logits in enumerate(outputs):
            prob, classes = torch.softmax(logits.float(), dim=0).max(dim=0)
            if self.wants_png(context, index):
                results.append(_png(classes))
                context.set_response_content_type(index, "image/png")
            else:
                results.append(torch.stack([classes.float(), prob], dim=-1).tolist())
        return results


def _logits(output: Any) -> Any:
    return output["out"] if isinstance(output, dict) else output


def _png(classes: Any) -> bytes:
    """Class indices as an 8-bit grayscale PNG."""
    import torch
    from PIL import Image

    if int(classes.max()) > 255:
        raise HandlerError("a PNG mask holds at most 256 classes; ask for JSON instead")
    buf = io.BytesIO()
    Image.fromarray(classes.to(torch.uint8).cpu().numpy()).save(buf, format="PNG")
    return buf.getvalue()
