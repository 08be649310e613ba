"""The whole pipeline, offline: real ``qywx fake-wecom`` and ``qywx serve`` processes.

Requests are signed and encrypted here with an independent implementation of
WeCom's scheme (``tests.helpers``, on the ``cryptography`` package, wecom-protocol.md §1),
so a bug shared by qywx's encrypting and decrypting halves cannot hide.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import independent_encrypt, run_qywx, sha1_sign

INSTANCE = "QywxProxyTemp"
CORP = "ww1234567890abcdef"
FAULT_CORP = "wwe2efault00000001"


# -- WeCom's side, written independently of qywx_cli.core.crypto ---------------------------


class WeComSender:
    """Signs and encrypts callbacks the way WeCom does (§1.1-1.5)."""

    def __init__(self, auths: Path, name: str = INSTANCE) -> None:
        cfg = json.loads((auths / name / f"{name}.json").read_text(encoding="utf-8"))
        auth = cfg["authConfig"]
        self.suite_id: str = auth["suiteId"]
        self.corp_id: str = cfg["corpId"]
        self.token: str = auth["token"]
        self.key43: str = auth["encodingAESKey"]

    def encrypt(self, message: str, receive_id: str) -> str:
        return independent_encrypt(self.key43, message, receive_id)

    def signature(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return sha1_sign(self.token, timestamp, nonce, encrypt)

    def command(self, fields: list[tuple[str, str]]) -> tuple[dict[str, str], bytes]:
        """A command callback (receiveid = suite id): query parameters and POST body."""
        xml = "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields) + "</xml>"
        encrypt = self.encrypt(xml, self.suite_id)
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**10))
        query = {
            "msg_signature": self.signature(timestamp, nonce, encrypt),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        body = (
            f"<xml><ToUserName><![CDATA[{self.suite_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
        )
        return query, body.encode("utf-8")

    def event(self, info_type: str, **extra: str) -> tuple[dict[str, str], bytes]:
        fields = [("SuiteId", self.suite_id), ("InfoType", info_type)]
        fields.append(("TimeStamp", str(int(time.time()))))
        return self.command(fields + list(extra.items()))


def auth_code(corp: str) -> str:
    return f"AUTHCODE-{corp}-{secrets.token_hex(32)}"


# -- the operator's side: the real CLI -------------------------------------------------------


def log(env: dict[str, str]) -> list[dict[str, Any]]:
    proc = run_qywx("log", "list", "--format", "json", "--limit", "100", env=env)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def record_when(env: dict[str, str], record_id: int, *statuses: str) -> dict[str, Any]:
    """The log row of ``record_id`` once it reaches one of ``statuses`` (handling is async)."""

    def look() -> dict[str, Any] | None:
        row = next(r for r in log(env) if r["id"] == record_id)
        return row if row["status"] in statuses else None

    row = wait_for(look, timeout=15, interval=0.2)
    assert row, f"record {record_id} never became {statuses}: {log(env)}"
    return row


def post(
    client: httpx.Client, server: Proc, request: tuple[dict[str, str], bytes]
) -> httpx.Response:
    query, body = request
    return client.post(
        f"{server.url}/notify/{INSTANCE}",
        params=query,
        content=body,
        headers={"Content-Type": "text/xml"},
    )


@pytest.fixture
def fake_wecom(env: dict[str, str], tmp_path: Path) -> Iterator[Proc]:
    """WeCom's side as a user runs it here: the ``qywx fake-wecom`` command (the other
    modules serve a FakeWeCom from the test process)."""
    proc = Proc(["fake-wecom", "--port", "0"], env, tmp_path)
    env["QYWX_API_BASE"] = proc.url + "/cgi-bin"
    yield proc
    proc.stop()


def newest_id(env: dict[str, str]) -> int:
    """The id of the request just sent (read from the store, not through the CLI)."""
    with Store(env["QYWX_DB"]) as store:
        return store.list_callbacks(limit=1)[0].id


def test_callbacks_to_login_offline(
    env: dict[str, str], fake_wecom: Proc, server: Proc, tmp_path: Path
) -> None:
    wecom = WeComSender(tmp_path / "auths")
    client = http()
    fake = fake_wecom.url

    # suite_ticket: exactly "success", then processed in the log.
    ticket = "e2eTICKET" + secrets.token_hex(16)
    request = wecom.event("suite_ticket", SuiteTicket=ticket)
    reply = post(client, server, request)
    assert (reply.status_code, reply.content) == (200, b"success")
    ticket_id = newest_id(env)
    assert record_when(env, ticket_id, "processed")["info_type"] == "suite_ticket"

    # The same request again is a replay: acknowledged, logged as duplicate, not re-run.
    replay = post(client, server, request)
    assert (replay.status_code, replay.content) == (200, b"success")
    dup = log(env)[0]
    assert (dup["status"], dup["info_type"]) == ("duplicate", "suite_ticket")

    # create_auth: the permanent code is stored and the corp's app token cached.
    reply = post(client, server, wecom.event("create_auth", AuthCode=auth_code(CORP)))
    assert reply.content == b"success"
    record_when(env, newest_id(env), "processed")
    config = run_qywx("login-config", "--auth", INSTANCE, "--format", "json", env=env)
    cfg = json.loads(config.stdout)
    assert cfg["authorized"] is True and isinstance(cfg["agentId"], int)
    state = client.get(f"{fake}/fake/state").json()
    assert [p["corp_id"] for p in state["permanent_codes"]] == [CORP]
    assert state["calls"]["gettoken"] == 1  # the token was fetched once, and is cached
    with Store(env["QYWX_DB"]) as store:
        auth = store.get_corp_auth(CORP, wecom.suite_id)
        assert auth is not None and auth.permanent_code and auth.state == "active"
        assert store.get_token("corp", CORP) is not None

    # Login with the fake's OAuth codes; the same code twice is refused.
    login = ["login", "--auth", INSTANCE, "--corp-id", CORP, "--code", "CODE-zhangsan"]
    first = run_qywx(*login, "--format", "json", env=env)
    assert first.returncode == 0, first.stderr
    issued = json.loads(first.stdout)
    assert (issued["userId"], issued["corpId"]) == ("zhangsan", CORP)
    assert issued["loginCode"] and issued["corpList"][0]["corpId"] == CORP
    second = run_qywx(*login, env=env)
    assert second.returncode == 1 and "40029" in second.stderr

    # A WeCom fault fails the create_auth; the AuthCode was not spent (the fake
    # answers the fault before reading it), so a retry once the fault is used up works.
    fault = {"api": "get_permanent_code", "errcode": 40084, "count": 1}
    assert client.post(f"{fake}/fake/faults", json=fault).json()["errcode"] == 0
    reply = post(client, server, wecom.event("create_auth", AuthCode=auth_code(FAULT_CORP)))
    assert reply.content == b"success"  # acknowledged before the handler ran
    failed_id = newest_id(env)
    failed = record_when(env, failed_id, "failed")
    assert "40084" in failed["last_error"]
    assert client.get(f"{fake}/fake/state").json()["faults"] == {}
    retried = run_qywx("retry", "--failed", "--format", "json", env=env)
    assert retried.returncode == 0, retried.stderr
    (row,) = json.loads(retried.stdout)
    assert (row["id"], row["before"], row["after"], row["attempts"]) == (
        failed_id,
        "failed",
        "processed",
        2,
    )
    assert record_when(env, failed_id, "processed")["last_error"] is None

    # An org code names the corp; cancel_auth then shuts it out.
    assert run_qywx("org", "set-code", FAULT_CORP, "E2E-Corp", env=env).returncode == 0
    shown = json.loads(run_qywx("org", "show", "e2e-corp", "-f", "json", env=env).stdout)
    assert (shown["corp_id"], shown["state"]) == (FAULT_CORP, "active")
    reply = post(client, server, wecom.event("cancel_auth", AuthCorpId=FAULT_CORP))
    assert reply.content == b"success"
    record_when(env, newest_id(env), "processed")
    shown = json.loads(run_qywx("org", "show", "e2e-corp", "-f", "json", env=env).stdout)
    assert shown["state"] == "cancelled"
    refused = run_qywx(
        "login", "--auth", INSTANCE, "--corp-id", FAULT_CORP, "--code", "CODE-lisi", env=env
    )
    assert refused.returncode == 1 and "cancelled" in refused.stderr

    # The log keeps the ticket encrypted; --decrypt masks it unless asked.
    shown_log = run_qywx("log", "show", str(ticket_id), "--decrypt", "--format", "json", env=env)
    assert shown_log.returncode == 0, shown_log.stderr
    assert ticket not in shown_log.stdout
    decrypted = json.loads(shown_log.stdout)["decrypted"]
    assert decrypted["fields"]["SuiteTicket"] == f"{ticket[:3]}***{ticket[-3:]}"
    stats = json.loads(run_qywx("log", "stats", "--format", "json", env=env).stdout)
    assert stats["by_status"]["duplicate"] == 1 and stats["by_status"]["processed"] == 4
    fresh = next(t for t in stats["suite_tickets"] if t["suite_id"] == wecom.suite_id)
    assert fresh["stale"] is False


def test_url_handshake_and_a_forged_callback(
    env: dict[str, str], server: Proc, tmp_path: Path
) -> None:
    wecom = WeComSender(tmp_path / "auths")
    client = http()
    # GET verification: receiveid is the corp (§2.2); the reply is the bare plaintext.
    echo = "1616140317555161061"
    echostr = wecom.encrypt(echo, wecom.corp_id)
    timestamp, nonce = str(int(time.time())), "263014780"
    reply = client.get(
        f"{server.url}/notify/{INSTANCE}",
        params={
            "msg_signature": wecom.signature(timestamp, nonce, echostr),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        },
    )
    assert (reply.status_code, reply.content) == (200, echo.encode())
    # A callback signed with another token is refused and never reaches the log.
    query, body = wecom.event("suite_ticket", SuiteTicket="forged-ticket-0000")
    query["msg_signature"] = "0" * 40
    forged = client.post(f"{server.url}/notify/{INSTANCE}", params=query, content=body)
    assert forged.status_code == 403
    rows = log(env)
    assert [r["info_type"] for r in rows] == ["verify_url"]
