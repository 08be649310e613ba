"""``qywx serve --alert-webhook``: a real server, real signed callbacks, a loopback webhook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qywx_cli.core.config import find_instance
from qywx_cli.core.store import open_store
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import LoopbackWeCom, Receiver, WeComRequests, dead_url, serving


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serving(r) as url:
        yield r, url


def _failing_create_auths(
    proc: Proc, fake: LoopbackWeCom, wecom: WeComRequests, client: httpx.Client, count: int
) -> list[str]:
    fault = {"api": "get_permanent_code", "errcode": 40084, "count": count}
    assert client.post(f"{fake.url}/fake/faults", json=fault).json()["errcode"] == 0
    replies = []
    for n in range(count):
        signed = wecom.callback("create_auth", corp=f"wwalerte2e{n:08d}")
        got = client.post(
            f"{proc.url}/notify/QywxProxyTemp", params=signed.query, content=signed.body
        )
        replies.append(got.text)
    return replies


def _failed(db: Path) -> int:
    store = open_store(db)
    try:
        return len(store.list_callbacks(status="failed"))
    finally:
        store.close()


def test_one_alert_per_incident(
    receiver: tuple[Receiver, str],
    env: dict[str, str],
    tmp_path: Path,
    auths: Path,
    fake_wecom: LoopbackWeCom,
) -> None:
    r, url = receiver
    hook = f"{url}/alerts?key=e2e-secret-key"
    proc = Proc(["serve", "--port", "0", "--alert-webhook", hook], env, tmp_path)
    wecom = WeComRequests(find_instance("QywxProxyTemp", auths, {}))
    try:
        with http() as client:
            assert _failing_create_auths(proc, fake_wecom, wecom, client, 3) == ["success"] * 3
        assert wait_for(lambda: _failed(tmp_path / "qywx.db") == 3)
    finally:
        assert proc.stop() == 0  # the stop delivers what is queued (a short grace)
    assert [b["title"] for b in r.bodies] == ["create_auth failed for QywxProxyTemp"]
    assert f"alerts to {url}/alerts?key=*** (JSON webhook)" in proc.log
    assert "e2e-secret-key" not in proc.log


def test_a_dead_webhook_changes_nothing_for_callbacks(
    env: dict[str, str], tmp_path: Path, auths: Path, fake_wecom: LoopbackWeCom
) -> None:
    proc = Proc(
        ["serve", "--port", "0", "--alert-webhook", dead_url() + "?key=dead-secret-key"],
        env,
        tmp_path,
    )
    wecom = WeComRequests(find_instance("QywxProxyTemp", auths, {}))
    try:
        with http() as client:
            assert _failing_create_auths(proc, fake_wecom, wecom, client, 2) == ["success"] * 2
            for n in range(3):
                signed = wecom.suite_ticket(f"dead-hook-ticket-{n}-0123456789abcdef")
                got = client.post(
                    f"{proc.url}/notify/QywxProxyTemp", params=signed.query, content=signed.body
                )
                assert (got.status_code, got.text) == (200, "success")
        assert wait_for(lambda: _failed(tmp_path / "qywx.db") == 2)
    finally:
        assert proc.stop() == 0
    assert "alert not delivered" in proc.log
    assert "dead-secret-key" not in proc.log and "Traceback" not in proc.log


def test_an_app_not_online_is_alerted_once(
    receiver: tuple[Receiver, str],
    env: dict[str, str],
    tmp_path: Path,
    auths: Path,
    fake_wecom: LoopbackWeCom,
) -> None:
    """A corp installs an app the provider has not published: one alert, at once (the
    handled create_auth wakes the monitor; its own tick is a minute away)."""
    r, url = receiver
    corp, code = "wwe2enotonline0001", "AUTHCODE-e2e-not-online"
    proc = Proc(["serve", "--port", "0", "--alert-webhook", f"{url}/alerts"], env, tmp_path)
    wecom = WeComRequests(find_instance("QywxProxyTemp", auths, {}))
    key = f"app-not-online:tj1234567890abcdef:{corp}"
    try:
        with http() as client:
            grant = {"auth_code": code, "corp_id": corp, "customized_publish_status": 1}
            assert client.post(f"{fake_wecom.url}/fake/auth_codes", json=grant).status_code == 200
            for signed in (
                wecom.suite_ticket("e2e-not-online-ticket-0123456789abcdef"),
                wecom.callback("create_auth", {"AuthCode": code}, corp=corp),
            ):
                got = client.post(
                    f"{proc.url}/notify/QywxProxyTemp", params=signed.query, content=signed.body
                )
                assert (got.status_code, got.text) == (200, "success")
            assert wait_for(lambda: [b["key"] for b in r.bodies] == [key], timeout=20)
            signed = wecom.callback("change_auth", corp=corp)  # still not online
            got = client.post(
                f"{proc.url}/notify/QywxProxyTemp", params=signed.query, content=signed.body
            )
            assert got.text == "success"
        assert wait_for(lambda: _processed(tmp_path / "qywx.db", "change_auth") == 1)
    finally:
        assert proc.stop() == 0
    assert [b["key"] for b in r.bodies] == [key]  # the change_auth's look was folded
    assert r.bodies[0]["title"].startswith(f"app not online in corp {corp} (")
    assert "1 开发中" in r.bodies[0]["detail"]


def _processed(db: Path, info_type: str) -> int:
    store = open_store(db)
    try:
        return sum(1 for c in store.list_callbacks(status="processed") if c.info_type == info_type)
    finally:
        store.close()
