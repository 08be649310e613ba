"""CallbackService through its public API: real Store, FakeWeCom over httpx.WSGITransport."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.config import AuthInstance, load_instances
from qywx_cli.core.errors import RecordNotFound, WeComAPIError
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.service import CallbackService, NotifyResponse
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import DEFAULT_LEASE_SECONDS, CallbackRecord, Store, claimants
from qywx_cli.core.store.records import FOLD_AFTER, MAX_CIPHERTEXT
from qywx_cli.core.wecom import WeComClient
from tests.helpers import encrypt_of

API = "http://fake.test/cgi-bin"
CORP = "wwa1b2c3d4e5f60a01"


class World:
    def __init__(self, auths: Path, db: Path, *, background: bool = False) -> None:
        self.fake = FakeWeCom()
        self.store = Store(db)
        self.client = WeComClient(
            self.store, base_url=API, transport=httpx.WSGITransport(app=self.fake)
        )
        self.instances = {i.name: i for i in load_instances(auths)}
        self.inst: AuthInstance = self.instances["QywxProxyCompanyA"]
        self.service = CallbackService(
            Settings(auths_dir=auths, db_path=db, api_base=API),
            store=self.store,
            client=self.client,
            instances=self.instances.values(),
            background=background,
        )
        self.nonce = 1000

    def envelope(self, xml: str, *, timestamp: int | None = None) -> dict[str, Any]:
        self.nonce += 1
        ts = str(int(time.time()) if timestamp is None else timestamp)
        env = self.inst.crypto().encrypt_msg(xml, self.inst.suite_id, ts, str(self.nonce))
        return {
            "msg_signature": env.msg_signature,
            "timestamp": env.timestamp,
            "nonce": env.nonce,
            "body": env.request_xml(self.inst.suite_id),
        }

    def event(self, name: str, corp: str | None = CORP, **overrides: str) -> str:
        return ev.build_event_xml(
            name, suite_id=self.inst.suite_id, corp_id=corp, overrides=overrides
        )

    def post(self, xml: str) -> NotifyResponse:
        return self.service.notify(**self.envelope(xml))

    def calls(self) -> dict[str, int]:
        state = httpx.Client(transport=httpx.WSGITransport(app=self.fake)).get(
            "http://fake.test/fake/state"
        )
        calls: dict[str, int] = state.json()["calls"]
        return calls

    def authorized(self) -> None:
        assert self.post(self.event("suite_ticket")).text == "success"
        assert self.post(self.event("create_auth")).text == "success"


@pytest.fixture
def world(auths: Path, tmp_path: Path) -> Iterator[World]:
    w = World(auths, tmp_path / "qywx.db")
    yield w
    w.service.close()


def status_of(world: World, response: NotifyResponse) -> str:
    assert response.record_id is not None
    return world.store.get_callback(response.record_id).status


# -- each event ------------------------------------------------------------------------------


def test_the_events_finished_on_record_are_exactly_those_without_a_handler(
    world: World,
) -> None:
    """notify decides "processed now or a worker's job" from a set kept beside the
    handler tables; the two must name the same events."""
    from qywx_cli.core import service as svc

    assert set(world.service._handlers()) == svc._HANDLED
    assert set(world.service._system_handlers()) == svc._SYSTEM_HANDLED


def test_suite_ticket_is_stored_for_its_suite(world: World) -> None:
    xml = world.event("suite_ticket", SuiteTicket="ticket-abcdefgh-0001")
    response = world.post(xml)
    assert (response.status, response.text) == (200, "success")
    assert status_of(world, response) == "processed"
    ticket = world.store.latest_suite_ticket(world.inst.suite_id)
    assert ticket is not None and ticket.ticket == "ticket-abcdefgh-0001"


def test_create_auth_stores_the_permanent_code_and_warms_the_corp_token(world: World) -> None:
    world.authorized()
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.is_active and auth.permanent_code
    assert auth.agent_id is not None and auth.corp_name
    assert world.store.get_token("corp", CORP) is not None
    # The stored code is the one WeCom issued: it buys an app token.
    assert world.client.corp_token(CORP, auth.permanent_code)


def test_change_auth_refreshes_what_the_corp_granted(world: World) -> None:
    world.authorized()
    world.store.upsert_corp_auth(world.inst.suite_id, CORP, corp_name="stale name")
    response = world.post(world.event("change_auth"))
    assert status_of(world, response) == "processed"
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.corp_name != "stale name"
    # one v2/get_auth_info after create_auth (v2 lists no agent), one for change_auth
    assert world.calls()["service/v2/get_auth_info"] == 2
    assert world.calls()["agent/get"] == 2  # the publish status is read again too


def test_change_auth_for_a_corp_never_authorized_fails_clearly(world: World) -> None:
    world.post(world.event("suite_ticket"))
    response = world.post(world.event("change_auth", corp="wwnever00000000001"))
    record = world.store.get_callback(response.record_id)  # type: ignore[arg-type]
    assert record.status == "failed"
    assert "no permanent code" in (record.last_error or "")


def test_cancel_auth_forgets_the_secret_and_the_token(world: World) -> None:
    world.authorized()
    response = world.post(world.event("cancel_auth"))
    assert status_of(world, response) == "processed"
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.state == "cancelled" and auth.permanent_code is None
    assert world.store.get_token("corp", CORP) is None


def test_reset_permanent_code_replaces_the_secret(world: World) -> None:
    world.authorized()
    old = world.store.get_corp_auth(CORP, world.inst.suite_id).permanent_code  # type: ignore[union-attr]
    response = world.post(world.event("reset_permanent_code"))
    assert status_of(world, response) == "processed"
    new = world.store.get_corp_auth(CORP, world.inst.suite_id).permanent_code  # type: ignore[union-attr]
    assert new and new != old
    world.store.drop_tokens("corp", CORP)
    with pytest.raises(WeComAPIError) as info:
        world.client.corp_token(CORP, old)  # type: ignore[arg-type]
    assert info.value.errcode == 40001
    assert world.client.corp_token(CORP, new)


def test_change_contact_is_recorded_without_api_calls(world: World) -> None:
    response = world.post(world.event("change_contact"))
    assert status_of(world, response) == "processed"
    assert world.calls() == {}


def test_an_unknown_info_type_is_logged_as_unknown(world: World) -> None:
    response = world.post(world.event("suite_ticket", InfoType="something_new"))
    assert response.text == "success"
    record = world.store.get_callback(response.record_id)  # type: ignore[arg-type]
    assert (record.status, record.info_type, record.attempts) == ("unknown", "something_new", 0)


def test_url_handshake_answers_the_plaintext(world: World) -> None:
    crypt = world.inst.crypto()
    echostr = crypt.encrypt("1616140317555161061", world.inst.corp_id or "")
    sig = crypt.sign("1409659589", "263014780", echostr)
    response = world.service.notify(
        msg_signature=sig, timestamp="1409659589", nonce="263014780", echostr=echostr
    )
    assert (response.status, response.body) == (200, b"1616140317555161061")
    record = world.store.get_callback(response.record_id)  # type: ignore[arg-type]
    assert (record.kind, record.status) == ("verify", "processed")


@pytest.mark.parametrize("age", [0, 3 * 86400])
def test_a_callback_sent_as_a_handshake_is_refused_not_decrypted(world: World, age: int) -> None:
    """A captured POST's Encrypt, signature, timestamp and nonce verify as a GET too (one
    signature covers both); echoing its plaintext would give away the suite ticket."""
    args = world.envelope(
        world.event("suite_ticket", SuiteTicket="ticket-never-shown"),
        timestamp=int(time.time()) - age,
    )
    encrypt = args.pop("body").split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    response = world.service.notify(**args, echostr=encrypt)
    assert response.status == 403 and response.record_id is None
    assert b"ticket-never-shown" not in response.body and b"<xml" not in response.body
    assert b"not a handshake" in response.body
    assert world.store.list_callbacks() == []


def test_bad_signature_is_refused_and_not_logged(world: World) -> None:
    args = world.envelope(world.event("suite_ticket"))
    args["msg_signature"] = "0" * 40
    response = world.service.notify(**args)
    assert response.status == 403 and response.record_id is None
    assert world.store.list_callbacks() == []


def test_stale_timestamp_is_logged_rejected(world: World) -> None:
    args = world.envelope(world.event("suite_ticket"), timestamp=int(time.time()) - 3600)
    response = world.service.notify(**args)
    assert 400 <= response.status < 500
    record = world.store.get_callback(response.record_id)  # type: ignore[arg-type]
    assert record.status == "rejected" and "stale" in (record.last_error or "")
    assert world.service.retry(record.id).ran is False


# -- dedupe ----------------------------------------------------------------------------------


def test_replay_and_redelivery_are_acknowledged_but_not_rerun(world: World) -> None:
    world.post(world.event("suite_ticket"))
    xml = world.event("create_auth")
    args = world.envelope(xml)
    first = world.service.notify(**args)
    assert status_of(world, first) == "processed"
    replay = world.service.notify(**args)
    assert (replay.status, replay.text, status_of(world, replay)) == (200, "success", "duplicate")
    assert replay.outcome == "duplicate: replay"
    redelivery = world.post(xml)  # same plaintext, fresh encryption and signature
    assert (redelivery.status, redelivery.text) == (200, "success")
    record = world.store.get_callback(redelivery.record_id)  # type: ignore[arg-type]
    assert (record.status, record.duplicate_of) == ("duplicate", first.record_id)
    assert world.calls()["service/v2/get_permanent_code"] == 1


# -- bounded storage ---------------------------------------------------------------------------


def test_the_record_keeps_the_signed_ciphertext_not_the_padded_body(world: World) -> None:
    """Only Encrypt is signed: padding around it is never stored, on the original or on
    its replays and stale copies, and retry decrypts the stored ciphertext again."""
    args = world.envelope(world.event("suite_ticket", SuiteTicket="ticket-padded-0001"))
    encrypt = encrypt_of(args["body"])
    args["body"] = args["body"].replace("</xml>", " " * 500_000 + "</xml>")
    first = world.service.notify(**args)
    assert (first.status, first.text) == (200, "success")
    replay = world.service.notify(**args)
    stale = world.envelope(world.event("suite_ticket"), timestamp=int(time.time()) - 3600)
    stale["body"] = stale["body"].replace("</xml>", " " * 500_000 + "</xml>")
    refused = world.service.notify(**stale)
    assert refused.status == 403
    for response, ciphertext in (
        (first, encrypt),
        (replay, encrypt),
        (refused, encrypt_of(stale["body"])),
    ):
        assert response.record_id is not None
        assert world.store.get_callback(response.record_id).envelope == ciphertext
    assert first.record_id is not None
    rerun = world.service.retry(first.record_id, force=True)
    assert rerun.ran and rerun.record.status == "processed" and rerun.record.attempts == 2


def test_an_encrypt_longer_than_any_callback_is_refused_and_not_logged(world: World) -> None:
    args = world.envelope(world.event("suite_ticket"))
    huge = "A" * (MAX_CIPHERTEXT + 4)
    args["body"] = args["body"].replace(encrypt_of(args["body"]), huge)
    response = world.service.notify(**args)
    assert response.status == 400 and "longer than 128 KiB" in response.text
    assert world.store.list_callbacks() == []


def test_a_flood_of_stale_copies_costs_a_few_rows(world: World) -> None:
    for _ in range(FOLD_AFTER + 10):
        args = world.envelope(world.event("suite_ticket"), timestamp=int(time.time()) - 3600)
        assert world.service.notify(**args).status == 403
    rows = world.store.list_callbacks()
    assert len(rows) == FOLD_AFTER and sum(r.folded for r in rows) == 10


def test_retention_prunes_finished_records_by_the_setting(
    world: World, auths: Path, tmp_path: Path
) -> None:
    world.post(world.event("suite_ticket"))
    assert world.service.apply_retention() is None  # not configured: nothing is pruned
    later = CallbackService(
        Settings(auths_dir=auths, db_path=tmp_path / "qywx.db", api_base=API, retention_days=7),
        store=world.store,
        client=world.client,
        instances=world.instances.values(),
        background=False,
        now=lambda: time.time() + 8 * 86400,
    )
    world.post(world.event("suite_ticket"))  # the newest record is always kept
    report = later.apply_retention()
    assert report is not None and report.deleted == {"processed": 1}
    assert len(world.store.list_callbacks()) == 1


def test_failed_record_is_rerun_after_the_fault_clears(world: World) -> None:
    world.post(world.event("suite_ticket"))
    world.fake.inject_fault("get_permanent_code", errcode=40084)
    response = world.post(world.event("create_auth"))
    assert response.text == "success"  # acknowledged before the handler ran
    failed = world.store.get_callback(response.record_id)  # type: ignore[arg-type]
    assert failed.status == "failed" and "40084" in (failed.last_error or "")
    outcome = world.service.retry(failed.id)
    assert outcome.ran and outcome.record.status == "processed"
    assert (outcome.record.attempts, outcome.record.last_error) == (2, None)
    assert world.store.get_corp_auth(CORP, world.inst.suite_id) is not None


def test_processed_records_rerun_only_with_force(world: World) -> None:
    response = world.post(world.event("suite_ticket"))
    skipped = world.service.retry(response.record_id)  # type: ignore[arg-type]
    assert (skipped.ran, skipped.record.attempts) == (False, 1)
    assert "already processed" in skipped.reason
    forced = world.service.retry(response.record_id, force=True)  # type: ignore[arg-type]
    assert (forced.ran, forced.record.status, forced.record.attempts) == (True, "processed", 2)


def test_retry_of_an_unknown_record_names_it(world: World) -> None:
    with pytest.raises(RecordNotFound, match="no callback record with id 77"):
        world.service.retry(77)


def test_background_workers_handle_and_drain(auths: Path, tmp_path: Path) -> None:
    w = World(auths, tmp_path / "bg.db", background=True)
    try:
        w.service.start()
        responses = [w.post(w.event("suite_ticket")) for _ in range(5)]
        assert all(r.text == "success" for r in responses)
        w.service.drain()
        assert {status_of(w, r) for r in responses} == {"processed"}
    finally:
        w.service.close()


def test_create_auth_names_its_corp_and_a_retry_never_respends_the_auth_code(
    world: World,
) -> None:
    """The corp token call fails after the code exchange: the retry must not exchange again."""
    assert world.post(world.event("suite_ticket")).text == "success"
    world.fake.inject_fault("gettoken", errcode=-1, count=1)
    assert world.post(world.event("create_auth")).text == "success"
    rec = world.store.list_callbacks(info_type="create_auth")[0]
    assert rec.status == "failed" and "-1" in (rec.last_error or "")
    assert rec.corp_id == CORP  # learnt from get_permanent_code, so `log list --corp` finds it
    assert world.calls().get("service/v2/get_permanent_code") == 1
    assert world.service.retry(rec.id).record.status == "processed"
    assert world.calls().get("service/v2/get_permanent_code") == 1  # AuthCode is single use
    assert world.store.get_token("corp", CORP) is not None


def test_retry_skip_reason_matches_retry(world: World) -> None:
    world.authorized()
    done = world.store.list_callbacks(info_type="create_auth")[0]
    reason = CallbackService.retry_skip_reason(done)
    assert "already processed" in reason
    assert world.service.retry(done.id).reason == reason
    assert CallbackService.retry_skip_reason(done, force=True) == ""


def _service(
    db: Path,
    auths: Path,
    inst: AuthInstance,
    clock: list[float],
    *,
    background: bool = True,
    rescan_interval: float | None = None,
    **settings: Any,
) -> CallbackService:
    """A service on ``db`` at the test's clock, talking to an in-process FakeWeCom."""
    store = Store(db, now=lambda: clock[0])
    return CallbackService(
        Settings(auths_dir=auths, db_path=db, api_base=API, **settings),
        store=store,
        client=WeComClient(store, base_url=API, transport=httpx.WSGITransport(app=FakeWeCom())),
        instances=[inst],
        now=lambda: clock[0],
        background=background,
        rescan_interval=rescan_interval,
    )


def _held_by_a_dead_worker(
    auths: Path,
    db: Path,
    clock: list[float],
    *,
    nonce: str,
    content_key: str,
    worker: str = "a-worker-that-was-killed",
) -> tuple[AuthInstance, CallbackRecord]:
    """A suite_ticket of QywxProxyCompanyA recorded in ``db`` and claimed by a worker
    that then died (nobody renews its lease)."""
    inst = next(i for i in load_instances(auths) if i.name == "QywxProxyCompanyA")
    env = inst.crypto().encrypt_msg(
        ev.build_event_xml("suite_ticket", suite_id=inst.suite_id),
        inst.suite_id,
        str(int(clock[0])),
        nonce,
    )
    with Store(db, now=lambda: clock[0]) as store:
        rec = store.record_callback(
            instance=inst.name,
            kind="command",
            info_type="suite_ticket",
            suite_id=inst.suite_id,
            corp_id=None,
            msg_signature=env.msg_signature,
            timestamp=env.timestamp,
            nonce=env.nonce,
            envelope=env.request_xml(inst.suite_id),
            content_key=content_key,
        )
        assert store.claim_callback(rec.id, worker) is not None
    return inst, rec


def test_a_dead_workers_claim_is_swept_up_once_its_lease_lapses(
    auths: Path, tmp_path: Path
) -> None:
    """No restart needed: the running service re-queues a record whose claimant died."""
    clock = [time.time()]
    db = tmp_path / "sweep.db"
    inst, rec = _held_by_a_dead_worker(auths, db, clock, nonce="77", content_key="k")
    service = _service(db, auths, inst, clock, rescan_interval=0.05)
    store = service.store
    try:
        assert service.start() == 0  # still held: not resumed at start
        retried = service.retry(rec.id)
        lease = int(DEFAULT_LEASE_SECONDS)
        assert not retried.ran and f"claim expires in {lease} s" in retried.reason
        clock[0] += lease + 1  # the dead worker's lease lapses (nobody renews it)
        deadline = time.monotonic() + 10
        while store.get_callback(rec.id).status != "processed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get_callback(rec.id).status == "processed"
    finally:
        service.close()


def _name_of_an_ended_process() -> str:
    """The worker name of a process that ran here, has exited and been reaped."""
    code = "from qywx_cli.core.store import claimants; print(claimants.worker_name('0ld', 3))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_claim_of_a_process_that_ended_on_this_machine_is_run_at_once(
    auths: Path, tmp_path: Path
) -> None:
    """A worker of a process that has ended here (killed, say) leaves its records to the
    next sweep, not to the lease; one of a live process keeps its claim. The clock
    stands still and the lease is an hour, so only the process check can free it."""
    if claimants.process_mark() is None:
        pytest.skip("no /proc here: claims wait for their lease")
    ended = _name_of_an_ended_process()
    alive = claimants.worker_name("11ve", 5)  # this process
    clock = [time.time()]
    db = tmp_path / "ended.db"
    inst, orphan = _held_by_a_dead_worker(
        auths, db, clock, nonce="81", content_key="ended", worker=ended
    )
    _, kept = _held_by_a_dead_worker(auths, db, clock, nonce="82", content_key="kept", worker=alive)
    service = _service(db, auths, inst, clock, lease_seconds=3600.0)
    store = service.store
    # Ended processes are looked for every 3 s; the full rescan, which also re-runs
    # transient failures, keeps the lease's pace, so their back-off is not shortened.
    assert (service.takeover_interval, service.rescan_interval) == (3.0, 1080.0)
    try:
        assert service.start() == 1  # the ended process's record, resumed
        service.drain()
        assert store.get_callback(orphan.id).status == "processed"
        still = store.get_callback(kept.id)
        assert (still.status, still.claimed_by) == ("received", alive)
        assert service.release_ended_claims() == 0
    finally:
        service.close()


def test_retry_runs_a_record_whose_claimant_ended_here_without_waiting_for_the_lease(
    auths: Path, tmp_path: Path
) -> None:
    """``qywx retry`` on a record a killed process still claims: it used to say "its
    claim expires in 10 s"; the process has ended here, so it runs now. A live claimant
    is still waited for."""
    if claimants.process_mark() is None:
        pytest.skip("no /proc here: claims wait for their lease")
    clock = [time.time()]
    db = tmp_path / "retry.db"
    inst, orphan = _held_by_a_dead_worker(
        auths, db, clock, nonce="84", content_key="retry", worker=_name_of_an_ended_process()
    )
    alive = claimants.worker_name("11ve", 6)
    _, kept = _held_by_a_dead_worker(auths, db, clock, nonce="85", content_key="live", worker=alive)
    service = _service(db, auths, inst, clock, background=False)
    store = service.store
    try:
        done = service.retry(orphan.id)
        assert done.ran and done.record.status == "processed"
        held = service.retry(kept.id)
        assert not held.ran and "claim expires in 10 s" in held.reason
        assert store.get_callback(kept.id).claimed_by == alive
    finally:
        service.close()


def test_a_claimant_written_outside_qywx_is_left_to_its_lease_and_stops_nothing(
    auths: Path, tmp_path: Path
) -> None:
    """A ``claimed_by`` of bytes (a row edited by hand: SQLite takes any type) killed the
    sweeper thread and made ``serve`` and ``retry`` exit 70. It is no process to judge:
    its record waits for the lease, and an ended process's claim beside it is still
    taken back."""
    import sqlite3

    clock = [time.time()]
    db = tmp_path / "odd.db"
    inst, odd = _held_by_a_dead_worker(auths, db, clock, nonce="86", content_key="odd")
    _, orphan = _held_by_a_dead_worker(
        auths, db, clock, nonce="87", content_key="orphan", worker=_name_of_an_ended_process()
    )
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE callbacks SET claimed_by = x'41' WHERE id = ?", (odd.id,))
    conn.close()
    service = _service(db, auths, inst, clock, lease_seconds=3600.0)
    try:
        assert service.start() == 1  # the orphan; the odd one is held
        service.drain()
        assert service.store.get_callback(orphan.id).status == "processed"
        held = service.retry(odd.id)
        assert not held.ran and "claim expires in 3600 s" in held.reason
        assert service.release_ended_claims() == 0
    finally:
        service.close()


def test_same_host_takeover_off_leaves_an_ended_process_claim_to_its_lease(
    auths: Path, tmp_path: Path
) -> None:
    """qywx.toml's ``same_host_takeover = false`` (machines cloned from one snapshot)."""
    ended = _name_of_an_ended_process()
    clock = [time.time()]
    db = tmp_path / "off.db"
    inst, rec = _held_by_a_dead_worker(
        auths, db, clock, nonce="83", content_key="off", worker=ended
    )
    service = _service(db, auths, inst, clock, same_host_takeover=False, background=False)
    store = service.store
    try:
        assert service.release_ended_claims() == 0
        assert store.get_callback(rec.id).claimed_by == ended
        assert not service.retry(rec.id).ran  # held until the lease lapses
        clock[0] += DEFAULT_LEASE_SECONDS + 1
        assert service.retry(rec.id).record.status == "processed"
    finally:
        service.close()


def test_a_shorter_lease_from_the_settings_hands_a_dead_workers_claim_over_sooner(
    auths: Path, tmp_path: Path
) -> None:
    """qywx.toml's lease_seconds replaces the 10 s default for claiming, for the wait
    ``retry`` reports, and for the renewal and sweep intervals (the same share of it)."""
    clock = [time.time()]
    db = tmp_path / "lease.db"
    inst, rec = _held_by_a_dead_worker(auths, db, clock, nonce="79", content_key="lease")
    service = _service(db, auths, inst, clock, lease_seconds=4.0, background=False)
    try:
        assert (service.lease_seconds, service.rescan_interval) == (4.0, 1.2)
        clock[0] += 3
        held = service.retry(rec.id)
        assert not held.ran and "claim expires in 1 s" in held.reason
        clock[0] += 1.5  # past the 4 s lease, well within the default 10 s
        done = service.retry(rec.id)
        assert done.ran and done.record.status == "processed"
    finally:
        service.close()


def test_an_auth_code_spent_by_a_killed_attempt_fails_with_what_names_the_install(
    auths: Path, tmp_path: Path
) -> None:
    """WeCom completed the exchange for a worker that died before storing the answer:
    the re-run after the lease meets 40078. The record is failed with the recovery
    step, says an earlier attempt spent the code, and names the authorization link's
    state (create_auth carries no corp id); /healthz counts it at once."""
    from qywx_cli.core.service import RECOVERY_40078

    clock = [time.time()]
    db = tmp_path / "spent.db"
    inst = next(i for i in load_instances(auths) if i.name == "QywxProxyCompanyA")
    fake = FakeWeCom()
    auth_code = f"AUTHCODE-{CORP}-spentbyakilledworker"
    xml = ev.build_event_xml(
        "create_auth",
        suite_id=inst.suite_id,
        overrides={"AuthCode": auth_code, "State": "cust42"},
    )
    env = inst.crypto().encrypt_msg(xml, inst.suite_id, str(int(clock[0])), "78")
    store = Store(db, now=lambda: clock[0])
    client = WeComClient(store, base_url=API, transport=httpx.WSGITransport(app=fake))
    store.save_suite_ticket(inst.suite_id, "ticket-for-the-spent-test", int(clock[0]))
    rec = store.record_callback(
        instance=inst.name,
        kind="command",
        info_type="create_auth",
        suite_id=inst.suite_id,
        corp_id=None,
        msg_signature=env.msg_signature,
        timestamp=env.timestamp,
        nonce=env.nonce,
        envelope=env.request_xml(inst.suite_id),
        content_key="spent",
    )
    assert store.claim_callback(rec.id, "a-worker-that-was-killed") is not None
    # ...which had sent the AuthCode: WeCom exchanged it, the answer died with the worker.
    client.get_permanent_code(inst.suite_id, inst.suite_secret, auth_code)
    service = CallbackService(
        Settings(auths_dir=auths, db_path=db, api_base=API),
        store=store,
        client=client,
        instances=[inst],
        now=lambda: clock[0],
        background=False,
    )
    try:
        clock[0] += DEFAULT_LEASE_SECONDS + 1
        assert service.healthcheck()["installs_need_recovery"] == 0  # reused for 5 s...
        done = service.retry(rec.id)
        assert done.ran and done.record.status == "failed"
        error = done.record.last_error or ""
        assert RECOVERY_40078 in error
        assert "attempt 2: an earlier attempt had sent this AuthCode" in error
        assert "state 'cust42'" in error and "transient" not in error
        assert auth_code not in error
        assert service.installs_need_recovery() == 1
        assert service.healthcheck()["installs_need_recovery"] == 1  # ...but not this
    finally:
        service.close()


@pytest.mark.parametrize("lead", ["", "\r\n"])
def test_a_failed_record_written_by_schema_v5_is_retried_after_the_migration(
    auths: Path, tmp_path: Path, lead: str
) -> None:
    """v5 kept the whole XML body; v6 keeps its Encrypt value. A record failed under v5
    is retried from what the migration left, with the signature still matching."""
    import sqlite3

    from qywx_cli.core.store.sqlite import MIGRATIONS

    db = tmp_path / "qywx.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for step in MIGRATIONS[:5]:
        step(conn)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("COMMIT")
    inst = {i.name: i for i in load_instances(auths)}["QywxProxyCompanyA"]
    xml = ev.build_event_xml("create_auth", suite_id=inst.suite_id, corp_id=CORP)
    env = inst.crypto().encrypt_msg(xml, inst.suite_id, str(int(time.time())), "n5")
    body = lead + env.request_xml(inst.suite_id).replace("</xml>", " " * 5000 + "</xml>")
    conn.execute(
        "INSERT INTO callbacks (id, received_at, instance, kind, info_type, suite_id, "
        "corp_id, msg_signature, timestamp, nonce, envelope, content_key, status, attempts, "
        "last_error) VALUES (1, ?, ?, 'command', 'create_auth', ?, ?, ?, ?, ?, ?, 'k5', "
        "'failed', 1, 'errcode 40084')",
        (
            time.time() - 60,
            inst.name,
            inst.suite_id,
            CORP,
            env.msg_signature,
            env.timestamp,
            env.nonce,
            body,
        ),
    )
    conn.close()
    world = World(auths, db)
    try:
        stored = world.store.get_callback(1)
        assert stored.envelope == encrypt_of(env.request_xml(inst.suite_id))
        world.post(world.event("suite_ticket"))
        outcome = world.service.retry(1)
        assert outcome.ran and outcome.record.status == "processed", outcome.record.last_error
        assert world.store.get_corp_auth(CORP, world.inst.suite_id) is not None
    finally:
        world.service.close()


_LAZY_CLIENT_PROBE = """
import json, sys
from pathlib import Path
from qywx_cli.core.service import CallbackService
from qywx_cli.core.settings import load_settings
from tests.helpers import WeComRequests

auths, db = Path(sys.argv[1]), Path(sys.argv[2])
settings = load_settings(auths=auths, db=db, env={})
with CallbackService(settings, background=False) as service:
    push = WeComRequests(service.instances["QywxProxyTemp"]).suite_ticket("ticket-1")
    answer = service.notify(**push.query, body=push.body, instance="QywxProxyTemp")
    loaded = lambda: sorted(m for m in ("httpx", "qywx_cli.core.wecom") if m in sys.modules)
    before = loaded()
    same = service.client is service.client
    print(json.dumps([answer.status, answer.body.decode(), before, loaded(), same]))
"""


def test_a_service_loads_the_wecom_client_only_when_an_event_needs_wecom(
    auths: Path, tmp_path: Path
) -> None:
    """A server whose callbacks are suite_tickets never loads httpx or the API families
    (a third of ``qywx serve``'s start-up CPU); the first use builds one client, kept.
    A fresh interpreter, so what this test process imported does not count."""
    import json
    import subprocess
    import sys

    from tests.helpers import REPO, qywx_env

    done = subprocess.run(
        [sys.executable, "-c", _LAZY_CLIENT_PROBE, str(auths), str(tmp_path / "qywx.db")],
        env=qywx_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status, body, before, after, same = json.loads(done.stdout)
    assert (status, body) == (200, "success")
    assert before == []
    assert after == ["httpx", "qywx_cli.core.wecom"]
    assert same is True


@pytest.mark.parametrize(
    ("window", "probed"),
    [
        (5.0, [True, False, False, True]),
        (2.0, [True, False, True, False]),
        (0.0, [True, True, True, True]),
    ],
)
def test_healthz_reuses_its_write_probe_for_health_probe_seconds(
    auths: Path, tmp_path: Path, window: float, probed: list[bool]
) -> None:
    """Each write probe is one commit, seen by another connection as a new data_version;
    within ``health_probe_seconds`` of the last one /healthz reuses its verdict."""
    import sqlite3

    from tests.helpers import Clock

    db = tmp_path / "probe.db"
    clock = Clock(time.time())
    store = Store(db, now=clock)
    service = CallbackService(
        Settings(auths_dir=auths, db_path=db, api_base=API, health_probe_seconds=window),
        store=store,
        instances=load_instances(auths),
        now=clock,
        background=False,
    )
    watcher = sqlite3.connect(db, isolation_level=None)
    seen = []
    try:
        for step in (0.0, 1.0, 3.9, 1.2):  # at 0, 1, 4.9 and 6.1 s
            clock.advance(step)
            before = watcher.execute("PRAGMA data_version").fetchone()[0]
            assert service.healthcheck()["writable"] is True
            seen.append(watcher.execute("PRAGMA data_version").fetchone()[0] != before)
    finally:
        watcher.close()
        service.close()
    assert seen == probed
