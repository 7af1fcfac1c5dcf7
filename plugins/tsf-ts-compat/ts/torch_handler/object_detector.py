"""``ObjectDetector``: ``[{label: [x1, y1, x2, y2], "score": s}, ...]`` per image."""

from __future__ import annotations

from typing import Any

from torchvision import transforms

from ..utils.util import map_class_to_label
from .vision_handler import VisionHandler


class ObjectDetector(VisionHandler):
    """For torchvision detection models (``boxes``, ``labels``, ``scores`` per image)."""

    image_processing = transforms.Compose([transforms.ToTensor()])
    threshold = 0.5

    def postprocess(self, data: Any) -> list:
        result = []
        for row in data:
            keep = row["scores"] >= self.threshold
            boxes, labels, scores = (row[k][keep].tolist() for k in ("boxes", "labels", "scores"))
            detections = []
            for label, box, score in zip(labels, boxes, scores):
                detection = map_class_to_label([[box]], self.mapping, [[label]])[0]
                detection["score"] = score
                detections.append(detection)
            result.append(detections)
        return result
