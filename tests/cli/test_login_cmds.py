"""``qywx login-config``, ``qywx login`` and ``qywx login-url`` against a loopback FakeWeCom."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from qywx_cli.core.app import App
from qywx_cli.core.store import Store
from tests.helpers import CallbackSender, assert_one_line_error, run_qywx

SUITE = "tj1234567890abcdef"
CORP = "ww1234567890abcdef"


def deliver(env: dict[str, str], *events: tuple[str, str | None]) -> None:
    """Signed callbacks through the element API, handled inline."""
    with App(
        env["QYWX_AUTHS"], db=env["QYWX_DB"], api_base=env["QYWX_API_BASE"], background=False
    ) as app:
        sender = CallbackSender(app)
        for name, corp in events:
            sender.send(name, corp)


@pytest.fixture
def authorized(wecom_env: dict[str, str]) -> int:
    """The instance's corp has installed the app; returns its agentid."""
    deliver(wecom_env, ("suite_ticket", None), ("create_auth", CORP))
    with Store(wecom_env["QYWX_DB"]) as store:
        auth = store.get_corp_auth(CORP, SUITE)
    assert auth is not None and auth.agent_id is not None
    return auth.agent_id


# -- login-config --------------------------------------------------------------------------


def test_login_config_json_is_get_login_config(wecom_env: dict[str, str], authorized: int) -> None:
    proc = run_qywx("login-config", "--auth", "QywxProxyTemp", "--format", "json", env=wecom_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["suiteId"] == SUITE and doc["corpId"] == CORP
    assert (doc["agentId"], doc["authorized"]) == (authorized, True)
    assert doc["authType"] == "auths.loginTypes.QywxProxyType"
    text = run_qywx("login-config", "--auth", "QywxProxyTemp", env=wecom_env)
    assert str(authorized) in text.stdout and SUITE in text.stdout
    # a table for people: yes/no, not Python's True/False
    assert "True" not in text.stdout and "False" not in text.stdout, text.stdout
    assert any("authorized" in line and "yes" in line for line in text.stdout.splitlines())


def test_login_config_of_an_unauthorized_instance(
    wecom_env: dict[str, str], authorized: int
) -> None:
    proc = run_qywx("login-config", "--auth", "QywxProxyCompanyA", "-f", "json", env=wecom_env)
    doc = json.loads(proc.stdout)
    assert (doc["authorized"], doc["agentId"]) == (False, None)
    text = run_qywx("login-config", "--auth", "QywxProxyCompanyA", env=wecom_env)
    assert "has not authorized" in text.stderr


# -- login ---------------------------------------------------------------------------------


def test_login_issues_a_login_code_and_the_wecom_code_is_single_use(
    wecom_env: dict[str, str], authorized: int
) -> None:
    args = ["login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--code", "CODE-zhangsan"]
    proc = run_qywx(*args, "--format", "json", env=wecom_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["userId"], doc["corpId"], doc["loginType"]) == ("zhangsan", CORP, "workbench")
    assert len(doc["loginCode"]) >= 43
    assert doc["corpList"] == [
        {"corpId": CORP, "corpName": doc["corpList"][0]["corpName"], "agentId": authorized}
    ]
    again = run_qywx(*args, env=wecom_env)
    assert_one_line_error(again, 1, "errcode 40029", "already used")


def test_qr_login_and_text_output(wecom_env: dict[str, str], authorized: int) -> None:
    proc = run_qywx(
        "login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--code", "CODE-lisi",
        "--type", "qr",
        env=wecom_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "lisi" in proc.stdout and "single use" in proc.stderr


def test_login_refusals(wecom_env: dict[str, str], authorized: int) -> None:
    def login(*args: str) -> subprocess.CompletedProcess[str]:
        return run_qywx("login", *args, env=wecom_env)

    base = ["--auth", "QywxProxyTemp", "--code", "CODE-x"]
    assert_one_line_error(login(*base, "--corp-id", "wwother0000000001"), 1, "has not authorized")
    assert_one_line_error(login(*base, "--corp-id", CORP, "--type", "sms"), 2, "--type")
    assert_one_line_error(login("--auth", "Nope", "--corp-id", CORP, "--code", "c"), 2)
    deliver(wecom_env, ("cancel_auth", CORP))
    assert_one_line_error(login(*base, "--corp-id", CORP), 1, "cancelled")


def test_login_needs_an_existing_database(wecom_env: dict[str, str]) -> None:
    proc = run_qywx(
        "login", "--auth", "QywxProxyTemp", "--corp-id", CORP, "--code", "c", env=wecom_env
    )
    assert_one_line_error(proc, 1, "no database at")
    assert not Path(wecom_env["QYWX_DB"]).exists()


# -- login-url -----------------------------------------------------------------------------


def test_login_url_text_is_just_the_url(wecom_env: dict[str, str], authorized: int) -> None:
    proc = run_qywx(
        "login-url", "--auth", "QywxProxyTemp",
        "--redirect-uri", "https://app.example.com/cb?next=/a&b=1", "--state", "abc123",
        env=wecom_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=ww1234567890abcdef"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb%3Fnext%3D%2Fa%26b%3D1"
        f"&response_type=code&scope=snsapi_base&state=abc123&agentid={authorized}"
        "#wechat_redirect\n"
    )


def test_qr_login_url_json_and_a_generated_state(
    wecom_env: dict[str, str], authorized: int
) -> None:
    proc = run_qywx(
        "login-url", "--auth", "QywxProxyDefault", "--type", "qr", "--corp-id", CORP,
        "--redirect-uri", "https://app.example.com/cb", "-f", "json",
        env=wecom_env,
    )  # fmt: skip
    assert proc.returncode == 1  # QywxProxyDefault's suite was never authorized by the corp
    proc = run_qywx(
        "login-url", "--auth", "QywxProxyTemp", "--type", "qr",
        "--redirect-uri", "https://app.example.com/cb", "-f", "json",
        env=wecom_env,
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
    wecom_env: dict[str, str], authorized: int, args: list[str], fragment: str
) -> None:
    assert_one_line_error(
        run_qywx("login-url", "--auth", "QywxProxyTemp", *args, env=wecom_env), 2, fragment
    )
