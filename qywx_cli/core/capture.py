"""Captured WeCom traffic: read it back in whatever shape it was saved, then open it.

An operator debugging a callback rarely has a tidy record of it. They have a URL from an
access log (the query carries msg_signature, timestamp, nonce and, for the GET handshake,
echostr — wecom-protocol.md §1.4, §1.5), a body saved by a proxy, or a whole request
copied out of a packet capture or a browser's devtools. This module turns each of those
into one :class:`CapturedRequest` and :func:`open_captured` verifies and decrypts it as a
WeCom-compatible server would (§1.3 signature first, then AES), but reports instead of
refusing where a debugging tool should: the receiveid trailer is named and classified
rather than checked (§2.2: it differs by scenario, and libraries disagree), and with
``verify=False`` a bad signature becomes a flag on the result.

Query strings are URL-decoded here (WeCom's docs insist on it, §1.4); a ``+`` that a
copy-and-paste left unencoded decodes to a space, which :meth:`WXBizMsgCrypt.verify_url`
restores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal
from urllib.parse import parse_qsl

from qywx_cli.core.crypto import ReceiveIdKind, WXBizMsgCrypt
from qywx_cli.core.errors import CallbackCryptoError, UsageError
from qywx_cli.core.events import is_secret_field
from qywx_cli.core.masking import mask
from qywx_cli.core.urls import split_url
from qywx_cli.core.xmlsafe import envelope_encrypt, parse_fields

__all__ = [
    "MAX_CAPTURE_BYTES",
    "CapturedRequest",
    "OpenedRequest",
    "RequestKind",
    "from_http_dump",
    "from_parts",
    "from_url",
    "looks_like_http_request",
    "mask_plaintext",
    "open_captured",
]

RequestKind = Literal["verify_url", "callback"]

MAX_CAPTURE_BYTES: Final = 4 * 1024 * 1024
"""Largest capture read (a request dump with headers); the XML inside is capped at 1 MiB."""

_SIGNED_KEYS: Final = ("msg_signature", "timestamp", "nonce")
_QUERY_KEYS: Final = (*_SIGNED_KEYS, "echostr")
_REQUEST_LINE = re.compile(
    rb"(?P<method>[A-Z]{3,10}) (?P<target>\S+) HTTP/(?P<version>\d(?:\.\d)?)\r?\n"
)
_HEADER = re.compile(rb"(?P<name>[!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(?P<value>.*?)[ \t]*")
_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CapturedRequest:
    """One request as WeCom sent it: the signed query values plus echostr or the body.

    ``warnings`` are things an operator should know about the capture itself (a body
    shorter than its Content-Length, say) that do not stop it from being opened.
    """

    msg_signature: str
    timestamp: str
    nonce: str
    echostr: str | None = None
    body: bytes | None = None
    path: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def kind(self) -> RequestKind:
        """GET with echostr is the URL handshake (§1.4); anything else a POST callback."""
        return "verify_url" if self.echostr is not None else "callback"

    @property
    def method(self) -> str:
        return "GET" if self.echostr is not None else "POST"


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """A verified (or, on request, unverified) and decrypted capture.

    ``fields`` are the plaintext's top-level XML fields, unmasked: callers decide what to
    show (:func:`qywx_cli.core.events.mask_fields`, :func:`mask_plaintext`). For the
    handshake the plaintext is the bare echostr reply and ``fields`` is empty.
    """

    kind: RequestKind
    signature_valid: bool
    receive_id: str
    receive_id_kind: ReceiveIdKind
    plaintext: str
    fields: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    info_type: str | None = None
    warnings: tuple[str, ...] = ()


# -- reading captures ---------------------------------------------------------------------


def _query_params(query: str) -> dict[str, str]:
    """The WeCom parameters of a query; a repeated one is refused (which would be signed?)."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _QUERY_KEYS:
            if key in params:
                raise UsageError(f"query parameter {key} appears more than once")
            params[key] = value
    return params


def _from_params(
    params: Mapping[str, str],
    *,
    body: bytes | None,
    path: str | None,
    warnings: tuple[str, ...] = (),
) -> CapturedRequest:
    missing = [k for k in _SIGNED_KEYS if not params.get(k)]
    if missing:
        raise UsageError(f"the captured request has no {', '.join(missing)}")
    echostr = params.get("echostr")
    if echostr is not None and not echostr:
        raise UsageError("echostr is empty")
    if echostr is None and not (body or b"").strip():
        raise UsageError(
            "the query has no echostr, so this is a POST callback: give its body as FILE or -"
        )
    return CapturedRequest(
        msg_signature=params["msg_signature"],
        timestamp=params["timestamp"],
        nonce=params["nonce"],
        echostr=echostr,
        body=None if echostr is not None else body,
        path=path,
        warnings=warnings,
    )


def from_url(url: str, body: bytes | None = None) -> CapturedRequest:
    """A captured URL (``http://host/cb?msg_signature=…``), a path with a query, or a bare query.

    With echostr in the query it is the handshake and ``body`` must be absent; without,
    ``body`` is the POST envelope.
    """
    text = url.strip()
    if "?" in text:
        head, _, query = text.partition("?")
        parts = split_url(head)
        if parts is None:
            raise UsageError("the captured URL is malformed")
        path = parts.path or None
    elif "msg_signature=" in text:
        path, query = None, text
    else:
        raise UsageError("the captured URL has no query (msg_signature, timestamp, nonce)")
    query = query.partition("#")[0]
    params = _query_params(query)
    if "echostr" in params and body is not None:
        raise UsageError("the URL carries echostr (a GET handshake), so it has no body to read")
    return _from_params(params, body=body, path=path)


def from_parts(
    msg_signature: str,
    timestamp: str,
    nonce: str,
    *,
    echostr: str | None = None,
    body: bytes | None = None,
) -> CapturedRequest:
    """Values typed in one by one (already URL-decoded, as a log usually shows them)."""
    if echostr is not None and body is not None:
        raise UsageError("give either --echostr (GET handshake) or a body (POST), not both")
    return _from_params(
        {"msg_signature": msg_signature, "timestamp": timestamp, "nonce": nonce}
        | ({"echostr": echostr} if echostr is not None else {}),
        body=body,
        path=None,
    )


def _strip_preamble(data: bytes) -> bytes:
    return data.removeprefix(b"\xef\xbb\xbf").lstrip(b"\r\n")


def looks_like_http_request(data: bytes) -> bool:
    """True when ``data`` starts with an HTTP/1.x or HTTP/2 request line."""
    return _REQUEST_LINE.match(_strip_preamble(data)) is not None


def _dechunk(body: bytes) -> bytes:
    """Undo ``Transfer-Encoding: chunked`` (captures from a proxy often keep it)."""
    out = bytearray()
    rest = body
    while True:
        size_line, sep, rest = rest.partition(b"\n")
        if not sep:
            raise UsageError("chunked body ends before its last chunk")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise UsageError("chunked body has a malformed chunk size") from None
        if size == 0:
            return bytes(out)
        if len(rest) < size:
            raise UsageError("chunked body is shorter than its chunk sizes say")
        out += rest[:size]
        rest = rest[size:].removeprefix(b"\r\n").removeprefix(b"\n")


def from_http_dump(data: bytes) -> CapturedRequest:
    """A raw request: request line, headers, a blank line, the body (CRLF or LF endings)."""
    data = _strip_preamble(data)
    line = _REQUEST_LINE.match(data)
    if line is None:
        raise UsageError("not an HTTP request dump: the first line is not 'METHOD target HTTP/x'")
    method = line["method"].decode("ascii")
    target = line["target"].decode("utf-8", "replace")
    rest = data[line.end() :]
    head_end = re.search(rb"\r?\n\r?\n", rest)
    if rest.startswith((b"\r\n", b"\n")):
        head, body = b"", rest.lstrip(b"\r").removeprefix(b"\n")
    elif head_end is None:
        head, body = rest, b""
    else:
        head, body = rest[: head_end.start()], rest[head_end.end() :]
    headers: dict[str, str] = {}
    for raw in head.splitlines():
        m = _HEADER.fullmatch(raw.rstrip(b"\r"))
        if m is None:
            raise UsageError(f"malformed header line in the request dump: {raw[:60]!r}")
        headers[m["name"].decode("ascii").lower()] = m["value"].decode("latin-1")
    warnings: list[str] = []
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise UsageError("Content-Length in the request dump is not a number") from None
        if len(body) < length:
            warnings.append(
                f"body is {len(body)} bytes but Content-Length says {length} (truncated capture?)"
            )
        body = body[:length]
    if method not in ("GET", "POST"):
        raise UsageError(f"WeCom only sends GET and POST; the dump is a {method}")
    split = split_url(target)
    if split is None:
        raise UsageError("the dump's request line has a malformed URL")
    query = split.query if "?" in target else ""
    params = _query_params(query)
    if method == "GET" and "echostr" not in params:
        raise UsageError("the dump is a GET without echostr, which is not a WeCom request")
    if method == "POST":
        params.pop("echostr", None)
    return _from_params(
        params,
        body=body if method == "POST" else None,
        path=split.path or None,
        warnings=tuple(warnings),
    )


# -- opening ------------------------------------------------------------------------------


def open_captured(
    captured: CapturedRequest, crypto: WXBizMsgCrypt, *, verify: bool = True
) -> OpenedRequest:
    """Verify the signature (§1.3), decrypt (§1.2) and read the fields of a capture.

    The receiveid is classified against ``crypto.receive_ids`` but never refused: a
    debugging tool must show what WeCom put there, especially when it is unexpected.
    With ``verify=False`` a bad signature is reported in ``signature_valid`` instead of
    raising -40001; malformed envelopes and undecryptable data still raise.
    """
    if captured.echostr is not None:
        encrypt = captured.echostr.replace(" ", "+")  # '+' decoded as space (§1.4)
    else:
        encrypt = envelope_encrypt(captured.body or b"")
    signature_valid = True
    try:
        crypto.verify(captured.msg_signature, captured.timestamp, captured.nonce, encrypt)
    except CallbackCryptoError:
        if verify:
            raise
        signature_valid = False
    decrypted = crypto.decrypt(encrypt, check_receive_id=False)
    plaintext = decrypted.text
    warnings = list(captured.warnings)
    fields: Mapping[str, str] = _EMPTY
    info_type: str | None = None
    if captured.kind == "callback":
        try:
            fields = MappingProxyType(parse_fields(plaintext))
        except CallbackCryptoError as exc:
            warnings.append(f"the plaintext is not callback XML: {exc}")
        info_type = fields.get("InfoType") or fields.get("Event") or fields.get("MsgType") or None
    return OpenedRequest(
        kind=captured.kind,
        signature_valid=signature_valid,
        receive_id=decrypted.receive_id,
        receive_id_kind=decrypted.receive_id_kind,
        plaintext=plaintext,
        fields=fields,
        info_type=info_type,
        warnings=tuple(warnings),
    )


# A leaf element: text or one CDATA section, nothing nested (WeCom's fields are flat).
_LEAF = re.compile(
    r"<(?P<tag>[A-Za-z_][A-Za-z0-9_.-]*)>(?P<inner>\s*<!\[CDATA\[.*?\]\]>\s*|[^<]*)</(?P=tag)>",
    re.DOTALL,
)


def mask_plaintext(plaintext: str) -> str:
    """The plaintext with credential elements (SuiteTicket, AuthCode…) masked in place.

    A real capture's SuiteTicket or AuthCode is live for 30 / 10 minutes (§3.1, §3.2),
    so it must not reach a terminal or a ticket tracker by default.
    """

    def hide(m: re.Match[str]) -> str:
        tag, inner = m["tag"], m["inner"]
        if not is_secret_field(tag):
            return m.group(0)
        cdata = re.fullmatch(r"\s*<!\[CDATA\[(.*)\]\]>\s*", inner, re.DOTALL)
        value = cdata.group(1) if cdata else inner
        masked = mask(value.strip())
        return f"<{tag}>" + (f"<![CDATA[{masked}]]>" if cdata else masked) + f"</{tag}>"

    return _LEAF.sub(hide, plaintext)
