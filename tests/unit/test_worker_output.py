"""Worker output as log lines: long lines cut with a marker, levels read from the worker's format."""

from __future__ import annotations

import logging

from tsf.workers.output import LevelReader, LineBudget, LineSplitter


def test_lines_split_across_chunks_come_out_whole():
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == ["one"]
    assert splitter.feed(b"o\r\nthree") == ["two"]
    assert splitter.flush() == ["three"]
    assert splitter.flush() == []


def test_a_line_over_the_limit_is_cut_with_a_marker():
    splitter = LineSplitter(max_line=10)
    lines = []
    for _ in range(100):  # 100 KB without a newline, then the end of the line
        lines += splitter.feed(b"x" * 1000)
    lines += splitter.feed(b"tail\nnext\n")
    assert lines == ["x" * 10 + " ... [cut 99994 bytes]", "next"]


def test_levels_come_from_the_prefix_and_carry_over_to_traceback_lines():
    levels = LevelReader()
    assert levels.level("print output") == logging.INFO
    assert levels.level("ERROR tsf.worker [r1] handler of m failed:") == logging.ERROR
    assert levels.level("Traceback (most recent call last):") == logging.ERROR
    assert levels.level('  File "h.py", line 3, in handle') == logging.ERROR
    assert levels.level("WARNING chatty [-] careful") == logging.WARNING
    assert levels.level("INFO chatty [r2] fine") == logging.INFO
    assert levels.level("Traceback (most recent call last):") == logging.ERROR
    assert levels.level("INFO chatty [r3] fine") == logging.INFO
    assert levels.level("Fatal Python error: Segmentation fault") == logging.ERROR
    assert levels.level('  File "h.py", line 9 in initialize') == logging.ERROR


def test_budget_counts_the_lines_it_refuses():
    budget = LineBudget(per_second=3)
    taken = [budget.take() for _ in range(5)]
    assert taken == [True, True, True, False, False]
    assert budget.report_dropped() == 2 and budget.report_dropped() == 0
