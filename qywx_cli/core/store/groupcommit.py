"""Group commit: many threads' durable writes in one transaction, and one fsync.

A backend whose commit is expensive and serialised (SQLite: one writer, ``synchronous=
FULL``, one fsync per commit) lets every thread that has a write queue it here; the
first thread to queue leads, runs every write queued by then in ONE transaction through
the backend's ``commit`` function, wakes the other threads, and hands the lead to the
oldest write queued meanwhile. Each caller returns only after the commit that holds its
write, so "durable before the reply" is kept, and a failed commit fails every write in
it (the callers answer 503 and WeCom retries). A write that fails by its own fault (a
value the database cannot hold) fails alone: the backend commits the others without it
and puts a :class:`Failed` in its place.

PostgreSQL needs none of this: its server already groups concurrent commits into one
WAL flush, and each of its callers has its own pooled connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from qywx_cli.core.errors import StoreError

__all__ = ["Failed", "GroupCommit"]

_T = TypeVar("_T")
_C = TypeVar("_C")

Commit = Callable[[Sequence[Callable[[_C], Any]]], list[Any]]


class Failed:
    """In a batch's results: this write failed by its own fault, and only it."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _QueuedWrite(Generic[_C, _T]):
    """One write waiting for a group commit, and what became of it.

    A write that has to wait gets a ``_gate``, held until the write is committed (or
    failed) or its thread is asked to lead the next commit: the waiting thread blocks on
    it once, and is woken once, instead of queueing for the connection lock only to find
    its write already done (a convoy that cost more CPU than the commit under load). A
    write whose thread leads at once, the only case without concurrency, needs no gate.
    """

    __slots__ = ("_gate", "done", "error", "fn", "lead", "result")

    def __init__(self, fn: Callable[[_C], _T]) -> None:
        self.fn = fn
        self.done = False
        self.lead = False
        self.result: _T | None = None
        self.error: BaseException | None = None
        self._gate: Any = None

    def close_gate(self) -> None:
        """Make this write's thread wait in :meth:`wait` (called under the queue lock)."""
        self._gate = threading.Lock()
        self._gate.acquire()

    def _open(self) -> None:
        if self._gate is not None:
            self._gate.release()

    def finish(self, result: _T | None = None, *, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        self._open()

    def promote(self) -> None:
        self.lead = True
        self._open()

    def wait(self) -> None:
        self._gate.acquire()

    def outcome(self) -> _T:
        if isinstance(self.error, StoreError):  # a fresh exception per waiting thread
            raise StoreError(self.error.message) from None
        if self.error is not None:
            raise self.error
        return cast(_T, self.result)


class GroupCommit(Generic[_C]):
    """Queue writes and commit them in batches through ``commit``.

    ``commit(fns)`` must run every ``fn`` in one transaction and return their results
    in order, or raise (then every write in the batch fails with that error). A result
    may be a :class:`Failed`: that write alone fails, with its error.
    """

    def __init__(self, commit: Commit[_C]) -> None:
        self._commit = commit
        self._queued: list[_QueuedWrite[_C, Any]] = []
        self._queue_lock = threading.Lock()
        self._committing = False  # a thread is leading a group commit

    @property
    def idle(self) -> bool:
        """Nothing queued and no commit under way (for tests and shutdown)."""
        with self._queue_lock:
            return not self._committing and not self._queued

    def submit(self, fn: Callable[[_C], _T]) -> _T:
        """Run ``fn`` in a (possibly shared) transaction; return once it is committed.

        A thread interrupted while waiting or leading (KeyboardInterrupt in a library
        user's main thread) finishes or hands on what it holds, so no one waits forever.
        """
        job: _QueuedWrite[_C, _T] = _QueuedWrite(fn)
        with self._queue_lock:
            leading = not self._committing
            if leading:
                # Nothing is queued while no commit is under way (_pass_lead clears the
                # flag only on an empty queue), so this write alone is the batch: it
                # skips the queue and a second trip through the lock.
                self._committing = True
            else:
                self._queued.append(job)
                job.close_gate()
        batch: list[_QueuedWrite[_C, Any]] = [job] if leading else []
        if not leading:
            try:
                job.wait()
            except BaseException:
                self._abandon(job)
                raise
            if job.done:
                return job.outcome()
        try:
            if not leading:  # promoted: the batch is everything queued, this write first
                with self._queue_lock:
                    batch, self._queued = self._queued, []
            self._commit_batch(batch)
        finally:
            unfinished = [queued for queued in batch if not queued.done]
            if unfinished:  # only an interrupt gets here; no error is built otherwise
                interrupted = StoreError("commit interrupted")
                for queued in unfinished:
                    queued.finish(error=interrupted)
            with self._queue_lock:
                self._pass_lead()
        return job.outcome()

    def _commit_batch(self, batch: list[_QueuedWrite[_C, Any]]) -> None:
        try:
            results = self._commit([q.fn for q in batch])
        except Exception as exc:
            for queued in batch:
                queued.finish(error=exc)
        else:
            for queued, result in zip(batch, results, strict=True):
                if isinstance(result, Failed):
                    queued.finish(error=result.error)
                else:
                    queued.finish(result)

    def _pass_lead(self) -> None:
        """Wake the oldest queued write to lead the next commit (``_queue_lock`` held)."""
        if self._queued:
            self._queued[0].promote()
        else:
            self._committing = False

    def _abandon(self, job: _QueuedWrite[_C, Any]) -> None:
        """Take an interrupted waiter's write out of the queue; if it had just been made
        leader, hand the lead on. (A write already in a leader's batch is left to it.)"""
        with self._queue_lock:
            if not any(q is job for q in self._queued):
                return
            self._queued = [q for q in self._queued if q is not job]
            if job.lead:
                self._pass_lead()
