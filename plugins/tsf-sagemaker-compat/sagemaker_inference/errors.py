"""The toolkit's exceptions (``sagemaker_inference.errors``).

In tsf's SageMaker mode, a :class:`BaseInferenceToolkitError` (such as
:class:`GenericInferenceToolkitError`) raised from any ``*_fn`` of ``inference.py`` answers the
client with its ``status_code`` and ``message``; an :class:`UnsupportedFormatError` answers 415
(406 when ``output_fn`` raises it: the ``Accept`` type cannot be produced).
"""

from __future__ import annotations


class UnsupportedFormatError(Exception):
    """A content type (or ``Accept`` type) the toolkit's decoder or encoder does not handle."""

    def __init__(self, content_type: str, **kwargs: object) -> None:
        self.content_type = content_type
        self._message = (f"Content type {content_type} is not supported by this framework: "
                         "write an input_fn that decodes such requests, or an output_fn that "
                         "encodes such answers")
        super().__init__(self._message)


class BaseInferenceToolkitError(Exception):
    """An error with the HTTP status, message and reason phrase the client is to get."""

    def __init__(self, status_code: int, message: str, phrase: str) -> None:
        self.status_code = status_code
        self.message = message
        self.phrase = phrase
        super().__init__(status_code, message, phrase)


class GenericInferenceToolkitError(BaseInferenceToolkitError):
    """``GenericInferenceToolkitError(status_code, message=None, phrase=None)``."""

    def __init__(self, status_code: int, message: str | None = None,
                 phrase: str | None = None) -> None:
        message = message or "Invalid Request"
        phrase = phrase or message
        super().__init__(status_code, message, phrase)
