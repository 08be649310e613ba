"""The provider (服务商) family: provider_access_token and 带参授权链接.

* ``service/get_provider_token`` (doc 96237): body ``corpid`` + ``provider_secret``,
  no token in the query; the answer lives 7200 s and repeated calls inside that
  window return the same token, so it is cached like the suite and corp tokens.
* ``service/get_customized_auth_url`` (doc 98744) with that token: ``state``
  (a-zA-Z0-9, ≤ 32 bytes) comes back in create_auth's ``<State>`` and in
  v2/get_permanent_code, which is how a scan is tied to the link that was handed out;
  ``templateid_list`` holds at most 9 代开发 template ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from qywx_cli.core.errors import UsageError
from qywx_cli.core.wecom._http import MAX_TOKEN_TTL, expires_in, int_at, required
from qywx_cli.core.wecom._tokens import PROVIDER, Family, ObtainedToken
from qywx_cli.core.wecom.results import AuthURL, ProviderCredentials

APIS: dict[str, str] = {
    "service/get_provider_token": "POST",
    "service/get_customized_auth_url": "POST",
}
"""The paths this family calls and their methods (the fake must route every one)."""

AUTH_URL_STATE_RE = re.compile(r"[A-Za-z0-9]{1,32}")
"""get_customized_auth_url's state: "a-zA-Z0-9，长度不可超过32个字节" (doc 98744)."""

MAX_TEMPLATES = 9
"""templateid_list: "最多9个" (doc 98744)."""


def check_auth_url_state(state: str) -> str:
    if not AUTH_URL_STATE_RE.fullmatch(state):
        raise UsageError(
            "state must be 1-32 letters and digits (WeCom's rule for authorization links)"
        )
    return state


class ProviderAPI(Family):
    """Calls made with the provider_access_token."""

    def provider_token(self, provider: ProviderCredentials, *, fresh: bool = False) -> str:
        """provider_access_token, cached per provider corp id (doc 96237)."""
        return self.obtain_provider_token(provider, fresh=fresh).token

    def obtain_provider_token(
        self, provider: ProviderCredentials, *, fresh: bool = False
    ) -> ObtainedToken:
        """:meth:`provider_token` with its expiry and whether it came from the cache."""
        return self._tokens.obtain(
            PROVIDER, provider.corp_id, lambda: self._fetch_provider(provider), fresh=fresh
        )

    def _fetch_provider(self, provider: ProviderCredentials) -> tuple[str, int]:
        api = "service/get_provider_token"
        data = self._http.call(
            "POST", api, body={"corpid": provider.corp_id, "provider_secret": provider.secret}
        )
        return required(data, api, "provider_access_token"), expires_in(data)

    def _provider_call(
        self,
        provider: ProviderCredentials,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The provider token's call path (ID conversion and licence APIs use it too)."""
        return self._tokens.call(
            PROVIDER,
            provider.corp_id,
            lambda: self._fetch_provider(provider),
            method,
            api,
            params=params,
            body=body,
        )

    def get_customized_auth_url(
        self, provider: ProviderCredentials, state: str, template_ids: Sequence[str]
    ) -> AuthURL:
        """The 代开发 authorization link for ``template_ids``, carrying ``state`` (doc 98744)."""
        check_auth_url_state(state)
        templates = tuple(t for t in template_ids if t)
        if not templates or len(templates) > MAX_TEMPLATES:
            raise UsageError(f"an authorization link names 1 to {MAX_TEMPLATES} template ids")
        api = "service/get_customized_auth_url"
        data = self._provider_call(
            provider, "POST", api, body={"state": state, "templateid_list": list(templates)}
        )
        ttl = int_at(data, "expires_in")
        return AuthURL(
            qrcode_url=required(data, api, "qrcode_url"),
            expires_in=min(ttl, MAX_TOKEN_TTL) if ttl and ttl > 0 else 864000,
            state=state,
            template_ids=templates,
        )
