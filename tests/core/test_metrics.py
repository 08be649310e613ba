"""Metrics of the notify endpoint over real loopback HTTP, the clock injected.

The endpoint is :class:`NotifyApp` on a real socket; /metrics is read back with
prometheus_client's own parser, so what a Prometheus server would see is what is
asserted.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qywx_cli.core.config import load_instances
from qywx_cli.core.errors import UsageError
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.instrument import instrument
from qywx_cli.core.metrics import Metrics, MetricsRoute
from qywx_cli.core.service import CallbackService
from qywx_cli.core.settings import load_settings
from qywx_cli.core.store import Store
from qywx_cli.core.wecom import WeComClient
from qywx_cli.core.wsgi import NotifyApp
from tests.helpers import SAMPLES, Clock, WeComRequests, http_client, serving

SUITE = "tj1234567890abcdef"
START = 1_790_000_000.0


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a text exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Served:
    def __init__(self, tmp_path: Path, clock: Clock) -> None:
        shutil.copytree(SAMPLES, tmp_path / "auths")
        settings = load_settings(auths=tmp_path / "auths", db=tmp_path / "qywx.db", env={})
        self.fake = FakeWeCom()
        store = Store(settings.db_path, now=clock)
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
        )
        self.metrics = Metrics(self.service, now=clock)
        self.service.observer = self.metrics
        self.service.client.observer = self.metrics
        inst = self.service.instances["QywxProxyTemp"]
        self.wecom = WeComRequests(inst)
        self.clock = clock

    def values(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.metrics.render().decode())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, str, httpx.Client]]:
    s = Served(tmp_path, Clock(START))
    app = MetricsRoute(NotifyApp(s.service), s.metrics, "a-metrics-token-for-tests")
    with serving(app) as url, http_client(base_url=url) as http:
        yield s, url, http
    s.service.close()


def _callbacks(outcome: str, event: str = "suite_ticket") -> tuple[str, tuple]:  # type: ignore[type-arg]
    labels = {"instance": "QywxProxyTemp", "kind": "command", "event": event, "outcome": outcome}
    return ("qywx_callbacks_total", tuple(sorted(labels.items())))


AGE = ("qywx_suite_ticket_age_seconds", (("suite_id", SUITE),))


def test_counters_and_ticket_age_move_as_callbacks_arrive(served) -> None:  # type: ignore[no-untyped-def]
    s, _, http = served
    auth = {"Authorization": "Bearer a-metrics-token-for-tests"}
    first = scrape(http.get("/metrics", headers=auth).text)
    assert first[AGE] == math.inf  # no ticket yet
    assert first[("qywx_records_pending", ())] == 0
    assert first[("qywx_store_up", ())] == 1
    assert _callbacks("accepted") not in first

    for n in range(3):
        signed = s.wecom.suite_ticket(f"metrics-ticket-{n:02d}-0123456789abcdef", now=s.clock())
        got = http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body)
        assert got.text == "success"
        s.clock.advance(10)
    replayed = http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body)
    assert (replayed.status_code, replayed.text) == (200, "success")  # idempotent
    http.post(
        "/notify/QywxProxyTemp",
        params={**signed.query, "msg_signature": "0" * 40},
        content=signed.body,
    )

    after = scrape(http.get("/metrics", headers=auth).text)
    assert after[_callbacks("accepted")] == 3
    assert after[_callbacks("duplicate: replay")] == 1
    refused = (
        ("event", "-"),
        ("instance", "QywxProxyTemp"),
        ("kind", "-"),
        ("outcome", "rejected: crypto-40001"),
    )
    assert after[("qywx_callbacks_total", refused)] == 1
    assert after[("qywx_reply_seconds_count", (("kind", "command"),))] == 4
    assert after[AGE] == 10  # the last ticket was stored at START + 20, it is START + 30 now

    s.clock.advance(1800)
    assert s.values()[AGE] == 1810
    signed = s.wecom.suite_ticket("metrics-ticket-late-0123456789abcdef", now=s.clock())
    http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body)
    assert s.values()[AGE] == 0


def test_handler_latency_api_calls_and_token_refreshes(served) -> None:  # type: ignore[no-untyped-def]
    s, _, http = served
    signed = s.wecom.suite_ticket("metrics-ticket-aa-0123456789abcdef", now=s.clock())
    http.post("/notify/QywxProxyTemp", params=signed.query, content=signed.body)
    create = s.wecom.callback("create_auth", corp="wwmetrics000000001", now=s.clock())
    got = http.post("/notify/QywxProxyTemp", params=create.query, content=create.body)
    assert got.text == "success"  # background=False: the handler ran before the reply
    s.fake.inject_fault("get_permanent_code", errcode=-1)
    create = s.wecom.callback("create_auth", corp="wwmetrics000000002", now=s.clock())
    http.post("/notify/QywxProxyTemp", params=create.query, content=create.body)

    values = s.values()
    handled = {
        tuple(sorted(dict(k[1]).items())): v
        for k, v in values.items()
        if k[0] == "qywx_handler_seconds_count"
    }
    assert handled == {
        (("event", "create_auth"), ("status", "processed")): 1,
        (("event", "create_auth"), ("status", "failed")): 1,
    }
    calls = {
        tuple(sorted(dict(k[1]).items())): v
        for k, v in values.items()
        if k[0] == "qywx_wecom_api_calls_total"
    }
    assert calls[(("api", "service/get_suite_token"), ("errcode", "0"))] == 1
    assert calls[(("api", "service/v2/get_permanent_code"), ("errcode", "0"))] == 1
    assert calls[(("api", "service/v2/get_permanent_code"), ("errcode", "-1"))] == 1
    assert calls[(("api", "gettoken"), ("errcode", "0"))] == 1
    assert values[("qywx_token_refreshes_total", (("kind", "suite"),))] == 1
    assert values[("qywx_token_refreshes_total", (("kind", "corp"),))] == 1
    assert values[("qywx_records_failed", ())] == 1


def test_metrics_on_the_public_port_need_the_token(served) -> None:  # type: ignore[no-untyped-def]
    _, _, http = served
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        got = http.get("/metrics", headers=headers)
        assert (got.status_code, got.text) == (401, "metrics need Authorization: Bearer <token>")
        assert got.headers["WWW-Authenticate"].startswith("Bearer")
    assert http.get("/healthz").status_code == 200  # the rest of the app is untouched


def test_two_services_on_one_store_report_the_same_store_figures(tmp_path: Path) -> None:
    clock = Clock(START)
    a = Served(tmp_path, clock)
    b = Served.__new__(Served)
    settings = a.service.settings
    store_b = Store(settings.db_path, now=clock)
    b.service = CallbackService(
        settings,
        store=store_b,
        now=clock,
        background=False,
        instances=load_instances(settings.auths_dir, {}),
    )
    b.metrics = Metrics(b.service, now=clock)
    for n in range(4):
        rec = a.service.store.record_callback(
            instance="QywxProxyTemp",
            kind="command",
            info_type="create_auth",
            suite_id=SUITE,
            corp_id=None,
            msg_signature=f"{n:040d}",
            timestamp="1",
            nonce=str(n),
            envelope="<xml/>",
            content_key=None,
            status="received",
        )
        if n == 0:
            a.service.store.finish_callback(rec.id, "failed", "WeCom errcode 40001")
    for served in (a, b):
        values = served.values()
        assert values[("qywx_records_pending", ())] == 3
        assert values[("qywx_records_failed", ())] == 1
    a.service.close()
    b.service.close()


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    s = Served(tmp_path, Clock(START))
    with pytest.raises(UsageError, match="at least 16 characters"):
        instrument(s.service, metrics_token="short")
    s.service.close()
