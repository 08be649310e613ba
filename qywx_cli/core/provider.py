"""The provider's side of 代开发: authorization links, app status, JS-SDK configs.

Three jobs that sit between a corp's scan and its staff's first use
(wecom-provider-apis.md §2-§4):

* **Authorization links** (带参授权链接, doc 98744). :meth:`ProviderService.auth_url`
  asks ``service/get_customized_auth_url`` for a link to the instance's template with
  a ``state``, and records the state *before* handing the link out, so that the
  create_auth it produces (``<State>``, and v2/get_permanent_code's ``state``) links
  the corp to it in the same transaction that stores the corp's permanent code.
* **App status** (doc 96448). An installed 代开发 app is unusable until the provider
  configures and publishes it (上线) in the provider console; there is no callback for
  that, so ``agent/get``'s ``customized_publish_status`` is read after create_auth and
  on every refresh, stored with the corp, and checked again live before a login or a
  JS-SDK config is refused for it.
* **JS-SDK configs** (doc 96909): the ``wx.config`` / ``wx.agentConfig`` objects for a
  page URL, signed with the corp's cached tickets.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import ConfigError, LoginError, UsageError
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import AuthLink, CorpAuth, Store
from qywx_cli.core.wecom import (
    PUBLISH_STATUS,
    AgentStatus,
    JsapiSignature,
    ProviderCredentials,
    WeComClient,
    sign,
)
from qywx_cli.core.wecom.provider import check_auth_url_state

__all__ = [
    "NOT_ONLINE_HINT",
    "JsapiConfig",
    "ProviderService",
    "is_online",
    "provider_credentials",
    "publish_label",
    "read_app_status",
    "require_online",
]

NOT_ONLINE_HINT: Final = (
    "authorized but not online (未上线): publish the app in the provider console"
)
"""The warning corp list/show and doctor print, and the refusal's advice."""

_NONCE_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def publish_label(status: int | None) -> str:
    """``2 已上线`` and so on; ``unknown`` before agent/get was read."""
    if status is None:
        return "unknown"
    return f"{status} {PUBLISH_STATUS.get(status, '?')}"


def is_online(status: int | None) -> bool | None:
    """True for 2/3, False for 0/1 (or anything else WeCom sends), None if never read."""
    if status is None:
        return None
    return status in (2, 3)


def provider_credentials(settings: Settings) -> ProviderCredentials:
    """The provider corp id and secret, or one line saying which setting is missing."""
    if not settings.provider_corp_id:
        raise ConfigError(
            'provider_corp_id is not set: add provider_corp_id = "ww…" to qywx.toml or set '
            "QYWX_PROVIDER_CORP_ID (服务商管理后台 → 应用开发 → 通用开发参数)",
            code="no-provider-credentials",
        )
    if not settings.provider_secret:
        raise ConfigError(
            f"the provider secret is not set: set {settings.provider_secret_source} to the "
            "provider_secret from 服务商管理后台 → 应用开发 → 通用开发参数",
            code="no-provider-credentials",
        )
    return ProviderCredentials(settings.provider_corp_id, settings.provider_secret)


def read_app_status(store: Store, client: WeComClient, auth: CorpAuth) -> AgentStatus | None:
    """agent/get with the corp token; the publish status is stored with the corp.

    None when there is nothing to ask about: a cancelled corp, or no agentid yet.
    """
    if not auth.is_active or not auth.permanent_code or auth.agent_id is None:
        return None
    status = client.get_agent(auth.corp_id, auth.permanent_code, auth.agent_id)
    store.set_publish_status(auth.suite_id, auth.corp_id, status.customized_publish_status)
    return status


def require_online(store: Store, client: WeComClient, auth: CorpAuth) -> CorpAuth:
    """Refuse a corp recorded as not online, after reading its status again live.

    The stored status can be stale (the provider published since), so a recorded 0/1
    is re-read before refusing; a corp never read (None) is not refused here.
    """
    if is_online(auth.publish_status) is not False:
        return auth
    status = read_app_status(store, client, auth)
    if status is not None and status.is_online:
        found = store.get_corp_auth(auth.corp_id, auth.suite_id)
        return found if found is not None else auth
    current = status.customized_publish_status if status is not None else auth.publish_status
    raise LoginError(
        f"corp {auth.corp_id} is {NOT_ONLINE_HINT} (customized_publish_status "
        f"{publish_label(current)})",
        code="app-not-online",
    )


@dataclass(frozen=True)
class JsapiConfig:
    """A signed ``wx.config`` (``agent`` False) or ``wx.agentConfig`` object."""

    corp_id: str
    agent_id: int | None
    signature: JsapiSignature

    @property
    def api(self) -> str:
        return "wx.agentConfig" if self.agent_id is not None else "wx.config"

    def as_dict(self, js_api_list: list[str] | None = None) -> dict[str, Any]:
        """The object a front end passes to wx.config / wx.agentConfig (camelCase keys)."""
        sig = self.signature
        doc: dict[str, Any]
        if self.agent_id is not None:
            doc = {"corpid": self.corp_id, "agentid": self.agent_id}
        else:
            doc = {"appId": self.corp_id}
        doc.update(
            {"timestamp": sig.timestamp, "nonceStr": sig.noncestr, "signature": sig.signature}
        )
        if js_api_list is not None:
            doc["jsApiList"] = list(js_api_list)
        return doc


class ProviderService:
    """Links, app status and JS-SDK configs over one store and one WeCom client."""

    def __init__(
        self,
        store: Store,
        client: WeComClient,
        settings: Settings,
        *,
        now: Callable[[], float] = time.time,
        token: Callable[[int], str] = secrets.token_hex,
        choice: Callable[[str], str] = secrets.choice,
    ) -> None:
        self._store = store
        self._client = client
        self._settings = settings
        self._now = now
        self._token = token
        self._choice = choice

    # -- authorization links ------------------------------------------------------------

    def auth_url(self, instance: AuthInstance, state: str | None = None) -> AuthLink:
        """A 带参授权链接 for the instance's template, its state recorded (doc 98744)."""
        provider = provider_credentials(self._settings)
        state = check_auth_url_state(state) if state is not None else self._token(16)
        existing = self._store.get_auth_link(state)
        if existing is not None and existing.suite_id != instance.suite_id:
            raise UsageError(
                f"state {state} already names a link to template {existing.suite_id}; "
                "choose another state"
            )
        link = self._client.get_customized_auth_url(provider, state, [instance.suite_id])
        return self._store.save_auth_link(
            state,
            instance=instance.name,
            suite_id=instance.suite_id,
            qrcode_url=link.qrcode_url,
            expires_at=self._now() + link.expires_in,
        )

    # -- app status ---------------------------------------------------------------------

    def refresh_status(self, auth: CorpAuth) -> AgentStatus | None:
        """Read agent/get and store customized_publish_status; None without an agentid."""
        return read_app_status(self._store, self._client, auth)

    def require_online(self, auth: CorpAuth) -> CorpAuth:
        return require_online(self._store, self._client, auth)

    # -- JS-SDK -------------------------------------------------------------------------

    def authorized(self, corp_id: str, instance: AuthInstance | None = None) -> CorpAuth:
        """The corp's active authorization (of the instance's template, if given)."""
        corp_id = corp_id.strip()
        if not corp_id:
            raise UsageError("the corp id must not be empty")
        suite_id = instance.suite_id if instance is not None else None
        auth = self._store.get_corp_auth(corp_id, suite_id)
        where = f" {instance.name} (template {instance.suite_id})" if instance else " any template"
        if auth is None:
            raise LoginError(
                f"corp {corp_id} never authorized{where}: no create_auth for it was "
                "processed (hand its admin a link: qywx auth-url)",
                code="corp-not-authorized",
            )
        if not auth.is_active or not auth.permanent_code:
            raise LoginError(
                f"corp {corp_id} cancelled its authorization of{where}; its admin must "
                "install the app again",
                code="corp-not-authorized",
            )
        return auth

    def nonce(self, length: int = 16) -> str:
        return "".join(self._choice(_NONCE_ALPHABET) for _ in range(length))

    def jsapi_config(
        self,
        corp_id: str,
        url: str,
        *,
        agent: bool = False,
        instance: AuthInstance | None = None,
        nonce: str | None = None,
        timestamp: int | None = None,
    ) -> JsapiConfig:
        """wx.config (corp jsapi_ticket) or, with ``agent``, wx.agentConfig (doc 96909)."""
        auth = self.require_online(self.authorized(corp_id, instance))
        assert auth.permanent_code is not None  # authorized() guarantees it
        if agent and auth.agent_id is None:
            raise LoginError(
                f"no agentid is recorded for corp {auth.corp_id}; refresh it "
                "(qywx corp refresh) before signing wx.agentConfig",
                code="no-agent-id",
            )
        ticket = (
            self._client.agent_config_ticket(auth.corp_id, auth.permanent_code, auth.agent_id)
            if agent and auth.agent_id is not None
            else self._client.jsapi_ticket(auth.corp_id, auth.permanent_code)
        )
        signature = sign(
            ticket,
            nonce if nonce is not None else self.nonce(),
            int(self._now()) if timestamp is None else timestamp,
            url,
        )
        return JsapiConfig(auth.corp_id, auth.agent_id if agent else None, signature)
