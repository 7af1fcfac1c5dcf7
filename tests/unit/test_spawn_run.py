"""``tsf.workers.spawn.run``: a command's exit code and its stdout and stderr together; killed
past its timeout."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from tsf.workers.spawn import run


def test_run_gives_the_exit_code_and_both_streams_in_order():
    script = ("import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True);"
              " sys.exit(3)")
    code, output = asyncio.run(run([sys.executable, "-c", script], timeout=30))
    assert code == 3
    assert output.splitlines() == ["out", "err"]


def test_run_kills_a_command_past_its_timeout(tmp_path):
    pid_file = tmp_path / "pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(run([sys.executable, "-c", script], timeout=2))
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(int(pid_file.read_text()), 0)
