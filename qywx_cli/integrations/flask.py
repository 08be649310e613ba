"""The notify endpoint as a Flask blueprint (``pip install 'qywx-cli[flask]'``).

::

    from flask import Flask
    from qywx_cli.core.app import App
    from qywx_cli.integrations.flask import notify_blueprint

    web = Flask(__name__)
    web.register_blueprint(notify_blueprint(App("."), url_prefix="/wecom"))
    # WeCom's callback URL: https://your.host/wecom/notify/QywxProxyTemp

The element doc's own style works too: a view returning ``auth_service.notify(...)``
gets a Flask Response (see :meth:`QywxProxyAuthService.notify`). The blueprint adds
what that one-liner cannot: the notify route's size cap, the refusal of repeated
query parameters, and a one-line answer for any method or instance name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qywx_cli.integrations._common import Endpoint, require

if TYPE_CHECKING:
    from qywx_cli.integrations._common import Source

__all__ = ["notify_blueprint"]

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
"""Every method reaches the handler, so a wrong one gets qywx's one-line 405, not a page."""


def notify_blueprint(source: Source, *, name: str = "qywx", url_prefix: str = "") -> Any:
    """A blueprint answering ``<url_prefix>/notify`` and ``<url_prefix>/notify/<Instance>``."""
    flask = require("flask", "flask")
    from qywx_cli.core.app import flask_response

    endpoint = Endpoint(source)
    blueprint = flask.Blueprint(name, __name__, url_prefix=url_prefix or None)

    def notify(instance: str | None = None) -> Any:
        response = endpoint.notify_app.respond_notify(flask.request.environ, instance)
        return flask_response(flask, response)

    notify.provide_automatic_options = False  # type: ignore[attr-defined]
    blueprint.add_url_rule("/notify", "notify", notify, methods=_METHODS, strict_slashes=False)
    blueprint.add_url_rule("/notify/<path:instance>", "notify", notify, methods=_METHODS)
    return blueprint
