"""``qywx serve --alert-webhook``: a real server, real signed callbacks, a loopback webhook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qywx_cli.core.config import find_instance
from qywx_cli.core.store import open_store
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import Receiver, WeComRequests, dead_url, serving


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serving(r) as url:
        yield r, url


def _failing_create_auths(
    proc: Proc, fake: Proc, wecom: WeComRequests, client: httpx.Client, count: int
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
    fake_wecom: Proc,
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
    env: dict[str, str], tmp_path: Path, auths: Path, fake_wecom: Proc
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
