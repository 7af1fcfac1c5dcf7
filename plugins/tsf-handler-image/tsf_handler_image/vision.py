"""VisionHandler: decode images from requests and apply torchvision v2 transforms.

A request's image may be raw bytes (JPEG, PNG, ...), a base64 string, or a nested list that is
already a ``C x H x W`` tensor.  Pillow's decompression-bomb limit stays on
(``handler.max_image_pixels`` in model-config.yaml, Pillow's default otherwise) and is enforced
as an error, not a warning.  A body that is not an image gets a 400 naming the request.

Handler options (model-config.yaml, ``handler:`` section): ``resize``, ``crop``, ``mean``,
``std`` (``null`` disables a step), ``max_image_pixels``.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from typing import Any

from tsf.archives.labels import Labels
from tsf.errors import BadRequest
from tsf.handler import BaseHandler, Ragged

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class _ImageTransform:
    """The handler's transform. A decoded ``uint8 C x H x W`` image is resized and cropped as a
    PIL image, as TorchServe's transforms do: a tensor resize (even antialiased) gives other
    grey levels, which moves probabilities and can flip a near-tied class; the uint8 tensor
    round-trips through PIL exactly. Float tensors and batches (the Captum explainer maps
    ``[0, 1]`` pixels through it, with gradients) take the tensor path."""

    def __init__(self, tensor: Any, decoded: Any) -> None:
        self.tensor, self.decoded = tensor, decoded

    def __call__(self, image: Any) -> Any:
        import torch

        if (self.decoded is not None and image.dtype == torch.uint8 and image.dim() == 3
                and image.shape[0] in (1, 3)):
            return self.decoded(image)
        return self.tensor(image)


class VisionHandler(BaseHandler):
    """Base for image handlers: model loading from BaseHandler, image decoding, transforms."""

    defaults: dict[str, Any] = {"resize": 256, "crop": 224, "mean": IMAGENET_MEAN,
                                "std": IMAGENET_STD}

    def tsf_load_model(self, context: Any) -> Any:
        import torchvision  # noqa: F401  registers torchvision's ops (nms, ...) for TorchScript
        from PIL import Image

        model = super().tsf_load_model(context)
        self.options = {**self.defaults, **context.handler_config}
        self.labels = Labels.from_model_dir(context.model_dir)
        if self.options.get("max_image_pixels"):
            Image.MAX_IMAGE_PIXELS = int(self.options["max_image_pixels"])
        self.transform = self.build_transform(self.options)
        return model

    def build_transform(self, options: dict) -> Any:
        import torch
        from torchvision.transforms import v2

        tensor_steps: list = []
        if options.get("resize"):
            tensor_steps.append(v2.Resize(options["resize"], antialias=True))
        if options.get("crop"):
            tensor_steps.append(v2.CenterCrop(options["crop"]))
        geometry = len(tensor_steps)
        tensor_steps.append(v2.ToDtype(torch.float32, scale=True))
        if options.get("mean") and options.get("std"):
            tensor_steps.append(v2.Normalize(options["mean"], options["std"]))
        return _ImageTransform(v2.Compose(tensor_steps), v2.Compose(
            [v2.ToPILImage(), *tensor_steps[:geometry], v2.PILToTensor(),
             *tensor_steps[geometry:]]) if geometry else None)

    def image_bytes(self, context: Any, request: dict, index: int) -> Any:
        value = request.get("data", request.get("body"))
        if value is None and request:
            value = next(iter(request.values()))
        if isinstance(value, dict):
            value = value.get("data", value.get("b64", value.get("image")))
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise self.bad(context, index, "the string is not base64") from None
        return value

    def bad(self, context: Any, index: int, why: str) -> BadRequest:
        return BadRequest(f"request {context.get_request_id(index) or index}: body is not an "
                          f"image ({why})")

    def decode(self, context: Any, request: dict, index: int) -> Any:
        """The request's image as a ``uint8 C x H x W`` tensor (or float, from a nested list)."""
        import torch
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        value = self.image_bytes(context, request, index)
        if isinstance(value, list):
            try:
                return torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError) as exc:
                raise self.bad(context, index, f"not a numeric tensor: {exc}") from None
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise self.bad(context, index, "empty or not binary")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(value))
                image = image.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadRequest(f"request {context.get_request_id(index) or index}: image is too "
                             f"large ({exc})") from None
        except Exception as exc:
            raise self.bad(context, index, f"{type(exc).__name__}: {exc}") from None
        return F.pil_to_tensor(image)

    def images(self, context: Any, requests: list[dict]) -> list:
        """Decoded and transformed images, one per request."""
        out = []
        for i, request in enumerate(requests):
            image = self.decode(context, request, i)
            out.append(image if image.is_floating_point() else self.transform(image))
        return out

    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        import torch

        images = self.images(context, requests)
        if all(img.shape == images[0].shape for img in images):
            return torch.stack(images).to(context.device)
        return Ragged(img.unsqueeze(0).to(context.device) for img in images)
