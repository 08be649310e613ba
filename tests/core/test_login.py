"""LoginService: real Store, real WeComClient, FakeWeCom over httpx.WSGITransport."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import ConflictError, LoginError, RecordNotFound, UsageError
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.login import (
    LOGIN_CODE_TTL,
    LoginService,
    build_login_url,
    check_platform,
    check_redirect_uri,
    check_state,
    hash_login_code,
)
from qywx_cli.core.store import Store
from qywx_cli.core.store.sqlite import SQLiteStore
from qywx_cli.core.wecom import WeComClient
from tests.helpers import Clock

SUITE = "dk7f3a9c2e51b04d18"
OTHER_SUITE = "dk7f3a9c2e51b04d29"
SECRET = "suite-secret-9f8e7d6c5b4a"
CORP = "wwa1b2c3d4e5f60a01"
CORP2 = "wwa1b2c3d4e5f60b02"
T0 = 1_800_000_000.0


class Tokens:
    """Deterministic token source: distinct, recognisable values."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.n = 0

    def __call__(self, nbytes: int) -> str:
        self.n += 1
        return f"{self.prefix}{self.n:0{nbytes}d}"


def instance(name: str = "CompanyA", suite: str = SUITE, corp: str | None = CORP) -> AuthInstance:
    return AuthInstance(
        name=name,
        title=name,
        type="auths.loginTypes.QywxProxyType",
        suite_id=suite,
        suite_secret=SECRET,
        encoding_aes_key="E9UHtBKCXwKg2OOuJ5GfwRkNR3dcmHKmaJjmQt4cugP",
        token="YWGqjToTJimOPcw0culi3XVC",
        corp_id=corp,
        is_active=True,
        path=Path("/nonexistent") / name,
    )


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock(T0)
        self.fake = FakeWeCom(now=self.clock)
        self.store = Store(tmp_path / "qywx.db", now=self.clock)
        self.client = WeComClient(
            self.store,
            base_url="http://fake.test/cgi-bin",
            transport=httpx.WSGITransport(app=self.fake),
            now=self.clock,
        )
        self.codes = Tokens("LC")
        self.states = Tokens("st")
        self.logins = LoginService(
            self.store, self.client, now=self.clock, token=self.codes, state_token=self.states
        )

    def authorize(self, corp: str, suite: str = SUITE) -> None:
        """What create_auth does: exchange an AuthCode and keep the permanent code."""
        self.store.save_suite_ticket(suite, f"ticket-for-{suite}", int(self.clock()))
        perm = self.client.get_permanent_code(suite, SECRET, f"AUTHCODE-{corp}-{'x' * 64}")
        # v2 lists no agent (doc 100776): the agentid comes from v2/get_auth_info.
        info = self.client.get_auth_info(suite, SECRET, perm.corp_id, perm.permanent_code)
        self.store.upsert_corp_auth(
            suite,
            perm.corp_id,
            permanent_code=perm.permanent_code,
            agent_id=info.agent_id,
            corp_name=perm.corp_name,
        )


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path)
    w.authorize(CORP)
    return w


# -- URL building ------------------------------------------------------------------------


def test_workbench_url_is_the_documented_oauth_url_with_the_redirect_encoded_once() -> None:
    url = build_login_url(
        "workbench", CORP, 1000002, "https://app.example.com/cb?next=/home&a=1", "xyz123"
    )
    assert url == (
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wwa1b2c3d4e5f60a01"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb%3Fnext%3D%2Fhome%26a%3D1"
        "&response_type=code&scope=snsapi_base&state=xyz123&agentid=1000002#wechat_redirect"
    )
    query = parse_qs(urlsplit(url).query)
    assert query["redirect_uri"] == ["https://app.example.com/cb?next=/home&a=1"]


def test_qr_url_is_the_wwlogin_corpapp_url() -> None:
    url = build_login_url("qr", CORP, 1000002, "https://app.example.com/cb", "s1")
    assert url == (
        "https://login.work.weixin.qq.com/wwlogin/sso/login?login_type=CorpApp"
        "&appid=wwa1b2c3d4e5f60a01&agentid=1000002"
        "&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&state=s1"
    )


@pytest.mark.parametrize("state", ["", "a-b", "ab_c", "é", "x" * 129])
def test_state_rule_is_letters_and_digits_up_to_128(state: str) -> None:
    with pytest.raises(UsageError, match="letters and digits"):
        check_state(state)


def test_state_of_128_letters_is_fine() -> None:
    assert check_state("A1" * 64) == "A1" * 64


@pytest.mark.parametrize(
    "uri",
    [
        "https%3A%2F%2Fapp.example.com%2Fcb",  # already encoded: would be encoded twice
        "/relative/cb",
        "ftp://app.example.com/cb",
        "https:///no-host",
        "https://app.example.com/cb#frag",
    ],
)
def test_redirect_uri_must_be_absolute_unencoded_http(uri: str) -> None:
    with pytest.raises(UsageError, match="redirect URI"):
        check_redirect_uri(uri)


def test_platform_is_a_short_identifier() -> None:
    assert check_platform("app") == "app"
    with pytest.raises(UsageError):
        check_platform("app; drop")


# -- login ---------------------------------------------------------------------------------


def test_workbench_login_issues_a_hashed_one_time_login_code(world: World) -> None:
    result = world.logins.login(instance(), CORP, "CODE-zhangsan")
    assert (result.user_id, result.corp_id, result.login_type) == ("zhangsan", CORP, "workbench")
    assert result.login_code == "LC" + "1".zfill(32)
    assert result.expires_in == LOGIN_CODE_TTL
    assert result.expires_at == T0 + LOGIN_CODE_TTL
    assert result.login_code not in repr(result)
    # Only the hash is stored: the code itself is nowhere in the database file.
    world.store.close()
    assert isinstance(world.store, SQLiteStore)
    raw = b"".join(p.read_bytes() for p in world.store.path.parent.glob("qywx.db*"))
    assert result.login_code.encode() not in raw
    assert hashlib.sha256(result.login_code.encode()).hexdigest() == hash_login_code(
        result.login_code
    )


def test_code_exchange_uses_the_corp_token_and_auth_getuserinfo(world: World) -> None:
    world.logins.login(instance(), CORP, "CODE-zhangsan", "qr")
    calls = (
        httpx.Client(transport=httpx.WSGITransport(app=world.fake))
        .get("http://fake.test/fake/state")
        .json()["calls"]
    )
    assert calls["gettoken"] == 1
    assert calls["auth/getuserinfo"] == 1
    assert not any("3rd" in api for api in calls)


def test_login_code_is_redeemable_once_and_only_before_it_expires(world: World) -> None:
    first = world.logins.login(instance(), CORP, "CODE-zhangsan")
    used = world.logins.redeem(first.login_code)
    assert (used.user_id, used.corp_id, used.instance) == ("zhangsan", CORP, "CompanyA")
    with pytest.raises(LoginError, match="already used"):
        world.logins.redeem(first.login_code)
    second = world.logins.login(instance(), CORP, "CODE-lisi")
    world.clock.t += LOGIN_CODE_TTL + 1
    with pytest.raises(LoginError, match="expired"):
        world.logins.redeem(second.login_code)


def test_reusing_a_wecom_code_is_a_clear_login_error(world: World) -> None:
    world.logins.login(instance(), CORP, "CODE-zhangsan")
    with pytest.raises(LoginError, match=r"errcode 40029.*already used"):
        world.logins.login(instance(), CORP, "CODE-zhangsan")


def test_non_member_cannot_log_in(world: World) -> None:
    world.fake.register_code("CODE-outsider", open_id="oAbc123")
    with pytest.raises(LoginError, match="not a member"):
        world.logins.login(instance(), CORP, "CODE-outsider")


def test_unknown_and_cancelled_corps_and_inactive_instances_are_refused(world: World) -> None:
    with pytest.raises(LoginError, match=f"corp {CORP2} has not authorized CompanyA"):
        world.logins.login(instance(), CORP2, "CODE-a")
    world.store.cancel_corp_auth(SUITE, CORP)
    with pytest.raises(LoginError, match="cancelled its authorization"):
        world.logins.login(instance(), CORP, "CODE-b")
    with pytest.raises(LoginError, match="not active"):
        world.logins.login(replace(instance(), is_active=False), CORP, "CODE-c")


@pytest.mark.parametrize(
    ("kind", "code"), [("password", "CODE-a"), ("workbench", " "), ("qr", "x" * 513)]
)
def test_bad_login_arguments_are_usage_errors(world: World, kind: str, code: str) -> None:
    with pytest.raises(UsageError):
        world.logins.login(instance(), CORP, code, kind)


def test_corp_list_never_shows_other_customers_of_the_suite(world: World) -> None:
    world.authorize("ww0000000000000001")
    world.authorize(CORP2)
    world.authorize("wwothersuite0000001", suite=OTHER_SUITE)
    result = world.logins.login(instance(), CORP2, "CODE-zhangsan")
    assert [c.corp_id for c in result.corp_list] == [CORP2]
    assert all(c.agent_id for c in result.corp_list)


# -- config, URLs, routing ------------------------------------------------------------------


def test_login_config_reports_agent_id_once_authorized(world: World) -> None:
    cfg = world.logins.login_config(instance())
    assert (cfg.suite_id, cfg.corp_id, cfg.authorized) == (SUITE, CORP, True)
    assert cfg.agent_id == world.store.get_corp_auth(CORP, SUITE).agent_id  # type: ignore[union-attr]
    other = world.logins.login_config(instance(corp=CORP2))
    assert (other.authorized, other.agent_id) == (False, None)


def test_login_url_takes_the_agent_id_from_the_corp_auth_and_makes_a_state(world: World) -> None:
    auth = world.store.get_corp_auth(CORP, SUITE)
    assert auth is not None and auth.agent_id is not None
    url = world.logins.login_url(instance(), "https://app.example.com/cb")
    assert url.state == "st" + "1".zfill(16)
    assert url.url == build_login_url(
        "workbench", CORP, auth.agent_id, "https://app.example.com/cb", url.state
    )
    qr = world.logins.login_url(
        instance(corp=None), "https://a.example/cb", login_type="qr", corp_id=CORP, state="abc"
    )
    assert qr.url.startswith("https://login.work.weixin.qq.com/wwlogin/sso/login?")
    assert (qr.state, qr.agent_id) == ("abc", auth.agent_id)
    with pytest.raises(UsageError, match="no corpId"):
        world.logins.login_url(instance(corp=None), "https://a.example/cb")
    with pytest.raises(LoginError, match="has not authorized"):
        world.logins.login_url(instance(), "https://a.example/cb", corp_id=CORP2)


def test_route_prefers_the_instance_bound_to_the_corp(world: World) -> None:
    bound = instance("Bound", corp=CORP)
    shared = instance("Shared", corp=None)
    other = instance("Other", suite=OTHER_SUITE)
    assert world.logins.route(CORP, [shared, other, bound]).name == "Bound"
    assert world.logins.route(CORP, [shared, other]).name == "Shared"
    with pytest.raises(LoginError, match="several instances"):
        world.logins.route(CORP, [shared, instance("Shared2", corp=None)])
    with pytest.raises(LoginError, match="any active instance"):
        world.logins.route(CORP, [other])
    world.store.cancel_corp_auth(SUITE, CORP)
    with pytest.raises(LoginError, match="cancelled"):
        world.logins.route(CORP, [bound])


# -- org codes -------------------------------------------------------------------------------


def test_org_codes_are_case_insensitive_and_guarded(world: World) -> None:
    world.authorize(CORP2)
    info = world.logins.set_org_code(CORP, "Acme_HQ-1")
    assert (info.code, info.corp_id, info.suite_id, info.state) == (
        "acme_hq-1",
        CORP,
        SUITE,
        "active",
    )
    assert world.logins.login_config_by_code("ACME_hq-1").agent_id == info.agent_id
    with pytest.raises(ConflictError, match=f"belongs to corp {CORP}"):
        world.logins.set_org_code(CORP2, "acme_HQ-1")
    moved = world.logins.set_org_code(CORP2, "acme_HQ-1", force=True)
    assert moved.corp_id == CORP2
    assert [i.corp_id for i in world.logins.org_codes()] == [CORP2]
    with pytest.raises(UsageError):
        world.logins.set_org_code(CORP, "no spaces")
    with pytest.raises(RecordNotFound, match="no active authorization"):
        world.logins.set_org_code("wwneverseen0000001", "fresh")
    with pytest.raises(RecordNotFound):
        world.logins.org_code("missing")


def test_login_config_by_code_refuses_a_cancelled_corp(world: World) -> None:
    world.logins.set_org_code(CORP, "acme")
    world.store.cancel_corp_auth(SUITE, CORP)
    assert world.logins.org_code("acme").state == "cancelled"
    with pytest.raises(LoginError, match="no active authorization"):
        world.logins.login_config_by_code("acme")
