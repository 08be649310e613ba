"""``qywx token``: the token the service would use now, its expiry and where it came from.

An operator reaches for this when a call fails with an invalid-token errcode, or to
see whether the cache works at all: it answers through the same cache, the same
single-flight lock and the same fetches as the service (``WeComClient``'s token
cache, :mod:`qywx_cli.core.wecom._tokens`), so what it shows is what the next API
call would send. ``refresh`` asks WeCom even when a cached token is still valid and
stores the answer, as ``doctor`` does.

The three kinds (wecom-provider-apis.md §1.2):

* ``suite``: the template's suite_access_token, fetched with the latest stored
  suite_ticket, so it cannot be had before WeCom pushed one (§3.1);
* ``corp``: the 代开发 app's access_token in an authorized corp, ``gettoken`` with the
  permanent code stored at create_auth (§5.4); a corp that never authorized, cancelled
  or lost its code is refused with what to do;
* ``provider``: the provider_access_token, from the provider corp id and secret.

The report carries the full token (a caller may need it); its ``repr`` and
:meth:`TokenReport.as_dict` mask it unless asked not to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import RecordNotFound, UsageError
from qywx_cli.core.masking import MaskedRepr, mask
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import CorpAuth, Store
from qywx_cli.core.wecom import ObtainedToken, WeComClient

__all__ = [
    "TOKEN_KINDS",
    "TokenReport",
    "check_token_request",
    "obtain_token",
    "token_corp_auth",
]

TokenKindName = Literal["suite", "corp", "provider"]
TOKEN_KINDS: Final[tuple[TokenKindName, ...]] = ("suite", "corp", "provider")


@dataclass(frozen=True, repr=False)
class TokenReport(MaskedRepr):
    """One token as ``qywx token`` shows it; ``source`` is ``cache`` or ``wecom`` (fetched now)."""

    _secret_fields = frozenset({"token"})

    kind: str
    #: what the cache keys it by: the suite id, the corp id or the provider corp id
    key: str
    token: str
    expires_at: float
    #: when it was looked up: ``expires_in`` counts from here
    checked_at: float
    source: Literal["cache", "wecom"]
    instance: str | None = None
    suite_id: str | None = None
    corp_id: str | None = None

    @property
    def expires_in(self) -> int:
        """Whole seconds left at ``checked_at`` (0 once expired)."""
        return max(0, int(self.expires_at - self.checked_at))

    def as_dict(self, *, show_secret: bool = False) -> dict[str, object]:
        """Flat fields for rendering; the token masked unless ``show_secret``."""
        return {
            "kind": self.kind,
            "key": self.key,
            "instance": self.instance,
            "suite_id": self.suite_id,
            "corp_id": self.corp_id,
            "token": self.token if show_secret else mask(self.token),
            "masked": not show_secret,
            "expires_at": self.expires_at,
            "expires_in": self.expires_in,
            "source": self.source,
        }


def token_corp_auth(store: Store, corp_id: str, instance: AuthInstance | None = None) -> CorpAuth:
    """The authorization whose permanent code gets the corp's token, or why there is none.

    With ``instance``, only that template's authorization counts (a corp may have
    installed several); without, the active, most recent one.
    """
    corp_id = corp_id.strip()
    suite_id = instance.suite_id if instance is not None else None
    auth = store.get_corp_auth(corp_id, suite_id)
    if auth is None:
        others = sorted({a.suite_id for a in store.list_corp_auths() if a.corp_id == corp_id})
        if instance is not None and others:
            raise RecordNotFound(
                f"corp {corp_id} has not authorized {instance.name} (template "
                f"{instance.suite_id}), only {', '.join(others)}: leave out --auth or name "
                "that template's instance",
                code="corp-not-authorized",
            )
        raise RecordNotFound(
            f"corp {corp_id} has not authorized any suite here (no create_auth recorded); "
            "`qywx corp list` shows the corps that have",
            code="corp-not-authorized",
        )
    if not auth.is_active:
        raise RecordNotFound(
            f"corp {auth.corp_id} cancelled its authorization of suite {auth.suite_id} "
            f"(state {auth.state}): no permanent code is held, so no token can be had; "
            "its admin must install the app again",
            code="corp-cancelled",
        )
    if not auth.permanent_code:
        raise RecordNotFound(
            f"corp {auth.corp_id} holds no permanent code for suite {auth.suite_id}: its "
            "AuthCode was never exchanged; reset the app's Secret in the provider console "
            "(代开发应用 → 重置Secret) and WeCom sends reset_permanent_code with a fresh one",
            code="no-permanent-code",
        )
    return auth


def check_token_request(
    kind: str, *, instance: AuthInstance | None = None, corp_id: str | None = None
) -> None:
    """Refuse a request that names what the kind does not take, or lacks what it needs.

    Options that do not apply are refused, not ignored: ``token suite --corp-id C``
    would otherwise show a suite token to someone who asked about a corp.
    """
    if kind not in TOKEN_KINDS:
        raise UsageError(f"unknown token kind {kind!r}: use {', '.join(TOKEN_KINDS)}")
    if kind == "suite":
        if corp_id is not None:
            raise UsageError("--corp-id is for `qywx token corp`; a suite token names no corp")
        if instance is None:
            raise UsageError("`qywx token suite` needs --auth NAME: the instance whose suite")
    elif kind == "corp":
        if corp_id is None:
            raise UsageError("`qywx token corp` needs --corp-id CORP_ID (`qywx corp list`)")
        if not corp_id.strip():
            raise UsageError("--corp-id must not be empty")
    elif instance is not None or corp_id is not None:
        raise UsageError(
            "the provider token belongs to the provider corp: leave out --auth and --corp-id"
        )


def obtain_token(
    settings: Settings,
    kind: str,
    *,
    instance: AuthInstance | None = None,
    corp_id: str | None = None,
    refresh: bool = False,
    now: Callable[[], float] = time.time,
) -> TokenReport:
    """The ``kind`` token from the cache, or fetched and stored (always fetched with ``refresh``).

    ``instance`` names the suite (required for ``suite``; for ``corp`` it picks which
    template's permanent code when the corp installed several); ``corp_id`` names the
    corp (required for ``corp``). The request is checked before the database is
    opened, which must exist: the cache, the ticket and the corps live there.
    """
    from qywx_cli.core.retry import open_existing_store

    check_token_request(kind, instance=instance, corp_id=corp_id)
    with (
        open_existing_store(settings) as store,
        WeComClient(store, base_url=settings.api_base, now=now) as client,
    ):
        return _obtain(store, client, settings, kind, instance, corp_id, refresh, now())


def _obtain(
    store: Store,
    client: WeComClient,
    settings: Settings,
    kind: str,
    instance: AuthInstance | None,
    corp_id: str | None,
    refresh: bool,
    checked_at: float,
) -> TokenReport:
    if kind == "suite":
        assert instance is not None  # check_token_request
        got = client.obtain_suite_token(instance.suite_id, instance.suite_secret, fresh=refresh)
        return _report(got, checked_at, instance=instance.name, suite_id=instance.suite_id)
    if kind == "corp":
        assert corp_id is not None  # check_token_request
        auth = token_corp_auth(store, corp_id, instance)
        assert auth.permanent_code is not None  # token_corp_auth refuses a corp without one
        got = client.obtain_corp_token(auth.corp_id, auth.permanent_code, fresh=refresh)
        return _report(
            got,
            checked_at,
            instance=instance.name if instance is not None else None,
            suite_id=auth.suite_id,
            corp_id=auth.corp_id,
        )
    from qywx_cli.core.provider import provider_credentials

    credentials = provider_credentials(settings)
    got = client.obtain_provider_token(credentials, fresh=refresh)
    return _report(got, checked_at, corp_id=credentials.corp_id)


def _report(
    got: ObtainedToken,
    checked_at: float,
    *,
    instance: str | None = None,
    suite_id: str | None = None,
    corp_id: str | None = None,
) -> TokenReport:
    return TokenReport(
        kind=got.kind,
        key=got.key,
        token=got.token,
        expires_at=got.expires_at,
        checked_at=checked_at,
        source="cache" if got.cached else "wecom",
        instance=instance,
        suite_id=suite_id,
        corp_id=corp_id,
    )
