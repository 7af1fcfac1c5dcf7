"""The built-in image handlers prepare an image exactly as TorchServe 0.12's handlers do."""
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from tsf_handler_image.vision import VisionHandler


def torchserve_tensor(data: bytes) -> torch.Tensor:
    """TorchServe's default image transform: on the PIL image."""
    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(
        Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("size", [(64, 48), (640, 427), (300, 300)])
def test_resize_and_crop_as_torchserve(size):
    rng = np.random.default_rng(sum(size))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    transform = VisionHandler().build_transform(dict(VisionHandler.defaults))
    ours = transform(F.pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB")))
    assert ours.shape == (3, 224, 224)
    assert torch.allclose(ours, torchserve_tensor(data), atol=1e-5)
