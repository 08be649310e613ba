"""The HTTP edge's connection limits, as settings hold them (``[serve]`` in qywx.toml).

Apart from :mod:`.httpserver` because every command loads settings and only ``qywx
serve`` starts a server: reading the limits must not import waitress's set-up or
:mod:`logging`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from qywx_cli.core.errors import UsageError

__all__ = ["DEFAULT_LIMITS", "ServerLimits"]


@dataclass(frozen=True)
class ServerLimits:
    """Connection limits of the HTTP edge (``qywx serve`` flags / ``[serve]`` in qywx.toml)."""

    connection_limit: int = 4096
    #: seconds an idle keep-alive connection is kept
    channel_timeout: float = 30.0
    #: seconds from a request's first byte to the end of its headers
    header_timeout: float = 10.0
    #: seconds from the end of the headers to the end of the body
    body_timeout: float = 30.0

    def check(self) -> ServerLimits:
        if not 1 <= self.connection_limit <= 1_000_000:
            raise UsageError("connection_limit must be between 1 and 1000000")
        for name in ("channel_timeout", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not 0 < value <= 3600:
                raise UsageError(f"{name} must be more than 0 and at most 3600 seconds")
        return self


DEFAULT_LIMITS: Final = ServerLimits()
