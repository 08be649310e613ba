"""The provider side of 代开发 end to end, offline, through the console script: a
loopback FakeWeCom, real SQLite, real signed callbacks.

auth-url → a corp scans the link → create_auth carrying its state → corp show (state and
publish status) → jsapi-sign (tickets cached across runs) → a privateinfo login whose
personal details are masked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.app import SERVICE_ELEMENT, App
from qywx_cli.core.fakewecom import FakeWeCom
from tests.helpers import assert_one_line_error, http_client, one_json, run_qywx, serving

SUITE = "tj1234567890abcdef"  # sample_auths/QywxProxyTemp
CORP = "ww1234567890abcdef"
PROVIDER = "wwprovider00000001"
SECRET = "provider-secret-for-tests-0001"


@pytest.fixture
def fake() -> FakeWeCom:
    return FakeWeCom(provider_secret=SECRET)


@pytest.fixture
def env(cli_env: dict[str, str], fake: FakeWeCom) -> Iterator[dict[str, str]]:
    with serving(fake) as url:
        yield {
            **cli_env,
            "QYWX_API_BASE": f"{url}/cgi-bin",
            "QYWX_PROVIDER_CORP_ID": PROVIDER,
            "QYWX_PROVIDER_SECRET": SECRET,
        }


def fake_call(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> Any:
    base = env["QYWX_API_BASE"].rsplit("/cgi-bin", 1)[0]
    with http_client(base_url=base, timeout=5) as http:
        reply = http.post(path, json=body) if body is not None else http.get(path)
    assert reply.status_code == 200, reply.text
    return reply.json()


def deliver(env: dict[str, str], name: str, **overrides: str) -> None:
    """One signed command callback through the element API, handled inline."""
    with App(
        env["QYWX_AUTHS"], db=env["QYWX_DB"], api_base=env["QYWX_API_BASE"], background=False
    ) as app:
        service = app.getElement(SERVICE_ELEMENT)
        inst = app.getElement("auths.QywxProxyTemp").instance
        corp = None if name == "suite_ticket" else CORP
        xml = ev.build_event_xml(name, suite_id=SUITE, corp_id=corp, overrides=overrides)
        sealed = inst.crypto().encrypt_msg(xml, SUITE, str(int(time.time())), "4242")
        reply = service.notify(
            sealed.nonce, sealed.msg_signature, sealed.timestamp, body=sealed.request_xml(SUITE)
        )
        assert reply.text == "success"


def install(env: dict[str, str], publish_status: int = 2) -> str:
    link = one_json(run_qywx("auth-url", "--auth", "QywxProxyTemp", "--format", "json", env=env))
    assert link["suite_id"] == SUITE and link["url"].startswith("https://")
    grant = fake_call(
        env,
        "/fake/scan",
        {"state": link["state"], "corp_id": CORP, "customized_publish_status": publish_status},
    )
    deliver(env, "suite_ticket")
    deliver(env, "create_auth", AuthCode=grant["auth_code"], State=link["state"])
    return str(link["state"])


def test_install_link_to_masked_privateinfo_login(env: dict[str, str], tmp_path: Path) -> None:
    state = install(env)

    shown = one_json(run_qywx("corp", "show", CORP, "--format", "json", env=env))
    assert (shown["link_state"], shown["publish_label"], shown["online"]) == (
        state,
        "2 已上线",
        True,
    )
    assert shown["permanent_code_held"] is True
    listed = run_qywx("corp", "list", env=env)
    assert state in listed.stdout and "已上线" in listed.stdout

    url = "https://app.example.com/page?id=7#/tab"
    signed = []
    for _ in range(2):
        proc = run_qywx(
            "jsapi-sign",
            "--auth",
            "QywxProxyTemp",
            "--corp-id",
            CORP,
            "--url",
            url,
            "--format",
            "json",
            env=env,
        )
        signed.append(one_json(proc))
    config = signed[0]["config"]
    assert signed[0]["api"] == "wx.config" and config["appId"] == CORP
    assert signed[0]["url"] == "https://app.example.com/page?id=7"
    assert "***" in signed[0]["string_to_sign"]  # the ticket is masked in the output
    verdict = fake_call(env, "/fake/jsapi/verify", {**config, "url": url})
    assert verdict["errMsg"] == "config:ok"
    assert fake_call(env, "/fake/state")["calls"]["get_jsapi_ticket"] == 1  # cached

    agent = one_json(
        run_qywx(
            "jsapi-sign",
            "--auth",
            "QywxProxyTemp",
            "--corp-id",
            CORP,
            "--url",
            url,
            "--agent",
            "--format",
            "json",
            env=env,
        )
    )
    assert agent["api"] == "wx.agentConfig" and agent["config"]["agentid"] == shown["agent_id"]
    verdict = fake_call(env, "/fake/jsapi/verify", {**agent["config"], "url": url})
    assert verdict["errMsg"] == "agentConfig:ok"

    login_url = one_json(
        run_qywx(
            "login-url",
            "--auth",
            "QywxProxyTemp",
            "--redirect-uri",
            "https://app.example.com/cb",
            "--scope",
            "snsapi_privateinfo",
            "--format",
            "json",
            env=env,
        )
    )
    assert "scope=snsapi_privateinfo" in login_url["url"]

    args = ["login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--scope", "privateinfo"]
    masked = one_json(run_qywx(*args, "--code", "CODE-zhangsan", "--format", "json", env=env))
    detail = masked["userDetail"]
    assert detail["userId"] == "zhangsan" and "***" in detail["mobile"]
    assert "***" in detail["email"] and "***" in detail["avatar"]
    shown_all = one_json(
        run_qywx(*args, "--code", "CODE-zhangsan2", "--show-secrets", "-f", "json", env=env)
    )
    assert shown_all["userDetail"]["mobile"].isdigit()
    text = run_qywx(*args, "--code", "CODE-lisi", env=env)
    assert "Member details" in text.stdout and "***" in text.stdout


def test_offline_signature_prints_the_string_signed(env: dict[str, str]) -> None:
    """WeCom's published example (developer.work.weixin.qq.com/document/path/90506)."""
    ticket = (
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg"
    )
    proc = run_qywx(
        "jsapi-sign",
        "--ticket",
        ticket,
        "--nonce",
        "Wm3WZYTPz0wzccnW",
        "--timestamp",
        "1414587457",
        "--url",
        "http://mp.weixin.qq.com?params=value",
        "--format",
        "json",
        env=env,
    )
    doc = one_json(proc)
    assert doc["config"]["signature"] == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    assert doc["string_to_sign"] == (
        f"jsapi_ticket={ticket}&noncestr=Wm3WZYTPz0wzccnW&timestamp=1414587457"
        "&url=http://mp.weixin.qq.com?params=value"
    )


def test_a_corp_not_online_is_warned_about_and_refused(env: dict[str, str]) -> None:
    install(env, publish_status=1)
    listed = run_qywx("corp", "list", env=env)
    assert "authorized but not online (未上线): publish the app in the provider console" in (
        listed.stderr
    )
    doctor = run_qywx("doctor", "--auth", "QywxProxyTemp", "--format", "json", env=env)
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "app_status"]
    assert check["status"] == "warning" and "未上线" in check["detail"]
    refused = run_qywx(
        "jsapi-sign",
        "--auth",
        "QywxProxyTemp",
        "--corp-id",
        CORP,
        "--url",
        "https://app.example.com/",
        env=env,
    )
    assert_one_line_error(refused, 1, "not online (未上线)", "1 开发中")
    fake_call(env, "/fake/agents", {"corp_id": CORP, "customized_publish_status": 2})
    refreshed = one_json(run_qywx("corp", "refresh", CORP, "--format", "json", env=env))
    assert refreshed["online"] is True


def test_every_new_error_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    no_secret = {k: v for k, v in env.items() if k != "QYWX_PROVIDER_SECRET"}
    assert_one_line_error(
        run_qywx("auth-url", "--auth", "QywxProxyTemp", env=no_secret),
        1,
        "the provider secret is not set: set QYWX_PROVIDER_SECRET",
    )
    wrong = {**env, "QYWX_PROVIDER_SECRET": "not-the-secret-00"}
    line = assert_one_line_error(
        run_qywx("auth-url", "--auth", "QywxProxyTemp", env=wrong, secrets=["not-the-secret-00"]),
        1,
        "service/get_provider_token",
        "40001",
    )
    assert "not-the-secret" not in line
    install(env)
    assert_one_line_error(
        run_qywx(
            "jsapi-sign",
            "--auth",
            "QywxProxyTemp",
            "--corp-id",
            "wwnever0000000001",
            "--url",
            "https://app.example.com/",
            env=env,
        ),
        1,
        "never authorized",
    )
    assert_one_line_error(
        run_qywx("auth-url", "--auth", "QywxProxyTemp", "--state", "no spaces", env=env),
        2,
        "1-32 letters and digits",
    )
    assert_one_line_error(
        run_qywx("jsapi-sign", "--url", "https://a.example.com/", env=env), 2, "--ticket"
    )


def test_qr_code_as_png_and_on_the_terminal(env: dict[str, str], tmp_path: Path) -> None:
    png = tmp_path / "install.png"
    proc = run_qywx("auth-url", "--auth", "QywxProxyTemp", "--qr", str(png), env=env)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    term = run_qywx("auth-url", "--auth", "QywxProxyTemp", "--qr", env=env)
    assert term.returncode == 0 and ("█" in term.stdout + term.stderr)
