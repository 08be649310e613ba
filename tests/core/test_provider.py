"""The provider side of 代开发 through the public core API, against FakeWeCom in-process:
provider token, authorization links tied to the corp that scans them, app publish
status, JS-SDK tickets and signatures, and the sensitive-info (privateinfo) login."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.config import AuthInstance, load_instances
from qywx_cli.core.errors import ConfigError, LoginError, UsageError, WeComAPIError
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.login import LoginService, build_login_url, check_scope
from qywx_cli.core.provider import NOT_ONLINE_HINT, ProviderService, provider_credentials
from qywx_cli.core.service import CallbackService
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import Store
from qywx_cli.core.wecom import ProviderCredentials, WeComClient, sign
from tests.helpers import Clock

API = "http://fake.test/cgi-bin"
CORP = "wwa1b2c3d4e5f60a01"
PROVIDER = "wwprovider00000001"
SECRET = "provider-secret-0123456789"
T0 = time.time()


class World:
    def __init__(self, auths: Path, db: Path) -> None:
        self.clock = Clock(T0)
        self.fake = FakeWeCom(now=self.clock, provider_secret=SECRET)
        self.store = Store(db, now=self.clock)
        self.settings = Settings(
            auths_dir=auths,
            db_path=db,
            api_base=API,
            provider_corp_id=PROVIDER,
            provider_secret=SECRET,
        )
        self.client = self.new_client()
        self.inst: AuthInstance = {i.name: i for i in load_instances(auths)}["QywxProxyCompanyA"]
        self.service = CallbackService(
            self.settings,
            store=self.store,
            client=self.client,
            instances=[self.inst],
            background=False,
            now=self.clock,
        )
        self.provider = ProviderService(self.store, self.client, self.settings, now=self.clock)
        self.logins = LoginService(self.store, self.client, now=self.clock)
        self.nonce = 0

    def new_client(self) -> WeComClient:
        """Another process's client: its own HTTP connection, the same store and WeCom."""
        return WeComClient(
            self.store, base_url=API, transport=httpx.WSGITransport(app=self.fake), now=self.clock
        )

    def send(self, name: str, corp: str | None = CORP, **overrides: str) -> str:
        self.nonce += 1
        xml = ev.build_event_xml(
            name, suite_id=self.inst.suite_id, corp_id=corp, overrides=overrides
        )
        env = self.inst.crypto().encrypt_msg(
            xml, self.inst.suite_id, str(int(self.clock())), str(self.nonce)
        )
        response = self.service.notify(
            msg_signature=env.msg_signature,
            timestamp=env.timestamp,
            nonce=env.nonce,
            body=env.request_xml(self.inst.suite_id),
        )
        assert response.text == "success"
        assert response.record_id is not None
        return self.store.get_callback(response.record_id).status

    def calls(self, api: str) -> int:
        state = httpx.Client(transport=httpx.WSGITransport(app=self.fake)).get(
            "http://fake.test/fake/state"
        )
        return int(state.json()["calls"].get(api, 0))

    def install(self, **scan: Any) -> str:
        """auth-url → a corp admin scans it → create_auth carrying the link's state."""
        link = self.provider.auth_url(self.inst)
        grant = self.fake.scan(link.state, corp_id=CORP, **scan)
        assert grant["suite_id"] == self.inst.suite_id
        assert self.send("suite_ticket", None) == "processed"
        status = self.send("create_auth", AuthCode=grant["auth_code"], State=link.state)
        assert status == "processed"
        return link.state


@pytest.fixture
def world(auths: Path, tmp_path: Path) -> Iterator[World]:
    w = World(auths, tmp_path / "qywx.db")
    yield w
    w.service.close()


# -- provider credentials and token ----------------------------------------------------------


def test_provider_token_is_cached_and_repeats_return_the_same(world: World) -> None:
    creds = ProviderCredentials(PROVIDER, SECRET)
    first = world.client.provider_token(creds)
    assert world.new_client().provider_token(creds) == first  # from the store
    assert world.calls("service/get_provider_token") == 1
    assert SECRET not in repr(creds)


def test_an_invalid_provider_secret_is_one_clear_line(world: World) -> None:
    with pytest.raises(WeComAPIError) as info:
        world.client.provider_token(ProviderCredentials(PROVIDER, "wrong-secret-000"))
    assert info.value.errcode == 40001
    assert "wrong-secret-000" not in str(info.value) and "\n" not in str(info.value)


def test_an_expired_provider_token_is_refreshed_without_wiping_tickets(world: World) -> None:
    world.store.save_suite_ticket(world.inst.suite_id, "ticket-kept-0001", 1)
    world.provider.auth_url(world.inst, "first")
    world.clock.advance(7200 + 1)  # expired: a new one
    world.provider.auth_url(world.inst, "second")
    assert world.calls("service/get_provider_token") == 2
    # WeCom revokes a cached token early: the call is repeated once with a new one.
    world.fake.inject_fault("get_customized_auth_url", errcode=42001)
    world.provider.auth_url(world.inst, "third")
    assert world.calls("service/get_provider_token") == 3
    assert world.calls("service/get_customized_auth_url") == 4
    ticket = world.store.latest_suite_ticket(world.inst.suite_id)
    assert ticket is not None and ticket.ticket == "ticket-kept-0001"


@pytest.mark.parametrize(
    ("corp_id", "secret", "fragment"),
    [
        (None, SECRET, "provider_corp_id is not set"),
        (PROVIDER, None, "the provider secret is not set: set QYWX_PROVIDER_SECRET"),
    ],
)
def test_missing_provider_settings_say_which(
    tmp_path: Path, corp_id: str | None, secret: str | None, fragment: str
) -> None:
    settings = Settings(
        auths_dir=tmp_path,
        db_path=tmp_path / "q.db",
        api_base=API,
        provider_corp_id=corp_id,
        provider_secret=secret,
    )
    with pytest.raises(ConfigError, match=fragment) as info:
        provider_credentials(settings)
    assert info.value.code == "no-provider-credentials"


# -- authorization links ------------------------------------------------------------------


def test_auth_url_records_its_state_and_the_corp_that_scans_it_is_linked(world: World) -> None:
    state = world.install(corp_name="Acme")
    link = world.store.get_auth_link(state)
    assert link is not None and link.suite_id == world.inst.suite_id
    assert link.qrcode_url.startswith("https://") and link.corp_id == CORP
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.link_state == state and auth.corp_name == "Acme"
    # v2 (doc 100776) was used, then v2/get_auth_info for the agentid it leaves out.
    assert world.calls("service/v2/get_permanent_code") == 1
    assert world.calls("service/get_permanent_code") == 0
    assert auth.agent_id is not None


def test_a_state_comes_back_from_v2_even_when_create_auth_omits_it(world: World) -> None:
    link = world.provider.auth_url(world.inst, "viaV2only")
    grant = world.fake.scan(link.state, corp_id=CORP)
    world.send("suite_ticket", None)
    assert world.send("create_auth", AuthCode=grant["auth_code"], State="") == "processed"
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.link_state == "viaV2only"


@pytest.mark.parametrize("state", ["", "has space", "x" * 33, "中文"])
def test_auth_url_states_follow_wecoms_rule(world: World, state: str) -> None:
    with pytest.raises(UsageError, match="1-32 letters and digits"):
        world.provider.auth_url(world.inst, state)
    assert world.calls("service/get_customized_auth_url") == 0


# -- app publish status ---------------------------------------------------------------------


def test_create_auth_records_the_publish_status(world: World) -> None:
    world.install(publish_status=1)
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.publish_status == 1
    assert auth.publish_checked_at == world.clock()


def test_a_corp_not_online_is_refused_after_a_live_check(world: World) -> None:
    world.install(publish_status=1)
    with pytest.raises(LoginError) as info:
        world.provider.jsapi_config(CORP, "https://app.example.com/", instance=world.inst)
    assert NOT_ONLINE_HINT in str(info.value) and "1 开发中" in str(info.value)
    assert info.value.code == "app-not-online"
    # The provider publishes: the next call reads the status again and goes through.
    world.fake.set_publish_status(CORP, 2)
    config = world.provider.jsapi_config(CORP, "https://app.example.com/", instance=world.inst)
    assert config.api == "wx.config"
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.publish_status == 2


# -- JS-SDK ---------------------------------------------------------------------------------


def test_published_signature_example_is_reproduced() -> None:
    """WeCom's worked example, "JS-SDK使用权限签名算法" (developer.work.weixin.qq.com/
    document/path/90506, repeated on the 代开发 page 96909): these four inputs give
    signature 0f9de62fce790f9a083d5c99e95740ceb90c27ed."""
    sig = sign(
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
        "Wm3WZYTPz0wzccnW",
        1414587457,
        "http://mp.weixin.qq.com?params=value",
    )
    assert sig.string_to_sign == (
        "jsapi_ticket=sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-"
        "HhTdfl2fzFy1AOcHKP7qg&noncestr=Wm3WZYTPz0wzccnW&timestamp=1414587457"
        "&url=http://mp.weixin.qq.com?params=value"
    )
    assert sig.signature == "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
    assert sig.ticket not in repr(sig)


def test_signature_drops_the_fragment_and_never_url_encodes() -> None:
    base = sign("T", "n", 1, "https://a.example.com/p?q=中文&x=1")
    assert sign("T", "n", 1, "https://a.example.com/p?q=中文&x=1#/route?y").signature == (
        base.signature
    )
    raw = "jsapi_ticket=T&noncestr=n&timestamp=1&url=https://a.example.com/p?q=中文&x=1"
    assert base.signature == hashlib.sha1(raw.encode()).hexdigest()
    for bad in ["", "a.example.com/p", "#x"]:
        with pytest.raises(UsageError):
            sign("T", "n", 1, bad)
    with pytest.raises(UsageError):
        sign("T", "a&b", 1, "https://a.example.com/")


def _verify(world: World, config: dict[str, Any], url: str) -> dict[str, Any]:
    http = httpx.Client(transport=httpx.WSGITransport(app=world.fake))
    reply = http.post("http://fake.test/fake/jsapi/verify", json={**config, "url": url})
    return dict(reply.json())


def test_tickets_are_fetched_once_per_expiry_window_across_clients(world: World) -> None:
    world.install()
    url = "https://app.example.com/page?x=1#frag"
    first = world.provider.jsapi_config(CORP, url, instance=world.inst)
    other = ProviderService(world.store, world.new_client(), world.settings, now=world.clock)
    second = other.jsapi_config(CORP, url, instance=world.inst)
    assert first.signature.ticket == second.signature.ticket
    assert world.calls("get_jsapi_ticket") == 1
    assert _verify(world, first.as_dict(), url)["errMsg"] == "config:ok"
    world.clock.advance(7200 - 300 + 1)  # inside the refresh margin: a new ticket
    third = world.provider.jsapi_config(CORP, url, instance=world.inst)
    assert world.calls("get_jsapi_ticket") == 2 and third.signature.ticket != first.signature.ticket


def test_agent_config_uses_the_app_ticket_and_the_agentid(world: World) -> None:
    world.install()
    url = "https://app.example.com/"
    config = world.provider.jsapi_config(CORP, url, agent=True, instance=world.inst)
    doc = config.as_dict(["getContext"])
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None
    assert (doc["corpid"], doc["agentid"], doc["jsApiList"]) == (
        CORP,
        auth.agent_id,
        ["getContext"],
    )
    assert config.api == "wx.agentConfig"
    assert world.calls("ticket/get") == 1 and world.calls("get_jsapi_ticket") == 0
    assert _verify(world, doc, url)["errMsg"] == "agentConfig:ok"
    # The corp ticket does not sign an agentConfig.
    plain = world.provider.jsapi_config(CORP, url, instance=world.inst).as_dict()
    forged = {**doc, "signature": plain["signature"], "nonceStr": plain["nonceStr"]}
    forged["timestamp"] = plain["timestamp"]
    assert _verify(world, forged, url)["errMsg"] == "agentConfig:invalid signature"


def test_an_expired_ticket_fails_the_front_ends_check(world: World) -> None:
    world.install()
    url = "https://app.example.com/"
    doc = world.provider.jsapi_config(CORP, url, instance=world.inst).as_dict()
    world.clock.advance(7201)
    verdict = _verify(world, doc, url)
    assert verdict["errMsg"] == "config:invalid signature"
    assert "expired" in verdict["reason"]


def test_cancel_auth_drops_the_tickets(world: World) -> None:
    world.install()
    world.provider.jsapi_config(CORP, "https://app.example.com/", instance=world.inst)
    world.provider.jsapi_config(CORP, "https://app.example.com/", agent=True, instance=world.inst)
    assert world.store.get_token("jsapi_ticket", CORP) is not None
    assert world.send("cancel_auth") == "processed"
    assert world.store.get_token("jsapi_ticket", CORP) is None
    assert not [
        k for k in ("jsapi_ticket", "agent_ticket") if world.store.get_token(k, CORP) is not None
    ]
    with pytest.raises(LoginError, match="cancelled its authorization"):
        world.provider.jsapi_config(CORP, "https://app.example.com/", instance=world.inst)


def test_a_corp_that_never_authorized_is_one_line(world: World) -> None:
    with pytest.raises(LoginError) as info:
        world.provider.jsapi_config("wwnever0000000001", "https://a.example.com/")
    assert "never authorized" in str(info.value) and info.value.code == "corp-not-authorized"


def test_ticket_fetches_are_rate_limited_like_wecom(world: World) -> None:
    """Without the cache, 401 fetches in an hour would hit 45009 (doc 96909)."""
    world.install()
    for _ in range(50):
        world.provider.jsapi_config(CORP, "https://app.example.com/", instance=world.inst)
    assert world.calls("get_jsapi_ticket") == 1


# -- sensitive-info login -------------------------------------------------------------------


def test_privateinfo_login_reads_the_members_details(world: World) -> None:
    world.install()
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.agent_id is not None
    url = world.logins.login_url(
        world.inst, "https://app.example.com/cb", corp_id=CORP, scope="snsapi_privateinfo"
    )
    assert "scope=snsapi_privateinfo" in url.url and f"agentid={auth.agent_id}" in url.url
    result = world.logins.login(world.inst, CORP, "CODE-zhangsan", scope="privateinfo")
    detail = result.user_detail
    assert detail is not None and detail.user_id == "zhangsan"
    assert detail.mobile and detail.email and detail.avatar
    assert detail.mobile not in repr(result) and detail.mobile not in repr(detail)
    assert world.calls("auth/getuserdetail") == 1
    base = world.logins.login(world.inst, CORP, "CODE-lisi")
    assert base.user_detail is None


def test_privateinfo_is_an_oauth_scope_only() -> None:
    with pytest.raises(UsageError, match="OAuth scope"):
        build_login_url("qr", CORP, 1000002, "https://a.example.com/cb", "s1", "privateinfo")
    with pytest.raises(UsageError, match="snsapi_base or snsapi_privateinfo"):
        check_scope("snsapi_userinfo")
    assert check_scope("snsapi_privateinfo") == check_scope("privateinfo") == "privateinfo"
