"""The fake's provider family, mirroring :mod:`qywx_cli.core.wecom.provider`.

``service/get_provider_token`` checks the secret when the fake was given one
(``FakeWeCom(provider_secret=…)`` / ``qywx fake-wecom --provider-secret``), answering
40001 (不合法的secret参数) to any other; without one it takes any non-empty secret.
``service/get_customized_auth_url`` records the link's state so ``POST /fake/scan``
can play a corp admin scanning it: an AuthCode whose create_auth and v2 exchange
carry that state (doc 98744, §2.2 of wecom-provider-apis.md).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from qywx_cli.core.errors import WeComAPIError
from qywx_cli.core.fakewecom._routing import Request, Routes, text
from qywx_cli.core.fakewecom._state import AUTH_URL_TTL, AuthLink, State

_STATE_RE = re.compile(r"[A-Za-z0-9]{1,32}")


def get_provider_token(state: State, request: Request) -> dict[str, Any]:
    body = request.json()
    corp_id, secret = text(body, "corpid"), text(body, "provider_secret")
    if not corp_id:
        raise WeComAPIError(41002, "")
    if not secret:
        raise WeComAPIError(41004, "")
    if state.provider_secret is not None and secret != state.provider_secret:
        raise WeComAPIError(40001, "")
    # doc 96237: a repeat inside the lifetime returns the same token.
    now = state.now()
    for token, issued in state.tokens.items():
        if issued.kind == "provider" and issued.subject == corp_id and issued.expires_at > now:
            return {"provider_access_token": token, "expires_in": int(issued.expires_at - now)}
    return {"provider_access_token": state.issue("provider", corp_id), "expires_in": state.ttl}


def get_customized_auth_url(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    body = request.json()
    link_state = text(body, "state")
    templates = body.get("templateid_list")
    if (
        not _STATE_RE.fullmatch(link_state)
        or not isinstance(templates, list)
        or not 1 <= len(templates) <= 9
        or not all(isinstance(t, str) and t for t in templates)
    ):
        raise WeComAPIError(47001, "")
    state.auth_links[link_state] = AuthLink(
        link_state, tuple(templates), state.now() + AUTH_URL_TTL
    )
    return {
        "errcode": 0,
        "errmsg": "ok",
        "qrcode_url": (
            "https://open.work.weixin.qq.com/3rdservice/wework/install"
            f"?fake=1&state={quote(link_state)}&templateid={quote(templates[0])}"
        ),
        "expires_in": AUTH_URL_TTL,
    }


ROUTES: Routes = {
    "service/get_provider_token": ("POST", get_provider_token),
    "service/get_customized_auth_url": ("POST", get_customized_auth_url),
}
