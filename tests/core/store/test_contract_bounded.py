"""The bounded callback log, on every backend: folded refusals, capped records, pruning.

A flood of replays or stale copies of one request must cost a few rows, not one row per
delivery; a record holds the ciphertext and a short error, never a body; and
``prune_callbacks`` deletes only finished records, keeping what is still owed work.
"""

from __future__ import annotations

import pytest

from qywx_cli.core.errors import UsageError
from qywx_cli.core.store import Store
from qywx_cli.core.store.records import (
    FOLD_AFTER,
    FOLD_WINDOW_SECONDS,
    MAX_CIPHERTEXT,
    MAX_STORED_ERROR,
    PRUNABLE_STATUSES,
)
from tests.core.store.conftest import T0, Backend
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock

STALE = "timestamp is more than 300 s from now (stale or replayed)"


def _rows(store: Store) -> int:
    return len(store.list_callbacks(limit=1000))


# -- folding -----------------------------------------------------------------------------


def test_replays_past_the_limit_fold_into_the_newest_duplicate(store: Store, clock: Clock) -> None:
    original = record(store, msg_signature="s", timestamp="1", nonce="n", content_key="c")
    replays = []
    for _ in range(FOLD_AFTER + 20):
        clock.advance(1)
        replays.append(record(store, msg_signature="s", timestamp="1", nonce="n", content_key="c"))
    kept = replays[:FOLD_AFTER]
    assert all(r.status == "duplicate" and r.duplicate_of == original.id for r in replays)
    assert len({r.id for r in kept}) == FOLD_AFTER and all(r.folded == 0 for r in kept)
    # every later delivery comes back as the last kept row, one more folded each time
    assert [r.id for r in replays[FOLD_AFTER:]] == [kept[-1].id] * 20
    assert [r.folded for r in replays[FOLD_AFTER:]] == list(range(1, 21))
    last = store.get_callback(kept[-1].id)
    assert (last.folded, last.folded_at) == (20, clock())
    assert _rows(store) == 1 + FOLD_AFTER
    assert store.get_callback(original.id).folded == 0


def test_rejected_requests_fold_per_instance_and_reason(store: Store, clock: Clock) -> None:
    def reject(instance: str = "QywxProxyTemp", error: str = STALE) -> int:
        rec = record(store, instance=instance, status="rejected", last_error=error)
        assert rec.status == "rejected"
        return rec.id

    first = [reject() for _ in range(FOLD_AFTER)]
    for _ in range(10):
        assert reject() == first[-1]
    # another reason and another instance have rows of their own
    other_reason = reject(error="receiveid 'x' is not accepted")
    other_instance = reject(instance="Other")
    assert other_reason not in first and other_instance not in first
    assert store.get_callback(first[-1]).folded == 10
    assert store.get_callback(other_reason).folded == 0
    assert _rows(store) == FOLD_AFTER + 2


def test_the_window_moves_so_a_long_flood_keeps_a_few_rows_per_window(
    store: Store, clock: Clock
) -> None:
    for _ in range(FOLD_AFTER + 5):
        record(store, status="rejected", last_error=STALE)
    clock.advance(FOLD_WINDOW_SECONDS + 1)
    later = record(store, status="rejected", last_error=STALE)
    assert later.folded == 0  # the old rows left the window: a fresh row
    assert _rows(store) == FOLD_AFTER + 1
    folded = sum(r.folded for r in store.list_callbacks(limit=100))
    assert folded == 5  # every delivery is still counted somewhere


def test_originals_and_content_duplicates_are_never_folded_with_replays(store: Store) -> None:
    originals = [record(store) for _ in range(FOLD_AFTER + 2)]
    assert all(r.status == "received" for r in originals)
    assert len({r.id for r in originals}) == FOLD_AFTER + 2
    base = originals[0]
    for _ in range(FOLD_AFTER):
        record(store, msg_signature=base.msg_signature, timestamp=base.timestamp,
               nonce=base.nonce, content_key=base.content_key)  # fmt: skip
    redelivery = record(store, content_key=base.content_key)  # same content, new signature
    assert (redelivery.duplicate_reason, redelivery.folded) == ("content", 0)


# -- what a record may hold --------------------------------------------------------------


def test_a_record_holds_at_most_the_ciphertext_bound(store: Store) -> None:
    assert len(record(store, envelope="A" * MAX_CIPHERTEXT).envelope) == MAX_CIPHERTEXT
    with pytest.raises(UsageError, match="at most 128 KiB"):
        record(store, envelope="A" * (MAX_CIPHERTEXT + 1))


def test_long_errors_are_cut(store: Store) -> None:
    rec = record(store, status="rejected", last_error="x" * 100_000)
    assert rec.last_error is not None and len(rec.last_error) == MAX_STORED_ERROR
    assert rec.last_error.endswith("…")


# -- pruning -----------------------------------------------------------------------------


def test_prune_deletes_only_old_finished_records(store: Store, clock: Clock) -> None:
    processed = record(store, status="processed")
    failed = record(store, status="received")
    store.finish_callback(failed.id, "failed", "errcode -1")
    received = record(store, status="received")
    rejected = record(store, status="rejected", last_error="bad")
    claimed = record(store, status="unknown")
    assert store.claim_callback(claimed.id, "w1") is not None
    clock.advance(40 * 86400)
    recent = record(store, status="processed")
    cutoff = clock() - 30 * 86400

    dry = store.prune_callbacks(before=cutoff, statuses=PRUNABLE_STATUSES, dry_run=True)
    assert dry == {"processed": 1, "rejected": 1}
    assert _rows(store) == 6  # a dry run deletes nothing
    done = store.prune_callbacks(before=cutoff, statuses=PRUNABLE_STATUSES)
    assert done == dry
    left = {r.id for r in store.list_callbacks(limit=100)}
    assert left == {failed.id, received.id, claimed.id, recent.id}
    assert processed.id not in left and rejected.id not in left
    assert store.prune_callbacks(before=cutoff, statuses=PRUNABLE_STATUSES) == {}


def test_prune_by_status(store: Store, clock: Clock) -> None:
    record(store, status="processed")
    rejected = record(store, status="rejected", last_error="bad")
    clock.advance(10)
    record(store, status="processed")
    assert store.prune_callbacks(before=clock(), statuses=["rejected"]) == {"rejected": 1}
    assert rejected.id not in {r.id for r in store.list_callbacks()}


def test_prune_unlinks_what_pointed_at_a_deleted_record(
    store: Store, clock: Clock, backend: Backend
) -> None:
    original = record(store, status="processed")
    store.save_suite_ticket("dk0001", "ticket-1", 100, callback_id=original.id)
    clock.advance(10)
    dup = record(
        store,
        msg_signature=original.msg_signature,
        timestamp=original.timestamp,
        nonce=original.nonce,
        content_key=original.content_key,
    )
    assert dup.duplicate_of == original.id
    clock.advance(100)
    record(store)  # the newest record is never pruned
    # Both older than the cutoff, only processed pruned: the duplicate stays, unlinked.
    assert store.prune_callbacks(before=T0 + 50, statuses=["processed"]) == {"processed": 1}
    assert store.get_callback(dup.id).duplicate_of is None
    assert store.latest_suite_ticket("dk0001") is not None
    assert backend.query("SELECT callback_id FROM suite_tickets") == [(None,)]


def test_prune_never_deletes_the_newest_record(store: Store, clock: Clock) -> None:
    """Ids only grow (``log tail --follow`` relies on it); SQLite would hand the newest
    record's id out again if it were deleted, so neither backend deletes it."""
    first = record(store, status="processed")
    newest = record(store, status="processed")
    clock.advance(10)
    assert store.prune_callbacks(before=clock(), statuses=["processed"]) == {"processed": 1}
    assert [r.id for r in store.list_callbacks()] == [newest.id]
    assert record(store).id > newest.id > first.id


def test_prune_goes_through_batches(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = __import__(type(store).__module__, fromlist=["PRUNE_BATCH"])
    monkeypatch.setattr(module, "PRUNE_BATCH", 4)
    for _ in range(4 * 3 + 2):
        record(store, status="processed")
    clock.advance(10)
    record(store, status="processed")
    assert store.prune_callbacks(before=clock(), statuses=["processed"]) == {"processed": 14}
    assert _rows(store) == 1


@pytest.mark.parametrize(
    ("statuses", "message"),
    [
        (["failed"], "failed records are kept until they are handled"),
        (["received"], "received records are kept until they are handled"),
        (["nonsense"], "unknown status 'nonsense'; prunable: processed"),
        ([], "name at least one status"),
    ],
)
def test_prune_refuses_unfinished_and_unknown_statuses(
    store: Store, statuses: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        store.prune_callbacks(before=T0, statuses=statuses)


def test_a_long_processing_error_is_cut_too(store: Store) -> None:
    """finish_callback keeps at most MAX_STORED_ERROR characters, as recording does."""
    rec = record(store)
    assert store.claim_callback(rec.id, "w") is not None
    store.finish_callback(rec.id, "failed", "y" * 100_000)
    got = store.get_callback(rec.id).last_error
    assert got is not None and len(got) == MAX_STORED_ERROR and got.endswith("…")
