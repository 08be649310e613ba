"""`qywx simulate-callback` as users run it: the console script against real loopback servers."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

REPO = Path(__file__).resolve().parents[2]
SECRET_KEYS = ("suiteSecret", "encodingAESKey", "token")


def _config(auths: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((auths / name / f"{name}.json").read_text("utf-8"))
    return data


def _secrets(auths: Path) -> list[str]:
    return [
        _config(auths, p.name)["authConfig"][k]
        for p in auths.iterdir()
        if p.is_dir()
        for k in SECRET_KEYS
    ]


def qywx(
    auths: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the console script; every run is checked for leaked secrets and tracebacks."""
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
    for secret in _secrets(auths):
        assert secret not in out.stdout and secret not in out.stderr
    if out.returncode != 0 and not out.stdout.strip():
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out


def simulate(auths: Path, url: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return qywx(auths, "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, *args, **kw)


def one_json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.stdout)  # the whole of stdout is one document
    return doc


def independent_decrypt(key43: str, encrypt: str) -> tuple[str, str]:
    key = base64.b64decode(key43 + "=")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(base64.b64decode(encrypt)) + dec.finalize()
    content = plain[16 : -plain[-1]]
    (length,) = struct.unpack(">I", content[:4])
    return content[4 : 4 + length].decode(), content[4 + length :].decode()


def sha1_sign(*values: str) -> str:
    return hashlib.sha1("".join(sorted(values)).encode()).hexdigest()


def encrypt_of(body: str) -> str:
    return body.split("<Encrypt><![CDATA[")[1].split("]]>")[0]


# -- endpoints ------------------------------------------------------------------------------


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


App = Callable[[dict[str, Any], Any], Iterable[bytes]]


@contextmanager
def serving(app: App) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/cb"
    finally:
        server.shutdown()
        server.server_close()


def replying(status: str, body: bytes, delay: float = 0.0) -> App:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        time.sleep(delay)
        start_response(status, [("Content-Length", str(len(body)))])
        return [body]

    return app


def echoing(key43: str, suffix: bytes) -> App:
    """Answers the handshake with the decrypted echostr plus ``suffix``."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        echostr = parse_qs(environ["QUERY_STRING"])["echostr"][0]
        body = independent_decrypt(key43, echostr)[0].encode() + suffix
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app


# -- dry run --------------------------------------------------------------------------------


def test_dry_run_is_one_document_that_an_independent_implementation_decrypts(
    auths: Path,
) -> None:
    conf = _config(auths, "QywxProxyTemp")["authConfig"]
    out = simulate(auths, "http://127.0.0.1:9/notify/QywxProxyTemp", "--dry-run", "-f", "json")
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert doc["method"] == "POST" and doc["kind"] == "callback"
    assert doc["headers"]["Content-Type"] == "text/xml; charset=utf-8"
    assert doc["headers"]["User-Agent"].startswith("qywx/")
    url = urlsplit(doc["url"])
    assert url.path == "/notify/QywxProxyTemp"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert set(query) == {"msg_signature", "timestamp", "nonce"}
    encrypt = encrypt_of(doc["body"])
    assert query["msg_signature"] == sha1_sign(
        conf["token"], query["timestamp"], query["nonce"], encrypt
    )
    plaintext, receive_id = independent_decrypt(conf["encodingAESKey"], encrypt)
    assert receive_id == conf["suiteId"] == doc["receive_id"]
    assert plaintext == doc["plaintext"]
    assert "<InfoType><![CDATA[suite_ticket]]></InfoType>" in plaintext
    assert abs(int(query["timestamp"]) - time.time()) < 60


def test_dry_run_handshake_receive_id_defaults(auths: Path) -> None:
    url = "http://127.0.0.1:9/cb"

    def handshake(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        out = qywx(
            auths,
            "simulate-callback",
            "--url",
            url,
            "--verify-url",
            "--dry-run",
            "-f",
            "json",
            *args,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        doc = one_json(out)
        assert doc["method"] == "GET" and doc["body"] is None
        raw = urlsplit(doc["url"]).query
        assert "+" not in raw and "/" not in raw  # base64 percent-encoded
        echostr = parse_qs(raw)["echostr"][0]
        name = args[args.index("--auth") + 1].rsplit("/", 1)[-1]
        plaintext, receive_id = independent_decrypt(
            _config(auths, name)["authConfig"]["encodingAESKey"], echostr
        )
        assert plaintext == doc["plaintext"] and plaintext.isdigit()
        assert receive_id == doc["receive_id"]
        return doc

    assert handshake("--auth", "QywxProxyTemp")["receive_id"] == "ww1234567890abcdef"
    assert handshake("--auth", "QywxProxyDefault")["receive_id"] == "dk7f3a9c2e51b04d3a"
    provider = {"QYWX_PROVIDER_CORP_ID": "wwprovider0000001"}
    assert handshake("--auth", "QywxProxyTemp", env=provider)["receive_id"] == "wwprovider0000001"
    by_path = handshake("--auth", str(auths / "QywxProxyTemp"), "--receive-id", "wwmine")
    assert by_path["receive_id"] == "wwmine"


def test_dry_run_event_options_and_masking(auths: Path, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/cb"
    doc = one_json(
        simulate(
            auths,
            url,
            "--dry-run",
            "-f",
            "json",
            "--event",
            "change_auth",
            "--corp-id",
            "wwother",
            "--set",
            "State=hello",
            "--set",
            "Extra=1=2",
        )
    )
    assert "<AuthCorpId><![CDATA[wwother]]></AuthCorpId>" in doc["plaintext"]
    assert "<State><![CDATA[hello]]></State>" in doc["plaintext"]
    assert "<Extra><![CDATA[1=2]]></Extra>" in doc["plaintext"]
    assert doc["receive_id"] == "tj1234567890abcdef"

    own = tmp_path / "own.xml"
    own.write_text("<xml><InfoType>custom</InfoType><Value>中文</Value></xml>", "utf-8")
    doc = one_json(simulate(auths, url, "--dry-run", "-f", "json", "--xml", str(own)))
    assert doc["plaintext"] == own.read_text("utf-8")

    masked = simulate(auths, url, "--dry-run", "--event", "create_auth")
    assert masked.returncode == 0
    assert "AuthCode" in masked.stdout and "***" in masked.stdout
    assert "curl -sS -X POST" in masked.stdout
    shown = simulate(auths, url, "--dry-run", "--event", "create_auth", "--show-secrets")
    assert "AUTHCODE-ww1234567890abcdef-" in shown.stdout and "***" not in shown.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["--url", "not-a-url"], "--url"),
        (["--event", "nope"], "unknown event"),
        (["--set", "NoEquals"], "Field=Value"),
        (["--set", "bad name=1"], "not a valid XML field name"),
        (["--xml", "missing.xml"], "cannot read"),
        (["--xml", "broken.xml"], "--xml"),
        (["--concurrency", "2"], "need --count"),
        (["--dry-run", "--count", "2"], "cannot be combined"),
        (["--verify-url", "--event", "create_auth"], "drop --event"),
        (["--count", "0"], "--count"),
        (["--count", "5", "--concurrency", "300"], "--concurrency"),
        (["--tamper", "bogus"], "unknown tamper"),
        (["--timeout", "0"], "--timeout"),
        (["--auth", "Nope"], "no auth instance"),
        (["--auth", "QywxProxyDefault", "--event", "cancel_auth"], "--corp-id"),
    ],
)
def test_usage_errors_exit_2_with_one_line(auths: Path, args: list[str], words: str) -> None:
    (auths.parent / "broken.xml").write_text("<xml><a></xml>")
    base = ["simulate-callback", "--url", "http://127.0.0.1:9/cb", "--auth", "QywxProxyTemp"]
    out = qywx(auths, *base, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == ""
    assert words in out.stderr


# -- sending --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "app, verdict, words",
    [
        (replying("200 OK", b"ok"), "wrong reply", "not exactly 'success'"),
        (replying("500 Internal Server Error", b"success"), "wrong reply", "HTTP 500"),
        (replying("200 OK", b"success", delay=1.5), "slow", "WeCom gives up after 1000 ms"),
    ],
)
def test_wrong_endpoints_fail(auths: Path, app: App, verdict: str, words: str) -> None:
    with serving(app) as url:
        out = simulate(auths, url, "-f", "json")
    assert out.returncode == 1
    doc = one_json(out)
    assert (doc["ok"], doc["verdict"]) == (False, verdict) and words in doc["reason"]
    assert doc["response"]["status"] in (200, 500) and doc["response"]["latency_ms"] > 0
    assert set(doc["request"]) == {"method", "url", "headers", "body", "plaintext"}


def test_correct_endpoint_and_text_report(auths: Path) -> None:
    with serving(replying("200 OK", b"success")) as url:
        out = simulate(auths, url, "--event", "reset_permanent_code")
    assert out.returncode == 0, out.stderr
    assert "← HTTP 200" in out.stdout and "✓ ok" in out.stdout
    assert "reset_permanent_code" in out.stdout and "***" in out.stdout  # AuthCode masked


def test_handshake_reply_must_be_the_bare_plaintext(auths: Path) -> None:
    key = _config(auths, "QywxProxyTemp")["authConfig"]["encodingAESKey"]
    with serving(echoing(key, b"\n")) as url:
        out = simulate(auths, url, "--verify-url", "-f", "json")
    assert out.returncode == 1 and "newline" in one_json(out)["reason"]
    with serving(echoing(key, b"")) as url:
        out = simulate(auths, url, "--verify-url")
    assert out.returncode == 0, out.stdout
    assert "✓ ok: answered the echostr plaintext" in out.stdout


def test_unreachable_endpoint_is_one_line_and_exit_1(auths: Path) -> None:
    out = simulate(auths, "http://127.0.0.1:9/cb")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("qywx: error: cannot connect to 127.0.0.1:9")
    doc = one_json(simulate(auths, "http://127.0.0.1:9/cb", "-f", "json"))
    assert doc["verdict"] == "error" and doc["response"] is None


def test_tamper_against_an_endpoint_that_accepts_everything(auths: Path) -> None:
    with serving(replying("200 OK", b"success")) as url:
        out = simulate(auths, url, "--tamper", "all", "-f", "json")
        text = simulate(auths, url, "--tamper", "bad-signature,truncated")
    assert out.returncode == 1
    doc = one_json(out)
    assert doc["baseline"]["ok"] and not doc["all_rejected"]
    assert [c["case"] for c in doc["cases"]] == [
        "bad-signature",
        "stale-timestamp",
        "wrong-receiveid",
        "bad-padding",
        "truncated",
        "replay",
    ]
    assert {c["verdict"] for c in doc["cases"]} == {"ACCEPTED (vulnerable)"}
    assert text.returncode == 1
    assert "ACCEPTED" in text.stdout and "2 tampered request(s) ACCEPTED" in text.stdout


def test_load_mode_figures(auths: Path) -> None:
    with serving(replying("200 OK", b"success")) as url:
        out = simulate(auths, url, "--count", "20", "--concurrency", "3", "-f", "json")
        text = simulate(auths, url, "--count", "5", "--event", "create_auth")
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert (doc["sent"], doc["ok"], doc["wrong_reply"], doc["errors"]) == (20, 20, 0, 0)
    assert set(doc["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert doc["throughput_rps"] > 0 and doc["all_ok"]
    assert text.returncode == 0 and "throughput" in text.stdout and "✓ all 5" in text.stdout
    with serving(replying("200 OK", b"ok")) as url:
        bad = simulate(auths, url, "--count", "4", "--concurrency", "2", "-f", "json")
    assert bad.returncode == 1
    doc = one_json(bad)
    assert (doc["ok"], doc["wrong_reply"]) == (0, 4) and doc["failures"][0]["count"] == 4
