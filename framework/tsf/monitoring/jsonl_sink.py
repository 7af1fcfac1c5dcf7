"""The built-in capture sink ``jsonl``: SageMaker Data Capture's JSON Lines files, one file per
model version and UTC hour, under ``capture_dir`` (default ``<workspace>/capture``)::

    <capture_dir>/<model>/<version>/yyyy/mm/dd/hh/<MM>-<SS>-<mmm>-<uuid>.jsonl

Options: ``dir`` (another folder than ``capture_dir``).  Each write appends its records and
flushes them to the operating system, so a killed server loses at most what arrived since the
last write (``flush_seconds``, 1 s by default).  A file is closed once its hour has passed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any

from .. import hookimpl
from ..errors import BadRequest
from .records import CaptureRecord, file_name, hour_prefix
from .sinks import SinkContext, check_options, let_the_loop_run


class JsonLinesSink:
    """Appends records to hourly files (see the module docstring)."""

    def __init__(self, options: dict[str, Any], context: SinkContext) -> None:
        check_options("jsonl", options, ("dir",))
        folder = options.get("dir", str(context.capture_dir))
        if not isinstance(folder, str) or not folder:
            raise BadRequest(f"capture.sinks.jsonl.dir must be a folder path, got {folder!r:.60}")
        self.root = Path(folder)
        # (model, version) -> (the file's UTC hour, as hours since the epoch; the open file)
        self.files: dict[tuple[str, str], tuple[int, IO[bytes]]] = {}

    def _file(self, record: CaptureRecord) -> IO[bytes]:
        key = (record.model, record.version)
        hours = int(record.time // 3600)
        current = self.files.get(key)
        if current is not None and current[0] == hours:  # most records: the open file
            return current[1]
        if current is not None:
            current[1].close()
        folder = self.root / hour_prefix(record.model, record.version, record.time)
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / file_name(record.time), "ab")
        self.files[key] = (hours, handle)
        return handle

    def write(self, records: list[CaptureRecord]) -> None:
        touched = set()
        for index, record in enumerate(records):
            handle = self._file(record)
            handle.write(record.to_json_line())
            touched.add(handle)
            let_the_loop_run(index)
        for handle in touched:
            handle.flush()
        self._close_past_hours()

    def _close_past_hours(self) -> None:
        hours = int(time.time() // 3600)
        for key, (opened, handle) in list(self.files.items()):
            if opened != hours:
                handle.close()
                del self.files[key]

    def close(self) -> None:
        for _, handle in self.files.values():
            handle.close()
        self.files.clear()


@hookimpl
def tsf_register_capture_sinks() -> dict[str, type]:
    return {"jsonl": JsonLinesSink}
