"""``VisionHandler``: images from requests (bytes or base64) through ``image_processing``.

Subclasses set ``image_processing`` (a torchvision transform of a PIL image).  A body that is
not an image answers 400.  Unless a subclass replaces ``preprocess`` or ``_image``, each image is
decoded and transformed in ``prepare_request``, which tsf's worker runs in its prepare threads
as soon as a batch arrives, while the batch before it computes (``tsf.runtime.read_ahead``):
the same PIL pixels as TorchServe, several images at once.  ``get_insights`` runs Captum's
Integrated Gradients when Captum is installed (``pip install tsf-ts-compat[explain]``).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import torch
from PIL import Image

from tsf.errors import BadRequest, NotImplementedByModel
from tsf.handler import prepared

from ..handler_utils.timer import timed
from .base_handler import BaseHandler


class VisionHandler(BaseHandler):
    """Base for image handlers."""

    image_processing: Any = None

    def initialize(self, context: Any) -> None:
        super().initialize(context)
        try:
            from captum.attr import IntegratedGradients
        except ImportError:
            self.ig = None
        else:
            self.ig = IntegratedGradients(self.model)
        self.initialized = True
        if not context.system_properties.get("limit_max_image_pixels"):
            Image.MAX_IMAGE_PIXELS = None
        cls = type(self)
        if cls.preprocess is not VisionHandler.preprocess or cls._image is not VisionHandler._image:
            self.prepare_request = None  # its own preprocess would not use what was prepared

    def prepare_request(self, request: Any, request_id: str) -> Any:
        """One request's image through ``image_processing`` (run in the worker's threads)."""
        return self._image(request, request_id)

    def _image(self, row: Any, index: int) -> Any:
        image = row.get("data") or row.get("body") if isinstance(row, dict) else row
        if isinstance(image, dict):  # a JSON body such as KServe v1's {"data": "<base64>"}
            image = image.get("data") or image.get("b64")
        if isinstance(image, str):
            try:
                image = base64.b64decode(image, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"request {index}: the string is not base64") from None
        if isinstance(image, (bytes, bytearray)):
            try:
                return self.image_processing(Image.open(io.BytesIO(image)))
            except (Image.DecompressionBombError, OSError, SyntaxError) as exc:
                raise BadRequest(f"request {index}: body is not an image "
                                 f"({type(exc).__name__}: {exc})") from None
        try:
            return torch.FloatTensor(image)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"request {index}: not an image or a tensor ({exc})") from None

    @timed
    def preprocess(self, data: list) -> Any:
        images = []
        for i, row in enumerate(data):
            future = prepared(self.context, i) if self.context is not None else None
            images.append(future.result() if future is not None else self._image(row, i))
        return torch.stack(images).to(self.device)

    def get_insights(self, tensor_data: Any, raw_data: Any, target: Any = 0) -> Any:
        if self.ig is None:
            raise NotImplementedByModel("explanations need Captum: pip install captum")
        return self.ig.attribute(tensor_data, target=target, n_steps=15).tolist()
