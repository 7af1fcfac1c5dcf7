"""Where the time goes: tsf's own profiler (``PUT /models/{m}/profile``) over a short load run.

``compare.py --profile N`` calls :func:`profile_point` after each of tsf's points: it asks the
model's worker to record its next N batches, drives the same load until they are recorded,
and saves the Chrome trace, the ``.prof`` and the summary under ``OUT/profiles/{model}/``,
printing the seconds per stage and torch's busiest operators.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from drive import drive


def profile_point(server, url: str, workload, model: str, conc: int, batches: int,
                  load: str, out: Path) -> dict | None:
    answer = server.manage("PUT", f"/models/{model}/profile", params={"batches": batches})
    if answer.status_code != 202:
        print(f"profile of {model} not started: {answer.text}")
        return None
    deadline = time.monotonic() + 120
    run = None
    while time.monotonic() < deadline:
        drive(load, url, workload.body, workload.content_type, conc, 1.0)
        runs = server.manage("GET", f"/models/{model}/profile").json()["runs"]
        if runs and runs[0]["complete"]:
            run = runs[0]
            break
    if run is None:
        print(f"profile of {model}: not complete after 120 s")
        return None
    folder = out / "profiles" / model
    folder.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, link in run["files"].items():
        data = server.manage("GET", link[link.index("/models/"):]).content
        (folder / name).write_bytes(data)
        if name.endswith(".summary.json"):
            summary = json.loads(data)
    seconds = summary.get("stage_seconds", {})
    total = sum(seconds.values()) or 1.0
    print(f"profile of {model} ({summary.get('batches')} batches, {summary.get('requests')} "
          "requests): " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)"
                                    for k, v in seconds.items()) +
          (f"; prepare threads {summary['prepare_seconds']:.2f} s"
           if "prepare_seconds" in summary else "") + f"; files in {folder}")
    print(summary.get("operators", ""))
    return summary
