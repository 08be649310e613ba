"""`qywx encrypt`: envelopes an independent implementation opens, and a round trip via decrypt."""

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
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REPO = Path(__file__).resolve().parents[2]
PLAINTEXT = (
    "<xml><SuiteId><![CDATA[tj1234567890abcdef]]></SuiteId>"
    "<InfoType><![CDATA[cancel_auth]]></InfoType><TimeStamp>1700000000</TimeStamp>"
    "<AuthCorpId><![CDATA[wwcorp]]></AuthCorpId><Note>中文</Note></xml>"
)


def _conf(auths: Path, name: str = "QywxProxyTemp") -> dict[str, str]:
    data: dict[str, Any] = json.loads((auths / name / f"{name}.json").read_text("utf-8"))
    return dict(data["authConfig"])


def qywx(auths: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    env.update(QYWX_AUTHS=str(auths), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "qywx_cli", *args],
        input=input,
        capture_output=True,
        env=env,
        cwd=auths.parent,
        timeout=60,
        check=False,
    )
    out = subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    )
    assert "Traceback" not in out.stderr
    conf = _conf(auths)
    for key in ("suiteSecret", "encodingAESKey", "token"):
        assert conf[key] not in out.stdout + out.stderr
    if out.returncode:
        assert len(out.stderr.strip().splitlines()) == 1 and out.stdout == ""
    return out


def independent_decrypt(key43: str, encrypt: str) -> tuple[str, str]:
    key = base64.b64decode(key43 + "=")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(base64.b64decode(encrypt)) + dec.finalize()
    pad = plain[-1]
    assert plain[-pad:] == bytes([pad]) * pad and (len(plain) % 32) == 0
    content = plain[16:-pad]
    (length,) = struct.unpack(">I", content[:4])
    return content[4 : 4 + length].decode(), content[4 + length :].decode()


def test_envelope_opens_with_an_independent_implementation(auths: Path, tmp_path: Path) -> None:
    conf = _conf(auths)
    source = tmp_path / "plain.xml"
    source.write_text(PLAINTEXT, "utf-8")
    out = qywx(
        auths,
        "encrypt",
        "--auth",
        "QywxProxyTemp",
        str(source),
        "--timestamp",
        "1700000000",
        "--nonce",
        "777",
        "-f",
        "json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["timestamp"], doc["nonce"], doc["receive_id"]) == (
        "1700000000",
        "777",
        conf["suiteId"],
    )
    expected_sig = hashlib.sha1(
        "".join(sorted([conf["token"], "1700000000", "777", doc["encrypt"]])).encode()
    ).hexdigest()
    assert doc["msg_signature"] == expected_sig
    assert independent_decrypt(conf["encodingAESKey"], doc["encrypt"]) == (
        PLAINTEXT,
        conf["suiteId"],
    )
    assert f"<Encrypt><![CDATA[{doc['encrypt']}]]></Encrypt>" in doc["body"]
    assert f"<ToUserName><![CDATA[{conf['suiteId']}]]></ToUserName>" in doc["body"]
    assert parse_qs(doc["query"]) == {
        "msg_signature": [expected_sig],
        "timestamp": ["1700000000"],
        "nonce": ["777"],
    }


def test_round_trip_through_decrypt_with_receive_id_from_stdin(auths: Path) -> None:
    out = qywx(
        auths,
        "encrypt",
        "--auth",
        "QywxProxyTemp",
        "-",
        "--receive-id",
        "ww1234567890abcdef",
        "-f",
        "json",
        input=PLAINTEXT.encode(),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    back = qywx(
        auths,
        "decrypt",
        "--auth",
        "QywxProxyTemp",
        "--url",
        "/cb?" + doc["query"],
        "-",
        "-f",
        "json",
        input=doc["body"].encode(),
    )
    assert back.returncode == 0, back.stderr
    opened = json.loads(back.stdout)
    assert opened["plaintext"] == PLAINTEXT and opened["signature_valid"]
    assert opened["receive_id_kind"] == "provider_corp" and opened["info_type"] == "cancel_auth"


def test_text_output_and_token_key_mode(auths: Path, vectors: list[dict[str, Any]]) -> None:
    v = next(x for x in vectors if x["kind"] == "encrypt_msg")
    args = ["encrypt", "--token", v["token"], "--encoding-aes-key", v["encodingAESKey"], "-"]
    out = qywx(auths, *args, "--receive-id", v["receiveId"], input=v["plaintext"].encode())
    assert out.returncode == 0, out.stderr
    query_line, body_line = out.stdout.splitlines()
    assert query_line.startswith("query: msg_signature=") and body_line.startswith("body:  <xml>")
    encrypt = body_line.split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    assert independent_decrypt(v["encodingAESKey"], encrypt) == (v["plaintext"], v["receiveId"])
    missing = qywx(auths, *args, input=b"<xml/>")
    assert missing.returncode == 2 and "--receive-id" in missing.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["--auth", "QywxProxyTemp", "-", "--timestamp", "soon"], "--timestamp"),
        (["--auth", "QywxProxyTemp", "nofile.xml"], "cannot read"),
        (["-"], "--auth"),
    ],
)
def test_usage_errors(auths: Path, args: list[str], words: str) -> None:
    out = qywx(auths, "encrypt", *args, input=b"<xml/>")
    assert out.returncode == 2 and words in out.stderr
