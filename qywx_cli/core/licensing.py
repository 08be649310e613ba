"""Interface licences as operations see them: who is unlicensed, what runs out soon.

WeCom refuses a 代开发 app's calls for a member without an active licence once the
corp's trial is over (doc 97194) and says so with ``unlicensed_notify`` (recorded by
the callback service); licence accounts are recorded from ``auto_activate`` events and
``qywx license list``. ``log stats`` and ``doctor`` show both lists from the store, so
they need no WeCom call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from qywx_cli.core.store.records import Licence, UnlicensedMember

__all__ = ["EXPIRY_WARNING_DAYS", "LicenceReport", "licence_report"]

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
