"""The store's records of authorization state: what the callback log does not hold.

Suite tickets, access tokens, corp authorizations and the links, codes, id mappings and
licences around them, and how the store's secrets are kept at rest. Apart from
:mod:`.records` so that a command that only reads the callback log does not build them:
each frozen dataclass costs its generated methods' compilation at import (about 0.7 ms
apiece), which ``qywx log list`` would pay for nothing. :mod:`.records` and the package
still export every name; they load this module on first use.
"""

from __future__ import annotations

from dataclasses import dataclass

from qywx_cli.core.masking import MaskedRepr

__all__ = [
    "AuthLink",
    "CachedToken",
    "CorpAuth",
    "IdMapping",
    "Licence",
    "LoginCode",
    "OrgCode",
    "Resealed",
    "SecretsAtRest",
    "SuiteTicket",
    "UnlicensedMember",
]


@dataclass(frozen=True, repr=False)
class SuiteTicket(MaskedRepr):
    """A SuiteTicket push (§3.1); ``timestamp`` is WeCom's TimeStamp, the ordering key."""

    _secret_fields = frozenset({"ticket"})

    suite_id: str
    ticket: str
    timestamp: int
    received_at: float


@dataclass(frozen=True, repr=False)
class CachedToken(MaskedRepr):
    """An access token (suite / provider / corp, §4.3) and when WeCom said it expires."""

    _secret_fields = frozenset({"token"})

    kind: str
    key: str
    token: str
    expires_at: float


@dataclass(frozen=True, repr=False)
class CorpAuth(MaskedRepr):
    """A corp that authorized a 代开发 template; ``permanent_code`` is the app's secret (§3.2).

    Corp ids are compared exactly: open (encrypted) corp ids are case sensitive (§2.3).
    """

    _secret_fields = frozenset({"permanent_code"})

    suite_id: str
    corp_id: str
    permanent_code: str | None
    agent_id: int | None
    corp_name: str | None
    state: str
    auth_user_id: str | None
    created_at: float
    updated_at: float
    #: the 带参授权链接 state its create_auth carried (doc 98744), if it came through one
    link_state: str | None = None
    #: agent/get's customized_publish_status (doc 96448): 2/3 online, 0/1 not yet
    publish_status: int | None = None
    #: when publish_status was last read
    publish_checked_at: float | None = None

    @property
    def is_active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class AuthLink:
    """A 带参授权链接 handed out (get_customized_auth_url), and the corp it brought in.

    ``state`` is the key: WeCom returns it in create_auth and v2/get_permanent_code, so
    the corp that installs through the link is recorded here (``corp_id``, ``linked_at``)
    in the transaction that stores its permanent code.
    """

    state: str
    instance: str
    suite_id: str
    qrcode_url: str
    created_at: float
    expires_at: float
    corp_id: str | None = None
    linked_at: float | None = None


@dataclass(frozen=True)
class OrgCode:
    """An organisation code (the element API's setCode) naming a corp for QR login."""

    code: str
    corp_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class LoginCode:
    """A one-time login code, stored only as a hash; ``used_at`` is set on first use."""

    code_hash: str
    instance: str
    corp_id: str
    user_id: str
    created_at: float
    expires_at: float
    used_at: float | None


@dataclass(frozen=True)
class IdMapping:
    """One id in both forms (docs 97104): ``plain_id`` as the corp knew it, ``open_id``
    the provider-scoped ciphertext. For kind ``corpid``, ``corp_id`` is the plain corp id
    itself. Ids are compared exactly: open ids differ by case alone."""

    kind: str
    corp_id: str
    plain_id: str
    open_id: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class UnlicensedMember:
    """A member WeCom reported with ``unlicensed_notify``: they opened the app without an
    active interface licence, so the app's calls for them were refused (docs 95716)."""

    corp_id: str
    user_id: str
    agent_id: int | None
    first_seen: float
    last_seen: float
    count: int


@dataclass(frozen=True)
class Licence:
    """An interface-licence account bound to a member (docs 97191): ``type`` 1 基础账号,
    2 互通账号; times are WeCom's epoch seconds. ``updated_at`` is when qywx learnt it."""

    corp_id: str
    user_id: str
    type: int
    active_code: str | None
    active_time: int | None
    expire_time: int | None
    updated_at: float


@dataclass(frozen=True)
class SecretsAtRest:
    """How the store's secrets (permanent codes, cached tokens and JS-SDK tickets) are
    kept: ``plaintext`` rows and sealed rows by key id (core/sealing.py). Read from
    the values' prefixes alone, so it needs no key."""

    plaintext: int
    by_key: dict[str, int]

    @property
    def total(self) -> int:
        return self.plaintext + sum(self.by_key.values())


@dataclass(frozen=True)
class Resealed:
    """What :meth:`Store.reseal_secrets` did: plaintext rows ``sealed`` with the current
    key, rows ``rekeyed`` from an older key, rows ``unchanged`` (already current).

    ``old_copies_left``: SQLite could not empty its write-ahead log afterwards because
    another connection was reading (a running server, a log command), so the replaced
    values stay in the file and its ``-wal`` until SQLite's next checkpoint; running the
    rotation again once nothing else reads clears them. Always False on PostgreSQL, which
    has no such step (its own WAL is the server's, see the README).
    """

    sealed: int
    rekeyed: int
    unchanged: int
    key_id: str | None
    old_copies_left: bool = False
