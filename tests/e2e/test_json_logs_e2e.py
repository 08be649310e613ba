"""``qywx serve --log-format json``: every line one JSON object, never a query or secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qywx_cli.core.config import find_instance
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import SAMPLE_SECRETS, LoopbackWeCom, WeComRequests


def _lines(proc: Proc) -> list[dict[str, object]]:
    docs = []
    for line in proc.log.splitlines():
        doc = json.loads(line)  # every line, the banner and waitress's too
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


@pytest.mark.parametrize("where", ["flag", "qywx.toml"])
def test_access_and_event_lines_are_json_without_secrets(
    where: str, env: dict[str, str], tmp_path: Path, auths: Path, fake_wecom: LoopbackWeCom
) -> None:
    args = ["serve", "--port", "0", "--threads", "4", "--verbose"]
    if where == "flag":
        args += ["--log-format", "json"]
    else:
        (tmp_path / "qywx.toml").write_text('[serve]\nlog_format = "json"\n', encoding="utf-8")
    proc = Proc(args, env, tmp_path)
    wecom = WeComRequests(find_instance("QywxProxyTemp", auths, {}))
    handshake = wecom.handshake()
    ticket = wecom.suite_ticket("json-log-ticket-0123456789abcdef")
    create = wecom.callback("create_auth", corp="wwjsonlog000000001")
    try:
        with http() as client:
            url = f"{proc.url}/notify/QywxProxyTemp"
            assert client.get(url, params=handshake.query).text == "8848123456789"
            assert client.post(url, params=ticket.query, content=ticket.body).text == "success"
            forged = {**ticket.query, "msg_signature": "0" * 40}
            assert client.post(url, params=forged, content=ticket.body).status_code == 403
            assert client.post(url, params=create.query, content=create.body).text == "success"
            assert wait_for(lambda: '"logger": "qywx.events"' in proc.log), proc.log
    finally:
        assert proc.stop() == 0
    docs = _lines(proc)
    access = [d for d in docs if d["logger"] == "qywx.access"]
    assert [(d["route"], d["status"], d["outcome"], d["event"]) for d in access] == [
        ("notify", 200, "handshake", "verify_url"),
        ("notify", 200, "accepted", "suite_ticket"),
        ("notify", 403, "rejected: crypto-40001", None),
        ("notify", 200, "accepted", "create_auth"),
    ]
    for d in access:
        assert d["instance"] == "QywxProxyTemp" and d["path"] == "/notify/QywxProxyTemp"
        assert isinstance(d["latency_ms"], float) and str(d["time"]).endswith("+00:00")
    # A forged request is not recorded; the others each name their record.
    assert [isinstance(d["record_id"], int) for d in access] == [True, True, False, True]
    events = [d for d in docs if d["logger"] == "qywx.events"]
    assert [(d["event"], d["outcome"], d["record_id"]) for d in events] == [
        ("create_auth", "processed", access[3]["record_id"])
    ]
    never = [
        *SAMPLE_SECRETS,
        handshake.query["echostr"],
        handshake.query["msg_signature"],
        ticket.query["msg_signature"],
        "json-log-ticket-0123456789abcdef",
        "msg_signature=",
        "echostr",
        "?",
    ]
    for secret in never:
        assert secret not in proc.log, secret
