"""Where ``tsf batch`` writes: results as JSON Lines or Parquet, keyed by the input's id, and the
records that failed in a failures file.  Written so that a run cut short (Ctrl-C, ``kill -9``)
loses nothing it finished, and ``--resume`` knows what is done.

* JSON Lines: one object per record, appended and flushed as results arrive; a line cut short
  by a kill is dropped when the run resumes.
* Parquet: a folder of ``part-NNNNN.parquet`` files, each written whole under a hidden
  temporary name and renamed (a reader never sees half a file); results not in a part yet are
  kept in ``_pending.jsonl`` beside them (Parquet readers skip names starting with ``_`` or
  ``.``), and turned into a part when the run resumes or ends.
* Failures: ``<output>.failures.jsonl`` beside the output, one
  ``{"id", "error": {"code", "type", "message"}}`` per line.

Each result row: ``id``, ``status``, ``content_type``, ``output`` and ``encoding``: ``json``
(the output is the answer's JSON; in a Parquet file its text), ``text``, or ``base64``.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ...errors import BadRequest

PART_ROWS = 10000


@dataclass
class Result:
    """One record's answer."""

    id: str
    status: int
    ctype: str
    body: bytes


def result_row(result: Result, embed_json: bool) -> dict[str, Any]:
    """The row a result is written as (``embed_json``: JSON answers as values, not text)."""
    media = result.ctype.split(";", 1)[0].strip().lower()
    row: dict[str, Any] = {"id": result.id, "status": result.status,
                           "content_type": result.ctype}
    if media == "application/json":
        try:
            text = result.body.decode("utf-8")
            row.update(output=json.loads(text) if embed_json else text, encoding="json")
            return row
        except ValueError:
            pass
    if media.startswith("text/") or media == "application/json":
        try:
            row.update(output=result.body.decode("utf-8"), encoding="text")
            return row
        except UnicodeDecodeError:
            pass
    row.update(output=base64.b64encode(result.body).decode(), encoding="base64")
    return row


def _repair(path: Path) -> None:
    """Drop a last line a kill cut short."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


def _ids_of_lines(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    _repair(path)
    with open(path, "rb") as handle:
        for line in handle:
            try:
                row = json.loads(line)
                rows[str(row["id"])] = row
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def _check_fresh(paths: Iterable[Path], resume: bool, overwrite: bool) -> None:
    found = [p for p in paths if p.exists()]
    if found and not resume and not overwrite:
        raise BadRequest(f"{found[0]} exists: add --resume to go on with that run, or "
                         "--overwrite to start again")
    if overwrite and not resume:
        for path in found:
            path.unlink()


class LinesFile:
    """An appended JSON Lines file (results or failures)."""

    def __init__(self, path: Path, resume: bool, overwrite: bool) -> None:
        self.path = path
        _check_fresh([path], resume, overwrite)
        self.rows = _ids_of_lines(path) if resume else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "ab")

    def write(self, rows: list[dict]) -> None:
        if rows:
            self.handle.write(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
            self.handle.flush()

    def close(self) -> None:
        if not self.handle.closed:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()


class JsonlOutput:
    """Results in one JSON Lines file."""

    def __init__(self, path: Path, resume: bool, overwrite: bool) -> None:
        self.file = LinesFile(path, resume, overwrite)
        self.path = path

    def done_ids(self) -> set[str]:
        return set(self.file.rows)

    def write(self, results: list[Result]) -> None:
        self.file.write([result_row(r, embed_json=True) for r in results])

    def close(self) -> None:
        self.file.close()


class ParquetOutput:
    """Results in a folder of Parquet parts (and ``_pending.jsonl`` until a part is written)."""

    def __init__(self, folder: Path, resume: bool, overwrite: bool,
                 part_rows: int = PART_ROWS) -> None:
        import pyarrow as pa

        self.folder = folder
        self.part_rows = part_rows
        self.schema = pa.schema([("id", pa.string()), ("status", pa.int32()),
                                 ("content_type", pa.string()), ("output", pa.string()),
                                 ("encoding", pa.string())])
        parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        _check_fresh([*parts, folder / "_pending.jsonl"], resume, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".part-*.parquet.tmp"):
            stale.unlink()
        self.ids: set[str] = set()
        for part in (parts if resume else []):
            import pyarrow.parquet as pq

            self.ids.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        self.parts = len(parts) if resume else 0
        self.buffer = [row for key, row in _ids_of_lines(folder / "_pending.jsonl").items()
                       if key not in self.ids] if resume else []
        self.ids.update(row["id"] for row in self.buffer)
        if self.buffer:
            self._write_part()
        self.pending = open(folder / "_pending.jsonl", "wb")

    def done_ids(self) -> set[str]:
        return set(self.ids)

    def write(self, results: list[Result]) -> None:
        rows = [result_row(r, embed_json=False) for r in results]
        self.pending.write(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
        self.pending.flush()
        self.buffer += rows
        if len(self.buffer) >= self.part_rows:
            self._write_part()
            self.pending.seek(0)
            self.pending.truncate()

    def _write_part(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = self.folder / f"part-{self.parts:05d}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema), tmp,
                       compression="zstd")
        os.replace(tmp, target)
        self.parts += 1
        self.buffer = []

    def close(self) -> None:
        if self.pending.closed:
            return
        if self.buffer:
            self._write_part()
        self.pending.close()
        (self.folder / "_pending.jsonl").unlink(missing_ok=True)


def open_output(path: Path, fmt: str | None, resume: bool, overwrite: bool
                ) -> tuple[Any, LinesFile, Path]:
    """The results writer (its format: ``fmt``, else ``.parquet`` or a folder means Parquet),
    the failures file beside it (``<out>.failures.jsonl``), and that file's path."""
    parquet = fmt == "parquet" or (fmt is None and (path.suffix.lower() == ".parquet"
                                                    or path.is_dir()))
    if fmt not in (None, "jsonl", "parquet"):
        raise BadRequest("--output-format must be jsonl or parquet")
    failures = path.with_name(path.name + ".failures.jsonl")
    output: Any = ParquetOutput(path, resume, overwrite) if parquet else \
        JsonlOutput(path, resume, overwrite)
    return output, LinesFile(failures, resume, overwrite), failures
