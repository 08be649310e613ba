"""`qywx simulate-callback` as users run it: the console script against real loopback servers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers import (
    WSGIApp,
    assert_one_line_error,
    auth_config,
    encrypt_of,
    independent_decrypt,
    one_json,
    run_qywx,
    serving,
    sha1_sign,
)


def qywx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script; a failure with nothing on stdout explains itself in one line."""
    out = run_qywx(*args, env=env, cwd=Path(env["QYWX_AUTHS"]).parent)
    if out.returncode != 0 and not out.stdout.strip():
        assert_one_line_error(out)
    return out


def simulate(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return qywx(env, "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, *args)


# -- endpoints ------------------------------------------------------------------------------


def replying(status: str, body: bytes, delay: float = 0.0) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        time.sleep(delay)
        start_response(status, [("Content-Length", str(len(body)))])
        return [body]

    return app


def echoing(key43: str, suffix: bytes) -> WSGIApp:
    """Answers the handshake with the decrypted echostr plus ``suffix``."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        echostr = parse_qs(environ["QUERY_STRING"])["echostr"][0]
        body = independent_decrypt(key43, echostr)[0].encode() + suffix
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return app


# -- dry run --------------------------------------------------------------------------------


def test_dry_run_is_one_document_that_an_independent_implementation_decrypts(
    cli_env: dict[str, str], auths: Path
) -> None:
    conf = auth_config(auths)
    out = simulate(cli_env, "http://127.0.0.1:9/notify/QywxProxyTemp", "--dry-run", "-f", "json")
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


def test_dry_run_handshake_receive_id_defaults(cli_env: dict[str, str], auths: Path) -> None:
    url = "http://127.0.0.1:9/cb"

    def handshake(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        out = qywx(
            {**cli_env, **(env or {})},
            "simulate-callback",
            "--url",
            url,
            "--verify-url",
            "--dry-run",
            "-f",
            "json",
            *args,
        )
        assert out.returncode == 0, out.stderr
        doc = one_json(out)
        assert doc["method"] == "GET" and doc["body"] is None
        raw = urlsplit(doc["url"]).query
        assert "+" not in raw and "/" not in raw  # base64 percent-encoded
        echostr = parse_qs(raw)["echostr"][0]
        name = args[args.index("--auth") + 1].rsplit("/", 1)[-1]
        plaintext, receive_id = independent_decrypt(
            auth_config(auths, name)["encodingAESKey"], echostr
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


def test_dry_run_event_options_and_masking(cli_env: dict[str, str], tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/cb"
    doc = one_json(
        simulate(
            cli_env,
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
    doc = one_json(simulate(cli_env, url, "--dry-run", "-f", "json", "--xml", str(own)))
    assert doc["plaintext"] == own.read_text("utf-8")

    masked = simulate(cli_env, url, "--dry-run", "--event", "create_auth")
    assert masked.returncode == 0
    assert "AuthCode" in masked.stdout and "***" in masked.stdout
    assert "curl -sS -X POST" in masked.stdout
    shown = simulate(cli_env, url, "--dry-run", "--event", "create_auth", "--show-secrets")
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
        (["--count", "3", "--concurrency", "0"], "--concurrency"),
        (["--url", "http://[::1"], "--url must be an http"),
        (["--tamper", "bogus"], "unknown tamper"),
        (["--timeout", "0"], "--timeout"),
        (["--auth", "Nope"], "no auth instance"),
        (["--auth", "QywxProxyDefault", "--event", "cancel_auth"], "--corp-id"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    cli_env: dict[str, str], tmp_path: Path, args: list[str], words: str
) -> None:
    (tmp_path / "broken.xml").write_text("<xml><a></xml>")
    base = ["simulate-callback", "--url", "http://127.0.0.1:9/cb", "--auth", "QywxProxyTemp"]
    assert_one_line_error(qywx(cli_env, *base, *args), 2, words)


# -- sending --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "app, verdict, words",
    [
        (replying("200 OK", b"ok"), "wrong reply", "not exactly 'success'"),
        (replying("500 Internal Server Error", b"success"), "wrong reply", "HTTP 500"),
        (replying("200 OK", b"success", delay=1.5), "slow", "WeCom gives up after 1000 ms"),
    ],
)
def test_wrong_endpoints_fail(
    cli_env: dict[str, str], app: WSGIApp, verdict: str, words: str
) -> None:
    with serving(app, "/cb") as url:
        out = simulate(cli_env, url, "-f", "json")
    assert out.returncode == 1
    doc = one_json(out)
    assert (doc["ok"], doc["verdict"]) == (False, verdict) and words in doc["reason"]
    assert doc["response"]["status"] in (200, 500) and doc["response"]["latency_ms"] > 0
    assert set(doc["request"]) == {"method", "url", "headers", "body", "plaintext"}


def test_correct_endpoint_and_text_report(cli_env: dict[str, str]) -> None:
    with serving(replying("200 OK", b"success"), "/cb") as url:
        out = simulate(cli_env, url, "--event", "reset_permanent_code")
    assert out.returncode == 0, out.stderr
    assert "← HTTP 200" in out.stdout and "✓ ok" in out.stdout
    assert "reset_permanent_code" in out.stdout and "***" in out.stdout  # AuthCode masked


def test_json_report_masks_the_auth_code_unless_asked(cli_env: dict[str, str], auths: Path) -> None:
    """The json of a send shows the plaintext as text mode does: AuthCode masked."""
    key = auth_config(auths)["encodingAESKey"]
    with serving(replying("200 OK", b"success"), "/cb") as url:
        masked = one_json(simulate(cli_env, url, "--event", "create_auth", "-f", "json"))
        shown = one_json(
            simulate(cli_env, url, "--event", "create_auth", "-f", "json", "--show-secrets")
        )
        tamper = one_json(simulate(cli_env, url, "--tamper", "replay", "-f", "json"))
    for doc in (masked, tamper["baseline"]):
        code = _auth_or_ticket(independent_decrypt(key, encrypt_of(doc["request"]["body"]))[0])
        assert code not in doc["request"]["plaintext"] and "***" in doc["request"]["plaintext"]
    real = independent_decrypt(key, encrypt_of(shown["request"]["body"]))[0]
    assert shown["request"]["plaintext"] == real


def _auth_or_ticket(xml: str) -> str:
    for tag in ("AuthCode", "SuiteTicket"):
        if f"<{tag}><![CDATA[" in xml:
            return xml.split(f"<{tag}><![CDATA[")[1].split("]]>")[0]
    raise AssertionError(xml)


def test_handshake_reply_must_be_the_bare_plaintext(cli_env: dict[str, str], auths: Path) -> None:
    key = auth_config(auths)["encodingAESKey"]
    with serving(echoing(key, b"\n"), "/cb") as url:
        out = simulate(cli_env, url, "--verify-url", "-f", "json")
    assert out.returncode == 1 and "newline" in one_json(out)["reason"]
    with serving(echoing(key, b""), "/cb") as url:
        out = simulate(cli_env, url, "--verify-url")
    assert out.returncode == 0, out.stdout
    assert "✓ ok: answered the echostr plaintext" in out.stdout


def test_unreachable_endpoint_is_one_line_and_exit_1(cli_env: dict[str, str]) -> None:
    out = simulate(cli_env, "http://127.0.0.1:9/cb")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("qywx: error: cannot connect to 127.0.0.1:9")
    doc = one_json(simulate(cli_env, "http://127.0.0.1:9/cb", "-f", "json"))
    assert doc["verdict"] == "error" and doc["response"] is None


def test_tamper_against_an_endpoint_that_accepts_everything(cli_env: dict[str, str]) -> None:
    with serving(replying("200 OK", b"success"), "/cb") as url:
        out = simulate(cli_env, url, "--tamper", "all", "-f", "json")
        text = simulate(cli_env, url, "--tamper", "bad-signature,truncated")
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
    *broken, replay = doc["cases"]
    assert {c["verdict"] for c in broken} == {"ACCEPTED (vulnerable)"}
    # An acknowledged replay is harmless unless handled twice, which only a log can tell.
    assert (replay["verdict"], replay["passed"], replay["handled"]) == ("acknowledged", True, None)
    assert "not handled twice" in replay["note"]
    assert text.returncode == 1
    assert "ACCEPTED" in text.stdout and "2 tampered request(s) ACCEPTED" in text.stdout


def test_load_mode_figures(cli_env: dict[str, str]) -> None:
    with serving(replying("200 OK", b"success"), "/cb") as url:
        out = simulate(cli_env, url, "--count", "20", "--concurrency", "3", "-f", "json")
        text = simulate(cli_env, url, "--count", "5", "--event", "create_auth")
    assert out.returncode == 0, out.stderr
    doc = one_json(out)
    assert (doc["sent"], doc["ok"], doc["wrong_reply"], doc["errors"]) == (20, 20, 0, 0)
    assert set(doc["latency_ms"]) >= {"p50", "p90", "p99", "max"}
    assert doc["throughput_rps"] > 0 and doc["all_ok"]
    assert text.returncode == 0 and "throughput" in text.stdout and "✓ all 5" in text.stdout
    with serving(replying("200 OK", b"ok"), "/cb") as url:
        bad = simulate(cli_env, url, "--count", "4", "--concurrency", "2", "-f", "json")
    assert bad.returncode == 1
    doc = one_json(bad)
    assert (doc["ok"], doc["wrong_reply"]) == (0, 4) and doc["failures"][0]["count"] == 4
