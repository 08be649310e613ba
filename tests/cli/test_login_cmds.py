"""``qywx login-config``, ``qywx login`` and ``qywx login-url`` against a loopback FakeWeCom."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.app import SERVICE_ELEMENT, App
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.store import Store

REPO = Path(__file__).resolve().parents[2]
SUITE = "tj1234567890abcdef"
CORP = "ww1234567890abcdef"
SAMPLE_SECRETS = (
    "sample-8FGGBZPkm3buLjylPWWqkOw76adCdiDhzxAUNv4Z",
    "4CUdYrBwSjnWyz4yYNsz3PukTqABgnMBwKuGToYu25b",
    "Ob05nvp8DucDexAf5iTh6IZK",
)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def env(auths: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    server = make_server("127.0.0.1", 0, FakeWeCom(), server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    e = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    e.update(
        QYWX_AUTHS=str(auths),
        QYWX_DB=str(tmp_path / "qywx.db"),
        QYWX_API_BASE=f"http://127.0.0.1:{server.server_port}/cgi-bin",
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    yield e
    server.shutdown()
    server.server_close()


def deliver(env: dict[str, str], *events: tuple[str, str | None]) -> None:
    """Signed callbacks through the element API, handled inline."""
    with App(
        env["QYWX_AUTHS"], db=env["QYWX_DB"], api_base=env["QYWX_API_BASE"], background=False
    ) as app:
        service = app.getElement(SERVICE_ELEMENT)
        inst = app.getElement("auths.QywxProxyTemp").instance
        for n, (name, corp) in enumerate(events):
            xml = ev.build_event_xml(name, suite_id=SUITE, corp_id=corp)
            sealed = inst.crypto().encrypt_msg(xml, SUITE, str(int(time.time())), str(n))
            reply = service.notify(
                sealed.nonce, sealed.msg_signature, sealed.timestamp, body=sealed.request_xml(SUITE)
            )
            assert reply.text == "success"


@pytest.fixture
def authorized(env: dict[str, str]) -> int:
    """The instance's corp has installed the app; returns its agentid."""
    deliver(env, ("suite_ticket", None), ("create_auth", CORP))
    with Store(env["QYWX_DB"]) as store:
        auth = store.get_corp_auth(CORP, SUITE)
    assert auth is not None and auth.agent_id is not None
    return auth.agent_id


def qywx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "qywx_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    for secret in SAMPLE_SECRETS:
        assert secret not in proc.stdout + proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert proc.returncode == code
    assert proc.stdout == ""
    assert proc.stderr.startswith("qywx: error: ") and proc.stderr.count("\n") == 1
    for fragment in fragments:
        assert fragment in proc.stderr


# -- login-config --------------------------------------------------------------------------


def test_login_config_json_is_get_login_config(env: dict[str, str], authorized: int) -> None:
    proc = qywx(env, "login-config", "--auth", "QywxProxyTemp", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["suiteId"] == SUITE and doc["corpId"] == CORP
    assert (doc["agentId"], doc["authorized"]) == (authorized, True)
    assert doc["authType"] == "auths.loginTypes.QywxProxyType"
    text = qywx(env, "login-config", "--auth", "QywxProxyTemp")
    assert str(authorized) in text.stdout and SUITE in text.stdout


def test_login_config_of_an_unauthorized_instance(env: dict[str, str], authorized: int) -> None:
    proc = qywx(env, "login-config", "--auth", "QywxProxyCompanyA", "-f", "json")
    doc = json.loads(proc.stdout)
    assert (doc["authorized"], doc["agentId"]) == (False, None)
    text = qywx(env, "login-config", "--auth", "QywxProxyCompanyA")
    assert "has not authorized" in text.stderr


# -- login ---------------------------------------------------------------------------------


def test_login_issues_a_login_code_and_the_wecom_code_is_single_use(
    env: dict[str, str], authorized: int
) -> None:
    args = ["login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--code", "CODE-zhangsan"]
    proc = qywx(env, *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["userId"], doc["corpId"], doc["loginType"]) == ("zhangsan", CORP, "workbench")
    assert len(doc["loginCode"]) >= 43
    assert doc["corpList"] == [
        {"corpId": CORP, "corpName": doc["corpList"][0]["corpName"], "agentId": authorized}
    ]
    again = qywx(env, *args)
    one_line_error(again, 1, "errcode 40029", "already used")


def test_qr_login_and_text_output(env: dict[str, str], authorized: int) -> None:
    proc = qywx(
        env, "login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--code", "CODE-lisi",
        "--type", "qr",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "lisi" in proc.stdout and "single use" in proc.stderr


def test_login_refusals(env: dict[str, str], authorized: int) -> None:
    base = ["login", "--auth", "QywxProxyTemp", "--code", "CODE-x"]
    one_line_error(qywx(env, *base, "--corp-id", "wwother0000000001"), 1, "has not authorized")
    one_line_error(qywx(env, *base, "--corp-id", CORP, "--type", "sms"), 2, "--type")
    one_line_error(qywx(env, *base[:1], "--auth", "Nope", "--corp-id", CORP, "--code", "c"), 2)
    deliver(env, ("cancel_auth", CORP))
    one_line_error(qywx(env, *base, "--corp-id", CORP), 1, "cancelled")


def test_login_needs_an_existing_database(env: dict[str, str]) -> None:
    proc = qywx(env, "login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--code", "c")
    one_line_error(proc, 1, "no database at")
    assert not Path(env["QYWX_DB"]).exists()


# -- login-url -----------------------------------------------------------------------------


def test_login_url_text_is_just_the_url(env: dict[str, str], authorized: int) -> None:
    proc = qywx(
        env, "login-url", "--auth", "QywxProxyTemp",
        "--redirect-uri", "https://app.example.com/cb?next=/a&b=1", "--state", "abc123",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=ww1234567890abcdef"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb%3Fnext%3D%2Fa%26b%3D1"
        f"&response_type=code&scope=snsapi_base&state=abc123&agentid={authorized}"
        "#wechat_redirect\n"
    )


def test_qr_login_url_json_and_a_generated_state(env: dict[str, str], authorized: int) -> None:
    proc = qywx(
        env, "login-url", "--auth", "QywxProxyDefault", "--type", "qr", "--corp-id", CORP,
        "--redirect-uri", "https://app.example.com/cb", "-f", "json",
    )  # fmt: skip
    assert proc.returncode == 1  # QywxProxyDefault's suite was never authorized by the corp
    proc = qywx(
        env, "login-url", "--auth", "QywxProxyTemp", "--type", "qr",
        "--redirect-uri", "https://app.example.com/cb", "-f", "json",
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert (doc["loginType"], doc["corpId"], doc["agentId"]) == ("qr", CORP, authorized)
    assert doc["state"].isalnum() and len(doc["state"]) == 32
    parts = urlsplit(doc["url"])
    assert (parts.netloc, parts.path) == ("login.work.weixin.qq.com", "/wwlogin/sso/login")
    assert parse_qs(parts.query) == {
        "login_type": ["CorpApp"],
        "appid": [CORP],
        "agentid": [str(authorized)],
        "redirect_uri": ["https://app.example.com/cb"],
        "state": [doc["state"]],
    }


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--redirect-uri", "https%3A%2F%2Fapp.example.com"], "unencoded"),
        (["--redirect-uri", "https://app.example.com", "--state", "a-b"], "letters and digits"),
        (["--redirect-uri", "https://app.example.com", "--type", "sms"], "--type"),
    ],
)
def test_login_url_usage_errors(
    env: dict[str, str], authorized: int, args: list[str], fragment: str
) -> None:
    one_line_error(qywx(env, "login-url", "--auth", "QywxProxyTemp", *args), 2, fragment)
