"""The toolkit's default ``*_fn`` (``sagemaker_inference.default_inference_handler``).

Scripts that subclass :class:`DefaultInferenceHandler` to borrow its ``default_input_fn`` and
``default_output_fn`` get the decoder and encoder of this package; loading and prediction are
the framework's (here: tsf's ``sagemaker`` handler), so those two raise NotImplementedError as
in the toolkit.
"""

from __future__ import annotations

from typing import Any

from . import decoder, encoder, errors, utils


class DefaultInferenceHandler:
    """Default ``model_fn``, ``input_fn``, ``predict_fn`` and ``output_fn``."""

    def default_model_fn(self, model_dir: str, context: Any = None) -> Any:
        raise NotImplementedError("Please provide a model_fn implementation.")

    def default_input_fn(self, input_data: Any, content_type: str, context: Any = None) -> Any:
        return decoder.decode(input_data, content_type)

    def default_predict_fn(self, data: Any, model: Any, context: Any = None) -> Any:
        raise NotImplementedError("Please provide a predict_fn implementation.")

    def default_output_fn(self, prediction: Any, accept: str, context: Any = None) -> Any:
        for content_type in utils.parse_accept(accept):
            if content_type in encoder.SUPPORTED_CONTENT_TYPES:
                return encoder.encode(prediction, content_type), content_type
        raise errors.UnsupportedFormatError(accept)
