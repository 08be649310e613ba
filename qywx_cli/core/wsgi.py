"""The notify endpoint as a WSGI app: HTTP in, :meth:`CallbackService.notify` out.

Everything here is about not trusting the request before the service sees it: the
body is capped (413 before reading more than the cap), only GET/POST reach notify,
the instance name in ``/notify/<Instance>`` must be a plain element name (no path
tricks), the query must not repeat a parameter, and any failure becomes a short
4xx text answer (5xx only for qywx's own trouble) with no traceback and no secret.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from qywx_cli.core.service import CallbackService, NotifyResponse, NotifySteps, drive

__all__ = ["MAX_BODY_BYTES", "NotifyApp"]

MAX_BODY_BYTES = 1024 * 1024
"""WeCom's callbacks are a few KiB; 1 MiB leaves room and stops memory abuse."""

_INSTANCE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_QUERY_KEYS = ("msg_signature", "timestamp", "nonce", "echostr")

access_log = logging.getLogger("qywx.access")

StartResponse = Callable[..., Any]


def _plain(status: int, text: str, outcome: str, **headers: str) -> NotifyResponse:
    return NotifyResponse(
        status, text.encode("utf-8"), outcome, extra_headers=tuple(headers.items())
    )


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """``parse_qsl(query, keep_blank_values=True)``, split by hand when nothing in it is
    escaped: WeCom's POST query (hex signature, digits, a plain nonce) never is, and
    parse_qsl unquotes each name and value one call at a time."""
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    pairs = []
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((name, value))
    return pairs


class _TooLarge(Exception):
    pass


class _BadLength(Exception):
    pass


def _read_body(environ: dict[str, Any], limit: int) -> bytes:
    """Read at most ``limit`` bytes; more (declared or sent) raises _TooLarge."""
    declared = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if declared.strip():
        if not declared.strip().isdigit():
            raise _BadLength
        length = int(declared)
        if length > limit:
            raise _TooLarge
        return bytes(stream.read(length)) if length else b""
    data = bytes(stream.read(limit + 1))  # chunked or unknown length
    if len(data) > limit:
        raise _TooLarge
    return data


class NotifyApp:
    """WSGI callable: ``/notify``, ``/notify/<Instance>``, ``/healthz``."""

    def __init__(
        self,
        service: CallbackService,
        *,
        max_body: int = MAX_BODY_BYTES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.service = service
        self.max_body = max_body
        self.clock = clock

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return self.respond(environ)(environ, start_response)

    def respond(self, environ: dict[str, Any]) -> NotifyResponse:
        """Route one request by its path and answer it (logged, never raising)."""
        return drive(self.steps(environ), self.service.store.record_callback)

    def steps(self, environ: dict[str, Any]) -> NotifySteps:
        """:meth:`respond` as steps (:meth:`CallbackService.notify_steps`): the records it
        needs are yielded for the caller to write; never raises."""
        path = environ.get("PATH_INFO") or "/"
        route = (
            "healthz"
            if path == "/healthz"
            else "notify"
            if path == "/notify" or path.startswith("/notify/")
            else "not-found"
        )
        return self._answer(environ, route, self._dispatch(environ))

    def respond_notify(self, environ: dict[str, Any], instance: str | None) -> NotifyResponse:
        """Answer a notify request whose route a web framework already matched.

        ``instance`` is the ``<Instance>`` path segment (None for a bare ``/notify``);
        ``environ`` needs ``REQUEST_METHOD``, ``QUERY_STRING``, ``CONTENT_LENGTH`` and a
        readable ``wsgi.input``. Every check of the ``/notify`` route applies, so an
        embedded endpoint refuses exactly what ``qywx serve`` refuses.
        """
        steps = self._answer(environ, "notify", self._notify(environ, instance))
        return drive(steps, self.service.store.record_callback)

    def _answer(self, environ: dict[str, Any], route: str, handler: NotifySteps) -> NotifySteps:
        started = self.clock()
        try:
            response = yield from handler
        except Exception:  # never a traceback or a secret to the client
            logging.getLogger("qywx.wsgi").exception("unhandled error")
            response = _plain(500, "internal error", "error")
        seconds = self.clock() - started
        self._log(environ, route, response, seconds)
        self.service.observer.request(route, response, seconds)
        return response

    def _dispatch(self, environ: dict[str, Any]) -> NotifySteps:
        path = environ.get("PATH_INFO") or "/"
        method = (environ.get("REQUEST_METHOD") or "GET").upper()
        if path == "/healthz":
            if method not in ("GET", "HEAD"):
                return _plain(405, "method not allowed", "rejected: method", Allow="GET, HEAD")
            health = self.service.healthcheck()
            return NotifyResponse(
                200 if health.get("ok") else 503,
                json.dumps(health).encode(),
                "health",
                content_type="application/json",
            )
        instance: str | None
        if path in ("/notify", "/notify/"):
            instance = None
        elif path.startswith("/notify/"):
            instance = path[len("/notify/") :].rstrip("/")
        else:
            return _plain(404, "not found", "rejected: not-found")
        return (yield from self._notify(environ, instance))

    def _notify(self, environ: dict[str, Any], instance: str | None) -> NotifySteps:
        method = (environ.get("REQUEST_METHOD") or "GET").upper()
        if instance is not None and not _INSTANCE_RE.fullmatch(instance):
            return _plain(404, "no such instance", "rejected: unknown-instance")
        if method not in ("GET", "POST"):
            return _plain(405, "method not allowed", "rejected: method", Allow="GET, POST")
        params: dict[str, str] = {}
        for key, value in _query_pairs(environ.get("QUERY_STRING", "")):
            if key in params and key in _QUERY_KEYS:
                return _plain(400, f"query parameter {key} given twice", "rejected: bad-request")
            params.setdefault(key, value)
        if method == "GET":
            if "echostr" not in params:
                return _plain(400, "missing query parameter: echostr", "rejected: bad-request")
            body = None
        else:
            try:
                body = _read_body(environ, self.max_body)
            except _BadLength:
                return _plain(400, "Content-Length is not a number", "rejected: bad-request")
            except _TooLarge:
                return _plain(
                    413,
                    f"request body larger than {self.max_body} bytes",
                    "rejected: too-large",
                    Connection="close",
                )
            if not body:
                return _plain(400, "empty request body", "rejected: bad-request")
        return (
            yield from self.service.notify_steps(
                msg_signature=params.get("msg_signature"),
                timestamp=params.get("timestamp"),
                nonce=params.get("nonce"),
                echostr=params.get("echostr") if method == "GET" else None,
                body=body,
                instance=instance,
                method=method,
            )
        )

    @staticmethod
    def _log(environ: dict[str, Any], route: str, response: NotifyResponse, seconds: float) -> None:
        """One line per request: no query string (it holds the signature and echostr).

        Accepted callbacks are logged at DEBUG: each one is already a row of the callback
        log (``qywx log list``), and at INFO the line cost as much CPU as decrypting and
        parsing the callback. The same facts ride along as fields, for
        ``--log-format json`` (:mod:`.logfmt`).
        """
        level = logging.DEBUG if response.outcome == "accepted" else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        remote = environ.get("REMOTE_ADDR", "-")
        method = environ.get("REQUEST_METHOD", "-")
        path = (environ.get("PATH_INFO") or "/")[:200]
        latency_ms = round(seconds * 1000, 1)
        access_log.log(
            level,
            '%s "%s %s" %d %d %.1fms instance=%s record=%s outcome=%s',
            remote,
            method,
            path,
            response.status,
            len(response.body),
            latency_ms,
            response.instance or "-",
            response.record_id or "-",
            response.outcome,
            extra={
                "fields": {
                    "route": route,
                    "method": method,
                    "path": path,
                    "status": response.status,
                    "outcome": response.outcome,
                    "record_id": response.record_id,
                    "instance": response.instance,
                    "kind": response.kind,
                    "event": response.event,
                    "latency_ms": latency_ms,
                    "bytes": len(response.body),
                    "remote": remote,
                }
            },
        )
