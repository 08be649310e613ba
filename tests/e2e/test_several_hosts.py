"""Several ``qywx serve`` hosts on one PostgreSQL database, as behind a load balancer.

Real processes on loopback: two (or three) ``qywx serve`` on a fresh database on the
session's PostgreSQL server, and a FakeWeCom served by the test. Callbacks are built here with an
independent WXBizMsgCrypt (``tests.helpers``: the ``cryptography`` package and
hand-written XML), not with qywx's own code.
"""

from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qywx_cli.core.store import CallbackRecord, Store
from tests.e2e.conftest import Proc, http, short_lease, wait_for
from tests.helpers import (
    LoopbackWeCom,
    auth_config,
    independent_encrypt,
    loopback_fake,
    qywx_env,
    run_qywx,
    sha1_sign,
)
from tests.pgserver import PgServer

INSTANCE = "QywxProxyTemp"


@dataclass(frozen=True)
class Delivery:
    """One signed POST as WeCom sends it (the same object may be sent to several hosts)."""

    info_type: str
    params: dict[str, str]
    body: bytes
    corp_id: str | None = None


class Wecom:
    """Builds callbacks for one instance, independently of qywx."""

    def __init__(self, auths: Path) -> None:
        conf = auth_config(auths, INSTANCE)
        self.token, self.key, self.suite = conf["token"], conf["encodingAESKey"], conf["suiteId"]

    def seal(self, xml: str, info_type: str, corp_id: str | None = None) -> Delivery:
        encrypt = independent_encrypt(self.key, xml, self.suite)
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        body = (
            f"<xml><ToUserName><![CDATA[{self.suite}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>"
            f"<AgentID><![CDATA[]]></AgentID></xml>"
        )
        params = {
            "msg_signature": sha1_sign(self.token, timestamp, nonce, encrypt),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        return Delivery(info_type, params, body.encode(), corp_id)

    def suite_ticket(self, stamp: int | None = None) -> Delivery:
        stamp = int(time.time()) if stamp is None else stamp
        xml = (
            f"<xml><SuiteId><![CDATA[{self.suite}]]></SuiteId>"
            f"<InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>{stamp}</TimeStamp>"
            f"<SuiteTicket><![CDATA[ticket-{stamp}-{secrets.token_hex(6)}]]></SuiteTicket></xml>"
        )
        return self.seal(xml, "suite_ticket")

    def create_auth(self, corp_id: str) -> Delivery:
        xml = (
            f"<xml><SuiteId><![CDATA[{self.suite}]]></SuiteId>"
            f"<AuthCode><![CDATA[AUTHCODE-{corp_id}-{secrets.token_hex(8)}]]></AuthCode>"
            f"<InfoType><![CDATA[create_auth]]></InfoType>"
            f"<TimeStamp>{int(time.time())}</TimeStamp></xml>"
        )
        return self.seal(xml, "create_auth", corp_id)


def post(client: httpx.Client, url: str, d: Delivery) -> httpx.Response:
    return client.post(
        f"{url}/notify/{INSTANCE}",
        params=d.params,
        content=d.body,
        headers={"Content-Type": "text/xml; charset=utf-8"},
    )


@dataclass
class Cluster:
    env: dict[str, str]
    url: str
    fake: LoopbackWeCom
    hosts: list[Proc]
    wecom: Wecom
    root: Path

    def start_host(self) -> Proc:
        host = Proc(["serve", "--port", "0", "--threads", "8"], self.env, self.root)
        self.hosts.append(host)
        return host

    def records(self) -> list[CallbackRecord]:
        with Store(self.url) as s:
            return list(s.list_callbacks(limit=100_000, newest_first=False))

    def fake_calls(self, api: str) -> int:
        return int(self.fake.state()["calls"].get(api, 0))


@pytest.fixture
def cluster(auths: Path, tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    env = qywx_env(QYWX_AUTHS=str(auths), QYWX_DB=pg_url)
    with loopback_fake() as fake:
        env["QYWX_API_BASE"] = fake.api_base
        c = Cluster(env, pg_url, fake, [], Wecom(auths), tmp_path)
        try:
            c.start_host()
            c.start_host()
            yield c
        finally:
            for host in c.hosts:
                host.stop()


def _both_at_once(client: httpx.Client, urls: list[str], d: Delivery) -> list[httpx.Response]:
    barrier = threading.Barrier(len(urls))

    def send(url: str) -> httpx.Response:
        barrier.wait()
        return post(client, url, d)

    with ThreadPoolExecutor(len(urls)) as pool:
        return list(pool.map(send, urls))


def _plaintext(c: Cluster, d: Delivery) -> str:
    from tests.helpers import encrypt_of, independent_decrypt

    return independent_decrypt(c.wecom.key, encrypt_of(d.body.decode()))[0]


def _settled(c: Cluster) -> bool:
    return all(r.status not in ("received",) for r in c.records())


def test_the_same_delivery_at_two_hosts_at_once_is_acknowledged_by_both_and_run_once(
    cluster: Cluster,
) -> None:
    c = cluster
    urls = [h.url for h in c.hosts]
    deliveries = [c.wecom.suite_ticket()]
    deliveries += [c.wecom.create_auth(f"wwhost{i:012d}") for i in range(12)]
    deliveries += [c.wecom.suite_ticket(int(time.time()) + i) for i in range(1, 6)]
    with http() as client:
        for n, d in enumerate(deliveries):
            if n % 2:
                # WeCom's own redelivery: the same event re-encrypted, at the other host.
                again = c.wecom.seal(_plaintext(c, d), d.info_type, d.corp_id)
                barrier = threading.Barrier(2)

                def send(
                    pair: tuple[str, Delivery], barrier: threading.Barrier = barrier
                ) -> httpx.Response:
                    barrier.wait()
                    return post(client, *pair)

                with ThreadPoolExecutor(2) as pool:
                    replies = list(pool.map(send, [(urls[0], d), (urls[1], again)]))
                assert [(r.status_code, r.text) for r in replies] == [(200, "success")] * 2
            else:
                # The very same request at both: one is the original, the other a replay
                # of a recorded request, which is answered as the original deserved.
                replies = _both_at_once(client, urls, d)
                assert [(r.status_code, r.text) for r in replies] == [(200, "success")] * 2
    assert wait_for(lambda: _settled(c), timeout=30), c.records()
    records = c.records()
    assert len(records) == 2 * len(deliveries)
    originals = [r for r in records if not r.is_duplicate]
    duplicates = [r for r in records if r.is_duplicate]
    assert len(originals) == len(duplicates) == len(deliveries)
    assert {r.status for r in originals} == {"processed"}
    assert {r.duplicate_of for r in duplicates} == {r.id for r in originals}
    # Processed once: one permanent-code exchange per installation (a second would
    # have failed with 40078, the AuthCode being single use).
    assert c.fake_calls("service/v2/get_permanent_code") == 12
    with Store(c.url) as s:
        assert len(s.list_corp_auths(state="active")) == 12
    listed = run_qywx(
        "--db", c.url, "log", "list", "--limit", "1000", "--format", "json", env=c.env
    )
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == len(records)


def test_kill_9_of_one_host_mid_load_loses_nothing_and_the_other_finishes_its_work(
    cluster: Cluster,
) -> None:
    c = cluster
    victim, survivor = c.hosts
    sent: list[tuple[Delivery, httpx.Response]] = []
    lock = threading.Lock()
    stop_a = threading.Event()

    def stream(n: int, k: int) -> None:
        with http() as client:
            for i in range(n):
                d = c.wecom.create_auth(f"wwk{k}{i:011d}") if i % 2 else c.wecom.suite_ticket()
                url = survivor.url if (i % 2 or stop_a.is_set()) else victim.url
                try:
                    r = post(client, url, d)
                except httpx.HTTPError:
                    continue  # the connection died with the host: not acknowledged
                with lock:
                    sent.append((d, r))

    threads = [threading.Thread(target=stream, args=(40, k)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.6)
    victim.stop(signal.SIGKILL)
    stop_a.set()
    killed_at = time.monotonic()
    for t in threads:
        t.join(120)
    acknowledged = [d for d, r in sent if r.status_code == 200 and r.text == "success"]
    assert len(acknowledged) >= 80
    # Whatever the dead host had recorded and claimed comes back to the survivor within
    # seconds (short lease, renewed only by a live host), without a restart.
    assert wait_for(lambda: _settled(c), timeout=40), [
        (r.id, r.status, r.claimed_by) for r in c.records() if r.status == "received"
    ]
    took = time.monotonic() - killed_at
    records = c.records()
    stored = {(r.timestamp, r.nonce) for r in records}
    lost = [d for d in acknowledged if (d.params["timestamp"], d.params["nonce"]) not in stored]
    assert lost == [], f"{len(lost)} acknowledged callbacks not stored"
    creates = [r for r in records if r.info_type == "create_auth" and not r.is_duplicate]
    assert {r.status for r in creates} == {"processed"}, [(r.id, r.last_error) for r in creates]
    assert c.fake_calls("service/v2/get_permanent_code") == len(creates)
    assert took < 40


def test_a_dead_hosts_claim_is_taken_over_within_seconds(cluster: Cluster) -> None:
    """A record claimed by another machine's host that then died (its lease never
    renewed; its name carries no process this machine can check) is finished by a live
    host within the lease plus one sweep, not minutes later."""
    c = cluster
    d = c.wecom.create_auth("wwdeadclaim000001")
    with http() as client:  # the suite token needs a ticket
        assert post(client, c.hosts[0].url, c.wecom.suite_ticket()).text == "success"
    for host in c.hosts:
        host.stop()
    with Store(c.url) as s:
        rec = s.record_callback(
            instance=INSTANCE,
            kind="command",
            info_type="create_auth",
            suite_id=c.wecom.suite,
            corp_id=None,
            msg_signature=d.params["msg_signature"],
            timestamp=d.params["timestamp"],
            nonce=d.params["nonce"],
            envelope=d.body.decode(),
            content_key="dead-claim",
        )
        assert s.claim_callback(rec.id, "deadhost:1") is not None
    short_lease(c.root)  # the new host's working folder: the lapse takes 4 s, not 10
    started = time.monotonic()
    host = c.start_host()

    def done() -> bool:
        with Store(c.url) as s:
            return s.get_callback(rec.id).status == "processed"

    assert wait_for(done, timeout=30)
    assert time.monotonic() - started < 30
    with Store(c.url) as s:
        assert s.get_callback(rec.id).claimed_by is None
    assert "took back" not in host.log  # the lease handed it over, not a process check


def test_the_newest_ticket_wins_when_hosts_store_them_in_any_order(cluster: Cluster) -> None:
    c = cluster
    now = int(time.time())
    stamps = [now - 50, now - 10, now - 40, now, now - 30, now - 20]
    deliveries = [c.wecom.suite_ticket(s) for s in stamps]
    with http() as client, ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(lambda i: post(client, c.hosts[i % 2].url, deliveries[i]), range(6))
        )
    assert {(r.status_code, r.text) for r in replies} == {(200, "success")}
    with Store(c.url) as s:
        latest = s.latest_suite_ticket(c.wecom.suite)
    assert latest is not None and latest.timestamp == now


def test_the_database_going_away_gives_503_and_an_unhealthy_healthz_then_recovers(
    cluster: Cluster, pg_server: PgServer
) -> None:
    """While the server is down, callbacks get 503 and /healthz says why (libpq's reason,
    not a timeout). Back, it is served again with no restart, and /healthz is 200 at
    once: this host reuses a healthy verdict for 300 s (the most qywx.toml allows), so
    a failing verdict reused as long would keep it 503 far past the 20 s waited here."""
    c = cluster
    root = c.root / "probe-300"
    root.mkdir()
    (root / "qywx.toml").write_text("[serve]\nhealth_probe_seconds = 300\n", encoding="utf-8")
    host = Proc(["serve", "--port", "0", "--threads", "8"], c.env, root)
    c.hosts.append(host)
    with http() as client:
        assert post(client, host.url, c.wecom.suite_ticket()).text == "success"
        assert client.get(f"{host.url}/healthz").status_code == 200
        pg_server.stop_server("fast")
        try:
            r = post(client, host.url, c.wecom.suite_ticket())
            assert r.status_code == 503 and r.text != "success"
            health = client.get(f"{host.url}/healthz")
            assert health.status_code == 503 and health.json()["ok"] is False
            # libpq's reason ("Connection refused", or "shutting down" if an attempt met
            # the server on its way out), not a timeout
            assert "unavailable: connection failed:" in health.json()["error"], health.text
            assert pg_server.password not in health.text + r.text
        finally:
            pg_server.start_server()
        # No restart: the pool reconnects.
        assert wait_for(lambda: client.get(f"{host.url}/healthz").status_code == 200, 20)
        assert post(client, host.url, c.wecom.suite_ticket()).text == "success"
    assert pg_server.password not in host.log
    # The outage is logged once as it starts and once as it ends, each in one line,
    # instead of psycopg_pool's two lines for every attempt to connect.
    lines = host.log.splitlines()
    unreachable = [line for line in lines if "WARNING qywx.store: cannot connect to" in line]
    back = [line for line in lines if "connected to database" in line and "again, after" in line]
    assert len(unreachable) == 1 and "connection failed:" in unreachable[0], host.log
    assert len(back) == 1, host.log
    assert "psycopg" not in host.log, host.log
