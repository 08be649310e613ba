"""Database URLs shown to people: never with a password.

Kept apart from the PostgreSQL backend so that printing a URL needs no driver.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["safe_url"]


def safe_url(url: str) -> str:
    """``url`` without its password (user-info or ``password=`` parameter), for display."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}@{host}" if user else host
        query = urlencode(
            [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return f"{url.split('://', 1)[0]}://…"
