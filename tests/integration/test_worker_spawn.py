"""Workers start without fork(): what a library in the front end registered with pthread_atfork
does not run in the new process.  gRPC registers such handlers; under uvloop, whose spawn
forks, they crashed one worker start in a few hundred (SIGSEGV before the worker ran a line).
Here the front end's stand-in registers ``abort`` as the child handler, so any fork kills the
worker at once."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None

SCRIPT = '''
import asyncio
import ctypes
import json
import sys

from tsf.archive_check import check_archive
from tsf.cli import event_loop_factory

libc = ctypes.CDLL("libc.so.6")
# pthread_atfork(NULL, NULL, abort), as glibc exports it
libc.__register_atfork.argtypes = [ctypes.c_void_p] * 4
assert libc.__register_atfork(None, None, ctypes.cast(libc.abort, ctypes.c_void_p), None) == 0
loop, archive = sys.argv[1:]
with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
    report = runner.run(check_archive(archive, data=b"hello", content_type="text/plain"))
print(json.dumps(report))
'''


@pytest.mark.parametrize("loop", [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(not HAS_UVLOOP,
                                                   reason="uvloop is not installed")),
])
def test_a_worker_starts_and_answers_without_running_fork_handlers(model_store, loop):
    done = subprocess.run([sys.executable, "-c", SCRIPT, loop, str(model_store / "fn.tar.gz")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"], report.get("error")
    assert report["response"]["status"] == 200, report
