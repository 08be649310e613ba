"""`qywx decrypt`: published vectors, independent envelopes, every input shape, every refusal."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REPO = Path(__file__).resolve().parents[2]
SECRET_KEYS = ("suiteSecret", "encodingAESKey", "token")


def _conf(auths: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((auths / name / f"{name}.json").read_text("utf-8"))
    return data


def qywx(
    auths: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; checks no sample secret leaks and errors are one line."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    full_env.update(
        QYWX_AUTHS=str(auths), QYWX_DB=str(auths.parent / "qywx.db"), PYTHONPATH=str(REPO)
    )
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "qywx_cli", *args],
        input=input,
        capture_output=True,
        env=full_env,
        cwd=auths.parent,
        timeout=60,
        check=False,
    )
    out = subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    )
    assert "Traceback" not in out.stderr
    for folder in (p for p in auths.iterdir() if p.is_dir()):
        for key in SECRET_KEYS:
            secret = _conf(auths, folder.name)["authConfig"][key]
            assert secret not in out.stdout and secret not in out.stderr
    if out.returncode != 0:
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out


def one_json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _vector(vectors: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(v for v in vectors if v["name"] == name)


def _keys(v: dict[str, Any]) -> list[str]:
    return ["--token", v["token"], "--encoding-aes-key", v["encodingAESKey"]]


def independent_encrypt(key43: str, message: str, receive_id: str) -> str:
    key = base64.b64decode(key43 + "=")
    data = message.encode()
    plain = os.urandom(16) + struct.pack(">I", len(data)) + data + receive_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def sha1_sign(*values: str) -> str:
    return hashlib.sha1("".join(sorted(values)).encode()).hexdigest()


# -- published vectors ----------------------------------------------------------------------


def test_verify_vector_as_a_captured_url(auths: Path, vectors: list[dict[str, Any]]) -> None:
    v = _vector(vectors, "wecom-php-sample-verify-url")
    out = qywx(auths, "decrypt", *_keys(v), "--url", "http://host/cb?" + v["query"], "-f", "json")
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert doc["plaintext"] == v["expect_plaintext"]
    assert doc["signature_valid"] is True and doc["kind"] == "verify_url"
    assert doc["receive_id"] == v["receiveId"] and doc["receive_id_kind"] == "unknown"
    assert doc["fields"] == {}
    text = qywx(auths, "decrypt", *_keys(v), "--url", "http://host/cb?" + v["query"])
    assert text.returncode == 0 and text.stdout.rstrip().endswith(v["expect_plaintext"])


def test_post_vector_via_url_and_stdin_parts_file_and_dump(
    auths: Path, vectors: list[dict[str, Any]], tmp_path: Path
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
            auths,
            "decrypt",
            *_keys(v),
            "--url",
            f"http://host/cb?{query}",
            "-",
            "-f",
            "json",
            input=body,
        ),
        qywx(auths, "decrypt", *_keys(v), *parts, "-", "-f", "json", input=body),
        qywx(auths, "decrypt", *_keys(v), *parts, str(tmp_path / "body.xml"), "-f", "json"),
        qywx(auths, "decrypt", *_keys(v), str(tmp_path / "request.http"), "-f", "json"),
        qywx(auths, "decrypt", *_keys(v), "-", "-f", "json", input=dump),
    ]
    for out in runs:
        assert out.returncode == 0, out.stderr
        doc = one_json(out)
        assert doc["plaintext"] == v["expect_plaintext"]
        assert doc["kind"] == "callback" and doc["info_type"] == "text"
        assert doc["fields"]["Content"] == "hello" and doc["fields"]["AgentID"] == "218"


def test_wrong_signature_exits_1_with_wecom_code(
    auths: Path, vectors: list[dict[str, Any]]
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
    out = qywx(auths, "decrypt", *_keys(v), *wrong)
    assert out.returncode == 1 and out.stdout == ""
    assert "-40001" in out.stderr and out.stderr.startswith("qywx: error: signature mismatch")
    doc = one_json(qywx(auths, "decrypt", *_keys(v), *wrong, "-f", "json"))
    assert doc == {"ok": False, "error": {"code": -40001, "message": doc["error"]["message"]}}

    forced = qywx(auths, "decrypt", *_keys(v), *wrong, "--no-verify", "-f", "json")
    assert forced.returncode == 0
    doc = one_json(forced)
    assert doc["signature_valid"] is False and doc["receive_id"] == v["receiveId"]
    assert "signature mismatch" in forced.stderr and "--no-verify" in forced.stderr

    right = [*wrong[:5], v["nonce"], *wrong[6:]]
    assert qywx(auths, "decrypt", *_keys(v), *right).returncode == 0


# -- with an auths/ instance ----------------------------------------------------------------


def _envelope(auths: Path, name: str, message: str, receive_id: str) -> tuple[str, bytes]:
    conf = _conf(auths, name)["authConfig"]
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
    auths: Path, receive_id: str, kind: str
) -> None:
    query, body = _envelope(auths, "QywxProxyTemp", TICKET_XML, receive_id)
    out = qywx(
        auths, "decrypt", "--auth", "QywxProxyTemp", "--url", query, "-", "-f", "json", input=body
    )
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert (doc["receive_id"], doc["receive_id_kind"]) == (receive_id, kind)
    assert doc["info_type"] == "suite_ticket"
    # A live SuiteTicket is masked in both the fields and the plaintext.
    assert "LIVE-TICKET-0123456789-abcdefghij" not in out.stdout
    assert doc["fields"]["SuiteTicket"] == "LIV***hij"
    assert "<SuiteTicket><![CDATA[LIV***hij]]></SuiteTicket>" in doc["plaintext"]


def test_show_secrets_and_auth_by_path_and_authorized_corp(auths: Path) -> None:
    from qywx_cli.core.store import Store

    with Store(auths.parent / "qywx.db") as store:
        store.upsert_corp_auth(
            "tj1234567890abcdef", "wwauthorized0001", permanent_code="p", state="active"
        )
    query, body = _envelope(auths, "QywxProxyTemp", TICKET_XML, "wwauthorized0001")
    folder = str(auths / "QywxProxyTemp")
    out = qywx(
        auths,
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
    text = qywx(auths, "decrypt", "--auth", "QywxProxyTemp", "--url", query, "-", input=body)
    assert "receiveid:  wwauthorized0001 (authorized_corp)" in text.stdout
    assert "LIVE-TICKET-0123456789-abcdefghij" not in text.stdout


def test_signed_but_undecryptable_exits_1(auths: Path) -> None:
    token = _conf(auths, "QywxProxyTemp")["authConfig"]["token"]
    encrypt = base64.b64encode(b"x" * 40).decode()  # not a whole number of AES blocks
    sig = sha1_sign(token, "1", "2", encrypt)
    out = qywx(
        auths,
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
def test_usage_errors(auths: Path, args: list[str], words: str) -> None:
    out = qywx(auths, "decrypt", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert words in out.stderr and out.stdout == ""
