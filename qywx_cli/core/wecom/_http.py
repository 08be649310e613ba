"""One HTTP call path for every WeCom API: base URL, retries, parsing, error scrubbing.

Every token, secret, ticket and code travels in a query string or JSON body; none
of them may reach an exception message or a log line. Errors name the API path only,
WeCom's errmsg is scrubbed of anything we sent, and httpx's own request log line
(logger ``httpx``, INFO) has its query string removed.

Retries (wecom-protocol.md §4.3): ``retries`` extra attempts, ``backoff * 2**n``
seconds apart, only when WeCom could not be reached (connect errors, timeouts) or
answered HTTP 5xx. A JSON errcode is an answer and is never retried here: repeating
get_permanent_code with a used auth code only turns the real error into 40078. Calls
that spend a one-time code retry only failures that prove nothing was sent.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from enum import IntEnum
from typing import Any

import httpx

from qywx_cli.core.errors import UsageError, WeComAPIError, WeComTransportError
from qywx_cli.core.masking import mask
from qywx_cli.core.observe import NOOP, Observer
from qywx_cli.core.tls import client_ssl_context
from qywx_cli.core.urls import split_url

DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"


class ErrCode(IntEnum):
    """The WeCom global error codes qywx acts on (a name per number, for readers and tests)."""

    SYSTEM_BUSY = -1
    INVALID_CREDENTIAL = 40001
    INVALID_CORPID = 40013
    INVALID_ACCESS_TOKEN = 40014
    INVALID_CODE = 40029
    INVALID_AUTH_CODE = 40078
    INVALID_SUITE_OR_PROVIDER_TOKEN = 40082
    INVALID_SUITE_ID = 40083
    INVALID_PERMANENT_CODE = 40084
    INVALID_SUITE_TICKET = 40085
    ACCESS_TOKEN_EXPIRED = 42001
    SUITE_TOKEN_EXPIRED = 42009
    JSAPI_TICKET_UNAVAILABLE = 42012
    DATA_FORMAT_ERROR = 47001


TOKEN_INVALID_ERRCODES = frozenset(
    {
        ErrCode.INVALID_ACCESS_TOKEN,
        ErrCode.INVALID_SUITE_OR_PROVIDER_TOKEN,
        ErrCode.ACCESS_TOKEN_EXPIRED,
        ErrCode.SUITE_TOKEN_EXPIRED,
    }
)
"""Invalid/expired access_token (40014, 42001) and suite or provider token (40082, 42009),
§4.3: a cached token refused with one of these is dropped and the call repeated once.
(WeCom documents no separate "provider_access_token expired" code; 40082's errmsg names
both suite and provider tokens.)"""

DEFAULT_TOKEN_TTL = 7200
"""``expires_in`` WeCom returns "正常情况下" (§4.3); used only if a reply omits it."""
MAX_TOKEN_TTL = 30 * 86400
"""The longest a token or ticket is cached, whatever ``expires_in`` says: WeCom's last
hours, so a larger figure is a broken reply (or a stand-in's), and one past the range
of a timestamp would fail every later read of the cache. A token refused earlier is
dropped and fetched again anyway (40014, 42001 …)."""


# -- configuration -------------------------------------------------------------------
def validated_base(value: str, source: str) -> str:
    """An http(s) URL without query or fragment (tokens get appended as a query)."""
    parts = split_url(value.strip(), check_port=True)
    if parts is None:
        raise UsageError(f"{source} is not a well-formed URL")
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{source} must be an http:// or https:// URL such as {DEFAULT_API_BASE}")
    if not parts.hostname:
        raise UsageError(f"{source} has no host name")
    if parts.query or parts.fragment:
        raise UsageError(f"{source} must not carry a query string or fragment")
    return value.strip().rstrip("/")


def api_base_from_env(env: Mapping[str, str] = os.environ) -> str:
    """``QYWX_API_BASE`` (e.g. a ``qywx fake-wecom`` server) or WeCom's real base URL."""
    value = env.get("QYWX_API_BASE", "").strip()
    return validated_base(value, "QYWX_API_BASE") if value else DEFAULT_API_BASE


class _RedactQuery(logging.Filter):
    """Strip query strings from httpx's "HTTP Request: GET <url>" INFO records.

    WeCom wants tokens and the corp secret in the query string, and httpx logs the
    full URL of every request; this keeps them out of any log an application keeps.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.copy_with(query=None) if isinstance(arg, httpx.URL) and arg.query else arg
                for arg in record.args
            )
        return True


def install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactQuery) for f in logger.filters):
        logger.addFilter(_RedactQuery())


_QUERY_RE = re.compile(r"\?\S*")

PUBLIC_FIELDS = frozenset(
    {"suite_id", "corpid", "auth_corpid", "agentid", "type", "templateid_list", "state"}
)
"""Request fields that are identifiers; every other value we send is treated as secret."""

EXCHANGE_READ_TIMEOUT = 60.0
"""How long an AuthCode exchange waits for WeCom's answer (the other calls: the client's
``timeout``, 5 s). Giving up early cannot save anything: WeCom spends the single-use
code when the request arrives, so an answer we stop waiting for is a permanent code
lost (the re-run meets 40078). The exchange runs on a worker after the reply to WeCom,
whose claim is renewed while it waits, so waiting costs no callback its 1-second
budget; the 10-minute AuthCode leaves room for it."""

_NOT_SENT: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
"""Failures that prove the request never reached WeCom."""


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Mask every secret we sent and any query string from text WeCom or httpx wrote."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, mask(secret))
    return _QUERY_RE.sub("?…", text).strip()


# -- small JSON readers: WeCom's replies are loosely typed -------------------------
def dict_at(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def str_at(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) != "":
            return str(value)
    return None


def int_at(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def ints(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, int) and not isinstance(v, bool))


def strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def required(data: Mapping[str, Any], api: str, *path: str) -> str:
    """A field the API always returns on success; its absence is a malformed reply."""
    node: Mapping[str, Any] = data
    for key in path[:-1]:
        node = dict_at(node, key)
    value = str_at(node, path[-1])
    if value is None:
        raise WeComTransportError(f"{api}: malformed reply, no {'.'.join(path)}")
    return value


def expires_in(data: Mapping[str, Any]) -> int:
    value = int_at(data, "expires_in")
    return min(value, MAX_TOKEN_TTL) if value and value > 0 else DEFAULT_TOKEN_TTL


# -- the call ------------------------------------------------------------------------
class Http:
    """The httpx client every family shares, and the one ``call`` they all go through.

    ``apis`` is the registry of every path the client may call and its method (each
    family module declares its own ``APIS``): a call outside it is a programming
    error, which keeps the registry, and the fake's routes checked against it, true.
    """

    def __init__(
        self,
        *,
        base_url: str,
        apis: Mapping[str, str],
        transport: httpx.BaseTransport | None,
        timeout: float,
        retries: int,
        backoff: float,
        sleep: Callable[[float], None],
        observer: Observer = NOOP,
    ) -> None:
        self.base_url = base_url
        #: told the errcode of every call and of every token fetched (metrics)
        self.observer = observer
        self._apis = apis
        self._retries = max(0, retries)
        self._backoff = backoff
        self._sleep = sleep
        install_log_redaction()
        self._client = httpx.Client(
            base_url=base_url + "/",
            transport=transport,
            timeout=timeout,
            headers={"Accept": "application/json"},
            verify=client_ssl_context(),
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        single_use: bool = False,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """:meth:`_call`, its result (errcode, or "transport") told to the observer.

        ``read_timeout`` replaces the client's for waiting on this one answer (connect
        and write keep theirs): see :data:`EXCHANGE_READ_TIMEOUT`.
        """
        try:
            data = self._call(
                method,
                api,
                params=params,
                body=body,
                single_use=single_use,
                read_timeout=read_timeout,
            )
        except WeComAPIError as exc:
            self.observer.api_call(api, str(exc.errcode))
            raise
        except WeComTransportError:
            self.observer.api_call(api, "transport")
            raise
        self.observer.api_call(api, "0")
        return data

    def _call(
        self,
        method: str,
        api: str,
        *,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
        single_use: bool,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One API call: retry unreachable/5xx, then parse JSON and raise on errcode.

        ``single_use`` marks calls that consume a one-time code (AuthCode, OAuth code):
        once the request may have reached WeCom (a read timeout, a 5xx) a repeat would
        only fail with 40078/40029 and hide the real error, so those calls are retried
        only when the connection was never made.
        """
        if self._apis.get(api) != method:
            raise AssertionError(f"{method} {api} is not in the client's API registry")
        sent = [
            str(value)
            for name, value in [*(params or {}).items(), *(body or {}).items()]
            if name not in PUBLIC_FIELDS
        ]
        retryable = _NOT_SENT if single_use else (httpx.TransportError,)
        timeout = self._client.timeout
        if read_timeout is not None:
            timeout = httpx.Timeout(timeout.connect, read=read_timeout)
        attempt = 0
        while True:
            try:
                response = self._client.request(
                    method, api, params=params, json=body, timeout=timeout
                )
            except httpx.HTTPError as exc:
                failure = f"{type(exc).__name__}: {scrub(str(exc), sent)}".rstrip(": ")
                if not isinstance(exc, retryable):
                    raise WeComTransportError(f"{api}: request failed ({failure})") from None
            else:
                if response.status_code < 500:
                    break
                failure = f"HTTP {response.status_code}"
                if single_use:
                    raise WeComTransportError(f"{api}: WeCom answered {failure}")
            if attempt >= self._retries:
                raise WeComTransportError(
                    f"{api}: WeCom unreachable after {attempt + 1} attempt(s) ({failure})"
                )
            self._sleep(self._backoff * (2**attempt))
            attempt += 1
        return parse(response, api, sent)


def parse(response: httpx.Response, api: str, sent: Iterable[str]) -> dict[str, Any]:
    """The reply as a dict; a non-zero errcode becomes WeComAPIError with a scrubbed errmsg."""
    try:
        data = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both
        raise WeComTransportError(f"{api}: non-JSON reply (HTTP {response.status_code})") from None
    except RecursionError:  # a hostile or broken peer nesting arrays 100k deep
        raise WeComTransportError(f"{api}: reply nested too deeply") from None
    if not isinstance(data, dict):
        raise WeComTransportError(f"{api}: reply is not a JSON object")
    errcode = int_at(data, "errcode")
    if "errcode" in data and errcode is None:
        raise WeComTransportError(f"{api}: malformed reply, errcode is not a number")
    if errcode:
        errmsg = scrub(str(data.get("errmsg") or ""), sent)
        raise WeComAPIError(errcode, errmsg, api=api)
    return data
