"""One token cache for every credential WeCom hands out, and one call path per kind.

Kinds (wecom-provider-apis.md §1.2): the template's ``suite_access_token`` (keyed by
suite id), the 代开发 app's corp ``access_token`` (keyed by corp id), the
``provider_access_token`` (keyed by provider corp id), and the JS-SDK tickets fetched
with the corp token (keyed by corp id, or corp id and agent id). All live in the
store's ``tokens`` table with WeCom's expiry, so every process sharing the store
reuses them until ``margin`` seconds before they run out — WeCom rate-limits each
fetch (jsapi_ticket: 400/hour per corp, doc 96909) and wants them cached server side.

WeCom may revoke a token early (§4.3), so an expired/invalid-token errcode on a
*cached* token drops that one entry and repeats the call once. Suite tickets are a
different table and are never dropped: losing one means waiting up to ten minutes
for the next push (§5.1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from qywx_cli.core.errors import WeComAPIError
from qywx_cli.core.masking import MaskedRepr
from qywx_cli.core.wecom._http import TOKEN_INVALID_ERRCODES, Http

T = TypeVar("T")

Fetch = Callable[[], tuple[str, int]]
"""Ask WeCom for a new token: (token, expires_in seconds)."""


# -- the slice of store.Store this package uses --------------------------------------
class _SuiteTicketLike(Protocol):
    @property
    def ticket(self) -> str: ...


class _CachedTokenLike(Protocol):
    @property
    def token(self) -> str: ...

    @property
    def expires_at(self) -> float: ...


class TokenStore(Protocol):
    """What WeComClient needs from :class:`qywx_cli.core.store.Store`."""

    def latest_suite_ticket(self, suite_id: str) -> _SuiteTicketLike | None: ...

    def get_token(self, kind: str, key: str, *, margin: float = 0) -> _CachedTokenLike | None: ...

    def put_token(self, kind: str, key: str, token: str, expires_at: float) -> None: ...

    def drop_tokens(self, kind: str | None = None, key: str | None = None) -> int: ...

    def token_lock(self, kind: str, key: str) -> AbstractContextManager[None]: ...


@dataclass(frozen=True)
class TokenKind:
    """A kind of cached credential: its store ``name`` and the query parameter carrying it."""

    name: str
    param: str | None


@dataclass(frozen=True, repr=False)
class ObtainedToken(MaskedRepr):
    """A token as the cache handed it out: its expiry and whether WeCom was asked for it.

    ``cached`` False means it was fetched just now (and stored); ``qywx token`` shows
    which, since "is the cache working" is the question an operator asks it.
    """

    _secret_fields = frozenset({"token"})

    kind: str
    key: str
    token: str
    expires_at: float
    cached: bool


SUITE = TokenKind("suite", "suite_access_token")
CORP = TokenKind("corp", "access_token")
PROVIDER = TokenKind("provider", "provider_access_token")
JSAPI_TICKET = TokenKind("jsapi_ticket", None)
AGENT_TICKET = TokenKind("agent_ticket", None)


class TokenCache:
    """Cached tokens in the store; ``call`` runs an API with one, refreshing it once."""

    def __init__(
        self, store: TokenStore, http: Http, *, margin: float, now: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._http = http
        self._margin = margin
        self._now = now

    def get(self, kind: TokenKind, key: str, fetch: Fetch, *, fresh: bool = False) -> str:
        """The cached token if it outlives the margin, else a fresh one (also cached).

        ``fresh`` skips the lookup: doctor proves the credentials work now.
        """
        return self.obtain(kind, key, fetch, fresh=fresh).token

    def obtain(
        self, kind: TokenKind, key: str, fetch: Fetch, *, fresh: bool = False
    ) -> ObtainedToken:
        """:meth:`get` with the expiry and where the token came from (cache or WeCom)."""
        cached = None if fresh else self._store.get_token(kind.name, key, margin=self._margin)
        if cached is not None:
            return ObtainedToken(kind.name, key, cached.token, cached.expires_at, True)
        # Single flight: of the threads (and, on PostgreSQL, the hosts) that found the
        # token missing, one asks WeCom; the others wait, then find its answer cached.
        with self._store.token_lock(kind.name, key):
            if not fresh:
                cached = self._store.get_token(kind.name, key, margin=self._margin)
                if cached is not None:
                    return ObtainedToken(kind.name, key, cached.token, cached.expires_at, True)
            token, expires_in = fetch()
            expires_at = self._now() + expires_in
            self._store.put_token(kind.name, key, token, expires_at)
        self._http.observer.token_refresh(kind.name)
        return ObtainedToken(kind.name, key, token, expires_at, False)

    def drop(self, kind: TokenKind, key: str) -> None:
        self._store.drop_tokens(kind.name, key)

    def with_token(self, kind: TokenKind, key: str, fetch: Fetch, use: Callable[[str], T]) -> T:
        """Run ``use`` with a token; if WeCom says a cached one is dead, refresh once."""
        first = self.obtain(kind, key, fetch)
        try:
            return use(first.token)
        except WeComAPIError as exc:
            if not first.cached or exc.errcode not in TOKEN_INVALID_ERRCODES:
                raise
        self.drop(kind, key)
        return use(self.obtain(kind, key, fetch).token)

    def call(
        self,
        kind: TokenKind,
        key: str,
        fetch: Fetch,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        single_use: bool = False,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """The one call path of a token kind: the token goes in as ``kind.param``."""
        param = kind.param
        if param is None:
            raise AssertionError(f"{kind.name} is not an access token")
        return self.with_token(
            kind,
            key,
            fetch,
            lambda token: self._http.call(
                method,
                api,
                params={param: token, **(params or {})},
                body=body,
                single_use=single_use,
                read_timeout=read_timeout,
            ),
        )


class Family:
    """What each API family module (suite, corp, provider, jsapi …) reads off the client."""

    _store: TokenStore
    _http: Http
    _tokens: TokenCache
    _now: Callable[[], float]
    #: read timeout of an AuthCode exchange (_http.EXCHANGE_READ_TIMEOUT)
    _exchange_timeout: float
