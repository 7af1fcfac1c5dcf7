"""``object_detector``: ``[{label: [x1, y1, x2, y2], "score": s}, ...]`` per image.

For torchvision detection models (Faster R-CNN, RetinaNet, SSD, ...), eager or TorchScript.  Images
of any size go to the model as a list, since these models resize and normalise internally.
Box values and scores are the model's floats unrounded, as TorchServe's ``object_detector``
answers.  Options (model-config.yaml ``handler:``): ``threshold`` (default 0.5),
``box_decimals`` (round box values to that many decimals; unset by default), and the
VisionHandler options (no resize or normalisation by default).
"""

from __future__ import annotations

from typing import Any

from tsf_handler_image.vision import VisionHandler


class ObjectDetector(VisionHandler):
    """Detects objects; keeps boxes whose score reaches ``threshold``."""

    task = "object_detection"
    defaults = {"resize": None, "crop": None, "mean": None, "std": None, "threshold": 0.5,
                "box_decimals": None}

    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        return [image.to(context.device) for image in self.images(context, requests)]

    def forward(self, context: Any, batch: Any) -> Any:
        """One ``{"boxes", "labels", "scores"}`` dict per image."""
        outputs = context.model(batch)
        if isinstance(outputs, tuple) and len(outputs) == 2 and isinstance(outputs[1], list):
            outputs = outputs[1]  # TorchScript detection models return (losses, detections)
        return outputs

    def tsf_postprocess(self, context: Any, outputs: Any) -> list:
        threshold = float(self.options.get("threshold", 0.5))
        decimals = self.options.get("box_decimals")
        results = []
        for detection in outputs:
            found = []
            for box, label, score in zip(detection["boxes"].tolist(),
                                         detection["labels"].tolist(),
                                         detection["scores"].tolist()):
                if score >= threshold:
                    if decimals is not None:
                        box = [round(v, int(decimals)) for v in box]
                    found.append({self.labels(label): box, "score": score})
            results.append(found)
        return results
