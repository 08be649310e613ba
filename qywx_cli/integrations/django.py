"""The notify endpoint as a Django view (``pip install 'qywx-cli[django]'``).

::

    # urls.py
    from django.urls import include, path
    from qywx_cli.core.app import App
    from qywx_cli.integrations.django import notify_urls

    urlpatterns = [path("wecom/", include(notify_urls(App(BASE_DIR))))]
    # WeCom's callback URL: https://your.host/wecom/notify/QywxProxyTemp

The view is CSRF-exempt (WeCom signs its requests instead; the signature is checked
before anything is stored) and reads the body itself, capped as ``qywx serve`` caps
it, so Django's own form parsing never runs on a callback. It works under WSGI and
ASGI Django alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qywx_cli.integrations._common import Endpoint, require

if TYPE_CHECKING:
    from qywx_cli.integrations._common import Source

__all__ = ["notify_urls", "notify_view"]


def notify_view(source: Source) -> Callable[..., Any]:
    """A view for ``notify`` and ``notify/<instance>`` routes (``instance`` as a kwarg)."""
    http = require("django.http", "django")
    csrf = require("django.views.decorators.csrf", "django")
    endpoint = Endpoint(source)

    def view(request: Any, instance: str | None = None) -> Any:
        meta = request.META
        environ = {
            "REQUEST_METHOD": request.method,
            "PATH_INFO": request.path,
            "QUERY_STRING": meta.get("QUERY_STRING", ""),
            "CONTENT_LENGTH": meta.get("CONTENT_LENGTH", ""),
            "REMOTE_ADDR": meta.get("REMOTE_ADDR", "-"),
            "wsgi.input": request,  # HttpRequest.read(): the raw, unparsed body
        }
        response = endpoint.notify_app.respond_notify(environ, instance)
        reply = http.HttpResponse(
            response.body, status=response.status, content_type=response.content_type
        )
        for key, value in response.headers:
            if key != "Content-Type":
                reply[key] = value
        return reply

    exempt: Callable[..., Any] = csrf.csrf_exempt(view)
    return exempt


def notify_urls(source: Source) -> list[Any]:
    """URL patterns for ``notify`` and ``notify/<instance>`` to ``include()`` anywhere."""
    urls = require("django.urls", "django")
    view = notify_view(source)
    return [
        urls.re_path(r"^notify/?$", view, name="qywx-notify"),
        urls.re_path(r"^notify/(?P<instance>[^/]+)/?$", view, name="qywx-notify-instance"),
    ]
