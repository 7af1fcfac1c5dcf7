"""tsf batch's records in and results out: ids, bodies and per-record errors of each input
format; outputs that survive a kill (a torn last line, pending Parquet rows) and --resume."""

from __future__ import annotations

import json

import pytest

from tsf.errors import BadRequest
from tsf.jobs.batch.inputs import InputSpec, count_records, detect_format, read_records
from tsf.jobs.batch.outputs import JsonlOutput, ParquetOutput, Result, open_output, result_row
from tsf.jobs.batch.progress import Progress


def _records(path, fmt, **kwargs):
    return list(read_records(InputSpec(path, fmt, **kwargs)))


def test_json_lines_ids_bodies_and_bad_lines(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "x": 1}\n\n{"x": 2}\nnot json\n[1, 2]\n{"id": 7, "text": "hi"}\n')
    records = _records(path, "jsonl")
    assert [r.id for r in records] == ["a", "line-3", "line-4", "line-5", "7"]
    assert records[0].body == b'{"id": "a", "x": 1}' and records[0].ctype == "application/json"
    assert "line 4 is not JSON" in records[2].error and records[3].body == b"[1, 2]"
    picked = _records(path, "jsonl", input_field="text")
    assert picked[-1].body == b"hi" and picked[-1].ctype.startswith("text/plain")
    assert "no field 'text'" in picked[0].error
    assert count_records(InputSpec(path, "jsonl")) == 5


def test_csv_rows_with_the_wrong_number_of_fields_fail_alone(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,a,b\nr1,1,2\nr2,1\nr3,1,2,3\n,5,6\n")
    records = _records(path, "csv")
    assert [r.id for r in records] == ["r1", "r2", "r3", "row-4"]
    assert json.loads(records[0].body) == {"id": "r1", "a": "1", "b": "2"}
    assert "2 fields, the header 3" in records[1].error
    assert "4 fields, the header 3" in records[2].error
    assert count_records(InputSpec(path, "csv")) == 4


def test_parquet_rows_and_a_binary_input_field(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["p", "q"], "image": [b"\x89PNG", b"\xff\xd8"],
                             "n": [1, 2]}), path)
    whole = _records(path, "parquet")
    assert json.loads(whole[0].body) == {"id": "p", "image": "iVBORw==", "n": 1}
    raw = _records(path, "parquet", input_field="image", content_type="image/png")
    assert (raw[1].id, raw[1].body, raw[1].ctype) == ("q", b"\xff\xd8", "image/png")
    assert count_records(InputSpec(path, "parquet")) == 2
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(BadRequest, match="as Parquet"):
        _records(broken, "parquet")


def test_formats_are_told_by_name_or_refused(tmp_path):
    assert detect_format(tmp_path) == "folder"
    for name, fmt in (("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"), ("a.csv", "csv"),
                      ("a.parquet", "parquet")):
        (tmp_path / name).write_text("")
        assert detect_format(tmp_path / name) == fmt
    (tmp_path / "a.xyz").write_text("")
    with pytest.raises(BadRequest, match="--input-format"):
        detect_format(tmp_path / "a.xyz")
    with pytest.raises(BadRequest, match="does not exist"):
        detect_format(tmp_path / "missing.jsonl")


def test_result_rows_embed_json_keep_text_and_base64_the_rest():
    row = result_row(Result("a", 200, "application/json", b'{"k": 1}'), embed_json=True)
    assert (row["output"], row["encoding"]) == ({"k": 1}, "json")
    assert result_row(Result("a", 200, "application/json", b'{"k": 1}'), False)["output"] == \
        '{"k": 1}'
    assert result_row(Result("b", 200, "text/plain; charset=utf-8", b"hi"), True)["encoding"] \
        == "text"
    row = result_row(Result("c", 200, "application/octet-stream", b"\x00\xff"), True)
    assert (row["output"], row["encoding"]) == ("AP8=", "base64")


def test_a_jsonl_output_torn_by_a_kill_resumes_without_the_torn_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "output": 1}\n{"id": "b", "outp')
    with pytest.raises(BadRequest, match="--resume"):
        JsonlOutput(path, resume=False, overwrite=False)
    output = JsonlOutput(path, resume=True, overwrite=False)
    assert output.done_ids() == {"a"}
    output.write([Result("b", 200, "text/plain", b"again")])
    output.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_parquet_output_turns_pending_rows_into_a_part_on_resume(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "out.parquet"
    first = ParquetOutput(folder, resume=False, overwrite=False, part_rows=2)
    first.write([Result(f"r{i}", 200, "text/plain", b"x") for i in range(3)])
    # killed here: r0, r1 are in a part; r2 waits in _pending.jsonl
    assert sorted(p.name for p in folder.iterdir()) == ["_pending.jsonl", "part-00000.parquet"]
    with open(folder / "_pending.jsonl", "a") as pending:
        pending.write('{"id": "r0", "status": 200}\n{"id": "torn')  # a duplicate, a torn line
    again = ParquetOutput(folder, resume=True, overwrite=False, part_rows=2)
    assert again.done_ids() == {"r0", "r1", "r2"}
    again.write([Result("r3", 200, "text/plain", b"y")])
    again.close()
    ids = pq.read_table(folder).column("id").to_pylist()
    assert sorted(ids) == ["r0", "r1", "r2", "r3"]
    output, failures, path = open_output(folder, None, resume=True, overwrite=False)
    assert path == tmp_path / "out.parquet.failures.jsonl"
    output.close()
    failures.close()


def test_progress_line_counts_rate_and_eta():
    progress = Progress(total=100)
    progress.succeeded, progress.failed = 40, 2
    progress.started -= 10.0
    line = progress.line()
    assert line.startswith("42/100  42.0%") and "4.2 records/s" in line and "ETA 0:13" in line
    assert "2 failed" in line
    assert "run the same command with --resume" in progress.summary("o", "f", True)
