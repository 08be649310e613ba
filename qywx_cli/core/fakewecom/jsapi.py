"""The fake's JS-SDK family, mirroring :mod:`qywx_cli.core.wecom.jsapi`.

Tickets live ``token_ttl`` like WeCom's 7200 s and, as doc 96909 demands of callers,
fetching is rate limited: more than 400 corp tickets, or 100 app tickets, per corp
(per app) in an hour answer 45009. ``POST /fake/jsapi/verify`` plays the front end's
``wx.config`` / ``wx.agentConfig`` check against the tickets the fake issued, so a
test can see a signature accepted, or refused for a wrong string or an expired ticket.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from qywx_cli.core.errors import UsageError, WeComAPIError
from qywx_cli.core.fakewecom._routing import Request, Routes
from qywx_cli.core.fakewecom._state import JsTicket, State
from qywx_cli.core.fakewecom.corp import corp_authorization

HOURLY_LIMIT = {"jsapi": 400, "agent_config": 100}
"""doc 96909: 400/hour per corp for the corp ticket; 100/hour per app (UNCONFIRMED for
the agent_config ticket, commonly quoted from the older page 90506)."""


def _issue(state: State, request: Request, kind: str) -> dict[str, Any]:
    corp = state.check_token(request.query.get("access_token"), "corp")
    auth = corp_authorization(state, corp.subject)
    agent_id = auth.agent_id if kind == "agent_config" else None
    key = (kind, f"{corp.subject}/{agent_id}")
    now = state.now()
    recent = [t for t in state.ticket_fetches.get(key, []) if t > now - 3600]
    if len(recent) >= HOURLY_LIMIT[kind]:
        state.ticket_fetches[key] = recent
        raise WeComAPIError(45009, "")
    state.ticket_fetches[key] = [*recent, now]
    ticket = state.random(32)
    state.js_tickets[ticket] = JsTicket(kind, corp.subject, agent_id, now + state.ttl)
    return {"errcode": 0, "errmsg": "ok", "ticket": ticket, "expires_in": state.ttl}


def get_jsapi_ticket(state: State, request: Request) -> dict[str, Any]:
    return _issue(state, request, "jsapi")


def ticket_get(state: State, request: Request) -> dict[str, Any]:
    if request.query.get("type") != "agent_config":
        raise WeComAPIError(40005, "")
    return _issue(state, request, "agent_config")


def verify(state: State, data: dict[str, Any]) -> dict[str, Any]:
    """What the front end's config call decides, given the fields it was passed."""
    agent = data.get("agentid") is not None
    api = "agentConfig" if agent else "config"
    corp_id = data.get("corpid") if agent else data.get("appId")
    fields = {k: data.get(k) for k in ("url", "nonceStr", "timestamp", "signature")}
    if not isinstance(corp_id, str) or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in fields.values()
    ):
        raise UsageError(
            "verify needs url, nonceStr, timestamp, signature and appId (or corpid+agentid)"
        )
    url = str(fields["url"]).split("#", 1)[0]
    now = state.now()
    kind = "agent_config" if agent else "jsapi"
    reason = "no ticket of this corp signs that string"
    for ticket, issued in state.js_tickets.items():
        if issued.kind != kind or issued.corp_id != corp_id:
            continue
        if agent and str(issued.agent_id) != str(data.get("agentid")):
            continue
        text = (
            f"jsapi_ticket={ticket}&noncestr={fields['nonceStr']}"
            f"&timestamp={fields['timestamp']}&url={url}"
        )
        expected = hashlib.sha1(text.encode("utf-8")).hexdigest()
        if hmac.compare_digest(expected, str(fields["signature"])):
            if issued.expires_at <= now:
                reason = "the ticket it was signed with has expired"
                break
            return {"errcode": 0, "errMsg": f"{api}:ok"}
    return {"errcode": 0, "errMsg": f"{api}:invalid signature", "reason": reason}


ROUTES: Routes = {
    "get_jsapi_ticket": ("GET", get_jsapi_ticket),
    "ticket/get": ("GET", ticket_get),
}
