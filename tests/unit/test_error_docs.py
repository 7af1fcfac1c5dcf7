"""docs/errors.md's status table names every error tsf answers with, by status and type."""

from __future__ import annotations

import re
from pathlib import Path

from tsf import errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
NEVER_ANSWERED = {errors.ClientGone}  # its client has gone: only counted, never written


def _table_rows() -> dict[int, set[str]]:
    """status -> the error types its rows of the table name."""
    text = DOC.read_text()
    table = text.split("## What each failure returns", 1)[1].split("\n## ", 1)[0]
    rows: dict[int, set[str]] = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows.setdefault(int(cells[0]), set()).update(re.findall(r"`(\w+)`", cells[1]))
    return rows


def _error_classes() -> set[type]:
    found, todo = set(), [errors.TsfError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == errors.__name__ and cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found - NEVER_ANSWERED


def test_every_error_is_in_the_status_table_with_its_status():
    rows = _table_rows()
    missing = sorted(f"{cls.status} {cls.type} ({cls.__name__})" for cls in _error_classes()
                     if cls.type not in rows.get(cls.status, set()))
    assert not missing, f"not in docs/errors.md's status table: {missing}"


def test_the_table_names_no_error_tsf_does_not_have():
    known = {(cls.status, cls.type) for cls in _error_classes()}
    named = {(status, type_) for status, types in _table_rows().items() for type_ in types
             if type_.endswith("Exception")}
    assert named <= known, sorted(named - known)
