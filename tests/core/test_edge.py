"""The granian edge's record writer: many requests' records in one commit, on a real
SQLite file, driven from a real asyncio loop (the HTTP side is tests/e2e, where
``qywx serve`` runs on granian by default)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.edge import RecordWriter
from qywx_cli.core.errors import ServerError, StoreError, UsageError
from qywx_cli.core.store import CallbackRecord, Store, open_store
from qywx_cli.core.store.records import MAX_CIPHERTEXT
from tests.core.store.conftest import callback_fields


class CountingCommits:
    """Counts the transactions SQLite commits, through its commit hook."""

    def __init__(self, store: Store) -> None:
        self.commits = 0
        db = store._db  # type: ignore[attr-defined]
        db.set_trace_callback(self._trace)

    def _trace(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            self.commits += 1


async def _record_all(store: Store, requests: list[dict[str, Any]]) -> list[Any]:
    loop = asyncio.get_running_loop()
    writer = RecordWriter(store, loop)
    try:
        # Every request is queued before the loop yields, so the writer finds them all.
        futures = [writer.record(request) for request in requests]
        return await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await loop.run_in_executor(None, writer.close)


def test_records_queued_together_are_written_in_one_commit(tmp_path: Path) -> None:
    with open_store(tmp_path / "qywx.db") as store:
        first = callback_fields()
        requests = [first, *(callback_fields() for _ in range(30)), dict(first)]
        counter = CountingCommits(store)
        results = asyncio.run(_record_all(store, requests))
        assert all(isinstance(r, CallbackRecord) for r in results)
        assert [r.status for r in results[:-1]] == ["received"] * 31
        assert (results[-1].status, results[-1].duplicate_of) == ("duplicate", results[0].id)
        assert counter.commits <= 2  # the lot in one commit (two if the first went alone)
        for rec in results:
            assert store.get_callback(rec.id) == rec


def test_a_refused_request_fails_alone(tmp_path: Path) -> None:
    with open_store(tmp_path / "qywx.db") as store:
        requests = [callback_fields(), callback_fields(envelope="x" * (MAX_CIPHERTEXT + 1))]
        requests.append(callback_fields())
        results = asyncio.run(_record_all(store, requests))
        assert isinstance(results[0], CallbackRecord) and isinstance(results[2], CallbackRecord)
        assert isinstance(results[1], UsageError)
        assert len(store.list_callbacks(limit=10)) == 2


def test_a_failed_commit_fails_every_request_with_an_error_of_its_own(tmp_path: Path) -> None:
    store = open_store(tmp_path / "qywx.db")
    store.close()
    results = asyncio.run(_record_all(store, [callback_fields() for _ in range(3)]))
    assert all(isinstance(r, StoreError) and "closed" in r.message for r in results)
    assert len({id(r) for r in results}) == 3  # each request's steps get their own


def test_a_closed_writer_refuses_new_records(tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        loop = asyncio.get_running_loop()
        writer = RecordWriter(store, loop)
        await loop.run_in_executor(None, writer.close)
        with pytest.raises(StoreError, match="stopping"):
            writer.record(callback_fields())

    with open_store(tmp_path / "qywx.db") as store:
        asyncio.run(scenario(store))


def test_a_server_that_stops_by_itself_is_one_line_without_its_backtrace() -> None:
    """granian's bind error (another process took the port after it was checked) can
    carry a Rust backtrace; qywx says the first line only."""
    from qywx_cli.core.edge import _raise_stopped

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[Any] = loop.create_future()
        failed.set_exception(
            RuntimeError("Address already in use (os error 98)\n\nStack backtrace:\n  0: x")
        )
        with pytest.raises(ServerError) as caught:
            _raise_stopped(failed, "127.0.0.1", 8000)
        assert caught.value.message == (
            "cannot listen on 127.0.0.1:8000: Address already in use (os error 98)"
        )
        ended: asyncio.Future[Any] = loop.create_future()
        ended.set_result(None)
        with pytest.raises(ServerError, match="the HTTP server stopped"):
            _raise_stopped(ended, "127.0.0.1", 8000)

    asyncio.run(scenario())


def test_a_server_stopped_by_a_signal_before_it_was_up_is_no_listen_error() -> None:
    """A Ctrl-C while granian starts stops it before it accepts: that is the stop asked
    for, not "cannot listen … the HTTP server stopped" (exit 1); a server that stops by
    itself is still that error."""
    from qywx_cli.core.edge import _accepting

    async def check(asked: bool) -> bool:
        serving: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        serving.set_result(None)  # granian's serve() returned at once
        return await _accepting(serving, "127.0.0.1", 1, lambda: asked)

    assert asyncio.run(check(True)) is False
    with pytest.raises(ServerError, match=r"cannot listen on 127\.0\.0\.1:1: the HTTP server"):
        asyncio.run(check(False))
