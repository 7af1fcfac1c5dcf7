"""The bounded store of captured predictions and their ground truth: SQLite in the workspace
(``<workspace>/monitoring.sqlite3``, a file of its own).

Each captured prediction is kept by model and request id (and the caller's inference id) with
its version and time, and either its answer (up to :data:`ANSWER_BYTES`; the predicted class is
read from it when a label arrives, or a report asks) or the class and score read already, with
the input features when the drift sampling read them; until the model has more than
``monitoring_max_predictions`` of them: then the oldest go.  Feedback sets a prediction's label
and groups once.  Baselines set with ``tsf monitor baseline`` are kept here too, so they
survive a restart.  The server's analysis thread is the only writer; ``tsf monitor report``
reads the same file (WAL mode lets it read while the server writes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import Conflict, ResourceNotFound
from .features import prediction_of

FILE_NAME = "monitoring.sqlite3"
ANSWER_BYTES = 16384  # a longer answer has its prediction read at once instead
Predictor = Callable[[str, str, bytes], tuple[str | None, float | None]]  # version, ctype, body
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL, id TEXT NOT NULL, inference_id TEXT, version TEXT NOT NULL,
    time REAL NOT NULL, prediction TEXT, score REAL, features TEXT,
    answer_ctype TEXT, answer BLOB, label TEXT, groups TEXT, labelled_at REAL,
    PRIMARY KEY (model, id));
CREATE INDEX IF NOT EXISTS predictions_inference ON predictions (model, inference_id)
    WHERE inference_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS predictions_time ON predictions (model, time);
CREATE INDEX IF NOT EXISTS predictions_labelled ON predictions (model, labelled_at)
    WHERE labelled_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS baselines (
    model TEXT NOT NULL, version TEXT NOT NULL, rows TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (model, version));
"""


class PredictionStore:
    """One connection to the store (use it from one thread)."""

    def __init__(self, path: str | Path, max_predictions: int = 100_000,
                 readonly: bool = False) -> None:
        import sqlite3  # the front end loads it once a model captures

        self.path = Path(path)
        self.max_predictions = max_predictions
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # --- predictions ---------------------------------------------------------------------
    def add(self, rows: Iterable[tuple]) -> None:
        """Insert ``(model, id, inference_id, version, time, prediction, score, features,
        answer_ctype, answer)`` rows; a request id seen before keeps its first prediction."""
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO predictions (model, id, inference_id, version, time, "
                "prediction, score, features, answer_ctype, answer) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def prune(self, model: str) -> int:
        """Drop the model's oldest predictions beyond ``max_predictions``; how many went."""
        with self.db:
            cursor = self.db.execute(
                "DELETE FROM predictions WHERE model = ? AND time < (SELECT time FROM "
                "predictions WHERE model = ? ORDER BY time DESC LIMIT 1 OFFSET ?)",
                (model, model, self.max_predictions - 1))
        return cursor.rowcount

    # --- feedback ------------------------------------------------------------------------
    def _find(self, model: str, ident: str) -> tuple | None:
        columns = "SELECT id, label, version, prediction, answer_ctype, answer FROM predictions"
        row = self.db.execute(f"{columns} WHERE model = ? AND id = ?", (model, ident)).fetchone()
        if row is None:
            row = self.db.execute(f"{columns} INDEXED BY predictions_inference WHERE model = ? "
                                  "AND inference_id = ? ORDER BY time DESC LIMIT 1",
                                  (model, ident)).fetchone()
        return row

    def label(self, model: str, items: list[tuple[str, str, dict]], now: float,
              predictor: Predictor | None = None) -> int:
        """Set ``(id, label, groups)`` on the model's predictions, all or none: 404 naming the
        first unknown id, 409 naming the first one labelled already (or twice here).  A
        prediction not read yet is read from the kept answer by ``predictor``."""
        predictor = predictor or (lambda _, ctype, body: prediction_of(ctype, body))
        found, seen = [], set()
        for ident, label, groups in items:
            row = self._find(model, ident)
            if row is None:
                raise ResourceNotFound(
                    f"no captured prediction of model {model} has id {ident!r} (capture with "
                    "feedback must be on when it is predicted; the oldest predictions are "
                    "dropped past monitoring_max_predictions)")
            key, old_label, version, prediction, ctype, answer = row
            if old_label is not None or key in seen:
                raise Conflict(f"prediction {ident!r} of model {model} already has a label")
            seen.add(key)
            score = None
            if prediction is None and answer is not None:
                prediction, score = predictor(version, ctype or "", bytes(answer))
            found.append((label, json.dumps(groups) if groups else None, now, prediction,
                          score, model, key))
        with self.db:
            self.db.executemany(
                "UPDATE predictions SET label = ?, groups = ?, labelled_at = ?, "
                "prediction = ?, score = COALESCE(score, ?), answer = NULL "
                "WHERE model = ? AND id = ?", found)
        return len(found)

    def labelled(self, model: str, since: float, limit: int = 20_000
                 ) -> list[tuple[str, str, str, dict]]:
        """``(version, prediction, label, groups)`` labelled since ``since``, newest first."""
        rows = self.db.execute(
            "SELECT version, prediction, label, groups FROM predictions WHERE model = ? AND "
            "labelled_at >= ? ORDER BY labelled_at DESC LIMIT ?", (model, since, limit))
        return [(v, p if p is not None else "", lab, json.loads(g) if g else {})
                for v, p, lab, g in rows]

    def rows(self, model: str, since: float = 0.0, until: float = float("inf"),
             limit: int = 100_000, version: str | None = None) -> list[dict[str, Any]]:
        """Report rows of the model's predictions in ``[since, until)``, oldest first."""
        query = ("SELECT id, version, time, prediction, score, features, label, groups, "
                 "answer_ctype, answer FROM predictions WHERE model = ? AND time >= ? AND "
                 "time < ?")
        params: list[Any] = [model, since, until if until != float("inf") else 1e300]
        if version is not None:
            query += " AND version = ?"
            params.append(version)
        out = []
        for ident, ver, at, pred, score, feats, label, groups, ctype, answer in self.db.execute(
                query + " ORDER BY time LIMIT ?", (*params, limit)):
            if pred is None and answer is not None:
                pred, read = prediction_of(ctype or "", bytes(answer))
                score = score if score is not None else read
            row: dict[str, Any] = {"id": ident, "version": ver, "time": at}
            row.update(json.loads(feats) if feats else {})
            if pred is not None:
                row["prediction"] = pred
            if score is not None:
                row["score"] = score
            if label is not None:
                row["label"] = label
            for key, value in (json.loads(groups) if groups else {}).items():
                row[f"group.{key}"] = value
            out.append(row)
        return out

    # --- baselines -----------------------------------------------------------------------
    def save_baseline(self, model: str, version: str, rows: list[dict], now: float) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?)",
                            (model, version, json.dumps(rows), now))

    def drop_baseline(self, model: str, version: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM baselines WHERE model = ? AND version = ?",
                            (model, version))

    def baseline(self, model: str, version: str) -> list[dict] | None:
        row = self.db.execute("SELECT rows FROM baselines WHERE model = ? AND version = ?",
                              (model, version)).fetchone()
        return json.loads(row[0]) if row else None
