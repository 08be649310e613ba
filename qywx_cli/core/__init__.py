"""qywx's library: everything the CLI does, without typer or rich.

The names below are the public surface; import them from here
(``from qywx_cli.core import App, QywxError``) rather than from the modules, whose
layout may change. They load lazily, on first use: ``import qywx_cli.core`` stays
free, and the CLI, which imports submodules directly, pays only for what a command
needs. See ``docs/architecture.md`` for how the modules fit together.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qywx_cli.core.app import SERVICE_ELEMENT, App, QywxProxyAuthService, QywxProxyInstance
    from qywx_cli.core.config import (
        AuthInstance,
        Diagnostic,
        ValidationReport,
        find_instance,
        load_instances,
        validate_paths,
    )
    from qywx_cli.core.crypto import WXBizMsgCrypt, generate_encoding_aes_key, generate_token
    from qywx_cli.core.doctor import Check, run_doctor
    from qywx_cli.core.errors import (
        AlertError,
        CallbackCryptoError,
        ConfigError,
        ConflictError,
        EventError,
        InstanceNotFound,
        LoginError,
        QywxError,
        RecordNotFound,
        RequestRejected,
        SecretKeyError,
        StoreError,
        UnsafeXMLError,
        UsageError,
        WeComAPIError,
        WeComTransportError,
    )
    from qywx_cli.core.events import Event, parse_event
    from qywx_cli.core.fakewecom import FakeWeCom
    from qywx_cli.core.login import LoginResult, LoginService
    from qywx_cli.core.masking import MaskedRepr, mask
    from qywx_cli.core.service import CallbackService, NotifyResponse, RetryOutcome
    from qywx_cli.core.settings import Settings, load_settings
    from qywx_cli.core.simulate import CallbackSimulator
    from qywx_cli.core.store import CallbackRecord, CorpAuth, Store, SuiteTicket
    from qywx_cli.core.wecom import WeComClient
    from qywx_cli.core.wsgi import NotifyApp

_EXPORTS: dict[str, str] = {
    # the element API
    "App": "app",
    "QywxProxyAuthService": "app",
    "QywxProxyInstance": "app",
    "SERVICE_ELEMENT": "app",
    # auths/ and qywx.toml
    "AuthInstance": "config",
    "Diagnostic": "config",
    "ValidationReport": "config",
    "find_instance": "config",
    "load_instances": "config",
    "validate_paths": "config",
    "Settings": "settings",
    "load_settings": "settings",
    # callbacks
    "WXBizMsgCrypt": "crypto",
    "generate_encoding_aes_key": "crypto",
    "generate_token": "crypto",
    "Event": "events",
    "parse_event": "events",
    "CallbackService": "service",
    "NotifyResponse": "service",
    "RetryOutcome": "service",
    "NotifyApp": "wsgi",
    "CallbackSimulator": "simulate",
    # state, WeCom, login
    "Store": "store",
    "CallbackRecord": "store",
    "CorpAuth": "store",
    "SuiteTicket": "store",
    "WeComClient": "wecom",
    "FakeWeCom": "fakewecom",
    "LoginService": "login",
    "LoginResult": "login",
    "Check": "doctor",
    "run_doctor": "doctor",
    # secrets and errors
    "MaskedRepr": "masking",
    "mask": "masking",
    "AlertError": "errors",
    "CallbackCryptoError": "errors",
    "ConfigError": "errors",
    "ConflictError": "errors",
    "EventError": "errors",
    "InstanceNotFound": "errors",
    "LoginError": "errors",
    "QywxError": "errors",
    "RecordNotFound": "errors",
    "RequestRejected": "errors",
    "SecretKeyError": "errors",
    "StoreError": "errors",
    "UnsafeXMLError": "errors",
    "UsageError": "errors",
    "WeComAPIError": "errors",
    "WeComTransportError": "errors",
}

__all__ = [
    "SERVICE_ELEMENT",
    "AlertError",
    "App",
    "AuthInstance",
    "CallbackCryptoError",
    "CallbackRecord",
    "CallbackService",
    "CallbackSimulator",
    "Check",
    "ConfigError",
    "ConflictError",
    "CorpAuth",
    "Diagnostic",
    "Event",
    "EventError",
    "FakeWeCom",
    "InstanceNotFound",
    "LoginError",
    "LoginResult",
    "LoginService",
    "MaskedRepr",
    "NotifyApp",
    "NotifyResponse",
    "QywxError",
    "QywxProxyAuthService",
    "QywxProxyInstance",
    "RecordNotFound",
    "RequestRejected",
    "RetryOutcome",
    "SecretKeyError",
    "Settings",
    "Store",
    "StoreError",
    "SuiteTicket",
    "UnsafeXMLError",
    "UsageError",
    "ValidationReport",
    "WXBizMsgCrypt",
    "WeComAPIError",
    "WeComClient",
    "WeComTransportError",
    "find_instance",
    "generate_encoding_aes_key",
    "generate_token",
    "load_instances",
    "load_settings",
    "mask",
    "parse_event",
    "run_doctor",
    "validate_paths",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and keep the name here."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
