"""Building, judging, load and tamper, checked with an independent WXBizMsgCrypt and real HTTP."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import UsageError
from qywx_cli.core.simulate import (
    TAMPER_CASES,
    USER_AGENT,
    CallbackSimulator,
    EventSpec,
    Reply,
    SimulatedRequest,
    check_load_bounds,
    judge,
    make_client,
    parse_overrides,
    run_load,
    run_tamper,
    send,
    target_url,
)
from tests.helpers import WSGIApp, encrypt_of, independent_decrypt, serving, sha1_sign

KEY = "E9UHtBKCXwKg2OOuJ5GfwRkNR3dcmHKmaJjmQt4cugP"
TOKEN = "YWGqjToTJimOPcw0culi3XVC"
SUITE = "dk7f3a9c2e51b04d18"
NOW = 1_700_000_000.0

INSTANCE = AuthInstance(
    name="Demo",
    title="demo",
    type="auths.loginTypes.QywxProxyType",
    suite_id=SUITE,
    suite_secret="secret",
    encoding_aes_key=KEY,
    token=TOKEN,
    corp_id="wwa1b2c3d4e5f60a01",
    is_active=True,
    path=Path("/nonexistent"),
)


# -- requests, read with the independent WXBizMsgCrypt of tests.helpers ----------------------


def _query(request: SimulatedRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}


def _encrypt_of(request: SimulatedRequest) -> str:
    if request.method == "GET":
        return _query(request)["echostr"]
    assert request.body is not None
    return encrypt_of(request.body)


def _simulator(url: str = "http://127.0.0.1:9/notify/Demo", **kw: Any) -> CallbackSimulator:
    counter = itertools.count()
    kw.setdefault("now", lambda: NOW)
    kw.setdefault("token_source", lambda n: f"tok{next(counter):04d}" + "x" * n)
    return CallbackSimulator.for_instance(INSTANCE, url, **kw)


# -- real HTTP servers ----------------------------------------------------------------------


def replying(status: str, body: bytes, delay: float = 0.0) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if delay:
            time.sleep(delay)
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app


def wecom_strict_endpoint(seen: list[tuple[str, str, str]]) -> WSGIApp:
    """A minimal correct endpoint built on the independent crypto: verify, decrypt, dedupe."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        q = {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
        status, reply = "403 Forbidden", b"no"
        try:
            encrypt = encrypt_of(body)
            key = (q["msg_signature"], q["timestamp"], q["nonce"])
            assert sha1_sign(TOKEN, q["timestamp"], q["nonce"], encrypt) == q["msg_signature"]
            assert abs(int(q["timestamp"]) - NOW) < 300 and key not in seen
            _, receive_id = independent_decrypt(KEY, encrypt)
            assert receive_id == SUITE
            seen.append(key)
            status, reply = "200 OK", b"success"
        except Exception:  # any failure is a refusal
            pass
        start_response(status, [("Content-Length", str(len(reply)))])
        return [reply]

    return app


# -- building -------------------------------------------------------------------------------


def test_target_url_checks_and_strips_wecom_parameters() -> None:
    assert target_url("http://h:8/cb?x=1&msg_signature=old&nonce=3#f") == "http://h:8/cb?x=1"
    assert target_url("https://example.com") == "https://example.com/"
    for bad in ("ftp://h/cb", "127.0.0.1:8000/cb", "http:///cb", "http://h:99999x/cb", ""):
        with pytest.raises(UsageError, match="--url"):
            target_url(bad)


def test_parse_overrides() -> None:
    assert parse_overrides(["State=a=b", "X="]) == {"State": "a=b", "X": ""}
    for bad in (["State"], ["=v"]):
        with pytest.raises(UsageError, match="Field=Value"):
            parse_overrides(bad)


def test_callback_decrypts_with_an_independent_implementation() -> None:
    sim = _simulator("http://h/notify/Demo?route=1")
    request = sim.callback(EventSpec(receive_id=SUITE, info_type="suite_ticket"))
    q = _query(request)
    assert request.method == "POST" and request.url.startswith("http://h/notify/Demo?route=1&")
    assert q["timestamp"] == str(int(NOW)) and q["nonce"].isdigit()
    encrypt = _encrypt_of(request)
    assert q["msg_signature"] == sha1_sign(TOKEN, q["timestamp"], q["nonce"], encrypt)
    message, receive_id = independent_decrypt(KEY, encrypt)
    assert receive_id == SUITE
    assert message == request.plaintext
    assert "<SuiteTicket><![CDATA[tok0000" in request.plaintext
    assert f"<ToUserName><![CDATA[{SUITE}]]></ToUserName>" in (request.body or "")
    assert "<AgentID><![CDATA[]]></AgentID>" in (request.body or "")
    assert dict(request.headers) == {
        "Content-Type": "text/xml; charset=utf-8",
        "User-Agent": USER_AGENT,
    }
    assert request.expected_reply == b"success"


def test_every_request_is_fresh() -> None:
    sim = CallbackSimulator.for_instance(INSTANCE, "http://h/cb")
    spec = EventSpec(receive_id=SUITE, info_type="create_auth", corp_id="wwcorp1")
    a, b = sim.callback(spec), sim.callback(spec)
    assert a.nonce != b.nonce and a.encrypt != b.encrypt and a.plaintext != b.plaintext
    assert "AUTHCODE-wwcorp1-" in a.plaintext


def test_handshake_echostr_is_percent_encoded_and_decrypts() -> None:
    sim = _simulator(random_bytes=lambda n: b"\xfb" * n)  # makes '+' and '/' likely in base64
    request = sim.handshake("wwprovider")
    raw_query = urlsplit(request.url).query
    echostr = _query(request)["echostr"]
    assert "+" not in raw_query and "/" not in raw_query and "==" not in raw_query
    assert "%2B" in raw_query or "%2F" in raw_query or "%3D" in raw_query
    message, receive_id = independent_decrypt(KEY, echostr)
    assert receive_id == "wwprovider" and message == request.plaintext
    assert request.plaintext.isdigit() and request.expected_reply == request.plaintext.encode()
    assert request.method == "GET" and request.body is None


def test_overrides_xml_and_unknown_event() -> None:
    sim = _simulator()
    r = sim.callback(
        EventSpec(
            receive_id=SUITE, info_type="change_auth", corp_id="wwc", overrides={"State": "s1"}
        )
    )
    assert "<AuthCorpId><![CDATA[wwc]]></AuthCorpId>" in r.plaintext
    assert "<State><![CDATA[s1]]></State>" in r.plaintext
    own = sim.callback(EventSpec(receive_id="wwr", xml="<xml><A>1</A></xml>", info_type=None))
    assert own.plaintext == "<xml><A>1</A></xml>"
    assert independent_decrypt(KEY, own.encrypt)[1] == "wwr"
    with pytest.raises(UsageError, match="unknown event"):
        EventSpec(receive_id=SUITE, info_type="nope")


# -- judging --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, body, latency, ok, verdict, words",
    [
        (200, b"success", 0.01, True, "ok", "answered 'success'"),
        (500, b"success", 0.01, False, "wrong reply", "HTTP 500"),
        (200, b"ok", 0.01, False, "wrong reply", "not exactly 'success'"),
        (200, b"success\n", 0.01, False, "wrong reply", "newline"),
        (200, b"SUCCESS", 0.01, False, "wrong reply", "case"),
        (200, b"", 0.01, False, "wrong reply", "empty body"),
        (200, b"success", 1.5, False, "slow", "1500 ms"),
    ],
)
def test_judge_callback(
    status: int, body: bytes, latency: float, ok: bool, verdict: str, words: str
) -> None:
    request = _simulator().callback(EventSpec(receive_id=SUITE))
    got_ok, got_verdict, reason = judge(request, Reply(status, body, latency))
    assert (got_ok, got_verdict) == (ok, verdict)
    assert words in reason


def test_judge_handshake() -> None:
    request = _simulator().handshake("ww1")
    expected = request.plaintext.encode()

    def reason(body: bytes) -> str:
        ok, _, why = judge(request, Reply(200, body, 0.01))
        assert not ok
        return why

    assert judge(request, Reply(200, expected, 0.01))[0]
    assert "newline" in reason(expected + b"\n")
    assert "quoted" in reason(b'"' + expected + b'"')
    assert "BOM" in reason(b"\xef\xbb\xbf" + expected)
    assert "decrypt" in reason(request.encrypt.encode())
    assert "not the echostr plaintext" in reason(b"12345")
    assert judge(request, Reply(200, expected, 2.0), timeout=1.0)[1] == "slow"


# -- sending --------------------------------------------------------------------------------


def test_send_against_real_endpoints() -> None:
    sim_spec = EventSpec(receive_id=SUITE)
    with make_client() as client:
        with serving(wecom_strict_endpoint([]), "/notify/Demo") as url:
            ex = send(client, _simulator(url).callback(sim_spec))
            assert ex.ok and ex.reply is not None and ex.reply.status == 200
            assert ex.as_dict()["response"]["body"] == "success"
        with serving(replying("500 Internal Server Error", b"boom"), "/notify/Demo") as url:
            ex = send(client, _simulator(url).callback(sim_spec))
            assert not ex.ok and ex.verdict == "wrong reply" and "HTTP 500" in ex.reason
        with serving(replying("200 OK", b"success", delay=0.3), "/notify/Demo") as url:
            ex = send(client, _simulator(url).callback(sim_spec), timeout=0.1)
            assert ex.verdict == "slow"
        ex = send(client, _simulator("http://127.0.0.1:9/cb").callback(sim_spec))
        assert ex.verdict == "error" and ex.reply is None and "cannot connect" in ex.reason


# -- load -----------------------------------------------------------------------------------


def test_load_counts_every_request_and_reports_percentiles() -> None:
    sim = _simulator(now=time.time)
    seen: list[str] = []
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with lock:
            seen.append(environ["QUERY_STRING"])
        return replying("200 OK", b"success")(environ, start_response)

    with serving(app, "/notify/Demo") as url, make_client(4) as client:
        sim = _simulator(url, now=time.time)
        progress: list[int] = []
        summary = run_load(
            lambda: sim.callback(EventSpec(receive_id=SUITE)),
            client,
            count=40,
            concurrency=4,
            progress=progress.append,
            poll_interval=0.01,
        )
    assert (summary.sent, summary.ok, summary.wrong, summary.errors) == (40, 40, 0, 0)
    assert summary.all_ok and len(summary.latencies) == 40
    assert len(set(seen)) == 40  # fresh nonce / signature per request
    figures = summary.as_dict()
    lat = figures["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert figures["throughput_rps"] > 0 and progress and progress[-1] == 40


def test_load_reports_wrong_replies_and_errors() -> None:
    with serving(replying("200 OK", b"ok"), "/notify/Demo") as url, make_client(2) as client:
        sim = _simulator(url)
        summary = run_load(
            lambda: sim.callback(EventSpec(receive_id=SUITE)), client, count=6, concurrency=2
        )
    assert (summary.ok, summary.wrong) == (0, 6) and not summary.all_ok
    assert summary.failures[0][1] == 6 and "not exactly 'success'" in summary.failures[0][0]
    with make_client(2) as client:
        sim = _simulator("http://127.0.0.1:9/cb")
        summary = run_load(
            lambda: sim.callback(EventSpec(receive_id=SUITE)), client, count=3, concurrency=2
        )
    assert summary.errors == 3 and summary.latencies == () and summary.latency_ms()["p99"] == 0.0


def test_load_rate_and_stop() -> None:
    with serving(replying("200 OK", b"success"), "/notify/Demo") as url, make_client(2) as client:
        sim = _simulator(url)
        started = time.perf_counter()
        summary = run_load(lambda: sim.handshake("x"), client, count=6, concurrency=3, rate=20.0)
        # request 5 may not start before 5/20 s
        assert time.perf_counter() - started >= 0.25 and summary.sent == 6
        stop = threading.Event()
        stop.set()
        halted = run_load(lambda: sim.handshake("x"), client, count=100, concurrency=2, stop=stop)
    assert halted.sent == 0 and halted.interrupted and not halted.all_ok


def test_load_bounds() -> None:
    check_load_bounds(1_000_000, 256, 10.0)
    for count, conc, rate in [
        (0, 1, None),
        (1_000_001, 1, None),
        (1, 0, None),
        (1, 257, None),
        (1, 1, 0.0),
    ]:
        with pytest.raises(UsageError):
            check_load_bounds(count, conc, rate)


# -- tamper ---------------------------------------------------------------------------------


def test_tamper_catalogue_breaks_exactly_one_thing_each() -> None:
    sim = _simulator(random_bytes=lambda n: bytes(range(n)))
    spec = EventSpec(receive_id=SUITE)
    built = {case: sim.tampered(case, spec) for case in TAMPER_CASES}

    (bad_sig,) = built["bad-signature"]
    q = _query(bad_sig)
    assert q["msg_signature"] != sha1_sign(TOKEN, q["timestamp"], q["nonce"], bad_sig.encrypt)
    assert independent_decrypt(KEY, bad_sig.encrypt)[1] == SUITE

    for case in ("stale-timestamp", "wrong-receiveid", "bad-padding", "truncated"):
        (req,) = built[case]
        q = _query(req)
        assert q["msg_signature"] == sha1_sign(TOKEN, q["timestamp"], q["nonce"], req.encrypt)

    (stale,) = built["stale-timestamp"]
    assert int(_query(stale)["timestamp"]) == NOW - 3600
    assert f"<TimeStamp>{int(NOW) - 3600}</TimeStamp>" in stale.plaintext
    (wrong,) = built["wrong-receiveid"]
    assert independent_decrypt(KEY, wrong.encrypt)[1] not in (SUITE, INSTANCE.corp_id)
    (padding,) = built["bad-padding"]
    with pytest.raises(AssertionError, match="bad padding"):
        independent_decrypt(KEY, padding.encrypt)
    # A last-byte-only unpadder (the official sample's) is fooled: right receiveid.
    assert independent_decrypt(KEY, padding.encrypt, strict=False)[1] == SUITE
    (truncated,) = built["truncated"]
    assert len(truncated.encrypt) % 4 != 0
    first, second = built["replay"]
    assert first == second
    with pytest.raises(UsageError, match="unknown tamper"):
        sim.tampered("nope", spec)


def test_run_tamper_against_a_strict_and_a_naive_endpoint() -> None:
    spec = EventSpec(receive_id=SUITE)
    with make_client() as client:
        with serving(wecom_strict_endpoint([]), "/notify/Demo") as url:
            report = run_tamper(_simulator(url), client, list(TAMPER_CASES), spec)
        assert report.baseline.ok and report.all_rejected
        assert [r.verdict for r in report.results] == ["rejected"] * len(TAMPER_CASES)
        assert report.results[-1].sent == 2 and report.results[-1].note == ""

        with serving(replying("200 OK", b"success"), "/notify/Demo") as url:
            report = run_tamper(_simulator(url), client, ["bad-signature", "replay"], spec)
            assert not report.all_rejected
            assert [r.verdict for r in report.results] == [
                "ACCEPTED (vulnerable)",
                "acknowledged",
            ]
            # When the endpoint's log shows the replay handled twice, that is the failure.
            report = run_tamper(
                _simulator(url), client, ["replay"], spec, handled_count=lambda request: 2
            )
            assert report.results[0].verdict == "HANDLED 2 TIMES (vulnerable)"
            assert not report.results[0].passed and not report.all_rejected
            report = run_tamper(
                _simulator(url), client, ["replay"], spec, handled_count=lambda request: 1
            )
            assert report.results[0].verdict == "acknowledged, handled once"
            assert report.all_rejected

        with serving(replying("403 Forbidden", b"no"), "/notify/Demo") as url:
            report = run_tamper(_simulator(url), client, ["replay"], spec)
        # Refusing everything is not security: the control failed, so nothing is proven.
        assert not report.baseline.ok and not report.all_rejected
        assert "proves little" in report.results[0].note

        with pytest.raises(UsageError, match="unknown tamper"):
            run_tamper(_simulator(), client, ["bogus"], spec)
