"""Parsing WeCom's callback XML without trusting it.

The envelope must be parsed *before* the signature can be checked (msg_signature
covers the Encrypt text, wecom-protocol.md §5.6), so this parser always sees
unauthenticated input. WeCom's XML never carries a DTD, so any DOCTYPE is refused
outright: expat reports ``<!DOCTYPE`` before it reads a single declaration and the
handler raises there, so no entity is ever declared, let alone expanded or fetched.
Input is capped in size, and nesting is capped in depth (WeCom's deepest documents
are three levels; a deep document would otherwise cost memory and recursion in every
consumer).

expat feeds the C ``TreeBuilder`` directly: every callback is parsed twice (the
envelope, then the decrypted event), and ElementTree's pure-Python ``XMLParser``
wrapper, which defusedxml subclasses, cost more than AES and the signature together
for nothing WeCom's namespace-free XML needs (benchmarks/README.md).

Every document WeCom sends is *flat*: ``<xml>`` holding simple elements whose text is
CDATA or plain characters, no attributes, declaration, comment or entity. Such a
document is recognised by one regular expression that only matches text expat would
parse to the very same fields (no ``&``, no ``\r``, which expat rewrites, no character
XML forbids), and its fields are read without building a tree. Anything else,
including every hostile shape, goes to expat exactly as before; the property test in
``tests/core/test_xmlsafe.py`` checks both routes give the same answer.

The POST envelope, read on every callback before anything is authenticated, has a
route of its own: WeCom's exact envelope shape is matched around its CDATA, and the
Encrypt text is checked against the base64 alphabet in one C call. It costs a third of
the flat route on a real envelope; anything else falls through to the routes above.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import NoReturn
from xml.parsers import expat

from qywx_cli.core.errors import CallbackCryptoError, UnsafeXMLError

__all__ = [
    "MAX_DEPTH",
    "MAX_XML_BYTES",
    "element_fields",
    "envelope_encrypt",
    "parse_document",
    "parse_fields",
    "parse_xml",
]

MAX_XML_BYTES = 1024 * 1024
"""Largest XML document accepted (1 MiB); WeCom's callbacks are a few KiB."""

MAX_DEPTH = 16


# Characters a flat document's text may hold: anything XML allows except "]" (which
# could start "]]>"), "<" and "&" (markup) and "\r" (expat normalises line ends);
# U+FFFE, U+FFFF and lone surrogates are ruled out before matching.
_TEXT = r"[^\]<&\x00-\x08\x0b-\x1f]*"
_WS = r"[ \t\n]*"
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_OPEN = re.compile(rf"{_WS}<({_NAME})>")
_ITEM = re.compile(rf"{_WS}<({_NAME})>(?:{_WS}<!\[CDATA\[({_TEXT})\]\]>{_WS}|({_TEXT}))</\1>")
_CLOSE = re.compile(rf"{_WS}</({_NAME})>{_WS}")

# The POST envelope as WeCom sends it (wecom-protocol.md §1.5): ToUserName, Encrypt and
# AgentID in that order, identifier characters in the first and last, Encrypt's base64
# in CDATA. Text inside CDATA is taken literally up to the first "]]>", so once the
# markup around it is matched, Encrypt is the bytes in between: checked against the
# base64 alphabet (and whitespace) in one C call rather than a character at a time by
# the regular expression engine. Such a document is also flat, and the flat route
# reads the same Encrypt from it (tests/core/test_xmlsafe.py checks both routes).
_ID = r"[A-Za-z0-9_@.\-]*"
_FIELD = rf"(?:{_WS}<!\[CDATA\[{_ID}\]\]>{_WS}|{_ID})"
_ENVELOPE_HEAD = re.compile(
    rf"{_WS}<xml>(?:{_WS}<ToUserName>{_FIELD}</ToUserName>)?{_WS}<Encrypt>{_WS}<!\[CDATA\[".encode()
)
_ENVELOPE_TAIL = re.compile(
    rf"\]\]>{_WS}</Encrypt>(?:{_WS}<AgentID>{_FIELD}</AgentID>)?{_WS}</xml>{_WS}".encode()
)
_BASE64_OR_WS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\n"


def _exact_envelope(body: str | bytes) -> str | None:
    """Encrypt of an envelope shaped as WeCom sends it, or None for any other shape."""
    if len(body) > MAX_XML_BYTES:
        return None
    if isinstance(body, str):
        if not body.isascii():
            return None
        body = body.encode("ascii")
    head = _ENVELOPE_HEAD.match(body)
    if head is None:
        return None
    end = body.find(b"]]>", head.end())
    if end < 0 or _ENVELOPE_TAIL.fullmatch(body, end) is None:
        return None
    value = body[head.end() : end]
    if value.translate(None, _BASE64_OR_WS):  # a character outside the alphabet
        return None
    return value.strip(b" \t\n").decode("ascii") or None


def _flat_pairs(data: str | bytes) -> list[tuple[str, str]] | None:
    """(tag, stripped text) of each child of a flat document, or None if it is not one.

    None sends the document to :func:`parse_xml`, which gives the verdict (and the
    error) for everything this does not recognise.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_XML_BYTES:
            return None
        try:
            text = data.decode("utf-8")  # expat's default; also refuses surrogates
        except UnicodeDecodeError:
            return None
    else:
        text = data
        if len(text) > MAX_XML_BYTES // 4:  # its UTF-8 might pass the cap: parse_xml judges
            return None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate
                return None
    if "\ufffe" in text or "\uffff" in text:  # not XML characters
        return None
    opened = _OPEN.match(text)
    if opened is None:
        return None
    pairs = []
    pos = opened.end()
    item = _ITEM.match
    while (m := item(text, pos)) is not None:
        cdata = m[2]
        pairs.append((m[1], (cdata if cdata is not None else m[3]).strip()))
        pos = m.end()
    closed = _CLOSE.fullmatch(text, pos)
    if closed is None or closed[1] != opened[1]:
        return None
    return pairs


def _refuse_dtd(*_: object) -> NoReturn:
    raise UnsafeXMLError("DTDs and entities are not allowed")


def parse_xml(
    data: str | bytes, *, max_bytes: int = MAX_XML_BYTES, max_depth: int = MAX_DEPTH
) -> ET.Element:
    """Parse ``data`` into an Element, refusing DTDs, entities, oversize and deep input."""
    try:
        raw = data.encode("utf-8") if isinstance(data, str) else data
    except UnicodeEncodeError:  # a lone surrogate in a str
        raise CallbackCryptoError(
            CallbackCryptoError.PARSE_XML, "text is not valid Unicode"
        ) from None
    if len(raw) > max_bytes:
        raise UnsafeXMLError(f"XML larger than {max_bytes} bytes")
    if not raw.strip():
        raise CallbackCryptoError(CallbackCryptoError.PARSE_XML, "empty document")
    builder = ET.TreeBuilder()
    depth = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise UnsafeXMLError(f"XML nested deeper than {max_depth} levels")
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(tag)

    parser = expat.ParserCreate()
    parser.buffer_text = True
    # Entities can only be declared inside a DOCTYPE, so refusing the DOCTYPE refuses
    # them all; the entity handlers are a second lock on the same door.
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.UnparsedEntityDeclHandler = _refuse_dtd
    parser.ExternalEntityRefHandler = _refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as exc:
        raise CallbackCryptoError(CallbackCryptoError.PARSE_XML, f"malformed XML ({exc})") from None
    except (ValueError, LookupError):  # an XML declaration naming an encoding expat lacks
        raise CallbackCryptoError(
            CallbackCryptoError.PARSE_XML, "unsupported XML encoding (WeCom sends UTF-8)"
        ) from None
    root: ET.Element = builder.close()
    return root


def element_fields(root: ET.Element) -> dict[str, str]:
    """Top-level child tags → stripped text (WeCom pads some CDATA with spaces, §3.1)."""
    return {child.tag: (child.text or "").strip() for child in root}


def parse_document(data: str | bytes) -> tuple[dict[str, str], ET.Element | None]:
    """``element_fields(parse_xml(data))`` and the tree; no tree (None) when it is flat."""
    pairs = _flat_pairs(data)
    if pairs is None:
        root = parse_xml(data)
        return element_fields(root), root
    return dict(pairs), None


def parse_fields(data: str | bytes) -> dict[str, str]:
    """``element_fields(parse_xml(data))``, without a tree when the document is flat."""
    return parse_document(data)[0]


def envelope_encrypt(body: str | bytes) -> str:
    """The ``Encrypt`` text of a POST envelope, the input to signature and AES.

    WeCom's own envelope is recognised by :func:`_exact_envelope`; any other
    shape takes the flat route, and anything not flat goes to expat.
    """
    exact = _exact_envelope(body)
    if exact is not None:
        return exact
    pairs = _flat_pairs(body)
    if pairs is None:
        root = parse_xml(body)
        node = root.find("Encrypt")
        text = (node.text or "").strip() if node is not None else ""
    else:
        text = next((value for tag, value in pairs if tag == "Encrypt"), "")
    if not text:
        raise CallbackCryptoError(CallbackCryptoError.PARSE_XML, "envelope has no Encrypt element")
    return text
