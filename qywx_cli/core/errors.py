"""Every way qywx can fail, as one exception tree.

    QywxError                       base; ``code`` is a short stable slug, ``str()`` one line
    ├── UsageError                  the caller asked for something malformed (exit 2)
    ├── ConfigError                 an auths/ instance or qywx.toml is unusable
    │   ├── InstanceNotFound        no instance of that name / path
    │   └── SecretKeyError          a stored secret is sealed with a key that is not set
    ├── CallbackCryptoError(code)   WXBizMsgCrypt failure, ``code`` = WeCom's -400xx number
    │   └── UnsafeXMLError          DTD / entity / oversize / too deep XML (-40002)
    ├── RequestRejected             a correctly signed callback refused anyway (stale, replayed)
    ├── EventError                  decrypted XML is not a well-formed callback event
    ├── StoreError                  the SQLite database cannot be opened, migrated or written
    │   └── RecordNotFound          unknown callback record / org code / element
    ├── ConflictError               a unique name is already held (an org code of another corp)
    ├── WeComAPIError(errcode)      WeCom's server API answered errcode != 0
    ├── WeComTransportError         WeCom's server API could not be reached (after retries)
    ├── ServerError                 a server cannot listen (port in use, no such interface)
    ├── LoginError                  a login could not be completed (corp not authorized, bad code…)
    └── AlertError                  an alert webhook did not accept an alert (after retries)

Why one tree: the CLI maps classes to exit codes in exactly one place
(``qywx_cli/cli/_errors.py``), the WSGI handler maps them to HTTP statuses in one
place, and library users can ``except QywxError``. Messages are a single line and
never contain a secret (token, key, ticket, permanent code, auth code): callers
building messages pass identifiers only, and :func:`~qywx_cli.core.masking.mask`
exists for the rare case a value must be hinted at (re-exported here; records that
hold a credential take their repr from :class:`~qywx_cli.core.masking.MaskedRepr`).
"""

from __future__ import annotations

from typing import ClassVar

# mask and masked_repr live in core/masking.py; re-exported for callers importing them here.
from qywx_cli.core.masking import mask, masked_repr

__all__ = [
    "AlertError",
    "CallbackCryptoError",
    "ConfigError",
    "ConflictError",
    "EventError",
    "InstanceNotFound",
    "LoginError",
    "QywxError",
    "RecordNotFound",
    "RequestRejected",
    "SecretKeyError",
    "ServerError",
    "StoreError",
    "UnsafeXMLError",
    "UsageError",
    "WeComAPIError",
    "WeComTransportError",
    "mask",
    "masked_repr",
]


class QywxError(Exception):
    """Base of every qywx failure; ``code`` is stable for scripts, the text is for people."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        # Collapse to one line: messages end up in logs, stderr and HTTP bodies.
        super().__init__(" ".join(str(message).split()))
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class UsageError(QywxError):
    code = "usage"


class ConfigError(QywxError):
    code = "config"


class InstanceNotFound(ConfigError):
    code = "instance-not-found"


class SecretKeyError(ConfigError):
    """A stored secret (permanent code, token) cannot be opened with the keys set: none
    is set, or not the one it was sealed with (core/sealing.py). The message names what
    to set and the key id, never a key."""

    code = "secret-key"


class CallbackCryptoError(QywxError):
    """A WXBizMsgCrypt failure, carrying WeCom's numeric error code (wecom-protocol.md §1.6)."""

    VALIDATE_SIGNATURE = -40001
    PARSE_XML = -40002
    COMPUTE_SIGNATURE = -40003
    ILLEGAL_AES_KEY = -40004
    VALIDATE_RECEIVE_ID = -40005
    ENCRYPT_AES = -40006
    DECRYPT_AES = -40007
    ILLEGAL_BUFFER = -40008
    ENCODE_BASE64 = -40009
    DECODE_BASE64 = -40010
    GEN_RETURN_XML = -40011

    NAMES: ClassVar[dict[int, str]] = {
        -40001: "signature mismatch",
        -40002: "XML parse failed",
        -40003: "signature computation failed",
        -40004: "illegal EncodingAESKey",
        -40005: "receiveid mismatch",
        -40006: "AES encryption failed",
        -40007: "AES decryption failed",
        -40008: "decrypted buffer is illegal",
        -40009: "base64 encoding failed",
        -40010: "base64 decoding failed",
        -40011: "reply XML generation failed",
    }

    def __init__(self, wecom_code: int, detail: str = "") -> None:
        self.wecom_code = wecom_code
        name = self.NAMES.get(wecom_code, "callback crypto error")
        super().__init__(
            f"{name} ({wecom_code})" + (f": {detail}" if detail else ""),
            code=f"crypto{wecom_code}",
        )


class UnsafeXMLError(CallbackCryptoError):
    """XML refused before parsing finished: DTDs, entities, oversize or over-deep input."""

    def __init__(self, detail: str) -> None:
        super().__init__(CallbackCryptoError.PARSE_XML, detail)
        self.code = "unsafe-xml"


class RequestRejected(QywxError):
    """Signed with a valid token but refused: its timestamp is stale, or it is a replay."""

    code = "rejected"


class EventError(QywxError):
    code = "event"


class StoreError(QywxError):
    code = "store"


class RecordNotFound(StoreError):
    code = "not-found"


class ConflictError(QywxError):
    """The thing asked for is held by someone else; ``force`` style options take it over."""

    code = "conflict"


class WeComAPIError(QywxError):
    """WeCom's server API refused a call; ``errcode`` is WeCom's global error code (§4.3)."""

    code = "wecom-api"

    def __init__(self, errcode: int, errmsg: str, *, api: str = "") -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        where = f"{api}: " if api else ""
        super().__init__(f"{where}WeCom errcode {errcode}: {errmsg}".strip())


class WeComTransportError(QywxError):
    code = "wecom-transport"


class ServerError(QywxError):
    """``qywx serve`` / ``fake-wecom`` cannot listen: the address is wrong, not the command line."""

    code = "server"


class LoginError(QywxError):
    code = "login"


class AlertError(QywxError):
    """The alert webhook refused or could not be reached; the message masks its URL."""

    code = "alert"
