"""The shared job store: Redis (``job_store=redis://host:port/db``), for several replicas.

The queue is a Redis stream with one consumer group; each replica is a consumer named by
``job_replica_id`` (default: host name and process id).  A replica claims jobs from the stream
and keeps them by a heartbeat (every third of ``job_visibility_timeout``); a job whose replica
went silent for longer is taken over by another, and counts one more attempt.  Every state
change is one Lua script (:mod:`tsf.jobs.redis_scripts`) that checks who holds the job, so a
replica that lost a job can neither finish it nor take it back: execution is at least once,
the result is written once per job id.  Any replica answers ``GET`` and ``DELETE`` for any job.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import Conflict, OutOfResources
from . import redis_scripts
from .records import (FAILED, QUEUED, Claimed, JobRecord, JobStoreError, StoredResult,
                      pack_result, unpack_result)
from .store import Finish, JobStore, Stats, StoreLimits

PREFIX = "tsf:{jobs}:"
GROUP = "runners"
SWEEP_BATCH = 200
SCAN_FACTOR = 20  # a filtered page reads at most this many jobs per job it returns
REPLICA_FRESH = 60.0  # s a replica's worker count is believed


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text not in (None, "") else None


def _record(fields: dict) -> JobRecord | None:
    if not fields:
        return None
    f = {_text(k): _text(v) for k, v in fields.items()}
    return JobRecord(id=f["id"], model=f.get("model", ""), version=f.get("version") or None,
                     status=f.get("status", QUEUED), created=float(f.get("created", 0)),
                     target=f.get("target", "model"), kind=f.get("kind", "predict"),
                     started=_float(f.get("started")), finished=_float(f.get("finished")),
                     expires=_float(f.get("expires")), attempts=int(f.get("attempts", 0)),
                     error=json.loads(f["error"]) if f.get("error") else None,
                     callback_url=f.get("callback_url") or None,
                     callback_status=f.get("callback_status") or None,
                     input_size=int(f.get("input_size", 0)),
                     result_size=int(f.get("result_size", 0)), seq=int(f.get("seq", 0)))


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class RedisJobStore(JobStore):
    """Jobs in Redis, shared by every replica that names the same server and database."""

    kind = "redis"

    def __init__(self, url: str, limits: StoreLimits, prefix: str = PREFIX) -> None:
        self.url = url
        self.location = redacted(url)
        self.limits = limits
        self.p = prefix
        self.redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._cursor = "0-0"  # where the takeover scan of silent replicas' jobs goes on
        self._first_claim = True

    async def open(self) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError
        except ImportError:
            raise JobStoreError("job_store names Redis but the redis client is not installed: "
                                "pip install redis") from None
        try:
            self.redis = aioredis.Redis.from_url(self.url, socket_connect_timeout=5)
            await self.redis.ping()
            try:
                await self.redis.xgroup_create(self.p + "stream", GROUP, id="0", mkstream=True)
            except RedisError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        except (RedisError, OSError, ValueError) as exc:
            raise JobStoreError(f"job store {self.location} cannot be used: {exc}") from None
        for name in ("ADD", "CLAIM", "MARK", "HEARTBEAT", "FINISH", "RETRY", "RELEASE", "CANCEL",
                     "SWEEP"):
            self._scripts[name] = self.redis.register_script(getattr(redis_scripts, name))

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](args=[self.p, *args])

    # --- submitting and reading ------------------------------------------------------------
    async def add(self, record: JobRecord, payload: bytes,
                  idempotency: tuple[str, str] | None) -> tuple[JobRecord, bool]:
        key, digest = idempotency or ("", "")
        expires = record.created + self.limits.ttl
        fields = ["model", record.model, "version", record.version or "", "target",
                  record.target, "kind", record.kind, "callback_url", record.callback_url or ""]
        answer = await self._run("ADD", record.id, key, digest, self.limits.max_bytes,
                                 len(payload), record.created, expires, payload, *fields)
        code = int(answer[0])
        if code == 3:
            raise OutOfResources(f"the job store is full ({self.limits.max_bytes // 2**20} MiB "
                                 "of inputs and results, job_store_max_mb); retry once jobs "
                                 "finish or expire")
        if code == 2:
            raise Conflict(f"Idempotency-Key {key!r} was used for another request (job "
                           f"{_text(answer[1])})")
        if code == 0:
            existing = await self.get(_text(answer[1]) or "")
            if existing is None:  # forgotten meanwhile: the key is free again
                return await self.add(record, payload, None)
            return existing, False
        record.seq, record.status, record.expires = int(answer[2]), QUEUED, expires
        record.input_size = len(payload)
        return record, True

    async def get(self, job_id: str) -> JobRecord | None:
        return _record(await self.redis.hgetall(self.p + "job:" + job_id))

    async def result(self, job_id: str) -> StoredResult | None:
        data = await self.redis.get(self.p + "out:" + job_id)
        return unpack_result(data) if data is not None else None

    async def page(self, model: str | None, status: str | None, limit: int,
                   after: int) -> tuple[list[JobRecord], int | None]:
        """With a status filter a page may hold fewer jobs than ``limit`` and still have a
        next one: each page reads at most ``SCAN_FACTOR`` jobs per job it may return."""
        index = self.p + ("model:" + model if model else "index")
        records: list[JobRecord] = []
        cursor, scanned = after, 0
        while scanned < SCAN_FACTOR * (limit + 1):
            ids = await self.redis.zrangebyscore(index, f"({cursor}", "+inf", start=0,
                                                 num=limit + 1, withscores=True)
            if not ids:
                return records, None
            for job_id, seq in ids:
                scanned += 1
                cursor = int(seq)
                record = await self.get(_text(job_id) or "")
                if record is not None and (status is None or record.status == status):
                    if len(records) == limit:
                        return records, records[-1].seq
                    records.append(record)
        return records, cursor

    # --- state changes ------------------------------------------------------------------------
    async def cancel(self, job_id: str, now: float) -> JobRecord | None:
        await self._run("CANCEL", GROUP, job_id, now, self.limits.ttl)
        return await self.get(job_id)

    async def claim(self, owner: str, count: int, now: float) -> list[Claimed]:
        answer = await self._run("CLAIM", GROUP, owner,
                                 int(self.limits.visibility_timeout * 1000), count, now,
                                 self.limits.max_attempts, self.limits.ttl,
                                 "1" if self._first_claim else "0", self._cursor)
        self._first_claim = False
        self._cursor = _text(answer[0]) or "0-0"
        claimed = []
        for raw in answer[1:]:
            job_id = _text(raw) or ""
            record = await self.get(job_id)
            if record is None:
                continue
            payload = await self.redis.get(self.p + "in:" + job_id)
            if payload is None:
                payload = b""
                record.error = JobStoreError(f"the stored request of job {job_id} is missing"
                                             ).to_dict()
            claimed.append(Claimed(record, payload))
        return claimed

    async def mark_running(self, owner: str, job_ids: list[str], now: float) -> None:
        if job_ids:
            await self._run("MARK", owner, now, *job_ids)

    async def heartbeat(self, owner: str, job_ids: list[str], now: float) -> set[str]:
        if not job_ids:
            return set()
        lost = await self._run("HEARTBEAT", GROUP, owner, *job_ids)
        return {_text(job_id) or "" for job_id in lost}

    async def finish(self, job_id: str, owner: str, outcome: Finish,
                     now: float) -> JobRecord | None:
        data = pack_result(outcome.result) if outcome.result is not None else b""
        done = await self._run("FINISH", GROUP, owner, job_id, outcome.status, now,
                               self.limits.ttl, json.dumps(outcome.error) if outcome.error
                               else "", len(data), data)
        return await self.get(job_id) if int(done) else None

    async def retry(self, job_id: str, owner: str, error: dict, now: float) -> JobRecord | None:
        status = await self._run("RETRY", GROUP, owner, job_id, now, self.limits.ttl,
                                 self.limits.max_attempts, json.dumps(error))
        return await self.get(job_id) if _text(status) in (QUEUED, FAILED) else None

    async def release(self, job_id: str, owner: str) -> None:
        await self._run("RELEASE", GROUP, owner, job_id)

    async def recover(self, now: float) -> int:
        """Nothing to do: a job left running by a replica that stopped is taken over by the
        next claim once its visibility timeout has passed."""
        return 0

    async def sweep(self, now: float) -> int:
        return int(await self._run("SWEEP", GROUP, now, self.limits.ttl, SWEEP_BATCH))

    async def stats(self, now: float, owner: str, local_workers: int) -> Stats:
        redis = self.redis
        replicas = self.p + "replicas"
        await redis.hset(replicas, owner, f"{local_workers}:{now}")
        counts = {_text(k) or "": int(v) for k, v in (await redis.hgetall(self.p + "counts")
                                                      ).items()}
        workers = 0
        for name, value in (await redis.hgetall(replicas)).items():
            count, _, seen = (_text(value) or "0:0").partition(":")
            if now - float(seen or 0) < REPLICA_FRESH:
                workers += int(count)
            else:
                await redis.hdel(replicas, name)
        oldest = 0.0
        groups = await redis.xinfo_groups(self.p + "stream")
        last = next((g["last-delivered-id"] for g in groups if _text(g["name"]) == GROUP), None)
        if last is not None:
            entries = await redis.xrange(self.p + "stream", min=f"({_text(last)}", count=1)
            if entries:
                oldest = max(0.0, now - int(_text(entries[0][0]).split("-")[0]) / 1000.0)
        return Stats(counts, oldest, workers)

    async def set_callback(self, job_id: str, status: str) -> None:
        job = self.p + "job:" + job_id
        if await self.redis.exists(job):
            await self.redis.hset(job, "callback_status", status)
        if status != "pending":
            await self.redis.zrem(self.p + "callbacks", job_id)

    async def pending_callbacks(self, before: float, limit: int) -> list[JobRecord]:
        ids = await self.redis.zrangebyscore(self.p + "callbacks", "-inf", f"({before}",
                                             start=0, num=limit)
        records = [await self.get(_text(job_id) or "") for job_id in ids]
        return [r for r in records if r is not None and r.callback_status == "pending"]
