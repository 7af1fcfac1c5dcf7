"""The records of ``tsf batch``'s input: a folder of files, a JSON Lines file, a CSV file or a
Parquet file, each record read lazily with an id and the body a handler gets.

* a folder: one record per file (hidden ones skipped), its id the path inside the folder, its
  content type ``--content-type`` or guessed from the name;
* JSON Lines: one record per non-blank line; its id the ``--id-field`` value (else
  ``line-N``); its body the whole line as JSON, or the ``--input-field`` value (a string as
  text, anything else as JSON);
* CSV (with a header row): one record per row; its body the row as a JSON object, or the
  ``--input-field`` cell as text;
* Parquet: one record per row (read in batches); its body the row as JSON (binary values in
  base64), or the ``--input-field`` value (binary as it is, with ``--content-type``).

A record that cannot be read (a line that is not JSON, a row with the wrong number of fields, a
missing input field) carries an ``error`` instead of a body: it is reported, never run.
"""

from __future__ import annotations

import base64
import csv
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import BadRequest

FORMATS = ("folder", "jsonl", "csv", "parquet")
JSON, TEXT, BINARY = "application/json", "text/plain; charset=utf-8", "application/octet-stream"


@dataclass
class Record:
    """One input record: its id, and its body and content type (or why it cannot be run)."""

    id: str
    body: bytes = b""
    ctype: str = JSON
    error: str | None = None


@dataclass(frozen=True)
class InputSpec:
    """Where the records come from and how to read them."""

    path: Path
    format: str
    id_field: str = "id"
    input_field: str | None = None
    content_type: str | None = None


def detect_format(path: Path, given: str | None = None) -> str:
    """The input's format: ``given``, else a folder, else by the file's suffix."""
    if given:
        if given not in FORMATS:
            raise BadRequest(f"--input-format must be one of {', '.join(FORMATS)}")
        return given
    if path.is_dir():
        return "folder"
    if not path.is_file():
        raise BadRequest(f"input {path} does not exist")
    suffix = path.suffix.lower()
    for fmt, suffixes in (("jsonl", (".jsonl", ".ndjson", ".json")), ("csv", (".csv",)),
                          ("parquet", (".parquet", ".pq"))):
        if suffix in suffixes:
            return fmt
    raise BadRequest(f"cannot tell the format of {path} from its name: pass --input-format "
                     f"({', '.join(FORMATS)})")


def _value_body(value: Any, content_type: str | None) -> tuple[bytes, str]:
    """The body of an ``--input-field`` value: bytes as they are, text as text, else JSON."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), content_type or BINARY
    if isinstance(value, str):
        return value.encode(), content_type or TEXT
    return json.dumps(value).encode(), content_type or JSON


def _row_id(row: dict, spec: InputSpec, fallback: str) -> str:
    value = row.get(spec.id_field)
    return fallback if value is None or value == "" else str(value)


def _jsonable(row: dict) -> dict:
    return {k: base64.b64encode(v).decode() if isinstance(v, (bytes, bytearray)) else v
            for k, v in row.items()}


def _from_row(row: dict, spec: InputSpec, fallback: str) -> Record:
    record_id = _row_id(row, spec, fallback)
    if spec.input_field is None:
        return Record(record_id, json.dumps(_jsonable(row), default=str).encode(), JSON)
    if spec.input_field not in row:
        return Record(record_id, error=f"{fallback}: no field {spec.input_field!r}")
    body, ctype = _value_body(row[spec.input_field], spec.content_type)
    return Record(record_id, body, ctype)


def _folder(spec: InputSpec) -> Iterator[Record]:
    for path in sorted(p for p in spec.path.rglob("*") if p.is_file()):
        relative = path.relative_to(spec.path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        ctype = spec.content_type or mimetypes.guess_type(path.name)[0] or BINARY
        try:
            yield Record(relative.as_posix(), path.read_bytes(), ctype)
        except OSError as exc:
            yield Record(relative.as_posix(), error=f"cannot read the file: {exc}")


def _jsonl(spec: InputSpec) -> Iterator[Record]:
    with open(spec.path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            fallback = f"line-{number}"
            try:
                value = json.loads(line)
            except ValueError as exc:
                yield Record(fallback, error=f"line {number} is not JSON: {exc}")
                continue
            if not isinstance(value, dict):
                if spec.input_field is not None:
                    yield Record(fallback, error=f"line {number} is not a JSON object")
                else:
                    yield Record(fallback, line, JSON)
                continue
            record = _from_row(value, spec, fallback)
            if spec.input_field is None and record.error is None:
                record.body = line  # as it was written
            yield record


def _csv(spec: InputSpec) -> Iterator[Record]:
    with open(spec.path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        width = len(reader.fieldnames or [])
        number = 0
        for row in reader:
            number += 1
            fallback = f"row-{number}"
            extra, missing = row.pop(None, None), [k for k, v in row.items() if v is None]
            if extra or missing:
                found = width + len(extra or []) - len(missing)
                yield Record(_row_id(row, spec, fallback),
                             error=f"row {number} has {found} fields, the header {width}")
                continue
            if spec.input_field is not None and spec.input_field in row:
                yield Record(_row_id(row, spec, fallback), row[spec.input_field].encode(),
                             spec.content_type or TEXT)
                continue
            yield _from_row(row, spec, fallback)


def _parquet(spec: InputSpec) -> Iterator[Record]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(spec.path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield _from_row(row, spec, f"row-{number}")


def read_records(spec: InputSpec) -> Iterator[Record]:
    """The input's records, in order, read as they are needed."""
    readers = {"folder": _folder, "jsonl": _jsonl, "csv": _csv, "parquet": _parquet}
    try:
        yield from readers[spec.format](spec)
    except (OSError, UnicodeError, csv.Error) as exc:
        raise BadRequest(f"cannot read {spec.path}: {exc}") from None
    except Exception as exc:  # pyarrow's errors on a damaged Parquet file
        if type(exc).__module__.startswith("pyarrow"):
            raise BadRequest(f"cannot read {spec.path} as Parquet: {exc}") from None
        raise


def count_records(spec: InputSpec) -> int | None:
    """How many records the input holds (for the progress bar), when it is cheap to know."""
    try:
        if spec.format == "folder":
            return sum(1 for p in spec.path.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(spec.path).parts))
        if spec.format == "jsonl":
            with open(spec.path, "rb") as handle:
                return sum(1 for line in handle if line.strip())
        if spec.format == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(spec.path).metadata.num_rows
        if spec.format == "csv":
            with open(spec.path, newline="", encoding="utf-8", errors="replace") as handle:
                return max(0, sum(1 for _ in csv.reader(handle)) - 1)
    except Exception:
        return None
    return None
