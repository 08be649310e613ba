"""The WeCom server API a 代开发 (proxy-developed) app needs, over httpx.

One module per API family, each declaring the paths it calls (``APIS``) and a mixin
of methods; :class:`WeComClient` is their union over one HTTP call path
(``_http``: base URL, retries, parsing, scrubbing) and one token cache (``_tokens``:
suite, corp, provider tokens and JS-SDK tickets, all in the store).

=========  =====================================================  =====================
family     calls                                                  token
=========  =====================================================  =====================
suite      service/get_suite_token, service/v2/get_permanent_code suite_access_token
           (v1 kept, see suite), service/v2/get_auth_info
corp       gettoken, auth/getuserinfo, auth/getuserdetail,        corp access_token
           agent/get
ids        batch/userid_to_openuserid,                            corp access_token
           externalcontact/get_new_external_userid
provider   service/get_provider_token,                            provider_access_token
           service/get_customized_auth_url
jsapi      get_jsapi_ticket, ticket/get?type=agent_config         corp access_token
=========  =====================================================  =====================

Which calls, and why these and not their look-alikes, is in each family's docstring
(wecom-protocol.md §4, §5.4; wecom-provider-apis.md). ``qywx_cli.core.fakewecom``
mirrors the families route for route, and a test holds the two registries equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

import httpx

from qywx_cli.core.observe import NOOP, Observer
from qywx_cli.core.wecom._http import (
    DEFAULT_API_BASE,
    DEFAULT_TOKEN_TTL,
    EXCHANGE_READ_TIMEOUT,
    TOKEN_INVALID_ERRCODES,
    ErrCode,
    Http,
    api_base_from_env,
    validated_base,
)
from qywx_cli.core.wecom._tokens import ObtainedToken, TokenCache, TokenStore
from qywx_cli.core.wecom.corp import APIS as _CORP_APIS
from qywx_cli.core.wecom.corp import CorpAPI
from qywx_cli.core.wecom.ids import APIS as _IDS_APIS
from qywx_cli.core.wecom.ids import Converted, CorpIdAPI, IdsAPI
from qywx_cli.core.wecom.jsapi import APIS as _JSAPI_APIS
from qywx_cli.core.wecom.jsapi import JsapiAPI, JsapiSignature, sign
from qywx_cli.core.wecom.licences import APIS as _LICENCE_APIS
from qywx_cli.core.wecom.licences import (
    LicenceAccount,
    LicenceOrder,
    LicencesAPI,
    MemberLicence,
    TransferResult,
)
from qywx_cli.core.wecom.provider import APIS as _PROVIDER_APIS
from qywx_cli.core.wecom.provider import ProviderAPI
from qywx_cli.core.wecom.results import (
    PUBLISH_STATUS,
    AgentInfo,
    AgentStatus,
    AuthInfo,
    AuthURL,
    PermanentCode,
    ProviderCredentials,
    UserDetail,
    UserIdentity,
)
from qywx_cli.core.wecom.suite import APIS as _SUITE_APIS
from qywx_cli.core.wecom.suite import SuiteAPI

__all__ = [
    "APIS",
    "DEFAULT_API_BASE",
    "DEFAULT_TOKEN_TTL",
    "PUBLISH_STATUS",
    "TOKEN_INVALID_ERRCODES",
    "AgentInfo",
    "AgentStatus",
    "AuthInfo",
    "AuthURL",
    "Converted",
    "ErrCode",
    "JsapiSignature",
    "LicenceAccount",
    "LicenceOrder",
    "MemberLicence",
    "ObtainedToken",
    "PermanentCode",
    "ProviderCredentials",
    "TokenStore",
    "TransferResult",
    "UserDetail",
    "UserIdentity",
    "WeComClient",
    "api_base_from_env",
    "sign",
]

APIS: dict[str, str] = {
    **_SUITE_APIS,
    **_CORP_APIS,
    **_IDS_APIS,
    **_PROVIDER_APIS,
    **_JSAPI_APIS,
    **_LICENCE_APIS,
}
"""Every path the client calls (relative to the base URL) and its HTTP method."""


class WeComClient(SuiteAPI, LicencesAPI, CorpIdAPI, ProviderAPI, IdsAPI, JsapiAPI, CorpAPI):
    """A client for the server API calls a 代开发 login needs, with token caching.

    ``retries`` extra attempts, ``backoff * 2**n`` seconds apart, are made only when
    WeCom could not be reached (connect errors, timeouts) or answered HTTP 5xx. A JSON
    errcode is an answer, never retried here: repeating get_permanent_code with a used
    auth code, for instance, only turns the real error into 40078. For the same reason
    calls that spend a one-time code retry only failures that prove nothing was sent.
    Tokens are refreshed ``margin`` seconds before ``expires_in`` runs out. Calls wait
    ``timeout`` seconds, except an AuthCode exchange, which waits ``exchange_timeout``
    for its answer (a single-use code: giving up loses what WeCom already granted).
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        exchange_timeout: float = EXCHANGE_READ_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.2,
        margin: float = 300.0,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        observer: Observer = NOOP,
    ) -> None:
        self._store = store
        self.base_url = (
            api_base_from_env() if base_url is None else validated_base(base_url, "base URL")
        )
        self._now = now
        self._exchange_timeout = exchange_timeout
        self._http = Http(
            base_url=self.base_url,
            apis=APIS,
            transport=transport,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            sleep=sleep,
            observer=observer,
        )
        self._tokens = TokenCache(store, self._http, margin=margin, now=now)

    @property
    def observer(self) -> Observer:
        """Told of every API call's errcode and every token fetched (see core/observe.py)."""
        return self._http.observer

    @observer.setter
    def observer(self, observer: Observer) -> None:
        self._http.observer = observer

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
