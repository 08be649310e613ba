"""Everything the fake remembers, and the token rules every family shares."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from qywx_cli.core.errors import WeComAPIError
from qywx_cli.core.fakewecom._routing import ERRMSG
from qywx_cli.core.fakewecom._slow import Gates

AUTH_CODE_TTL = 600
"""AuthCode lifetime, "10分钟内有效" (§3.2)."""

OAUTH_CODE_TTL = 300
"""OAuth code lifetime, five minutes (docs 96442)."""

USER_TICKET_TTL = 1800
"""user_ticket lifetime (docs 96442)."""

AUTH_URL_TTL = 864000
"""get_customized_auth_url's expires_in in doc 98744's sample ("10天过期")."""

LENIENT_TICKET_MIN = 8

DEFAULT_PUBLISH_STATUS = 2
"""customized_publish_status of a new authorization unless a test chooses (2 = 已上线)."""

_INVALID = {"suite": 40082, "corp": 40014, "provider": 40082}
"""errcode for a token never issued (or of another kind), per kind; 40082's errmsg is
"invalid suite_acccess_token or provider_access_token"."""

_EXPIRED = {"suite": 42009, "corp": 42001, "provider": 42001}
"""errcode for an expired token, per kind. WeCom documents no code for an expired
provider_access_token; the fake answers 42001 (UNCONFIRMED), which clients treat like
every other invalid-token code: drop the cached token and fetch a new one."""


@dataclass(frozen=True)
class Authorization:
    suite_id: str
    corp_id: str
    corp_name: str
    agent_id: int
    permanent_code: str
    state: str | None


@dataclass(frozen=True)
class Token:
    kind: str  # "suite" | "corp" | …
    subject: str  # suite id | corp id | …
    expires_at: float


@dataclass(frozen=True)
class AuthCodeGrant:
    corp_id: str
    corp_name: str | None
    state: str | None
    issued_at: float
    publish_status: int | None = None


@dataclass(frozen=True)
class AuthLink:
    """A 带参授权链接 handed out by get_customized_auth_url (doc 98744)."""

    state: str
    template_ids: tuple[str, ...]
    expires_at: float


@dataclass(frozen=True)
class JsTicket:
    """An issued jsapi_ticket / agent_config ticket (doc 96909)."""

    kind: str  # "jsapi" | "agent_config"
    corp_id: str
    agent_id: int | None
    expires_at: float


@dataclass(frozen=True)
class OAuthCode:
    user_id: str | None
    open_id: str | None
    corp_id: str | None
    issued_at: float


@dataclass(frozen=True)
class UserTicket:
    corp_id: str
    user_id: str
    expires_at: float


@dataclass
class Fault:
    errcode: int | None
    errmsg: str
    http_status: int | None
    remaining: int


@dataclass
class FakeLicenceCode:
    """An interface-licence activation code (doc 97189 status: 1 unbound, 2 bound, 5 merged)."""

    code: str
    corp_id: str
    type: int
    duration: int
    status: int = 1
    user_id: str | None = None
    active_time: int | None = None
    expire_time: int | None = None


@dataclass
class LicenceBook:
    codes: dict[str, FakeLicenceCode] = field(default_factory=dict)
    orders: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # id → (corp, codes)


@dataclass
class State:
    """The fake's memory; only touched under FakeWeCom's lock."""

    now: Callable[[], float]
    ttl: int
    random: Callable[[int], str]
    strict: bool
    tickets: dict[str, set[str]] = field(default_factory=dict)
    auth_codes: dict[str, AuthCodeGrant] = field(default_factory=dict)
    used_auth_codes: set[str] = field(default_factory=set)
    authorizations: dict[str, Authorization] = field(default_factory=dict)  # by permanent code
    tokens: dict[str, Token] = field(default_factory=dict)
    codes: dict[str, OAuthCode] = field(default_factory=dict)
    used_codes: set[str] = field(default_factory=set)
    user_tickets: dict[str, UserTicket] = field(default_factory=dict)
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    provider_secret: str | None = None
    auth_links: dict[str, AuthLink] = field(default_factory=dict)
    publish: dict[tuple[str, str], int] = field(default_factory=dict)  # (suite, corp)
    js_tickets: dict[str, JsTicket] = field(default_factory=dict)
    ticket_fetches: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    licences: LicenceBook = field(default_factory=LicenceBook)
    #: delays and holds; their own lock, never waited on under the state lock
    gates: Gates = field(default_factory=Gates)

    def issue(self, kind: str, subject: str) -> str:
        token = self.random(32)
        self.tokens[token] = Token(kind, subject, self.now() + self.ttl)
        return token

    def check_token(self, token: str | None, kind: str) -> Token:
        if not token:
            raise WeComAPIError(41001, "")
        issued = self.tokens.get(token)
        if issued is None or issued.kind != kind:
            raise WeComAPIError(_INVALID[kind], "")
        if issued.expires_at <= self.now():
            raise WeComAPIError(_EXPIRED[kind], "")
        return issued

    def ticket_ok(self, suite_id: str, ticket: str) -> bool:
        if ticket in self.tickets.get(suite_id, set()):
            return True
        return not self.strict and len(ticket) >= LENIENT_TICKET_MIN

    def errmsg(self, errcode: int) -> str:
        """WeCom's errmsg layout: text, a hint id, and a lookup URL with a query string."""
        text = ERRMSG.get(errcode, "error")
        hint = f"{int(self.now())}_{self.random(8)}"
        return (
            f"{text}, hint: [{hint}], from ip: 127.0.0.1, "
            f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
        )


def digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()
