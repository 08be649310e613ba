"""Splitting URLs that users type, paste or configure.

``urllib.parse.urlsplit`` raises ValueError on some malformed input (an unclosed IPv6
bracket), and ``SplitResult.port`` raises it on a bad port, where every caller in qywx
wants a one-line usage or config error instead. This is the one place that knows it.
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit

__all__ = ["split_url"]


def split_url(value: str, *, check_port: bool = False) -> SplitResult | None:
    """``urlsplit(value)``, or None where urllib refuses it (and, with ``check_port``,
    where the port is not a number in 0-65535)."""
    try:
        parts = urlsplit(value)
        if check_port:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return parts
