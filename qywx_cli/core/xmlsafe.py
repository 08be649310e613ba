"""Parsing WeCom's callback XML without trusting it.

The envelope must be parsed *before* the signature can be checked (msg_signature
covers the Encrypt text, wecom-protocol.md §5.6), so this parser always sees
unauthenticated input. WeCom's XML never carries a DTD, so any DOCTYPE or entity
declaration is refused outright (defusedxml raises as soon as expat reports one,
before anything is expanded), input is capped in size, and nesting is capped in
depth (WeCom's deepest documents are three levels; a deep document would otherwise
cost memory and recursion in every consumer).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from xml.parsers.expat import ExpatError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from qywx_cli.core.errors import CallbackCryptoError, UnsafeXMLError

__all__ = ["MAX_DEPTH", "MAX_XML_BYTES", "element_fields", "envelope_encrypt", "parse_xml"]

MAX_XML_BYTES = 1024 * 1024
"""Largest XML document accepted (1 MiB); WeCom's callbacks are a few KiB."""

MAX_DEPTH = 16


class _DepthLimitedBuilder(ET.TreeBuilder):
    """A TreeBuilder that refuses documents nested deeper than ``max_depth``."""

    def __init__(self, max_depth: int) -> None:
        super().__init__()
        self._depth = 0
        self._max_depth = max_depth

    def start(self, tag: Any, attrs: Any) -> ET.Element:
        self._depth += 1
        if self._depth > self._max_depth:
            raise UnsafeXMLError(f"XML nested deeper than {self._max_depth} levels")
        return super().start(tag, attrs)

    def end(self, tag: Any) -> ET.Element:
        self._depth -= 1
        return super().end(tag)


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
    parser = DefusedXMLParser(
        target=_DepthLimitedBuilder(max_depth),
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(raw)
        root: ET.Element = parser.close()
    except DefusedXmlException as exc:
        raise UnsafeXMLError(f"{type(exc).__name__}: DTDs and entities are not allowed") from None
    except (ET.ParseError, ExpatError) as exc:
        raise CallbackCryptoError(CallbackCryptoError.PARSE_XML, f"malformed XML ({exc})") from None
    except (ValueError, LookupError):  # an XML declaration naming an encoding expat lacks
        raise CallbackCryptoError(
            CallbackCryptoError.PARSE_XML, "unsupported XML encoding (WeCom sends UTF-8)"
        ) from None
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
