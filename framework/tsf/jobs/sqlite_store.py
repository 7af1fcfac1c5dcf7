"""The default job store: one SQLite file in the workspace (``<workspace>/jobs/jobs.db``),
inputs and results larger than ``job_inline_bytes`` in files beside it (``blobs/``).

One server uses it at a time (a lock file says which).  SQLite runs in write-ahead-log mode
with ``synchronous=NORMAL``: a committed job survives the server's crash or ``kill -9`` (the
operating system holds the write); a power cut may lose the last commits.  Every call runs on
one thread of its own, so the event loop never waits for the disk.  A job left ``running`` by a
server that stopped is queued again at the next start (:meth:`SqliteJobStore.recover`), or
failed once it used ``job_max_attempts`` runs; the queued jobs it held are free again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import os
import sqlite3
from pathlib import Path
from typing import Any, Callable

from ..errors import Conflict, OutOfResources
from .records import (CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, Claimed, JobRecord,
                      JobStoreError, StoredResult, pack_result, unpack_result)
from .store import Finish, JobStore, Stats, StoreLimits

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  model TEXT NOT NULL, version TEXT, target TEXT NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL,
  created REAL NOT NULL, started REAL, finished REAL, expires REAL,
  attempts INTEGER NOT NULL DEFAULT 0, owner TEXT, error TEXT,
  callback_url TEXT, callback_status TEXT,
  idem_key TEXT UNIQUE, idem_digest TEXT,
  input BLOB, input_size INTEGER NOT NULL DEFAULT 0,
  result BLOB, result_size INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs(owner);
CREATE INDEX IF NOT EXISTS jobs_by_model ON jobs(model, seq);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs(expires);
"""
RECORD = ("seq, id, model, version, target, kind, status, created, started, finished, expires, "
          "attempts, error, callback_url, callback_status, input_size, result_size")
SWEEP_BATCH = 500


def _record(row: tuple) -> JobRecord:
    (seq, job_id, model, version, target, kind, status, created, started, finished, expires,
     attempts, error, callback_url, callback_status, input_size, result_size) = row
    return JobRecord(id=job_id, model=model, version=version, status=status, created=created,
                     target=target, kind=kind, started=started, finished=finished,
                     expires=expires, attempts=attempts,
                     error=json.loads(error) if error else None, callback_url=callback_url,
                     callback_status=callback_status, input_size=input_size,
                     result_size=result_size, seq=seq)


class SqliteJobStore(JobStore):
    """Jobs in one SQLite file; large inputs and results in files beside it."""

    kind = "sqlite"

    def __init__(self, path: Path, limits: StoreLimits) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.limits = limits
        self.blobs = self.path.parent / "blobs"
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tsf-jobs")
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._used = 0  # bytes of inputs and results

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # --- opening ------------------------------------------------------------------------------
    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            raise JobStoreError(f"job store {self.path} is in use by another tsf server (pid "
                                f"{holder or '?'}); give each server its own workspace, or "
                                "share jobs through job_store=redis://...") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {version}, this tsf reads "
                                            f"{SCHEMA_VERSION}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._used = db.execute("SELECT total(input_size + result_size) FROM jobs"
                                    ).fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise JobStoreError(f"job store {self.path} cannot be read ({exc}): it is damaged "
                                "or not a tsf job store; move it aside to start with an empty "
                                "store") from None
        self._db = db

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._unlock()

        await self._call(close)
        self._thread.shutdown(wait=False)

    # --- payloads ------------------------------------------------------------------------------
    def _put(self, job_id: str, suffix: str, data: bytes) -> bytes | None:
        """Inline bytes for the row, or None once written to a file of their own."""
        if len(data) <= self.limits.inline_bytes:
            return data
        target = self.blobs / f"{job_id}{suffix}"
        tmp = target.with_suffix(suffix + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return None

    def _get(self, job_id: str, suffix: str, inline: bytes | None) -> bytes:
        if inline is not None:
            return inline
        try:
            return (self.blobs / f"{job_id}{suffix}").read_bytes()
        except OSError as exc:
            raise JobStoreError(f"the stored {suffix[1:]} of job {job_id} is missing ({exc})"
                                ) from None

    def _drop(self, job_id: str, *suffixes: str) -> None:
        for suffix in suffixes:
            (self.blobs / f"{job_id}{suffix}").unlink(missing_ok=True)

    def _one(self, job_id: str) -> JobRecord | None:
        row = self._db.execute(f"SELECT {RECORD} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    # --- submitting and reading ------------------------------------------------------------
    async def add(self, record: JobRecord, payload: bytes,
                  idempotency: tuple[str, str] | None) -> tuple[JobRecord, bool]:
        return await self._call(self._add, record, payload, idempotency)

    def _add(self, record: JobRecord, payload: bytes,
             idempotency: tuple[str, str] | None) -> tuple[JobRecord, bool]:
        db = self._db
        if idempotency is not None:
            row = db.execute("SELECT id, idem_digest FROM jobs WHERE idem_key = ?",
                             (idempotency[0],)).fetchone()
            if row is not None:
                if row[1] != idempotency[1]:
                    raise Conflict(f"Idempotency-Key {idempotency[0]!r} was used for another "
                                   f"request (job {row[0]})")
                return self._one(row[0]), False
        if self._used + len(payload) > self.limits.max_bytes:
            raise OutOfResources(f"the job store is full ({self.limits.max_bytes // 2**20} MiB "
                                 "of inputs and results, job_store_max_mb); retry once jobs "
                                 "finish or expire")
        inline = self._put(record.id, ".in", payload)
        try:
            cursor = db.execute(
                "INSERT INTO jobs (id, model, version, target, kind, status, created, expires, "
                "callback_url, idem_key, idem_digest, input, input_size) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.model, record.version, record.target, record.kind, QUEUED,
                 record.created, record.created + self.limits.ttl, record.callback_url,
                 idempotency[0] if idempotency else None, idempotency[1] if idempotency else None,
                 inline, len(payload)))
        except BaseException:
            self._drop(record.id, ".in")
            raise
        self._used += len(payload)
        record.seq, record.status, record.input_size = cursor.lastrowid, QUEUED, len(payload)
        record.expires = record.created + self.limits.ttl
        return record, True

    async def get(self, job_id: str) -> JobRecord | None:
        return await self._call(self._one, job_id)

    async def result(self, job_id: str) -> StoredResult | None:
        def read() -> StoredResult | None:
            row = self._db.execute("SELECT result, result_size FROM jobs WHERE id = ? AND "
                                   "status = 'succeeded'", (job_id,)).fetchone()
            if row is None:
                return None
            return unpack_result(self._get(job_id, ".out", row[0]))

        return await self._call(read)

    async def page(self, model: str | None, status: str | None, limit: int,
                   after: int) -> tuple[list[JobRecord], int | None]:
        def read() -> tuple[list[JobRecord], int | None]:
            where, args = ["seq > ?"], [after]
            if model:
                where.append("model = ?")
                args.append(model)
            if status:
                where.append("status = ?")
                args.append(status)
            rows = self._db.execute(f"SELECT {RECORD} FROM jobs WHERE {' AND '.join(where)} "
                                    "ORDER BY seq LIMIT ?", (*args, limit + 1)).fetchall()
            records = [_record(row) for row in rows[:limit]]
            return records, records[-1].seq if len(rows) > limit else None

        return await self._call(read)

    # --- state changes ------------------------------------------------------------------------
    def _end(self, job_id: str, status: str, now: float, error: dict | None = None,
             result: bytes | None = None, result_size: int = 0) -> None:
        """Move a job to a final status in the open transaction; its input is dropped."""
        row = self._db.execute("SELECT input_size, callback_url FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
        callback = "pending" if row[1] and status != CANCELLED else None
        self._db.execute(
            "UPDATE jobs SET status = ?, finished = ?, expires = ?, owner = NULL, error = ?, "
            "input = NULL, input_size = 0, result = ?, result_size = ?, callback_status = ? "
            "WHERE id = ?", (status, now, now + self.limits.ttl,
                             json.dumps(error) if error else None, result, result_size,
                             callback, job_id))
        self._used += result_size - row[0]

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            value = fn(*args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return value

    async def cancel(self, job_id: str, now: float) -> JobRecord | None:
        def cancel() -> JobRecord | None:
            record = self._one(job_id)
            if record is not None and record.status in (QUEUED, RUNNING):
                self._end(job_id, CANCELLED, now)
                self._drop(job_id, ".in")
                record = self._one(job_id)
            return record

        return await self._call(self._write, cancel)

    async def claim(self, owner: str, count: int, now: float) -> list[Claimed]:
        def claim() -> list[Claimed]:
            rows = self._db.execute(f"SELECT {RECORD}, input FROM jobs WHERE status = 'queued' "
                                    "AND owner IS NULL ORDER BY seq LIMIT ?", (count,)
                                    ).fetchall()
            claimed = []
            for row in rows:
                record = _record(row[:-1])
                self._db.execute("UPDATE jobs SET owner = ? WHERE seq = ?", (owner, record.seq))
                try:
                    payload = self._get(record.id, ".in", row[-1])
                except JobStoreError as exc:
                    payload = b""
                    record.error = exc.to_dict()
                claimed.append(Claimed(record, payload))
            return claimed

        return await self._call(self._write, claim)

    async def mark_running(self, owner: str, job_ids: list[str], now: float) -> None:
        def mark() -> None:
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start:start + 500]
                self._db.execute(
                    f"UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 "
                    f"WHERE id IN ({','.join('?' * len(chunk))}) AND owner = ? AND "
                    "status = 'queued'", (now, *chunk, owner))

        await self._call(self._write, mark)

    async def heartbeat(self, owner: str, job_ids: list[str], now: float) -> set[str]:
        def check() -> set[str]:
            held = set()
            for start in range(0, len(job_ids), 500):
                chunk = job_ids[start:start + 500]
                marks = ",".join("?" * len(chunk))
                held.update(r[0] for r in self._db.execute(
                    f"SELECT id FROM jobs WHERE id IN ({marks}) AND owner = ?",
                    (*chunk, owner)))
            return set(job_ids) - held

        return await self._call(check)

    def _held(self, job_id: str, owner: str) -> JobRecord | None:
        """The job, if ``owner`` holds it (queued or running; a final status frees it)."""
        record = self._one(job_id)
        if record is None or record.status not in (QUEUED, RUNNING) or \
                self._db.execute("SELECT owner FROM jobs WHERE id = ?",
                                 (job_id,)).fetchone()[0] != owner:
            return None
        return record

    async def finish(self, job_id: str, owner: str, outcome: Finish,
                     now: float) -> JobRecord | None:
        def finish() -> JobRecord | None:
            if self._held(job_id, owner) is None:
                return None
            data = pack_result(outcome.result) if outcome.result is not None else None
            inline = self._put(job_id, ".out", data) if data is not None else None
            self._end(job_id, outcome.status, now, outcome.error, inline,
                      len(data) if data is not None else 0)
            self._drop(job_id, ".in")
            return self._one(job_id)

        return await self._call(self._write, finish)

    async def retry(self, job_id: str, owner: str, error: dict, now: float) -> JobRecord | None:
        def retry() -> JobRecord | None:
            record = self._held(job_id, owner)
            if record is None:
                return None
            if record.attempts >= self.limits.max_attempts:
                self._end(job_id, FAILED, now, error)
                self._drop(job_id, ".in")
            else:
                self._db.execute("UPDATE jobs SET status = 'queued', owner = NULL, error = ?, "
                                 "started = NULL WHERE id = ?", (json.dumps(error), job_id))
            return self._one(job_id)

        return await self._call(self._write, retry)

    async def release(self, job_id: str, owner: str) -> None:
        await self._call(self._write, lambda: self._db.execute(
            "UPDATE jobs SET attempts = attempts - (status = 'running'), status = 'queued', "
            "owner = NULL, started = NULL WHERE id = ? AND owner = ? AND "
            "status IN ('queued', 'running')", (job_id, owner)))

    async def recover(self, now: float) -> int:
        def recover() -> int:
            self._db.execute("UPDATE jobs SET owner = NULL WHERE status = 'queued' AND "
                             "owner IS NOT NULL")
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE status = 'running'"
                                    ).fetchall()
            for job_id, attempts in rows:
                if attempts >= self.limits.max_attempts:
                    self._end(job_id, FAILED, now, {
                        "code": 500, "type": "JobInterruptedException",
                        "message": f"the server stopped while running this job, {attempts} "
                                   f"time(s) (job_max_attempts={self.limits.max_attempts})"})
                    self._drop(job_id, ".in")
                else:
                    self._db.execute("UPDATE jobs SET status = 'queued', owner = NULL, "
                                     "started = NULL WHERE id = ?", (job_id,))
            return len(rows)

        return await self._call(self._write, recover)

    async def sweep(self, now: float) -> int:
        def sweep() -> int:
            gone = self._db.execute(
                "SELECT id FROM jobs WHERE status = 'expired' AND expires <= ? LIMIT ?",
                (now, SWEEP_BATCH)).fetchall()
            for (job_id,) in gone:
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            due = self._db.execute(
                "SELECT id, status, input_size, result_size FROM jobs WHERE expires <= ? AND "
                "status NOT IN ('expired', 'running') LIMIT ?", (now, SWEEP_BATCH)).fetchall()
            for job_id, status, input_size, result_size in due:
                self._db.execute(
                    "UPDATE jobs SET status = 'expired', expires = ?, input = NULL, "
                    "input_size = 0, result = NULL, result_size = 0, callback_status = CASE "
                    "WHEN callback_status = 'pending' THEN 'failed' ELSE callback_status END, "
                    "finished = coalesce(finished, ?) WHERE id = ?",
                    (now + self.limits.ttl, now, job_id))
                self._used -= input_size + result_size
                self._drop(job_id, ".in", ".out")
            return len(gone) + len(due)

        return await self._call(self._write, sweep)

    async def stats(self, now: float, owner: str, local_workers: int) -> Stats:
        def read() -> Stats:
            counts = dict(self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status"))
            oldest = self._db.execute("SELECT min(created) FROM jobs WHERE status = 'queued'"
                                      ).fetchone()[0]
            return Stats(counts, now - oldest if oldest else 0.0, local_workers)

        return await self._call(read)

    async def set_callback(self, job_id: str, status: str) -> None:
        await self._call(lambda: self._db.execute(
            "UPDATE jobs SET callback_status = ? WHERE id = ? AND status != ?",
            (status, job_id, EXPIRED)))

    async def pending_callbacks(self, before: float, limit: int) -> list[JobRecord]:
        def read() -> list[JobRecord]:
            return [_record(row) for row in self._db.execute(
                f"SELECT {RECORD} FROM jobs WHERE callback_status = 'pending' AND finished < ? "
                "ORDER BY seq LIMIT ?", (before, limit))]

        return await self._call(read)
