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
service/v2/get_permanent_code    POST    AuthCode single use → 40078; v2 shape (doc 100776):
                                         no agent list, corpid + corp_name, ``state``
service/get_permanent_code       POST    v1 (doc 90603): the same code rules, full shape
                                         with the agent, is_customized_app true (§3.2)
service/v2/get_auth_info         POST    ``auth_corpid`` + ``permanent_code`` → 40084
gettoken                         GET     corpsecret must be a permanent code issued for
                                         corpid → 40013 / 40001 (§5.4)
auth/getuserinfo                 GET     code single use, 5 min → 40029 (docs 96442)
auth/getuserdetail               POST    user_ticket from getuserinfo, 1800 s
agent/get                        GET     ``agentid`` of the corp's app → 40056; carries
                                         customized_publish_status (doc 96448), 2 unless
                                         chosen (a corp not online: 0 or 1)
service/get_provider_token       POST    ``corpid`` + ``provider_secret``; a wrong secret
                                         → 40001 when the fake was given one; repeats
                                         inside the lifetime return the same token
service/get_customized_auth_url  POST    provider token; state a-zA-Z0-9 ≤ 32 and 1-9
                                         template ids, else 47001; 864000 s link
get_jsapi_ticket                 GET     corp token; 400 fetches/hour per corp → 45009
ticket/get?type=agent_config     GET     corp token; 100 fetches/hour per app → 45009;
                                         another ``type`` → 40005
batch/userid_to_openuserid       POST    ≤ 1,000 ids (else 40058); ``invalid…`` ids are
                                         out of range → invalid_userid_list (``ids``)
externalcontact/                 POST    ≤ 1,000 ids; ids not ``wm…``/``wo…`` are left
get_new_external_userid                  out of ``items`` (``ids``)
==============================  ======  =================================================

Tokens and tickets expire after ``token_ttl``: 42009 / 42001 for an expired suite / app
token, 40082 / 40014 for one never issued; 40082 / 42001 for a provider token (WeCom
documents no code for an expired provider_access_token: UNCONFIRMED). Error replies
carry errmsg the way WeCom writes it
(``invalid auth_code, hint: […], more info at …?e=40078``) so clients meet the real
shape, query string included. The real code for a reused AuthCode was checked: WeCom
answers ``{"errcode":40078,"errmsg":" invalid auth_code, hint: …"}`` (developers.weixin.qq.com
community threads on get_permanent_code). WeCom's code for a bad user_ticket is not
documented; the fake answers 40029, the code of the OAuth code the ticket came from.

Control endpoints for tests and demos (never part of WeCom's API):

* ``POST /fake/faults`` ``{"api", "errcode", "errmsg", "count"}`` or ``{"api",
  "http_status", "count"}``: the next ``count`` calls of that API fail that way
  (errcode -1 is WeCom's 系统繁忙). ``DELETE /fake/faults`` clears them.
* ``POST /fake/slow`` ``{"api", "seconds", "stage"}``: every call of that API waits
  ``seconds`` (0 removes it) ``before`` the fake acts or ``after`` (only the answer
  waits); ``qywx fake-wecom --slow API=SECONDS`` sets one at start.
* ``POST /fake/holds`` ``{"api", "stage", "count"}``: the next ``count`` calls of that
  API stop at that stage until ``POST /fake/release`` ``{"api", "drop"}`` lets them go
  on (or drops them: HTTP 503; dropped ``after``, the work stays done). ``/fake/state``
  lists calls held now under ``held``: a test kills a receiver exactly while its
  get_permanent_code is in flight, before or after WeCom spent the AuthCode
  (:mod:`._slow`). ``DELETE /fake/holds`` removes every delay and hold.
* ``GET /fake/state``: issued permanent codes (masked), live token counts, calls per API,
  held calls, holds and delays.
* ``POST /fake/codes`` ``{"code", "user_id" | "open_id", "corp_id"}``: an OAuth code.
* ``POST /fake/licence_orders`` ``{"corp_id", "count", "type", "days"}``: a paid
  interface-licence order; answers its ``order_id`` and ``active_codes``.
* ``POST /fake/auth_codes`` ``{"auth_code", "corp_id", "corp_name", "state",
  "customized_publish_status"}``: an AuthCode with a chosen corp, state and app status
  (10-minute lifetime, §3.2).
* ``POST /fake/scan`` ``{"state", "corp_id", "corp_name", "customized_publish_status"}``:
  a corp admin scans the authorization link with that state; the answer is what the
  create_auth callback then carries (``suite_id``, ``auth_code``, ``state``, ``corp_id``).
* ``POST /fake/agents`` ``{"corp_id", "customized_publish_status"}``: the provider
  publishes (2) or un-publishes the app in that corp.
* ``POST /fake/jsapi/verify`` ``{"url", "nonceStr", "timestamp", "signature", "appId"}``
  (or ``"corpid", "agentid"`` for wx.agentConfig): what the front end's config check
  decides — ``{"errMsg": "config:ok"}`` or ``"config:invalid signature"`` with a
  ``reason`` (wrong string, or a ticket that has expired).

Unregistered codes are accepted too, so a demo needs no set-up: an AuthCode shaped
``AUTHCODE-<corpid>-…`` authorizes that corp (any other derives a stable ``ww…`` id),
and an OAuth code ``CODE-<userid>`` belongs to that member.

:meth:`FakeWeCom.push_suite_ticket` plays WeCom's ten-minute suite_ticket push (§3.1):
a real signed and encrypted command callback, receiveid = suite id (§2.2).
:meth:`FakeWeCom.push_system_event` sends a licence event to the provider's system event
URL (the provider's key, receiveid the provider corp id) and
:meth:`FakeWeCom.push_data_event` a data callback to an app's URL (receiveid the corp).

One lock guards all state, so the app is safe under a threaded WSGI server; the lock
is never held while pushing, since the receiver may call straight back.

Layout, mirroring :mod:`qywx_cli.core.wecom` family by family: ``_routing`` (requests,
responses, errmsg layout), ``_state`` (what the fake remembers, token rules),
``_control`` (the ``/fake/…`` endpoints), ``push`` (command callbacks to a receiver),
and one module per API family (``suite``, ``corp``) exporting its ``ROUTES``.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httpx

from qywx_cli.core.errors import QywxError, UsageError, WeComAPIError
from qywx_cli.core.fakewecom import _control, corp, ids, jsapi, licences, provider, suite
from qywx_cli.core.fakewecom._routing import (
    Handler,
    Request,
    Response,
    error_page,
    json_response,
    read_request,
)
from qywx_cli.core.fakewecom._state import State
from qywx_cli.core.fakewecom.push import (
    ProviderKey,
    SuiteInstanceLike,
    post_command,
    push_client,
    suite_ticket_xml,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["APIS", "FakeWeCom", "ProviderKey", "SuiteInstanceLike", "suite_ticket_xml"]

_ROUTES: dict[str, tuple[str, Handler]] = {
    **suite.ROUTES,
    **corp.ROUTES,
    **ids.ROUTES,
    **provider.ROUTES,
    **jsapi.ROUTES,
    **licences.ROUTES,
}

APIS: dict[str, str] = {path: method for path, (method, _) in _ROUTES.items()}
"""WeCom paths served (relative to ``/cgi-bin/``) and the method each expects."""


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
        provider_secret: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._state = State(
            now=now, ttl=token_ttl, random=random, strict=strict, provider_secret=provider_secret
        )

    @property
    def strict(self) -> bool:
        return self._state.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._state.strict = value

    def __repr__(self) -> str:
        return f"FakeWeCom(strict={self.strict}, token_ttl={self._state.ttl})"

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

    def _dispatch(self, environ: WSGIEnvironment) -> Response:
        path = str(environ.get("PATH_INFO") or "/")
        # Serve under any prefix ending in /cgi-bin/, or at the root.
        route = path.rsplit("/cgi-bin/", 1)[-1].strip("/")
        method = str(environ.get("REQUEST_METHOD") or "GET").upper()
        allowed = frozenset({APIS[route]}) if route in APIS else _control.CONTROL.get(route)
        if allowed is None:
            return json_response({"errcode": 404, "errmsg": f"no such api: {route}"}, 404)
        if method not in allowed:
            return Response(
                405,
                json_response({"errcode": 405, "errmsg": f"{method} not allowed"}).body,
                allow=", ".join(sorted(allowed)),
            )
        request = read_request(environ, route, method)
        if isinstance(request, Response):
            return request
        if route not in APIS:
            with self._lock:
                return _control.serve_control(self._state, request, APIS)
        # Delays and holds wait outside the lock: a held call blocks only itself.
        gates = self._state.gates
        with self._lock:  # counted as it arrives, held or dropped too
            self._state.calls[route] += 1
        if not gates.passage(route, "before"):
            return _control.dropped(route)
        with self._lock:
            response = self._serve_api(request)
        if not gates.passage(route, "after"):
            return _control.dropped(route)
        return response

    def _serve_api(self, request: Request) -> Response:
        state = self._state
        fault = _control.take_fault(state, request.path)
        if fault is not None:
            if fault.http_status is not None:
                return error_page(fault.http_status)
            return json_response({"errcode": fault.errcode, "errmsg": fault.errmsg})
        try:
            return json_response(_ROUTES[request.path][1](state, request))
        except WeComAPIError as refusal:
            return json_response(
                {"errcode": refusal.errcode, "errmsg": state.errmsg(refusal.errcode)}
            )

    # -- Python API of the controls (the endpoints call the same functions) ---------------
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
            return _control.inject_fault(
                self._state,
                APIS,
                api,
                errcode=errcode,
                errmsg=errmsg,
                http_status=http_status,
                count=count,
            )

    def set_delay(self, api: str, seconds: float, *, stage: str = "before") -> str:
        """Every call of ``api`` waits ``seconds`` at ``stage`` (0 removes the delay)."""
        path = _control.canonical_api(api, APIS)
        self._state.gates.set_delay(path, seconds, stage)
        return path

    def hold(self, api: str, *, stage: str = "before", count: int = 1) -> str:
        """The next ``count`` calls of ``api`` wait at ``stage`` until :meth:`release`."""
        path = _control.canonical_api(api, APIS)
        self._state.gates.hold(path, stage, count)
        return path

    def release(self, api: str | None = None, *, drop: bool = False) -> int:
        """Let held calls of ``api`` (all if None) go on, or drop them (HTTP 503)."""
        path = _control.canonical_api(api, APIS) if api else None
        return self._state.gates.release(path, drop=drop)

    def close(self) -> None:
        """Before the server stops: held calls are dropped, delays cut short."""
        self._state.gates.close()

    def wait_held(self, api: str, count: int = 1, timeout: float = 30.0) -> bool:
        """Until ``count`` calls of ``api`` are held right now (False after ``timeout``)."""
        path = _control.canonical_api(api, APIS)
        return self._state.gates.wait_held(path, count, timeout)

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
            _control.register_code(
                self._state, code, user_id=user_id, open_id=open_id, corp_id=corp_id
            )

    def register_auth_code(
        self,
        auth_code: str,
        *,
        corp_id: str | None = None,
        corp_name: str | None = None,
        state: str | None = None,
        publish_status: int | None = None,
    ) -> None:
        """An AuthCode as a create_auth / reset_permanent_code callback would carry it.

        ``publish_status`` is the app's customized_publish_status once installed
        (default 2, 已上线; 0 or 1 plays a corp whose app is not online yet).
        """
        with self._lock:
            _control.register_auth_code(
                self._state,
                auth_code,
                corp_id=corp_id,
                corp_name=corp_name,
                state=state,
                publish_status=publish_status,
            )

    def scan(
        self,
        state: str,
        *,
        corp_id: str | None = None,
        corp_name: str | None = None,
        publish_status: int | None = None,
    ) -> dict[str, Any]:
        """A corp admin scans the authorization link with ``state`` (see ``POST /fake/scan``)."""
        with self._lock:
            return _control.scan(
                self._state,
                state,
                corp_id=corp_id,
                corp_name=corp_name,
                publish_status=publish_status,
            )

    def set_publish_status(self, corp_id: str, status: int) -> None:
        """Publish (2) or un-publish the app in ``corp_id`` (agent/get follows)."""
        with self._lock:
            _control.set_publish_status(self._state, corp_id, status)

    def register_suite_ticket(self, suite_id: str, ticket: str) -> None:
        """Make ``ticket`` valid for ``suite_id`` even in strict mode."""
        with self._lock:
            self._state.tickets.setdefault(suite_id, set()).add(ticket)

    # -- suite_ticket pushes ---------------------------------------------------------------
    def push_suite_ticket(
        self, url: str, instance: SuiteInstanceLike, *, client: httpx.Client | None = None
    ) -> httpx.Response:
        """POST a fresh suite_ticket command callback to ``url``, as WeCom does (§3.1).

        The ticket becomes valid *before* the POST: a receiver may exchange it for a
        suite_access_token while the push is still in flight.
        """
        ticket = self._state.random(32)
        timestamp = int(self._state.now())
        self.register_suite_ticket(instance.suite_id, ticket)
        return post_command(
            url,
            instance,
            suite_ticket_xml(instance.suite_id, ticket, timestamp),
            timestamp=timestamp,
            nonce=str(int(self._state.random(4), 16)),
            what="suite_ticket",
            client=client,
        )

    def create_licence_order(
        self, corp_id: str, *, count: int = 1, type: int = 1, days: int = 365
    ) -> tuple[str, list[str]]:
        """A paid interface-licence order of ``count`` unbound codes: (order id, codes)."""
        from qywx_cli.core.fakewecom.licences import create_order

        with self._lock:
            return create_order(self._state, corp_id, count=count, type=type, days=days)

    # -- system events and data callbacks ---------------------------------------------------
    def push_system_event(
        self,
        url: str,
        key: ProviderKey,
        info_type: str,
        corp_id: str,
        *,
        overrides: Mapping[str, str] | None = None,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        """POST a licence system event (license_pay_success, license_refund, auto_activate)
        to the provider's 系统事件接收URL, signed with the provider's key (doc 97196)."""
        from qywx_cli.core.events import build_provider_event_xml

        timestamp = int(self._state.now())
        xml = build_provider_event_xml(
            info_type,
            provider_corp_id=key.suite_id,
            corp_id=corp_id,
            overrides=overrides or {},
            now=lambda: timestamp,
        )
        return post_command(
            url,
            key,
            xml,
            timestamp=timestamp,
            nonce=str(int(self._state.random(4), 16)),
            what=info_type,
            client=client,
        )

    def push_data_event(
        self,
        url: str,
        instance: SuiteInstanceLike,
        corp_id: str,
        xml: str,
        *,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        """POST a data callback (enter_agent, text, unlicensed_notify …) to an app's URL:
        the app's key, receiveid and envelope name the authorized corp (§2.2)."""
        return post_command(
            url,
            instance,
            xml,
            timestamp=int(self._state.now()),
            nonce=str(int(self._state.random(4), 16)),
            what="data callback",
            client=client,
            receive_id=corp_id,
        )

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
        http = client or push_client()
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
