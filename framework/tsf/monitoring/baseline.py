"""Drift baselines: feature rows built from capture files, from a model's warm-up inputs, or
read from a baseline file.

A baseline file (``tsf monitor baseline`` writes it) is JSON::

    {"format": "tsf-baseline/1", "model": "m", "created": "2026-12-07T03:48:39.585Z",
     "rows": [{"x0": 0.1, "x1": 2.0, "prediction": "1", "score": 0.93}, ...]}

Each row holds what :mod:`tsf.monitoring.features` reads from one captured request and its
answer.  Capture files are SageMaker Data Capture JSON Lines (the ``jsonl`` sink's, the S3
sink's, or SageMaker's own).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import BadRequest
from .features import input_features, prediction_of
from .records import decode_side, iso_time, parse_time

FORMAT = "tsf-baseline/1"
MAX_ROWS = 100_000
MAX_KEYS = 200


def capture_lines(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of the ``.jsonl`` files under ``folder`` (lines that are not records are
    skipped)."""
    for path in sorted(folder.rglob("*.jsonl")):
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("captureData"), dict):
                    yield record


def record_row(record: dict[str, Any], prediction_key: str = "") -> dict[str, Any]:
    """The feature row of one captured record."""
    data = record["captureData"]
    row: dict[str, Any] = {}
    side = data.get("endpointInput")
    if isinstance(side, dict) and "truncatedFrom" not in side:
        row.update(input_features(side.get("observedContentType", ""), decode_side(side)))
    side = data.get("endpointOutput")
    if isinstance(side, dict) and "truncatedFrom" not in side:
        prediction, score = prediction_of(side.get("observedContentType", ""),
                                          decode_side(side), prediction_key)
        if prediction is not None:
            row["prediction"] = prediction
        if score is not None:
            row["score"] = score
    return row


def rows_from_capture(folder: Path, model: str, version: str | None = None,
                      since: float = 0.0, until: float = math.inf, limit: int = 5000,
                      prediction_key: str = "") -> list[dict[str, Any]]:
    """Feature rows of the model's records captured in ``[since, until)`` (the first
    ``limit``)."""
    rows = []
    for record in capture_lines(folder):
        meta = record.get("eventMetadata") or {}
        if meta.get("model", model) != model or \
                (version is not None and meta.get("modelVersion", version) != version):
            continue
        try:
            at = parse_time(meta["inferenceTime"])
        except (KeyError, ValueError, TypeError):
            continue
        if since <= at < until:
            row = record_row(record, prediction_key)
            if row:
                rows.append(row)
                if len(rows) >= limit:
                    break
    return rows


def baseline_document(model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": FORMAT, "model": model, "created": iso_time(time.time()), "rows": rows}


def check_rows(document: Any) -> list[dict[str, Any]]:
    """The rows of a baseline document; BadRequest naming what is wrong."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BadRequest(f'a baseline must be a JSON object with "format": "{FORMAT}" and '
                         '"rows" (tsf monitor baseline writes one)')
    rows = document.get("rows")
    if not isinstance(rows, list) or not 0 < len(rows) <= MAX_ROWS:
        raise BadRequest(f"baseline rows must be a list of 1 to {MAX_ROWS} objects")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or len(row) > MAX_KEYS:
            raise BadRequest(f"baseline row {i} must be an object of at most {MAX_KEYS} "
                             "features")
        for key, value in row.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                math.isfinite(value)
            if not numeric and not (isinstance(value, str) and len(value) <= 128):
                raise BadRequest(f"baseline row {i}: {str(key)[:64]} must be a finite number "
                                 f"or a string of at most 128 characters, got {value!r:.40}")
    return [{k: float(v) if not isinstance(v, str) else v for k, v in row.items()}
            for row in rows]


def warmup_rows(model_config: dict, model_dir: str) -> list[dict[str, Any]]:
    """Feature rows of a model's declared warm-up inputs (empty when it declares none)."""
    from ..runtime.warmup import warmup_inputs

    try:
        inputs, _ = warmup_inputs(model_config, model_dir)
    except Exception:
        return []
    rows = []
    for value in inputs:
        if isinstance(value, str):
            row = input_features("text/plain", value.encode())
        else:
            row = input_features("application/json", json.dumps(value).encode())
        if row:
            rows.append(row)
    return rows
