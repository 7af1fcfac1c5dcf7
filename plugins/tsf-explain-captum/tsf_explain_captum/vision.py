"""Integrated Gradients for ``image_classification`` and ``image_segmentation`` handlers.

JSON answers hold the attributions over the model input (``C x H x W`` after the handler's
transforms), as TorchServe returns them.  PNG answers attribute the picture's own pixels,
through the handler's (differentiable) transforms, and blend the heatmap over the picture at
its original size.  The explained class is the requested ``target`` or the predicted one, and
is sent back in the ``X-Explanation-Target`` header.
"""

from __future__ import annotations

from typing import Any, Callable

from .heatmap import image_answer
from .options import model_settings, parse_request, resolve_class


def explain_classification(context: Any, handler: Any, requests: list[dict]) -> list:
    """Target: the requested class, else the top predicted class."""

    def logits(batch: Any) -> Any:
        return handler.forward(context, batch)

    def score(output: Any, target: int) -> Any:
        return output[:, target]

    def predicted(output: Any) -> int:
        return int(output[0].argmax())

    return _explain_images(context, handler, requests, logits, score, predicted)


def explain_segmentation(context: Any, handler: Any, requests: list[dict]) -> list:
    """Score: the target class's logits summed over the pixels predicted as that class.

    Target: the requested class, else the most frequent predicted class other than 0
    (background), else 0.
    """
    import torch

    def logits(batch: Any) -> Any:
        return torch.stack(list(handler.forward(context, batch)))

    def score(output: Any, target: int) -> Any:
        chosen = (output.argmax(dim=1) == target).to(output.dtype)
        return (output[:, target] * chosen).sum(dim=(1, 2))

    def predicted(output: Any) -> int:
        counts = torch.bincount(output[0].argmax(dim=0).flatten(), minlength=output.shape[1])
        if counts[1:].sum() > 0:
            return int(counts[1:].argmax()) + 1
        return 0

    return _explain_images(context, handler, requests, logits, score, predicted)


def _explain_images(context: Any, handler: Any, requests: list[dict],
                    logits: Callable[[Any], Any], score: Callable[[Any, int], Any],
                    predicted: Callable[[Any], int]) -> list:
    import torch
    from captum.attr import IntegratedGradients

    settings = model_settings(context)
    results: list = []
    for index, request in enumerate(requests):
        asked = parse_request(context, request, index, settings)
        original = handler.decode(context, request, index)
        model_input = original if original.is_floating_point() else handler.transform(original)
        model_input = model_input.unsqueeze(0).to(context.device)
        with torch.no_grad():
            output = logits(model_input)
        target = resolve_class(context, index, asked.target, getattr(handler, "labels", None),
                               int(output.shape[1]), predicted(output))
        if asked.png:
            inputs, to_model, picture = picture_space(context, handler, original, settings)
        else:
            inputs, to_model, picture = model_input, _same, None

        def forward(batch: Any) -> Any:
            return score(logits(to_model(batch)), target)

        with torch.enable_grad():
            attributions = IntegratedGradients(forward).attribute(
                inputs, n_steps=asked.n_steps,
                internal_batch_size=int(settings["internal_batch_size"]))
        results.append(image_answer(context, index, attributions, picture,
                                    float(settings["alpha"]), target))
    return results


def _same(batch: Any) -> Any:
    return batch


def picture_space(context: Any, handler: Any, original: Any, settings: dict
                  ) -> tuple[Any, Callable[[Any], Any], Any]:
    """``(inputs, to_model, picture)`` for attributing the picture's own pixels.

    ``inputs`` are the pixels in [0, 1] (downscaled to ``max_side`` for the computation),
    ``to_model`` maps them to model input, ``picture`` is the ``H x W x 3`` uint8 image the
    heatmap is drawn on.
    """
    import torch
    import torch.nn.functional as F

    if original.is_floating_point():  # already model input (a nested list): undo normalisation
        options = getattr(handler, "options", {})
        shown = original.clone()
        if options.get("mean") and options.get("std"):
            std = torch.tensor(options["std"]).view(-1, 1, 1)
            mean = torch.tensor(options["mean"]).view(-1, 1, 1)
            shown = shown * std + mean
        picture = (shown.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return original.unsqueeze(0).to(context.device), _same, picture
    picture = original.permute(1, 2, 0).contiguous().numpy()
    pixels = original.unsqueeze(0).float().div(255)
    longest, max_side = max(pixels.shape[-2:]), int(settings["max_side"])
    if longest > max_side:
        size = [max(1, round(side * max_side / longest)) for side in pixels.shape[-2:]]
        pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True,
                               align_corners=False)
    return pixels.to(context.device), handler.transform, picture
