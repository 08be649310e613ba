"""The WeCom server API a 代开发 (proxy-developed) app needs, over httpx.

Which calls, and why these and not their look-alikes (wecom-protocol.md §4, §5.4):

* ``service/get_suite_token`` with the **latest** stored suite_ticket (§3.1, §5.1).
  It is the odd one out: it carries ``errcode`` only when it fails.
* ``service/get_permanent_code`` — for a 代开发 template the permanent code *is* the
  app's secret, and the reply carries no ``access_token`` (§3.2).
* ``service/get_auth_info`` takes ``auth_corpid`` + ``permanent_code``, not the
  auth code some SDKs send (§5.4).
* ``gettoken?corpid=&corpsecret=<permanent_code>`` for the app token; the
  third-party ``service/get_corp_token`` answers 40084 for a 代开发 code (§5.4).
* ``auth/getuserinfo`` / ``auth/getuserdetail`` with that app token;
  ``service/auth/getuserinfo3rd`` is refused to 代开发 apps (docs 91121).

Tokens are cached in the store (kind ``"suite"`` keyed by suite id, ``"corp"`` keyed
by corp id) and refreshed ``margin`` seconds before ``expires_in`` runs out. WeCom may
revoke a token early (§4.3), so an expired/invalid-token errcode on a *cached* token
drops that one token and repeats the call once. Suite tickets are never dropped:
losing one means waiting up to ten minutes for the next push (§5.1).

Every token, secret, ticket and code travels in a query string or JSON body; none
of them may reach an exception message or a log line. Errors name the API path only,
WeCom's errmsg is scrubbed of anything we sent, and httpx's own request log line
(logger ``httpx``, INFO) has its query string removed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeVar

import httpx

from qywx_cli.core.errors import (
    ConfigError,
    UsageError,
    WeComAPIError,
    WeComTransportError,
)
from qywx_cli.core.masking import MaskedRepr, mask
from qywx_cli.core.urls import split_url

__all__ = [
    "DEFAULT_API_BASE",
    "TOKEN_INVALID_ERRCODES",
    "AgentInfo",
    "AuthInfo",
    "PermanentCode",
    "TokenStore",
    "UserDetail",
    "UserIdentity",
    "WeComClient",
    "api_base_from_env",
]

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"

TOKEN_INVALID_ERRCODES = frozenset({40014, 40082, 42001, 42009})
"""Invalid/expired access_token (40014, 42001) and suite_access_token (40082, 42009), §4.3."""

DEFAULT_TOKEN_TTL = 7200
"""``expires_in`` WeCom returns "正常情况下" (§4.3); used only if a reply omits it."""

T = TypeVar("T")


# -- the slice of store.Store this module uses -------------------------------------
class _SuiteTicketLike(Protocol):
    @property
    def ticket(self) -> str: ...


class _CachedTokenLike(Protocol):
    @property
    def token(self) -> str: ...


class TokenStore(Protocol):
    """What WeComClient needs from :class:`qywx_cli.core.store.Store`."""

    def latest_suite_ticket(self, suite_id: str) -> _SuiteTicketLike | None: ...

    def get_token(self, kind: str, key: str, *, margin: float = 0) -> _CachedTokenLike | None: ...

    def put_token(self, kind: str, key: str, token: str, expires_at: float) -> None: ...

    def drop_tokens(self, kind: str | None = None, key: str | None = None) -> int: ...


# -- typed results -------------------------------------------------------------------
@dataclass(frozen=True, repr=False)
class AgentInfo(MaskedRepr):
    """One entry of ``auth_info.agent`` (§4): the 代开发 app as installed in a corp."""

    agent_id: int
    name: str
    is_customized_app: bool
    auth_mode: int | None
    allow_users: tuple[str, ...]
    allow_parties: tuple[int, ...]
    allow_tags: tuple[int, ...]


@dataclass(frozen=True, repr=False)
class PermanentCode(MaskedRepr):
    """get_permanent_code's answer; ``permanent_code`` is the 代开发 app secret (§3.2)."""

    _secret_fields = frozenset({"permanent_code"})

    permanent_code: str
    corp_id: str
    corp_name: str
    agent_id: int | None
    state: str | None
    auth_user_id: str | None
    is_customized_app: bool


@dataclass(frozen=True, repr=False)
class AuthInfo(MaskedRepr):
    """get_auth_info's answer: what the corp currently grants (for change_auth, §3.3)."""

    corp_id: str
    corp_name: str
    agent_id: int | None
    agents: tuple[AgentInfo, ...]


@dataclass(frozen=True, repr=False)
class UserIdentity(MaskedRepr):
    """auth/getuserinfo: a member has ``user_id``; a non-member ``open_id`` (docs 96442)."""

    _secret_fields = frozenset({"user_ticket"})

    user_id: str | None
    open_id: str | None
    external_user_id: str | None
    user_ticket: str | None


@dataclass(frozen=True, repr=False)
class UserDetail(MaskedRepr):
    """auth/getuserdetail (docs 96443); fields are empty unless the admin enabled them."""

    _secret_fields = frozenset({"mobile", "email", "biz_mail", "address"})

    user_id: str
    gender: str | None
    avatar: str | None
    qr_code: str | None
    mobile: str | None
    email: str | None
    biz_mail: str | None
    address: str | None


# -- configuration -------------------------------------------------------------------
def _validated_base(value: str, source: str) -> str:
    """An http(s) URL without query or fragment (tokens get appended as a query)."""
    parts = split_url(value.strip(), check_port=True)
    if parts is None:
        raise UsageError(f"{source} is not a well-formed URL")
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{source} must be an http:// or https:// URL such as {DEFAULT_API_BASE}")
    if not parts.hostname:
        raise UsageError(f"{source} has no host name")
    if parts.query or parts.fragment:
        raise UsageError(f"{source} must not carry a query string or fragment")
    return value.strip().rstrip("/")


def api_base_from_env(env: Mapping[str, str] = os.environ) -> str:
    """``QYWX_API_BASE`` (e.g. a ``qywx fake-wecom`` server) or WeCom's real base URL."""
    value = env.get("QYWX_API_BASE", "").strip()
    return _validated_base(value, "QYWX_API_BASE") if value else DEFAULT_API_BASE


class _RedactQuery(logging.Filter):
    """Strip query strings from httpx's "HTTP Request: GET <url>" INFO records.

    WeCom wants tokens and the corp secret in the query string, and httpx logs the
    full URL of every request; this keeps them out of any log an application keeps.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) and arg.query else arg
                for arg in record.args
            )
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())


_QUERY_RE = re.compile(r"\?\S*")

_PUBLIC_FIELDS = frozenset({"suite_id", "corpid", "auth_corpid"})
"""Request fields that are identifiers; every other value we send is treated as secret."""

_NOT_SENT: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
"""Failures that prove the request never reached WeCom."""


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """Mask every secret we sent and any query string from text WeCom or httpx wrote."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    return _QUERY_RE.sub("?…", text).strip()


# -- small JSON readers: WeCom's replies are loosely typed -------------------------
def _dict(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _str(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) != "":
            return str(value)
    return None


def _int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _agents(data: Mapping[str, Any]) -> tuple[AgentInfo, ...]:
    raw = _dict(data, "auth_info").get("agent")
    agents = []
    for item in raw if isinstance(raw, list) else []:
        agent_id = _int(item, "agentid") if isinstance(item, Mapping) else None
        if agent_id is None:
            continue
        privilege = _dict(item, "privilege")
        agents.append(
            AgentInfo(
                agent_id=agent_id,
                name=_str(item, "name") or "",
                is_customized_app=item.get("is_customized_app") is True,
                auth_mode=_int(item, "auth_mode"),
                allow_users=_strs(privilege.get("allow_user")),
                allow_parties=_ints(privilege.get("allow_party")),
                allow_tags=_ints(privilege.get("allow_tag")),
            )
        )
    return tuple(agents)


def _required(data: Mapping[str, Any], api: str, *path: str) -> str:
    """A field the API always returns on success; its absence is a malformed reply."""
    node: Mapping[str, Any] = data
    for key in path[:-1]:
        node = _dict(node, key)
    value = _str(node, path[-1])
    if value is None:
        raise WeComTransportError(f"{api}: malformed reply, no {'.'.join(path)}")
    return value


# -- the client ----------------------------------------------------------------------
class WeComClient:
    """A client for the server API calls a 代开发 login needs, with token caching.

    ``retries`` extra attempts, ``backoff * 2**n`` seconds apart, are made only when
    WeCom could not be reached (connect errors, timeouts) or answered HTTP 5xx. A JSON
    errcode is an answer, never retried here: repeating get_permanent_code with a used
    auth code, for instance, only turns the real error into 40078. For the same reason
    calls that spend a one-time code retry only failures that prove nothing was sent.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        margin: float = 300.0,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self.base_url = (
            api_base_from_env() if base_url is None else _validated_base(base_url, "base URL")
        )
        self._retries = max(0, retries)
        self._backoff = backoff
        self._margin = margin
        self._now = now
        self._sleep = sleep
        _install_log_redaction()
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"WeComClient(base_url={self.base_url!r})"

    def __enter__(self) -> WeComClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport ---------------------------------------------------------------------
    def _call(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        single_use: bool = False,
    ) -> dict[str, Any]:
        """One API call: retry unreachable/5xx, then parse JSON and raise on errcode.

        ``single_use`` marks calls that consume a one-time code (AuthCode, OAuth code):
        once the request may have reached WeCom (a read timeout, a 5xx) a repeat would
        only fail with 40078/40029 and hide the real error, so those calls are retried
        only when the connection was never made.
        """
        sent = [
            str(value)
            for name, value in [*(params or {}).items(), *(body or {}).items()]
            if name not in _PUBLIC_FIELDS
        ]
        retryable = _NOT_SENT if single_use else (httpx.TransportError,)
        attempt = 0
        while True:
            try:
                response = self._http.request(method, api, params=params, json=body)
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__}: {_scrub(str(exc), sent)}".rstrip(": ")
                if not isinstance(exc, retryable):
                    raise WeComTransportError(f"{api}: request failed ({failure})") from None
            else:
                if response.status_code < 500:
                    break
                failure = f"HTTP {response.status_code}"
                if single_use:
                    raise WeComTransportError(f"{api}: WeCom answered {failure}")
            if attempt >= self._retries:
                raise WeComTransportError(
                    f"{api}: WeCom unreachable after {attempt + 1} attempt(s) ({failure})"
                )
            self._sleep(self._backoff * (2**attempt))
            attempt += 1
        return self._parse(response, api, sent)

    @staticmethod
    def _parse(response: httpx.Response, api: str, sent: Iterable[str]) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both
            raise WeComTransportError(
                f"{api}: non-JSON reply (HTTP {response.status_code})"
            ) from None
        if not isinstance(data, dict):
            raise WeComTransportError(f"{api}: reply is not a JSON object")
        errcode = _int(data, "errcode")
        if "errcode" in data and errcode is None:
            raise WeComTransportError(f"{api}: malformed reply, errcode is not a number")
        if errcode:
            errmsg = _scrub(str(data.get("errmsg") or ""), sent)
            raise WeComAPIError(errcode, errmsg, api=api)
        return data

    # -- token cache ---------------------------------------------------------------------
    def _cached(
        self, kind: str, key: str, fetch: Callable[[], tuple[str, int]], *, fresh: bool = False
    ) -> tuple[str, bool]:
        """The cached token if it outlives the margin, else a fresh one; (token, was_cached).

        ``fresh`` skips the cache lookup (the new token is still cached).
        """
        cached = None if fresh else self._store.get_token(kind, key, margin=self._margin)
        if cached is not None:
            return cached.token, True
        token, expires_in = fetch()
        self._store.put_token(kind, key, token, self._now() + expires_in)
        return token, False

    def _with_token(
        self,
        kind: str,
        key: str,
        fetch: Callable[[], tuple[str, int]],
        call: Callable[[str], T],
    ) -> T:
        """Run ``call`` with a token; if WeCom says a cached one is dead, refresh once."""
        token, was_cached = self._cached(kind, key, fetch)
        try:
            return call(token)
        except WeComAPIError as exc:
            if not was_cached or exc.errcode not in TOKEN_INVALID_ERRCODES:
                raise
        self._store.drop_tokens(kind, key)
        token, _ = self._cached(kind, key, fetch)
        return call(token)

    @staticmethod
    def _expires_in(data: Mapping[str, Any]) -> int:
        value = _int(data, "expires_in")
        return value if value and value > 0 else DEFAULT_TOKEN_TTL

    # -- suite (代开发 template) -----------------------------------------------------------
    def suite_token(self, suite_id: str, suite_secret: str, *, fresh: bool = False) -> str:
        """suite_access_token from the latest stored suite_ticket (§3.1, §4, §5.1).

        ``fresh`` asks WeCom even when a cached token is valid (doctor proves the secret,
        ticket and network work now, not two hours ago); the answer is cached as usual.
        Raises ConfigError (code ``no-suite-ticket``) when no ticket has arrived yet.
        """
        return self._cached(
            "suite", suite_id, lambda: self._fetch_suite(suite_id, suite_secret), fresh=fresh
        )[0]

    def _fetch_suite(self, suite_id: str, suite_secret: str) -> tuple[str, int]:
        ticket = self._store.latest_suite_ticket(suite_id)
        if ticket is None:
            raise ConfigError(
                f"no suite_ticket received yet for suite {suite_id}; WeCom pushes one every "
                "10 minutes, or refresh it in the provider console",
                code="no-suite-ticket",
            )
        api = "service/get_suite_token"
        data = self._call(
            "POST",
            api,
            body={
                "suite_id": suite_id,
                "suite_secret": suite_secret,
                "suite_ticket": ticket.ticket,
            },
        )
        return _required(data, api, "suite_access_token"), self._expires_in(data)

    def _suite_call(
        self,
        suite_id: str,
        suite_secret: str,
        api: str,
        body: Mapping[str, Any],
        *,
        single_use: bool = False,
    ) -> dict[str, Any]:
        return self._with_token(
            "suite",
            suite_id,
            lambda: self._fetch_suite(suite_id, suite_secret),
            lambda token: self._call(
                "POST",
                api,
                params={"suite_access_token": token},
                body=body,
                single_use=single_use,
            ),
        )

    def get_permanent_code(self, suite_id: str, suite_secret: str, auth_code: str) -> PermanentCode:
        """Exchange a create_auth / reset_permanent_code AuthCode (single use, §3.2, §3.5)."""
        api = "service/get_permanent_code"
        data = self._suite_call(
            suite_id, suite_secret, api, {"auth_code": auth_code}, single_use=True
        )
        agents = _agents(data)
        first = agents[0] if agents else None
        state = _str(data, "state") or _str(_dict(data, "register_code_info"), "state")
        return PermanentCode(
            permanent_code=_required(data, api, "permanent_code"),
            corp_id=_required(data, api, "auth_corp_info", "corpid"),
            corp_name=_str(_dict(data, "auth_corp_info"), "corp_name") or "",
            agent_id=first.agent_id if first else None,
            state=state,
            auth_user_id=_str(_dict(data, "auth_user_info"), "userid"),
            is_customized_app=(first.is_customized_app if first else False)
            or data.get("is_customized_app") is True,
        )

    def get_auth_info(
        self, suite_id: str, suite_secret: str, corp_id: str, permanent_code: str
    ) -> AuthInfo:
        """What a corp has granted now; the body names ``auth_corpid`` (§4, §5.4)."""
        api = "service/get_auth_info"
        data = self._suite_call(
            suite_id, suite_secret, api, {"auth_corpid": corp_id, "permanent_code": permanent_code}
        )
        agents = _agents(data)
        return AuthInfo(
            corp_id=_str(_dict(data, "auth_corp_info"), "corpid") or corp_id,
            corp_name=_str(_dict(data, "auth_corp_info"), "corp_name") or "",
            agent_id=agents[0].agent_id if agents else None,
            agents=agents,
        )

    # -- the 代开发 app in an authorized corp ---------------------------------------------
    def corp_token(self, corp_id: str, permanent_code: str) -> str:
        """The app's access_token: ``gettoken`` with the permanent code as corpsecret (§5.4)."""
        return self._cached("corp", corp_id, lambda: self._fetch_corp(corp_id, permanent_code))[0]

    def _fetch_corp(self, corp_id: str, permanent_code: str) -> tuple[str, int]:
        api = "gettoken"
        data = self._call("GET", api, params={"corpid": corp_id, "corpsecret": permanent_code})
        return _required(data, api, "access_token"), self._expires_in(data)

    def _corp_call(
        self,
        corp_id: str,
        permanent_code: str,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        single_use: bool = False,
    ) -> dict[str, Any]:
        return self._with_token(
            "corp",
            corp_id,
            lambda: self._fetch_corp(corp_id, permanent_code),
            lambda token: self._call(
                method,
                api,
                params={"access_token": token, **(params or {})},
                body=body,
                single_use=single_use,
            ),
        )

    def get_user_info(self, corp_id: str, permanent_code: str, code: str) -> UserIdentity:
        """Who an OAuth/web-login ``code`` belongs to (docs 96442/98177; single use, 5 min)."""
        data = self._corp_call(
            corp_id,
            permanent_code,
            "GET",
            "auth/getuserinfo",
            params={"code": code},
            single_use=True,
        )
        return UserIdentity(
            user_id=_str(data, "userid", "UserId"),
            open_id=_str(data, "openid", "OpenId"),
            external_user_id=_str(data, "external_userid"),
            user_ticket=_str(data, "user_ticket"),
        )

    def get_user_detail(self, corp_id: str, permanent_code: str, user_ticket: str) -> UserDetail:
        """Sensitive member fields for a snsapi_privateinfo ``user_ticket`` (docs 96443)."""
        api = "auth/getuserdetail"
        data = self._corp_call(
            corp_id, permanent_code, "POST", api, body={"user_ticket": user_ticket}
        )
        return UserDetail(
            user_id=_required(data, api, "userid"),
            gender=_str(data, "gender"),
            avatar=_str(data, "avatar"),
            qr_code=_str(data, "qr_code"),
            mobile=_str(data, "mobile"),
            email=_str(data, "email"),
            biz_mail=_str(data, "biz_mail"),
            address=_str(data, "address"),
        )
