"""``ImageSegmenter``: per pixel ``[class, probability]`` (``N x H x W x 2``) per image."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import transforms

from .vision_handler import VisionHandler


class ImageSegmenter(VisionHandler):
    """For torchvision segmentation models (output ``{"out": N x K x H x W}``)."""

    image_processing = transforms.Compose([
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])

    def postprocess(self, data: Any) -> list:
        probs = torch.softmax(data["out"], dim=1)
        best = torch.max(probs, dim=1)
        return torch.stack([best.indices.type(best.values.dtype), best.values], dim=3).tolist()
