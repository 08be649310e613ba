"""The store contract: every test here runs on every backend (see conftest.py).

Real databases only: a SQLite file in tmp_path and a fresh database on a real
PostgreSQL server; several connections, threads and processes where the contract
speaks of them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from qywx_cli.core.errors import (
    ConflictError,
    QywxError,
    RecordNotFound,
    StoreError,
    UsageError,
)
from qywx_cli.core.store import (
    NONE_LABEL,
    SUITE_TICKET_HISTORY,
    TICKET_PRUNE_EVERY,
    CachedToken,
    CallbackRecord,
    Store,
    SuiteTicket,
)
from qywx_cli.core.store.records import MAX_CIPHERTEXT
from qywx_cli.core.store.rules import RETRYING_MARK
from tests.core.store.conftest import T0, Backend, callback_fields
from tests.core.store.conftest import make_record as record
from tests.helpers import Clock


def test_closed_store_refuses_work(backend: Backend) -> None:
    s = backend.open()
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.list_callbacks()


# -- recording and dedupe ----------------------------------------------------------------


def test_recorded_callback_is_committed_before_return(store: Store, backend: Backend) -> None:
    rec = record(store, corp_id="wwcorp", status="received")
    assert rec.status == "received" and rec.attempts == 0 and not rec.is_duplicate
    assert rec.received_at == T0
    with backend.open() as other:  # a second connection sees it at once
        assert other.get_callback(rec.id) == rec


def _kill_after_recording(path: str) -> None:  # pragma: no cover - runs in a child process
    s = Store(path)
    s.record_callback(
        instance="QywxProxyTemp",
        kind="command",
        info_type="create_auth",
        suite_id="dk1",
        corp_id=None,
        msg_signature="s",
        timestamp="1",
        nonce="n",
        envelope="<xml/>",
        content_key="k",
    )
    os.kill(os.getpid(), signal.SIGKILL)


def test_recorded_callback_survives_kill_minus_nine(backend: Backend) -> None:
    backend.open().close()
    child = multiprocessing.get_context("spawn").Process(
        target=_kill_after_recording, args=(backend.target,)
    )
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    with backend.open() as s:
        [rec] = s.list_callbacks()
    assert (rec.info_type, rec.status, rec.envelope) == ("create_auth", "received", "<xml/>")


def test_byte_identical_replay_is_a_duplicate(store: Store) -> None:
    first = record(store, msg_signature="s1", timestamp="100", nonce="n1", content_key="c1")
    again = record(store, msg_signature="s1", timestamp="100", nonce="n1", content_key="c1")
    assert (again.status, again.duplicate_of, again.duplicate_reason) == (
        "duplicate",
        first.id,
        "replay",
    )
    assert again.is_duplicate and again.id != first.id
    assert store.get_callback(again.id) == again
    # Same signature in another instance is a different request.
    other = record(
        store, instance="Other", msg_signature="s1", timestamp="100", nonce="n1", content_key="x"
    )
    assert other.status == "received"


def test_content_redelivery_is_a_duplicate_pointing_at_the_original(store: Store) -> None:
    first = record(store, content_key="same-plaintext")
    second = record(store, content_key="same-plaintext")
    third = record(store, content_key="same-plaintext")
    assert (second.status, second.duplicate_of, second.duplicate_reason) == (
        "duplicate",
        first.id,
        "content",
    )
    assert third.duplicate_of == first.id
    no_key = [record(store, content_key=None) for _ in range(2)]
    assert [r.status for r in no_key] == ["received", "received"]


def test_rejected_requests_are_never_deduplicated_nor_originals(store: Store) -> None:
    bad = dict(msg_signature="sx", timestamp="5", nonce="nx", content_key=None)
    r1 = record(store, status="rejected", last_error="signature mismatch (-40001)", **bad)
    r2 = record(store, status="rejected", last_error="signature mismatch (-40001)", **bad)
    assert (r1.status, r2.status) == ("rejected", "rejected")
    assert r2.duplicate_of is None and r2.last_error == "signature mismatch (-40001)"
    ok = record(store, **bad)
    assert ok.status == "received" and ok.duplicate_of is None


def test_what_record_callback_returns_is_what_was_stored(store: Store) -> None:
    """The returned record is every column as stored, whatever the verdict: a backend may
    build it from what it wrote instead of reading the row back."""
    first = record(store, msg_signature="sa", timestamp="7", nonce="na", content_key="ca")
    other = record(store, content_key="cb")
    returned = [
        first,
        other,
        record(store, status="processed", suite_ticket=("dk0001", "ticket-1", 1_700_000_000)),
        record(store, status="unknown", info_type=None),
        # a replay decrypts to its original's content: both checks hit, the replay wins
        record(store, msg_signature="sa", timestamp="7", nonce="na", content_key="ca"),
        record(store, content_key="cb"),
        record(store, status="processed", content_key="ca"),  # a duplicate is not handled
        record(store, status="rejected", last_error="bad (-40001)", content_key=None),
    ]
    assert [(r.status, r.duplicate_of, r.duplicate_reason) for r in returned[4:]] == [
        ("duplicate", first.id, "replay"),
        ("duplicate", other.id, "content"),
        ("duplicate", first.id, "content"),
        ("rejected", None, None),
    ]
    assert (returned[2].attempts, returned[2].processed_at) == (1, returned[2].received_at)
    assert (returned[6].attempts, returned[6].processed_at) == (0, None)
    for rec in returned:
        assert store.get_callback(rec.id) == rec


def test_a_batch_of_records_is_what_each_call_would_have_given(store: Store) -> None:
    """``record_callbacks``: each request's record or refusal, in order. A refused one
    fails alone, and a repeat later in the same batch is a duplicate of the earlier."""
    first = callback_fields(msg_signature="sb", timestamp="8", nonce="nb", content_key="cx")
    batch = [
        first,
        callback_fields(envelope="x" * (MAX_CIPHERTEXT + 1)),  # refused before any SQL
        dict(first),  # the byte-identical replay, in the same batch
        callback_fields(status="processed", suite_ticket=("dk0001", "ticket-b", 1_700_000_001)),
        callback_fields(status="rejected", last_error="bad (-40001)", content_key=None),
    ]
    results = store.record_callbacks(batch)
    assert len(results) == len(batch)
    assert isinstance(results[1], UsageError)
    written = [r for r in results if isinstance(r, CallbackRecord)]
    assert [r.status for r in written] == ["received", "duplicate", "processed", "rejected"]
    assert written[1].duplicate_of == written[0].id
    assert written[1].duplicate_reason == "replay"
    for rec in written:
        assert store.get_callback(rec.id) == rec
    assert store.record_callbacks([]) == []


def test_a_request_the_database_cannot_hold_fails_alone_in_a_batch(store: Store) -> None:
    """A value beyond a 64-bit column (a ticket time of 2**64) met only while writing:
    that request gets a one-line StoreError, the others in its batch are written."""
    batch = [
        callback_fields(),
        callback_fields(status="processed", suite_ticket=("dk0001", "ticket-x", 2**64)),
        callback_fields(status="processed", suite_ticket=("dk0001", "ticket-y", 1_700_000_002)),
    ]
    results = store.record_callbacks(batch)
    assert len(results) == 3
    assert isinstance(results[1], StoreError) and "\n" not in results[1].message
    assert isinstance(results[0], CallbackRecord) and isinstance(results[2], CallbackRecord)
    assert [r.id for r in store.list_callbacks()] == [results[2].id, results[0].id]
    ticket = store.latest_suite_ticket("dk0001")
    assert ticket is not None and ticket.ticket == "ticket-y"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "event"}, "kind"),
        ({"status": "duplicate"}, "status"),
        ({"status": "done"}, "status"),
        ({"instance": ""}, "instance"),
    ],
)
def test_record_rejects_bad_arguments(
    store: Store, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        record(store, **overrides)


def test_get_unknown_callback(store: Store) -> None:
    with pytest.raises(RecordNotFound, match="no callback record with id 42"):
        store.get_callback(42)


# -- claims ------------------------------------------------------------------------------


def test_claim_lease_force_and_finish(store: Store, clock: Clock) -> None:
    rec = record(store)
    claimed = store.claim_callback(rec.id, "w1", lease_seconds=60)
    assert claimed is not None
    assert (claimed.claimed_by, claimed.claimed_at, claimed.attempts) == ("w1", T0, 1)
    assert store.claim_callback(rec.id, "w2", lease_seconds=60) is None
    again = store.claim_callback(rec.id, "w1", lease_seconds=60)
    assert again is not None and again.attempts == 2
    clock.advance(61)
    stolen = store.claim_callback(rec.id, "w2", lease_seconds=60)
    assert stolen is not None and stolen.claimed_by == "w2" and stolen.attempts == 3

    clock.advance(1)
    store.finish_callback(rec.id, "failed", "WeCom errcode 40085: invalid suite ticket")
    failed = store.get_callback(rec.id)
    assert (failed.status, failed.last_error, failed.processed_at) == (
        "failed",
        "WeCom errcode 40085: invalid suite ticket",
        T0 + 62,
    )
    assert failed.claimed_by is None and failed.claimed_at is None

    retried = store.claim_callback(rec.id, "w3")
    assert retried is not None and retried.attempts == 4
    store.finish_callback(rec.id, "processed")
    done = store.get_callback(rec.id)
    assert done.status == "processed" and done.last_error is None
    assert store.claim_callback(rec.id, "w3") is None
    forced = store.claim_callback(rec.id, "w3", force=True)
    assert forced is not None and forced.attempts == 5


def test_an_automatic_claim_takes_a_failed_record_only_while_its_retry_is_pending(
    store: Store,
) -> None:
    """The server's own runs (queue, retry timer, sweep) claim with ``automatic``: a record
    failed for good stays for the operator, one failed with the retry mark is taken, and
    a refused claim counts no attempt. The check is part of the claim, so a run queued
    twice cannot take a record that another run failed for good a moment before."""
    waiting = record(store)
    claimed = store.claim_callback(waiting.id, "w1", automatic=True)
    assert claimed is not None and claimed.attempts == 1

    retrying = record(store)
    store.claim_callback(retrying.id, "w1")
    store.finish_callback(retrying.id, "failed", f"WeCom errcode -1: busy{RETRYING_MARK}")
    again = store.claim_callback(retrying.id, "w2", automatic=True)
    assert again is not None and again.claimed_by == "w2" and again.attempts == 2

    store.finish_callback(retrying.id, "failed", "WeCom errcode 40078: code already used")
    assert store.claim_callback(retrying.id, "w3", automatic=True) is None
    left = store.get_callback(retrying.id)
    assert (left.status, left.attempts, left.claimed_by) == ("failed", 2, None)
    # The operator's `qywx retry` (not automatic) still takes it.
    operator = store.claim_callback(retrying.id, "operator")
    assert operator is not None and operator.attempts == 3

    # A mark in the middle of the error is not a pending retry.
    store.finish_callback(retrying.id, "failed", f"x{RETRYING_MARK} then failed for good")
    assert store.claim_callback(retrying.id, "w4", automatic=True) is None


def test_duplicates_and_rejected_are_never_claimable(store: Store) -> None:
    first = record(store, content_key="c")
    dup = record(store, content_key="c")
    bad = record(store, status="rejected")
    for rec in (dup, bad):
        assert store.claim_callback(rec.id, "w", force=True) is None
    assert store.claim_callback(first.id, "w") is not None


def test_claim_and_finish_errors(store: Store) -> None:
    with pytest.raises(RecordNotFound):
        store.claim_callback(999, "w")
    with pytest.raises(RecordNotFound):
        store.finish_callback(999, "processed")
    rec = record(store)
    with pytest.raises(UsageError):
        store.finish_callback(rec.id, "duplicate")
    with pytest.raises(UsageError):
        store.claim_callback(rec.id, "")


def test_pending_callbacks_are_unclaimed_received_oldest_first(store: Store, clock: Clock) -> None:
    a = record(store)
    clock.advance(10)
    b = record(store)
    clock.advance(10)
    c = record(store)
    record(store, status="rejected")
    record(store, content_key=c.content_key)  # duplicate
    finished = record(store)
    store.claim_callback(finished.id, "w")
    store.finish_callback(finished.id, "processed")
    assert [r.id for r in store.pending_callbacks()] == [a.id, b.id, c.id]
    assert [r.id for r in store.pending_callbacks(limit=2)] == [a.id, b.id]
    assert [r.id for r in store.pending_callbacks(older_than=5)] == [a.id, b.id]

    store.claim_callback(b.id, "crashed-worker", lease_seconds=300)
    assert [r.id for r in store.pending_callbacks()] == [a.id, c.id]
    clock.advance(301)
    assert [r.id for r in store.pending_callbacks()] == [a.id, b.id, c.id]
    assert [r.id for r in store.pending_callbacks(lease_seconds=600)] == [a.id, c.id]
    with pytest.raises(UsageError):
        store.pending_callbacks(limit=0)


def _drain(store: Store, ids: list[int], worker: str, claimed: Any) -> list[int]:
    """Try to claim everything, wait for every worker to have tried, then finish.

    Finishing only after all workers have tried every id means a second claim could not
    be refused merely because the record was already processed: the claim itself must
    exclude the others.
    """
    mine = [id for id in ids if store.claim_callback(id, worker) is not None]
    claimed.wait()
    for id in mine:
        store.finish_callback(id, "processed")
    return mine


def test_eight_threads_process_each_callback_exactly_once(
    store: Store, backend: Backend, clock: Clock
) -> None:
    ids = [record(store).id for _ in range(120)]
    barrier = threading.Barrier(8)
    claimed = threading.Barrier(8)
    results: dict[str, list[int]] = {}
    # Half the threads share the fixture's Store (one connection behind a lock), half open
    # their own connection, so both the lock and SQLite's locking are exercised.
    own = [backend.open(now=clock) for _ in range(4)]

    def work(name: str, s: Store) -> None:
        barrier.wait()
        results[name] = _drain(s, ids, name, claimed)

    threads = [
        threading.Thread(target=work, args=(f"t{i}", own[i // 2] if i % 2 else store))
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in own:
        s.close()
    handled = Counter(id for mine in results.values() for id in mine)
    assert len(results) == 8
    assert handled == Counter(ids)
    assert {store.get_callback(id).attempts for id in ids} == {1}
    assert {store.get_callback(id).status for id in ids} == {"processed"}


def _process_worker(
    path: str, name: str, ids: list[int], start: Any, out: Any
) -> None:  # pragma: no cover - runs in a child process
    with Store(path) as s:
        start.wait()
        out.put((name, _drain(s, ids, name, start)))


def test_two_processes_process_each_callback_exactly_once(backend: Backend) -> None:
    with backend.open() as s:
        ids = [record(s).id for _ in range(150)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_process_worker, args=(backend.target, f"p{i}", ids, start, out))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    handled = Counter(id for mine in results.values() for id in mine)
    assert handled == Counter(ids)
    with backend.open() as s:
        assert {s.get_callback(id).attempts for id in ids} == {1}


# -- suite tickets and tokens -----------------------------------------------------------


def test_latest_ticket_is_the_one_with_the_greatest_wecom_timestamp(
    store: Store, clock: Clock
) -> None:
    assert store.latest_suite_ticket("dk1") is None
    store.save_suite_ticket("dk1", "ticket-200", 200)
    clock.advance(5)
    store.save_suite_ticket("dk1", "ticket-100", 100)  # an older push delivered late
    store.save_suite_ticket("dk2", "other-suite", 999)
    assert store.latest_suite_ticket("dk1") == SuiteTicket("dk1", "ticket-200", 200, T0)
    store.save_suite_ticket("dk1", "ticket-300", 300)
    latest = store.latest_suite_ticket("dk1")
    assert latest is not None and latest.ticket == "ticket-300"
    assert store.latest_suite_ticket("dk2") == SuiteTicket("dk2", "other-suite", 999, T0 + 5)


def test_ticket_history_is_pruned_and_saving_twice_is_idempotent(
    store: Store, backend: Backend
) -> None:
    rec = record(store)
    saves = 3 * TICKET_PRUNE_EVERY + 5
    for ts in range(1, saves + 1):
        store.save_suite_ticket("dk1", f"t{ts}", ts, callback_id=rec.id)
    store.save_suite_ticket("dk1", f"t{saves}", saves)
    store.save_suite_ticket("dk2", "x", 1)
    rows = backend.query(
        "SELECT timestamp FROM suite_tickets WHERE suite_id = 'dk1' ORDER BY timestamp"
    )
    assert backend.query("SELECT count(*) FROM suite_tickets WHERE suite_id='dk2'") == [(1,)]
    kept = [r[0] for r in rows]
    # Pruned in steps: the newest SUITE_TICKET_HISTORY always stay, never many more.
    assert kept == list(range(saves + 1 - len(kept), saves + 1))
    assert SUITE_TICKET_HISTORY <= len(kept) < SUITE_TICKET_HISTORY + TICKET_PRUNE_EVERY
    assert store.latest_suite_ticket("dk1").ticket == f"t{saves}"  # type: ignore[union-attr]
    for ts in range(1, 4 * TICKET_PRUNE_EVERY):  # suites pushing in turn are each pruned
        for suite in ("dk3", "dk4"):
            store.save_suite_ticket(suite, f"{suite}-{ts}", ts)
    counts = dict(backend.query("SELECT suite_id, count(*) FROM suite_tickets GROUP BY 1"))
    assert all(n < SUITE_TICKET_HISTORY + TICKET_PRUNE_EVERY for n in counts.values()), counts


def test_token_expiry_follows_the_injected_clock(store: Store, clock: Clock) -> None:
    store.put_token("suite", "dk1", "suite-token-1", T0 + 7200)
    assert store.get_token("suite", "dk1") == CachedToken(
        "suite", "dk1", "suite-token-1", T0 + 7200
    )
    assert store.get_token("suite", "dk1", margin=300) is not None
    clock.advance(7000)
    assert store.get_token("suite", "dk1", margin=300) is None
    assert store.get_token("suite", "dk1") is not None
    clock.advance(200)
    assert store.get_token("suite", "dk1") is None
    store.put_token("suite", "dk1", "suite-token-2", clock() + 7200)
    token = store.get_token("suite", "dk1")
    assert token is not None and token.token == "suite-token-2"
    assert store.get_token("corp", "dk1") is None


def test_drop_tokens_filters_and_never_touches_suite_tickets(store: Store) -> None:
    store.save_suite_ticket("dk1", "the-ticket", 100)
    for kind, key in [("suite", "dk1"), ("corp", "ww1"), ("corp", "ww2"), ("provider", "ww1")]:
        store.put_token(kind, key, f"{kind}-{key}", T0 + 7200)
    assert store.drop_tokens("corp", "ww1") == 1
    assert store.get_token("corp", "ww2") is not None
    assert store.drop_tokens(key="ww1") == 1  # the provider token
    assert store.drop_tokens("corp") == 1
    assert store.drop_tokens() == 1
    assert store.drop_tokens() == 0
    ticket = store.latest_suite_ticket("dk1")
    assert ticket is not None and ticket.ticket == "the-ticket"


def test_secret_values_are_masked_in_reprs(store: Store) -> None:
    store.save_suite_ticket("dk1", "SuperSecretTicketValue", 1)
    store.put_token("corp", "ww1", "SuperSecretAccessToken", T0 + 10)
    auth = store.upsert_corp_auth("dk1", "ww1", permanent_code="SuperSecretPermanentCode")
    shown = repr(store.latest_suite_ticket("dk1")) + repr(store.get_token("corp", "ww1"))
    shown += repr(auth)
    assert "SuperSecret" not in shown
    assert "permanent_code='Sup***ode'" in shown


# -- corp auths --------------------------------------------------------------------------


def test_corp_auth_upsert_keeps_values_passed_as_none(store: Store, clock: Clock) -> None:
    created = store.upsert_corp_auth(
        "dk1",
        "wwA",
        permanent_code="pc-1",
        agent_id=1000002,
        corp_name="A Corp",
        auth_user_id="admin",
    )
    assert (created.state, created.created_at, created.updated_at) == ("active", T0, T0)
    assert created.is_active
    clock.advance(60)
    updated = store.upsert_corp_auth("dk1", "wwA", corp_name="A Corp Ltd")
    assert (updated.permanent_code, updated.agent_id, updated.auth_user_id) == (
        "pc-1",
        1000002,
        "admin",
    )
    assert (updated.corp_name, updated.created_at, updated.updated_at) == (
        "A Corp Ltd",
        T0,
        T0 + 60,
    )
    assert store.get_corp_auth("wwA", "dk1") == updated
    assert store.get_corp_auth("WWA") is None  # open corp ids are case sensitive (§2.3)
    with pytest.raises(UsageError):
        store.upsert_corp_auth("dk1", "wwA", state="paused")


def test_corp_auth_cancel_clears_secret_and_corp_tokens(store: Store, clock: Clock) -> None:
    store.upsert_corp_auth("dk1", "wwA", permanent_code="pc-1")
    store.upsert_corp_auth("dk1", "wwB", permanent_code="pc-2")
    store.put_token("corp", "wwA", "tok-A", T0 + 7200)
    store.put_token("corp", "wwB", "tok-B", T0 + 7200)
    store.save_suite_ticket("dk1", "ticket", 1)
    clock.advance(1)
    assert store.cancel_corp_auth("dk1", "wwA") is True
    assert store.cancel_corp_auth("dk1", "wwZ") is False
    cancelled = store.get_corp_auth("wwA", "dk1")
    assert cancelled is not None
    assert (cancelled.state, cancelled.permanent_code, cancelled.updated_at) == (
        "cancelled",
        None,
        T0 + 1,
    )
    assert store.get_token("corp", "wwA") is None
    assert store.get_token("corp", "wwB") is not None
    assert store.latest_suite_ticket("dk1") is not None
    assert [a.corp_id for a in store.list_corp_auths(state="active")] == ["wwB"]
    assert [a.corp_id for a in store.list_corp_auths("dk1")] == ["wwA", "wwB"]
    assert store.list_corp_auths("dk9") == []
    # Re-authorizing brings it back with a new secret.
    back = store.upsert_corp_auth("dk1", "wwA", permanent_code="pc-3")
    assert (back.state, back.permanent_code) == ("active", "pc-3")


def test_get_corp_auth_without_suite_prefers_the_active_one(store: Store, clock: Clock) -> None:
    store.upsert_corp_auth("dk1", "wwA", permanent_code="old")
    clock.advance(1)
    store.upsert_corp_auth("dk2", "wwA", permanent_code="new")
    clock.advance(1)
    store.cancel_corp_auth("dk2", "wwA")
    found = store.get_corp_auth("wwA")
    assert found is not None and found.suite_id == "dk1"
    assert store.get_corp_auth("nobody") is None


def test_cancel_and_a_new_secret_drop_the_corps_jsapi_tickets(store: Store) -> None:
    """JS-SDK tickets are per corp (jsapi_ticket) and per app (agent_ticket corp/agentid)."""
    store.upsert_corp_auth("dk1", "wwA", permanent_code="pc-1", agent_id=1000002)
    for kind, key in [
        ("jsapi_ticket", "wwA"),
        ("agent_ticket", "wwA/1000002"),
        ("jsapi_ticket", "wwAB"),
        ("agent_ticket", "wwAB/1000002"),
        ("provider", "wwA"),
    ]:
        store.put_token(kind, key, f"t-{kind}-{key}", T0 + 7200)
    store.cancel_corp_auth("dk1", "wwA")
    assert store.get_token("jsapi_ticket", "wwA") is None
    assert store.get_token("agent_ticket", "wwA/1000002") is None
    # A corp whose id merely starts with the same letters keeps its tickets.
    assert store.get_token("jsapi_ticket", "wwAB") is not None
    assert store.get_token("agent_ticket", "wwAB/1000002") is not None
    assert store.get_token("provider", "wwA") is not None
    store.put_token("jsapi_ticket", "wwA", "t-again", T0 + 7200)
    store.save_permanent_code("dk1", "wwA", "pc-2", callback_id=0)
    assert store.get_token("jsapi_ticket", "wwA") is None


def test_auth_link_is_recorded_then_linked_by_the_permanent_code(
    store: Store, clock: Clock
) -> None:
    link = store.save_auth_link(
        "st1", instance="Temp", suite_id="dk1", qrcode_url="https://q/1", expires_at=T0 + 864000
    )
    assert (link.state, link.corp_id, link.linked_at, link.created_at) == ("st1", None, None, T0)
    assert store.get_auth_link("st1") == link
    assert store.get_auth_link("ST1") is None  # states are compared exactly
    clock.advance(5)
    again = store.save_auth_link(
        "st1", instance="Temp", suite_id="dk1", qrcode_url="https://q/2", expires_at=T0 + 9
    )
    assert (again.qrcode_url, again.created_at, again.expires_at) == ("https://q/2", T0, T0 + 9)
    with pytest.raises(ConflictError, match="st1"):
        store.save_auth_link(
            "st1", instance="Other", suite_id="dk2", qrcode_url="https://q/3", expires_at=T0
        )
    clock.advance(5)
    auth = store.save_permanent_code("dk1", "wwA", "pc-1", callback_id=0, link_state="st1")
    assert auth.link_state == "st1"
    linked = store.get_auth_link("st1")
    assert linked is not None and (linked.corp_id, linked.linked_at) == ("wwA", T0 + 10)
    assert [x.state for x in store.list_auth_links(corp_id="wwA")] == ["st1"]
    # A reset (no state) keeps the link; a state of another template links nothing.
    reset = store.save_permanent_code("dk1", "wwA", "pc-2", callback_id=0)
    assert reset.link_state == "st1"
    store.save_auth_link(
        "st2", instance="Other", suite_id="dk2", qrcode_url="https://q/4", expires_at=T0
    )
    store.save_permanent_code("dk1", "wwB", "pc-3", callback_id=0, link_state="st2")
    other = store.get_auth_link("st2")
    assert other is not None and other.corp_id is None
    assert [x.state for x in store.list_auth_links()] == ["st2", "st1"]


def test_publish_status_is_recorded_without_touching_updated_at(store: Store, clock: Clock) -> None:
    created = store.upsert_corp_auth("dk1", "wwA", permanent_code="pc-1")
    assert (created.publish_status, created.publish_checked_at) == (None, None)
    clock.advance(30)
    status = store.set_publish_status("dk1", "wwA", 1)
    assert (status.publish_status, status.publish_checked_at) == (1, T0 + 30)
    assert status.updated_at == created.updated_at
    assert store.get_corp_auth("wwA", "dk1") == status
    with pytest.raises(RecordNotFound):
        store.set_publish_status("dk1", "wwNever", 2)


# -- org codes ---------------------------------------------------------------------------


def test_org_codes_are_case_insensitive_and_exclusive(store: Store, clock: Clock) -> None:
    first = store.set_org_code("AcMe_Corp-1", "wwA")
    assert (first.code, first.corp_id) == ("acme_corp-1", "wwA")
    assert store.get_org_code("ACME_CORP-1") == first
    clock.advance(5)
    same = store.set_org_code("acme_corp-1", "wwA")
    assert (same.created_at, same.updated_at) == (T0, T0 + 5)
    with pytest.raises(ConflictError) as err:
        store.set_org_code("ACME_corp-1", "wwB")
    assert err.value.code == "conflict"
    assert store.get_org_code("acme_corp-1").corp_id == "wwA"
    moved = store.set_org_code("acme_corp-1", "wwB", force=True)
    assert (moved.corp_id, moved.created_at) == ("wwB", T0)
    store.set_org_code("beta", "wwA")
    assert [(c.code, c.corp_id) for c in store.list_org_codes()] == [
        ("acme_corp-1", "wwB"),
        ("beta", "wwA"),
    ]
    with pytest.raises(RecordNotFound):
        store.get_org_code("gamma")


@pytest.mark.parametrize("code", ["", "a b", "x" * 65, "组织", "a/b", "a.b"])
def test_invalid_org_codes_are_usage_errors(store: Store, code: str) -> None:
    with pytest.raises(UsageError):
        store.set_org_code(code, "wwA")
    assert store.list_org_codes() == []


def test_org_code_length_limit_is_inclusive(store: Store) -> None:
    assert store.set_org_code("X" * 64, "wwA").code == "x" * 64


# -- login codes -------------------------------------------------------------------------


def test_login_code_is_single_use_and_expires(store: Store, clock: Clock) -> None:
    store.save_login_code(
        "h1", instance="QywxProxyTemp", corp_id="wwA", user_id="u1", expires_at=T0 + 300
    )
    store.save_login_code(
        "h2", instance="QywxProxyTemp", corp_id="wwA", user_id="u2", expires_at=T0 + 300
    )
    clock.advance(10)
    used = store.consume_login_code("h1")
    assert used is not None
    assert (used.user_id, used.corp_id, used.created_at, used.used_at) == ("u1", "wwA", T0, T0 + 10)
    assert store.consume_login_code("h1") is None
    assert store.consume_login_code("nope") is None
    clock.advance(300)
    assert store.consume_login_code("h2") is None
    with pytest.raises(StoreError):
        store.save_login_code("h1", instance="i", corp_id="c", user_id="u", expires_at=T0)


def test_login_code_race_has_one_winner(store: Store, backend: Backend, clock: Clock) -> None:
    store.save_login_code("race", instance="i", corp_id="c", user_id="u", expires_at=T0 + 60)
    stores = [backend.open(now=clock) for _ in range(8)]
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def attempt(s: Store) -> None:
        barrier.wait()
        wins.append(s.consume_login_code("race") is not None)

    threads = [threading.Thread(target=attempt, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert sorted(wins) == [False] * 7 + [True]


# -- listing and stats -------------------------------------------------------------------


@pytest.fixture
def log(store: Store, clock: Clock) -> dict[str, CallbackRecord]:
    """A small log: t0 ticket, t0+100 create_auth wwA, t0+200 failed cancel wwB, …"""
    recs: dict[str, CallbackRecord] = {}
    recs["ticket"] = record(store)
    clock.advance(100)
    recs["create"] = record(store, info_type="create_auth", corp_id="wwA")
    clock.advance(100)
    recs["cancel"] = record(store, info_type="cancel_auth", corp_id="wwB", instance="Other")
    store.claim_callback(recs["cancel"].id, "w")
    store.finish_callback(recs["cancel"].id, "failed", "corp not found")
    clock.advance(100)
    recs["verify"] = record(store, kind="verify", info_type=None, status="processed")
    recs["dup"] = record(store, content_key=recs["ticket"].content_key)
    recs["bad"] = record(store, info_type=None, status="rejected", last_error="bad signature")
    return recs


def _ids(records: list[CallbackRecord]) -> list[int]:
    return [r.id for r in records]


def test_list_filters_since_and_order(store: Store, log: dict[str, CallbackRecord]) -> None:
    every = [log[k].id for k in ("bad", "dup", "verify", "cancel", "create", "ticket")]
    assert _ids(store.list_callbacks()) == every
    assert _ids(store.list_callbacks(newest_first=False)) == every[::-1]
    assert _ids(store.list_callbacks(limit=2)) == every[:2]
    assert _ids(store.list_callbacks(status="failed")) == [log["cancel"].id]
    assert _ids(store.list_callbacks(info_type="suite_ticket")) == [log["dup"].id, log["ticket"].id]
    assert _ids(store.list_callbacks(corp_id="wwA")) == [log["create"].id]
    assert _ids(store.list_callbacks(instance="Other")) == [log["cancel"].id]
    assert _ids(store.list_callbacks(since=T0 + 200)) == every[:4]
    assert _ids(store.list_callbacks(since=T0 + 200, status="failed")) == [log["cancel"].id]
    assert store.list_callbacks(since=T0 + 301) == []
    assert store.list_callbacks(status="received", corp_id="wwB") == []
    failed = store.list_callbacks(status="failed")[0]
    assert (failed.last_error, failed.attempts) == ("corp not found", 1)
    with pytest.raises(UsageError):
        store.list_callbacks(limit=0)


def test_list_after_id_follows_the_log_oldest_first(
    store: Store, log: dict[str, CallbackRecord]
) -> None:
    start = log["create"].id
    assert _ids(store.list_callbacks(after_id=start)) == [
        log[k].id for k in ("cancel", "verify", "dup", "bad")
    ]
    assert _ids(store.list_callbacks(after_id=start, limit=2)) == [
        log["cancel"].id,
        log["verify"].id,
    ]
    assert _ids(store.list_callbacks(after_id=start, info_type="suite_ticket")) == [log["dup"].id]
    last = log["bad"].id
    assert store.list_callbacks(after_id=last) == []
    newer = record(store)
    assert _ids(store.list_callbacks(after_id=last)) == [newer.id]


def test_stats_count_by_status_event_and_error(
    store: Store, log: dict[str, CallbackRecord], clock: Clock
) -> None:
    store.save_suite_ticket("dk1", "t", 1)
    stats = store.callback_stats()
    assert stats.total == 6
    assert stats.by_status == {
        "received": 2,
        "failed": 1,
        "processed": 1,
        "duplicate": 1,
        "rejected": 1,
    }
    assert stats.by_event == {
        "suite_ticket": 2,
        "create_auth": 1,
        "cancel_auth": 1,
        NONE_LABEL: 2,
    }
    assert stats.failures_by_error == [("corp not found", 1)]
    assert stats.latest_suite_ticket_at == clock()

    windowed = store.callback_stats(since=T0 + 200)
    assert windowed.total == 4
    assert windowed.by_status == {"failed": 1, "processed": 1, "duplicate": 1, "rejected": 1}
    assert windowed.by_event == {"cancel_auth": 1, "suite_ticket": 1, NONE_LABEL: 2}
    assert store.callback_stats(since=T0 + 250).failures_by_error == []


def test_stats_of_an_empty_log(store: Store) -> None:
    stats = store.callback_stats()
    assert (stats.total, stats.by_status, stats.by_event) == (0, {}, {})
    assert stats.failures_by_error == [] and stats.latest_suite_ticket_at is None


def test_failures_are_grouped_by_error_most_common_first(store: Store) -> None:
    for error in ["e-timeout", "e-40085", "e-40085", None]:
        rec = record(store)
        store.claim_callback(rec.id, "w")
        store.finish_callback(rec.id, "failed", error)
    assert store.callback_stats().failures_by_error == [
        ("e-40085", 2),
        (NONE_LABEL, 1),
        ("e-timeout", 1),
    ]


def test_every_store_error_is_a_qywx_error() -> None:
    assert issubclass(StoreError, QywxError) and issubclass(ConflictError, QywxError)


def test_healthcheck_commits_a_write_and_reports_the_newest_ticket(backend: Backend) -> None:
    """The contract of /healthz: ok means a write committed just now; reads alone say
    nothing of that, so a read-only probe carries no verdict."""
    with backend.open() as s:
        health = s.healthcheck()
        assert (health["ok"], health["writable"], health["suite_ticket_at"]) == (True, True, None)
        s.save_suite_ticket("tj1234567890abcdef", "T" * 40, 1)
        reads = s.healthcheck(write=False)
        assert reads["ok"] is True and "writable" not in reads
        assert isinstance(reads["suite_ticket_at"], float)
    closed = backend.open()
    closed.close()
    assert closed.healthcheck() == {**closed.healthcheck(), "ok": False, "writable": False}


# -- several connections at once: what several hosts rely on -----------------------------


def _together(n: int, fn: Any) -> list[Any]:
    """Run ``fn(i)`` in n threads released at once; their results (or exceptions)."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_the_same_delivery_on_several_connections_at_once_has_one_original(
    backend: Backend, clock: Clock
) -> None:
    stores = [backend.open(now=clock) for _ in range(4)]
    try:
        for round_ in range(12):
            same = {
                "msg_signature": f"sig-race-{round_}",
                "timestamp": "1700000000",
                "nonce": f"n{round_}",
                "content_key": f"content-race-{round_}",
                "suite_ticket": ("dk1", f"ticket-{round_}", 1_700_000_000 + round_),
                "status": "processed",
            }
            recs = _together(4, lambda i, same=same: record(stores[i], **same))
            assert all(isinstance(r, CallbackRecord) for r in recs), recs
            originals = [r for r in recs if not r.is_duplicate]
            assert len(originals) == 1, [r.status for r in recs]
            assert {r.duplicate_of for r in recs if r.is_duplicate} == {originals[0].id}
        ticket = stores[0].latest_suite_ticket("dk1")
        assert ticket is not None and ticket.ticket == "ticket-11"
        assert backend.query("SELECT count(*) FROM suite_tickets") == [(12,)]
    finally:
        for s in stores:
            s.close()


def test_the_newest_ticket_wins_whatever_order_writers_commit_in(
    backend: Backend, clock: Clock
) -> None:
    stores = [backend.open(now=clock) for _ in range(6)]
    stamps = [1_700_000_300, 1_700_000_100, 1_700_000_600, 1_700_000_200, 1_700_000_500, 1]
    try:
        _together(6, lambda i: stores[i].save_suite_ticket("dk1", f"t{stamps[i]}", stamps[i]))
        latest = stores[0].latest_suite_ticket("dk1")
        assert latest is not None and latest.ticket == "t1700000600"
        stores[1].save_suite_ticket("dk1", "late-old-push", 1_700_000_000)
        assert stores[2].latest_suite_ticket("dk1").ticket == "t1700000600"  # type: ignore[union-attr]
    finally:
        for s in stores:
            s.close()


def test_a_claim_renewed_by_its_worker_is_kept_and_lapses_once_renewals_stop(
    store: Store, clock: Clock
) -> None:
    rec = record(store)
    assert store.claim_callback(rec.id, "w1", lease_seconds=10) is not None
    clock.advance(8)
    assert store.renew_claims([(rec.id, "w1")]) == 1
    clock.advance(8)  # 16 s after the claim, 8 after the renewal
    assert store.claim_callback(rec.id, "w2", lease_seconds=10) is None
    assert [r.id for r in store.pending_callbacks(lease_seconds=10)] == []
    clock.advance(3)  # renewals stopped (the host died): the lease lapses
    assert [r.id for r in store.pending_callbacks(lease_seconds=10)] == [rec.id]
    stolen = store.claim_callback(rec.id, "w2", lease_seconds=10)
    assert stolen is not None and stolen.claimed_by == "w2"
    assert store.renew_claims([(rec.id, "w1")]) == 0  # w1 no longer holds it
    assert store.renew_claims([]) == 0
    assert store.get_callback(rec.id).claimed_at == clock()


def test_held_claims_are_those_within_their_lease_and_a_release_drops_only_them(
    store: Store, clock: Clock
) -> None:
    lapsed, old_failure = record(store), record(store)
    store.claim_callback(lapsed.id, "w0", lease_seconds=10)
    clock.advance(6)
    held, free, done, new_failure, unknown = (record(store) for _ in range(5))
    for rec in (old_failure, new_failure):
        store.finish_callback(rec.id, "failed", "busy")
    store.finish_callback(unknown.id, "unknown")  # only an operator re-runs it: not listed
    store.claim_callback(unknown.id, "w1", lease_seconds=10)
    store.claim_callback(held.id, "w1", lease_seconds=10)
    store.claim_callback(done.id, "w1", lease_seconds=10)
    store.finish_callback(done.id, "processed")
    store.claim_callback(old_failure.id, "w2", lease_seconds=10)
    store.claim_callback(new_failure.id, "w2", lease_seconds=10)
    clock.advance(5)  # w0's claim (11 s old) has lapsed; the others are 5 s old
    assert store.held_claims(lease_seconds=10) == [(held.id, "w1")]
    window = new_failure.received_at
    assert store.held_claims(lease_seconds=10, failed_since=window) == [
        (held.id, "w1"),
        (new_failure.id, "w2"),
    ]
    assert store.held_claims(lease_seconds=10, failed_since=window, limit=1) == [(held.id, "w1")]
    assert store.get_callback(free.id).claimed_by is None  # an unclaimed record: not held

    # A pair whose worker no longer holds the record is left alone.
    assert store.release_claims([(held.id, "w9"), (new_failure.id, "w2"), (done.id, "w1")]) == 1
    assert store.release_claims([]) == 0
    after = store.get_callback(new_failure.id)
    assert (after.status, after.claimed_by, after.claimed_at) == ("failed", None, None)
    assert after.attempts == new_failure.attempts + 1 and after.last_error == "busy"
    assert store.held_claims(lease_seconds=10, failed_since=window) == [(held.id, "w1")]
    # Released, the record is claimable at once, within what would have been its lease.
    assert store.claim_callback(new_failure.id, "w3", lease_seconds=10) is not None
    assert store.claim_callback(held.id, "w3", lease_seconds=10) is None


def test_the_lease_keeper_renews_what_is_held_and_only_that(store: Store, clock: Clock) -> None:
    from qywx_cli.core.store.leases import LeaseKeeper

    a, b = record(store), record(store)
    for rec in (a, b):
        store.claim_callback(rec.id, "w1", lease_seconds=10)
    keeper = LeaseKeeper(store, every=3600)  # renewed by hand below, not by the clock
    try:
        with keeper.hold(a.id, "w1"):
            clock.advance(5)
            assert keeper.renew_now() == 1
            assert keeper.held == {a.id: "w1"}
        assert keeper.held == {}
        assert keeper.renew_now() == 0
    finally:
        keeper.close()
    assert store.get_callback(a.id).claimed_at == T0 + 5
    assert store.get_callback(b.id).claimed_at == T0


def test_token_refresh_is_single_flight_across_connections(backend: Backend, clock: Clock) -> None:
    stores = [backend.open(now=clock) for _ in range(6)]
    calls: list[int] = []
    store0 = stores[0]
    store0.save_suite_ticket("dk1", "the-ticket", 1)

    def refresh(i: int) -> str:
        s = stores[i]
        cached = s.get_token("suite", "dk1", margin=300)
        if cached is not None:
            return cached.token
        with s.token_lock("suite", "dk1"):
            cached = s.get_token("suite", "dk1", margin=300)
            if cached is not None:
                return cached.token
            calls.append(i)
            time.sleep(0.2)  # WeCom answering
            s.put_token("suite", "dk1", f"token-from-{i}", clock() + 7200)
            return f"token-from-{i}"

    try:
        tokens = _together(6, refresh)
        assert len(calls) == 1, calls
        assert set(tokens) == {f"token-from-{calls[0]}"}
        assert store0.latest_suite_ticket("dk1") is not None  # the ticket is untouched
    finally:
        for s in stores:
            s.close()


def test_an_org_code_raced_for_by_two_corps_goes_to_one(backend: Backend, clock: Clock) -> None:
    stores = [backend.open(now=clock) for _ in range(4)]
    try:
        for n in range(6):
            results = _together(4, lambda i, n=n: stores[i].set_org_code(f"Race-{n}", f"ww{i}"))
            won = [r for r in results if not isinstance(r, Exception)]
            assert len(won) == 1, results
            assert all(isinstance(r, ConflictError) for r in results if r not in won)
            assert stores[0].get_org_code(f"RACE-{n}").corp_id == won[0].corp_id
    finally:
        for s in stores:
            s.close()


def test_a_login_code_used_on_two_connections_at_once_works_once(
    backend: Backend, clock: Clock
) -> None:
    stores = [backend.open(now=clock) for _ in range(4)]
    try:
        for n in range(5):
            stores[0].save_login_code(
                f"h{n}", instance="i", corp_id="c", user_id="u", expires_at=T0 + 60
            )
            used = _together(4, lambda i, n=n: stores[i].consume_login_code(f"h{n}"))
            assert sum(u is not None for u in used) == 1, used
    finally:
        for s in stores:
            s.close()


def test_list_until_and_before_id_page_through_the_log(
    store: Store, log: dict[str, CallbackRecord]
) -> None:
    every = [log[k].id for k in ("bad", "dup", "verify", "cancel", "create", "ticket")]
    assert _ids(store.list_callbacks(until=T0 + 200)) == [log["create"].id, log["ticket"].id]
    assert _ids(store.list_callbacks(since=T0 + 100, until=T0 + 200)) == [log["create"].id]
    first = store.list_callbacks(limit=4)
    rest = store.list_callbacks(limit=4, before_id=first[-1].id)
    assert _ids(first) + _ids(rest) == every
    assert _ids(store.list_callbacks(before_id=log["create"].id)) == [log["ticket"].id]


def test_iter_callbacks_streams_the_window_oldest_first_in_batches(
    store: Store, log: dict[str, CallbackRecord]
) -> None:
    every = [log[k].id for k in ("ticket", "create", "cancel", "verify", "dup", "bad")]
    for batch in (1, 2, 5, 6, 1000):
        assert [r.id for r in store.iter_callbacks(batch=batch)] == every
    assert [r.id for r in store.iter_callbacks(since=T0 + 100, until=T0 + 300, batch=1)] == [
        log["create"].id,
        log["cancel"].id,
    ]
    walk = store.iter_callbacks(batch=2)
    assert next(walk).id == log["ticket"].id
    newer = record(store)  # written while the walk is paused between batches
    assert [r.id for r in walk][-1] == newer.id


def test_delete_org_code_returns_what_it_named_once(store: Store) -> None:
    store.set_org_code("Acme", "wwA")
    gone = store.delete_org_code("ACME")
    assert (gone.code, gone.corp_id) == ("acme", "wwA")
    with pytest.raises(RecordNotFound):
        store.get_org_code("acme")
    with pytest.raises(RecordNotFound):
        store.delete_org_code("acme")
    store.set_org_code("acme", "wwB")  # free again for any corp
    assert store.get_org_code("acme").corp_id == "wwB"
