"""kill -9 while an installation's AuthCode is being exchanged.

Real ``qywx serve`` processes on loopback on one SQLite file (or, for a second host
taking over, one PostgreSQL database too), and a FakeWeCom served by the test.
The fake *holds* the create_auth's ``service/v2/get_permanent_code`` and says so in
``/fake/state``; the server is killed with SIGKILL exactly then, never after a guessed
sleep. Then the restarted server (or a second server on the same database, already
running) takes the record over at once, because the killed process has ended (the lease
is 10 minutes here, so nothing else could hand it over; each taker logs why it did).

What WeCom did with the AuthCode decides the only two right endings:

* WeCom never completed the exchange (the held call dropped): the code is still good,
  so the installation is stored with its permanent code, with no operator;
* WeCom completed it (held *after* the exchange, or released after the kill): the
  single-use code is spent and its answer died with the process. No API gives a
  permanent code back (get_auth_info needs one), so the record is ``failed`` with the
  recovery step (reset the Secret → reset_permanent_code), counted by ``/healthz`` and
  shown by ``qywx log``; never ``received`` for ever, never ``processed`` without a code.

One more point is made exact on PostgreSQL: the answer already in our process, its
commit waiting on a lock the test holds (visible in pg_stat_activity).

Also here: transient WeCom faults on the exchange heal with no ``qywx retry`` (even when
the host that met them was killed), an answer lost on a live connection ends in the
recovery step rather than a retry loop, and an exchange slower than any other call is
waited for instead of given up on.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.service import RECOVERY_40078
from qywx_cli.core.store import CallbackRecord, Store
from tests.e2e.conftest import LONG_LEASE_SECONDS, TOOK_BACK, Proc, short_lease, wait_for
from tests.e2e.test_hardening import Edge
from tests.helpers import http_client, qywx_env, run_qywx

V2 = "service/v2/get_permanent_code"
CORP = "wwkillexchange01"


class World(Edge):
    """The hardening suite's server and fake, plus the host(s) that take over."""

    def __init__(self, root: Path, db_url: str | None = None) -> None:
        short_lease(root)  # quick sweeps (1.2 s) for the retry tests' first server
        super().__init__(root, db_url=db_url)
        self.others: list[Proc] = []

    def start_host(self) -> Proc:
        """A server that takes over: it would wait 10 minutes for a lease to lapse, so
        only the killed process having ended can hand a claim to it."""
        short_lease(self.root, LONG_LEASE_SECONDS)
        host = Proc(["serve", "--port", "0", "--threads", "4"], self.env, self.root)
        self.others.append(host)
        return host

    def close(self) -> None:
        try:
            _control(self, "release", {})  # nothing left held in the fake
            for host in self.others:
                host.stop()
        finally:
            super().close()


@pytest.fixture
def edge(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    """On SQLite, or (``indirect`` param "postgresql") on a fresh PostgreSQL database."""
    backend = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    world = World(tmp_path, url)
    yield world
    world.close()


def _control(edge: Edge, name: str, body: dict[str, object]) -> dict[str, object]:
    with http_client() as client:
        answer = client.post(f"{edge.fake.url}/cgi-bin/fake/{name}", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def _fake_state(edge: Edge) -> dict[str, Any]:
    return edge.fake.state()


def _install_then_kill(edge: World, stage: str, takeover: str) -> Proc:
    """Acknowledge a create_auth, kill the server while the fake holds its exchange at
    ``stage``; return the process that is to take over (restarted, or a second host)."""
    edge.post(*edge.signed())  # a suite_ticket first: the exchange needs a suite token
    assert wait_for(lambda: [r.status for r in edge.records()] == ["processed"], timeout=15)
    _control(edge, "holds", {"api": V2, "stage": stage})
    xml = ev.build_event_xml("create_auth", suite_id=edge.suite_id, corp_id=CORP)
    answer = edge.post(*edge.signed(xml))
    assert (answer.status, answer.body) == (200, b"success")  # acknowledged...
    # ...and now in flight at WeCom: the fake itself says the call arrived.
    assert wait_for(lambda: _fake_state(edge)["held"] == {V2: 1}, timeout=15)
    # A second host is running before the kill: it sees the claim held and leaves it.
    second = edge.start_host() if takeover == "second host" else None
    edge.server.stop(signal.SIGKILL)
    assert edge.server.popen.returncode == -signal.SIGKILL
    rec = next(r for r in edge.records() if r.info_type == "create_auth")
    assert rec.status == "received" and rec.claimed_by  # claimed by the dead worker
    return second if second is not None else edge.start_host()


def _settled(edge: Edge) -> CallbackRecord | None:
    rec = next(r for r in edge.records() if r.info_type == "create_auth")
    return rec if rec.status != "received" else None


@pytest.mark.parametrize(
    ("edge", "takeover"),
    [("sqlite", "restart"), ("sqlite", "second host"), ("postgresql", "second host")],
    ids=["restart", "second-host", "second-host-postgresql"],
    indirect=["edge"],
)
def test_killed_before_wecom_answered_the_install_completes_by_itself(
    edge: World, takeover: str
) -> None:
    """The held call is dropped: WeCom never spent the code. The next worker exchanges
    it and the corp is installed, permanent code stored."""
    host = _install_then_kill(edge, "before", takeover)
    assert _control(edge, "release", {"api": V2, "drop": True})["released"] == 1
    rec = wait_for(lambda: _settled(edge), timeout=45, interval=0.2)
    assert rec is not None, [(r.status, r.last_error) for r in edge.records()]
    assert wait_for(lambda: TOOK_BACK in host.log), host.log
    assert rec.status == "processed" and rec.last_error is None
    with Store(edge.target) as store:
        auth = store.get_corp_auth(CORP, edge.suite_id)
    assert auth is not None and auth.permanent_code and auth.state == "active"
    state = _fake_state(edge)
    assert [p["corp_id"] for p in state["permanent_codes"]] == [CORP]
    assert state["calls"][V2] == 2
    assert "Traceback" not in host.log


@pytest.mark.parametrize(
    ("edge", "stage", "takeover"),
    [
        ("sqlite", "after", "restart"),
        ("sqlite", "after", "second host"),
        ("postgresql", "after", "second host"),
        ("sqlite", "before", "restart"),
    ],
    ids=[
        "answered-restart",
        "answered-second-host",
        "answered-second-host-postgresql",
        "completed-after-kill-restart",
    ],
    indirect=["edge"],
)
def test_killed_after_wecom_completed_the_record_fails_with_the_recovery_step(
    edge: World, stage: str, takeover: str
) -> None:
    """WeCom completed the exchange (held ``after`` it, or let go after the kill and
    completed then) and the answer died with the process: the re-run meets 40078, and
    the record is ``failed`` with the way back, shown by ``/healthz`` and ``qywx log``."""
    host = _install_then_kill(edge, stage, takeover)
    assert _control(edge, "release", {"api": V2})["released"] == 1  # answers a dead socket
    rec = wait_for(lambda: _settled(edge), timeout=45, interval=0.2)
    assert rec is not None, [(r.status, r.last_error) for r in edge.records()]
    assert wait_for(lambda: TOOK_BACK in host.log), host.log
    assert rec.status == "failed"
    error = rec.last_error or ""
    assert RECOVERY_40078 in error and "transient" not in error
    # WeCom issued the permanent code; none was stored: the loss is explicit, not silent.
    state = _fake_state(edge)
    assert [p["corp_id"] for p in state["permanent_codes"]] == [CORP]
    with Store(edge.target) as store:
        assert store.get_corp_auth(CORP, edge.suite_id) is None
    assert state["calls"][V2] == 2

    def counted() -> bool:
        with http_client() as client:
            doc = client.get(f"{host.url}/healthz").json()
        return bool(doc.get("installs_need_recovery") == 1)

    assert wait_for(counted, timeout=20, interval=0.5)
    shown = run_qywx("log", "show", str(rec.id), "-f", "json", env=edge.env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["status"] == "failed" and "reset_permanent_code" in json.dumps(
        doc, ensure_ascii=False
    )
    listed = run_qywx("log", "list", "--status", "failed", env=edge.env)
    assert listed.returncode == 0 and str(rec.id) in listed.stdout
    assert "Traceback" not in host.log


# -- transient faults heal without `qywx retry` -----------------------------------------


def _create_auth(edge: World) -> int:
    """Acknowledge one create_auth for CORP (after a suite_ticket); its record id."""
    edge.post(*edge.signed())
    xml = ev.build_event_xml("create_auth", suite_id=edge.suite_id, corp_id=CORP)
    answer = edge.post(*edge.signed(xml))
    assert (answer.status, answer.body) == (200, b"success")
    return int(next(r.id for r in edge.records() if r.info_type == "create_auth"))


def _record(edge: World, record_id: int) -> CallbackRecord:
    with Store(edge.target) as store:
        return store.get_callback(record_id)


@pytest.mark.parametrize(
    "fault",
    [{"errcode": 45009}, {"errcode": 45033}, {"http_status": 503}],
    ids=["rate-limited", "concurrency-limited", "http-503"],
)
def test_transient_faults_on_the_exchange_heal_by_themselves(
    edge: World, fault: dict[str, int]
) -> None:
    """WeCom's rate limits and a 5xx page, twice: the server runs the install again
    with back-off while the AuthCode lives; nobody runs ``qywx retry``."""
    _control(edge, "faults", {"api": V2, "count": 2, **fault})
    record_id = _create_auth(edge)
    assert wait_for(lambda: _record(edge, record_id).status == "processed", timeout=40)
    rec = _record(edge, record_id)
    assert rec.attempts == 3 and rec.last_error is None
    with Store(edge.target) as store:
        auth = store.get_corp_auth(CORP, edge.suite_id)
    assert auth is not None and auth.permanent_code
    assert _fake_state(edge)["calls"][V2] == 3


def test_a_transient_failure_left_by_a_killed_host_heals_on_the_next(edge: World) -> None:
    """WeCom keeps answering -1; the record is ``failed`` with a retry pending on a timer
    that dies with the host. The next host's sweep finds it (failed, transient, AuthCode
    still valid) and runs it once WeCom answers again."""
    _control(edge, "faults", {"api": V2, "errcode": -1, "count": 1000})
    record_id = _create_auth(edge)
    assert wait_for(lambda: _record(edge, record_id).status == "failed", timeout=20)
    assert "retried automatically" in (_record(edge, record_id).last_error or "")
    edge.server.stop(signal.SIGKILL)
    with http_client() as client:
        assert client.delete(f"{edge.fake.url}/cgi-bin/fake/faults").status_code == 200
    host = edge.start_host()
    assert wait_for(lambda: _record(edge, record_id).status == "processed", timeout=30)
    with Store(edge.target) as store:
        assert store.get_corp_auth(CORP, edge.suite_id) is not None
    assert "Traceback" not in host.log


def test_an_answer_lost_on_the_way_ends_in_the_recovery_step_not_a_loop(edge: World) -> None:
    """WeCom completed the exchange and its answer never arrived (dropped after the
    exchange: HTTP 503 on a live connection). The server takes it for transient and
    tries again, meets 40078, and stops there: failed with the recovery step, which says
    an earlier attempt had sent the code."""
    _control(edge, "holds", {"api": V2, "stage": "after"})
    record_id = _create_auth(edge)
    assert wait_for(lambda: _fake_state(edge)["held"] == {V2: 1}, timeout=15)
    assert _control(edge, "release", {"api": V2, "drop": True})["released"] == 1

    def recovery() -> bool:
        rec = _record(edge, record_id)
        return rec.status == "failed" and RECOVERY_40078 in (rec.last_error or "")

    assert wait_for(recovery, timeout=30)
    error = _record(edge, record_id).last_error or ""
    assert "an earlier attempt had sent this AuthCode" in error and "transient" not in error
    assert _fake_state(edge)["calls"][V2] == 2


# -- a slow WeCom -------------------------------------------------------------------------


def test_slow_apis_are_set_at_start_with_an_option(tmp_path: Path) -> None:
    fake = Proc(
        [
            "fake-wecom",
            "--port",
            "0",
            "--slow",
            "get_permanent_code=1.5",
            "--slow",
            "gettoken@after=0.5",
        ],
        qywx_env(),
        tmp_path,
    )
    try:
        with http_client() as client:
            state = client.get(f"{fake.url}/cgi-bin/fake/state").json()
        assert state["delays"] == {f"{V2}@before": 1.5, "gettoken@after": 0.5}
    finally:
        fake.stop()


def test_an_exchange_slower_than_every_other_call_is_waited_for(edge: World) -> None:
    """WeCom takes 6 s to answer get_permanent_code, longer than the 5 s any other call
    waits. Giving up would lose the installation (the code is spent on arrival; the
    re-run meets 40078), so the exchange waits for its answer: installed, first try."""
    _control(edge, "slow", {"api": V2, "seconds": 6})
    record_id = _create_auth(edge)
    assert wait_for(lambda: _record(edge, record_id).status != "received", timeout=40)
    rec = _record(edge, record_id)
    assert (rec.status, rec.attempts, rec.last_error) == ("processed", 1, None)
    assert _fake_state(edge)["calls"][V2] == 1


def test_stopping_the_fake_drops_held_and_delayed_calls(tmp_path: Path) -> None:
    """SIGTERM with a call held and another delayed 100 s: the held one is dropped (503),
    the delayed one answered at once, and the fake exits cleanly instead of leaving
    waitress waiting on their threads."""
    import threading

    fake = Proc(["fake-wecom", "--port", "0", "--slow", "gettoken=100"], qywx_env(), tmp_path)
    answers: list[int] = []
    try:
        with http_client() as client:
            client.post(f"{fake.url}/cgi-bin/fake/holds", json={"api": V2}).raise_for_status()

        def call(method: str, api: str) -> None:
            with http_client(timeout=60) as client:
                answers.append(client.request(method, f"{fake.url}/cgi-bin/{api}").status_code)

        calls = [
            threading.Thread(target=call, args=("POST", V2), daemon=True),
            threading.Thread(target=call, args=("GET", "gettoken?corpid=a&corpsecret=b")),
        ]
        for t in calls:
            t.start()

        def waiting() -> bool:
            with http_client() as client:
                state = client.get(f"{fake.url}/cgi-bin/fake/state").json()
            return bool(state["held"] == {V2: 1} and state["calls"].get("gettoken") == 1)

        assert wait_for(waiting, timeout=15)
    finally:
        code = fake.stop()
    for t in calls:
        t.join(30)
    assert code == 0 and sorted(answers) == [200, 503], (code, answers, fake.log)
    assert "still running" not in fake.log


# -- WeCom answered, the commit had not happened ------------------------------------------


@pytest.mark.parametrize("edge", ["postgresql"], indirect=True)
def test_killed_with_the_answer_in_hand_and_its_commit_waiting(edge: World) -> None:
    """The narrowest window, made exact: WeCom's answer reached ``qywx serve`` and the
    transaction storing the permanent code is waiting for a lock the test holds on the
    tokens table (its first statement drops the corp's old token), which PostgreSQL
    shows in pg_stat_activity. Killed then, the transaction never commits; the re-run
    meets 40078 and the record is failed with the recovery step, naming the attempt."""
    import psycopg

    _control(edge, "holds", {"api": V2, "stage": "after"})
    record_id = _create_auth(edge)
    assert wait_for(lambda: _fake_state(edge)["held"] == {V2: 1}, timeout=15)
    with psycopg.connect(edge.target) as lock:
        lock.execute("LOCK TABLE tokens IN EXCLUSIVE MODE")  # reads pass, writes wait
        assert _control(edge, "release", {"api": V2})["released"] == 1  # the answer goes out

        def commit_waiting() -> bool:
            with psycopg.connect(edge.target, autocommit=True) as probe:
                row = probe.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'DELETE FROM tokens%'"
                ).fetchone()
            return bool(row and row[0] == 1)

        assert wait_for(commit_waiting, timeout=15, interval=0.1)
        edge.server.stop(signal.SIGKILL)
        lock.rollback()  # the dead client's transaction gets its lock, then no COMMIT
    host = edge.start_host()
    rec = wait_for(lambda: _settled(edge), timeout=45, interval=0.2)
    assert rec is not None and rec.id == record_id
    assert wait_for(lambda: TOOK_BACK in host.log), host.log
    error = rec.last_error or ""
    assert rec.status == "failed" and RECOVERY_40078 in error, error
    assert "an earlier attempt had sent this AuthCode" in error
    with Store(edge.target) as store:
        assert store.get_corp_auth(CORP, edge.suite_id) is None
    assert [p["corp_id"] for p in _fake_state(edge)["permanent_codes"]] == [CORP]
    assert "Traceback" not in host.log
