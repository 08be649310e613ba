"""`qywx encrypt`: envelopes an independent implementation opens, and a round trip via decrypt."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from tests.helpers import (
    assert_one_line_error,
    auth_config,
    encrypt_of,
    independent_decrypt,
    run_qywx,
    sha1_sign,
)

PLAINTEXT = (
    "<xml><SuiteId><![CDATA[tj1234567890abcdef]]></SuiteId>"
    "<InfoType><![CDATA[cancel_auth]]></InfoType><TimeStamp>1700000000</TimeStamp>"
    "<AuthCorpId><![CDATA[wwcorp]]></AuthCorpId><Note>中文</Note></xml>"
)


def qywx(
    env: dict[str, str], *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; a failure is one stderr line and nothing on stdout."""
    out = run_qywx(*args, env=env, cwd=Path(env["QYWX_AUTHS"]).parent, input=input)
    if out.returncode:
        assert_one_line_error(out)
    return out


def test_envelope_opens_with_an_independent_implementation(
    cli_env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    conf = auth_config(auths)
    source = tmp_path / "plain.xml"
    source.write_text(PLAINTEXT, "utf-8")
    out = qywx(
        cli_env,
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
    expected_sig = sha1_sign(conf["token"], "1700000000", "777", doc["encrypt"])
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


def test_round_trip_through_decrypt_with_receive_id_from_stdin(cli_env: dict[str, str]) -> None:
    out = qywx(
        cli_env,
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
        cli_env,
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


def test_text_output_and_token_key_mode(
    cli_env: dict[str, str], vectors: list[dict[str, Any]]
) -> None:
    v = next(x for x in vectors if x["kind"] == "encrypt_msg")
    args = ["encrypt", "--token", v["token"], "--encoding-aes-key", v["encodingAESKey"], "-"]
    out = qywx(cli_env, *args, "--receive-id", v["receiveId"], input=v["plaintext"].encode())
    assert out.returncode == 0, out.stderr
    query_line, body_line = out.stdout.splitlines()
    assert query_line.startswith("query: msg_signature=") and body_line.startswith("body:  <xml>")
    encrypt = encrypt_of(body_line)
    assert independent_decrypt(v["encodingAESKey"], encrypt) == (v["plaintext"], v["receiveId"])
    assert_one_line_error(qywx(cli_env, *args, input=b"<xml/>"), 2, "--receive-id")


@pytest.mark.parametrize(
    "args, words",
    [
        (["--auth", "QywxProxyTemp", "-", "--timestamp", "soon"], "--timestamp"),
        (["--auth", "QywxProxyTemp", "nofile.xml"], "cannot read"),
        (["-"], "--auth"),
    ],
)
def test_usage_errors(cli_env: dict[str, str], args: list[str], words: str) -> None:
    assert_one_line_error(qywx(cli_env, "encrypt", *args, input=b"<xml/>"), 2, words)
