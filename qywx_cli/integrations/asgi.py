"""The notify endpoint as an ASGI app for Starlette and FastAPI (``qywx-cli[asgi]``).

::

    from fastapi import FastAPI
    from qywx_cli.core.app import App
    from qywx_cli.integrations.asgi import notify_asgi

    api = FastAPI()
    api.mount("/wecom", notify_asgi(App(".")))
    # WeCom's callback URL: https://your.host/wecom/notify/QywxProxyTemp

It is :class:`NotifyApp` itself behind a2wsgi's WSGI-to-ASGI bridge: the request is
answered on a2wsgi's thread pool, so the blocking store commit that must precede the
reply never stalls the event loop, and every edge rule of ``qywx serve`` (size cap,
methods, one-line refusals, ``/healthz``) holds unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from qywx_cli.integrations._common import Endpoint, require

if TYPE_CHECKING:
    from qywx_cli.integrations._common import Source

__all__ = ["notify_asgi"]


def notify_asgi(source: Source, *, threads: int = 10) -> Any:
    """An ASGI app answering ``/notify``, ``/notify/<Instance>`` and ``/healthz``."""
    a2wsgi = require("a2wsgi", "asgi")
    endpoint = Endpoint(source)

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        return endpoint.notify_app(environ, start_response)

    return a2wsgi.WSGIMiddleware(wsgi, workers=threads)
