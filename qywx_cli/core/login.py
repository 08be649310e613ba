"""Logging a corp member into a 代开发 app, and the organisation codes that name corps.

The two ways a member arrives (wecom-protocol.md §4.1, §4.2), and the one way their
``code`` is read (§4 "user identity (代开发/自建)", §5.4)::

    workbench (免登)  open.weixin.qq.com/connect/oauth2/authorize?appid=<corp>&agentid=<app>
    QR / browser      login.work.weixin.qq.com/wwlogin/sso/login?login_type=CorpApp&appid=<corp>
                      both redirect to redirect_uri?code=CODE&state=STATE
    code → auth/getuserinfo with the app's access_token, which is gettoken(corpid,
           corpsecret=<permanent code>); the third-party getuserinfo3rd is refused to
           代开发 apps (docs 91121), and appid is the customer corp, never the suite id.

WeCom's code is single use and lives five minutes (docs 96442), so it is exchanged at
once and what the application carries afterwards is our own **loginCode**: random,
short-lived (:data:`LOGIN_CODE_TTL`), kept only as a SHA-256 hash and redeemable once,
so a leaked database or log line cannot be replayed into a session.

Who may log in: a corp whose authorization of the instance's suite is ``active`` in the
store (its create_auth callback was processed, §3.2). A corp never seen, or one that
sent cancel_auth (§3.4), gets a :class:`LoginError` that says which.

Organisation codes (the element API's ``setCode``) are short names people type on a
QR login page to find their corp; they may only name an authorized corp, because the
page needs its agentid to build the wwlogin URL.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, urlencode

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import (
    LoginError,
    RecordNotFound,
    UsageError,
    WeComAPIError,
)
from qywx_cli.core.masking import MaskedRepr
from qywx_cli.core.provider import require_online
from qywx_cli.core.store import CorpAuth, LoginCode, OrgCode, Store
from qywx_cli.core.urls import split_url
from qywx_cli.core.wecom import UserDetail, WeComClient

__all__ = [
    "LOGIN_CODE_TTL",
    "LOGIN_TYPES",
    "OAUTH_AUTHORIZE_URL",
    "QR_LOGIN_URL",
    "SCOPES",
    "CorpEntry",
    "LoginConfig",
    "LoginResult",
    "LoginService",
    "LoginType",
    "LoginURL",
    "OrgCodeInfo",
    "Scope",
    "build_login_url",
    "check_login_type",
    "check_platform",
    "check_redirect_uri",
    "check_scope",
    "check_state",
    "hash_login_code",
]

LoginType = Literal["workbench", "qr"]
LOGIN_TYPES: Final[tuple[LoginType, ...]] = ("workbench", "qr")

Scope = Literal["base", "privateinfo"]
SCOPES: Final[tuple[Scope, ...]] = ("base", "privateinfo")
"""``snsapi_base`` (silent, userid only) or ``snsapi_privateinfo`` (the member consents;
getuserinfo adds a user_ticket that auth/getuserdetail turns into mobile, email, avatar…,
docs 96441-96443)."""

LOGIN_CODE_TTL: Final = 300
"""Seconds a loginCode stays redeemable: as long as WeCom's own OAuth code (docs 96442)."""

OAUTH_AUTHORIZE_URL: Final = "https://open.weixin.qq.com/connect/oauth2/authorize"
"""Workbench / in-app OAuth2 (§4.1)."""

QR_LOGIN_URL: Final = "https://login.work.weixin.qq.com/wwlogin/sso/login"
"""Web (QR) login (§4.2); the legacy qrConnect URL is superseded."""

MAX_OAUTH_CODE_BYTES: Final = 512
""""code最大为512字节" (§4.1)."""

INVALID_CODE_ERRCODE: Final = 40029
"""不合法的oauth_code: a reused or expired code (§4.3, §5.5)."""

_STATE_RE: Final = re.compile(r"[A-Za-z0-9]{1,128}")
_PLATFORM_RE: Final = re.compile(r"[A-Za-z0-9_]{1,32}")


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class CorpEntry:
    """One corp in a login's ``corpList``: what a corp switcher shows and needs."""

    corp_id: str
    corp_name: str | None
    agent_id: int | None


@dataclass(frozen=True, repr=False)
class LoginResult(MaskedRepr):
    """A completed login; ``login_code`` is a bearer credential, masked in ``repr``."""

    _secret_fields = frozenset({"login_code"})
    _repr_fields = ("login_code", "instance", "corp_id", "user_id", "login_type", "expires_at")

    login_code: str
    instance: str
    corp_id: str
    user_id: str
    login_type: LoginType
    expires_in: int
    expires_at: float
    corp_list: tuple[CorpEntry, ...]
    #: auth/getuserdetail's answer for a privateinfo login (its own repr masks it)
    user_detail: UserDetail | None = None


@dataclass(frozen=True)
class LoginConfig:
    """What a login page needs for one instance: identifiers only, never a secret.

    ``agent_id`` is known once the instance's corp has authorized the suite (it comes
    from get_permanent_code, §3.2); both login URLs need it (§4.1, §4.2).
    """

    instance: str
    title: str
    suite_id: str
    corp_id: str | None
    corp_name: str | None
    agent_id: int | None
    authorized: bool
    is_active: bool
    login_types: tuple[LoginType, ...] = LOGIN_TYPES


@dataclass(frozen=True)
class LoginURL:
    """A login URL and the ``state`` to check when WeCom redirects back with the code."""

    url: str
    login_type: LoginType
    corp_id: str
    agent_id: int
    state: str
    redirect_uri: str
    scope: Scope = "base"


@dataclass(frozen=True)
class OrgCodeInfo:
    """An org code, its corp, and that corp's authorization as the store knows it."""

    code: str
    corp_id: str
    corp_name: str | None
    agent_id: int | None
    suite_id: str | None
    state: str | None
    created_at: float
    updated_at: float

    @property
    def is_active(self) -> bool:
        return self.state == "active"


# ---------------------------------------------------------------------------------------
# Checks and URL building (pure)


def hash_login_code(login_code: str) -> str:
    """What the store keeps instead of the code: its SHA-256, lowercase hex."""
    return hashlib.sha256(login_code.encode("utf-8")).hexdigest()


def check_login_type(value: str) -> LoginType:
    for kind in LOGIN_TYPES:
        if value == kind:
            return kind
    raise UsageError(f"login type must be one of {', '.join(LOGIN_TYPES)}, not {value!r}")


def check_scope(value: str) -> Scope:
    """``base`` / ``privateinfo``, or WeCom's spelling ``snsapi_base`` / ``snsapi_privateinfo``."""
    name = value.removeprefix("snsapi_")
    for scope in SCOPES:
        if name == scope:
            return scope
    raise UsageError(
        f"scope must be snsapi_base or snsapi_privateinfo (base, privateinfo), not {value!r}"
    )


def check_state(state: str) -> str:
    """OAuth ``state``: "a-zA-Z0-9的参数值，长度不可超过128个字节" (§4.1)."""
    if not _STATE_RE.fullmatch(state):
        raise UsageError("state must be 1-128 letters and digits (WeCom's OAuth rule)")
    return state


def check_redirect_uri(uri: str) -> str:
    """An absolute http(s) URL, given *unencoded*: qywx encodes it exactly once.

    WeCom compares the redirect host with the app's 可信域名 and answers 50001 when they
    differ (§4.1); an already-encoded value would be encoded twice and never match.
    """
    parts = split_url(uri.strip(), check_port=True)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            "redirect URI must be an absolute http(s) URL, given unencoded "
            "(qywx URL-encodes it once)"
        )
    if parts.fragment:
        raise UsageError("redirect URI must not carry a #fragment (WeCom appends ?code=&state=)")
    return uri.strip()


def _check_oauth_code(code: str) -> str:
    code = code.strip()
    if not code:
        raise UsageError("the login code must not be empty")
    if len(code.encode("utf-8")) > MAX_OAUTH_CODE_BYTES:
        raise UsageError(f"the login code is longer than {MAX_OAUTH_CODE_BYTES} bytes")
    return code


def _check_corp_id(corp_id: str) -> str:
    corp_id = corp_id.strip()
    if not corp_id:
        raise UsageError("corpId must not be empty")
    return corp_id


def build_login_url(
    login_type: LoginType,
    corp_id: str,
    agent_id: int,
    redirect_uri: str,
    state: str,
    scope: Scope = "base",
) -> str:
    """The workbench OAuth2 URL (§4.1) or the wwlogin QR URL (§4.2) for a 代开发 app.

    ``appid`` is the customer corp's CorpID and ``agentid`` the 代开发 app's agentid in
    that corp: the provider corp id gives 40029, the template id "appid不正确", and a
    missing agentid 50001 (§4.1). ``redirect_uri`` is percent-encoded once, ``/`` and
    ``:`` included; the workbench URL must end in ``#wechat_redirect``. ``privateinfo``
    asks for ``snsapi_privateinfo``, which needs the agentid (doc 96441) and exists only
    for the OAuth link: the QR login's code yields no user_ticket (doc 98177).
    """
    check_state(state)
    if scope == "privateinfo" and login_type != "workbench":
        raise UsageError(
            "snsapi_privateinfo is an OAuth scope: use the workbench type (a QR login's "
            "code carries no user_ticket)"
        )
    check_redirect_uri(redirect_uri)

    def encode(params: list[tuple[str, str]]) -> str:
        return urlencode(params, quote_via=quote, safe="")

    if login_type == "workbench":
        query = encode(
            [
                ("appid", corp_id),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("scope", f"snsapi_{scope}"),
                ("state", state),
                ("agentid", str(agent_id)),
            ]
        )
        return f"{OAUTH_AUTHORIZE_URL}?{query}#wechat_redirect"
    query = encode(
        [
            ("login_type", "CorpApp"),
            ("appid", corp_id),
            ("agentid", str(agent_id)),
            ("redirect_uri", redirect_uri),
            ("state", state),
        ]
    )
    return f"{QR_LOGIN_URL}?{query}"


# ---------------------------------------------------------------------------------------
# The service


class LoginService:
    """Logins, login URLs and org codes over one store and one WeCom client.

    ``token`` makes loginCodes (``secrets.token_urlsafe``: 32 bytes → 43 characters) and
    ``state_token`` OAuth states (``secrets.token_hex``: letters and digits only, as the
    state rule wants); both are injected so tests are deterministic.
    """

    def __init__(
        self,
        store: Store,
        client: WeComClient,
        *,
        now: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_urlsafe,
        state_token: Callable[[int], str] = secrets.token_hex,
        code_ttl: int = LOGIN_CODE_TTL,
    ) -> None:
        if code_ttl < 1:
            raise UsageError("the login code lifetime must be at least one second")
        self._store = store
        self._client = client
        self._now = now
        self._token = token
        self._state_token = state_token
        self._ttl = code_ttl

    def __repr__(self) -> str:
        return f"LoginService(store={self._store!r}, code_ttl={self._ttl})"

    # -- authorization ------------------------------------------------------------------

    def authorization(self, instance: AuthInstance, corp_id: str) -> CorpAuth:
        """The corp's active authorization of the instance's suite, or a LoginError saying why."""
        if not instance.is_active:
            raise LoginError(f"instance {instance.name} is not active (isActive is false)")
        corp_id = _check_corp_id(corp_id)
        auth = self._store.get_corp_auth(corp_id, instance.suite_id)
        where = f"{instance.name} (suite {instance.suite_id})"
        if auth is None:
            raise LoginError(
                f"corp {corp_id} has not authorized {where}: no create_auth callback "
                "for it has been processed"
            )
        if not auth.is_active:
            raise LoginError(
                f"corp {corp_id} cancelled its authorization of {where}; "
                "its admin must install the app again"
            )
        if not auth.permanent_code:
            raise LoginError(
                f"corp {corp_id} has no permanent code for {where}; "
                "re-run its create_auth callback (qywx retry --failed)"
            )
        return auth

    def route(self, corp_id: str, instances: Iterable[AuthInstance]) -> AuthInstance:
        """The one active instance whose suite ``corp_id`` authorized, for service-level calls.

        An instance naming this corp in ``corpId`` wins over one naming no corp, which
        wins over one bound to another corp (validate's ``ambiguous-corp`` rule keeps
        the first kind unique).
        """
        corp_id = _check_corp_id(corp_id)
        active = [i for i in instances if i.is_active]
        authorized: list[AuthInstance] = []
        cancelled = False
        for inst in active:
            auth = self._store.get_corp_auth(corp_id, inst.suite_id)
            if auth is not None and auth.is_active:
                authorized.append(inst)
            elif auth is not None:
                cancelled = True
        if not authorized:
            if cancelled:
                raise LoginError(
                    f"corp {corp_id} cancelled its authorization; its admin must install "
                    "the app again"
                )
            names = ", ".join(sorted(i.name for i in active)) or "none"
            raise LoginError(
                f"corp {corp_id} has not authorized any active instance's suite "
                f"(active instances: {names})"
            )
        for rank in (
            lambda i: i.corp_id == corp_id,
            lambda i: i.corp_id is None,
            lambda i: True,
        ):
            best = sorted((i for i in authorized if rank(i)), key=lambda i: i.name)
            if len(best) == 1:
                return best[0]
            if best:
                raise LoginError(
                    f"corp {corp_id} is served by several instances "
                    f"({', '.join(i.name for i in best)}); log in through one of them"
                )
        raise AssertionError("unreachable")  # pragma: no cover - the last rank takes all

    # -- logins -------------------------------------------------------------------------

    def login(
        self,
        instance: AuthInstance,
        corp_id: str,
        code: str,
        login_type: str = "workbench",
        scope: str = "base",
    ) -> LoginResult:
        """Exchange WeCom's ``code`` for the member's userid and issue a one-time loginCode.

        Both login types read the code the same way for 代开发 (docs 96442, 98177).
        A non-member (WeCom answers with an openid only) cannot log in. ``privateinfo``
        also spends the member's user_ticket on auth/getuserdetail (doc 96443); the
        result carries those details unmasked, for the application to use.
        """
        kind = check_login_type(login_type)
        wanted = check_scope(scope)
        if wanted == "privateinfo" and kind != "workbench":
            raise UsageError("a privateinfo login needs a workbench (OAuth) code, not a QR one")
        code = _check_oauth_code(code)
        auth = require_online(self._store, self._client, self.authorization(instance, corp_id))
        assert auth.permanent_code is not None  # authorization() guarantees it
        try:
            who = self._client.get_user_info(auth.corp_id, auth.permanent_code, code)
        except WeComAPIError as exc:
            if exc.errcode != INVALID_CODE_ERRCODE:
                raise
            raise LoginError(
                f"WeCom refused the {kind} login code for corp {auth.corp_id} "
                f"(errcode {exc.errcode}): it is invalid, expired or already used; "
                "codes are single use and last 5 minutes"
            ) from None
        if not who.user_id:
            raise LoginError(
                f"the user is not a member of corp {auth.corp_id} (WeCom returned only an "
                "openid); only members can log in"
            )
        detail = None
        if wanted == "privateinfo":
            if not who.user_ticket:
                raise LoginError(
                    f"WeCom returned no user_ticket for {who.user_id} in corp {auth.corp_id}: "
                    "the code did not come from a snsapi_privateinfo link (qywx login-url "
                    "--scope snsapi_privateinfo) or the member is outside the app's range"
                )
            detail = self._client.get_user_detail(
                auth.corp_id, auth.permanent_code, who.user_ticket
            )
        login_code = self._token(32)
        expires_at = self._now() + self._ttl
        self._store.save_login_code(
            hash_login_code(login_code),
            instance=instance.name,
            corp_id=auth.corp_id,
            user_id=who.user_id,
            expires_at=expires_at,
        )
        return LoginResult(
            login_code=login_code,
            instance=instance.name,
            corp_id=auth.corp_id,
            user_id=who.user_id,
            login_type=kind,
            expires_in=self._ttl,
            expires_at=expires_at,
            corp_list=self.corp_list(instance, auth.corp_id),
            user_detail=detail,
        )

    def redeem(self, login_code: str) -> LoginCode:
        """Spend a loginCode: the first call within its lifetime gets the login, no other."""
        if not login_code:
            raise UsageError("the loginCode must not be empty")
        used = self._store.consume_login_code(hash_login_code(login_code))
        if used is None:
            raise LoginError("loginCode is unknown, expired or already used")
        return used

    def corp_list(self, instance: AuthInstance, corp_id: str) -> tuple[CorpEntry, ...]:
        """The corps the user may enter: the active one they authenticated against.

        A 代开发 user id is scoped to one corp (auth/getuserinfo answers for the corp
        whose token exchanged the code, §4), and one template serves unrelated
        customers, so listing the suite's other corps would show one customer's users
        the names of the others. A cancelled corp yields an empty list.
        """
        auth = self._store.get_corp_auth(corp_id, instance.suite_id)
        if auth is None or not auth.is_active:
            return ()
        return (CorpEntry(auth.corp_id, auth.corp_name, auth.agent_id),)

    def login_config(self, instance: AuthInstance) -> LoginConfig:
        auth = (
            self._store.get_corp_auth(instance.corp_id, instance.suite_id)
            if instance.corp_id
            else None
        )
        active = auth is not None and auth.is_active
        return LoginConfig(
            instance=instance.name,
            title=instance.title,
            suite_id=instance.suite_id,
            corp_id=instance.corp_id,
            corp_name=auth.corp_name if auth is not None else None,
            agent_id=auth.agent_id if auth is not None and active else None,
            authorized=active,
            is_active=instance.is_active,
        )

    def login_url(
        self,
        instance: AuthInstance,
        redirect_uri: str,
        *,
        login_type: str = "workbench",
        corp_id: str | None = None,
        state: str | None = None,
        scope: str = "base",
    ) -> LoginURL:
        """The URL that starts a login; ``state`` is generated when not given."""
        kind = check_login_type(login_type)
        wanted = check_scope(scope)
        redirect_uri = check_redirect_uri(redirect_uri)
        corp = corp_id or instance.corp_id
        if not corp:
            raise UsageError(
                f"instance {instance.name} has no corpId; name the corp to log into "
                "(--corp-id, corp_id=)"
            )
        auth = self.authorization(instance, corp)
        if auth.agent_id is None:
            raise LoginError(
                f"no agentid is recorded for corp {auth.corp_id}; a change_auth callback "
                "or a retried create_auth records it"
            )
        state = check_state(state) if state is not None else self._state_token(16)
        return LoginURL(
            url=build_login_url(kind, auth.corp_id, auth.agent_id, redirect_uri, state, wanted),
            login_type=kind,
            corp_id=auth.corp_id,
            agent_id=auth.agent_id,
            state=state,
            redirect_uri=redirect_uri,
            scope=wanted,
        )

    # -- org codes ----------------------------------------------------------------------

    def set_org_code(self, corp_id: str, code: str, *, force: bool = False) -> OrgCodeInfo:
        """Name an authorized corp; a code held by another corp needs ``force``.

        The store normalises the code (case-insensitive; letters, digits, ``-``, ``_``)
        and raises ConflictError for a code another corp holds.
        """
        corp_id = _check_corp_id(corp_id)
        auth = self._store.get_corp_auth(corp_id)
        if auth is None or not auth.is_active:
            raise RecordNotFound(
                f"corp {corp_id} has no active authorization; org codes can only name "
                "corps whose create_auth was processed"
            )
        return self._info(self._store.set_org_code(code, corp_id, force=force), auth)

    def org_code(self, code: str) -> OrgCodeInfo:
        """An org code and its corp, whatever the corp's state (RecordNotFound if unknown)."""
        org = self._store.get_org_code(code)
        return self._info(org, self._store.get_corp_auth(org.corp_id))

    def unset_org_code(self, code: str) -> OrgCodeInfo:
        """Remove an org code; what it named is returned (RecordNotFound if unknown)."""
        org = self._store.delete_org_code(code)
        return self._info(org, self._store.get_corp_auth(org.corp_id))

    def org_codes(self) -> list[OrgCodeInfo]:
        return [
            self._info(org, self._store.get_corp_auth(org.corp_id))
            for org in self._store.list_org_codes()
        ]

    def login_config_by_code(self, code: str) -> OrgCodeInfo:
        """What a QR login page needs after someone types their org code (§4.2)."""
        info = self.org_code(code)
        if not info.is_active:
            raise LoginError(
                f"corp {info.corp_id} of org code {info.code!r} has no active authorization"
            )
        if info.agent_id is None:
            raise LoginError(f"no agentid is recorded for corp {info.corp_id}")
        return info

    @staticmethod
    def _info(org: OrgCode, auth: CorpAuth | None) -> OrgCodeInfo:
        return OrgCodeInfo(
            code=org.code,
            corp_id=org.corp_id,
            corp_name=auth.corp_name if auth is not None else None,
            agent_id=auth.agent_id if auth is not None else None,
            suite_id=auth.suite_id if auth is not None else None,
            state=auth.state if auth is not None else None,
            created_at=org.created_at,
            updated_at=org.updated_at,
        )


def check_platform(platform: str) -> str:
    """loginByWorkbench's ``platform`` (LoginPlatformEnum in the element doc, default app)."""
    if not _PLATFORM_RE.fullmatch(platform):
        raise UsageError("platform must be 1-32 letters, digits or '_' (default: app)")
    return platform
