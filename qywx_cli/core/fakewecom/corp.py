"""The fake's corp-app family, mirroring :mod:`qywx_cli.core.wecom.corp`."""

from __future__ import annotations

from typing import Any

from qywx_cli.core.errors import WeComAPIError
from qywx_cli.core.fakewecom._routing import Request, Routes, text
from qywx_cli.core.fakewecom._state import (
    DEFAULT_PUBLISH_STATUS,
    OAUTH_CODE_TTL,
    USER_TICKET_TTL,
    Authorization,
    State,
    UserTicket,
    digest,
)


def gettoken(state: State, request: Request) -> dict[str, Any]:
    corp_id = request.query.get("corpid", "").strip()
    secret = request.query.get("corpsecret", "").strip()
    if not corp_id:
        raise WeComAPIError(41002, "")
    if not secret:
        raise WeComAPIError(41004, "")
    auth = state.authorizations.get(secret)
    if auth is None or auth.corp_id != corp_id:
        known = any(a.corp_id == corp_id for a in state.authorizations.values())
        raise WeComAPIError(40001 if known else 40013, "")
    return {
        "errcode": 0,
        "errmsg": "ok",
        "access_token": state.issue("corp", corp_id),
        "expires_in": state.ttl,
    }


def getuserinfo(state: State, request: Request) -> dict[str, Any]:
    corp = state.check_token(request.query.get("access_token"), "corp")
    code = request.query.get("code", "").strip()
    if not code:
        raise WeComAPIError(41008, "")
    if code in state.used_codes:
        raise WeComAPIError(40029, "")
    registered = state.codes.get(code)
    if registered is not None and (
        state.now() - registered.issued_at > OAUTH_CODE_TTL
        or (registered.corp_id is not None and registered.corp_id != corp.subject)
    ):
        raise WeComAPIError(40029, "")
    state.used_codes.add(code)
    if registered is not None and registered.user_id is None:
        open_id = registered.open_id or ""
        return {
            "errcode": 0,
            "errmsg": "ok",
            "openid": open_id,
            "external_userid": "wm" + digest(corp.subject, open_id)[:28],
        }
    if registered is not None and registered.user_id is not None:
        user_id = registered.user_id
    elif code.startswith("CODE-") and len(code) > len("CODE-"):
        user_id = code[len("CODE-") :]
    else:
        user_id = "user" + digest(corp.subject, code)[:8]
    ticket = state.random(32)
    state.user_tickets[ticket] = UserTicket(corp.subject, user_id, state.now() + USER_TICKET_TTL)
    return {
        "errcode": 0,
        "errmsg": "ok",
        "userid": user_id,
        "user_ticket": ticket,
        "expires_in": USER_TICKET_TTL,
    }


def getuserdetail(state: State, request: Request) -> dict[str, Any]:
    corp = state.check_token(request.query.get("access_token"), "corp")
    ticket = state.user_tickets.get(text(request.json(), "user_ticket"))
    if ticket is None or ticket.corp_id != corp.subject or ticket.expires_at <= state.now():
        raise WeComAPIError(40029, "")
    number = int(digest(ticket.corp_id, ticket.user_id)[:8], 16) % 10**8
    return {
        "errcode": 0,
        "errmsg": "ok",
        "userid": ticket.user_id,
        "gender": "1",
        "avatar": f"https://wework.qpic.cn/wwhead/fake/{ticket.user_id}",
        "qr_code": f"https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=fake{number}",
        "mobile": f"138{number:08d}",
        "email": f"{ticket.user_id}@example.com",
        "biz_mail": f"{ticket.user_id}@fake-corp.example",
        "address": "",
    }


def corp_authorization(state: State, corp_id: str) -> Authorization:
    """The live authorization behind a corp token (the token outlives nothing else)."""
    for auth in state.authorizations.values():
        if auth.corp_id == corp_id:
            return auth
    raise WeComAPIError(40014, "")


def agent_get(state: State, request: Request) -> dict[str, Any]:
    """agent/get (doc 96448) with customized_publish_status, 代开发 apps only."""
    corp = state.check_token(request.query.get("access_token"), "corp")
    raw = request.query.get("agentid", "").strip()
    if not raw:
        raise WeComAPIError(41011, "")
    auth = corp_authorization(state, corp.subject)
    if raw != str(auth.agent_id):
        raise WeComAPIError(40056, "")
    status = state.publish.get((auth.suite_id, auth.corp_id), DEFAULT_PUBLISH_STATUS)
    return {
        "errcode": 0,
        "errmsg": "ok",
        "agentid": auth.agent_id,
        "name": "Fake 代开发 App",
        "square_logo_url": "https://p.qpic.cn/qqmail_pic/fake/0",
        "description": "a 代开发 app served by qywx fake-wecom",
        "allow_userinfos": {"user": [{"userid": "admin"}]},
        "allow_partys": {"partyid": [1]},
        "allow_tags": {"tagid": []},
        "close": 0,
        "redirect_domain": "app.example.com",
        "report_location_flag": 0,
        "isreportenter": 0,
        "home_url": "https://app.example.com/",
        "customized_publish_status": status,
    }


ROUTES: Routes = {
    "gettoken": ("GET", gettoken),
    "auth/getuserinfo": ("GET", getuserinfo),
    "auth/getuserdetail": ("POST", getuserdetail),
    "agent/get": ("GET", agent_get),
}
