"""``tsf monitor baseline`` and ``tsf monitor report``.

* ``tsf monitor baseline --model m --capture DIR [--since T] [--until T] -o baseline.json
  [--upload http://127.0.0.1:8081]``: a drift baseline from capture files (the ``jsonl`` sink's
  folder, files fetched from S3, or SageMaker's); ``--upload`` sets it on a running server
  (``PUT /models/{m}/monitoring/baseline``); ``--file`` uploads a baseline written before.
* ``tsf monitor report --model m --since T [--until T] [--baseline file] -o report.html``: the
  HTML report of the captured predictions (and their feedback) in the server's store, against
  the baseline file or, without one, the predictions before ``--since``.  Built by a plugin
  (``tsf_monitor_report``; tsf-monitor-report uses Evidently).

Times are ISO-8601 (``2026-12-07T03:00:00Z``) or an age (``90m``, ``6h``, ``2d``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from ..errors import BadRequest
from .records import parse_time

AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NOT_FEATURES = {"id", "version", "time", "label"}


def moment(text: str | None, default: float) -> float:
    """Seconds since the epoch of an ISO time or an age before now."""
    if not text:
        return default
    match = AGE.fullmatch(text.strip())
    if match:
        return time.time() - float(match.group(1)) * UNITS[match.group(2)]
    try:
        return parse_time(text)
    except ValueError:
        raise BadRequest(f"{text!r} is neither an ISO-8601 time nor an age like 6h") from None


def add_parser(sub: Any) -> None:
    monitor = sub.add_parser("monitor", help="drift baselines and the monitoring report")
    verbs = monitor.add_subparsers(dest="monitor_command", required=True)
    base = verbs.add_parser("baseline", help="build a drift baseline from capture files, "
                            "and set it on a server")
    base.add_argument("--model", required=True)
    base.add_argument("--version", help="the version whose records to read and to set")
    base.add_argument("--capture", help="folder of capture files (.jsonl, searched "
                      "recursively)")
    base.add_argument("--file", help="a baseline written before, to upload")
    base.add_argument("--since")
    base.add_argument("--until")
    base.add_argument("--limit", type=int, default=5000, help="rows at most (default 5000)")
    base.add_argument("--prediction-key", default="", help="where the class lies in answers")
    base.add_argument("-o", "--output", help="write the baseline file here")
    base.add_argument("--upload", metavar="MANAGEMENT_URL",
                      help="set it on the server whose management API is here")
    base.add_argument("--token", help="the management token, if the server has one")
    report = verbs.add_parser("report", help="an HTML report of drift, quality and groups")
    report.add_argument("--model", required=True)
    report.add_argument("--version")
    report.add_argument("--since", required=True)
    report.add_argument("--until")
    report.add_argument("--baseline", help="a baseline file: the reference rows")
    report.add_argument("--workspace", default=".", help="the server's workspace (its "
                        "monitoring.sqlite3 store); default: this folder")
    report.add_argument("--store", help="the store file itself")
    report.add_argument("--groups", nargs="*", help="group keys (default: those in feedback)")
    report.add_argument("--positive-class", default="1")
    report.add_argument("-o", "--output", default="report.html")


def _upload(url: str, model: str, version: str | None, document: dict,
            token: str | None) -> dict:
    import urllib.error
    import urllib.parse
    import urllib.request

    target = f"{url.rstrip('/')}/models/{urllib.parse.quote(model)}/monitoring/baseline"
    if version:
        target += "?version=" + urllib.parse.quote(version)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(target, data=json.dumps(document).encode(),
                                     headers=headers, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise BadRequest(f"the server refused the baseline ({exc.code}): "
                         f"{exc.read().decode('utf-8', 'replace')[:500]}") from None
    except urllib.error.URLError as exc:
        raise BadRequest(f"cannot reach {url}: {exc.reason}") from None


def run_baseline(args: argparse.Namespace) -> int:
    from .baseline import baseline_document, check_rows, rows_from_capture

    if bool(args.capture) == bool(args.file):
        raise BadRequest("give either --capture DIR (build a baseline) or --file (upload one)")
    if args.file:
        document = json.loads(Path(args.file).read_text())
        check_rows(document)
    else:
        folder = Path(args.capture)
        if not folder.is_dir():
            raise BadRequest(f"{folder} is not a folder of capture files")
        rows = rows_from_capture(folder, args.model, args.version, moment(args.since, 0.0),
                                 moment(args.until, math.inf), args.limit, args.prediction_key)
        if not rows:
            raise BadRequest(f"no readable capture records of model {args.model} in {folder}")
        document = baseline_document(args.model, rows)
        print(f"baseline of {args.model}: {len(rows)} rows, features "
              f"{', '.join(sorted({k for r in rows for k in r}))}")
    if args.output:
        Path(args.output).write_text(json.dumps(document))
        print(f"written to {args.output}")
    if args.upload:
        print(json.dumps(_upload(args.upload, args.model, args.version, document, args.token)))
    return 0


def features_of(rows: list[dict]) -> list[str]:
    names = {k for r in rows for k in r if k not in NOT_FEATURES and not k.startswith("group.")}
    return sorted(names, key=lambda k: (k not in ("prediction", "score"), k))


def run_report(args: argparse.Namespace) -> int:
    from ..plugins import create_manager
    from .baseline import check_rows
    from .store import FILE_NAME, PredictionStore

    path = Path(args.store) if args.store else Path(args.workspace) / FILE_NAME
    if not path.exists():
        raise BadRequest(f"no monitoring store at {path} (give the server's --workspace)")
    store = PredictionStore(path, readonly=True)
    since, until = moment(args.since, 0.0), moment(args.until, math.inf)
    try:
        current = store.rows(args.model, since, until, version=args.version)
        if args.baseline:
            reference = check_rows(json.loads(Path(args.baseline).read_text()))
        else:
            reference = store.rows(args.model, 0.0, since, version=args.version)[-5000:]
    finally:
        store.close()
    if not current or not reference:
        raise BadRequest(f"model {args.model}: {len(current)} captured predictions since "
                         f"{args.since} and {len(reference)} reference rows; a report needs "
                         "both (give --baseline, or an earlier --since)")
    groups = args.groups if args.groups is not None else sorted(
        {k[6:] for r in current for k in r if k.startswith("group.")})
    pm = create_manager()
    written = pm.hook.tsf_monitor_report(
        model=args.model, reference=reference, current=current,
        features=features_of(reference + current), groups=groups, output=args.output,
        title=f"tsf monitoring report: {args.model}", positive_class=args.positive_class)
    if written is None:
        raise BadRequest("no installed plugin builds reports: pip install tsf-monitor-report")
    print(f"report of {args.model} ({len(current)} current rows, {len(reference)} reference "
          f"rows) written to {written}")
    return 0


def run(args: argparse.Namespace) -> int:
    return run_baseline(args) if args.monitor_command == "baseline" else run_report(args)
