"""VisionHandler: decode images from requests and apply torchvision v2 transforms.

A request's image may be raw bytes (JPEG, PNG, ...), a base64 string, or a nested list that is
already a ``C x H x W`` tensor.  Pillow's decompression-bomb limit stays on
(``handler.max_image_pixels`` in model-config.yaml, Pillow's default otherwise) and is enforced
as an error, not a warning.  A body that is not an image gets a 400 naming the request.

Each image is decoded and transformed in ``prepare_request``, which the worker runs in its
prepare threads as soon as a batch arrives, while the batch before it computes (see
:mod:`tsf.runtime.read_ahead`); the stage then only stacks the results.  ``image_backend``
chooses the decoder and resizer (:mod:`tsf_handler_image.decoding`): ``tensor`` (default,
libjpeg-turbo and a tensor resize, within one grey level of TorchServe's pixels) or ``pil``
(TorchServe's pixels exactly).

Handler options (model-config.yaml, ``handler:`` section): ``resize``, ``crop``, ``mean``,
``std`` (``null`` disables a step), ``max_image_pixels``, ``image_backend``,
``prepare_threads`` (threads decoding images; default: the worker's torch threads),
``channels_last`` (run the model on channels-last batches).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from tsf.archives.labels import Labels
from tsf.errors import BadRequest
from tsf.handler import BaseHandler, Ragged, prepared

from .decoding import ImageTooLarge, check_backend, decode_image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class _ImageTransform:
    """The handler's transform. With the ``pil`` backend a decoded ``uint8 C x H x W`` image is
    resized and cropped as a PIL image, as TorchServe's transforms do: a tensor resize gives
    grey levels up to one apart, which moves probabilities slightly and can flip a near-tied
    class; the uint8 tensor round-trips through PIL exactly. The ``tensor`` backend resizes the
    uint8 tensor (antialiased, before the float conversion: within one grey level of PIL).
    Float tensors and batches (the Captum explainer maps ``[0, 1]`` pixels through it, with
    gradients) always take the tensor path."""

    def __init__(self, tensor: Any, decoded: Any, pil: Any = None) -> None:
        self.tensor, self.decoded, self.pil = tensor, decoded, pil

    def __call__(self, image: Any) -> Any:
        import torch
        from PIL import Image

        if isinstance(image, Image.Image):  # the pil backend's pictures, never made tensors
            return self.pil(image)
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

        model = super().tsf_load_model(context)
        self.configure(context.handler_config)
        self.labels = Labels.from_model_dir(context.model_dir)
        if self.channels_last and hasattr(model, "to"):
            import torch

            model = model.to(memory_format=torch.channels_last)
        cls = type(self)
        if cls.decode is not VisionHandler.decode or cls.images is not VisionHandler.images:
            self.prepare_request = None  # its own decoding would not see what was prepared
        return model

    def configure(self, handler_config: dict) -> None:
        """Take the ``handler`` options of model-config.yaml over :attr:`defaults`: the decoding
        backend, the transform, and the limits and threads of decoding."""
        from PIL import Image

        self.options = {**self.defaults, **handler_config}
        self.backend = check_backend(self.options.get("image_backend"))
        if self.options.get("max_image_pixels"):
            Image.MAX_IMAGE_PIXELS = int(self.options["max_image_pixels"])
        if self.options.get("prepare_threads"):
            self.prepare_threads = int(self.options["prepare_threads"])
        self.channels_last = bool(self.options.get("channels_last"))
        self.transform = self.build_transform(self.options)

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
        exact = geometry and check_backend(options.get("image_backend")) == "pil"
        pil = v2.Compose([*tensor_steps[:geometry], v2.PILToTensor(), *tensor_steps[geometry:]])
        return _ImageTransform(v2.Compose(tensor_steps),
                               v2.Compose([v2.ToPILImage(), pil]) if exact else None, pil)

    def image_bytes(self, context: Any, request: dict, index: int) -> Any:
        return self.request_image(request, context.get_request_id(index) or str(index))

    def request_image(self, request: dict, request_id: str) -> Any:
        """The image a request carries: bytes, or a nested list (already a tensor)."""
        value = request.get("data", request.get("body"))
        if value is None and request:
            value = next(iter(request.values()))
        if isinstance(value, dict):
            value = value.get("data", value.get("b64", value.get("image")))
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(request_id, "the string is not base64") from None
        return value

    def bad(self, context: Any, index: int, why: str) -> BadRequest:
        return _bad(context.get_request_id(index) or str(index), why)

    def decode(self, context: Any, request: dict, index: int) -> Any:
        """The request's image as a ``uint8 C x H x W`` tensor (or float, from a nested list)."""
        return self.decode_request(request, context.get_request_id(index) or str(index))

    def decode_request(self, request: dict, request_id: str, keep_pil: bool = False) -> Any:
        """The request's image: a ``uint8 C x H x W`` tensor (float from a nested list), or with
        ``keep_pil`` and the ``pil`` backend the RGB PIL image itself."""
        import torch

        value = self.request_image(request, request_id)
        if isinstance(value, list):
            try:
                return torch.tensor(value, dtype=torch.float32)
            except (TypeError, ValueError) as exc:
                raise _bad(request_id, f"not a numeric tensor: {exc}") from None
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise _bad(request_id, "empty or not binary")
        try:
            return decode_image(bytes(value), self.backend, keep_pil)
        except ImageTooLarge as exc:
            raise BadRequest(f"request {request_id}: image is too large ({exc})") from None
        except Exception as exc:
            raise _bad(request_id, f"{type(exc).__name__}: {exc}") from None

    def prepare_request(self, request: dict, request_id: str) -> Any:
        """One request's image, decoded and transformed (the worker calls it in its prepare
        threads; it reads only the request and the handler's options)."""
        image = self.decode_request(request, request_id, keep_pil=True)
        if getattr(image, "is_floating_point", None) is not None and image.is_floating_point():
            return image
        return self.transform(image)  # a PIL image is resized as one, with no round trip

    def images(self, context: Any, requests: list[dict]) -> list:
        """Decoded and transformed images, one per request: prepared ahead by the worker where
        it did, else here."""
        out = []
        for i, request in enumerate(requests):
            future = prepared(context, i)
            if future is not None:
                out.append(future.result())
                continue
            image = self.decode(context, request, i)
            out.append(image if image.is_floating_point() else self.transform(image))
        return out

    def tsf_preprocess(self, context: Any, requests: list[dict]) -> Any:
        import torch

        images = self.images(context, requests)
        if all(img.shape == images[0].shape for img in images):
            batch = torch.stack(images).to(context.device)
            if getattr(self, "channels_last", False) and batch.dim() == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return batch
        return Ragged(img.unsqueeze(0).to(context.device) for img in images)


def _bad(request_id: str, why: str) -> BadRequest:
    return BadRequest(f"request {request_id}: body is not an image ({why})")
