"""Alerts: a webhook receiver on loopback, time moved by hand, never slept on.

The sender's thread is real; :meth:`AlertSender.flush` waits for its queue to empty,
so every assertion runs after delivery finished, whatever the machine's speed.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core.alerts import (
    Alert,
    AlertRules,
    AlertSender,
    Monitor,
    Webhook,
    app_status_check,
    masked_url,
    ticket_check,
)
from qywx_cli.core.config import load_instances
from qywx_cli.core.errors import AlertError
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.observe import Handled
from qywx_cli.core.service import CallbackService
from qywx_cli.core.settings import load_settings
from qywx_cli.core.store import open_store
from qywx_cli.core.wecom import WeComClient
from qywx_cli.core.wsgi import NotifyApp
from tests.helpers import SAMPLES, Clock, Receiver, WeComRequests, dead_url, http_client, serving

START = 1_790_000_000.0


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serving(r) as url:
        yield r, url
    if r.hold is not None:
        r.hold.set()


def make_sender(
    url: str, clock: Clock, sleeps: list[float] | None = None, **kw: Any
) -> AlertSender:
    sender = AlertSender(
        Webhook(url, host="ops-1", wall=lambda: START),
        clock=clock,
        sleep=(sleeps.append if sleeps is not None else (lambda s: None)),
        **kw,
    )
    sender.start()
    return sender


def failed(n: int, instance: str = "QywxProxyTemp") -> Alert:
    return Alert(f"callback-failed:{instance}:create_auth", "create_auth failed", f"record {n}")


def test_one_alert_per_incident_within_the_rate_limit(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    clock = Clock(0)
    sender = make_sender(url + "/hook", clock)
    try:
        for n in range(5):
            sender.raise_alert(failed(n))
            clock.advance(60)
        sender.raise_alert(failed(9, instance="QywxProxyDefault"))  # another incident
        sender.flush()
        assert [(b["key"], b["detail"], b["suppressed"]) for b in r.bodies] == [
            ("callback-failed:QywxProxyTemp:create_auth", "record 0", 0),
            ("callback-failed:QywxProxyDefault:create_auth", "record 9", 0),
        ]
        clock.advance(30 * 60)  # past the window: the same incident is reported again
        sender.raise_alert(failed(10))
        sender.flush()
        assert len(r.bodies) == 3
        assert (r.bodies[2]["detail"], r.bodies[2]["suppressed"]) == ("record 10", 4)
        assert r.bodies[0]["source"] == "qywx" and r.bodies[0]["host"] == "ops-1"
    finally:
        sender.close()


def test_at_most_per_minute_alerts_leave(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    clock = Clock(0)
    sender = make_sender(url + "/hook", clock, per_minute=3)
    try:
        for n in range(5):
            sender.raise_alert(Alert(f"k{n}", f"incident {n}"))
        sender.flush()
        assert [b["key"] for b in r.bodies] == ["k0", "k1", "k2"]
        assert sender.dropped == 2
        clock.advance(61)
        sender.raise_alert(Alert("k5", "incident 5"))
        sender.flush()
        assert r.bodies[-1]["key"] == "k5"
    finally:
        sender.close()


def test_wecom_robot_gets_markdown_and_its_errcode_is_retried(
    receiver: tuple[Receiver, str],
) -> None:
    r, url = receiver
    r.errcodes = [45009]  # the robot's "too many messages": retried after a backoff
    sleeps: list[float] = []
    sender = make_sender(url + "/cgi-bin/webhook/send?key=robot-key-123", Clock(0), sleeps)
    try:
        assert sender.webhook.is_wecom
        assert sender.webhook.shown == masked_url(url + "/cgi-bin/webhook/send?key=x")
        assert "robot-key" not in sender.webhook.shown
        sender.raise_alert(Alert("store", "the store cannot be written", "disk full\nline 2"))
        sender.flush()
        assert sleeps == [2.0]
        assert len(r.bodies) == 2 and r.bodies[0] == r.bodies[1]
        assert r.bodies[1]["msgtype"] == "markdown"
        content = r.bodies[1]["markdown"]["content"]
        assert content.splitlines() == [
            '**qywx: <font color="warning">the store cannot be written</font>**',
            "> disk full",
            "> line 2",
            "> host: ops-1 · 2026-09-21T14:13:20+00:00",
        ]
        assert sender.delivered == 1
    finally:
        sender.close()


def test_retries_back_off_then_give_up(receiver: tuple[Receiver, str]) -> None:
    r, url = receiver
    r.fail_first = 2
    sleeps: list[float] = []
    sender = make_sender(url + "/hook", Clock(0), sleeps, retries=3, backoff=1.5)
    try:
        sender.raise_alert(Alert("a", "first"))
        sender.flush()
        assert (sleeps, len(r.bodies), sender.delivered) == ([1.5, 3.0], 1, 1)
        r.fail_first = 10
        sender.raise_alert(Alert("b", "second"))
        sender.flush()
        assert sleeps[2:] == [1.5, 3.0, 6.0]
        assert (sender.delivered, sender.failed) == (1, 1)
    finally:
        sender.close()


def test_closing_does_not_wait_out_the_backoff_of_a_failing_webhook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the webhook down and its next retry an hour away, close() gives the queued
    alert one more attempt and returns, instead of waiting out a minute of grace."""
    sender = AlertSender(Webhook(dead_url()), retries=3, backoff=3600.0)
    sender.start()
    sender.raise_alert(Alert("a", "first"))
    closing = threading.Thread(target=sender.close, kwargs={"grace": 60.0})
    closing.start()
    closing.join(30)
    assert not closing.is_alive(), "close() waited for the webhook's backoff"
    assert (sender.delivered, sender.failed) == (0, 1)
    assert "alert not delivered after 2 attempt(s)" in caplog.text


def test_closing_waits_for_a_retry_within_the_grace(receiver: tuple[Receiver, str]) -> None:
    """The webhook fails twice (a rate limit, say) and takes the retry 0.6 s on:
    close() waits for the retries within its grace, and the alert is delivered."""
    r, url = receiver
    r.fail_first = 2
    sender = AlertSender(Webhook(url + "/hook"), retries=3, backoff=0.2)
    sender.start()
    sender.raise_alert(Alert("a", "first"))
    sender.close(grace=30.0)
    assert (sender.delivered, sender.failed, len(r.bodies)) == (1, 0, 1)


def test_send_errors_are_one_line_and_masked() -> None:
    hook = Webhook(dead_url() + "?key=very-secret-key")
    with pytest.raises(AlertError) as caught:
        hook.send(Alert("t", "test"))
    assert "very-secret-key" not in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("alert webhook http://127.0.0.1:")
    hook.close()


class Pipeline:
    """A callback service on loopback whose failures raise alerts."""

    def __init__(self, tmp_path: Path, webhook: str, clock: Clock) -> None:
        shutil.copytree(SAMPLES, tmp_path / "auths")
        settings = load_settings(auths=tmp_path / "auths", db=tmp_path / "qywx.db", env={})
        self.fake = FakeWeCom()
        store = open_store(settings.db_path, now=clock)
        self.sender = make_sender(webhook, clock)
        self.service = CallbackService(
            settings,
            store=store,
            client=WeComClient(
                store,
                base_url="http://fake.wecom.test/cgi-bin",
                transport=httpx.WSGITransport(app=self.fake),
                now=clock,
            ),
            instances=load_instances(settings.auths_dir, {}),
            now=clock,
            background=False,
            observer=AlertRules(self.sender),
        )
        self.wecom = WeComRequests(self.service.instances["QywxProxyTemp"])
        self.clock = clock

    def close(self) -> None:
        self.sender.close(grace=0)
        self.service.close()


def _deliver_failures(p: Pipeline, url: str, count: int) -> list[tuple[int, str]]:
    replies = []
    with http_client(base_url=url) as http:
        for n in range(count):
            p.fake.inject_fault("get_permanent_code", errcode=-1)
            signed = p.wecom.callback("create_auth", corp=f"wwalert{n:011d}", now=p.clock())
            got = http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body)
            replies.append((got.status_code, got.text))
    return replies


def test_failed_callbacks_alert_once(tmp_path: Path, receiver: tuple[Receiver, str]) -> None:
    r, hook = receiver
    p = Pipeline(tmp_path, hook + "/hook", Clock(START))
    try:
        with serving(NotifyApp(p.service)) as url:
            assert _deliver_failures(p, url, 3) == [(200, "success")] * 3
        p.sender.flush()
        assert len(r.bodies) == 1
        assert r.bodies[0]["title"] == "create_auth failed for QywxProxyTemp"
        assert "qywx retry" in r.bodies[0]["detail"]
        assert [c.status for c in p.service.store.list_callbacks(status="failed")] == ["failed"] * 3
    finally:
        p.close()


@pytest.mark.parametrize("webhook", ["dead", "slow"])
def test_a_dead_or_slow_webhook_changes_nothing_for_callbacks(
    webhook: str, tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    r, hook = receiver
    if webhook == "slow":
        r.hold = threading.Event()  # the receiver never answers while callbacks run
        url_of_hook = hook + "/hook"
    else:
        url_of_hook = dead_url()
    clock = Clock(START)
    p = Pipeline(tmp_path, url_of_hook, clock)
    try:
        with serving(NotifyApp(p.service)) as url:
            replies = _deliver_failures(p, url, 3)
            with http_client(base_url=url) as http:
                for n in range(3):
                    signed = p.wecom.suite_ticket(f"alert-ticket-{n}-0123456789abcdef", now=clock())
                    got = http.post(
                        "/notify/QywxProxyTemp", params=signed.query, content=signed.body
                    )
                    replies.append((got.status_code, got.text))
                    clock.advance(1)
        assert replies == [(200, "success")] * 6
        assert len(p.service.store.list_callbacks(status="failed")) == 3
        stored = p.service.store.latest_suite_ticket("tj1234567890abcdef")
        assert stored is not None and stored.ticket == "alert-ticket-2-0123456789abcdef"
    finally:
        if r.hold is not None:
            r.hold.set()
        p.close()


def test_monitor_reports_a_stale_suite_ticket(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    r, hook = receiver
    clock = Clock(START)
    p = Pipeline(tmp_path, hook + "/hook", clock)
    monitor = Monitor(p.sender, now=clock)
    monitor.add_check(ticket_check(p.service, now=clock))
    try:
        assert monitor.check_now() == 0  # just started: waiting for WeCom's first push
        clock.advance(31 * 60)
        assert monitor.check_now() == 4  # each active suite, none has a ticket yet
        p.sender.flush()
        temp = [b for b in r.bodies if b["key"] == "ticket-stale:tj1234567890abcdef"]
        assert temp[0]["detail"].startswith("no suite_ticket received in 31 min")

        with (
            serving(NotifyApp(p.service)) as url,
            http_client(base_url=url, timeout=5) as http,
        ):
            signed = p.wecom.suite_ticket("monitor-ticket-0123456789abcdef", now=clock())
            assert (
                http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body).text
                == "success"
            )
        clock.advance(29 * 60)
        assert monitor.check_now() == 0  # fresh for this suite; the others: de-duplicated
        clock.advance(2 * 60)
        assert monitor.check_now() == 4
        p.sender.flush()
        latest = [b for b in r.bodies if b["key"] == "ticket-stale:tj1234567890abcdef"][-1]
        assert latest["detail"].startswith("newest suite_ticket is 31 min old")
    finally:
        p.close()


def test_a_store_refusal_raises_one_critical_alert(receiver: tuple[Receiver, str]) -> None:
    from qywx_cli.core.service import NotifyResponse

    r, url = receiver
    clock = Clock(0)
    sender = make_sender(url + "/hook", clock)
    rules = AlertRules(sender)
    try:
        refused = NotifyResponse(503, b"database is locked", "rejected: store")
        for _ in range(3):
            rules.request("notify", refused, 0.01)
        rules.request("notify", NotifyResponse(200, b"success", "accepted"), 0.01)
        sender.flush()
        assert [(b["key"], b["severity"]) for b in r.bodies] == [("store", "critical")]
        assert r.bodies[0]["detail"].startswith("database is locked\n")
    finally:
        sender.close()


SUITE = "tj1234567890abcdef"  # sample_auths/QywxProxyTemp


def _install(p: Pipeline, url: str, corp: str, publish_status: int) -> None:
    """A corp scans and installs; the fake's agent/get then answers ``publish_status``."""
    code = f"AUTHCODE-{corp}-alerts"
    p.fake.register_auth_code(code, corp_id=corp, corp_name="Acme", publish_status=publish_status)
    with http_client(base_url=url) as http:
        for signed in (
            p.wecom.suite_ticket(f"app-ticket-{corp}-0123456789abcdef", now=p.clock()),
            p.wecom.callback("create_auth", {"AuthCode": code}, corp=corp, now=p.clock()),
        ):
            got = http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body)
            assert (got.status_code, got.text) == (200, "success")


def _agent_get_calls(fake: FakeWeCom) -> int:
    with httpx.Client(transport=httpx.WSGITransport(app=fake), base_url="http://fake") as http:
        return int(http.get("/fake/state").json()["calls"].get("agent/get", 0))


def test_monitor_reports_an_app_not_online_until_it_is_published(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    r, hook = receiver
    clock = Clock(START)
    p = Pipeline(tmp_path, hook + "/hook", clock)
    monitor = Monitor(p.sender, now=clock)
    monitor.add_check(app_status_check(p.service, now=clock))
    waiting, online = "wwnotonline0000001", "wwonline000000001"
    try:
        assert monitor.check_now() == 0  # no corp yet
        with serving(NotifyApp(p.service)) as url:
            _install(p, url, waiting, publish_status=1)
            _install(p, url, online, publish_status=2)
        reads = _agent_get_calls(p.fake)
        assert reads == 2  # each install read its app's status once

        assert monitor.check_now() == 1
        p.sender.flush()
        assert [(b["key"], b["title"]) for b in r.bodies] == [
            (f"app-not-online:{SUITE}:{waiting}", f"app not online in corp {waiting} (Acme)")
        ]
        assert "customized_publish_status 1 开发中" in r.bodies[0]["detail"]
        assert f"qywx corp refresh {waiting}" in r.bodies[0]["detail"]

        clock.advance(10 * 60)
        assert monitor.check_now() == 0  # the same incident inside 30 min: folded
        assert _agent_get_calls(p.fake) == reads  # a fresh stored status is not re-read

        clock.advance(21 * 60)  # the status is 31 min old: asked again, still not online
        assert monitor.check_now() == 1
        assert _agent_get_calls(p.fake) == reads + 1
        p.sender.flush()
        assert r.bodies[-1]["suppressed"] == 1

        p.fake.set_publish_status(waiting, 2)  # the provider publishes; WeCom says nothing
        clock.advance(31 * 60)
        assert monitor.check_now() == 0
        stored = p.service.store.get_corp_auth(waiting, SUITE)
        assert stored is not None and stored.publish_status == 2
        clock.advance(31 * 60)
        assert monitor.check_now() == 0  # now online in the store: nothing to re-read
        assert _agent_get_calls(p.fake) == reads + 2
        assert len(r.bodies) == 2
    finally:
        p.close()


def test_an_install_wakes_the_monitor(receiver: tuple[Receiver, str]) -> None:
    """After create_auth / change_auth was handled the checks run now, not at the next
    tick (the interval here is an hour); a failed or other event does not wake it."""
    _, url = receiver
    sender = make_sender(url + "/hook", Clock(0))
    ran = threading.Event()
    monitor = Monitor(sender, interval=3600)

    def check() -> list[Alert]:
        ran.set()
        return []

    monitor.add_check(check)
    woken: list[int] = []
    rules = AlertRules(sender, wake=lambda: woken.append(1))
    try:
        rules.handled(Handled(1, "QywxProxyTemp", "suite_ticket", "processed", 0.0))
        rules.handled(Handled(2, "QywxProxyTemp", "create_auth", "failed", 0.0, "40078"))
        assert woken == []
        rules.handled(Handled(3, "QywxProxyTemp", "create_auth", "processed", 0.0))
        rules.handled(Handled(4, "QywxProxyTemp", "change_auth", "processed", 0.0))
        assert woken == [1, 1]

        monitor.start()
        monitor.wake()
        assert ran.wait(30)
    finally:
        monitor.close()
        sender.close()
