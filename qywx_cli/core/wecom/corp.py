"""The 代开发 app inside an authorized corp: its access_token and the OAuth exchanges.

* ``gettoken?corpid=&corpsecret=<permanent_code>`` for the app token; the
  third-party ``service/get_corp_token`` answers 40084 for a 代开发 code (§5.4).
* ``auth/getuserinfo`` / ``auth/getuserdetail`` with that app token;
  ``service/auth/getuserinfo3rd`` is refused to 代开发 apps (docs 91121).
* ``agent/get`` with that token (doc 96448): ``customized_publish_status`` says
  whether the provider has put the app online (2, 3) — until then staff cannot use
  it, the commonest reason a new customer's login fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qywx_cli.core.wecom._http import expires_in, int_at, required, str_at
from qywx_cli.core.wecom._tokens import CORP, Family, ObtainedToken
from qywx_cli.core.wecom.results import AgentStatus, UserDetail, UserIdentity

APIS: dict[str, str] = {
    "gettoken": "GET",
    "auth/getuserinfo": "GET",
    "auth/getuserdetail": "POST",
    "agent/get": "GET",
}
"""The paths this family calls and their methods (the fake must route every one)."""


class CorpAPI(Family):
    """Calls made with the 代开发 app's corp access_token."""

    def corp_token(self, corp_id: str, permanent_code: str, *, fresh: bool = False) -> str:
        """The app's access_token: ``gettoken`` with the permanent code as corpsecret (§5.4).

        ``fresh`` asks WeCom even when a cached token is valid (``qywx token corp
        --refresh``, ``doctor --all``); the answer is cached as usual.
        """
        return self.obtain_corp_token(corp_id, permanent_code, fresh=fresh).token

    def obtain_corp_token(
        self, corp_id: str, permanent_code: str, *, fresh: bool = False
    ) -> ObtainedToken:
        """:meth:`corp_token` with its expiry and whether it came from the cache."""
        return self._tokens.obtain(
            CORP, corp_id, lambda: self._fetch_corp(corp_id, permanent_code), fresh=fresh
        )

    def _fetch_corp(self, corp_id: str, permanent_code: str) -> tuple[str, int]:
        api = "gettoken"
        data = self._http.call("GET", api, params={"corpid": corp_id, "corpsecret": permanent_code})
        return required(data, api, "access_token"), expires_in(data)

    def _corp_call(
        self,
        corp_id: str,
        permanent_code: str,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        single_use: bool = False,
    ) -> dict[str, Any]:
        return self._tokens.call(
            CORP,
            corp_id,
            lambda: self._fetch_corp(corp_id, permanent_code),
            method,
            api,
            params=params,
            body=body,
            single_use=single_use,
        )

    def get_user_info(self, corp_id: str, permanent_code: str, code: str) -> UserIdentity:
        """Who an OAuth/web-login ``code`` belongs to (docs 96442/98177; single use, 5 min)."""
        data = self._corp_call(
            corp_id,
            permanent_code,
            "GET",
            "auth/getuserinfo",
            params={"code": code},
            single_use=True,
        )
        return UserIdentity(
            user_id=str_at(data, "userid", "UserId"),
            open_id=str_at(data, "openid", "OpenId"),
            external_user_id=str_at(data, "external_userid"),
            user_ticket=str_at(data, "user_ticket"),
        )

    def get_user_detail(self, corp_id: str, permanent_code: str, user_ticket: str) -> UserDetail:
        """Sensitive member fields for a snsapi_privateinfo ``user_ticket`` (docs 96443)."""
        api = "auth/getuserdetail"
        data = self._corp_call(
            corp_id, permanent_code, "POST", api, body={"user_ticket": user_ticket}
        )
        return UserDetail(
            user_id=required(data, api, "userid"),
            gender=str_at(data, "gender"),
            avatar=str_at(data, "avatar"),
            qr_code=str_at(data, "qr_code"),
            mobile=str_at(data, "mobile"),
            email=str_at(data, "email"),
            biz_mail=str_at(data, "biz_mail"),
            address=str_at(data, "address"),
        )

    def get_agent(self, corp_id: str, permanent_code: str, agent_id: int) -> AgentStatus:
        """The 代开发 app's settings and publish status in the corp (doc 96448)."""
        api = "agent/get"
        data = self._corp_call(
            corp_id, permanent_code, "GET", api, params={"agentid": str(agent_id)}
        )
        got = int_at(data, "agentid")
        return AgentStatus(
            agent_id=got if got is not None else agent_id,
            name=str_at(data, "name") or "",
            close=int_at(data, "close") == 1,
            customized_publish_status=int_at(data, "customized_publish_status"),
            home_url=str_at(data, "home_url"),
            redirect_domain=str_at(data, "redirect_domain"),
        )
