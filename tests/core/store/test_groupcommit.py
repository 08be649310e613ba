"""GroupCommit on its own: who leads, what a batch holds, what a failed commit does.

No database and no timer: the commit function is a fake that records each batch and
can be held open, so the tests decide when writes queue behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from qywx_cli.core.errors import StoreError
from qywx_cli.core.store.groupcommit import GroupCommit


class FakeBackend:
    """Runs each batch's writes on a shared list; the first commit can be held open."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.hold = threading.Event()
        self.held = threading.Event()
        self.fail_next = False

    def commit(self, fns: Sequence[Callable[[list[int]], Any]]) -> list[Any]:
        if not self.batches:
            self.held.set()
            self.hold.wait()
        self.batches.append(len(fns))
        if self.fail_next:
            self.fail_next = False
            raise StoreError("disk full")
        return [fn([]) for fn in fns]


def _wait_until(condition: Callable[[], bool]) -> None:
    """Spin until ``condition`` holds (a thread has reached its queue); no assertion on time."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:  # pragma: no cover - a hang, reported as one
            raise AssertionError("condition never held")
        time.sleep(0.001)


def _queued(group: GroupCommit[list[int]]) -> int:
    with group._queue_lock:
        return len(group._queued)


def test_a_write_alone_leads_at_once_and_commits_by_itself() -> None:
    backend = FakeBackend()
    backend.hold.set()
    group: GroupCommit[list[int]] = GroupCommit(backend.commit)
    assert group.submit(lambda db: "one") == "one"
    assert group.submit(lambda db: "two") == "two"
    assert backend.batches == [1, 1] and group.idle


def test_writes_queued_behind_a_commit_share_the_next_one() -> None:
    backend = FakeBackend()
    group: GroupCommit[list[int]] = GroupCommit(backend.commit)
    results: dict[int, Any] = {}

    def write(n: int) -> None:
        def fn(db: list[int]) -> int:
            return n * 10

        results[n] = group.submit(fn)

    leader = threading.Thread(target=write, args=(0,))
    leader.start()
    backend.held.wait()
    followers = [threading.Thread(target=write, args=(n,)) for n in range(1, 6)]
    for t in followers:
        t.start()
    _wait_until(lambda: _queued(group) == 5)
    backend.hold.set()
    for t in [leader, *followers]:
        t.join()
    assert results == {n: n * 10 for n in range(6)}
    assert backend.batches == [1, 5]  # one commit for the five that waited
    assert group.idle


def test_a_failed_commit_fails_every_write_in_it_and_the_next_commit_works() -> None:
    backend = FakeBackend()
    group: GroupCommit[list[int]] = GroupCommit(backend.commit)
    outcomes: dict[int, str] = {}

    def write(n: int) -> None:
        def fn(db: list[int]) -> str:
            return f"ok{n}"

        try:
            outcomes[n] = group.submit(fn)
        except StoreError as exc:
            outcomes[n] = exc.message

    leader = threading.Thread(target=write, args=(0,))
    leader.start()
    backend.held.wait()
    followers = [threading.Thread(target=write, args=(n,)) for n in range(1, 4)]
    for t in followers:
        t.start()
    _wait_until(lambda: _queued(group) == 3)
    backend.fail_next = True  # the leader's own commit (held) fails
    backend.hold.set()
    for t in [leader, *followers]:
        t.join()
    assert outcomes[0] == "disk full"
    assert {outcomes[n] for n in (1, 2, 3)} == {"ok1", "ok2", "ok3"}
    assert group.submit(lambda db: "after") == "after" and group.idle


def test_an_error_inside_a_write_fails_its_batch_not_the_queue() -> None:
    backend = FakeBackend()
    backend.hold.set()
    group: GroupCommit[list[int]] = GroupCommit(backend.commit)

    def boom(db: list[int]) -> None:
        raise StoreError("constraint failed")

    with pytest.raises(StoreError, match="constraint failed"):
        group.submit(boom)
    assert group.submit(lambda db: 1) == 1 and group.idle
