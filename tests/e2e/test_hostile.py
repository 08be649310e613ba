"""Hostile requests against a real ``qywx serve``: the catalogue of issue 6, item 4.

test_serve_e2e.py already covers the official handshake vector, replay straight after
delivery, XXE, entity bombs, garbage, non-UTF-8 and deeply nested bodies, 3 MB bodies,
stale timestamps and a wrong receiveid. This file adds the rest: missing parameters,
empty bodies, future timestamps, replays after processing, truncated and non-base64
Encrypt (correctly signed, so the failure is past the signature check), every other HTTP
method, path traversal in ``/notify/<Instance>``, repeated and huge query strings,
slowloris-style partial bodies, chunked bodies over the limit and non-UTF-8 queries.

Requests go over raw sockets so that the bytes on the wire are exactly the ones written
here (an HTTP client would normalise ``..``, encode the path or refuse odd methods).
Every answer must be a 4xx with a short text body, no traceback and none of the
samples' secrets; ``/healthz`` must still answer 200 afterwards; and the server log must
hold neither a traceback nor a secret. One server serves the whole module.
"""

from __future__ import annotations

import json
import re
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.config import find_instance
from qywx_cli.core.crypto import WXBizMsgCrypt, generate_encoding_aes_key, generate_token
from qywx_cli.core.edge import available as edge_available
from qywx_cli.core.store import CallbackRecord, Store
from tests.e2e.conftest import Proc, wait_for
from tests.helpers import SAMPLES, LoopbackWeCom, loopback_fake, qywx_env

INSTANCE = "QywxProxyTemp"
INACTIVE = "QywxProxyOff"
INACTIVE_SUITE = "dk7f3a9c2e51b04d4b"
SHORT = 512  # a refusal is one line of text, not a page
IO_TIMEOUT = 10.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class World:
    server: Proc
    fake: LoopbackWeCom
    db: Path
    auths: Path
    crypt: WXBizMsgCrypt
    suite_id: str
    inactive: WXBizMsgCrypt
    secrets: list[str] = field(default_factory=list)

    def connect(self) -> socket.socket:
        return connect(self.server)

    def send(self, raw: bytes) -> Answer:
        return send(self.server, raw)

    def request(self, method: str, target: str | bytes, body: bytes | None = None) -> Answer:
        return request(self.server, method, target, body)

    def signed(
        self,
        xml: str | None = None,
        *,
        timestamp: str | None = None,
        encrypt: str | None = None,
        crypt: WXBizMsgCrypt | None = None,
        suite_id: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Query and body of a callback signed with the instance's token.

        ``encrypt`` replaces the ciphertext (still signed correctly), so a broken
        Encrypt gets past the signature check and fails where it is broken.
        """
        crypt, suite_id = crypt or self.crypt, suite_id or self.suite_id
        ts = timestamp or str(int(time.time()))
        nonce = str(time.monotonic_ns())
        if encrypt is None:
            xml = xml or ev.build_event_xml("suite_ticket", suite_id=suite_id)
            encrypt = crypt.encrypt(xml, suite_id)
        query = {"msg_signature": crypt.sign(ts, nonce, encrypt), "timestamp": ts, "nonce": nonce}
        body = (
            f"<xml><ToUserName><![CDATA[{suite_id}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
        )
        return query, body.encode("utf-8")

    def records(self) -> list[CallbackRecord]:
        with Store(self.db) as store:
            return store.list_callbacks(limit=10_000)

    def assert_refused(self, answer: Answer, *statuses: int) -> None:
        """A 4xx (one of ``statuses`` if given), short, no traceback, no secret; still healthy."""
        assert 400 <= answer.status < 500, (answer.status, answer.text)
        if statuses:
            assert answer.status in statuses, (answer.status, answer.text)
        assert len(answer.body) < SHORT, answer.text[:200]
        assert "Traceback" not in answer.text
        for secret in self.secrets:
            assert secret not in answer.text
        self.assert_healthy()

    def assert_healthy(self) -> None:
        assert_healthy(self.server, self.secrets)


def assert_healthy(server: Proc, secrets: list[str]) -> None:
    """/healthz answers 200 ok, the process lives, its log has no traceback and no secret."""
    health = request(server, "GET", "/healthz")
    assert health.status == 200 and json.loads(health.body)["ok"] is True
    assert server.popen.poll() is None
    log = server.log
    assert "Traceback" not in log and "unhandled error" not in log
    for secret in secrets:
        assert secret not in log


def connect(server: Proc) -> socket.socket:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=IO_TIMEOUT)


def send(server: Proc, raw: bytes) -> Answer:
    """One request on its own connection; the answer is read until the server closes.

    The request is written in slices while watching for an early answer: a server that
    refuses a huge request (413, 431) answers and closes before reading it all, and if
    the client kept writing, the kernel would reset the connection and drop the answer.
    """
    with connect(server) as sock:
        sent = 0
        deadline = time.monotonic() + IO_TIMEOUT
        while sent < len(raw) and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], IO_TIMEOUT)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(raw[sent : sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    break
        return read_answer(sock)


def request(server: Proc, method: str, target: str | bytes, body: bytes | None = None) -> Answer:
    """``method target`` exactly as given (no normalising), with ``Connection: close``."""
    target_bytes = target.encode("utf-8") if isinstance(target, str) else target
    head = [b"%s %s HTTP/1.1" % (method.encode(), target_bytes), b"Host: 127.0.0.1"]
    head.append(b"Connection: close")
    if body is not None:
        head.append(b"Content-Length: %d" % len(body))
        head.append(b"Content-Type: text/xml")
    return send(server, b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))


def read_answer(sock: socket.socket) -> Answer:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break  # the answer, if any, arrived before the reset
        if not chunk:
            break
        data += chunk
    assert data, "the server closed the connection without answering"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


def _add_inactive_instance(auths: Path) -> tuple[str, str]:
    folder = auths / INACTIVE
    folder.mkdir()
    (folder / "e.json").write_text(
        json.dumps({"title": "停用的实例", "type": "auths.loginTypes.QywxProxyType"})
    )
    token, key = generate_token(24), generate_encoding_aes_key()
    auth = {
        "suiteId": INACTIVE_SUITE,
        "suiteSecret": "sample-inactive-" + generate_token(24),
        "encodingAESKey": key,
        "token": token,
    }
    (folder / f"{INACTIVE}.json").write_text(json.dumps({"authConfig": auth, "isActive": False}))
    return token, key


def _sample_secrets(auths: Path) -> list[str]:
    found = []
    for path in auths.glob("*/*.json"):
        config = json.loads(path.read_text(encoding="utf-8")).get("authConfig", {})
        found += [config[k] for k in ("token", "encodingAESKey", "suiteSecret") if k in config]
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    auths = root / "auths"
    shutil.copytree(SAMPLES, auths)
    token, key = _add_inactive_instance(auths)
    env = qywx_env(QYWX_AUTHS=str(auths), QYWX_DB=str(root / "qywx.db"))
    cfg = json.loads((auths / INSTANCE / f"{INSTANCE}.json").read_text())["authConfig"]
    suite_id = cfg["suiteId"]
    with loopback_fake() as fake:  # the server's WeCom, served from this process
        env["QYWX_API_BASE"] = fake.api_base
        server = Proc(["serve", "--port", "0", "--threads", "4"], env, root)
        try:
            yield World(
                server=server,
                fake=fake,
                db=root / "qywx.db",
                auths=auths,
                crypt=WXBizMsgCrypt(cfg["token"], cfg["encodingAESKey"], {suite_id: "suite"}),
                suite_id=suite_id,
                inactive=WXBizMsgCrypt(token, key, {INACTIVE_SUITE: "suite"}),
                secrets=_sample_secrets(auths),
            )
        finally:
            server.stop()


def notify(query: dict[str, str] | str, instance: str | None = INSTANCE) -> str:
    path = f"/notify/{instance}" if instance else "/notify"
    q = query if isinstance(query, str) else urlencode(query)
    return f"{path}?{q}" if q else path


# -- parameters and bodies ---------------------------------------------------------------


@pytest.mark.parametrize(
    "drop",
    [
        ("msg_signature", "timestamp", "nonce"),
        ("msg_signature",),
        ("timestamp",),
        ("nonce",),
    ],
)
def test_missing_signature_parameters_are_400(world: World, drop: tuple[str, ...]) -> None:
    query, body = world.signed()
    kept = {k: v for k, v in query.items() if k not in drop}
    answer = world.request("POST", notify(kept), body)
    world.assert_refused(answer, 400)
    assert "missing" in answer.text and all(name in answer.text for name in drop)


def test_blank_parameters_and_get_without_echostr_are_400(world: World) -> None:
    query, body = world.signed()
    blank = dict.fromkeys(query, "")
    world.assert_refused(world.request("POST", notify(blank), body), 400)
    world.assert_refused(world.request("GET", notify(query)), 400)  # no echostr
    handshake = {"echostr": "AAAA", "timestamp": "1", "nonce": "2"}  # no msg_signature
    world.assert_refused(world.request("GET", notify(handshake)), 400)


@pytest.mark.parametrize(
    "body",
    [b"", None, b"   \r\n\t ", "chunked"],
    ids=["zero-length", "no-length", "whitespace", "empty-chunked"],
)
def test_empty_bodies_are_400(world: World, body: bytes | str | None) -> None:
    query, _ = world.signed()
    if body == "chunked":
        answer = world.send(
            f"POST {notify(query)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode()
        )
    else:
        assert not isinstance(body, str)
        answer = world.request("POST", notify(query), body)
    world.assert_refused(answer, 400)


@pytest.mark.parametrize(
    ("timestamp", "expect"),
    [
        (lambda: str(int(time.time()) + 3600), "stale or replayed"),
        (lambda: "-1", "stale or replayed"),
        (lambda: "1e9", "not an integer"),
        (lambda: "0x10", "not an integer"),
    ],
    ids=["future-1h", "negative", "exponent", "hex"],
)
def test_future_and_malformed_timestamps_are_refused_and_logged(
    world: World, timestamp: Callable[[], str], expect: str
) -> None:
    ts = timestamp()
    query, body = world.signed(timestamp=ts)
    answer = world.request("POST", notify(query), body)
    world.assert_refused(answer, 403)
    assert expect in answer.text
    logged = [r for r in world.records() if r.msg_signature == query["msg_signature"]]
    assert [(r.status, r.timestamp) for r in logged] == [("rejected", ts)]


def test_a_timestamp_inside_the_window_is_accepted(world: World) -> None:
    """The control for the case above: 4 minutes ahead is within the 300 s skew."""
    query, body = world.signed(timestamp=str(int(time.time()) + 240))
    answer = world.request("POST", notify(query), body)
    assert (answer.status, answer.text) == (200, "success")


def test_replay_after_processing_is_acknowledged_and_not_handled_again(world: World) -> None:
    xml = ev.build_event_xml("suite_ticket", suite_id=world.suite_id)
    ticket = re.search(r"<SuiteTicket><!\[CDATA\[(.*?)\]\]>", xml)
    assert ticket is not None
    world.secrets.append(ticket.group(1))  # a SuiteTicket is a credential too
    query, body = world.signed(xml)
    assert world.request("POST", notify(query), body).status == 200

    def processed() -> CallbackRecord | None:
        mine = [r for r in world.records() if r.msg_signature == query["msg_signature"]]
        return mine[0] if mine and mine[0].status == "processed" else None

    original = wait_for(processed)
    assert original is not None
    replay = world.request("POST", notify(query), body)
    assert (replay.status, replay.text) == (200, "success")  # what the first delivery got
    # WeCom's own retry (same content, fresh signature) is acknowledged, not re-run.
    again_query, again_body = world.signed(encrypt=world.crypt.encrypt(xml, world.suite_id))
    redelivery = world.request("POST", notify(again_query), again_body)
    assert (redelivery.status, redelivery.text) == (200, "success")
    copies = [r for r in world.records() if r.content_key == original.content_key]
    assert sorted((r.status, r.duplicate_reason) for r in copies) == [
        ("duplicate", "content"),
        ("duplicate", "replay"),
        ("processed", None),
    ]
    now = next(r for r in world.records() if r.id == original.id)
    assert now == original  # status, attempts, processed_at: untouched
    world.assert_healthy()


# -- the Encrypt element, correctly signed ---------------------------------------------


def _truncated(crypt: WXBizMsgCrypt, suite_id: str, cut: int) -> str:
    return crypt.encrypt(ev.build_event_xml("suite_ticket", suite_id=suite_id), suite_id)[:-cut]


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda w: _truncated(w.crypt, w.suite_id, 3), 400, -40010),  # not a base64 length
        (lambda w: _truncated(w.crypt, w.suite_id, 4), 403, -40007),  # not whole AES blocks
        (lambda w: _truncated(w.crypt, w.suite_id, 44), 403, None),  # whole blocks, no padding
        (lambda w: "%%%%not*base64%%%%", 400, -40010),
        (lambda w: "QUJD REVG", 400, -40010),  # a space inside
        (lambda w: "密文密文", 400, -40010),
        (lambda w: "AAAA", 403, -40007),  # three bytes of ciphertext
        (lambda w: "A" * 64, 403, -40007),  # 48 bytes: three blocks of zeros
    ],
    ids=["cut-3", "cut-4", "cut-block", "symbols", "space", "non-ascii", "short", "zeros"],
)
def test_broken_encrypt_signed_correctly_names_the_wecom_code(
    world: World, make: Callable[[World], str], status: int, code: int | None
) -> None:
    encrypt = make(world)
    query, body = world.signed(encrypt=encrypt)
    answer = world.request("POST", notify(query), body)
    world.assert_refused(answer, status)
    found = re.search(r"\((-400\d\d)\)", answer.text)
    assert found is not None, answer.text
    if code is not None:
        assert int(found.group(1)) == code
    logged = [r for r in world.records() if r.msg_signature == query["msg_signature"]]
    if not logged:  # past 3 refusals with one error in 10 minutes, the newest row counts it
        logged = [r for r in world.records() if r.folded and r.last_error == answer.text]
    assert [r.status for r in logged] == ["rejected"]
    assert found.group(1) in (logged[0].last_error or "")


def test_broken_echostr_in_a_signed_handshake(world: World) -> None:
    ts, nonce = str(int(time.time())), "99"
    for echostr, status in (("%%%%", 400), ("AAAA", 403)):
        query = {
            "msg_signature": world.crypt.sign(ts, nonce, echostr),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": echostr,
        }
        world.assert_refused(world.request("GET", notify(query)), status)


# -- methods and paths -----------------------------------------------------------------

METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"]


@pytest.mark.parametrize("method", [*METHODS, "HEAD"])
@pytest.mark.parametrize("path", ["/notify", f"/notify/{INSTANCE}", "/healthz"])
def test_other_methods_are_405_with_allow(world: World, method: str, path: str) -> None:
    if method == "HEAD" and path == "/healthz":
        assert world.request("HEAD", path).status == 200
        return
    query, body = world.signed()
    answer = world.request(method, f"{path}?{urlencode(query)}", body)
    world.assert_refused(answer, 405)
    allowed = {m.strip() for m in answer.headers["allow"].split(",")}
    assert allowed in ({"GET", "POST"}, {"GET", "HEAD"})
    assert method not in allowed


TRAVERSALS: list[str | bytes] = [
    "/notify/..",
    "/notify/../healthz",
    "/notify/%2e%2e",
    "/notify/%2E%2E/%2E%2E/etc/passwd",
    "/notify/..%2f..%2fetc%2fpasswd",
    "/notify/%252e%252e",  # double-encoded
    f"/notify/{INSTANCE}/../x",
    f"/notify/{INSTANCE}/..",
    f"/notify/{INSTANCE}/../../../etc/passwd",
    f"/notify/{INSTANCE}%00",
    f"/notify/{INSTANCE}%00.json",
    f"/notify/{INSTANCE}.json",
    f"/notify/auths.{INSTANCE}",
    f"/notify/./{INSTANCE}",
    "/notify/..\\..\\windows",
    "/notify/%5c..%5c..%5cwindows",
    "/notify/~root",
    "/notify/" + "A" * 129,  # one past the longest name accepted
    "/notify/" + "A" * 20_000,
    "/notify/" + "%E4%BC%81%E4%B8%9A%E5%BE%AE%E4%BF%A1",  # 企业微信, percent-encoded
    "/notify/企业微信".encode(),  # raw UTF-8 on the wire
    "/notify/QywxProxyTеmp",  # Cyrillic е: a homoglyph of the real name
    b"/notify/\xff\xfe",
    "/notify/%ff%fe",
    "/notify/" + INACTIVE,
    "/notify/NoSuchInstance",
    "/notifyx/" + INSTANCE,
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=lambda t: repr(t)[:40])
def test_paths_that_are_not_an_active_instance_are_404(world: World, target: str | bytes) -> None:
    """Signed for QywxProxyTemp: only an exact, active name may reach it, nothing is logged.

    Raw non-ASCII bytes in the request line are refused by waitress itself (400 Bad URI).
    """
    before = len(world.records())
    query, body = world.signed()
    raw_target = target if isinstance(target, bytes) else target.encode("utf-8")
    answer = world.request("POST", raw_target + b"?" + urlencode(query).encode(), body)
    world.assert_refused(answer, 404) if raw_target.isascii() else world.assert_refused(
        answer, 400, 404
    )
    assert len(world.records()) == before


def test_the_inactive_instance_cannot_be_reached_even_correctly_signed(world: World) -> None:
    assert find_instance(INACTIVE, world.auths, env={}).is_active is False  # valid, but off
    query, body = world.signed(crypt=world.inactive, suite_id=INACTIVE_SUITE)
    world.assert_refused(world.request("POST", notify(query, INACTIVE), body), 404)
    world.assert_refused(world.request("POST", notify(query, None), body), 403)  # bare /notify


# -- query strings -----------------------------------------------------------------------


@pytest.mark.parametrize("twice", ["msg_signature", "timestamp", "nonce"])
def test_repeated_signature_parameters_are_400(world: World, twice: str) -> None:
    query, body = world.signed()
    repeated = urlencode(query) + f"&{twice}={query[twice]}"  # even the same value
    answer = world.request("POST", notify(repeated), body)
    world.assert_refused(answer, 400)
    assert twice in answer.text


def test_repeated_echostr_is_400_and_unrelated_repeats_are_ignored(world: World) -> None:
    q = "msg_signature=a&timestamp=1&nonce=2&echostr=AAAA&echostr=BBBB"
    world.assert_refused(world.request("GET", notify(q)), 400)
    query, body = world.signed()
    extra = urlencode(query) + "&foo=1&foo=2&corpid=x&corpid=y"
    answer = world.request("POST", notify(extra), body)
    assert (answer.status, answer.text) == (200, "success")


@pytest.mark.parametrize(
    ("size", "statuses"),
    [(100_000, {"granian": 414, "waitress": 403}), (2_000_000, {"granian": 431, "waitress": 431})],
)
def test_huge_query_strings_are_refused(world: World, size: int, statuses: dict[str, int]) -> None:
    """Past granian's 64 KiB request-target cap, 414 from the server. Under waitress, up
    to its 256 KiB header cap the signature check refuses it; past it, 431."""
    junk = "x=" + "A" * size + "&msg_signature=a&timestamp=1&nonce=2"
    started = time.monotonic()
    answer = world.request("POST", notify(junk), b"<xml><Encrypt>AAAA</Encrypt></xml>")
    world.assert_refused(answer, statuses["granian" if edge_available() else "waitress"])
    assert time.monotonic() - started < 5


def test_many_parameters_are_refused_quickly(world: World) -> None:
    junk = "&".join(f"p{i}=v" for i in range(30_000)) + "&msg_signature=a&timestamp=1&nonce=2"
    started = time.monotonic()
    world.assert_refused(world.request("POST", notify(junk), b"<xml><Encrypt>AAAA</Encrypt></xml>"))
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "query",
    [
        b"msg_signature=\xff\xfe&timestamp=\x80&nonce=\xc3",  # raw bytes on the wire
        b"msg_signature=%ff%fe&timestamp=%80&nonce=%c3%28",
        b"msg_signature=%00&timestamp=%00&nonce=%00",
        b"msg_signature=a&timestamp=1&nonce=2&%ff=%fe",
    ],
    ids=["raw", "percent", "nul", "key"],
)
def test_non_utf8_queries_are_refused(world: World, query: bytes) -> None:
    _, body = world.signed()
    answer = world.request("POST", f"/notify/{INSTANCE}?".encode() + query, body)
    world.assert_refused(answer, 400, 403)
    answer = world.request("GET", b"/notify?" + query + b"&echostr=%ff")
    world.assert_refused(answer, 400, 403)


# -- bodies on the wire --------------------------------------------------------------------


def test_slowloris_partial_bodies_do_not_starve_the_server(world: World) -> None:
    """Twenty connections promise 1000 bytes, send 10 and stall; others are still served."""
    query, _ = world.signed()
    head = f"POST {notify(query)} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".encode()
    stalled = []
    try:
        for _ in range(20):
            sock = world.connect()
            sock.sendall(head + b"<xml><Encr")
            stalled.append(sock)
        started = time.monotonic()
        world.assert_healthy()
        fresh_query, fresh_body = world.signed()
        answer = world.request("POST", notify(fresh_query), fresh_body)
        assert (answer.status, answer.text) == (200, "success")
        assert time.monotonic() - started < 5
    finally:
        for sock in stalled:
            sock.close()
    # Closing mid-body leaves nothing behind: no record, no error, still healthy.
    assert not [r for r in world.records() if r.msg_signature == query["msg_signature"]]
    with world.connect() as sock:
        sock.sendall(b"POST /notify/X HTTP/1.1\r\nHost: x\r\nContent-Length: 10")
    world.assert_healthy()


def test_chunked_body_over_the_limit_is_413(world: World) -> None:
    query, _ = world.signed()
    head = (
        f"POST {notify(query)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"%x\r\n%s\r\n" % (65536, b"A" * 65536)
    answer = world.send(head + chunk * 40 + b"0\r\n\r\n")  # 2.5 MiB
    world.assert_refused(answer, 413)


def test_chunked_body_within_the_limit_is_accepted(world: World) -> None:
    """The control: a correctly signed callback sent chunked is read whole."""
    query, body = world.signed()
    head = (
        f"POST {notify(query)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]))
    answer = world.send(head + chunks + b"0\r\n\r\n")
    assert (answer.status, answer.text) == (200, "success")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("Content-Length: 2000000", 413),  # declared over the limit, nothing sent
        ("Content-Length: abc", 400),
        ("Content-Length: -1", 400),
        ("Content-Length: 1e3", 400),
        ("Content-Length: 5\r\nContent-Length: 6", 400),
        # Request-smuggling shapes: Transfer-Encoding wins, the chunked body is empty.
        ("Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
        ("Transfer-Encoding: chunked, chunked", 400),
    ],
    ids=["declared-2MB", "not-a-number", "negative", "exponent", "two-lengths", "cl-te", "te-te"],
)
def test_bad_length_headers_are_refused(world: World, headers: str, status: int) -> None:
    query, _ = world.signed()
    raw = (
        f"POST {notify(query)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n\r\n"
        "0\r\n\r\n"
    ).encode()
    world.assert_refused(world.send(raw), status)


def test_an_unknown_transfer_coding_is_501(world: World) -> None:
    """The one non-4xx refusal: RFC 9112 §6.1 says 501 for a transfer coding the server
    does not implement (waitress answers it itself; on granian, qywx's edge does)."""
    query, _ = world.signed()
    answer = world.send(
        f"POST {notify(query)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".encode()
    )
    assert answer.status == 501 and len(answer.body) < SHORT
    world.assert_healthy()


# -- found by this catalogue: 5xx with a traceback in the log ------------------------------


@pytest.fixture
def own_server(env: dict[str, str], tmp_path: Path) -> Iterator[Proc]:
    """A private server for requests that once crashed the handler (they must not now).

    No fake WeCom: nothing here gets as far as calling WeCom's API.
    """
    env["QYWX_API_BASE"] = "http://127.0.0.1:9/cgi-bin"
    server = Proc(["serve", "--port", "0", "--threads", "2"], env, tmp_path)
    yield server
    server.stop()


@pytest.mark.parametrize("encoding", ["bogus", "GBK"])
def test_an_unusable_xml_encoding_is_400(own_server: Proc, encoding: str) -> None:
    q = "msg_signature=0123456789abcdef0123456789abcdef01234567&timestamp=1&nonce=2"
    body = f'<?xml version="1.0" encoding="{encoding}"?><xml><Encrypt>a</Encrypt></xml>'
    answer = request(own_server, "POST", f"/notify/{INSTANCE}?{q}", body.encode())
    assert answer.status == 400, answer.text
    assert_healthy(own_server, [])


def _signed_but_absurd(auths: Path, variant: str) -> tuple[dict[str, str], bytes]:
    cfg = json.loads((auths / INSTANCE / f"{INSTANCE}.json").read_text())["authConfig"]
    suite = cfg["suiteId"]
    crypt = WXBizMsgCrypt(cfg["token"], cfg["encodingAESKey"], {suite: "suite"})
    now = str(int(time.time()))
    xml = ev.build_event_xml("suite_ticket", suite_id=suite)
    if variant == "5000-digit-event-timestamp":
        xml = xml.replace(f"<TimeStamp>{now}", "<TimeStamp>" + "9" * 5000)
    ts = "9" * 400 if variant == "400-digit-query-timestamp" else now
    envelope = crypt.encrypt_msg(xml, suite, ts, "7")
    if variant == "latin-1-envelope":
        text = '<?xml version="1.0" encoding="ISO-8859-1"?>' + envelope.request_xml("é")
        return envelope.query(), text.encode("latin-1")
    if variant == "utf-16-envelope":
        text = '<?xml version="1.0" encoding="UTF-16"?>' + envelope.request_xml(suite)
        return envelope.query(), text.encode("utf-16")
    return envelope.query(), envelope.request_xml(suite).encode()


@pytest.mark.parametrize(
    "variant",
    [
        "latin-1-envelope",
        "utf-16-envelope",
        "400-digit-query-timestamp",
        "5000-digit-event-timestamp",
    ],
)
def test_signed_but_absurd_requests_are_4xx(
    own_server: Proc, env: dict[str, str], variant: str
) -> None:
    query, body = _signed_but_absurd(Path(env["QYWX_AUTHS"]), variant)
    answer = request(own_server, "POST", notify(query), body)
    assert answer.status < 500, answer.text
    assert_healthy(own_server, [])
