"""Requests, responses and WeCom's error-reply layout, shared by every fake family."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from qywx_cli.core.errors import WeComAPIError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from qywx_cli.core.fakewecom._state import State

MAX_BODY = 1024 * 1024

ERRMSG = {
    -1: "system busy",
    40001: "invalid credential",
    40005: "invalid type",
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
    40056: "invalid agentid",
    41008: "missing code",
    41011: "missing agentid",
    41025: "permanent code missing",
    42001: "access_token expired",
    42009: "suite_access_token expired",
    40058: "invalid parameter",
    45009: "reach max api daily quota limit",
    45033: "api concurrent out of limit",
    47001: "data format error",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        """The JSON body; WeCom answers 47001 to a body it cannot parse."""
        try:
            data = json.loads(self.body.decode("utf-8") or "{}")
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise WeComAPIError(47001, ERRMSG[47001]) from None
        if not isinstance(data, dict):
            raise WeComAPIError(47001, ERRMSG[47001])
        return data


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    allow: str | None = None


Handler = Callable[["State", Request], dict[str, Any]]
"""A WeCom API handler: runs under the fake's lock, raises WeComAPIError to refuse."""

Routes = dict[str, tuple[str, Handler]]
"""A family's routes: path (relative to ``/cgi-bin/``) → (method, handler)."""


def json_response(data: dict[str, Any], status: int = 200) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def error_page(status: int) -> Response:
    """What WeCom's front end serves for an HTTP error: an HTML page, not JSON."""
    phrase = HTTPStatus(status).phrase
    return Response(
        status, f"<html><body>{status} {phrase}</body></html>".encode(), content_type="text/html"
    )


def read_request(environ: WSGIEnvironment, route: str, method: str) -> Request | Response:
    """The request, or a 413 if its body is over MAX_BODY."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        return json_response({"errcode": 413, "errmsg": "body too large"}, 413)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    query = dict(parse_qsl(str(environ.get("QUERY_STRING") or ""), keep_blank_values=True))
    return Request(method, route, query, body)


def text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""
