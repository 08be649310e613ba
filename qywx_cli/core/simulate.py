"""Play WeCom against a callback endpoint: build its requests, send them, judge the replies.

What WeCom sends (wecom-protocol.md §1, §2.2, §3):

* a **command callback** (指令回调) is a POST to the template's URL with
  ``msg_signature``, ``timestamp`` and ``nonce`` in the query and the envelope
  ``<xml><ToUserName>SuiteId</ToUserName><Encrypt>…</Encrypt><AgentID></AgentID></xml>``
  as the body; the plaintext's receiveid is the suite id (§2.2, docs 97172);
* a **data callback** (enter_agent, a text message, change_external_contact …) is the
  same POST to the app's own URL, but the envelope's ToUserName and the receiveid are
  the authorized corp and AgentID names the app (wecom-provider-apis.md §8);
* the **URL handshake** is a GET with the same three parameters plus ``echostr``, the
  encrypted random number; its receiveid is the provider's corp id (§2.2).

What WeCom accepts back (§1.4, §3.8): for a command callback HTTP 200 with the body
exactly ``success`` within 1000 ms; for the handshake HTTP 200 with the echostr
plaintext exactly (no quotes, BOM or newline) within a second. :func:`judge` applies
those rules and says which one a reply broke.

On top of single requests: :func:`run_load` drives many fresh requests through one
pooled connection set (a load generator for benchmarks), and :meth:`CallbackSimulator.tampered`
with :func:`run_tamper` builds the catalogue of broken requests a secure endpoint must
refuse. Time and randomness are injected so every request can be reproduced in tests.
"""

from __future__ import annotations

import base64
import itertools
import math
import secrets
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qywx_cli import __version__
from qywx_cli.core.capture import RequestKind
from qywx_cli.core.config import AuthInstance
from qywx_cli.core.crypto import (
    BLOCK_SIZE,
    Envelope,
    WXBizMsgCrypt,
    check_encoding_aes_key,
    sign,
)
from qywx_cli.core.errors import QywxError, UsageError
from qywx_cli.core.events import (
    EVENT_NAMES,
    PROVIDER_EVENT_NAMES,
    build_event_xml,
    build_provider_event_xml,
    parse_event,
)
from qywx_cli.core.tls import client_ssl_context
from qywx_cli.core.urls import split_url

if TYPE_CHECKING:
    from qywx_cli.core.store import Store

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "MAX_CONCURRENCY",
    "MAX_COUNT",
    "STALE_SECONDS",
    "TAMPER_CASES",
    "USER_AGENT",
    "CallbackSimulator",
    "EventSpec",
    "Exchange",
    "LoadSummary",
    "Reply",
    "SimulatedRequest",
    "TamperReport",
    "TamperResult",
    "Verdict",
    "check_load_bounds",
    "judge",
    "make_client",
    "parse_overrides",
    "run_load",
    "run_tamper",
    "send",
    "target_url",
]

USER_AGENT: Final = f"qywx/{__version__} (simulate-callback)"

DEFAULT_TIMEOUT: Final = 1.0
"""WeCom's reply deadline for command callbacks and the handshake, seconds (§3.8, §1.4)."""

DEFAULT_HTTP_TIMEOUT: Final = 10.0
"""How long the simulator waits for any reply, so a slow one is measured, not lost."""

MAX_COUNT: Final = 1_000_000
MAX_CONCURRENCY: Final = 256

STALE_SECONDS: Final = 3600
"""Age of the stale-timestamp tamper: far outside any sane replay window (qywx: 300 s)."""

REPLY_PREVIEW: Final = 200
"""Characters of a reply body kept in reports."""

_QUERY_KEYS: Final = frozenset({"msg_signature", "timestamp", "nonce", "echostr"})
_POST_HEADERS: Final = (
    ("Content-Type", "text/xml; charset=utf-8"),
    ("User-Agent", USER_AGENT),
)
_GET_HEADERS: Final = (("User-Agent", USER_AGENT),)
_SUCCESS: Final = b"success"

Verdict = Literal["ok", "wrong reply", "slow", "error"]


def target_url(url: str, option: str = "--url") -> str:
    """Check ``--url`` and drop WeCom's own parameters from it (a pasted captured URL).

    Other query parameters are kept: some endpoints route on them (``?corp=…``).
    """
    problem = f"{option} must be an http:// or https:// URL with a host, not {url!r}"
    parts = split_url(url.strip(), check_port=True)
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(problem)
    kept = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _QUERY_KEYS
    ]
    result = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", urlencode(kept), ""))
    try:
        httpx.URL(result)  # what urllib lets through but the HTTP client would refuse
    except (httpx.InvalidURL, ValueError):
        raise UsageError(problem) from None
    return result


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``--set Field=Value`` items; the value may itself contain ``=``."""
    overrides: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set takes Field=Value, not {item!r}")
        overrides[name.strip()] = value
    return overrides


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulatedRequest:
    """One request exactly as it goes on the wire, plus what it carries inside.

    ``plaintext`` is the event XML of a callback or the echostr plaintext of a handshake
    (which is also what the endpoint must answer, §1.4).
    """

    kind: RequestKind
    method: Literal["GET", "POST"]
    url: str
    headers: tuple[tuple[str, str], ...]
    body: str | None
    plaintext: str
    receive_id: str
    encrypt: str
    msg_signature: str
    timestamp: str
    nonce: str

    @property
    def content(self) -> bytes | None:
        return None if self.body is None else self.body.encode("utf-8")

    @property
    def expected_reply(self) -> bytes:
        return _SUCCESS if self.kind == "callback" else self.plaintext.encode("utf-8")

    def as_dict(self) -> dict[str, Any]:
        """The dry-run document: enough to replay the request with any HTTP client."""
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body,
            "plaintext": self.plaintext,
            "receive_id": self.receive_id,
        }


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What a simulated command callback says: built from ``info_type`` or taken from ``xml``.

    Each request built from a spec gets a fresh SuiteTicket / AuthCode (events builds
    them), so repeated sends are distinct deliveries, not redeliveries (§3.8 dedupe).
    ``system`` specs are the provider's system events (license_pay_success …), whose
    receiveid is the provider corp id and which name the corp in AuthCorpId.
    """

    receive_id: str
    info_type: str | None = "suite_ticket"
    corp_id: str | None = None
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    xml: str | None = None
    system: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        names = PROVIDER_EVENT_NAMES if self.system else EVENT_NAMES
        if self.xml is None and self.info_type not in names:
            what = "system event" if self.system else "event"
            raise UsageError(f"unknown {what} {self.info_type!r}; choose one of {', '.join(names)}")
        if self.system and self.xml is None and not self.corp_id:
            raise UsageError(f"a {self.info_type} event needs a corp id (AuthCorpId)")


class CallbackSimulator:
    """Builds WeCom's requests for one suite (token, EncodingAESKey, suite id) and one URL."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        encoding_aes_key: str,
        suite_id: str,
        now: Callable[[], float] = time.time,
        token_source: Callable[[int], str] = secrets.token_urlsafe,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        randbelow: Callable[[int], int] = secrets.randbelow,
    ) -> None:
        self.url = target_url(url)
        self.suite_id = suite_id
        self._token = token
        self._key = check_encoding_aes_key(encoding_aes_key)
        self._crypto = WXBizMsgCrypt(token, encoding_aes_key, random_bytes=random_bytes)
        self._now = now
        self._token_source = token_source
        self._random_bytes = random_bytes
        self._randbelow = randbelow

    def __repr__(self) -> str:  # never the token or key
        return f"CallbackSimulator(url={self.url!r}, suite_id={self.suite_id!r})"

    @classmethod
    def for_instance(cls, instance: AuthInstance, url: str, **kwargs: Any) -> CallbackSimulator:
        return cls(
            url,
            token=instance.token,
            encoding_aes_key=instance.encoding_aes_key,
            suite_id=instance.suite_id,
            **kwargs,
        )

    @classmethod
    def for_provider(
        cls, token: str, encoding_aes_key: str, provider_corp_id: str, url: str, **kwargs: Any
    ) -> CallbackSimulator:
        """The provider's 系统事件接收URL: its own key; the envelope names the provider corp."""
        return cls(
            url,
            token=token,
            encoding_aes_key=encoding_aes_key,
            suite_id=provider_corp_id,
            **kwargs,
        )

    # -- building blocks -------------------------------------------------------------
    def _nonce(self) -> str:
        # WeCom's nonces are decimal numbers (§1.7 vectors: "1372623149").
        return str(1_000_000_000 + self._randbelow(9_000_000_000))

    def plaintext(self, spec: EventSpec, at: float | None = None) -> str:
        """The event XML for ``spec``, stamped ``at`` (default now)."""
        if spec.xml is not None:
            return spec.xml
        assert spec.info_type is not None  # checked in EventSpec
        when = self._now() if at is None else at
        if spec.system:
            assert spec.corp_id is not None  # checked in EventSpec
            return build_provider_event_xml(
                spec.info_type,
                provider_corp_id=spec.receive_id,
                corp_id=spec.corp_id,
                overrides=spec.overrides,
                now=lambda: when,
                token=self._token_source,
            )
        return build_event_xml(
            spec.info_type,
            suite_id=self.suite_id,
            corp_id=spec.corp_id,
            overrides=spec.overrides,
            now=lambda: when,
            token=self._token_source,
        )

    def _assemble(
        self,
        kind: RequestKind,
        plaintext: str,
        receive_id: str,
        encrypt: str,
        timestamp: str,
        nonce: str,
        msg_signature: str | None = None,
        addressee: tuple[str, str] | None = None,
    ) -> SimulatedRequest:
        signature = msg_signature or sign(self._token, timestamp, nonce, encrypt)
        params = {"msg_signature": signature, "timestamp": timestamp, "nonce": nonce}
        if kind == "verify_url":
            params["echostr"] = encrypt
        # urlencode percent-encodes base64's '+', '/' and '=' (§1.4: servers URL-decode).
        url = f"{self.url}{'&' if '?' in self.url else '?'}{urlencode(params)}"
        get = kind == "verify_url"
        # §1.5: a command callback's envelope names the SuiteId and has an empty AgentID;
        # a data callback's names the corp and the app (wecom-provider-apis.md §8).
        to_user, agent_id = addressee or (self.suite_id, "")
        body = (
            None
            if get
            else Envelope(encrypt, signature, timestamp, nonce).request_xml(to_user, agent_id)
        )
        return SimulatedRequest(
            kind=kind,
            method="GET" if get else "POST",
            url=url,
            headers=_GET_HEADERS if get else _POST_HEADERS,
            body=body,
            plaintext=plaintext,
            receive_id=receive_id,
            encrypt=encrypt,
            msg_signature=signature,
            timestamp=timestamp,
            nonce=nonce,
        )

    # -- what WeCom sends --------------------------------------------------------------
    def callback(self, spec: EventSpec, at: float | None = None) -> SimulatedRequest:
        """A correctly encrypted and signed command callback, fresh nonce and timestamp."""
        when = self._now() if at is None else at
        plaintext = self.plaintext(spec, when)
        encrypt = self._crypto.encrypt(plaintext, spec.receive_id)
        return self._assemble(
            "callback",
            plaintext,
            spec.receive_id,
            encrypt,
            str(int(when)),
            self._nonce(),
            addressee=_data_addressee(plaintext),
        )

    def handshake(self, receive_id: str) -> SimulatedRequest:
        """The GET URL verification: echostr is an encrypted random number (§1.4, §1.7)."""
        plaintext = str(10**18 + self._randbelow(9 * 10**18))
        encrypt = self._crypto.encrypt(plaintext, receive_id)
        return self._assemble(
            "verify_url", plaintext, receive_id, encrypt, str(int(self._now())), self._nonce()
        )

    # -- what an attacker or a broken proxy sends ----------------------------------------
    def tampered(self, case: str, spec: EventSpec) -> tuple[SimulatedRequest, ...]:
        """The requests of one :data:`TAMPER_CASES` entry (two for ``replay``).

        Every case except ``bad-signature`` carries a *valid* signature over what it
        sends, so only the check the case is named after can catch it.
        """
        if case == "bad-signature":
            good = self.callback(spec)
            last = "0" if good.msg_signature[-1] != "0" else "1"
            return (
                self._assemble(
                    "callback",
                    good.plaintext,
                    good.receive_id,
                    good.encrypt,
                    good.timestamp,
                    good.nonce,
                    msg_signature=good.msg_signature[:-1] + last,
                ),
            )
        if case == "stale-timestamp":
            # A captured request replayed an hour later: plaintext and query both old.
            return (self.callback(spec, at=self._now() - STALE_SECONDS),)
        if case == "wrong-receiveid":
            stranger = "ww" + self._random_bytes(8).hex()
            return (self.callback(replace(spec, receive_id=stranger)),)
        if case == "bad-padding":
            return (self._bad_padding(spec),)
        if case == "truncated":
            good = self.callback(spec)
            cut = good.encrypt[: len(good.encrypt) // 2]
            if len(cut) % 4 == 0:  # never a well-formed base64 length
                cut = cut[:-1]
            return (
                self._assemble(
                    "callback", good.plaintext, good.receive_id, cut, good.timestamp, good.nonce
                ),
            )
        if case == "replay":
            good = self.callback(spec)
            return (good, good)
        raise UsageError(f"unknown tamper {case!r}; choose one of {', '.join(TAMPER_CASES)}, all")

    def _bad_padding(self, spec: EventSpec) -> SimulatedRequest:
        """PKCS#7 pad bytes that disagree with the pad length byte, then re-signed.

        A decoder that reads only the last byte (the official sample does, §1.1) strips
        the right amount and finds the right receiveid, so only a full padding check
        refuses it: such a decoder accepts corrupted plaintext without noticing.
        """
        when = self._now()
        message = self.plaintext(spec, when).encode("utf-8")
        trailer = spec.receive_id.encode("utf-8")
        if (16 + 4 + len(message) + len(trailer)) % BLOCK_SIZE == BLOCK_SIZE - 1:
            message += b"\n"  # a one-byte pad cannot disagree with itself
        plain = self._random_bytes(16) + struct.pack(">I", len(message)) + message + trailer
        pad = BLOCK_SIZE - len(plain) % BLOCK_SIZE
        plain += bytes(pad - 1) + bytes([pad])
        cipher = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).encryptor()
        encrypt = base64.b64encode(cipher.update(plain) + cipher.finalize()).decode("ascii")
        return self._assemble(
            "callback",
            message.decode("utf-8"),
            spec.receive_id,
            encrypt,
            str(int(when)),
            self._nonce(),
        )


TAMPER_CASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "bad-signature": "msg_signature does not match (one hex digit changed)",
        "stale-timestamp": f"valid request stamped {STALE_SECONDS} s ago (a captured replay)",
        "wrong-receiveid": "encrypted for a receiveid that is neither the suite nor a corp",
        "bad-padding": "PKCS#7 pad bytes disagree with the pad length; re-signed",
        "truncated": "Encrypt cut in half (not valid base64); re-signed",
        "replay": "a valid request, then the byte-identical request again",
    }
)
"""Each broken request a secure endpoint must refuse, with a one-line description."""


# -- judging ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    latency: float
    """Seconds from sending the request to having read the whole reply."""

    @property
    def preview(self) -> str:
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= REPLY_PREVIEW else text[:REPLY_PREVIEW] + "…"


def _data_addressee(plaintext: str) -> tuple[str, str] | None:
    """(ToUserName, AgentID) for the envelope of a data callback, None for a command one.

    Read from the plaintext itself, so ``--set AgentID=…`` and ``--xml`` files get the
    envelope WeCom would wrap them in; anything that is not a data callback keeps the
    command envelope.
    """
    try:
        event = parse_event(plaintext)
    except QywxError:
        return None
    if event.kind != "data" or not event.corp_id:
        return None
    return event.corp_id, event.fields.get("AgentID", "")


def _body_problem(body: bytes, expected: bytes, request: SimulatedRequest) -> str:
    """Why ``body`` is not what WeCom wants, phrased for the endpoint's developer."""
    shown = body.decode("utf-8", "replace")
    shown = repr(shown if len(shown) <= 60 else shown[:60] + "…")
    want = expected.decode("utf-8")
    if not body:
        return f"empty body; WeCom wants exactly {want!r}"
    if body.startswith(b"\xef\xbb\xbf"):
        return f"body starts with a UTF-8 BOM; WeCom wants exactly {want!r}"
    if body.rstrip(b"\r\n") == expected:
        return f"body {shown} ends with a newline; WeCom wants exactly {want!r}"
    if body.strip(b"\"'") == expected:
        return f"body {shown} is quoted; WeCom wants exactly {want!r} without quotes"
    if body.strip() == expected:
        return f"body {shown} has whitespace around it; WeCom wants exactly {want!r}"
    if body.lower() == expected:
        return f"body {shown} has the wrong case; WeCom wants exactly {want!r}"
    if request.kind == "verify_url" and body.decode("utf-8", "replace") == request.encrypt:
        return (
            "the endpoint echoed the encrypted echostr; it must decrypt it and answer the plaintext"
        )
    if request.kind == "callback":
        return f"body {shown} is not exactly 'success'; WeCom shows it to the admin as an error"
    return f"body {shown} is not the echostr plaintext {want!r}"


def route_hint(url: str, instance: str, reply: Reply | None) -> str | None:
    """Why a signature check failed when the URL names another instance's route.

    ``qywx serve`` checks a request to ``/notify/<Name>`` with Name's token only, so a
    callback signed for one instance and sent to another's route fails with -40001;
    the fix is the route, not the token.
    """
    if reply is None:
        return None
    parts = split_url(url)
    if parts is None:
        return None

    def at(path: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    head, found, routed = parts.path.rstrip("/").rpartition("/notify/")
    if not found:  # a path outside /notify/: send it to the root's
        head, routed = "", ""
    if reply.status == 404:
        return _not_found_hint(reply.body, routed, instance, at(f"{head}/notify/{instance}"))
    if reply.status != 403 or b"-40001" not in reply.body:
        return None
    if not routed or "/" in routed or routed == instance:
        return None
    return (
        f"the URL routes to instance {routed}, but the request is signed for {instance}: "
        f"send it to {at(f'{head}/notify/{instance}')} (or to {at(f'{head}/notify')}, "
        "which picks the instance by signature)"
    )


def _not_found_hint(body: bytes, routed: str, instance: str, right_url: str) -> str | None:
    """What a 404 from ``qywx serve`` means for a callback signed for ``instance``."""
    if b"not loaded" in body:
        return (
            f"the server found instance {instance} but did not load it (a secret's variable "
            "unset where it runs, or its JSON broken): its start-up log names the reason, "
            f"/healthz lists it under not_loaded, and `qywx validate` there shows it"
        )
    if routed and "/" not in routed and routed != instance:
        return (
            f"the URL routes to instance {routed}, which that server does not serve; the "
            f"request is signed for {instance}: send it to {right_url}"
        )
    if not routed:
        return f"qywx serve answers callbacks at /notify/<Instance>: send it to {right_url}"
    return None


def judge(
    request: SimulatedRequest, reply: Reply, *, timeout: float = DEFAULT_TIMEOUT
) -> tuple[bool, Verdict, str]:
    """Judge ``reply`` as WeCom would: status, then exact body, then the deadline."""
    if reply.status != 200:
        return (
            False,
            "wrong reply",
            f"HTTP {reply.status}; WeCom treats anything but 200 as failure",
        )
    if reply.body != request.expected_reply:
        return False, "wrong reply", _body_problem(reply.body, request.expected_reply, request)
    ms = reply.latency * 1000
    if reply.latency > timeout:
        return (
            False,
            "slow",
            f"right answer after {ms:.0f} ms; WeCom gives up after {timeout * 1000:.0f} ms",
        )
    what = "'success'" if request.kind == "callback" else "the echostr plaintext"
    return True, "ok", f"answered {what} in {ms:.1f} ms"


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request, what came back (``reply`` or a transport ``error``), and the verdict."""

    request: SimulatedRequest
    reply: Reply | None
    ok: bool
    verdict: Verdict
    reason: str

    def as_dict(self) -> dict[str, Any]:
        request = self.request.as_dict()
        return {
            "request": {k: request[k] for k in ("method", "url", "headers", "body", "plaintext")},
            "kind": self.request.kind,
            "receive_id": self.request.receive_id,
            "response": None
            if self.reply is None
            else {
                "status": self.reply.status,
                "body": self.reply.preview,
                "latency_ms": round(self.reply.latency * 1000, 3),
            },
            "ok": self.ok,
            "verdict": self.verdict,
            "reason": self.reason,
        }


def make_client(concurrency: int = 1, http_timeout: float = DEFAULT_HTTP_TIMEOUT) -> httpx.Client:
    """A pooled client that talks straight to the endpoint, as WeCom does.

    Environment proxies are ignored (``trust_env=False``): WeCom does not go through the
    developer's proxy, and a proxy in the path would distort latency figures.
    """
    return httpx.Client(
        timeout=http_timeout,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        trust_env=False,
        follow_redirects=False,
        verify=client_ssl_context(trust_env=False),
    )


def _transport_problem(exc: httpx.HTTPError, url: str) -> str:
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if isinstance(exc, httpx.TimeoutException):
        return f"no reply from {where} in time ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {where}: {' '.join(str(exc).split()) or 'connection failed'}"
    return f"request to {where} failed: {type(exc).__name__}: {' '.join(str(exc).split())}"


def send(
    client: httpx.Client,
    request: SimulatedRequest,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.perf_counter,
) -> Exchange:
    """Send one request and judge the reply; transport failures become verdict ``error``."""
    started = clock()
    try:
        response = client.request(
            request.method, request.url, content=request.content, headers=request.headers
        )
    except httpx.HTTPError as exc:
        return Exchange(request, None, False, "error", _transport_problem(exc, request.url))
    reply = Reply(response.status_code, response.content, clock() - started)
    ok, verdict, reason = judge(request, reply, timeout=timeout)
    return Exchange(request, reply, ok, verdict, reason)


# -- load ---------------------------------------------------------------------------------


@dataclass
class _Tally:
    """One worker's counts; merged once at the end so workers share no locks."""

    ok: int = 0
    wrong: int = 0
    slow: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, exchange: Exchange) -> None:
        if exchange.reply is not None:
            self.latencies.append(exchange.reply.latency)
        if exchange.ok:
            self.ok += 1
            return
        if exchange.verdict == "slow":
            self.slow += 1
            self.reasons["slow reply"] += 1  # the ms figure differs per request
            return
        if exchange.verdict == "error":
            self.errors += 1
        else:
            self.wrong += 1
        self.reasons[exchange.reason] += 1


def _percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class LoadSummary:
    requested: int
    concurrency: int
    rate: float | None
    sent: int
    ok: int
    wrong: int
    slow: int
    errors: int
    duration: float
    latencies: tuple[float, ...]
    """Sorted reply latencies in seconds (transport errors have none)."""
    failures: tuple[tuple[str, int], ...] = ()
    """The most frequent failure reasons with their counts."""
    interrupted: bool = False

    @property
    def all_ok(self) -> bool:
        return self.ok == self.requested and not self.interrupted

    @property
    def throughput(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    def latency_ms(self) -> dict[str, float]:
        lat = self.latencies
        return {
            "p50": round(_percentile(lat, 50) * 1000, 3),
            "p90": round(_percentile(lat, 90) * 1000, 3),
            "p99": round(_percentile(lat, 99) * 1000, 3),
            "max": round((lat[-1] if lat else 0.0) * 1000, 3),
            "mean": round(sum(lat) / len(lat) * 1000, 3) if lat else 0.0,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "sent": self.sent,
            "ok": self.ok,
            "wrong_reply": self.wrong,
            "slow": self.slow,
            "errors": self.errors,
            "duration_s": round(self.duration, 3),
            "throughput_rps": round(self.throughput, 1),
            "latency_ms": self.latency_ms(),
            "failures": [{"reason": r, "count": n} for r, n in self.failures],
            "interrupted": self.interrupted,
            "all_ok": self.all_ok,
        }


def check_load_bounds(count: int, concurrency: int, rate: float | None) -> None:
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"--count must be between 1 and {MAX_COUNT:,}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    if rate is not None and not 0.001 <= rate <= 1_000_000:  # NaN fails both
        raise UsageError("--rate must be from 0.001 to 1,000,000 requests per second")


def run_load(
    build: Callable[[], SimulatedRequest],
    client: httpx.Client,
    *,
    count: int,
    concurrency: int,
    rate: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.perf_counter,
    poll_interval: float = 0.1,
) -> LoadSummary:
    """Send ``count`` fresh requests from ``concurrency`` threads, at most ``rate`` per second.

    ``build`` is called per request, so every request has its own nonce, timestamp and
    ticket (a server that deduplicates would otherwise answer from its log). Workers
    take request numbers from one counter; with ``rate`` request *i* starts no earlier
    than ``i / rate`` s after the start. Ctrl-C (or ``stop``) lets in-flight requests
    finish and returns what was measured, flagged ``interrupted``.
    """
    check_load_bounds(count, concurrency, rate)
    stop = stop or threading.Event()
    workers = min(count, concurrency)
    tickets = itertools.count()
    done = [0] * workers
    started = clock()

    def work(slot: int) -> _Tally:
        tally = _Tally()
        while not stop.is_set():
            i = next(tickets)
            if i >= count:
                break
            if rate is not None:
                delay = started + i / rate - clock()
                if delay > 0 and stop.wait(delay):
                    break
            tally.add(send(client, build(), timeout=timeout, clock=clock))
            done[slot] += 1
        return tally

    interrupted = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qywx-load") as pool:
        futures: list[Future[_Tally]] = [pool.submit(work, k) for k in range(workers)]
        pending = set(futures)
        while pending:
            try:
                finished, pending = wait(pending, timeout=poll_interval)
                if any(f.exception() is not None for f in finished):
                    stop.set()  # a bug in a worker: stop the others, re-raise below
                if progress is not None:
                    progress(sum(done))
            except KeyboardInterrupt:
                interrupted = True
                stop.set()
        tallies = [f.result() for f in futures]
    duration = clock() - started
    total = _Tally()
    for t in tallies:
        total.ok += t.ok
        total.wrong += t.wrong
        total.slow += t.slow
        total.errors += t.errors
        total.latencies.extend(t.latencies)
        total.reasons.update(t.reasons)
    return LoadSummary(
        requested=count,
        concurrency=concurrency,
        rate=rate,
        sent=total.ok + total.wrong + total.slow + total.errors,
        ok=total.ok,
        wrong=total.wrong,
        slow=total.slow,
        errors=total.errors,
        duration=duration,
        latencies=tuple(sorted(total.latencies)),
        failures=tuple(total.reasons.most_common(5)),
        interrupted=interrupted or (stop.is_set() and sum(done) < count),
    )


# -- tamper -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TamperResult:
    """How the endpoint answered one broken request (for replay: the second copy)."""

    case: str
    description: str
    sent: int
    reply: Reply | None
    error: str | None = None
    note: str = ""
    #: replay only: how many times the endpoint's log shows the request handled, if known
    handled: int | None = None

    @property
    def rejected(self) -> bool:
        """Refused as WeCom's protocol means it: anything but 200 with ``success``."""
        return self.reply is not None and not (
            self.reply.status == 200 and self.reply.body == _SUCCESS
        )

    @property
    def passed(self) -> bool:
        """Rejected; or, for ``replay``, acknowledged without being handled a second time.

        Answering a byte-identical replay ``success`` is what WeCom needs when the first
        reply was lost (anything else makes it retry), and harmless if the request is not
        processed again; that is judged from the endpoint's log when it can be read, and
        otherwise left as a note.
        """
        if self.reply is None:
            return False
        if self.rejected:
            return True
        return self.case == "replay" and (self.handled is None or self.handled <= 1)

    @property
    def verdict(self) -> str:
        if self.reply is None:
            return "error"
        if self.rejected:
            return "rejected"
        if self.case == "replay":
            if self.handled is None:
                return "acknowledged"
            if self.handled <= 1:
                return "acknowledged, handled once"
            return f"HANDLED {self.handled} TIMES (vulnerable)"
        return "ACCEPTED (vulnerable)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "description": self.description,
            "sent": self.sent,
            "status": None if self.reply is None else self.reply.status,
            "body": None if self.reply is None else self.reply.preview,
            "latency_ms": None if self.reply is None else round(self.reply.latency * 1000, 3),
            "verdict": self.verdict,
            "rejected": self.rejected,
            "passed": self.passed,
            "handled": self.handled,
            "error": self.error,
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class TamperReport:
    """The control request (a valid callback must be accepted) and every case's result.

    Without an accepted control the results say nothing: an endpoint that refuses
    everything (wrong token, wrong URL) "rejects" every tamper too.
    """

    baseline: Exchange
    results: tuple[TamperResult, ...]

    @property
    def all_rejected(self) -> bool:
        """The control accepted and every case passed (a replay may be acknowledged)."""
        return self.baseline.ok and all(r.passed for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.as_dict(),
            "cases": [r.as_dict() for r in self.results],
            "all_rejected": self.all_rejected,
        }


def run_tamper(
    simulator: CallbackSimulator,
    client: httpx.Client,
    cases: Sequence[str],
    spec: EventSpec,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    clock: Callable[[], float] = time.perf_counter,
    handled_count: Callable[[SimulatedRequest], int | None] | None = None,
) -> TamperReport:
    """Send a valid control callback, then each tamper case in order.

    ``handled_count`` reads the endpoint's callback log (when the caller has it): how
    many records of a request were handled rather than logged as duplicates, or None
    when the log does not hold the request (another endpoint's database).
    """
    unknown = [c for c in cases if c not in TAMPER_CASES]
    if unknown or not cases:
        raise UsageError(
            f"unknown tamper {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(TAMPER_CASES)}, all"
        )
    baseline = send(client, simulator.callback(spec), timeout=timeout, clock=clock)
    results: list[TamperResult] = []
    for case in cases:
        requests = simulator.tampered(case, spec)
        note = ""
        last: Exchange | None = None
        for n, request in enumerate(requests, 1):
            last = send(client, request, timeout=timeout, clock=clock)
            if last.reply is None:
                break
            if case == "replay" and n == 1 and not last.ok:
                note = f"the original was not accepted ({last.reason}), so the replay proves little"
        assert last is not None
        error = last.reason if last.reply is None else None
        handled: int | None = None
        acknowledged = last.reply is not None and last.reply.body == _SUCCESS
        if case == "replay" and acknowledged and last.reply is not None:
            if last.reply.status == 200 and handled_count is not None:
                handled = handled_count(requests[0])
            if handled is None and not note:
                note = (
                    "acknowledged with success, as WeCom needs when a reply was lost; "
                    "check the endpoint's log that it was not handled twice"
                )
        results.append(
            TamperResult(case, TAMPER_CASES[case], len(requests), last.reply, error, note, handled)
        )
    return TamperReport(baseline, tuple(results))


def handled_in_log(store: Store, request: SimulatedRequest) -> int | None:
    """How many records of ``request`` a qywx callback log shows handled (not duplicates).

    None when the log holds no record of it: the endpoint writes another database. The
    replay's records are among the newest, so only the latest few hundred are read.
    """
    mine = [
        r
        for r in store.list_callbacks(limit=500)
        if (r.msg_signature, r.timestamp, r.nonce)
        == (request.msg_signature, request.timestamp, request.nonce)
    ]
    if not mine:
        return None
    originals = [r for r in mine if r.status not in ("duplicate", "rejected")]
    return len(originals) + sum(max(0, r.attempts - 1) for r in originals)
