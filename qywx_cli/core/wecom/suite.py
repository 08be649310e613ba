"""The 代开发 template (suite) family: suite_access_token and the install-time exchanges.

* ``service/get_suite_token`` with the **latest** stored suite_ticket (§3.1, §5.1).
  It is the odd one out: it carries ``errcode`` only when it fails.
* ``service/v2/get_permanent_code`` (doc 100776) — for a 代开发 template the
  permanent code *is* the app's secret. WeCom recommends v2 for the exchange made
  while a corp installs ("旧接口耗时较长…建议使用新接口"), which is when qywx makes it
  (create_auth, reset_permanent_code). v2 answers permanent_code, auth_corp_info
  {corpid, corp_name}, auth_user_info, register_code_info and the link's ``state``,
  but no agent list: the agentid comes from ``service/v2/get_auth_info``.
* ``service/get_permanent_code`` (v1, doc 90603) is kept for the one thing v2 does
  not return: a caller that needs v1's corp ``access_token``, ``dealer_corp_info``,
  full ``auth_corp_info`` or paid-edition ``edition_info`` (第三方 apps) calls
  :meth:`SuiteAPI.get_permanent_code_v1`. The 代开发 pipeline never needs them — its
  corp token comes from ``gettoken`` — and never calls v1.
* ``service/v2/get_auth_info`` (doc 100795) takes ``auth_corpid`` + ``permanent_code``,
  not the auth code some SDKs send (§5.4), and lists the app's agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qywx_cli.core.errors import ConfigError
from qywx_cli.core.wecom._http import dict_at, expires_in, required, str_at
from qywx_cli.core.wecom._tokens import SUITE, Family, ObtainedToken
from qywx_cli.core.wecom.results import AuthInfo, PermanentCode, parse_agents

APIS: dict[str, str] = {
    "service/get_suite_token": "POST",
    "service/v2/get_permanent_code": "POST",
    "service/get_permanent_code": "POST",
    "service/v2/get_auth_info": "POST",
}
"""The paths this family calls and their methods (the fake must route every one)."""


class SuiteAPI(Family):
    """Calls made with the template's suite_access_token."""

    def suite_token(self, suite_id: str, suite_secret: str, *, fresh: bool = False) -> str:
        """suite_access_token from the latest stored suite_ticket (§3.1, §4, §5.1).

        ``fresh`` asks WeCom even when a cached token is valid (doctor proves the secret,
        ticket and network work now, not two hours ago); the answer is cached as usual.
        Raises ConfigError (code ``no-suite-ticket``) when no ticket has arrived yet.
        """
        return self.obtain_suite_token(suite_id, suite_secret, fresh=fresh).token

    def obtain_suite_token(
        self, suite_id: str, suite_secret: str, *, fresh: bool = False
    ) -> ObtainedToken:
        """:meth:`suite_token` with its expiry and whether it came from the cache."""
        return self._tokens.obtain(
            SUITE, suite_id, lambda: self._fetch_suite(suite_id, suite_secret), fresh=fresh
        )

    def _fetch_suite(self, suite_id: str, suite_secret: str) -> tuple[str, int]:
        ticket = self._store.latest_suite_ticket(suite_id)
        if ticket is None:
            raise ConfigError(
                f"no suite_ticket received yet for suite {suite_id}: WeCom has not pushed one "
                "to this server (it pushes one every 10 minutes once the template's callback "
                "URL is verified); check with `qywx log list --event suite_ticket` and "
                "`qywx doctor --all`, or use 'refresh ticket' in the provider console",
                code="no-suite-ticket",
            )
        api = "service/get_suite_token"
        data = self._http.call(
            "POST",
            api,
            body={
                "suite_id": suite_id,
                "suite_secret": suite_secret,
                "suite_ticket": ticket.ticket,
            },
        )
        return required(data, api, "suite_access_token"), expires_in(data)

    def _suite_call(
        self,
        suite_id: str,
        suite_secret: str,
        api: str,
        body: Mapping[str, Any],
        *,
        single_use: bool = False,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        return self._tokens.call(
            SUITE,
            suite_id,
            lambda: self._fetch_suite(suite_id, suite_secret),
            "POST",
            api,
            body=body,
            single_use=single_use,
            read_timeout=read_timeout,
        )

    def get_permanent_code(self, suite_id: str, suite_secret: str, auth_code: str) -> PermanentCode:
        """Exchange a create_auth / reset_permanent_code AuthCode with v2 (doc 100776).

        Single use (§3.2, §3.5): the caller must store the answer before anything else
        can fail, so this makes exactly one call; ``agent_id`` is None here and comes
        from :meth:`get_auth_info` afterwards.
        """
        return self._permanent_code(
            suite_id, suite_secret, auth_code, "service/v2/get_permanent_code"
        )

    def get_permanent_code_v1(
        self, suite_id: str, suite_secret: str, auth_code: str
    ) -> PermanentCode:
        """v1 (doc 90603), for the fields only v1 returns; see the module docstring."""
        return self._permanent_code(suite_id, suite_secret, auth_code, "service/get_permanent_code")

    def _permanent_code(
        self, suite_id: str, suite_secret: str, auth_code: str, api: str
    ) -> PermanentCode:
        data = self._suite_call(
            suite_id,
            suite_secret,
            api,
            {"auth_code": auth_code},
            single_use=True,
            read_timeout=self._exchange_timeout,  # a late answer beats a lost one
        )
        agents = parse_agents(data)
        first = agents[0] if agents else None
        state = str_at(data, "state") or str_at(dict_at(data, "register_code_info"), "state")
        return PermanentCode(
            permanent_code=required(data, api, "permanent_code"),
            corp_id=required(data, api, "auth_corp_info", "corpid"),
            corp_name=str_at(dict_at(data, "auth_corp_info"), "corp_name") or "",
            agent_id=first.agent_id if first else None,
            state=state,
            auth_user_id=str_at(dict_at(data, "auth_user_info"), "userid"),
            is_customized_app=(first.is_customized_app if first else False)
            or data.get("is_customized_app") is True,
        )

    def get_auth_info(
        self, suite_id: str, suite_secret: str, corp_id: str, permanent_code: str
    ) -> AuthInfo:
        """What a corp has granted now (v2, doc 100795); the body names ``auth_corpid``."""
        api = "service/v2/get_auth_info"
        data = self._suite_call(
            suite_id, suite_secret, api, {"auth_corpid": corp_id, "permanent_code": permanent_code}
        )
        agents = parse_agents(data)
        return AuthInfo(
            corp_id=str_at(dict_at(data, "auth_corp_info"), "corpid") or corp_id,
            corp_name=str_at(dict_at(data, "auth_corp_info"), "corp_name") or "",
            agent_id=agents[0].agent_id if agents else None,
            agents=agents,
        )
