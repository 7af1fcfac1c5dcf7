"""``.pt2`` files in the worker: a torch.export program with a bounded dynamic batch loads,
and a batch larger than the bound runs in slices (the program alone refuses it)."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from tsf.errors import ModelLoadError
from tsf.runtime.pt2 import BatchLimited, is_aoti_package, load_pt2


class Two(torch.nn.Module):
    """Two outputs, to check they are joined back per output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x), x.sum(1)


def test_an_exported_program_takes_batches_past_its_bound_in_slices(tmp_path):
    torch.manual_seed(0)
    model = Two().eval()
    program = torch.export.export(model, (torch.randn(2, 4),),
                                  dynamic_shapes=({0: Dim("batch", min=1, max=8)},))
    path = tmp_path / "two.pt2"
    torch.export.save(program, str(path))
    assert not is_aoti_package(path)
    loaded = load_pt2(path, "cpu")
    assert isinstance(loaded, BatchLimited) and loaded.max_batch == 8
    x = torch.randn(19, 4)
    with pytest.raises(Exception):
        loaded.inner(x)  # the program itself checks its bound
    with torch.inference_mode():
        logits, sums = loaded(x)
        want_logits, want_sums = model(x)
    assert logits.shape == (19, 3) and torch.allclose(logits, want_logits, atol=1e-6)
    assert torch.allclose(sums, want_sums)


def test_a_program_without_a_bound_is_not_wrapped(tmp_path):
    model = Two().eval()
    for name, shapes in (("unbounded", ({0: Dim("batch")},)), ("static", None)):
        program = torch.export.export(model, (torch.randn(2, 4),), dynamic_shapes=shapes)
        torch.export.save(program, str(tmp_path / f"{name}.pt2"))
        loaded = load_pt2(tmp_path / f"{name}.pt2", "cpu")
        assert not isinstance(loaded, BatchLimited)
        assert loaded(torch.randn(2, 4))[0].shape == (2, 3)


def test_a_batch_within_the_bound_is_one_call():
    calls = []

    def inner(x):
        calls.append(x.shape[0])
        return {"out": x * 2}

    limited = BatchLimited(inner, 4, "aoti")
    assert torch.equal(limited(torch.ones(3, 2))["out"], torch.full((3, 2), 2.0))
    assert torch.equal(limited(torch.ones(9, 2))["out"], torch.full((9, 2), 2.0))
    assert calls == [3, 4, 4, 1]


def test_a_file_that_is_not_a_program_is_refused_by_the_loader(tmp_path):
    from types import SimpleNamespace

    from tsf.runtime.model_loader import load_model

    (tmp_path / "junk.pt2").write_bytes(b"not a zip")
    context = SimpleNamespace(manifest={"model": {"serializedFile": "junk.pt2"}},
                              model_dir=str(tmp_path), device="cpu", handler_config={})
    with pytest.raises(ModelLoadError, match="junk.pt2 is not a .pt2 file"):
        load_model(context)
    (tmp_path / "junk.pt2").write_bytes(_zip_of({"x/readme.txt": b"hello"}))
    with pytest.raises(ModelLoadError, match="could not be loaded as a torch.export program"):
        load_model(context)


def _zip_of(files: dict) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_an_int8_program_loads_in_a_fresh_worker(tmp_path):
    """torchao's quantized operators are registered only when a program needs them."""
    import subprocess
    import sys

    from tsf.optimize.forms import quantize_int8, save_program

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2)).eval()
    x = torch.randn(8, 3, 12, 12)
    save_program(quantize_int8(model, x[:2].clone(), x, 4), tmp_path / "q.pt2")
    code = ("import sys, torch; from pathlib import Path; from tsf.runtime.pt2 import load_pt2;"
            "m = load_pt2(Path(sys.argv[1]), 'cpu'); x = torch.load(sys.argv[2]);"
            "print(m.max_batch, list(m(x).shape))")
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "q.pt2"),
                           str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["4", "[8,", "2]"]
