"""Integrated Gradients for ``object_detection`` handlers: why was this box found?

The explained box is the ``target``-th box of the prediction (boxes scoring at least the
handler's threshold, in the model's order; default 0, the best one).  At each step of the
integration path the score is that of the detection with the same label overlapping the box
best (IoU >= 0.5), or 0 when the model no longer finds it.  Attributions are over the image
(detection models take the picture itself); JSON is ``C x H x W``, PNG a heatmap overlay.
"""

from __future__ import annotations

from typing import Any

from .heatmap import image_answer
from .options import model_settings, parse_request, request_error

MATCH_IOU = 0.5


def explain_detection(context: Any, handler: Any, requests: list[dict]) -> list:
    import torch
    from captum.attr import IntegratedGradients
    from torchvision.ops import box_iou

    settings = model_settings(context)
    threshold = float(getattr(handler, "options", {}).get("threshold", 0.5))
    results: list = []
    for index, request in enumerate(requests):
        asked = parse_request(context, request, index, settings)
        original = handler.decode(context, request, index)
        image = original if original.is_floating_point() else handler.transform(original)
        image = image.to(context.device)
        with torch.no_grad():
            found = handler.forward(context, [image])[0]
        kept = [i for i, s in enumerate(found["scores"].tolist()) if s >= threshold]
        if not kept:
            raise request_error(context, index, f"no object scored {threshold} or more, so "
                                "there is no box to explain (lower handler.threshold)")
        chosen = _box_index(context, index, asked.target, len(kept))
        box = found["boxes"][kept[chosen]].unsqueeze(0)
        label = found["labels"][kept[chosen]]

        def forward(batch: Any) -> Any:
            scores = []
            for picture, detections in zip(batch, handler.forward(context, list(batch))):
                same = detections["labels"] == label
                if bool(same.any()):
                    overlap = box_iou(box, detections["boxes"][same])[0]
                    best = int(overlap.argmax())
                    matched = (overlap[best] >= MATCH_IOU).to(picture.dtype)
                    scores.append(detections["scores"][same][best] * matched)
                else:  # keeps the graph connected while contributing nothing
                    scores.append(picture.sum() * 0.0)
            return torch.stack(scores)

        with torch.enable_grad():
            attributions = IntegratedGradients(forward).attribute(
                image.unsqueeze(0), n_steps=asked.n_steps,
                internal_batch_size=int(settings["internal_batch_size"]))
        picture = None
        if asked.png:
            picture = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
            picture = picture.permute(1, 2, 0).numpy()
        results.append(image_answer(context, index, attributions, picture,
                                    float(settings["alpha"]), chosen))
        labels = getattr(handler, "labels", None)
        if labels is not None:
            context.set_response_header(index, "X-Explanation-Label", labels(int(label)))
    return results


def _box_index(context: Any, index: int, target: str | None, count: int) -> int:
    if target is None:
        return 0
    if target.strip().isdigit() and int(target) < count:
        return int(target)
    raise request_error(context, index, f"target {target!r} is not a box of the prediction "
                        f"(an index from 0 to {count - 1})")
