"""TorchServe's ``config.properties`` syntax: Java's ``.properties`` files, read and written.

Reading follows ``java.util.Properties.load``, which is how TorchServe reads the file: ``#`` and
``!`` comment lines; ``key=value``, ``key: value`` or ``key value``; a line ending in an odd
number of backslashes continues on the next one (whose leading blanks are dropped), so
TorchServe's multi-line ``models={\\`` JSON reads as one value; the escapes ``\\t \\n \\r \\f
\\uXXXX`` and a backslash before ``= : # ! \\`` or a blank stand for that character.

One difference, on purpose: Java drops the backslash of any other escape, so ``\\.`` reads as
``.``; here it is kept, so a regular expression such as ``allowed_urls=https://models\\.example
\\.com/.*`` means what it says.  (A ``\\\\`` still reads as one backslash, as in Java.)

Writing (:func:`format_properties`) escapes as ``Properties.store`` does, so TorchServe can read
what tsf writes (its config snapshots).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_LITERAL_ESCAPES = set("=:#! \\")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def read_properties(path: str | os.PathLike) -> dict[str, str]:
    """The keys and values of the ``.properties`` file at ``path`` (UTF-8)."""
    return parse_properties(Path(path).read_text(encoding="utf-8"))


def parse_properties(text: str) -> dict[str, str]:
    """The keys and values of ``.properties`` text; a later key wins, as in Java."""
    values: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split(line)
        values[_unescape(key)] = _unescape(value)
    return values


def _ends_continued(line: str) -> bool:
    """Whether ``line`` ends in an odd number of backslashes."""
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _logical_lines(text: str) -> list[str]:
    """Comment and blank lines dropped, continued lines joined (still escaped)."""
    lines: list[str] = []
    pending: str | None = None
    for natural in _LINE_BREAK.split(text):
        stripped = natural.lstrip(" \t\f")
        if pending is None:
            if not stripped or stripped[0] in "#!":
                continue
            current = stripped
        else:
            current = pending + stripped
        if _ends_continued(current):
            pending = current[:-1]
            continue
        pending = None
        lines.append(current)
    if pending:  # the file ends on a continuation
        lines.append(pending)
    return lines


def _split(line: str) -> tuple[str, str]:
    """``(key, value)`` of a logical line, both still escaped."""
    index, length = 0, len(line)
    while index < length:
        char = line[index]
        if char == "\\":
            index += 2
            continue
        if char in "=: \t\f":
            break
        index += 1
    key = line[:index]
    rest = line[index:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    index, length = 0, len(text)
    while index < length:
        char = text[index]
        if char != "\\" or index + 1 == length:
            out.append(char)
            index += 1
            continue
        following = text[index + 1]
        if following in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[following])
        elif following in _LITERAL_ESCAPES:
            out.append(following)
        elif following == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[index + 2:index + 6]):
            out.append(chr(int(text[index + 2:index + 6], 16)))
            index += 6
            continue
        else:  # kept: see the module's docstring
            out.append("\\" + following)
        index += 2
    return "".join(out)


def _escape(text: str, is_key: bool) -> str:
    out: list[str] = []
    for position, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append("\\" + {"\t": "t", "\n": "n", "\r": "r", "\f": "f"}[char])
        elif char in "=:#!":
            out.append("\\" + char)
        elif char == " " and (is_key or position == 0):
            out.append("\\ ")
        else:
            out.append(char)
    return "".join(out)


def format_properties(values: Mapping[str, str], comments: tuple[str, ...] = ()) -> str:
    """``values`` as ``.properties`` text (``#`` comment lines first), one key per line."""
    lines = [f"#{comment}" for comment in comments]
    lines += [f"{_escape(key, True)}={_escape(str(value), False)}"
              for key, value in values.items()]
    return "\n".join(lines) + "\n"
