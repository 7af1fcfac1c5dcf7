"""What tsf can read from captured bodies without the model: input summaries and the
predicted class.

Input features, by the request's content type:

* JSON: an object's numbers (``age``), booleans and short strings (categorical), and summaries
  of its lists of numbers (``pixels.mean``, ``.std``, ``.min``, ``.max``); a list of at most 16
  numbers (or one row of them) gives one feature per position (``x0``, ``x1``, ...), a longer one
  its summaries (``mean``, ``std``, ``min``, ``max``); KServe v1 reads the first instance,
  KServe v2 / OIP each input tensor's summaries (``<name>.mean``, ...);
* CSV: the first row's columns (``c0``, ``c1``, ...);
* images (JPEG, PNG, ...): ``width``, ``height`` and ``brightness`` (mean grey level 0-255,
  read from a reduced decode).

The prediction comes from the answer: ``prediction_key`` (a dotted path) when set, else the
first of KServe v1's ``predictions``, OIP's first output, a ``label``/``prediction``/``class``
key, the top key of a ``{class: probability}`` object, the top index of a list of scores, or a
scalar.  ``prediction`` is the class as text (:func:`tsf.config.capture.label_text`), ``score``
the top probability or the scalar score.
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from ..config.capture import label_text

Value = float | str
MAX_KEYS = 64
MAX_NUMBERS = 1 << 20
POSITIONAL = 16
LABEL_KEYS = ("label", "prediction", "predicted_label", "class")
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")


def _media(ctype: str) -> str:
    return ctype.split(";", 1)[0].strip().lower()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _numbers(value: Any, out: list[float]) -> bool:
    """Append every number of nested lists to ``out``; False if anything else is in them."""
    if isinstance(value, list):
        if all(type(v) is float or type(v) is int for v in value):  # a row: the usual case
            out.extend(value[:MAX_NUMBERS - len(out)])
            return True
        return all(_numbers(item, out) for item in value)  # depth is bounded by json_body
    if _is_number(value):
        if len(out) < MAX_NUMBERS:
            out.append(value)
        return True
    return False


def summary(prefix: str, numbers: list[float]) -> dict[str, float]:
    """Mean, standard deviation, minimum and maximum (nothing for no or non-finite numbers)."""
    if not numbers:
        return {}
    count = len(numbers)
    mean = sum(numbers) / count
    variance = max(0.0, sum(x * x for x in numbers) / count - mean * mean)
    if not math.isfinite(mean) or not math.isfinite(variance):
        return {}
    dot = f"{prefix}." if prefix else ""
    return {f"{dot}mean": mean, f"{dot}std": math.sqrt(variance),
            f"{dot}min": float(min(numbers)), f"{dot}max": float(max(numbers))}


def _list_features(value: list) -> dict[str, Value]:
    row = value[0] if len(value) == 1 and isinstance(value[0], list) else value
    numbers: list[float] = []
    if not _numbers(row, numbers):
        return {}
    if len(numbers) <= POSITIONAL and all(_is_number(x) for x in row):
        return {f"x{i}": float(x) for i, x in enumerate(numbers)}
    return summary("", numbers)


def _object_features(document: dict) -> dict[str, Value]:
    out: dict[str, Value] = {}
    for key, value in list(document.items())[:MAX_KEYS]:
        if _is_number(value):
            out[key] = float(value)
        elif isinstance(value, bool):
            out[key] = label_text(value)
        elif isinstance(value, str) and len(value) <= 64:
            out[key] = value
        elif isinstance(value, list):
            numbers: list[float] = []
            if _numbers(value, numbers):
                out.update(summary(key, numbers))
    return out


def json_features(document: Any) -> dict[str, Value]:
    """Features of a parsed JSON request (see the module docstring)."""
    if isinstance(document, dict):
        instances = document.get("instances")
        if isinstance(instances, list) and instances:
            return json_features(instances[0])
        inputs = document.get("inputs")
        if isinstance(inputs, list) and inputs and all(isinstance(i, dict) for i in inputs):
            out: dict[str, Value] = {}
            for tensor in inputs[:MAX_KEYS]:
                numbers: list[float] = []
                if isinstance(tensor.get("name"), str) and _numbers(tensor.get("data"), numbers):
                    out.update(summary(tensor["name"], numbers))
            return out
        return _object_features(document)
    if isinstance(document, list):
        return _list_features(document)
    if _is_number(document):
        return {"value": float(document)}
    return {}


def csv_features(text: str) -> dict[str, Value]:
    line = text.strip().splitlines()[0] if text.strip() else ""
    out: dict[str, Value] = {}
    for i, cell in enumerate(line.split(",")[:MAX_KEYS]):
        cell = cell.strip()
        try:
            number = float(cell)
            out[f"c{i}"] = number if math.isfinite(number) else cell
        except ValueError:
            if cell and len(cell) <= 64:
                out[f"c{i}"] = cell
    return out


def image_features(body: bytes) -> dict[str, Value]:
    """Width, height and mean grey level, from a reduced decode (JPEG at 1/8 scale)."""
    try:
        from PIL import Image, ImageStat
    except ImportError:
        return {}
    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size
            image.draft("L", (max(1, width // 8), max(1, height // 8)))
            grey = image.convert("L")
            brightness = ImageStat.Stat(grey).mean[0]
    except Exception:
        return {}
    return {"width": float(width), "height": float(height), "brightness": float(brightness)}


def input_features(ctype: str, body: bytes | None, truncated: bool = False) -> dict[str, Value]:
    """The features of one request body (empty when there is nothing tsf can read)."""
    if not body or truncated:
        return {}
    media = _media(ctype)
    if media.startswith("image/") or body.startswith(IMAGE_MAGIC):
        return image_features(body)
    if media in ("text/csv", "application/csv"):
        return csv_features(body.decode("utf-8", "replace"))
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return json_features(document)


def _at(document: Any, path: str) -> Any:
    for step in path.split("."):
        if isinstance(document, dict):
            document = document.get(step)
        elif isinstance(document, list) and step.isdigit() and int(step) < len(document):
            document = document[int(step)]
        else:
            return None
    return document


def _scores(values: list) -> tuple[str | None, float | None]:
    while len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    if len(values) == 1:
        return _prediction(values[0], "")
    if values and all(_is_number(v) for v in values):
        top = max(range(len(values)), key=values.__getitem__)
        return str(top), float(values[top])
    return None, None


def _prediction(document: Any, key: str) -> tuple[str | None, float | None]:
    if key:
        document = _at(document, key)
        key = ""
    if isinstance(document, dict):
        predictions, outputs = document.get("predictions"), document.get("outputs")
        if isinstance(predictions, list) and predictions:
            return _prediction(predictions[0], "")
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
            return _prediction(outputs[0].get("data"), "")
        for name in LABEL_KEYS:
            if name in document:
                return _prediction(document[name], "")
        if document and all(_is_number(v) for v in document.values()):
            top = max(document, key=document.__getitem__)
            return str(top), float(document[top])
        return None, None
    if isinstance(document, list):
        return _scores(document)
    if isinstance(document, (bool, int)):
        return label_text(document), None
    if _is_number(document):
        return (label_text(document), None) if float(document).is_integer() \
            else (None, float(document))
    if isinstance(document, str) and 0 < len(document) <= 128:
        return document, None
    return None, None


def prediction_of(ctype: str, body: bytes | None, key: str = "", truncated: bool = False
                  ) -> tuple[str | None, float | None]:
    """``(class as text or None, score or None)`` read from an answer body."""
    if not body or truncated:
        return None, None
    media = _media(ctype)
    if media.startswith("text/") and "json" not in media:
        text = body.decode("utf-8", "replace").strip()
        return (text, None) if 0 < len(text) <= 128 else (None, None)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    return _prediction(document, key)
