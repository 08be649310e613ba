"""FakeWeCom on a real loopback server, driven with raw httpx as any client would."""

from __future__ import annotations

import base64
import hashlib
import struct
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import QywxError, UsageError
from qywx_cli.core.fakewecom import FakeWeCom, suite_ticket_xml
from tests.helpers import Clock, http_client, serving

SUITE = "dk7f3a9c2e51b04d18"
CORP = "ww1436e0e65a779aee"
TOKEN = "QDG6eKtoken"
KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
T0 = 1_700_000_000.0


class Counting:
    """A deterministic ``random`` source: distinct hex strings of the requested size."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, nbytes: int) -> str:
        self.n += 1
        return f"{self.n:0{nbytes * 2}x}"


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def fake(clock: Clock) -> FakeWeCom:
    return FakeWeCom(now=clock)


@pytest.fixture
def api(fake: FakeWeCom) -> Iterator[httpx.Client]:
    with serving(fake, "/cgi-bin/") as api_url, http_client(base_url=api_url, timeout=5) as http:
        yield http


def suite_token(api: httpx.Client, ticket: str = "ticket-12345678") -> str:
    reply = api.post(
        "service/get_suite_token",
        json={"suite_id": SUITE, "suite_secret": "s3cret", "suite_ticket": ticket},
    ).json()
    return str(reply["suite_access_token"])


def permanent_code(api: httpx.Client, auth_code: str) -> dict[str, Any]:
    token = suite_token(api)
    return dict(
        api.post(
            "service/get_permanent_code",
            params={"suite_access_token": token},
            json={"auth_code": auth_code},
        ).json()
    )


def corp_token(api: httpx.Client, corp_id: str = CORP) -> str:
    code = permanent_code(api, f"AUTHCODE-{corp_id}-1")["permanent_code"]
    reply = api.get("gettoken", params={"corpid": corp_id, "corpsecret": code}).json()
    return str(reply["access_token"])


# -- service/get_suite_token ---------------------------------------------------------
def test_suite_token_success_carries_no_errcode(api: httpx.Client) -> None:
    reply = api.post(
        "service/get_suite_token",
        json={"suite_id": SUITE, "suite_secret": "s", "suite_ticket": "t" * 8},
    )
    assert reply.status_code == 200
    data = reply.json()
    assert set(data) == {"suite_access_token", "expires_in"}
    assert data["expires_in"] == 7200


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"suite_secret": "s", "suite_ticket": "t" * 8}, 40083),
        ({"suite_id": SUITE, "suite_ticket": "t" * 8}, 41004),
        ({"suite_id": SUITE, "suite_secret": "s"}, 40085),
        ({"suite_id": SUITE, "suite_secret": "s", "suite_ticket": "short"}, 40085),
    ],
)
def test_suite_token_refusals(api: httpx.Client, body: dict[str, str], errcode: int) -> None:
    data = api.post("service/get_suite_token", json=body).json()
    assert data["errcode"] == errcode
    assert "suite_access_token" not in data


def test_strict_mode_only_knows_registered_tickets(clock: Clock) -> None:
    fake = FakeWeCom(now=clock, strict=True)
    fake.register_suite_ticket(SUITE, "registered-ticket")
    with serving(fake, "/cgi-bin/") as api_url, http_client(base_url=api_url, timeout=5) as api:
        assert suite_token(api, "registered-ticket")
        data = api.post(
            "service/get_suite_token",
            json={"suite_id": SUITE, "suite_secret": "s", "suite_ticket": "unknown-ticket"},
        ).json()
        assert data["errcode"] == 40085
        assert data["errmsg"].startswith("invalid suite ticket")
        # A ticket belongs to its suite (§5.1): another suite's ticket is refused.
        other = api.post(
            "service/get_suite_token",
            json={"suite_id": "dkother", "suite_secret": "s", "suite_ticket": "registered-ticket"},
        ).json()
        assert other["errcode"] == 40085


# -- service/get_permanent_code ------------------------------------------------------
def test_permanent_code_reply_is_the_daikaifa_shape(api: httpx.Client) -> None:
    data = permanent_code(api, f"AUTHCODE-{CORP}-abc")
    assert data["errcode"] == 0
    assert data["permanent_code"]
    assert "access_token" not in data  # 代开发: no access_token (§3.2)
    assert data["auth_corp_info"]["corpid"] == CORP
    assert data["auth_corp_info"]["corp_name"]
    agent = data["auth_info"]["agent"][0]
    assert isinstance(agent["agentid"], int)
    assert agent["is_customized_app"] is True
    assert data["auth_user_info"]["userid"] == "admin"
    assert "state" not in data


def test_auth_code_is_single_use(api: httpx.Client) -> None:
    assert permanent_code(api, "AUTHCODE-wwsingle-1")["errcode"] == 0
    again = permanent_code(api, "AUTHCODE-wwsingle-1")
    assert again["errcode"] == 40078
    assert again["errmsg"].startswith("invalid auth_code")
    assert "?e=40078" in again["errmsg"]


def test_unshaped_auth_code_derives_a_stable_corp_id(clock: Clock) -> None:
    corp_ids = []
    for _ in range(2):
        fake = FakeWeCom(now=clock)
        with serving(fake, "/cgi-bin/") as api_url, http_client(base_url=api_url, timeout=5) as api:
            corp_ids.append(permanent_code(api, "some-opaque-code")["auth_corp_info"]["corpid"])
    assert corp_ids[0] == corp_ids[1]
    assert corp_ids[0].startswith("ww")
    assert len(corp_ids[0]) == 18


def test_registered_auth_code_carries_state_and_expires(api: httpx.Client, clock: Clock) -> None:
    assert (
        api.post(
            "/fake/auth_codes",
            json={"auth_code": "A1", "corp_id": "wwstate", "corp_name": "Acme", "state": "org42"},
        ).status_code
        == 200
    )
    data = permanent_code(api, "A1")
    assert (data["state"], data["auth_corp_info"]["corp_name"]) == ("org42", "Acme")
    api.post("/fake/auth_codes", json={"auth_code": "A2", "corp_id": "wwlate"})
    clock.t += 601  # AuthCode lives 10 minutes (§3.2)
    assert permanent_code(api, "A2")["errcode"] == 40078


def test_permanent_code_needs_a_suite_token(api: httpx.Client, clock: Clock) -> None:
    def call(token: str | None) -> int:
        params = {"suite_access_token": token} if token is not None else {}
        reply = api.post("service/get_permanent_code", params=params, json={"auth_code": "x"})
        return int(reply.json()["errcode"])

    assert call(None) == 41001
    assert call("never-issued") == 40082
    token = suite_token(api)
    clock.t += 7200
    assert call(token) == 42009


# -- service/get_auth_info and gettoken ----------------------------------------------
def test_auth_info_and_reset_permanent_code(api: httpx.Client) -> None:
    first = permanent_code(api, f"AUTHCODE-{CORP}-1")
    token = suite_token(api)
    info = api.post(
        "service/v2/get_auth_info",
        params={"suite_access_token": token},
        json={"auth_corpid": CORP, "permanent_code": first["permanent_code"]},
    ).json()
    assert info["errcode"] == 0
    assert info["auth_corp_info"]["corpid"] == CORP
    assert info["auth_info"]["agent"][0]["agentid"] == first["auth_info"]["agent"][0]["agentid"]

    second = permanent_code(api, f"AUTHCODE-{CORP}-2")  # 重新获取secret (§3.5)
    assert second["permanent_code"] != first["permanent_code"]
    stale = api.post(
        "service/v2/get_auth_info",
        params={"suite_access_token": token},
        json={"auth_corpid": CORP, "permanent_code": first["permanent_code"]},
    ).json()
    assert stale["errcode"] == 40084
    old = api.get("gettoken", params={"corpid": CORP, "corpsecret": first["permanent_code"]})
    assert old.json()["errcode"] == 40001
    new = api.get("gettoken", params={"corpid": CORP, "corpsecret": second["permanent_code"]})
    assert new.json()["errcode"] == 0


def test_gettoken_shape_and_refusals(api: httpx.Client) -> None:
    code = permanent_code(api, f"AUTHCODE-{CORP}-1")["permanent_code"]
    data = api.get("gettoken", params={"corpid": CORP, "corpsecret": code}).json()
    assert data["errcode"] == 0
    assert data["access_token"]
    assert data["expires_in"] == 7200
    cases = [
        ({"corpsecret": code}, 41002),
        ({"corpid": CORP}, 41004),
        ({"corpid": "wwunknown", "corpsecret": code}, 40013),
        ({"corpid": CORP, "corpsecret": "wrong"}, 40001),
    ]
    for params, errcode in cases:
        assert api.get("gettoken", params=params).json()["errcode"] == errcode, params


# -- auth/getuserinfo and auth/getuserdetail -----------------------------------------
def test_getuserinfo_code_rules(api: httpx.Client, clock: Clock) -> None:
    token = corp_token(api)

    def user(code: str) -> dict[str, Any]:
        return dict(
            api.get("auth/getuserinfo", params={"access_token": token, "code": code}).json()
        )

    first = user("CODE-lisi")
    assert (first["errcode"], first["userid"], first["expires_in"]) == (0, "lisi", 1800)
    assert first["user_ticket"]
    assert user("CODE-lisi")["errcode"] == 40029  # single use
    derived = user("opaque-code")
    assert derived["userid"].startswith("user")

    api.post("/fake/codes", json={"code": "C-open", "open_id": "oAbc", "corp_id": CORP})
    outsider = user("C-open")
    assert outsider["openid"] == "oAbc"
    assert outsider["external_userid"].startswith("wm")
    assert "userid" not in outsider

    api.post("/fake/codes", json={"code": "C-other", "user_id": "u", "corp_id": "wwother"})
    assert user("C-other")["errcode"] == 40029  # issued for another corp
    api.post("/fake/codes", json={"code": "C-late", "user_id": "wangwu"})
    clock.t += 301  # five-minute lifetime
    assert user("C-late")["errcode"] == 40029


def test_getuserdetail(api: httpx.Client) -> None:
    token = corp_token(api)
    ticket = api.get("auth/getuserinfo", params={"access_token": token, "code": "CODE-zs"}).json()[
        "user_ticket"
    ]
    detail = api.post(
        "auth/getuserdetail", params={"access_token": token}, json={"user_ticket": ticket}
    ).json()
    assert detail["errcode"] == 0
    assert detail["userid"] == "zs"
    assert {"gender", "avatar", "qr_code", "mobile", "email", "biz_mail", "address"} <= set(detail)
    bad = api.post(
        "auth/getuserdetail", params={"access_token": token}, json={"user_ticket": "nope"}
    ).json()
    assert bad["errcode"] == 40029


def test_corp_token_expiry(api: httpx.Client, clock: Clock) -> None:
    token = corp_token(api)

    def errcode(tok: str) -> int:
        reply = api.get("auth/getuserinfo", params={"access_token": tok, "code": "CODE-x"})
        return int(reply.json()["errcode"])

    assert errcode("never-issued") == 40014
    clock.t += 7200
    assert errcode(token) == 42001


# -- control endpoints, routing ------------------------------------------------------
def test_faults_errcode_then_recovery(api: httpx.Client) -> None:
    reply = api.post("/fake/faults", json={"api": "get_suite_token", "errcode": -1, "count": 2})
    assert reply.json() == {"errcode": 0, "errmsg": "ok", "api": "service/get_suite_token"}
    body = {"suite_id": SUITE, "suite_secret": "s", "suite_ticket": "t" * 8}
    for _ in range(2):
        data = api.post("service/get_suite_token", json=body).json()
        assert (data["errcode"], data["errmsg"]) == (-1, "system busy")
    assert "suite_access_token" in api.post("service/get_suite_token", json=body).json()


def test_faults_http_status_custom_errmsg_and_clear(api: httpx.Client) -> None:
    api.post("/fake/faults", json={"api": "gettoken", "http_status": 503, "count": 5})
    down = api.get("gettoken", params={"corpid": CORP, "corpsecret": "x"})
    assert down.status_code == 503
    assert down.headers["content-type"].startswith("text/html")
    assert api.get("/fake/state").json()["faults"] == {"gettoken": 4}
    assert api.delete("/fake/faults").status_code == 200
    assert api.get("/fake/state").json()["faults"] == {}
    api.post("/fake/faults", json={"api": "auth/getuserinfo", "errcode": 40029, "errmsg": "boom"})
    assert api.get("auth/getuserinfo").json() == {"errcode": 40029, "errmsg": "boom"}


@pytest.mark.parametrize(
    "body",
    [
        {"api": "no_such_api", "errcode": 1},
        {"api": "gettoken"},
        {"api": "gettoken", "errcode": 1, "http_status": 500},
        {"api": "gettoken", "http_status": 200},
        {"api": "gettoken", "errcode": "1"},
        {"api": "gettoken", "errcode": 1, "count": 0},
    ],
)
def test_bad_fault_requests_are_400(api: httpx.Client, body: dict[str, Any]) -> None:
    reply = api.post("/fake/faults", json=body)
    assert reply.status_code == 400
    assert reply.json()["errcode"] == 400


def test_state_masks_permanent_codes_and_counts(api: httpx.Client) -> None:
    code = permanent_code(api, f"AUTHCODE-{CORP}-1")["permanent_code"]
    state = api.get("/fake/state")
    assert code not in state.text
    data = state.json()
    assert data["permanent_codes"][0]["corp_id"] == CORP
    assert data["permanent_codes"][0]["permanent_code"].startswith(code[:3])
    assert data["tokens"] == {"suite": 1, "corp": 0, "provider": 0}
    assert data["calls"] == {"service/get_suite_token": 1, "service/get_permanent_code": 1}


def test_routing_prefixes_404_405_and_bad_json(fake: FakeWeCom) -> None:
    with serving(fake) as base, http_client(base_url=base, timeout=5) as http:
        for path in ("/gettoken", "/cgi-bin/gettoken", "/proxy/cgi-bin/gettoken"):
            assert http.get(path).json()["errcode"] == 41002, path
        missing = http.get("/cgi-bin/service/get_corp_token")
        assert missing.status_code == 404
        assert missing.json()["errcode"] == 404
        wrong = http.get("/cgi-bin/service/get_suite_token")
        assert wrong.status_code == 405
        assert wrong.headers["allow"] == "POST"
        assert wrong.json()["errcode"] == 405
        garbled = http.post("/cgi-bin/service/get_suite_token", content=b"{not json")
        assert garbled.json()["errcode"] == 47001
        assert http.post("/fake/codes", json={"code": "c"}).status_code == 400


def test_single_use_code_under_concurrency(api: httpx.Client) -> None:
    token = corp_token(api)
    results: list[int] = []
    lock = threading.Lock()

    def use() -> None:
        with http_client(base_url=str(api.base_url), timeout=5) as own:
            code = own.get("auth/getuserinfo", params={"access_token": token, "code": "CODE-race"})
        with lock:
            results.append(int(code.json()["errcode"]))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [0] + [40029] * 7


# -- suite_ticket pushes to an independent receiver ----------------------------------
@dataclass
class Receiver:
    """A callback endpoint written from the protocol text (§1), using `cryptography`."""

    token: str
    key43: str
    on_ticket: Callable[[str], None] = lambda _t: None
    seen: list[dict[str, str]] = field(default_factory=list)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        query = dict(parse_qsl(environ["QUERY_STRING"]))
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        envelope = ET.fromstring(body)
        encrypt = envelope.findtext("Encrypt") or ""
        expected = hashlib.sha1(
            "".join(sorted([self.token, query["timestamp"], query["nonce"], encrypt])).encode()
        ).hexdigest()
        key = base64.b64decode(self.key43 + "=")
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        plain = decryptor.update(base64.b64decode(encrypt)) + decryptor.finalize()
        pad = plain[-1]
        content = plain[16:-pad]
        (length,) = struct.unpack(">I", content[:4])
        event = ET.fromstring(content[4 : 4 + length])
        record = {child.tag: (child.text or "").strip() for child in event}
        record.update(
            signature_ok=str(expected == query["msg_signature"]),
            receive_id=content[4 + length :].decode(),
            to_user=envelope.findtext("ToUserName") or "",
            agent_id=envelope.findtext("AgentID") or "",
            pad=str(pad),
            timestamp_q=query["timestamp"],
        )
        self.seen.append(record)
        self.on_ticket(record["SuiteTicket"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"success"]


def instance() -> AuthInstance:
    return AuthInstance(
        name="QywxProxyTemp",
        title="t",
        type="auths.loginTypes.QywxProxyType",
        suite_id=SUITE,
        suite_secret="suite-secret",
        encoding_aes_key=KEY,
        token=TOKEN,
        corp_id=CORP,
        is_active=True,
        path=Path("auths/QywxProxyTemp"),
    )


def test_push_suite_ticket_is_a_real_signed_callback(clock: Clock) -> None:
    fake = FakeWeCom(now=clock, strict=True)
    exchanged: list[int] = []
    with serving(fake, "/cgi-bin/") as api_url, http_client(base_url=api_url, timeout=5) as api:

        def use_ticket(ticket: str) -> None:
            # The receiver exchanges the ticket while the push is in flight (strict fake).
            with http_client(base_url=str(api.base_url), timeout=5) as own:
                reply = own.post(
                    "service/get_suite_token",
                    json={"suite_id": SUITE, "suite_secret": "s", "suite_ticket": ticket},
                ).json()
            exchanged.append(int(reply.get("errcode", 0)))

        receiver = Receiver(TOKEN, KEY, use_ticket)
        with serving(receiver) as rx:
            reply = fake.push_suite_ticket(rx + "/notify/QywxProxyTemp", instance())
    assert (reply.status_code, reply.text) == (200, "success")
    (record,) = receiver.seen
    assert record["signature_ok"] == "True"
    assert record["receive_id"] == SUITE
    assert (record["to_user"], record["agent_id"]) == (SUITE, "")
    assert (record["SuiteId"], record["InfoType"]) == (SUITE, "suite_ticket")
    assert record["TimeStamp"] == record["timestamp_q"] == str(int(T0))
    assert len(record["SuiteTicket"]) >= 8
    assert exchanged == [0]


def test_run_ticket_pusher_pushes_until_stopped(clock: Clock) -> None:
    fake = FakeWeCom(now=clock, random=Counting())
    receiver = Receiver(TOKEN, KEY)
    stop = threading.Event()
    results: list[object] = []

    def on_push(result: object) -> None:
        results.append(result)
        if len(results) == 3:
            stop.set()

    with serving(receiver) as rx:
        pushes = fake.run_ticket_pusher(rx, instance(), 0.01, stop, on_push=on_push)
    assert pushes == 3
    assert all(isinstance(r, httpx.Response) and r.text == "success" for r in results)
    tickets = {r["SuiteTicket"] for r in receiver.seen}
    assert len(tickets) == 3


def test_push_failures_are_reported_not_raised(clock: Clock) -> None:
    fake = FakeWeCom(now=clock)
    with serving(Receiver(TOKEN, KEY)) as rx:
        dead = rx  # the port is closed once the server stops
    stop = threading.Event()
    results: list[object] = []

    def on_push(result: object) -> None:
        results.append(result)
        stop.set()

    assert fake.run_ticket_pusher(
        dead + "/notify?x=secret", instance(), 0.01, stop, on_push=on_push
    )
    (error,) = results
    assert isinstance(error, QywxError)
    assert error.code == "push-failed"
    assert "secret" not in str(error)
    with pytest.raises(UsageError):
        fake.run_ticket_pusher(dead, instance(), 0, stop)


def test_suite_ticket_xml_matches_the_documented_layout() -> None:
    xml = suite_ticket_xml(SUITE, "tick]]>et", 1403610513)
    event = ET.fromstring(xml)
    assert [c.tag for c in event] == ["SuiteId", "InfoType", "TimeStamp", "SuiteTicket"]
    assert event.findtext("SuiteTicket") == "tick]]>et"
    assert event.findtext("TimeStamp") == "1403610513"


# -- slow and held calls ---------------------------------------------------------------
V2 = "service/v2/get_permanent_code"


def _exchange_in_thread(api: httpx.Client, auth_code: str) -> tuple[threading.Thread, list[Any]]:
    """get_permanent_code (v2) from another thread: a held call blocks its caller."""
    token = suite_token(api)
    out: list[Any] = []

    def call() -> None:
        reply = api.post(V2, params={"suite_access_token": token}, json={"auth_code": auth_code})
        out.append(reply)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread, out


def test_a_call_held_before_the_exchange_has_not_spent_the_auth_code(
    api: httpx.Client, fake: FakeWeCom
) -> None:
    """Held ``before``: the fake says the call arrived, nothing is spent yet, other calls
    and the controls still answer; released, it answers as usual."""
    reply = api.post("/fake/holds", json={"api": "get_permanent_code", "stage": "before"})
    assert reply.json()["api"] == V2  # the last segment names the path qywx calls
    thread, out = _exchange_in_thread(api, f"AUTHCODE-{CORP}-held")
    assert fake.wait_held(V2, timeout=10)
    state = api.get("/fake/state").json()
    assert state["held"] == {V2: 1} and state["permanent_codes"] == []
    assert state["holds"] == {}  # the one hold armed was taken by this call
    assert "permanent_code" in permanent_code(api, f"AUTHCODE-{CORP}-other")  # not blocked
    assert api.post("/fake/release", json={"api": V2}).json()["released"] == 1
    thread.join(10)
    reply = out[0].json()
    assert reply["errcode"] == 0 and reply["auth_corp_info"]["corpid"] == CORP
    assert api.get("/fake/state").json()["held"] == {}


def test_a_call_dropped_before_the_exchange_leaves_the_code_usable(
    api: httpx.Client, fake: FakeWeCom
) -> None:
    fake.hold(V2, stage="before")
    thread, out = _exchange_in_thread(api, f"AUTHCODE-{CORP}-drop")
    assert fake.wait_held(V2, timeout=10)
    assert fake.release(V2, drop=True) == 1
    thread.join(10)
    assert out[0].status_code == 503 and out[0].json()["errcode"] == 503
    assert api.get("/fake/state").json()["permanent_codes"] == []
    again, out = _exchange_in_thread(api, f"AUTHCODE-{CORP}-drop")
    again.join(10)
    assert out[0].json()["errcode"] == 0  # WeCom never spent it


def test_a_call_held_after_the_exchange_has_spent_the_code_and_issued_one(
    api: httpx.Client, fake: FakeWeCom
) -> None:
    """Held ``after``: WeCom's side is done (the code spent, a permanent code issued) and
    only the answer waits; dropped, the answer is lost and the code cannot be had again."""
    api.post("/fake/holds", json={"api": V2, "stage": "after", "count": 1})
    thread, out = _exchange_in_thread(api, f"AUTHCODE-{CORP}-after")
    assert fake.wait_held(V2, timeout=10)
    state = api.get("/fake/state").json()
    assert state["held"] == {V2: 1} and [p["corp_id"] for p in state["permanent_codes"]] == [CORP]
    assert api.post("/fake/release", json={"api": V2, "drop": True}).json()["released"] == 1
    thread.join(10)
    assert out[0].status_code == 503
    again, out = _exchange_in_thread(api, f"AUTHCODE-{CORP}-after")
    again.join(10)
    assert out[0].json()["errcode"] == 40078
    assert api.get("/fake/state").json()["caught"] == {V2: 1}


def test_delays_are_set_shown_and_removed(api: httpx.Client) -> None:
    reply = api.post("/fake/slow", json={"api": V2, "seconds": 0.01, "stage": "after"})
    assert reply.json()["api"] == V2
    assert api.get("/fake/state").json()["delays"] == {f"{V2}@after": 0.01}
    token = suite_token(api)
    done = api.post(V2, params={"suite_access_token": token}, json={"auth_code": "AUTHCODE-a-1"})
    assert done.json()["errcode"] == 0
    api.post("/fake/slow", json={"api": V2, "seconds": 0, "stage": "after"})
    assert api.get("/fake/state").json()["delays"] == {}
    api.post("/fake/slow", json={"api": V2, "seconds": 3})
    assert api.delete("/fake/holds").json()["released"] == 0
    assert api.get("/fake/state").json()["delays"] == {}


def test_a_delay_sleeps_at_its_stage_only() -> None:
    from qywx_cli.core.fakewecom._slow import Gates

    slept: list[float] = []
    gates = Gates(sleep=slept.append)
    gates.set_delay("p", 2.5, "after")
    assert gates.passage("p", "before") and slept == []
    assert gates.passage("p", "after") and slept == [2.5]
    assert gates.passage("q", "after") and slept == [2.5]


def test_a_forgotten_hold_lets_the_call_go_on() -> None:
    from qywx_cli.core.fakewecom._slow import Gates

    gates = Gates(hold_max=0)
    gates.hold("p", "before")
    assert gates.passage("p", "before") is True
    assert gates.snapshot()["held"] == {} and gates.caught == {"p": 1}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/fake/slow", {"api": V2, "seconds": -1}),
        ("/fake/slow", {"api": V2, "seconds": "2"}),
        ("/fake/slow", {"api": V2, "seconds": 1e9}),
        ("/fake/slow", {"api": V2, "seconds": 1, "stage": "during"}),
        ("/fake/slow", {"api": "no_such_api", "seconds": 1}),
        ("/fake/holds", {"api": V2, "count": 0}),
        ("/fake/holds", {"api": V2, "stage": "later"}),
        ("/fake/release", {"api": V2, "drop": "yes"}),
    ],
)
def test_bad_slow_and_hold_requests_are_400(
    api: httpx.Client, path: str, body: dict[str, Any]
) -> None:
    reply = api.post(path, json=body)
    assert reply.status_code == 400 and reply.json()["errcode"] == 400
    state = api.get("/fake/state").json()
    assert state["delays"] == {} and state["holds"] == {}
