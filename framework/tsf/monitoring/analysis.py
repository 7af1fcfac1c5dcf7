"""The analysis thread: reads captured records off the event loop, keeps predictions in the
store for feedback, fills the drift windows, and every model's ``interval_seconds`` computes its
quality, fairness and drift into a snapshot that :mod:`tsf.monitoring.metrics` exports.

Everything that touches the SQLite store runs here, in order: a feedback call submitted after a
prediction was answered always finds it, because the records queued before the call are read
first.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config.capture import CaptureSettings
from .drift import DriftWindows
from .fairlearn_process import FairlearnProcess
from .features import input_features, prediction_of
from .quality import evaluate
from .records import CaptureRecord
from .sinks import let_the_loop_run
from .store import ANSWER_BYTES, PredictionStore

log = logging.getLogger("tsf.monitoring")
Key = tuple[str, str]  # model, version


@dataclass
class VersionState:
    """What the thread keeps for one model version."""

    settings: CaptureSettings
    windows: DriftWindows | None
    next_compute: float = 0.0
    snapshot: dict[str, Any] = field(default_factory=dict)


def new_windows(settings: CaptureSettings) -> DriftWindows | None:
    """Drift windows that take about one window of rows per ``interval_seconds``."""
    drift = settings.drift
    if drift is None:
        return None
    return DriftWindows(drift.baseline_size, drift.window_size, drift.min_samples,
                        drift.max_features, source=drift.baseline,
                        per_second=drift.window_size / settings.interval_seconds)


class Analysis:
    """The thread and its queues; ``settings_of(model, version)`` gives a version's current
    capture settings (None once it is gone or capture is off), ``warmup_rows_of`` the feature
    rows of its warm-up inputs."""

    def __init__(self, store_path: Path, max_predictions: int, max_records: int,
                 settings_of: Callable[[str, str], CaptureSettings | None],
                 warmup_rows_of: Callable[[str, str], list[dict]], dropped: Any) -> None:
        self.store_path, self.max_predictions = store_path, max_predictions
        self.max_records = max_records
        self.settings_of = settings_of
        self.warmup_rows_of = warmup_rows_of
        self._dropped = dropped.labels("analysis", "buffer_full")
        self.records: collections.deque[CaptureRecord] = collections.deque()
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.states: dict[Key, VersionState] = {}
        self.snapshot: dict[Key, dict[str, Any]] = {}  # replaced whole, read by the exporter
        self.errors = 0
        self.fairlearn = FairlearnProcess()
        # the store is trimmed to max_predictions after this many new rows of a model
        self.prune_every = max(100, max_predictions // 20)
        self._unpruned: collections.Counter[str] = collections.Counter()
        self._wake = threading.Event()
        self._stop = False
        self.store: PredictionStore | None = None
        self._thread = threading.Thread(target=self._run, name="tsf-monitoring", daemon=True)
        self._thread.start()

    # --- called from the event loop ------------------------------------------------------
    def offer(self, record: CaptureRecord) -> None:
        if len(self.records) >= self.max_records:
            self._dropped.inc()
            return
        self.records.append(record)

    def submit(self, fn: Callable[[PredictionStore], Any]) -> concurrent.futures.Future:
        """Run ``fn(store)`` in the thread after the records queued so far."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.tasks.put((fn, future))
        self._wake.set()
        return future

    def stop(self, timeout: float) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout)

    # --- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        self.store = PredictionStore(self.store_path, self.max_predictions)
        try:
            while not self._stop:
                self._wake.wait(0.25)
                self._wake.clear()
                self._step()
            self._read_records()
        finally:
            self.store.close()
            self.fairlearn.close()

    def _step(self) -> None:
        try:
            self._read_records()
            while not self.tasks.empty():
                fn, future = self.tasks.get()
                self._read_records()
                try:
                    future.set_result(fn(self.store))
                except BaseException as exc:
                    future.set_exception(exc)
            self._compute_due()
        except Exception:
            self.errors += 1
            log.exception("monitoring analysis failed; it carries on")

    def state(self, key: Key, settings: CaptureSettings) -> VersionState:
        """The version's state, renewed when its settings changed; new drift windows start
        from a baseline set before (kept in the store), else the warm-up inputs when asked."""
        state = self.states.get(key)
        if state is not None and state.settings is settings:
            return state
        if state is not None and state.settings.drift == settings.drift:
            windows = state.windows
        else:
            windows = new_windows(settings)
            if windows is not None:
                saved = self.store.baseline(*key)
                if saved is not None:
                    windows.set_baseline(saved, "file")
                elif windows.source == "warmup":
                    windows.set_baseline(self.warmup_rows_of(*key), "warmup")
        state = self.states[key] = VersionState(settings, windows)
        return state

    def _read_records(self) -> None:
        """Take the queued records: a sample of them (:meth:`DriftWindows.wants`) has its
        features and prediction read for the drift windows; with feedback on, every one is
        stored, with its answer to read the prediction from once a label arrives."""
        rows = []
        records = self.records
        now = time.time()
        taken = 0
        while records:
            record = records.popleft()
            let_the_loop_run(taken)
            taken += 1
            key = (record.model, record.version)
            settings = self.settings_of(*key)
            if settings is None:
                continue
            state = self.state(key, settings)
            row: dict[str, Any] = {}
            if state.windows is not None and state.windows.wants(now):
                row = self._row(record, settings)
                state.windows.add(row)
            if settings.feedback and record.response_body is not None:
                rows.append(self._stored(record, row, settings))
                self._unpruned[record.model] += 1
        if rows:
            self.store.add(rows)
        for model, count in list(self._unpruned.items()):
            if count >= self.prune_every:
                self.store.prune(model)
                del self._unpruned[model]

    def _stored(self, record: CaptureRecord, row: dict[str, Any],
                settings: CaptureSettings) -> tuple:
        """The store's row of a record: the answer kept unread when short enough."""
        features = {k: v for k, v in row.items() if k not in ("prediction", "score")}
        prediction, score = row.get("prediction"), row.get("score")
        answer = record.response_body
        if prediction is None and score is None and \
                (len(answer) > ANSWER_BYTES or record.response_truncated):
            prediction, score = prediction_of(record.response_ctype, answer,
                                              settings.prediction_key,
                                              record.response_truncated)
        keep = answer if prediction is None and score is None else None
        return (record.model, record.event_id, record.inference_id, record.version,
                record.time, prediction, score, json.dumps(features) if features else None,
                record.response_ctype, keep)

    @staticmethod
    def _row(record: CaptureRecord, settings: CaptureSettings) -> dict[str, Any]:
        """A record's drift row: its input features and prediction."""
        row: dict[str, Any] = {}
        if record.request_body is not None:
            row.update(input_features(record.request_ctype, record.request_body,
                                      record.request_truncated))
        if record.response_body is not None:
            prediction, score = prediction_of(record.response_ctype, record.response_body,
                                              settings.prediction_key,
                                              record.response_truncated)
            if prediction is not None:
                row["prediction"] = prediction
            if score is not None:
                row["score"] = score
        return row

    def predictor(self, model: str) -> Callable[[str, str, bytes], tuple]:
        """Reads a kept answer's prediction with its version's ``prediction_key``."""
        def predict(version: str, ctype: str, body: bytes) -> tuple:
            settings = self.settings_of(model, version)
            return prediction_of(ctype, body, settings.prediction_key if settings else "")
        return predict

    def _compute_due(self) -> None:
        now = time.time()
        changed = False
        for key, state in list(self.states.items()):
            settings = self.settings_of(*key)
            if settings is None:
                del self.states[key]
                changed = True
                continue
            if settings is not state.settings:
                state = self.state(key, settings)
            if now < state.next_compute:
                continue
            state.next_compute = now + settings.interval_seconds
            state.snapshot = self.compute(key, state, now)
            changed = True
        if changed:
            self.snapshot = {key: state.snapshot for key, state in self.states.items()}

    def compute(self, key: Key, state: VersionState, now: float) -> dict[str, Any]:
        """The version's quality, fairness and drift now."""
        settings = state.settings
        snapshot: dict[str, Any] = {"computed_at": now}
        if settings.feedback:
            rows = [r for r in self.store.labelled(key[0], now - settings.window_seconds)
                    if r[0] == key[1]]
            snapshot["quality"] = evaluate(rows, settings, self.fairlearn.differences).get(
                key[1], {"samples": 0})
        if state.windows is not None:
            snapshot["drift"] = state.windows.compute()
            snapshot["windows"] = state.windows.describe()
        return snapshot

    # --- baselines (run in the thread through submit) ------------------------------------
    def set_baseline(self, key: Key, rows: list[dict] | None, source: str,
                     persist: bool) -> Callable[[PredictionStore], dict]:
        """A task that sets (rows) or resets (None) the version's baseline."""
        def task(store: PredictionStore) -> dict:
            settings = self.settings_of(*key)
            if settings is None or settings.drift is None:
                from ..errors import Conflict

                raise Conflict(f"model {key[0]} version {key[1]} does not capture with drift "
                               "on; set capture.drift first")
            state = self.state(key, settings)
            if rows is None:
                store.drop_baseline(*key)
                state.windows.reset(settings.drift.baseline)
                if settings.drift.baseline == "warmup":
                    state.windows.set_baseline(self.warmup_rows_of(*key), "warmup")
            else:
                state.windows.set_baseline(rows, source)
                if persist:
                    store.save_baseline(key[0], key[1], rows, time.time())
            state.next_compute = 0.0
            return state.windows.describe()
        return task
