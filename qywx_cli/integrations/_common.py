"""What the framework adapters share: where the callback service comes from."""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any

from qywx_cli.core.errors import UsageError

if TYPE_CHECKING:
    from qywx_cli.core.app import App, QywxProxyAuthService
    from qywx_cli.core.service import CallbackService
    from qywx_cli.core.wsgi import NotifyApp

    Source = App | QywxProxyAuthService | CallbackService


def require(module: str, extra: str) -> ModuleType:
    """Import a framework, or say in one line which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        raise UsageError(f"{top} is not installed: pip install 'qywx-cli[{extra}]'") from None


class Endpoint:
    """A :class:`NotifyApp` over an App, its service element or a CallbackService.

    An :class:`App` starts its callback workers on the first request, not when the
    web application is built, so importing a project's URL configuration (Django's
    ``manage.py check``, a test collecting routes) never opens the database.
    """

    def __init__(self, source: Source, **notify_app: Any) -> None:
        self._source = source
        self._options = notify_app
        self._app: NotifyApp | None = None
        self._lock = threading.Lock()

    @property
    def notify_app(self) -> NotifyApp:
        with self._lock:
            if self._app is None:
                from qywx_cli.core.app import App, QywxProxyAuthService
                from qywx_cli.core.wsgi import NotifyApp

                source: Any = self._source
                if isinstance(source, QywxProxyAuthService):
                    source = source._app
                service = source.notify_service() if isinstance(source, App) else source
                self._app = NotifyApp(service, **self._options)
            return self._app
