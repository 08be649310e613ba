"""`qywx serve` over real loopback HTTP, driven by independent code and hostile input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import (
    SAMPLES,
    LoopbackWeCom,
    assert_one_line_error,
    auth_config,
    independent_encrypt,
    loopback_fake,
    qywx_env,
    run_qywx,
    sha1_sign,
)

SUITE = "tj1234567890abcdef"  # QywxProxyTemp in sample_auths


def independent_envelope(
    cfg: dict[str, str], xml: str, receive_id: str, timestamp: str | None = None
) -> tuple[dict[str, str], bytes]:
    """Encrypt and sign as WeCom does, with the independent implementation of tests.helpers."""
    encrypt = independent_encrypt(cfg["encodingAESKey"], xml, receive_id)
    ts, nonce = timestamp or str(int(time.time())), str(int.from_bytes(os.urandom(4), "big"))
    sig = sha1_sign(cfg["token"], ts, nonce, encrypt)
    body = (
        f"<xml><ToUserName><![CDATA[{SUITE}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]>"
        f"</Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    ).encode()
    return {"msg_signature": sig, "timestamp": ts, "nonce": nonce}, body


def ticket_xml(ticket: str) -> str:
    return (
        f"<xml><SuiteId><![CDATA[{SUITE}]]></SuiteId><InfoType><![CDATA[suite_ticket]]>"
        f"</InfoType><TimeStamp>{int(time.time())}</TimeStamp><SuiteTicket><![CDATA[{ticket}]]>"
        "</SuiteTicket></xml>"
    )


def records(env: dict[str, str]) -> list:  # type: ignore[type-arg]
    with Store(env["QYWX_DB"]) as store:
        return store.list_callbacks(limit=100)


def test_handshake_with_the_official_vector(
    env: dict[str, str], tmp_path: Path, vectors: list[dict[str, str]], fake_wecom: LoopbackWeCom
) -> None:
    v = next(x for x in vectors if x["kind"] == "verify_url" and "query" in x)
    folder = Path(env["QYWX_AUTHS"]) / "VectorCorp"
    folder.mkdir()
    (folder / "e.json").write_text(
        json.dumps({"title": "vector", "type": "auths.loginTypes.QywxProxyType"})
    )
    (folder / "VectorCorp.json").write_text(
        json.dumps(
            {
                "authConfig": {
                    "suiteId": "dkvectorsuite0001",
                    "suiteSecret": "s3cretvalue",
                    "encodingAESKey": v["encodingAESKey"],
                    "token": v["token"],
                },
                "corpId": v["receiveId"],
            }
        )
    )
    server = Proc(["serve", "--port", "0"], env, tmp_path)
    try:
        with http() as client:
            # exactly as WeCom sends it: the captured, percent-encoded query
            r = client.get(f"{server.url}/notify/VectorCorp?{v['query']}")
            assert (r.status_code, r.text) == (200, v["expect_plaintext"])
            r = client.get(f"{server.url}/notify?{v['query']}")  # bare: found by signature
            assert (r.status_code, r.text) == (200, v["expect_plaintext"])
            bad = v["query"].replace("nonce=", "nonce=1")
            assert client.get(f"{server.url}/notify/VectorCorp?{bad}").status_code == 403
    finally:
        assert server.stop() == 0


def test_suite_ticket_from_independent_code_then_replay(server: Proc, env: dict[str, str]) -> None:
    cfg = auth_config(Path(env["QYWX_AUTHS"]))
    params, body = independent_envelope(cfg, ticket_xml("T" * 40), SUITE)
    with http() as client:
        r = client.post(f"{server.url}/notify/QywxProxyTemp", params=params, content=body)
        assert (r.status_code, r.text) == (200, "success")
        r2 = client.post(f"{server.url}/notify/QywxProxyTemp", params=params, content=body)
        assert (r2.status_code, r2.text) == (200, "success")  # idempotent: not re-run
    recs = wait_for(lambda: [x for x in records(env) if x.status == "processed"])
    assert [x.info_type for x in recs] == ["suite_ticket"]
    statuses = sorted(x.status for x in records(env))
    assert statuses == ["duplicate", "processed"]
    with Store(env["QYWX_DB"]) as store:
        latest = store.latest_suite_ticket(SUITE)
        assert latest is not None and latest.ticket == "T" * 40
    assert "T" * 40 not in server.log  # the ticket never reaches the log


def test_bare_notify_routes_by_signature(server: Proc, env: dict[str, str]) -> None:
    cfg = auth_config(Path(env["QYWX_AUTHS"]), "QywxProxyCompanyB")
    xml = ticket_xml("B" * 40).replace(SUITE, "dk7f3a9c2e51b04d29")
    params, body = independent_envelope(cfg, xml, "dk7f3a9c2e51b04d29")
    with http() as client:
        r = client.post(f"{server.url}/notify", params=params, content=body)
    assert (r.status_code, r.text) == (200, "success")
    assert wait_for(lambda: [x.instance for x in records(env)]) == ["QywxProxyCompanyB"]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One server for the tests that only read its answers to their own requests (what
    they leave in the database or log is not looked at): started once per worker that
    runs them, not once per test."""
    root = tmp_path_factory.mktemp("serve")
    shutil.copytree(SAMPLES, root / "auths")
    env = qywx_env(QYWX_AUTHS=str(root / "auths"), QYWX_DB=str(root / "qywx.db"))
    with loopback_fake() as fake:
        env["QYWX_API_BASE"] = fake.api_base
        proc = Proc(["serve", "--port", "0", "--threads", "4"], env, root)
        try:
            yield proc
        finally:
            proc.stop()


BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;'
    b'&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><Encrypt>&c;</Encrypt></xml>'
)
XXE = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<xml><Encrypt>&e;</Encrypt></xml>"
)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (XXE, 400),
        (BOMB, 400),
        (os.urandom(2048), 400),
        (b"<xml><Encrypt>%%%</Encrypt></xml>", 403),
        (b"<xml>" * 5000, 400),
        (b"\xff\xfe<\x00x\x00m\x00l\x00>", 400),
    ],
)
def test_hostile_bodies_get_4xx_and_server_stays_healthy(
    shared_server: Proc, body: bytes, status: int
) -> None:
    q = "msg_signature=0123456789abcdef0123456789abcdef01234567&timestamp=1&nonce=2"
    with http() as client:
        r = client.post(f"{shared_server.url}/notify/QywxProxyTemp?{q}", content=body)
        assert r.status_code == status
        assert "Traceback" not in r.text and "root:" not in r.text
        assert client.get(f"{shared_server.url}/healthz").json()["ok"] is True


def test_bad_signature_and_oversize_and_methods(server: Proc, env: dict[str, str]) -> None:
    cfg = auth_config(Path(env["QYWX_AUTHS"]))
    params, body = independent_envelope(cfg, ticket_xml("X" * 40), SUITE)
    with http() as client:
        wrong = dict(params, msg_signature=hashlib.sha1(b"x").hexdigest())
        assert (
            client.post(
                f"{server.url}/notify/QywxProxyTemp", params=wrong, content=body
            ).status_code
            == 403
        )
        big = client.post(
            f"{server.url}/notify/QywxProxyTemp",
            params=params,
            content=b"<xml>" + b"A" * (3 * 1024 * 1024) + b"</xml>",
        )
        assert big.status_code == 413
        assert client.put(f"{server.url}/notify", content=b"x").status_code == 405
        assert client.get(f"{server.url}/notify/..%2F..%2Fetc").status_code == 404
        assert client.get(f"{server.url}/notify/QywxProxyTemp?msg_signature=a").status_code == 400
        assert client.get(f"{server.url}/healthz").status_code == 200
    # nothing signed reached the log, and the server log holds no secret
    assert records(env) == []
    for secret in (cfg["token"], cfg["encodingAESKey"], cfg["suiteSecret"]):
        assert secret not in server.log


def test_stale_and_wrong_receive_id_are_refused_and_logged(
    server: Proc, env: dict[str, str]
) -> None:
    cfg = auth_config(Path(env["QYWX_AUTHS"]))
    with http() as client:
        params, body = independent_envelope(
            cfg, ticket_xml("S" * 40), SUITE, timestamp=str(int(time.time()) - 3600)
        )
        r = client.post(f"{server.url}/notify/QywxProxyTemp", params=params, content=body)
        assert r.status_code == 403 and "stale" in r.text
        params, body = independent_envelope(cfg, ticket_xml("W" * 40), "wwsomeoneelse")
        r = client.post(f"{server.url}/notify/QywxProxyTemp", params=params, content=body)
        assert r.status_code == 403 and "receiveid" in r.text
    assert sorted(x.status for x in records(env)) == ["rejected", "rejected"]


def test_sigterm_stops_cleanly(
    env: dict[str, str], tmp_path: Path, fake_wecom: LoopbackWeCom
) -> None:
    server = Proc(["serve", "--port", "0"], env, tmp_path)
    assert server.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.log


def test_serve_without_instances_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    env = dict(env, QYWX_AUTHS=str(tmp_path / "missing"))
    assert_one_line_error(run_qywx("serve", "--port", "0", env=env, timeout=30), 2, "auths")


@pytest.mark.parametrize(
    ("command", "args", "words"),
    [
        ("serve", ["--port", "83666"], "'--port': 83666 is not in the range 0<=x<=65535"),
        ("serve", ["--port", "-1"], "'--port': -1 is not in the range 0<=x<=65535"),
        ("serve", ["--host", "999.1.1.1", "--port", "0"], "not a valid host"),
        ("serve", ["--threads", "0"], "--threads"),
        ("fake-wecom", ["--port", "70000"], "--port must be between 0 and 65535"),
        ("fake-wecom", ["--port", "0", "--push-to", "http://[::1", "--auth", "QywxProxyTemp"],
         "--push-to must be an http"),
    ],
)  # fmt: skip
def test_bad_listen_options_are_usage_errors(
    env: dict[str, str], command: str, args: list[str], words: str
) -> None:
    """The socket layer takes a port modulo 65536; qywx refuses instead of listening elsewhere."""
    assert_one_line_error(run_qywx(command, *args, env=env, timeout=30), 2, words)


def test_access_log_shows_refusals_always_and_accepted_with_verbose(
    env: dict[str, str], tmp_path: Path, fake_wecom: LoopbackWeCom
) -> None:
    cfg = auth_config(Path(env["QYWX_AUTHS"]))
    for verbose in (False, True):
        server = Proc(["serve", "--port", "0", *(["--verbose"] if verbose else [])], env, tmp_path)
        try:
            params, body = independent_envelope(cfg, ticket_xml(f"V{verbose}" * 20), SUITE)
            with http() as client:
                ok = client.post(f"{server.url}/notify/QywxProxyTemp", params=params, content=body)
                bad = client.post(
                    f"{server.url}/notify/QywxProxyTemp", params=params, content=b"garbage"
                )
            assert (ok.text, bad.status_code) == ("success", 400)

            def rejected(running: Proc = server) -> bool:
                return "outcome=rejected" in running.log

            assert wait_for(rejected)
        finally:
            server.stop()
        assert ("outcome=accepted" in server.log) is verbose
        assert params["msg_signature"] not in server.log  # never the query string
