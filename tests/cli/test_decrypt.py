"""`qywx decrypt`: published vectors, independent envelopes, every input shape, every refusal."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    assert_one_line_error,
    auth_config,
    independent_encrypt,
    one_json,
    run_qywx,
    sha1_sign,
)


def qywx(
    env: dict[str, str], *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; errors are one line (a json run also prints its document)."""
    out = run_qywx(*args, env=env, cwd=Path(env["QYWX_AUTHS"]).parent, input=input)
    if out.returncode != 0:
        assert_one_line_error(out, stdout_empty=False)
    return out


def _vector(vectors: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(v for v in vectors if v["name"] == name)


def _keys(v: dict[str, Any]) -> list[str]:
    return ["--token", v["token"], "--encoding-aes-key", v["encodingAESKey"]]


# -- published vectors ----------------------------------------------------------------------


def test_verify_vector_as_a_captured_url(
    cli_env: dict[str, str], vectors: list[dict[str, Any]]
) -> None:
    v = _vector(vectors, "wecom-php-sample-verify-url")
    out = qywx(cli_env, "decrypt", *_keys(v), "--url", "http://host/cb?" + v["query"], "-f", "json")
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert doc["plaintext"] == v["expect_plaintext"]
    assert doc["signature_valid"] is True and doc["kind"] == "verify_url"
    assert doc["receive_id"] == v["receiveId"] and doc["receive_id_kind"] == "unknown"
    assert doc["fields"] == {}
    text = qywx(cli_env, "decrypt", *_keys(v), "--url", "http://host/cb?" + v["query"])
    assert text.returncode == 0 and text.stdout.rstrip().endswith(v["expect_plaintext"])


def test_post_vector_via_url_and_stdin_parts_file_and_dump(
    cli_env: dict[str, str], vectors: list[dict[str, Any]], tmp_path: Path
) -> None:
    v = _vector(vectors, "wecom-php-sample-decrypt-msg")
    body = v["body"].encode()
    query = f"msg_signature={v['msg_signature']}&timestamp={v['timestamp']}&nonce={v['nonce']}"
    parts = [
        "--msg-signature",
        v["msg_signature"],
        "--timestamp",
        v["timestamp"],
        "--nonce",
        v["nonce"],
    ]
    (tmp_path / "body.xml").write_bytes(body)
    dump = (
        f"POST /cgi-bin/wxpush?{query} HTTP/1.1\r\nHost: qyapi\r\n"
        f"Content-Type: text/xml\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    (tmp_path / "request.http").write_bytes(dump)
    runs = [
        qywx(
            cli_env,
            "decrypt",
            *_keys(v),
            "--url",
            f"http://host/cb?{query}",
            "-",
            "-f",
            "json",
            input=body,
        ),
        qywx(cli_env, "decrypt", *_keys(v), *parts, "-", "-f", "json", input=body),
        qywx(cli_env, "decrypt", *_keys(v), *parts, str(tmp_path / "body.xml"), "-f", "json"),
        qywx(cli_env, "decrypt", *_keys(v), str(tmp_path / "request.http"), "-f", "json"),
        qywx(cli_env, "decrypt", *_keys(v), "-", "-f", "json", input=dump),
    ]
    for out in runs:
        assert out.returncode == 0, out.stderr
        doc = one_json(out)
        assert doc["plaintext"] == v["expect_plaintext"]
        assert doc["kind"] == "callback" and doc["info_type"] == "text"
        assert doc["fields"]["Content"] == "hello" and doc["fields"]["AgentID"] == "218"


def test_wrong_signature_exits_1_with_wecom_code(
    cli_env: dict[str, str], vectors: list[dict[str, Any]]
) -> None:
    v = _vector(vectors, "wechatpy-check-signature")
    wrong = [
        "--msg-signature",
        v["msg_signature"],
        "--timestamp",
        v["timestamp"],
        "--nonce",
        v["expect_signature_error_with_nonce"],
        "--echostr",
        v["echostr"],
    ]
    out = qywx(cli_env, "decrypt", *_keys(v), *wrong)
    assert out.returncode == 1 and out.stdout == ""
    assert "-40001" in out.stderr and out.stderr.startswith("qywx: error: signature mismatch")
    doc = one_json(qywx(cli_env, "decrypt", *_keys(v), *wrong, "-f", "json"))
    assert doc == {"ok": False, "error": {"code": -40001, "message": doc["error"]["message"]}}

    forced = qywx(cli_env, "decrypt", *_keys(v), *wrong, "--no-verify", "-f", "json")
    assert forced.returncode == 0
    doc = one_json(forced)
    assert doc["signature_valid"] is False and doc["receive_id"] == v["receiveId"]
    assert "signature mismatch" in forced.stderr and "--no-verify" in forced.stderr

    right = [*wrong[:5], v["nonce"], *wrong[6:]]
    assert qywx(cli_env, "decrypt", *_keys(v), *right).returncode == 0


# -- with an auths/ instance ----------------------------------------------------------------


def _envelope(auths: Path, name: str, message: str, receive_id: str) -> tuple[str, bytes]:
    conf = auth_config(auths, name)
    encrypt = independent_encrypt(conf["encodingAESKey"], message, receive_id)
    sig = sha1_sign(conf["token"], "1700000000", "4242", encrypt)
    body = f"<xml><ToUserName>x</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return f"/notify/{name}?msg_signature={sig}&timestamp=1700000000&nonce=4242", body.encode()


TICKET_XML = (
    "<xml><SuiteId><![CDATA[tj1234567890abcdef]]></SuiteId>"
    "<InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>1700000000</TimeStamp>"
    "<SuiteTicket><![CDATA[LIVE-TICKET-0123456789-abcdefghij]]></SuiteTicket></xml>"
)


@pytest.mark.parametrize(
    "receive_id, kind",
    [
        ("tj1234567890abcdef", "suite"),
        ("ww1234567890abcdef", "provider_corp"),
        ("wwsomeoneelse", "unknown"),
    ],
)
def test_independent_envelope_decrypts_with_the_instance(
    cli_env: dict[str, str], auths: Path, receive_id: str, kind: str
) -> None:
    query, body = _envelope(auths, "QywxProxyTemp", TICKET_XML, receive_id)
    out = qywx(
        cli_env, "decrypt", "--auth", "QywxProxyTemp", "--url", query, "-", "-f", "json", input=body
    )
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert (doc["receive_id"], doc["receive_id_kind"]) == (receive_id, kind)
    assert doc["info_type"] == "suite_ticket"
    # A live SuiteTicket is masked in both the fields and the plaintext.
    assert "LIVE-TICKET-0123456789-abcdefghij" not in out.stdout
    assert doc["fields"]["SuiteTicket"] == "LIV***hij"
    assert "<SuiteTicket><![CDATA[LIV***hij]]></SuiteTicket>" in doc["plaintext"]


def test_show_secrets_and_auth_by_path_and_authorized_corp(
    cli_env: dict[str, str], auths: Path
) -> None:
    from qywx_cli.core.store import Store

    with Store(cli_env["QYWX_DB"]) as store:
        store.upsert_corp_auth(
            "tj1234567890abcdef", "wwauthorized0001", permanent_code="p", state="active"
        )
    query, body = _envelope(auths, "QywxProxyTemp", TICKET_XML, "wwauthorized0001")
    folder = str(auths / "QywxProxyTemp")
    out = qywx(
        cli_env,
        "decrypt",
        "--auth",
        folder,
        "--url",
        query,
        "-",
        "--show-secrets",
        "-f",
        "json",
        input=body,
    )
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert doc["receive_id_kind"] == "authorized_corp"
    assert doc["plaintext"] == TICKET_XML
    assert doc["fields"]["SuiteTicket"] == "LIVE-TICKET-0123456789-abcdefghij"
    text = qywx(cli_env, "decrypt", "--auth", "QywxProxyTemp", "--url", query, "-", input=body)
    assert "receiveid:  wwauthorized0001 (authorized_corp)" in text.stdout
    assert "LIVE-TICKET-0123456789-abcdefghij" not in text.stdout


def test_signed_but_undecryptable_exits_1(cli_env: dict[str, str], auths: Path) -> None:
    token = auth_config(auths)["token"]
    encrypt = base64.b64encode(b"x" * 40).decode()  # not a whole number of AES blocks
    sig = sha1_sign(token, "1", "2", encrypt)
    out = qywx(
        cli_env,
        "decrypt",
        "--auth",
        "QywxProxyTemp",
        "--msg-signature",
        sig,
        "--timestamp",
        "1",
        "--nonce",
        "2",
        "--echostr",
        encrypt,
        "-f",
        "json",
    )
    assert out.returncode == 1
    assert one_json(out)["error"]["code"] == -40007 and "-40007" in out.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "nothing to decrypt"),
        (["--url", "/cb?msg_signature=a&timestamp=1&nonce=2"], "give its body"),
        (["--url", "/cb?msg_signature=a&timestamp=1&nonce=2", "missing.xml"], "cannot read"),
        (["--msg-signature", "a", "--echostr", "x"], "go together"),
        (["--url", "/cb?msg_signature=a&timestamp=1&nonce=2&echostr=x", "--nonce", "3"], "drop"),
        (["--token", "t", "--url", "/cb?msg_signature=a&timestamp=1&nonce=2&echostr=x"], "both"),
        (
            [
                "--token",
                "t",
                "--encoding-aes-key",
                "short",
                "--url",
                "/cb?msg_signature=a&timestamp=1&nonce=2&echostr=x",
            ],
            "43",
        ),
        (
            ["--auth", "Nope", "--url", "/cb?msg_signature=a&timestamp=1&nonce=2&echostr=x"],
            "no auth instance",
        ),
    ],
)
def test_usage_errors(cli_env: dict[str, str], args: list[str], words: str) -> None:
    assert_one_line_error(qywx(cli_env, "decrypt", *args), 2, words)
