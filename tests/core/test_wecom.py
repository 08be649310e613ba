"""WeComClient against FakeWeCom (httpx.WSGITransport) with a real SQLite store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core.errors import (
    ConfigError,
    UsageError,
    WeComAPIError,
    WeComTransportError,
    mask,
)
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.store import Store
from qywx_cli.core.wecom import (
    DEFAULT_API_BASE,
    PermanentCode,
    WeComClient,
    api_base_from_env,
)
from qywx_cli.core.wecom._http import MAX_TOKEN_TTL
from tests.helpers import Clock, serving

SUITE = "dk7f3a9c2e51b04d18"
SECRET = "suite-secret-9f8e7d6c5b4a"
TICKET = "ticket-0123456789abcdef"
CORP = "ww1436e0e65a779aee"
BASE = "http://fake.wecom.test/cgi-bin"
T0 = 1_700_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    return Store(tmp_path / "qywx.db", now=clock)


@pytest.fixture
def fake(clock: Clock) -> FakeWeCom:
    fake = FakeWeCom(now=clock, strict=True)
    fake.register_suite_ticket(SUITE, TICKET)
    return fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(
    store: Store,
    transport: httpx.BaseTransport,
    clock: Clock,
    sleeps: list[float],
    **kwargs: Any,
) -> WeComClient:
    return WeComClient(
        store, base_url=BASE, transport=transport, now=clock, sleep=sleeps.append, **kwargs
    )


@pytest.fixture
def client(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> Iterator[WeComClient]:
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    with make_client(store, httpx.WSGITransport(app=fake), clock, sleeps) as client:
        yield client


def calls(fake: FakeWeCom, api: str) -> int:
    """How often the fake served ``api``, read from its /fake/state endpoint."""
    with httpx.Client(transport=httpx.WSGITransport(app=fake), base_url="http://f") as http:
        return int(http.get("/fake/state").json()["calls"].get(api, 0))


def authorize(client: WeComClient, corp_id: str = CORP) -> PermanentCode:
    return client.get_permanent_code(SUITE, SECRET, f"AUTHCODE-{corp_id}-0001")


# -- suite token ---------------------------------------------------------------------
def test_suite_token_uses_the_latest_ticket_and_is_cached(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> None:
    store.save_suite_ticket(SUITE, "stale-ticket-unknown-to-wecom", int(T0) - 600)
    store.save_suite_ticket(SUITE, TICKET, int(T0))  # the only one the strict fake accepts
    with make_client(store, httpx.WSGITransport(app=fake), clock, sleeps) as client:
        first = client.suite_token(SUITE, SECRET)
        assert client.suite_token(SUITE, SECRET) == first
    assert calls(fake, "service/get_suite_token") == 1
    cached = store.get_token("suite", SUITE)
    assert cached is not None
    assert cached.expires_at == T0 + 7200


def test_suite_token_refreshed_margin_before_expiry(
    client: WeComClient, fake: FakeWeCom, clock: Clock
) -> None:
    first = client.suite_token(SUITE, SECRET)
    clock.t += 7200 - 300 - 1  # still outside the 300 s margin
    assert client.suite_token(SUITE, SECRET) == first
    clock.t += 2  # inside the margin: refreshed although WeCom would still accept it
    assert client.suite_token(SUITE, SECRET) != first
    assert calls(fake, "service/get_suite_token") == 2


def test_no_suite_ticket_yet_is_a_config_error(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> None:
    with (
        make_client(store, httpx.WSGITransport(app=fake), clock, sleeps) as client,
        pytest.raises(ConfigError) as info,
    ):
        client.suite_token(SUITE, SECRET)
    assert info.value.code == "no-suite-ticket"
    assert f"no suite_ticket received yet for suite {SUITE}" in str(info.value)
    assert "10 minutes" in str(info.value)
    assert calls(fake, "service/get_suite_token") == 0


def test_errcode_is_an_api_error_with_secrets_masked_and_not_retried(
    client: WeComClient, fake: FakeWeCom, sleeps: list[float]
) -> None:
    fake.inject_fault(
        "get_suite_token",
        errcode=40085,
        errmsg=f"invalid suite ticket {TICKET} for secret {SECRET}, more info at x?e=40085",
    )
    with pytest.raises(WeComAPIError) as info:
        client.suite_token(SUITE, SECRET)
    error = info.value
    assert (error.errcode, error.api) == (40085, "service/get_suite_token")
    assert TICKET not in str(error)
    assert SECRET not in str(error)
    assert mask(SECRET) in str(error)
    assert "?e=" not in str(error)
    assert "\n" not in str(error)
    assert sleeps == []
    assert calls(fake, "service/get_suite_token") == 1


def test_system_busy_errcode_is_not_retried(
    client: WeComClient, fake: FakeWeCom, sleeps: list[float]
) -> None:
    fake.inject_fault("get_suite_token", errcode=-1)
    with pytest.raises(WeComAPIError) as info:
        client.suite_token(SUITE, SECRET)
    assert info.value.errcode == -1
    assert sleeps == []


# -- invalid cached tokens -----------------------------------------------------------
def test_42009_on_a_cached_suite_token_refreshes_once(client: WeComClient, fake: FakeWeCom) -> None:
    client.suite_token(SUITE, SECRET)  # now cached
    fake.inject_fault("get_permanent_code", errcode=42009)
    perm = authorize(client)
    assert perm.corp_id == CORP
    assert calls(fake, "service/get_suite_token") == 2
    assert calls(fake, "service/v2/get_permanent_code") == 2


def test_a_token_wecom_never_issued_is_replaced(
    client: WeComClient, fake: FakeWeCom, store: Store
) -> None:
    store.put_token("suite", SUITE, "revoked-early", T0 + 7000)
    assert authorize(client).corp_id == CORP  # 40082 → drop → refetch → success
    assert calls(fake, "service/v2/get_permanent_code") == 2
    cached = store.get_token("suite", SUITE)
    assert cached is not None
    assert cached.token != "revoked-early"


def test_a_fresh_token_rejected_is_not_retried_again(client: WeComClient, fake: FakeWeCom) -> None:
    fake.inject_fault("get_permanent_code", errcode=42009, count=5)
    with pytest.raises(WeComAPIError) as info:
        authorize(client)
    assert info.value.errcode == 42009
    assert calls(fake, "service/get_suite_token") == 1
    assert calls(fake, "service/v2/get_permanent_code") == 1


def test_expired_corp_token_at_wecom_refreshes_once(
    store: Store, clock: Clock, sleeps: list[float]
) -> None:
    # WeCom's clock runs ahead of ours: it expires a token we still think valid (§4.3).
    skew = {"s": 0.0}
    fake = FakeWeCom(now=lambda: clock() + skew["s"])
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    with make_client(store, httpx.WSGITransport(app=fake), clock, sleeps) as client:
        perm = authorize(client)
        old = client.corp_token(CORP, perm.permanent_code)
        skew["s"] = 7200
        who = client.get_user_info(CORP, perm.permanent_code, "CODE-zhangsan")
        assert who.user_id == "zhangsan"
        assert client.corp_token(CORP, perm.permanent_code) != old
    assert calls(fake, "gettoken") == 2
    assert calls(fake, "auth/getuserinfo") == 2


def test_drop_tokens_leaves_the_suite_ticket(client: WeComClient, store: Store) -> None:
    client.suite_token(SUITE, SECRET)
    assert store.drop_tokens() >= 1
    assert store.get_token("suite", SUITE) is None
    ticket = store.latest_suite_ticket(SUITE)
    assert ticket is not None
    assert ticket.ticket == TICKET
    assert client.suite_token(SUITE, SECRET)


# -- transport failures --------------------------------------------------------------
def flaky(
    fake: FakeWeCom, failures: int, exc: Callable[[httpx.Request], Exception]
) -> tuple[httpx.MockTransport, list[str]]:
    """Raise ``exc`` for the first ``failures`` requests, then let the fake answer."""
    seen: list[str] = []
    inner = httpx.WSGITransport(app=fake)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) <= failures:
            raise exc(request)
        return inner.handle_request(request)

    return httpx.MockTransport(handler), seen


def connect_error(request: httpx.Request) -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


def read_timeout(request: httpx.Request) -> Exception:
    return httpx.ReadTimeout("timed out", request=request)


def test_network_errors_are_retried_with_backoff(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> None:
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    transport, seen = flaky(fake, 2, connect_error)
    with make_client(store, transport, clock, sleeps, retries=2, backoff=0.2) as client:
        assert client.suite_token(SUITE, SECRET)
    assert sleeps == [0.2, 0.4]
    assert len(seen) == 3


def test_network_errors_exhaust_retries_without_leaking_the_query(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> None:
    transport, seen = flaky(fake, 99, read_timeout)
    with (
        make_client(store, transport, clock, sleeps, retries=3, backoff=0.5) as client,
        pytest.raises(WeComTransportError) as info,
    ):
        client.corp_token(CORP, "permanent-code-secret-value")
    message = str(info.value)
    assert message.startswith("gettoken: ")
    assert "4 attempt(s)" in message
    assert "ReadTimeout" in message
    assert "permanent-code-secret-value" not in message
    assert "corpsecret" not in message
    assert "?" not in message
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(seen) == 4


def test_5xx_is_retried_then_succeeds_or_gives_up(
    client: WeComClient, fake: FakeWeCom, sleeps: list[float]
) -> None:
    fake.inject_fault("get_suite_token", http_status=503)
    assert client.suite_token(SUITE, SECRET)
    assert sleeps == [0.2]
    assert calls(fake, "service/get_suite_token") == 2

    perm = authorize(client)
    fake.inject_fault("gettoken", http_status=502, count=3)
    with pytest.raises(WeComTransportError) as info:
        client.corp_token(CORP, perm.permanent_code)
    assert "HTTP 502" in str(info.value)
    assert calls(fake, "gettoken") == 3


def test_single_use_calls_retry_only_what_never_reached_wecom(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> None:
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    with make_client(store, httpx.WSGITransport(app=fake), clock, sleeps) as client:
        client.suite_token(SUITE, SECRET)  # cache it so only get_permanent_code is sent
    transport, seen = flaky(fake, 1, connect_error)
    with make_client(store, transport, clock, sleeps) as client:
        assert authorize(client).corp_id == CORP  # connect refused: safe to repeat
    assert len(seen) == 2

    transport, seen = flaky(fake, 1, read_timeout)
    with (
        make_client(store, transport, clock, sleeps) as client,
        pytest.raises(WeComTransportError),
    ):
        client.get_permanent_code(SUITE, SECRET, "AUTHCODE-wwtimeout-1")
    assert len(seen) == 1  # the AuthCode may be spent: no blind repeat

    before = calls(fake, "service/v2/get_permanent_code")
    with make_client(store, httpx.WSGITransport(app=fake), clock, sleeps) as client:
        fake.inject_fault("get_permanent_code", http_status=503)
        with pytest.raises(WeComTransportError) as info:
            client.get_permanent_code(SUITE, SECRET, "AUTHCODE-ww503-1")
    assert "HTTP 503" in str(info.value)
    assert calls(fake, "service/v2/get_permanent_code") == before + 1


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(200, text="<html>gateway</html>"), "non-JSON reply (HTTP 200)"),
        (httpx.Response(200, json=[1, 2]), "not a JSON object"),
        (httpx.Response(200, json={"errcode": "x"}), "errcode is not a number"),
        (httpx.Response(200, json={"expires_in": 7200}), "no suite_access_token"),
    ],
)
def test_malformed_replies_are_transport_errors(
    store: Store, clock: Clock, sleeps: list[float], response: httpx.Response, fragment: str
) -> None:
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    transport = httpx.MockTransport(lambda request: response)
    with (
        make_client(store, transport, clock, sleeps) as client,
        pytest.raises(WeComTransportError) as info,
    ):
        client.suite_token(SUITE, SECRET)
    assert fragment in str(info.value)
    assert sleeps == []


@pytest.mark.parametrize("ttl", [10**30, "9" * 400, 2**63])
def test_an_absurd_expires_in_is_cached_for_at_most_thirty_days(
    store: Store, clock: Clock, sleeps: list[float], ttl: object
) -> None:
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    reply = {"errcode": 0, "suite_access_token": "T-absurd", "expires_in": ttl}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=reply))
    with make_client(store, transport, clock, sleeps) as client:
        assert client.suite_token(SUITE, SECRET) == "T-absurd"
    cached = store.get_token("suite", SUITE)
    assert cached is not None and cached.expires_at == clock() + MAX_TOKEN_TTL


def test_an_absurd_expires_in_on_an_authorization_link_is_capped_too(
    store: Store, clock: Clock, sleeps: list[float]
) -> None:
    from qywx_cli.core.wecom import ProviderCredentials

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/service/get_provider_token"):
            return httpx.Response(
                200, json={"errcode": 0, "provider_access_token": "P", "expires_in": 7200}
            )
        return httpx.Response(
            200, json={"errcode": 0, "qrcode_url": "https://q.example/x", "expires_in": "9" * 400}
        )

    with make_client(store, httpx.MockTransport(answer), clock, sleeps) as client:
        link = client.get_customized_auth_url(
            ProviderCredentials("wwprovider0000001", "s3cret"), "st1", ["tpl1"]
        )
    assert link.expires_in == MAX_TOKEN_TTL


# -- the 代开发 calls ------------------------------------------------------------------
def test_get_permanent_code_parses_and_masks(client: WeComClient, fake: FakeWeCom) -> None:
    fake.register_auth_code("AC-1", corp_id=CORP, corp_name="Acme", state="org42")
    perm = client.get_permanent_code(SUITE, SECRET, "AC-1")
    assert (perm.corp_id, perm.corp_name, perm.state) == (CORP, "Acme", "org42")
    # v2 (doc 100776) lists no agent: agentid comes from v2/get_auth_info afterwards.
    assert (perm.agent_id, perm.is_customized_app) == (None, False)
    assert perm.auth_user_id == "admin"
    assert perm.permanent_code not in repr(perm)
    assert mask(perm.permanent_code) in repr(perm)
    with pytest.raises(WeComAPIError) as info:
        client.get_permanent_code(SUITE, SECRET, "AC-1")  # AuthCode is single use
    assert info.value.errcode == 40078
    assert "AC-1" not in str(info.value)


def test_v1_permanent_code_carries_the_agent_v2_leaves_out(
    client: WeComClient, fake: FakeWeCom
) -> None:
    fake.register_auth_code("AC-v1", corp_id=CORP, corp_name="Acme", state="org42")
    perm = client.get_permanent_code_v1(SUITE, SECRET, "AC-v1")
    assert (perm.corp_id, perm.state, perm.is_customized_app) == (CORP, "org42", True)
    assert isinstance(perm.agent_id, int)
    assert calls(fake, "service/get_permanent_code") == 1
    assert calls(fake, "service/v2/get_permanent_code") == 0
    with pytest.raises(WeComAPIError) as info:  # v1 and v2 spend the same single-use code
        client.get_permanent_code(SUITE, SECRET, "AC-v1")
    assert info.value.errcode == 40078


def test_get_auth_info(client: WeComClient) -> None:
    perm = authorize(client)
    info = client.get_auth_info(SUITE, SECRET, CORP, perm.permanent_code)
    assert info.corp_id == CORP
    assert isinstance(info.agent_id, int) and info.agent_id >= 1000000
    (agent,) = info.agents
    assert agent.is_customized_app is True
    assert agent.allow_parties == (1,)
    with pytest.raises(WeComAPIError) as bad:
        client.get_auth_info(SUITE, SECRET, CORP, "not-the-permanent-code")
    assert bad.value.errcode == 40084
    assert "not-the-permanent-code" not in str(bad.value)


def test_corp_token_is_cached_per_corp(client: WeComClient, fake: FakeWeCom, store: Store) -> None:
    a = authorize(client, "wwcorpa")
    b = authorize(client, "wwcorpb")
    token_a = client.corp_token("wwcorpa", a.permanent_code)
    token_b = client.corp_token("wwcorpb", b.permanent_code)
    assert token_a != token_b
    assert client.corp_token("wwcorpa", a.permanent_code) == token_a
    assert calls(fake, "gettoken") == 2
    assert calls(fake, "service/get_corp_token") == 0  # the third-party call (§5.4)
    cached = store.get_token("corp", "wwcorpb")
    assert cached is not None
    assert cached.token == token_b
    with pytest.raises(WeComAPIError) as info:
        client.corp_token("wwcorpc", a.permanent_code)
    assert info.value.errcode == 40013


def test_obtain_says_where_the_token_came_from_and_when_it_expires(
    client: WeComClient, fake: FakeWeCom, clock: Clock
) -> None:
    code = authorize(client).permanent_code
    first = client.obtain_corp_token(CORP, code)
    assert (first.kind, first.key, first.cached, first.expires_at) == (
        "corp",
        CORP,
        False,
        T0 + 7200,
    )
    clock.advance(60)
    again = client.obtain_corp_token(CORP, code)
    assert (again.token, again.cached, again.expires_at) == (first.token, True, T0 + 7200)
    fresh = client.obtain_corp_token(CORP, code, fresh=True)  # asked although still valid
    assert (fresh.cached, fresh.expires_at) == (False, T0 + 60 + 7200)
    assert calls(fake, "gettoken") == 2
    assert fresh.token not in repr(fresh) and mask(fresh.token) in repr(fresh)
    suite = client.obtain_suite_token(SUITE, SECRET)
    assert suite.cached  # authorize() fetched it for get_permanent_code
    assert client.obtain_suite_token(SUITE, SECRET, fresh=True).cached is False


def test_get_user_info_and_detail(client: WeComClient, fake: FakeWeCom) -> None:
    perm = authorize(client)
    who = client.get_user_info(CORP, perm.permanent_code, "CODE-lisi")
    assert who.user_id == "lisi"
    assert who.open_id is None
    assert who.user_ticket
    assert who.user_ticket not in repr(who)
    with pytest.raises(WeComAPIError) as info:
        client.get_user_info(CORP, perm.permanent_code, "CODE-lisi")
    assert info.value.errcode == 40029
    assert info.value.api == "auth/getuserinfo"

    fake.register_code("C-outsider", open_id="oOutsider", corp_id=CORP)
    outsider = client.get_user_info(CORP, perm.permanent_code, "C-outsider")
    assert (outsider.user_id, outsider.open_id) == (None, "oOutsider")
    assert outsider.external_user_id

    detail = client.get_user_detail(CORP, perm.permanent_code, who.user_ticket)
    assert detail.user_id == "lisi"
    assert detail.mobile
    assert detail.mobile not in repr(detail)
    assert calls(fake, "gettoken") == 1


def test_httpx_request_log_has_no_query_string(
    client: WeComClient, caplog: pytest.LogCaptureFixture
) -> None:
    perm = authorize(client)
    with caplog.at_level(logging.INFO, logger="httpx"):
        token = client.corp_token(CORP, perm.permanent_code)
        client.get_user_info(CORP, perm.permanent_code, "CODE-wangwu")
    assert "gettoken" in caplog.text
    assert "auth/getuserinfo" in caplog.text
    for secret in (perm.permanent_code, token, "CODE-wangwu", "corpsecret"):
        assert secret not in caplog.text


# -- configuration -------------------------------------------------------------------
def test_api_base_from_env() -> None:
    assert api_base_from_env({}) == DEFAULT_API_BASE
    assert api_base_from_env({"QYWX_API_BASE": " "}) == DEFAULT_API_BASE
    local = "http://127.0.0.1:8123/cgi-bin/"
    assert api_base_from_env({"QYWX_API_BASE": local}) == local.rstrip("/")
    for bad in ("ftp://host/cgi-bin", "qyapi.weixin.qq.com", "http:///x", "http://h/?t=1"):
        with pytest.raises(UsageError):
            api_base_from_env({"QYWX_API_BASE": bad})


def test_client_repr_and_base_url(store: Store) -> None:
    with WeComClient(store, base_url="https://example.test/cgi-bin/") as client:
        assert client.base_url == "https://example.test/cgi-bin"
        assert repr(client) == "WeComClient(base_url='https://example.test/cgi-bin')"
    with pytest.raises(UsageError):
        WeComClient(store, base_url="not a url")


def test_an_auth_code_exchange_waits_for_a_late_answer_other_calls_do_not(
    store: Store, fake: FakeWeCom, clock: Clock, sleeps: list[float]
) -> None:
    """WeCom spends the AuthCode when the request arrives, so giving up on a late answer
    only loses the permanent code: the exchange waits ``exchange_timeout`` while every
    other call keeps the client's ``timeout`` (0.2 s here). Real loopback: timeouts are
    the socket's. The fake holds each call until released; the test waits past 0.2 s."""
    import threading
    import time

    v2 = "service/v2/get_permanent_code"
    store.save_suite_ticket(SUITE, TICKET, int(T0))
    with (
        serving(fake, "/cgi-bin") as base,
        WeComClient(
            store, base_url=base, now=clock, sleep=sleeps.append, timeout=0.2,
            exchange_timeout=30.0,
        ) as client,
    ):  # fmt: skip
        fake.hold(v2, stage="after")  # the code is spent; only the answer waits
        answers: list[PermanentCode] = []
        exchange = threading.Thread(target=lambda: answers.append(authorize(client)))
        exchange.start()
        assert fake.wait_held(v2, timeout=10)
        time.sleep(0.6)  # three times what any other call would wait
        assert fake.release(v2) == 1
        exchange.join(10)
        assert [a.corp_id for a in answers] == [CORP]  # the late answer was taken
        fake.hold("gettoken", count=3)  # the first try and both retries
        try:
            with pytest.raises(WeComTransportError, match="gettoken"):
                client.corp_token(CORP, answers[0].permanent_code)
        finally:
            fake.release()
