"""The two job stores keep the same promises: idempotent submits, owner-checked finishes,
retries bounded by job_max_attempts, TTL expiry, the size bound, paging, cancel."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import pytest

from tsf.errors import Conflict, OutOfResources
from tsf.jobs.records import (JobRecord, JobStoreError, StoredResult, pack_request,
                              unpack_request)
from tsf.jobs.store import Finish, StoreLimits
from tsf.workers.messages import Part, Request

_prefixes = itertools.count()


def _limits(**kwargs) -> StoreLimits:
    return StoreLimits(**{"max_attempts": 2, "ttl": 100.0, "max_bytes": 10_000,
                          "inline_bytes": 64, "visibility_timeout": 0.2, **kwargs})


class Stores:
    """Makes opened stores of one kind; :func:`run` closes them on the loop that opened them."""

    def __init__(self, kind: str, request, tmp_path) -> None:
        self.kind, self.request, self.tmp_path = kind, request, tmp_path
        self.made: list = []

    async def __call__(self, **kwargs):
        limits = _limits(**kwargs)
        if self.kind == "sqlite":
            from tsf.jobs.sqlite_store import SqliteJobStore

            store = SqliteJobStore(self.tmp_path / f"s{len(self.made)}" / "jobs.db", limits)
        else:
            from tsf.jobs.redis_store import RedisJobStore

            url = self.request.getfixturevalue("redis_url")
            store = RedisJobStore(url, limits, prefix=f"t{next(_prefixes)}:{{jobs}}:")
        await store.open()
        self.made.append(store)
        return store

    async def close(self) -> None:
        for store in self.made:
            await store.close()


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    return Stores(request.param, request, tmp_path)


def run(coro, stores: Stores | None = None):
    async def main():
        try:
            return await coro
        finally:
            if stores is not None:
                await stores.close()

    return asyncio.run(main())


def _payload(text: str = "x") -> bytes:
    return pack_request(Request("r", [Part("body", text.encode(), "text/plain")],
                                {"Authorization": "Bearer secret", "X-Test": "1"}))


def _job(model: str = "m", now: float | None = None) -> JobRecord:
    return JobRecord(id=uuid.uuid4().hex, model=model, version=None, status="queued",
                     created=now if now is not None else time.time())


def test_a_stored_request_keeps_its_parts_but_not_the_clients_credentials():
    request = unpack_request(_payload("hello"))
    assert request.parts[0].data == b"hello" and request.headers == {"X-Test": "1"}
    with pytest.raises(JobStoreError, match="damaged"):
        unpack_request(b"not a stored request")


def test_submit_claim_finish_and_read_back(make_store):
    async def main():
        store = await make_store()
        job, created = await store.add(_job(), _payload("a" * 200), ("key-1", "d1"))
        assert created and job.status == "queued"
        again, created = await store.add(_job(), _payload("a" * 200), ("key-1", "d1"))
        assert not created and again.id == job.id  # the retried submit: the same job
        with pytest.raises(Conflict, match="another request"):
            await store.add(_job(), _payload("b"), ("key-1", "other digest"))
        [claimed] = await store.claim("me", 10, time.time())
        assert claimed.record.id == job.id and claimed.record.status == "queued"
        assert unpack_request(claimed.payload).parts[0].data == b"a" * 200  # kept in a file
        assert await store.claim("me", 10, time.time()) == []
        assert (await store.get(job.id)).attempts == 0  # held, not begun
        await store.mark_running("someone else", [job.id], time.time())
        assert (await store.get(job.id)).status == "queued"
        await store.mark_running("me", [job.id], time.time())
        running = await store.get(job.id)
        assert running.status == "running" and running.attempts == 1 and running.started
        assert await store.finish(job.id, "someone else", Finish("succeeded"), time.time()) \
            is None
        body = b"r" * 500
        done = await store.finish(job.id, "me", Finish("succeeded", StoredResult(
            200, "application/json", body, {"X-H": "v"})), time.time())
        assert done.status == "succeeded" and done.finished and done.expires
        result = await store.result(job.id)
        assert (result.status, result.ctype, result.body, result.headers) == \
            (200, "application/json", body, {"X-H": "v"})
        # a late second finish (a runner that lost the job) changes nothing
        assert await store.finish(job.id, "me", Finish("failed", error={"code": 500}),
                                  time.time()) is None
        assert (await store.get(job.id)).status == "succeeded"
        stats = await store.stats(time.time(), "me", 2)
        assert stats.counts.get("succeeded") == 1 and stats.counts.get("queued", 0) == 0
    run(main(), make_store)


def test_a_failed_run_is_retried_up_to_max_attempts(make_store):
    async def main():
        store = await make_store(max_attempts=2)
        job, _ = await store.add(_job(), _payload(), None)
        [c] = await store.claim("me", 1, time.time())
        await store.mark_running("me", [job.id], time.time())
        after = await store.retry(job.id, "me", {"code": 503, "message": "died"}, time.time())
        assert after.status == "queued" and after.attempts == 1 and after.started is None
        [c] = await store.claim("me", 1, time.time())
        await store.mark_running("me", [job.id], time.time())
        assert (await store.get(job.id)).attempts == 2
        after = await store.retry(job.id, "me", {"code": 503, "message": "died"}, time.time())
        assert after.status == "failed" and after.error["message"] == "died"
    run(main(), make_store)


def test_a_released_job_runs_again_without_counting_an_attempt(make_store):
    async def main():
        store = await make_store()
        job, _ = await store.add(_job(), _payload(), None)
        await store.claim("me", 1, time.time())
        await store.mark_running("me", [job.id], time.time())
        await store.release(job.id, "me")
        record = await store.get(job.id)
        assert record.status == "queued" and record.attempts == 0
        [c] = await store.claim("other", 1, time.time())
        assert c.record.id == job.id
    run(main(), make_store)


def test_cancel_a_queued_and_a_running_job(make_store):
    async def main():
        store = await make_store()
        queued, _ = await store.add(_job(), _payload(), None)
        running, _ = await store.add(_job(), _payload(), None)
        # claim only the first in line, then cancel both
        [c] = await store.claim("me", 1, time.time())
        assert c.record.id == queued.id
        await store.mark_running("me", [queued.id], time.time())
        assert (await store.cancel(queued.id, time.time())).status == "cancelled"
        assert (await store.cancel(running.id, time.time())).status == "cancelled"
        assert await store.claim("me", 5, time.time()) == []  # a cancelled job never runs
        assert await store.heartbeat("me", [queued.id], time.time()) == {queued.id}
        assert await store.cancel("f" * 32, time.time()) is None
    run(main(), make_store)


def test_ttl_expires_results_then_forgets_the_job(make_store):
    async def main():
        store = await make_store(ttl=10.0)
        now = time.time()
        job, _ = await store.add(_job(now=now), _payload(), ("k", "d"))
        await store.claim("me", 1, now)
        await store.mark_running("me", [job.id], now)
        await store.finish(job.id, "me", Finish("succeeded", StoredResult(200, "text/plain",
                                                                          b"ok")), now)
        assert await store.sweep(now + 5) == 0
        assert await store.sweep(now + 11) == 1
        record = await store.get(job.id)
        assert record.status == "expired" and await store.result(job.id) is None
        stale, _ = await store.add(_job(now=now), _payload(), None)  # queued, never run
        await store.sweep(now + 11)
        assert (await store.get(stale.id)).status == "expired"
        await store.sweep(now + 30)
        assert await store.get(job.id) is None
        fresh, created = await store.add(_job(), _payload(), ("k", "other"))
        assert created  # the key was forgotten with its job
    run(main(), make_store)


def test_the_store_refuses_new_jobs_when_full(make_store):
    async def main():
        store = await make_store(max_bytes=len(_payload()) * 2)
        await store.add(_job(), _payload(), None)
        await store.add(_job(), _payload(), None)
        with pytest.raises(OutOfResources, match="job_store_max_mb"):
            await store.add(_job(), _payload(), None)
    run(main(), make_store)


def test_pages_in_submission_order_filtered_by_model_and_status(make_store):
    async def main():
        store = await make_store()
        ids = [(await store.add(_job("a" if i % 2 else "b"), _payload(), None))[0].id
               for i in range(7)]
        await store.cancel(ids[1], time.time())
        first, token = await store.page(None, None, 3, 0)
        assert [r.id for r in first] == ids[:3] and token is not None
        second, token = await store.page(None, None, 3, token)
        third, token = await store.page(None, None, 3, token)
        assert [r.id for r in second + third] == ids[3:] and token is None
        a_jobs, _ = await store.page("a", None, 10, 0)
        assert [r.id for r in a_jobs] == ids[1::2]
        cancelled, _ = await store.page(None, "cancelled", 10, 0)
        assert [r.id for r in cancelled] == [ids[1]]
    run(main(), make_store)


def test_a_silent_runners_job_is_taken_over_and_its_late_finish_refused(make_store):
    async def main():
        store = await make_store(visibility_timeout=0.2)
        if store.kind == "sqlite":
            pytest.skip("one server holds a SQLite store: takeover is recover() at start")
        job, _ = await store.add(_job(), _payload(), None)
        [c] = await store.claim("a", 1, time.time())
        await store.mark_running("a", [job.id], time.time())
        assert await store.heartbeat("a", [job.id], time.time()) == set()
        await asyncio.sleep(0.3)  # a goes silent past the visibility timeout
        [taken] = await store.claim("b", 1, time.time())
        assert taken.record.id == job.id and taken.record.attempts == 1
        assert taken.record.status == "queued"  # waiting for b's worker
        await store.mark_running("b", [job.id], time.time())
        assert (await store.get(job.id)).attempts == 2
        assert await store.heartbeat("a", [job.id], time.time()) == {job.id}
        assert await store.finish(job.id, "a", Finish("succeeded", StoredResult(
            200, "text/plain", b"late")), time.time()) is None
        assert (await store.finish(job.id, "b", Finish("succeeded", StoredResult(
            200, "text/plain", b"b's")), time.time())).status == "succeeded"
        assert (await store.result(job.id)).body == b"b's"
    run(main(), make_store)


def test_sqlite_recovers_jobs_a_stopped_server_left_running(tmp_path):
    from tsf.jobs.sqlite_store import SqliteJobStore

    async def main():
        path = tmp_path / "jobs.db"
        store = SqliteJobStore(path, _limits(max_attempts=2))
        await store.open()
        once, _ = await store.add(_job(), _payload(), None)
        twice, _ = await store.add(_job(), _payload(), None)
        held, _ = await store.add(_job(), _payload(), None)
        await store.claim("old", 2, time.time())
        await store.mark_running("old", [once.id, twice.id], time.time())
        await store.retry(twice.id, "old", {"code": 503}, time.time())
        await store.claim("old", 3, time.time())  # twice again, and held
        await store.mark_running("old", [twice.id], time.time())  # its second attempt
        await store.close()
        store = SqliteJobStore(path, _limits(max_attempts=2))
        await store.open()
        assert await store.recover(time.time()) == 2
        assert (await store.get(once.id)).status == "queued"
        [free] = [c for c in await store.claim("new", 5, time.time())
                  if c.record.id == held.id]  # no longer the old server's
        failed = await store.get(twice.id)
        assert failed.status == "failed" and "stopped" in failed.error["message"]
        await store.close()
    run(main())


def test_sqlite_names_a_corrupt_store_file_and_refuses_a_second_server(tmp_path):
    from tsf.jobs.sqlite_store import SqliteJobStore

    async def main():
        bad = tmp_path / "bad" / "jobs.db"
        bad.parent.mkdir()
        bad.write_bytes(b"this is not a database" * 100)
        with pytest.raises(JobStoreError, match=str(bad)):
            await SqliteJobStore(bad, _limits()).open()
        first = SqliteJobStore(tmp_path / "ok" / "jobs.db", _limits())
        await first.open()
        with pytest.raises(JobStoreError, match="in use by another tsf server"):
            await SqliteJobStore(tmp_path / "ok" / "jobs.db", _limits()).open()
        await first.close()
    run(main())
