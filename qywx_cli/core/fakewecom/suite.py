"""The fake's template (suite) family, mirroring :mod:`qywx_cli.core.wecom.suite`.

v1 and v2 get_permanent_code spend the same single-use AuthCode; v2 answers the v2
shape of doc 100776 (no access_token, no agent list, ``auth_corp_info`` with corpid
and corp_name only, top-level ``state``), v1 the full v1 shape of doc 90603 minus the
corp access_token a 代开发 template never gets (§3.2).
"""

from __future__ import annotations

from typing import Any

from qywx_cli.core.errors import WeComAPIError
from qywx_cli.core.fakewecom._routing import Request, Routes, text
from qywx_cli.core.fakewecom._state import (
    AUTH_CODE_TTL,
    DEFAULT_PUBLISH_STATUS,
    Authorization,
    State,
    digest,
)


def corp_from_auth_code(auth_code: str) -> str:
    """``AUTHCODE-<corpid>-…`` names the corp; any other code maps to a stable ``ww`` id."""
    parts = auth_code.split("-", 2)
    if len(parts) >= 2 and parts[0] == "AUTHCODE" and parts[1]:
        return parts[1]
    return "ww" + digest("corp", auth_code)[:16]


def corp_info(auth: Authorization) -> dict[str, Any]:
    return {
        "corpid": auth.corp_id,
        "corp_name": auth.corp_name,
        "corp_type": "verified",
        "corp_square_logo_url": "https://p.qpic.cn/pic_wework/fake/0",
        "corp_user_max": 200,
        "corp_full_name": f"{auth.corp_name} Co., Ltd.",
        "verified_end_time": 1924963200,
        "subject_type": 1,
        "corp_wxqrcode": "https://wework.qpic.cn/wwpic/fake/0",
        "corp_scale": "1-50人",
        "corp_industry": "IT服务",
        "corp_sub_industry": "计算机软件/硬件/信息服务",
    }


def agent(auth: Authorization) -> dict[str, Any]:
    return {
        "agentid": auth.agent_id,
        "name": "Fake 代开发 App",
        "round_logo_url": "https://p.qpic.cn/qqmail_pic/fake/0",
        "square_logo_url": "https://p.qpic.cn/qqmail_pic/fake/0",
        "auth_mode": 0,
        "is_customized_app": True,
        "auth_from_thirdapp": False,
        "privilege": {
            "level": 1,
            "allow_party": [1],
            "allow_user": [],
            "allow_tag": [],
            "extra_party": [],
            "extra_user": [],
            "extra_tag": [],
        },
    }


def get_suite_token(state: State, request: Request) -> dict[str, Any]:
    body = request.json()
    suite_id, secret, ticket = (
        text(body, "suite_id"),
        text(body, "suite_secret"),
        text(body, "suite_ticket"),
    )
    if not suite_id:
        raise WeComAPIError(40083, "")
    if not secret:
        raise WeComAPIError(41004, "")
    if not ticket or not state.ticket_ok(suite_id, ticket):
        raise WeComAPIError(40085, "")
    # §4: "该接口在调用失败时才返回errcode" — success carries no errcode.
    return {"suite_access_token": state.issue("suite", suite_id), "expires_in": state.ttl}


def _exchange(state: State, request: Request) -> Authorization:
    """Spend an AuthCode (single use, 10 minutes) and authorize its corp."""
    suite = state.check_token(request.query.get("suite_access_token"), "suite")
    auth_code = text(request.json(), "auth_code")
    if not auth_code or auth_code in state.used_auth_codes:
        raise WeComAPIError(40078, "")
    grant = state.auth_codes.get(auth_code)
    if grant is not None and state.now() - grant.issued_at > AUTH_CODE_TTL:
        raise WeComAPIError(40078, "")
    state.used_auth_codes.add(auth_code)
    corp_id = grant.corp_id if grant else corp_from_auth_code(auth_code)
    # Re-authorizing (reset_permanent_code, §3.5) replaces the secret: the old one dies.
    for code, old in list(state.authorizations.items()):
        if old.suite_id == suite.subject and old.corp_id == corp_id:
            del state.authorizations[code]
    auth = Authorization(
        suite_id=suite.subject,
        corp_id=corp_id,
        corp_name=(grant.corp_name if grant else None) or f"Fake Corp {corp_id[-6:]}",
        agent_id=1000000 + int(digest(suite.subject, corp_id)[:6], 16) % 100000,
        permanent_code=state.random(32),
        state=grant.state if grant else None,
    )
    state.authorizations[auth.permanent_code] = auth
    chosen = grant.publish_status if grant else None
    if chosen is not None or (suite.subject, corp_id) not in state.publish:
        state.publish[(suite.subject, corp_id)] = (
            DEFAULT_PUBLISH_STATUS if chosen is None else chosen
        )
    return auth


def _auth_user(corp_id: str) -> dict[str, Any]:
    return {
        "userid": "admin",
        "open_userid": "wo" + digest(corp_id, "admin")[:28],
        "name": "admin",
        "avatar": "https://wework.qpic.cn/wwhead/fake/0",
    }


def get_permanent_code(state: State, request: Request) -> dict[str, Any]:
    """v1 (doc 90603)."""
    auth = _exchange(state, request)
    reply: dict[str, Any] = {
        "errcode": 0,
        "errmsg": "ok",
        "permanent_code": auth.permanent_code,
        "auth_corp_info": corp_info(auth),
        "auth_info": {"agent": [agent(auth)]},
        "auth_user_info": _auth_user(auth.corp_id),
    }
    if auth.state is not None:
        reply["state"] = auth.state
    return reply


def get_permanent_code_v2(state: State, request: Request) -> dict[str, Any]:
    """v2 (doc 100776): no agent list, the short auth_corp_info, top-level state."""
    auth = _exchange(state, request)
    reply: dict[str, Any] = {
        "errcode": 0,
        "errmsg": "ok",
        "permanent_code": auth.permanent_code,
        "auth_corp_info": {"corpid": auth.corp_id, "corp_name": auth.corp_name},
        "auth_user_info": _auth_user(auth.corp_id),
    }
    if auth.state is not None:
        reply["state"] = auth.state
    return reply


def get_auth_info(state: State, request: Request) -> dict[str, Any]:
    suite = state.check_token(request.query.get("suite_access_token"), "suite")
    body = request.json()
    corp_id, code = text(body, "auth_corpid"), text(body, "permanent_code")
    if not corp_id:
        raise WeComAPIError(41002, "")
    if not code:
        raise WeComAPIError(41025, "")
    auth = state.authorizations.get(code)
    if auth is None or auth.corp_id != corp_id or auth.suite_id != suite.subject:
        raise WeComAPIError(40084, "")
    return {
        "errcode": 0,
        "errmsg": "ok",
        "auth_corp_info": {**corp_info(auth), "corp_ex_name": auth.corp_name},
        "auth_info": {"agent": [agent(auth)]},
    }


ROUTES: Routes = {
    "service/get_suite_token": ("POST", get_suite_token),
    "service/v2/get_permanent_code": ("POST", get_permanent_code_v2),
    "service/get_permanent_code": ("POST", get_permanent_code),
    "service/v2/get_auth_info": ("POST", get_auth_info),
}
