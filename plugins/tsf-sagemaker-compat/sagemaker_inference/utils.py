"""The toolkit's helpers (``sagemaker_inference.utils``)."""

from __future__ import annotations

import re
from typing import Mapping

CONTENT_TYPE_REGEX = re.compile("^[Cc]ontent-?[Tt]ype")


def read_file(path: str, mode: str = "r") -> str | bytes:
    """The whole content of ``path``."""
    with open(path, mode) as f:
        return f.read()


def write_file(path: str, data: str | bytes, mode: str = "w") -> None:
    with open(path, mode) as f:
        f.write(data)


def retrieve_content_type_header(request_property: Mapping[str, str]) -> str | None:
    """The value of the first ``Content-Type`` (any spelling) header, or None."""
    for key in request_property:
        if CONTENT_TYPE_REGEX.match(key):
            return request_property[key]
    return None


def parse_accept(accept: str) -> list[str]:
    """The types an ``Accept`` header lists, in its order (no quality values)."""
    return accept.replace(" ", "").split(",")


def remove_crlf(illegal_string: str) -> str:
    """``illegal_string`` with carriage returns and line feeds as spaces (for a reason phrase)."""
    return illegal_string.replace("\r", " ").replace("\n", " ")
