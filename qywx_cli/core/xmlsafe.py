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
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import NoReturn
from xml.parsers import expat

from qywx_cli.core.errors import CallbackCryptoError, UnsafeXMLError

__all__ = ["MAX_DEPTH", "MAX_XML_BYTES", "element_fields", "envelope_encrypt", "parse_xml"]

MAX_XML_BYTES = 1024 * 1024
"""Largest XML document accepted (1 MiB); WeCom's callbacks are a few KiB."""

MAX_DEPTH = 16


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


def envelope_encrypt(body: str | bytes) -> str:
    """The ``Encrypt`` text of a POST envelope, the input to signature and AES."""
    root = parse_xml(body)
    node = root.find("Encrypt")
    text = (node.text or "").strip() if node is not None else ""
    if not text:
        raise CallbackCryptoError(CallbackCryptoError.PARSE_XML, "envelope has no Encrypt element")
    return text
