"""The toolkit's API as inference.py scripts call it: decode, encode, errors, utilities."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import sagemaker_inference
from sagemaker_inference import content_types, decoder, encoder, errors, utils
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler


def test_it_is_tsfs_compatible_package():
    assert sagemaker_inference.TSF_COMPAT
    assert (Path(sagemaker_inference.__file__).parent / "TSF_COMPAT").is_file()
    assert content_types.UTF8_TYPES == [content_types.JSON, content_types.CSV]


def test_decode_json_csv_npy():
    np.testing.assert_array_equal(decoder.decode("[[1, 2], [3, 4]]", content_types.JSON),
                                  [[1, 2], [3, 4]])
    np.testing.assert_array_equal(decoder.decode(b"[1.5]", "application/json; charset=utf-8"),
                                  [1.5])
    np.testing.assert_array_equal(decoder.decode("1,2\n3,4\n", content_types.CSV),
                                  [[1, 2], [3, 4]])
    out = io.BytesIO()
    np.save(out, np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(decoder.decode(out.getvalue(), content_types.NPY),
                                  np.arange(6).reshape(2, 3))


def test_bad_bodies_are_400_toolkit_errors():
    with pytest.raises(errors.GenericInferenceToolkitError) as deep:
        decoder.decode("[" * 5000, content_types.JSON)
    assert deep.value.status_code == 400 and "nested" in deep.value.message
    with pytest.raises(ValueError):  # what code written for the toolkit catches
        decoder.decode("[1, 2", content_types.JSON)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(errors.GenericInferenceToolkitError, match="pickle") as refused:
        decoder.decode(pickled.getvalue(), content_types.NPY)
    assert refused.value.status_code == 400


def test_unsupported_types_raise_unsupported_format_error():
    with pytest.raises(errors.UnsupportedFormatError, match="application/xml"):
        decoder.decode("<x/>", "application/xml")
    with pytest.raises(errors.UnsupportedFormatError, match="image/png"):
        encoder.encode([1], "image/png")


def test_encode_json_csv_npy():
    array = np.array([[1.5, 2.0], [3.0, 4.0]])
    assert json.loads(encoder.encode(array, content_types.JSON)) == array.tolist()
    np.testing.assert_array_equal(
        np.loadtxt(io.StringIO(encoder.encode(array, content_types.CSV)), delimiter=","), array)
    np.testing.assert_array_equal(np.load(io.BytesIO(encoder.encode(array, content_types.NPY))),
                                  array)
    assert encoder.SUPPORTED_CONTENT_TYPES == {content_types.JSON, content_types.CSV,
                                               content_types.NPY}


def test_generic_error_defaults_and_utils():
    error = errors.GenericInferenceToolkitError(422)
    assert (error.status_code, error.message, error.phrase) == (422, "Invalid Request",
                                                                "Invalid Request")
    assert isinstance(error, errors.BaseInferenceToolkitError)
    assert utils.parse_accept("text/csv, application/json") == ["text/csv", "application/json"]
    assert utils.retrieve_content_type_header({"Accept": "x", "content-type": "text/csv"}) == \
        "text/csv"
    assert utils.remove_crlf("a\r\nb") == "a  b"


def test_default_handler_picks_the_first_supported_accept_type():
    handler = DefaultInferenceHandler()
    body, ctype = handler.default_output_fn(np.array([1, 2]), "image/png, text/csv")
    assert ctype == "text/csv" and body.split() == ["1", "2"]
    with pytest.raises(errors.UnsupportedFormatError):
        handler.default_output_fn(np.array([1]), "image/png")
    with pytest.raises(NotImplementedError):
        handler.default_model_fn("/opt/ml/model")
