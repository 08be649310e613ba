"""The fake's ID-conversion family, mirroring :mod:`qywx_cli.core.wecom.ids`.

Conversions are deterministic (a digest of the corp and the id), so a re-run converts
to the same open ids, as WeCom's do. Partial failures follow one rule a test can aim
at: a userid starting with ``invalid`` is outside the app's range and comes back in
``invalid_userid_list``; an external_userid that does not start with ``wm``/``wo`` is
not a customer of the corp and is left out of ``items``. More than 1,000 ids in one
call is refused with 40058, the code WeCom uses for an invalid parameter (the fake's
choice: the limit's own errcode is not published). Rate limits are injected with the
fault controls (``errcode=45009``).
"""

from __future__ import annotations

from typing import Any

from qywx_cli.core.errors import WeComAPIError
from qywx_cli.core.fakewecom._routing import Request, Routes, text
from qywx_cli.core.fakewecom._state import State, digest

BATCH_LIMIT = 1000
INVALID_PARAMETER = 40058


def open_userid(corp_id: str, user_id: str) -> str:
    """The open_userid the fake converts ``user_id`` of ``corp_id`` to."""
    return "wo" + digest("open_userid", corp_id, user_id)[:30]


def new_external_userid(corp_id: str, external_user_id: str) -> str:
    return "wm" + digest("external_userid", corp_id, external_user_id)[:30]


def _id_list(request: Request, key: str) -> list[str]:
    value = request.json().get(key)
    if not isinstance(value, list) or not value or len(value) > BATCH_LIMIT:
        raise WeComAPIError(INVALID_PARAMETER, "")
    return [v for v in value if isinstance(v, str)]


def userid_to_openuserid(state: State, request: Request) -> dict[str, Any]:
    corp = state.check_token(request.query.get("access_token"), "corp")
    ids = _id_list(request, "userid_list")
    valid = [u for u in ids if not u.startswith("invalid")]
    return {
        "errcode": 0,
        "errmsg": "ok",
        "open_userid_list": [
            {"userid": u, "open_userid": open_userid(corp.subject, u)} for u in valid
        ],
        "invalid_userid_list": [u for u in ids if u.startswith("invalid")],
    }


def get_new_external_userid(state: State, request: Request) -> dict[str, Any]:
    corp = state.check_token(request.query.get("access_token"), "corp")
    ids = _id_list(request, "external_userid_list")
    return {
        "errcode": 0,
        "errmsg": "ok",
        "items": [
            {"external_userid": e, "new_external_userid": new_external_userid(corp.subject, e)}
            for e in ids
            if e.startswith(("wm", "wo"))
        ],
    }


def open_corpid(corp_id: str) -> str:
    """The open corp id the fake converts ``corp_id`` to: case matters, as WeCom's does."""
    hexed = digest("open_corpid", corp_id)[:24]
    return "wp" + "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(hexed))


def corpid_to_opencorpid(state: State, request: Request) -> dict[str, Any]:
    """Only corps that authorized the provider convert (doc 97105); else 40013."""
    state.check_token(request.query.get("provider_access_token"), "provider")
    corp_id = text(request.json(), "corpid")
    if not corp_id:
        raise WeComAPIError(41002, "")
    if not any(a.corp_id == corp_id for a in state.authorizations.values()):
        raise WeComAPIError(40013, "")
    return {"errcode": 0, "errmsg": "ok", "open_corpid": open_corpid(corp_id)}


ROUTES: Routes = {
    "service/corpid_to_opencorpid": ("POST", corpid_to_opencorpid),
    "batch/userid_to_openuserid": ("POST", userid_to_openuserid),
    "externalcontact/get_new_external_userid": ("POST", get_new_external_userid),
}
