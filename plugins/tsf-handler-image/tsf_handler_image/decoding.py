"""Image bytes to a ``uint8 3 x H x W`` RGB tensor, two ways.

* ``tensor`` (the default): JPEGs whose Pillow mode is RGB or L are decoded by
  ``torchvision.io.decode_jpeg`` (libjpeg-turbo, the same pixels as Pillow's decoder) and
  resized as tensors; other formats and modes go through Pillow.  Both release the GIL, so
  several images decode at once in the worker's prepare threads.
* ``pil``: Pillow decodes, and the handler resizes as a PIL image: TorchServe's pixels exactly.

Either way Pillow reads the header first: a format it does not know is refused, and the
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is checked before any pixel is
decoded, as an error.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from PIL import Image

BACKENDS = ("tensor", "pil")
FAST_MODES = ("RGB", "L")

# the limit is enforced below as an error; Pillow's warning between one and two times the
# limit would only repeat it (a global filter: catch_warnings is not safe across threads)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# torchvision 0.29 deprecates its image codecs in favour of torchcodec, warning on every call
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                        category=DeprecationWarning)


class ImageTooLarge(ValueError):
    """The image has more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` allows."""


def check_backend(name: Any) -> str:
    backend = str(name or "tensor").lower()
    if backend not in BACKENDS:
        raise ValueError(f"handler.image_backend must be one of {', '.join(BACKENDS)}, "
                         f"not {name!r}")
    return backend


def decode_image(data: bytes, backend: str = "tensor", keep_pil: bool = False) -> Any:
    """``data`` as a ``uint8 3 x H x W`` tensor (with ``keep_pil`` and the ``pil`` backend: the
    RGB PIL image, for a transform that resizes it as TorchServe's does); raises
    :class:`ImageTooLarge` past the pixel limit and Pillow's or torchvision's own errors for
    what is not a readable image."""
    import torch
    from torchvision.transforms.v2 import functional as F

    try:
        image = Image.open(io.BytesIO(data))  # the header only
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(str(exc)) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and image.width * image.height > limit:
        raise ImageTooLarge(f"{image.width * image.height} pixels, more than the limit of "
                            f"{limit}")
    if backend == "tensor" and image.format == "JPEG" and image.mode in FAST_MODES:
        from torchvision.io import ImageReadMode, decode_jpeg

        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)
    if keep_pil and backend == "pil":
        image = image.convert("RGB")
        image.load()  # decode here, in the caller's thread
        return image
    return F.pil_to_tensor(image.convert("RGB"))
