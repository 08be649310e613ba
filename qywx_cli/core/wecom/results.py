"""Typed answers of the WeCom API calls: frozen dataclasses with secret-masking reprs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qywx_cli.core.masking import MaskedRepr
from qywx_cli.core.wecom._http import dict_at, int_at, ints, str_at, strs


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


def parse_agents(data: Mapping[str, Any]) -> tuple[AgentInfo, ...]:
    """``auth_info.agent[]`` of get_permanent_code / get_auth_info, skipping malformed entries."""
    raw = dict_at(data, "auth_info").get("agent")
    agents = []
    for item in raw if isinstance(raw, list) else []:
        agent_id = int_at(item, "agentid") if isinstance(item, Mapping) else None
        if agent_id is None:
            continue
        privilege = dict_at(item, "privilege")
        agents.append(
            AgentInfo(
                agent_id=agent_id,
                name=str_at(item, "name") or "",
                is_customized_app=item.get("is_customized_app") is True,
                auth_mode=int_at(item, "auth_mode"),
                allow_users=strs(privilege.get("allow_user")),
                allow_parties=ints(privilege.get("allow_party")),
                allow_tags=ints(privilege.get("allow_tag")),
            )
        )
    return tuple(agents)


@dataclass(frozen=True, repr=False)
class ProviderCredentials(MaskedRepr):
    """The provider's corp id and provider_secret (服务商管理后台 → 通用开发参数, doc 97160)."""

    _secret_fields = frozenset({"secret"})

    corp_id: str
    secret: str


@dataclass(frozen=True)
class AuthURL:
    """get_customized_auth_url's answer (doc 98744): a URL to render as a QR code."""

    qrcode_url: str
    expires_in: int
    state: str
    template_ids: tuple[str, ...]


PUBLISH_STATUS: dict[int, str] = {
    0: "待开发",
    1: "开发中",
    2: "已上线",
    3: "存在未上线版本",
}
"""agent/get ``customized_publish_status`` (doc 96448): 2 and 3 are online."""


@dataclass(frozen=True)
class AgentStatus:
    """agent/get for the 代开发 app (doc 96448): is it usable by staff yet?"""

    agent_id: int
    name: str
    close: bool
    customized_publish_status: int | None
    home_url: str | None
    redirect_domain: str | None

    @property
    def is_online(self) -> bool:
        """已上线 (2) or online with a newer version pending (3), and not disabled."""
        return self.customized_publish_status in (2, 3) and not self.close
