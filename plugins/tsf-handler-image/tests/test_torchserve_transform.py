"""The built-in image handlers prepare an image as TorchServe 0.12's handlers do: exactly with
``image_backend: pil``, within one grey level with the default ``tensor`` backend (libjpeg-turbo
through torchvision and a tensor resize)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from tsf_handler_image.decoding import decode_image
from tsf_handler_image.vision import IMAGENET_STD, VisionHandler

ONE_GREY_LEVEL = 1 / 255 / min(IMAGENET_STD)  # in normalised units


def torchserve_tensor(data: bytes) -> torch.Tensor:
    """TorchServe's default image transform: on the PIL image."""
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(
        Image.open(io.BytesIO(data)).convert("RGB"))


def _image(size: tuple[int, int], fmt: str) -> bytes:
    """A photo-like picture (smooth gradients and noise) of ``size``, encoded as ``fmt``."""
    rng = np.random.default_rng(sum(size))
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _handler(backend: str) -> VisionHandler:
    handler = VisionHandler()
    handler.configure({"image_backend": backend})
    return handler


def _prepare(data: bytes, backend: str) -> torch.Tensor:
    """What the worker's prepare threads make of a request's picture."""
    return _handler(backend).prepare_request({"body": data}, "t")


@pytest.mark.parametrize("size", [(64, 48), (640, 427), (300, 300), (1024, 768)])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_the_pil_backend_is_torchserve_exactly(size, fmt):
    data = _image(size, fmt)
    ours = _prepare(data, "pil")
    assert ours.shape == (3, 224, 224)
    assert torch.allclose(ours, torchserve_tensor(data), atol=1e-5)
    # the decoded tensor through the transform (the explainer's path) gives the same
    handler = _handler("pil")
    assert torch.allclose(handler.transform(decode_image(data, "pil")), ours, atol=1e-6)


@pytest.mark.parametrize("size", [(64, 48), (640, 427), (300, 300), (1024, 768)])
def test_the_tensor_backend_is_within_one_grey_level_of_torchserve(size):
    data = _image(size, "JPEG")
    ours = _prepare(data, "tensor")
    reference = torchserve_tensor(data)
    assert ours.shape == reference.shape == (3, 224, 224)
    assert (ours - reference).abs().max() <= ONE_GREY_LEVEL + 1e-5


def test_the_tensor_backend_decodes_jpeg_pixels_as_pillow():
    data = _image((300, 200), "JPEG")
    pillow = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy())
    assert torch.equal(decode_image(data, "tensor"), pillow.permute(2, 0, 1))
