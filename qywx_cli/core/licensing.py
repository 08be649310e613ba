"""Interface licences as operations see them: who is unlicensed, what runs out soon.

WeCom refuses a 代开发 app's calls for a member without an active licence once the
corp's trial is over (doc 97194) and says so with ``unlicensed_notify`` (recorded by
the callback service); licence accounts are recorded from ``auto_activate`` events and
``qywx license list``. ``log stats`` and ``doctor`` show both lists from the store, so
they need no WeCom call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from qywx_cli.core.errors import UsageError
from qywx_cli.core.store.records import Licence, UnlicensedMember

if TYPE_CHECKING:
    from qywx_cli.core.settings import Settings
    from qywx_cli.core.store import Store
    from qywx_cli.core.wecom import LicenceAccount, TransferResult, WeComClient
    from qywx_cli.core.wecom.results import ProviderCredentials

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "LicenceReport",
    "activate_licence",
    "licence_report",
    "list_corp_licences",
    "member_licences",
    "transfer_licences",
    "type_name",
]

EXPIRY_WARNING_DAYS: Final = 30
"""Licences expiring within this many days are listed (renewal by a new code is possible
only in the last 20 days of the old one, doc 97188, so 30 leaves time to order)."""


class _LicenceStore(Protocol):
    def unlicensed_members(
        self, *, corp_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[UnlicensedMember]: ...

    def list_licences(
        self,
        *,
        corp_id: str | None = None,
        user_id: str | None = None,
        expiring_before: float | None = None,
        limit: int = 1000,
    ) -> list[Licence]: ...


@dataclass(frozen=True)
class LicenceReport:
    unlicensed: Sequence[UnlicensedMember]
    expiring: Sequence[Licence]
    now: float
    days: int = EXPIRY_WARNING_DAYS

    @property
    def ok(self) -> bool:
        return not self.unlicensed and not self.expiring

    def days_left(self, licence: Licence) -> float | None:
        if licence.expire_time is None:
            return None
        return (licence.expire_time - self.now) / 86400

    def as_dict(self) -> dict[str, Any]:
        return {
            "unlicensed_members": [
                {
                    "corp_id": m.corp_id,
                    "user_id": m.user_id,
                    "agent_id": m.agent_id,
                    "first_seen": m.first_seen,
                    "last_seen": m.last_seen,
                    "count": m.count,
                }
                for m in self.unlicensed
            ],
            "expiring_licences": [
                {
                    "corp_id": x.corp_id,
                    "user_id": x.user_id,
                    "type": x.type,
                    "expire_time": x.expire_time,
                    "days_left": round(d, 1) if (d := self.days_left(x)) is not None else None,
                }
                for x in self.expiring
            ],
            "expiry_window_days": self.days,
        }


def licence_report(
    store: _LicenceStore,
    *,
    now: float,
    since: float | None = None,
    days: int = EXPIRY_WARNING_DAYS,
    limit: int = 100,
) -> LicenceReport:
    """Members reported unlicensed (since ``since``) and licences ending within ``days``."""
    return LicenceReport(
        unlicensed=store.unlicensed_members(since=since, limit=limit),
        expiring=store.list_licences(expiring_before=now + days * 86400, limit=limit),
        now=now,
        days=days,
    )


# -- the licence API, as the CLI uses it ---------------------------------------------------


def type_name(account_type: int | None) -> str:
    """1 基础账号 → ``basic``, 2 互通账号 → ``external_contact`` (doc 97191)."""
    from qywx_cli.core.wecom.licences import ACCOUNT_TYPES

    return ACCOUNT_TYPES.get(account_type or 0, str(account_type))


@contextmanager
def _session(settings: Settings) -> Iterator[tuple[Store, WeComClient, ProviderCredentials]]:
    from qywx_cli.core.provider import provider_credentials
    from qywx_cli.core.retry import open_existing_store
    from qywx_cli.core.wecom import WeComClient

    provider = provider_credentials(settings)
    with (
        open_existing_store(settings) as store,
        WeComClient(store, base_url=settings.api_base) as client,
    ):
        yield store, client, provider


def _stored_corp(store: Store, corp_id: str) -> str:
    """Licences are filed under the id the store knows the corp by (either form works)."""
    auth = store.get_corp_auth(corp_id)
    return auth.corp_id if auth is not None else corp_id


def _licences(corp: str, accounts: Iterable[LicenceAccount], now: float) -> list[Licence]:
    return [
        Licence(corp, a.user_id, a.type or 1, a.active_code, a.active_time, a.expire_time, now)
        for a in accounts
        if a.user_id
    ]


def list_corp_licences(settings: Settings, corp_id: str) -> list[Licence]:
    """``qywx license list``: every active account; the local copy is replaced by it."""
    with _session(settings) as (store, client, provider):
        accounts = client.list_active_accounts(provider, corp_id)
        corp = _stored_corp(store, corp_id)
        store.save_licences(corp, _licences(corp, accounts, 0.0), complete=True)
        return store.list_licences(corp_id=corp, limit=1_000_000)


def member_licences(settings: Settings, corp_id: str, user_id: str) -> list[Licence]:
    """``qywx license show``: one member's accounts, recorded."""
    with _session(settings) as (store, client, provider):
        member = client.member_licence(provider, corp_id, user_id)
        corp = _stored_corp(store, corp_id)
        rows = _licences(corp, member.accounts, 0.0)
        if rows:
            store.save_licences(corp, rows)
        return store.list_licences(corp_id=corp, user_id=user_id) if rows else []


def activate_licence(settings: Settings, corp_id: str, code: str, user_id: str) -> list[Licence]:
    """``qywx license activate``: bind the code, read the member's accounts back, record."""
    if not code:
        raise UsageError("--code must not be empty")
    with _session(settings) as (store, client, provider):
        client.activate(provider, corp_id, code, user_id)
        member = client.member_licence(provider, corp_id, user_id)
        corp = _stored_corp(store, corp_id)
        store.save_licences(corp, _licences(corp, member.accounts, 0.0))
        return store.list_licences(corp_id=corp, user_id=user_id)


def transfer_licences(
    settings: Settings, corp_id: str, pairs: Sequence[tuple[str, str]]
) -> list[TransferResult]:
    """``qywx license transfer``: move accounts, then refresh the corp's local copy."""
    with _session(settings) as (store, client, provider):
        results = client.transfer(provider, corp_id, pairs)
        if any(r.ok for r in results):
            accounts = client.list_active_accounts(provider, corp_id)
            corp = _stored_corp(store, corp_id)
            store.save_licences(corp, _licences(corp, accounts, 0.0), complete=True)
        return results
