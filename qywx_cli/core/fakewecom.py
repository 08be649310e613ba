"""A local stand-in for WeCom's server API, for offline end-to-end runs and tests.

``FakeWeCom`` is a WSGI application answering the calls a 代开发 login makes
(wecom-protocol.md §4) with the JSON shapes, error codes and single-use and expiry
rules WeCom applies, so ``QYWX_API_BASE=http://127.0.0.1:PORT/cgi-bin`` turns a real
deployment into a self-contained one:

==============================  ======  =================================================
path (under any ``…/cgi-bin/``)  method  behaviour
==============================  ======  =================================================
service/get_suite_token          POST    ticket checked (see ``strict``); on success the
                                         reply has **no errcode**, as WeCom's (§4)
service/get_permanent_code       POST    AuthCode single use → 40078; 代开发 reply: no
                                         access_token, is_customized_app true (§3.2)
service/get_auth_info            POST    ``auth_corpid`` + ``permanent_code`` → 40084
gettoken                         GET     corpsecret must be a permanent code issued for
                                         corpid → 40013 / 40001 (§5.4)
auth/getuserinfo                 GET     code single use, 5 min → 40029 (docs 96442)
auth/getuserdetail               POST    user_ticket from getuserinfo, 1800 s
==============================  ======  =================================================

Tokens expire after ``token_ttl``: 42009 / 42001 for an expired suite / app token,
40082 / 40014 for one never issued. Error replies carry errmsg the way WeCom writes it
(``invalid auth_code, hint: […], more info at …?e=40078``) so clients meet the real
shape, query string included. The real code for a reused AuthCode was checked: WeCom
answers ``{"errcode":40078,"errmsg":" invalid auth_code, hint: …"}`` (developers.weixin.qq.com
community threads on get_permanent_code). WeCom's code for a bad user_ticket is not
documented; the fake answers 40029, the code of the OAuth code the ticket came from.

Control endpoints for tests and demos (never part of WeCom's API):

* ``POST /fake/faults`` ``{"api", "errcode", "errmsg", "count"}`` or ``{"api",
  "http_status", "count"}``: the next ``count`` calls of that API fail that way
  (errcode -1 is WeCom's 系统繁忙). ``DELETE /fake/faults`` clears them.
* ``GET /fake/state``: issued permanent codes (masked), live token counts, calls per API.
* ``POST /fake/codes`` ``{"code", "user_id" | "open_id", "corp_id"}``: an OAuth code.
* ``POST /fake/auth_codes`` ``{"auth_code", "corp_id", "corp_name", "state"}``: an
  AuthCode with a chosen corp and state (10-minute lifetime, §3.2).

Unregistered codes are accepted too, so a demo needs no set-up: an AuthCode shaped
``AUTHCODE-<corpid>-…`` authorizes that corp (any other derives a stable ``ww…`` id),
and an OAuth code ``CODE-<userid>`` belongs to that member.

:meth:`FakeWeCom.push_suite_ticket` plays WeCom's ten-minute suite_ticket push (§3.1):
a real signed and encrypted command callback, receiveid = suite id (§2.2).

One lock guards all state, so the app is safe under a threaded WSGI server; the lock
is never held while pushing, since the receiver may call straight back.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlunsplit

import httpx

from qywx_cli.core.crypto import WXBizMsgCrypt
from qywx_cli.core.errors import QywxError, UsageError, WeComAPIError
from qywx_cli.core.masking import mask
from qywx_cli.core.urls import split_url

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["APIS", "FakeWeCom", "SuiteInstanceLike", "suite_ticket_xml"]

AUTH_CODE_TTL = 600
"""AuthCode lifetime, "10分钟内有效" (§3.2)."""

OAUTH_CODE_TTL = 300
"""OAuth code lifetime, five minutes (docs 96442)."""

USER_TICKET_TTL = 1800
"""user_ticket lifetime (docs 96442)."""

LENIENT_TICKET_MIN = 8
MAX_BODY = 1024 * 1024

APIS: dict[str, str] = {
    "service/get_suite_token": "POST",
    "service/get_permanent_code": "POST",
    "service/get_auth_info": "POST",
    "gettoken": "GET",
    "auth/getuserinfo": "GET",
    "auth/getuserdetail": "POST",
}
"""WeCom paths served (relative to ``/cgi-bin/``) and the method each expects."""

_CONTROL: dict[str, frozenset[str]] = {
    "fake/faults": frozenset({"POST", "DELETE"}),
    "fake/state": frozenset({"GET"}),
    "fake/codes": frozenset({"POST"}),
    "fake/auth_codes": frozenset({"POST"}),
}

_ERRMSG = {
    -1: "system busy",
    40001: "invalid credential",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40029: "invalid code",
    40078: "invalid auth_code",
    40082: "invalid suite_acccess_token or provider_access_token",
    40083: "invalid suite_id",
    40084: "invalid authorizer permanent code",
    40085: "invalid suite ticket",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "secret missing",
    41008: "missing code",
    41025: "permanent code missing",
    42001: "access_token expired",
    42009: "suite_access_token expired",
    47001: "data format error",
}


class SuiteInstanceLike(Protocol):
    """What a push needs of an auths/ instance (config.AuthInstance fits)."""

    @property
    def suite_id(self) -> str: ...

    @property
    def token(self) -> str: ...

    @property
    def encoding_aes_key(self) -> str: ...


def _cdata(value: str) -> str:
    # "]]>" cannot occur inside CDATA; split it across two sections.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def suite_ticket_xml(suite_id: str, ticket: str, timestamp: int) -> str:
    """The decrypted suite_ticket command callback, field for field as §3.1 shows it."""
    return (
        "<xml>\n"
        f"<SuiteId>{_cdata(suite_id)}</SuiteId>\n"
        f"<InfoType>{_cdata('suite_ticket')}</InfoType>\n"
        f"<TimeStamp>{timestamp}</TimeStamp>\n"
        f"<SuiteTicket>{_cdata(ticket)}</SuiteTicket>\n"
        "</xml>"
    )


# -- state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Authorization:
    suite_id: str
    corp_id: str
    corp_name: str
    agent_id: int
    permanent_code: str
    state: str | None


@dataclass(frozen=True)
class _Token:
    kind: str  # "suite" | "corp"
    subject: str  # suite id | corp id
    expires_at: float


@dataclass(frozen=True)
class _AuthCodeGrant:
    corp_id: str
    corp_name: str | None
    state: str | None
    issued_at: float


@dataclass(frozen=True)
class _OAuthCode:
    user_id: str | None
    open_id: str | None
    corp_id: str | None
    issued_at: float


@dataclass(frozen=True)
class _UserTicket:
    corp_id: str
    user_id: str
    expires_at: float


@dataclass
class _Fault:
    errcode: int | None
    errmsg: str
    http_status: int | None
    remaining: int


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The JSON body; WeCom answers 47001 to a body it cannot parse."""
        try:
            data = json.loads(self.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError):
            raise WeComAPIError(47001, _ERRMSG[47001]) from None
        if not isinstance(data, dict):
            raise WeComAPIError(47001, _ERRMSG[47001])
        return data


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    allow: str | None = None


def _json_response(data: dict[str, Any], status: int = 200) -> _Response:
    return _Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def _canonical_api(name: str) -> str:
    """Accept ``service/get_permanent_code`` or its last segment ``get_permanent_code``."""
    name = name.strip().strip("/")
    for path in APIS:
        if name in (path, path.rsplit("/", 1)[-1]):
            return path
    raise UsageError(f"unknown api {name!r}; one of {', '.join(sorted(APIS))}")


# -- the application -----------------------------------------------------------------
class FakeWeCom:
    """WSGI stand-in for WeCom's server API (see the module docstring).

    ``strict`` accepts only suite tickets this fake pushed or had registered, as WeCom
    only knows tickets it issued (40085 otherwise, §5.1); the lenient default takes
    any ticket of 8+ characters so a service that got its ticket elsewhere still runs.
    """

    def __init__(
        self,
        *,
        now: Callable[[], float] = time.time,
        token_ttl: int = 7200,
        random: Callable[[int], str] = secrets.token_hex,
        strict: bool = False,
    ) -> None:
        self._now = now
        self._ttl = token_ttl
        self._random = random
        self.strict = strict
        self._lock = threading.Lock()
        self._tickets: dict[str, set[str]] = {}
        self._auth_codes: dict[str, _AuthCodeGrant] = {}
        self._used_auth_codes: set[str] = set()
        self._authorizations: dict[str, _Authorization] = {}  # by permanent code
        self._tokens: dict[str, _Token] = {}
        self._codes: dict[str, _OAuthCode] = {}
        self._used_codes: set[str] = set()
        self._user_tickets: dict[str, _UserTicket] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._calls: Counter[str] = Counter()
        self._handlers: dict[str, Callable[[_Request], dict[str, Any]]] = {
            "service/get_suite_token": self._get_suite_token,
            "service/get_permanent_code": self._get_permanent_code,
            "service/get_auth_info": self._get_auth_info,
            "gettoken": self._gettoken,
            "auth/getuserinfo": self._getuserinfo,
            "auth/getuserdetail": self._getuserdetail,
        }

    def __repr__(self) -> str:
        return f"FakeWeCom(strict={self.strict}, token_ttl={self._ttl})"

    # -- WSGI ----------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        response = self._dispatch(environ)
        headers = [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
        ]
        if response.allow:
            headers.append(("Allow", response.allow))
        status = HTTPStatus(response.status)
        start_response(f"{status.value} {status.phrase}", headers)
        return [response.body]

    def _dispatch(self, environ: WSGIEnvironment) -> _Response:
        path = str(environ.get("PATH_INFO") or "/")
        # Serve under any prefix ending in /cgi-bin/, or at the root.
        route = path.rsplit("/cgi-bin/", 1)[-1].strip("/")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        allowed = frozenset({APIS[route]}) if route in APIS else _CONTROL.get(route)
        if allowed is None:
            return _json_response({"errcode": 404, "errmsg": f"no such api: {route}"}, 404)
        if method not in allowed:
            return _Response(
                405,
                json.dumps({"errcode": 405, "errmsg": f"{method} not allowed"}).encode(),
                allow=", ".join(sorted(allowed)),
            )
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            return _json_response({"errcode": 413, "errmsg": "body too large"}, 413)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        query = dict(parse_qsl(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True))
        request = _Request(method, route, query, body)
        with self._lock:
            if route in APIS:
                return self._serve_api(request)
            return self._serve_control(request)

    def _serve_api(self, request: _Request) -> _Response:
        self._calls[request.path] += 1
        faults = self._faults.get(request.path)
        if faults:
            fault = faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                faults.pop(0)
            if fault.http_status is not None:
                phrase = HTTPStatus(fault.http_status).phrase
                return _Response(
                    fault.http_status,
                    f"<html><body>{fault.http_status} {phrase}</body></html>".encode(),
                    content_type="text/html",
                )
            return _json_response({"errcode": fault.errcode, "errmsg": fault.errmsg})
        try:
            return _json_response(self._handlers[request.path](request))
        except WeComAPIError as refusal:
            return _json_response(
                {"errcode": refusal.errcode, "errmsg": self._errmsg(refusal.errcode)}
            )

    def _errmsg(self, errcode: int) -> str:
        """WeCom's errmsg layout: text, a hint id, and a lookup URL with a query string."""
        text = _ERRMSG.get(errcode, "error")
        hint = f"{int(self._now())}_{self._random(8)}"
        return (
            f"{text}, hint: [{hint}], from ip: 127.0.0.1, "
            f"more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"
        )

    # -- tokens ----------------------------------------------------------------------------
    def _issue(self, kind: str, subject: str) -> str:
        token = self._random(32)
        self._tokens[token] = _Token(kind, subject, self._now() + self._ttl)
        return token

    def _check_token(self, token: str | None, kind: str) -> _Token:
        if not token:
            raise WeComAPIError(41001, "")
        issued = self._tokens.get(token)
        if issued is None or issued.kind != kind:
            raise WeComAPIError(40082 if kind == "suite" else 40014, "")
        if issued.expires_at <= self._now():
            raise WeComAPIError(42009 if kind == "suite" else 42001, "")
        return issued

    def _ticket_ok(self, suite_id: str, ticket: str) -> bool:
        if ticket in self._tickets.get(suite_id, set()):
            return True
        return not self.strict and len(ticket) >= LENIENT_TICKET_MIN

    # -- WeCom API handlers ------------------------------------------------------------------
    def _get_suite_token(self, request: _Request) -> dict[str, Any]:
        body = request.json()
        suite_id, secret, ticket = (
            _text(body, "suite_id"),
            _text(body, "suite_secret"),
            _text(body, "suite_ticket"),
        )
        if not suite_id:
            raise WeComAPIError(40083, "")
        if not secret:
            raise WeComAPIError(41004, "")
        if not ticket or not self._ticket_ok(suite_id, ticket):
            raise WeComAPIError(40085, "")
        # §4: "该接口在调用失败时才返回errcode" — success carries no errcode.
        return {"suite_access_token": self._issue("suite", suite_id), "expires_in": self._ttl}

    def _get_permanent_code(self, request: _Request) -> dict[str, Any]:
        suite = self._check_token(request.query.get("suite_access_token"), "suite")
        auth_code = _text(request.json(), "auth_code")
        if not auth_code or auth_code in self._used_auth_codes:
            raise WeComAPIError(40078, "")
        grant = self._auth_codes.get(auth_code)
        if grant is not None and self._now() - grant.issued_at > AUTH_CODE_TTL:
            raise WeComAPIError(40078, "")
        self._used_auth_codes.add(auth_code)
        corp_id = grant.corp_id if grant else _corp_from_auth_code(auth_code)
        # Re-authorizing (reset_permanent_code, §3.5) replaces the secret: the old one dies.
        for code, old in list(self._authorizations.items()):
            if old.suite_id == suite.subject and old.corp_id == corp_id:
                del self._authorizations[code]
        auth = _Authorization(
            suite_id=suite.subject,
            corp_id=corp_id,
            corp_name=(grant.corp_name if grant else None) or f"Fake Corp {corp_id[-6:]}",
            agent_id=1000000 + int(_digest(suite.subject, corp_id)[:6], 16) % 100000,
            permanent_code=self._random(32),
            state=grant.state if grant else None,
        )
        self._authorizations[auth.permanent_code] = auth
        reply: dict[str, Any] = {
            "errcode": 0,
            "errmsg": "ok",
            "permanent_code": auth.permanent_code,
            "auth_corp_info": _corp_info(auth),
            "auth_info": {"agent": [_agent(auth)]},
            "auth_user_info": {
                "userid": "admin",
                "open_userid": "wo" + _digest(corp_id, "admin")[:28],
                "name": "admin",
                "avatar": "https://wework.qpic.cn/wwhead/fake/0",
            },
        }
        if auth.state is not None:
            reply["state"] = auth.state
        return reply

    def _get_auth_info(self, request: _Request) -> dict[str, Any]:
        suite = self._check_token(request.query.get("suite_access_token"), "suite")
        body = request.json()
        corp_id, code = _text(body, "auth_corpid"), _text(body, "permanent_code")
        if not corp_id:
            raise WeComAPIError(41002, "")
        if not code:
            raise WeComAPIError(41025, "")
        auth = self._authorizations.get(code)
        if auth is None or auth.corp_id != corp_id or auth.suite_id != suite.subject:
            raise WeComAPIError(40084, "")
        return {
            "errcode": 0,
            "errmsg": "ok",
            "auth_corp_info": _corp_info(auth),
            "auth_info": {"agent": [_agent(auth)]},
        }

    def _gettoken(self, request: _Request) -> dict[str, Any]:
        corp_id = request.query.get("corpid", "").strip()
        secret = request.query.get("corpsecret", "").strip()
        if not corp_id:
            raise WeComAPIError(41002, "")
        if not secret:
            raise WeComAPIError(41004, "")
        auth = self._authorizations.get(secret)
        if auth is None or auth.corp_id != corp_id:
            known = any(a.corp_id == corp_id for a in self._authorizations.values())
            raise WeComAPIError(40001 if known else 40013, "")
        return {
            "errcode": 0,
            "errmsg": "ok",
            "access_token": self._issue("corp", corp_id),
            "expires_in": self._ttl,
        }

    def _getuserinfo(self, request: _Request) -> dict[str, Any]:
        corp = self._check_token(request.query.get("access_token"), "corp")
        code = request.query.get("code", "").strip()
        if not code:
            raise WeComAPIError(41008, "")
        if code in self._used_codes:
            raise WeComAPIError(40029, "")
        registered = self._codes.get(code)
        if registered is not None and (
            self._now() - registered.issued_at > OAUTH_CODE_TTL
            or (registered.corp_id is not None and registered.corp_id != corp.subject)
        ):
            raise WeComAPIError(40029, "")
        self._used_codes.add(code)
        if registered is not None and registered.user_id is None:
            open_id = registered.open_id or ""
            return {
                "errcode": 0,
                "errmsg": "ok",
                "openid": open_id,
                "external_userid": "wm" + _digest(corp.subject, open_id)[:28],
            }
        if registered is not None and registered.user_id is not None:
            user_id = registered.user_id
        elif code.startswith("CODE-") and len(code) > len("CODE-"):
            user_id = code[len("CODE-") :]
        else:
            user_id = "user" + _digest(corp.subject, code)[:8]
        ticket = self._random(32)
        self._user_tickets[ticket] = _UserTicket(
            corp.subject, user_id, self._now() + USER_TICKET_TTL
        )
        return {
            "errcode": 0,
            "errmsg": "ok",
            "userid": user_id,
            "user_ticket": ticket,
            "expires_in": USER_TICKET_TTL,
        }

    def _getuserdetail(self, request: _Request) -> dict[str, Any]:
        corp = self._check_token(request.query.get("access_token"), "corp")
        ticket = self._user_tickets.get(_text(request.json(), "user_ticket"))
        if ticket is None or ticket.corp_id != corp.subject or ticket.expires_at <= self._now():
            raise WeComAPIError(40029, "")
        number = int(_digest(ticket.corp_id, ticket.user_id)[:8], 16) % 10**8
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

    # -- control endpoints ---------------------------------------------------------------
    def _serve_control(self, request: _Request) -> _Response:
        try:
            if request.path == "fake/state":
                return _json_response(self._state())
            if request.path == "fake/faults" and request.method == "DELETE":
                self._faults.clear()
                return _json_response({"errcode": 0, "errmsg": "ok"})
            data = _control_json(request.body)
            if request.path == "fake/faults":
                count = _opt_int(data, "count")
                api = self._inject_fault(
                    str(data.get("api") or ""),
                    errcode=_opt_int(data, "errcode"),
                    errmsg=data.get("errmsg") if isinstance(data.get("errmsg"), str) else None,
                    http_status=_opt_int(data, "http_status"),
                    count=1 if count is None else count,
                )
                return _json_response({"errcode": 0, "errmsg": "ok", "api": api})
            if request.path == "fake/codes":
                self._register_code(
                    _text(data, "code"),
                    user_id=_text(data, "user_id") or None,
                    open_id=_text(data, "open_id") or None,
                    corp_id=_text(data, "corp_id") or None,
                )
            else:
                self._register_auth_code(
                    _text(data, "auth_code"),
                    corp_id=_text(data, "corp_id") or None,
                    corp_name=_text(data, "corp_name") or None,
                    state=_text(data, "state") or None,
                )
            return _json_response({"errcode": 0, "errmsg": "ok"})
        except UsageError as exc:
            return _json_response({"errcode": 400, "errmsg": str(exc)}, 400)

    def _state(self) -> dict[str, Any]:
        now = self._now()
        live = Counter(t.kind for t in self._tokens.values() if t.expires_at > now)
        return {
            "permanent_codes": [
                {
                    "suite_id": a.suite_id,
                    "corp_id": a.corp_id,
                    "agent_id": a.agent_id,
                    "permanent_code": mask(a.permanent_code),
                }
                for a in self._authorizations.values()
            ],
            "tokens": {"suite": live["suite"], "corp": live["corp"]},
            "calls": dict(self._calls),
            "faults": {api: sum(f.remaining for f in fs) for api, fs in self._faults.items() if fs},
            "suite_tickets": {suite: len(ts) for suite, ts in self._tickets.items()},
        }

    # -- Python API of the controls (the endpoints call these under the lock) --------------
    def inject_fault(
        self,
        api: str,
        *,
        errcode: int | None = None,
        errmsg: str | None = None,
        http_status: int | None = None,
        count: int = 1,
    ) -> str:
        """Make the next ``count`` calls of ``api`` fail; returns the canonical path."""
        with self._lock:
            return self._inject_fault(
                api, errcode=errcode, errmsg=errmsg, http_status=http_status, count=count
            )

    def _inject_fault(
        self,
        api: str,
        *,
        errcode: int | None,
        errmsg: str | None,
        http_status: int | None,
        count: int,
    ) -> str:
        path = _canonical_api(api)
        if (errcode is None) == (http_status is None) or errcode == 0:
            raise UsageError("a fault needs exactly one of a non-zero errcode or an http_status")
        if http_status is not None and not _is_error_status(http_status):
            raise UsageError("http_status must be an HTTP error status (400-599)")
        if count < 1:
            raise UsageError("count must be at least 1")
        text = errmsg if errmsg is not None else _ERRMSG.get(errcode or 0, "injected fault")
        self._faults.setdefault(path, []).append(_Fault(errcode, text, http_status, count))
        return path

    def register_code(
        self,
        code: str,
        *,
        user_id: str | None = None,
        open_id: str | None = None,
        corp_id: str | None = None,
    ) -> None:
        """An OAuth code for a member (``user_id``) or a non-member (``open_id``)."""
        with self._lock:
            self._register_code(code, user_id=user_id, open_id=open_id, corp_id=corp_id)

    def _register_code(
        self, code: str, *, user_id: str | None, open_id: str | None, corp_id: str | None
    ) -> None:
        if not code or (user_id is None) == (open_id is None):
            raise UsageError("an OAuth code needs a code and exactly one of user_id or open_id")
        self._codes[code] = _OAuthCode(user_id, open_id, corp_id, self._now())
        self._used_codes.discard(code)

    def register_auth_code(
        self,
        auth_code: str,
        *,
        corp_id: str | None = None,
        corp_name: str | None = None,
        state: str | None = None,
    ) -> None:
        """An AuthCode as a create_auth / reset_permanent_code callback would carry it."""
        with self._lock:
            self._register_auth_code(auth_code, corp_id=corp_id, corp_name=corp_name, state=state)

    def _register_auth_code(
        self, auth_code: str, *, corp_id: str | None, corp_name: str | None, state: str | None
    ) -> None:
        if not auth_code:
            raise UsageError("auth_code is required")
        self._auth_codes[auth_code] = _AuthCodeGrant(
            corp_id or _corp_from_auth_code(auth_code), corp_name, state, self._now()
        )
        self._used_auth_codes.discard(auth_code)

    def register_suite_ticket(self, suite_id: str, ticket: str) -> None:
        """Make ``ticket`` valid for ``suite_id`` even in strict mode."""
        with self._lock:
            self._tickets.setdefault(suite_id, set()).add(ticket)

    # -- suite_ticket pushes ---------------------------------------------------------------
    def push_suite_ticket(
        self, url: str, instance: SuiteInstanceLike, *, client: httpx.Client | None = None
    ) -> httpx.Response:
        """POST a fresh suite_ticket command callback to ``url``, as WeCom does (§3.1).

        The ticket becomes valid *before* the POST: a receiver may exchange it for a
        suite_access_token while the push is still in flight.
        """
        ticket = self._random(32)
        timestamp = int(self._now())
        self.register_suite_ticket(instance.suite_id, ticket)
        crypt = WXBizMsgCrypt(
            instance.token, instance.encoding_aes_key, {instance.suite_id: "suite"}
        )
        envelope = crypt.encrypt_msg(
            suite_ticket_xml(instance.suite_id, ticket, timestamp),
            instance.suite_id,
            str(timestamp),
            str(int(self._random(4), 16)),
        )
        http = client or httpx.Client(timeout=5.0)
        try:
            return http.post(
                url,
                params=envelope.query(),
                content=envelope.request_xml(instance.suite_id).encode("utf-8"),
                headers={"Content-Type": "text/xml; charset=utf-8"},
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise QywxError(
                f"suite_ticket push to {_without_query(url)} failed: {type(exc).__name__}",
                code="push-failed",
            ) from None
        finally:
            if client is None:
                http.close()

    def run_ticket_pusher(
        self,
        url: str,
        instance: SuiteInstanceLike,
        interval: float,
        stop_event: threading.Event,
        *,
        client: httpx.Client | None = None,
        on_push: Callable[[httpx.Response | QywxError], None] | None = None,
    ) -> int:
        """Push a ticket now and every ``interval`` seconds until ``stop_event`` is set.

        A failed push is reported to ``on_push`` and the loop carries on, as WeCom keeps
        pushing whatever the receiver answered. Returns how many pushes were made.
        """
        if interval <= 0:
            raise UsageError("the push interval must be a positive number of seconds")
        http = client or httpx.Client(timeout=5.0)
        pushes = 0
        try:
            while not stop_event.is_set():
                result: httpx.Response | QywxError
                try:
                    result = self.push_suite_ticket(url, instance, client=http)
                except QywxError as exc:
                    result = exc
                pushes += 1
                if on_push is not None:
                    on_push(result)
                if stop_event.wait(interval):
                    break
        finally:
            if client is None:
                http.close()
        return pushes


# -- helpers -------------------------------------------------------------------------
def _corp_from_auth_code(auth_code: str) -> str:
    """``AUTHCODE-<corpid>-…`` names the corp; any other code maps to a stable ``ww`` id."""
    parts = auth_code.split("-", 2)
    if len(parts) >= 2 and parts[0] == "AUTHCODE" and parts[1]:
        return parts[1]
    return "ww" + _digest("corp", auth_code)[:16]


def _corp_info(auth: _Authorization) -> dict[str, Any]:
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


def _agent(auth: _Authorization) -> dict[str, Any]:
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


def _control_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8") or "{}")
    except (UnicodeDecodeError, ValueError):
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


def _without_query(url: str) -> str:
    parts = split_url(url)
    if parts is None:
        return "a malformed URL"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
