"""fairlearn in a process of its own, so the front end never loads pandas, scikit-learn and
scipy (about 160 MiB, and seconds of import holding the interpreter lock).

The analysis thread calls :meth:`FairlearnProcess.differences`; the first call starts
``python -m tsf.monitoring.fairlearn_process``, which answers one JSON line per request line on
its standard input and output.  It ends when its input closes: when the server stops, or dies.
"""

from __future__ import annotations

import json
import logging
import select
import subprocess
import sys
from typing import Any

log = logging.getLogger("tsf.monitoring")
TIMEOUT = 120.0  # seconds for one answer (the first includes importing fairlearn)


class FairlearnProcess:
    """The helper process, started on first use and again after it failed."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._missing = False

    def differences(self, y_true: list[int], y_pred: list[int], groups: list[str]
                    ) -> dict[str, float] | None:
        """fairlearn's demographic-parity and equalized-odds differences (None when fairlearn
        is not installed or the helper failed; the next call starts a new one)."""
        if self._missing:
            return None
        proc = self._start()
        request = json.dumps({"y_true": y_true, "y_pred": y_pred, "groups": groups})
        try:
            proc.stdin.write(request.encode() + b"\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
            line = proc.stdout.readline() if ready else b""
        except OSError:
            line = b""
        if not line:
            log.warning("the fairlearn helper process gave no answer; restarting it next time")
            self.close()
            return None
        answer = json.loads(line)
        if "missing" in answer:
            log.warning("fairlearn is not installed: per-group rates are exported, the "
                        "demographic-parity and equalized-odds differences are not "
                        "(pip install 'tsf-framework[monitoring]')")
            self._missing = True
            self.close()
            return None
        return answer

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tsf.monitoring.fairlearn_process"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return self._proc

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        proc.stdout.close()


def compute(request: dict[str, Any]) -> dict[str, Any]:
    import warnings

    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    args = (request["y_true"], request["y_pred"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"demographic_parity_difference": float(demographic_parity_difference(
                    *args, sensitive_features=request["groups"])),
                "equalized_odds_difference": float(equalized_odds_difference(
                    *args, sensitive_features=request["groups"]))}


def main() -> None:
    try:
        import fairlearn.metrics  # noqa: F401 - imported once, before the first request
    except ImportError:
        for _ in sys.stdin:
            print(json.dumps({"missing": "fairlearn"}), flush=True)
        return
    for line in sys.stdin:
        print(json.dumps(compute(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
