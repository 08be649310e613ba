"""The fake's control endpoints (``/fake/…``): faults, state, registered codes.

Never part of WeCom's API; tests and demos use them to shape what the fake answers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from qywx_cli.core.errors import UsageError
from qywx_cli.core.fakewecom._routing import ERRMSG, Request, Response, json_response, text
from qywx_cli.core.fakewecom._state import AuthCodeGrant, Fault, OAuthCode, State
from qywx_cli.core.fakewecom.jsapi import verify as verify_jsapi
from qywx_cli.core.fakewecom.suite import corp_from_auth_code
from qywx_cli.core.masking import mask

CONTROL: dict[str, frozenset[str]] = {
    "fake/faults": frozenset({"POST", "DELETE"}),
    "fake/slow": frozenset({"POST"}),
    "fake/holds": frozenset({"POST", "DELETE"}),
    "fake/release": frozenset({"POST"}),
    "fake/state": frozenset({"GET"}),
    "fake/codes": frozenset({"POST"}),
    "fake/auth_codes": frozenset({"POST"}),
    "fake/scan": frozenset({"POST"}),
    "fake/agents": frozenset({"POST"}),
    "fake/jsapi/verify": frozenset({"POST"}),
    "fake/licence_orders": frozenset({"POST"}),
}


def serve_control(state: State, request: Request, apis: Iterable[str]) -> Response:
    try:
        if request.path == "fake/state":
            return json_response(snapshot(state))
        if request.path == "fake/faults" and request.method == "DELETE":
            state.faults.clear()
            return json_response({"errcode": 0, "errmsg": "ok"})
        if request.path == "fake/holds" and request.method == "DELETE":
            return json_response({"errcode": 0, "errmsg": "ok", "released": state.gates.clear()})
        data = _control_json(request.body)
        if request.path in ("fake/slow", "fake/holds", "fake/release"):
            return json_response(
                {"errcode": 0, "errmsg": "ok", **_gate_control(state, apis, data, request.path)}
            )
        if request.path == "fake/faults":
            count = _opt_int(data, "count")
            api = inject_fault(
                state,
                apis,
                str(data.get("api") or ""),
                errcode=_opt_int(data, "errcode"),
                errmsg=data.get("errmsg") if isinstance(data.get("errmsg"), str) else None,
                http_status=_opt_int(data, "http_status"),
                count=1 if count is None else count,
            )
            return json_response({"errcode": 0, "errmsg": "ok", "api": api})
        if request.path == "fake/scan":
            return json_response(
                {
                    "errcode": 0,
                    "errmsg": "ok",
                    **scan(
                        state,
                        text(data, "state"),
                        corp_id=text(data, "corp_id") or None,
                        corp_name=text(data, "corp_name") or None,
                        publish_status=_opt_int(data, "customized_publish_status"),
                    ),
                }
            )
        if request.path == "fake/agents":
            status = _opt_int(data, "customized_publish_status")
            if status is None:
                raise UsageError("customized_publish_status (0-3) is required")
            set_publish_status(state, text(data, "corp_id"), status)
            return json_response({"errcode": 0, "errmsg": "ok"})
        if request.path == "fake/licence_orders":
            from qywx_cli.core.fakewecom.licences import create_order

            order_id, codes = create_order(
                state,
                text(data, "corp_id"),
                count=_opt_int(data, "count") or 1,
                type=_opt_int(data, "type") or 1,
                days=_opt_int(data, "days") or 365,
            )
            return json_response(
                {"errcode": 0, "errmsg": "ok", "order_id": order_id, "active_codes": codes}
            )
        if request.path == "fake/jsapi/verify":
            return json_response(verify_jsapi(state, data))
        if request.path == "fake/codes":
            register_code(
                state,
                text(data, "code"),
                user_id=text(data, "user_id") or None,
                open_id=text(data, "open_id") or None,
                corp_id=text(data, "corp_id") or None,
            )
        else:
            register_auth_code(
                state,
                text(data, "auth_code"),
                corp_id=text(data, "corp_id") or None,
                corp_name=text(data, "corp_name") or None,
                state=text(data, "state") or None,
                publish_status=_opt_int(data, "customized_publish_status"),
            )
        return json_response({"errcode": 0, "errmsg": "ok"})
    except UsageError as exc:
        return json_response({"errcode": 400, "errmsg": str(exc)}, 400)


def _gate_control(
    state: State, apis: Iterable[str], data: dict[str, Any], path: str
) -> dict[str, Any]:
    """``/fake/slow``, ``/fake/holds`` and ``/fake/release`` (see :mod:`._slow`)."""
    stage = str(data.get("stage") or "before")
    if path == "fake/release":
        name = text(data, "api")
        drop = data.get("drop", False)
        if not isinstance(drop, bool):
            raise UsageError("drop must be true or false")
        target = canonical_api(name, apis) if name else None
        return {"released": state.gates.release(target, drop=drop)}
    api = canonical_api(str(data.get("api") or ""), apis)
    if path == "fake/slow":
        seconds = data.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise UsageError("seconds must be a number")
        state.gates.set_delay(api, float(seconds), stage)
    else:
        count = _opt_int(data, "count")
        state.gates.hold(api, stage, 1 if count is None else count)
    return {"api": api, "stage": stage}


def dropped(path: str) -> Response:
    """What a held call that was dropped answers (a lost answer, seen from the wire)."""
    return json_response({"errcode": 503, "errmsg": f"{path}: answer dropped by the fake"}, 503)


def snapshot(state: State) -> dict[str, Any]:
    now = state.now()
    live = Counter(t.kind for t in state.tokens.values() if t.expires_at > now)
    return {
        "permanent_codes": [
            {
                "suite_id": a.suite_id,
                "corp_id": a.corp_id,
                "agent_id": a.agent_id,
                "permanent_code": mask(a.permanent_code),
            }
            for a in state.authorizations.values()
        ],
        "tokens": {
            "suite": live["suite"],
            "corp": live["corp"],
            "provider": live["provider"],
        },
        "auth_links": sorted(state.auth_links),
        "publish_status": {
            f"{suite}/{corp}": status for (suite, corp), status in sorted(state.publish.items())
        },
        "jsapi_tickets": sum(
            1 for t in state.js_tickets.values() if t.kind == "jsapi" and t.expires_at > now
        ),
        "agent_config_tickets": sum(
            1 for t in state.js_tickets.values() if t.kind == "agent_config" and t.expires_at > now
        ),
        "calls": dict(state.calls),
        "faults": {api: sum(f.remaining for f in fs) for api, fs in state.faults.items() if fs},
        "suite_tickets": {suite: len(ts) for suite, ts in state.tickets.items()},
        **state.gates.snapshot(),
    }


def canonical_api(name: str, apis: Iterable[str]) -> str:
    """Accept ``service/get_permanent_code`` or its last segment ``get_permanent_code``."""
    name = name.strip().strip("/")
    known = list(apis)
    for path in known:
        if name in (path, path.rsplit("/", 1)[-1]):
            return path
    raise UsageError(f"unknown api {name!r}; one of {', '.join(sorted(known))}")


def inject_fault(
    state: State,
    apis: Iterable[str],
    api: str,
    *,
    errcode: int | None,
    errmsg: str | None,
    http_status: int | None,
    count: int,
) -> str:
    path = canonical_api(api, apis)
    if (errcode is None) == (http_status is None) or errcode == 0:
        raise UsageError("a fault needs exactly one of a non-zero errcode or an http_status")
    if http_status is not None and not _is_error_status(http_status):
        raise UsageError("http_status must be an HTTP error status (400-599)")
    if count < 1:
        raise UsageError("count must be at least 1")
    message = errmsg if errmsg is not None else ERRMSG.get(errcode or 0, "injected fault")
    state.faults.setdefault(path, []).append(Fault(errcode, message, http_status, count))
    return path


def take_fault(state: State, path: str) -> Fault | None:
    """The fault the next call of ``path`` should meet, counting it down."""
    faults = state.faults.get(path)
    if not faults:
        return None
    fault = faults[0]
    fault.remaining -= 1
    if fault.remaining <= 0:
        faults.pop(0)
    return fault


def register_code(
    state: State, code: str, *, user_id: str | None, open_id: str | None, corp_id: str | None
) -> None:
    if not code or (user_id is None) == (open_id is None):
        raise UsageError("an OAuth code needs a code and exactly one of user_id or open_id")
    state.codes[code] = OAuthCode(user_id, open_id, corp_id, state.now())
    state.used_codes.discard(code)


def register_auth_code(
    memory: State,
    auth_code: str,
    *,
    corp_id: str | None,
    corp_name: str | None,
    state: str | None,
    publish_status: int | None = None,
) -> None:
    """``memory`` is the fake's State; ``state`` the 带参授权链接 state the code carries."""
    if not auth_code:
        raise UsageError("auth_code is required")
    if publish_status is not None:
        _check_publish_status(publish_status)
    memory.auth_codes[auth_code] = AuthCodeGrant(
        corp_id or corp_from_auth_code(auth_code), corp_name, state, memory.now(), publish_status
    )
    memory.used_auth_codes.discard(auth_code)


def scan(
    memory: State,
    state: str,
    *,
    corp_id: str | None,
    corp_name: str | None,
    publish_status: int | None,
) -> dict[str, Any]:
    """A corp admin scans the link with ``state``: an AuthCode that carries it (doc 98744).

    Returns what WeCom's create_auth callback would then carry: SuiteId (the link's
    first template), AuthCode, State, and the corp chosen for it.
    """
    link = memory.auth_links.get(state)
    if link is None:
        raise UsageError(f"no authorization link with state {state!r} was handed out")
    if link.expires_at <= memory.now():
        raise UsageError(f"the authorization link with state {state!r} has expired (10 days)")
    auth_code = f"AUTHCODE-{corp_id}-{memory.random(8)}" if corp_id else memory.random(32)
    register_auth_code(
        memory,
        auth_code,
        corp_id=corp_id,
        corp_name=corp_name,
        state=state,
        publish_status=publish_status,
    )
    return {
        "suite_id": link.template_ids[0],
        "auth_code": auth_code,
        "state": state,
        "corp_id": memory.auth_codes[auth_code].corp_id,
    }


def set_publish_status(memory: State, corp_id: str, status: int) -> None:
    """The provider publishes (2) or un-publishes the app in a corp it authorized."""
    _check_publish_status(status)
    keys = [key for key in memory.publish if key[1] == corp_id]
    if not corp_id or not keys:
        raise UsageError(f"corp {corp_id!r} has not authorized any template here")
    for key in keys:
        memory.publish[key] = status


def _check_publish_status(status: int) -> None:
    if status not in (0, 1, 2, 3):
        raise UsageError("customized_publish_status must be 0, 1, 2 or 3 (doc 96448)")


def _control_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UsageError("body is not JSON") from None
    if not isinstance(data, dict):
        raise UsageError("body must be a JSON object")
    return data


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{key} must be an integer")
    return value


def _is_error_status(status: int) -> bool:
    try:
        HTTPStatus(status)
    except ValueError:
        return False
    return 400 <= status <= 599
