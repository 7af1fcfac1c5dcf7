"""Image explanation answers: attributions as lists, or blended over the picture as a PNG.

The map is the absolute attribution summed over channels, scaled so its 99th percentile is
full intensity, drawn with a black-red-yellow-white ramp and blended in proportion to its
intensity: regions that did not matter keep the original picture.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def intensity(attribution: np.ndarray) -> np.ndarray:
    """``C x H x W`` (or ``H x W``) attributions as an ``H x W`` map in [0, 1]."""
    heat = np.abs(attribution)
    if heat.ndim == 3:
        heat = heat.sum(axis=0)
    top = float(np.percentile(heat, 99)) if heat.size else 0.0
    if not np.isfinite(top) or top <= 0:
        top = float(heat.max()) if heat.size and heat.max() > 0 else 1.0
    return np.clip(heat / top, 0.0, 1.0)


def ramp(level: np.ndarray) -> np.ndarray:
    """``H x W`` in [0, 1] -> ``H x W x 3`` colours (black, red, yellow, white)."""
    return np.stack([np.clip(3 * level, 0, 1), np.clip(3 * level - 1, 0, 1),
                     np.clip(3 * level - 2, 0, 1)], axis=-1)


def image_answer(context: Any, index: int, attributions: Any, picture: np.ndarray | None,
                 alpha: float, target: Any) -> Any:
    """One request's answer: the attributions as nested lists, or (``picture`` given) a PNG
    of them over the picture; the explained target goes in ``X-Explanation-Target``."""
    attributions = attributions[0].detach().float().cpu()
    context.set_response_header(index, "X-Explanation-Target", str(target))
    if picture is None:
        return attributions.tolist()
    context.set_response_content_type(index, "image/png")
    return overlay_png(picture, attributions.numpy(), alpha)


def overlay_png(image: np.ndarray, attribution: Any, alpha: float = 0.6) -> bytes:
    """Blend ``attribution`` over ``image`` (``H x W x 3`` uint8); PNG at the image's size."""
    height, width = image.shape[:2]
    level = intensity(np.asarray(attribution, dtype=np.float32))
    if level.shape != (height, width):
        resized = Image.fromarray(level.astype(np.float32)).resize(
            (width, height), Image.BILINEAR)
        level = np.clip(np.asarray(resized), 0.0, 1.0)
    weight = (alpha * level)[..., None]
    blended = image.astype(np.float32) * (1 - weight) + ramp(level) * 255.0 * weight
    buffer = io.BytesIO()
    Image.fromarray(blended.round().clip(0, 255).astype(np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()
