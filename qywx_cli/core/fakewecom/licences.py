"""The fake's interface-licence family, mirroring :mod:`qywx_cli.core.wecom.licences`.

Licence states follow doc 97189: a code is 1 未绑定 until ``active_account`` binds it
(2 已绑定且有效, with ``expire_time`` = activation + the order's duration); binding a
second code of the same type to a member merges the old one (5 已合并) and adds its
remaining time, refused with 701030 beyond five years (doc 97188). Orders come from
:meth:`FakeWeCom.create_licence_order` (paid at once: the real ones are paid in the
provider console). For a code, order or member the fake never issued it answers 40058
(invalid parameter): WeCom's specific codes for those are not on a primary page. A
transfer answers each pair with its own errcode (0, or 40058 when the handover member
holds nothing or the takeover member already holds that type), as doc 95673 shapes it.
"""

from __future__ import annotations

from typing import Any

from qywx_cli.core.errors import UsageError, WeComAPIError
from qywx_cli.core.fakewecom._routing import Request, Routes, text
from qywx_cli.core.fakewecom._state import FakeLicenceCode, State

INVALID_PARAMETER = 40058
STACKED_TOO_LONG = 701030
FIVE_YEARS = 5 * 366 * 86400
PAGE_MAX = 1000


def create_order(
    state: State, corp_id: str, *, count: int = 1, type: int = 1, days: int = 365
) -> tuple[str, list[str]]:
    """A paid order of ``count`` unbound codes for ``corp_id``: (order id, codes)."""
    if not corp_id or not 1 <= count <= 1000 or type not in (1, 2) or not 1 <= days <= 1830:
        raise UsageError("a licence order needs corp_id, count 1-1000, type 1|2, days 1-1830")
    order_id = "OI" + state.random(12).upper()
    codes = []
    for _ in range(count):
        code = "LC" + state.random(16).upper()
        state.licences.codes[code] = FakeLicenceCode(code, corp_id, type, days * 86400)
        codes.append(code)
    state.licences.orders[order_id] = (corp_id, codes)
    return order_id, codes


def _page(request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
    body = request.json()
    limit = body.get("limit", PAGE_MAX)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= PAGE_MAX:
        raise WeComAPIError(INVALID_PARAMETER, "")
    cursor = text(body, "cursor")
    start = int(cursor) if cursor.isdigit() else 0
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return {
        "errcode": 0,
        "errmsg": "ok",
        "account_list": chunk,
        "has_more": 1 if more else 0,
        "next_cursor": str(start + limit) if more else "",
    }


def _account(code: FakeLicenceCode) -> dict[str, Any]:
    return {
        "userid": code.user_id,
        "type": code.type,
        "active_code": code.code,
        "active_time": code.active_time,
        "expire_time": code.expire_time,
    }


def _bound(state: State, corp_id: str) -> list[FakeLicenceCode]:
    now = state.now()
    return sorted(
        (
            c
            for c in state.licences.codes.values()
            if c.corp_id == corp_id and c.status == 2 and (c.expire_time or 0) > now
        ),
        key=lambda c: (c.user_id or "", c.type),
    )


def list_actived_account(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    corp_id = text(request.json(), "corpid")
    if not corp_id:
        raise WeComAPIError(41002, "")
    return _page(request, [_account(c) for c in _bound(state, corp_id)])


def get_active_info_by_user(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    body = request.json()
    corp_id, user_id = text(body, "corpid"), text(body, "userid")
    if not corp_id or not user_id:
        raise WeComAPIError(INVALID_PARAMETER, "")
    held = [c for c in _bound(state, corp_id) if c.user_id == user_id]
    return {
        "errcode": 0,
        "errmsg": "ok",
        "active_status": 1 if held else 0,
        "active_info_list": [_account(c) for c in held],
    }


def active_account(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    body = request.json()
    corp_id, user_id = text(body, "corpid"), text(body, "userid")
    code = state.licences.codes.get(text(body, "active_code"))
    if code is None or code.corp_id != corp_id or not user_id or code.status != 1:
        raise WeComAPIError(INVALID_PARAMETER, "")
    now = int(state.now())
    expire = now + code.duration
    for old in _bound(state, corp_id):
        if old.user_id == user_id and old.type == code.type:
            expire += max(0, (old.expire_time or now) - now)
            if expire - now > FIVE_YEARS:
                raise WeComAPIError(STACKED_TOO_LONG, "")
            old.status = 5
    code.status, code.user_id, code.active_time, code.expire_time = 2, user_id, now, expire
    return {"errcode": 0, "errmsg": "ok"}


def batch_transfer_license(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    body = request.json()
    corp_id = text(body, "corpid")
    pairs = body.get("transfer_list")
    if not corp_id or not isinstance(pairs, list) or not 1 <= len(pairs) <= PAGE_MAX:
        raise WeComAPIError(INVALID_PARAMETER, "")
    results = []
    for pair in pairs:
        pair = pair if isinstance(pair, dict) else {}
        handover, takeover = text(pair, "handover_userid"), text(pair, "takeover_userid")
        bound = _bound(state, corp_id)
        moving = [c for c in bound if c.user_id == handover]
        taken = {c.type for c in bound if c.user_id == takeover}
        ok = bool(moving) and bool(takeover) and not taken & {c.type for c in moving}
        if ok:
            for c in moving:
                c.user_id = takeover
        results.append(
            {
                "handover_userid": handover,
                "takeover_userid": takeover,
                "errcode": 0 if ok else INVALID_PARAMETER,
            }
        )
    return {"errcode": 0, "errmsg": "ok", "transfer_result": results}


def get_order(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    order_id = text(request.json(), "order_id")
    order = state.licences.orders.get(order_id)
    if order is None:
        raise WeComAPIError(INVALID_PARAMETER, "")
    corp_id, codes = order
    base = sum(1 for c in codes if state.licences.codes[c].type == 1)
    return {
        "errcode": 0,
        "errmsg": "ok",
        "order": {
            "order_id": order_id,
            "order_type": 1,
            "order_status": 1,
            "corpid": corp_id,
            "account_count": {"base_count": base, "external_contact_count": len(codes) - base},
        },
    }


def list_order_account(state: State, request: Request) -> dict[str, Any]:
    state.check_token(request.query.get("provider_access_token"), "provider")
    order = state.licences.orders.get(text(request.json(), "order_id"))
    if order is None:
        raise WeComAPIError(INVALID_PARAMETER, "")
    codes = [state.licences.codes[c] for c in order[1]]
    return _page(
        request,
        [{"active_code": c.code, "userid": c.user_id, "type": c.type} for c in codes],
    )


ROUTES: Routes = {
    "license/list_actived_account": ("POST", list_actived_account),
    "license/get_active_info_by_user": ("POST", get_active_info_by_user),
    "license/active_account": ("POST", active_account),
    "license/batch_transfer_license": ("POST", batch_transfer_license),
    "license/get_order": ("POST", get_order),
    "license/list_order_account": ("POST", list_order_account),
}
