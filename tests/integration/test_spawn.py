"""Workers, and pip for a model's requirements, start without fork(): what a library in the
front end registered with pthread_atfork does not run in the new process.  gRPC registers such
handlers; under uvloop, whose spawn forks, they crashed one worker start in a few hundred
(SIGSEGV before the worker ran a line).  Here the front end's stand-in registers ``abort`` as
the child handler, so any fork kills the new process at once."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None

# run as the front end's stand-in: sys.argv[1] names the loop; after the fork trap, the code
# that follows runs on that loop in ``runner``
TRAP = '''
import asyncio
import ctypes
import json
import sys

from tsf.cli import event_loop_factory

libc = ctypes.CDLL("libc.so.6")
# pthread_atfork(NULL, NULL, abort), as glibc exports it
libc.__register_atfork.argtypes = [ctypes.c_void_p] * 4
assert libc.__register_atfork(None, None, ctypes.cast(libc.abort, ctypes.c_void_p), None) == 0
runner = asyncio.Runner(loop_factory=event_loop_factory(sys.argv[1]))
'''

CHECK_ARCHIVE = TRAP + '''
from tsf.workers.archive_check import check_archive

report = runner.run(check_archive(sys.argv[2], data=b"hello", content_type="text/plain"))
print(json.dumps(report))
'''

PIP_INSTALL = TRAP + '''
from pathlib import Path

from tsf.workers.requirements_env import _pip_install

folder = Path(sys.argv[2])
(folder / "requirements.txt").write_text("# nothing to install\\n")
runner.run(_pip_install(folder / "requirements.txt", folder / "target", folder))
print(json.dumps({"installed": True}))
'''

LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(not HAS_UVLOOP,
                                                   reason="uvloop is not installed")),
]


def _stand_in(script: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("loop", LOOPS)
def test_a_worker_starts_and_answers_without_running_fork_handlers(model_store, loop):
    report = _stand_in(CHECK_ARCHIVE, loop, str(model_store / "fn.tar.gz"))
    assert report["loaded"], report.get("error")
    assert report["response"]["status"] == 200, report


@pytest.mark.parametrize("loop", LOOPS)
def test_pip_for_a_models_requirements_runs_without_fork_handlers(tmp_path, loop):
    assert _stand_in(PIP_INSTALL, loop, str(tmp_path)) == {"installed": True}
