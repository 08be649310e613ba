"""Typed WeCom callback events: parse the decrypted XML, or build it for simulations.

WeCom sends two shapes (wecom-protocol.md §3):

* **command callbacks** (指令回调) to the template's URL, keyed by ``InfoType`` and carrying
  ``SuiteId``, ``TimeStamp`` and, for corp-specific events, ``AuthCorpId`` (§3.1-3.5);
* **data callbacks** to the 代开发 app's own URL in the self-built-app format, keyed by
  ``MsgType`` (``event`` plus ``Event`` for events), with the corp in ``ToUserName`` and the
  time in ``CreateTime`` (§3.6, §3.7): member messages and events (``enter_agent``, text
  messages, ``change_contact``, ``batch_job_result``, ``unlicensed_notify``; docs 97165);
* **system events** to the provider's 系统事件接收URL, in the command shape but with
  ``ServiceCorpId`` instead of ``SuiteId``: the interface-licence events
  ``license_pay_success``, ``license_refund`` and ``auto_activate`` (docs 97196, 95805,
  95994; wecom-provider-apis.md §7.2).

Values are stripped: the documentation's own suite_ticket sample pads a CDATA section
with a space (``<InfoType> <![CDATA[suite_ticket]]></InfoType>``, §3.1). Parsing goes
through :func:`qywx_cli.core.xmlsafe.parse_fields` only: flat documents are read
directly, anything else by ``parse_xml``, which refuses DTDs and entities.

Error messages name a missing field but never quote a value: SuiteTicket and AuthCode are
credentials (an AuthCode buys a permanent code, §3.2).
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from types import MappingProxyType
from typing import ClassVar, Final, Literal, TypedDict

from qywx_cli.core.errors import (
    CallbackCryptoError,
    EventError,
    UnsafeXMLError,
    UsageError,
)
from qywx_cli.core.masking import mask, masked_repr
from qywx_cli.core.xmlsafe import element_fields, parse_document, parse_xml

__all__ = [
    "AUTH_CODE_PREFIX",
    "DATA_EVENT_NAMES",
    "EVENT_NAMES",
    "PROVIDER_EVENT_NAMES",
    "SECRET_FIELDS",
    "AutoActivateEvent",
    "AutoActivatedAccount",
    "BatchJobResultEvent",
    "CancelAuthEvent",
    "ChangeAppAdminEvent",
    "ChangeAuthEvent",
    "ChangeContactEvent",
    "ChangeExternalContactEvent",
    "CreateAuthEvent",
    "EnterAgentEvent",
    "Event",
    "EventKind",
    "LicensePaySuccessEvent",
    "LicenseRefundEvent",
    "ResetPermanentCodeEvent",
    "SuiteTicketEvent",
    "TextMessageEvent",
    "UnknownEvent",
    "UnlicensedNotifyEvent",
    "build_event_xml",
    "build_provider_event_xml",
    "content_key",
    "corp_id_from_auth_code",
    "is_secret_field",
    "mask_fields",
    "parse_event",
]

EventKind = Literal["command", "data"]

EVENT_NAMES: Final = (
    "suite_ticket",
    "create_auth",
    "change_auth",
    "cancel_auth",
    "reset_permanent_code",
    "change_contact",
    "change_external_contact",
    "change_app_admin",
    "batch_job_result",
    "enter_agent",
    "text",
)
"""Events :func:`build_event_xml` can build, i.e. what ``simulate-callback --event`` offers."""

DATA_EVENT_NAMES: Final = (
    "change_external_contact",
    "change_app_admin",
    "batch_job_result",
    "enter_agent",
    "text",
)
"""The :data:`EVENT_NAMES` built as data callbacks to the app's URL (self-built format,
§3.6-3.7): ``ToUserName`` and the ciphertext's receiveid are the authorized corp, not
the suite (§2.2)."""

SECRET_FIELDS: Final = frozenset(
    {
        "SuiteTicket",
        "AuthCode",
        "PermanentCode",
        "AccessToken",
        "SuiteAccessToken",
        "ProviderAccessToken",
        "UserTicket",
        "WelcomeCode",
        "RegisterCode",
    }
)
"""Field names whose values are credentials, masked in any display."""

_SECRET_SUFFIXES: Final = ("Ticket", "Token", "Secret", "AuthCode", "PermanentCode")
MAX_CODE_BYTES: Final = 512
"""SuiteTicket and AuthCode: "最长为512字节" (wecom-protocol.md §3.1, §3.2)."""

AUTH_CODE_PREFIX: Final = "AUTHCODE-"
"""Simulated AuthCodes read ``AUTHCODE-<corp_id>-<random>`` so a fake WeCom knows the corp."""


def is_secret_field(name: str) -> bool:
    """True for known credential fields and for look-alikes in events we do not model."""
    return name in SECRET_FIELDS or name.endswith(_SECRET_SUFFIXES)


# ---------------------------------------------------------------------------------------
# Event types


@dataclass(frozen=True, kw_only=True, repr=False)
class Event:
    """What every callback carries; ``fields`` holds every top-level field, for display.

    ``corp_id`` is AuthCorpId for command callbacks and ToUserName for data callbacks;
    ``timestamp`` is TimeStamp or CreateTime (seconds).
    """

    info_type: str
    kind: EventKind
    suite_id: str | None
    corp_id: str | None
    timestamp: int | None
    fields: Mapping[str, str] = field(hash=False)

    secret_fields: ClassVar[frozenset[str]] = frozenset()

    def __repr__(self) -> str:
        # Subclass attributes such as ``ticket`` are left out; ``fields`` shows them masked.
        return masked_repr(
            self,
            names=(f.name for f in dataclass_fields(Event)),
            shown={"fields": mask_fields(self)},
        )


@dataclass(frozen=True, kw_only=True, repr=False)
class SuiteTicketEvent(Event):
    """suite_ticket (§3.1): pushed every ten minutes, valid 30; always use the newest."""

    ticket: str

    secret_fields: ClassVar[frozenset[str]] = frozenset({"SuiteTicket"})


@dataclass(frozen=True, kw_only=True, repr=False)
class CreateAuthEvent(Event):
    """create_auth (§3.2): a corp authorized the template; AuthCode is single use, 10 min."""

    auth_code: str
    state: str | None
    extra_info: str | None

    secret_fields: ClassVar[frozenset[str]] = frozenset({"AuthCode"})


@dataclass(frozen=True, kw_only=True, repr=False)
class ChangeAuthEvent(Event):
    """change_auth (§3.3): visibility, enablement or permissions changed; re-read auth info."""

    state: str | None


@dataclass(frozen=True, kw_only=True, repr=False)
class CancelAuthEvent(Event):
    """cancel_auth (§3.4): the corp removed the app; its data must be deleted."""


@dataclass(frozen=True, kw_only=True, repr=False)
class ResetPermanentCodeEvent(Event):
    """reset_permanent_code (§3.5, 代开发 only): exchange AuthCode for the new secret."""

    auth_code: str

    secret_fields: ClassVar[frozenset[str]] = frozenset({"AuthCode"})


@dataclass(frozen=True, kw_only=True, repr=False)
class ChangeContactEvent(Event):
    """change_contact (§3.6), command format (InfoType) or data format (Event).

    ``user_id`` is UserID for the *_user changes, ``new_user_id`` NewUserID when an
    update_user renamed the member, ``party_id`` Id for the *_party changes and
    ``tag_id`` TagId for update_tag. Since the ID upgrade a 代开发 app may get only
    UserID and Department (docs 96302), so every other field is optional.
    """

    change_type: str
    user_id: str | None
    party_id: str | None
    tag_id: str | None
    new_user_id: str | None = None


@dataclass(frozen=True, kw_only=True, repr=False)
class ChangeExternalContactEvent(Event):
    """change_external_contact (§3.7): recorded only; WelcomeCode is a short-lived secret."""

    change_type: str
    user_id: str | None
    external_user_id: str | None

    secret_fields: ClassVar[frozenset[str]] = frozenset({"WelcomeCode"})


@dataclass(frozen=True, kw_only=True, repr=False)
class EnterAgentEvent(Event):
    """enter_agent (data callback): a member opened the app; sent only with isreportenter=1.

    ``user_id`` is FromUserName; ``event_key`` is empty in every published sample.
    """

    user_id: str
    agent_id: int | None
    event_key: str | None


@dataclass(frozen=True, kw_only=True, repr=False)
class TextMessageEvent(Event):
    """A text message a member sent to the app (MsgType text); ``info_type`` is ``text``.

    WeCom redelivers a message it got no 200 for; MsgId is the documented dedupe key
    (§3.8), and the store's content key already covers a redelivery.
    """

    user_id: str
    content: str
    msg_id: str | None
    agent_id: int | None


@dataclass(frozen=True, kw_only=True, repr=False)
class ChangeAppAdminEvent(Event):
    """change_app_admin (data callback): the corp's admin changed who administers the app.

    The notice names only the app (AgentID); the admin list itself is read with the
    corp token when needed, so qywx records the event and does not call WeCom.
    """

    agent_id: int | None


@dataclass(frozen=True, kw_only=True, repr=False)
class BatchJobResultEvent(Event):
    """batch_job_result (data callback): an asynchronous contact job (sync_user…) finished.

    The documented sample nests JobId, JobType, ErrCode and ErrMsg in ``<BatchJob>``;
    some mirrors put them at the top level, so both layouts are read.
    """

    job_id: str
    job_type: str
    errcode: int
    errmsg: str | None

    @property
    def succeeded(self) -> bool:
        return self.errcode == 0


@dataclass(frozen=True, kw_only=True, repr=False)
class UnlicensedNotifyEvent(Event):
    """unlicensed_notify (data callback, docs 95716): a member without an active interface
    licence opened the app, so WeCom refused the app's calls on that member's behalf."""

    user_id: str
    agent_id: int | None


@dataclass(frozen=True, kw_only=True, repr=False)
class LicensePaySuccessEvent(Event):
    """license_pay_success (system event, docs 97196): an order was paid and its activation
    codes exist; ``order_id`` is the sub-order id for a multi-corp order."""

    service_corp_id: str
    order_id: str
    buyer_user_id: str | None


@dataclass(frozen=True, kw_only=True, repr=False)
class LicenseRefundEvent(Event):
    """license_refund (system event, docs 95805): ``order_status`` 1 refunded, 2 refused."""

    service_corp_id: str
    order_id: str
    order_status: int | None

    @property
    def refunded(self) -> bool:
        return self.order_status == 1


@dataclass(frozen=True)
class AutoActivatedAccount:
    """One ``<AccountList>`` of auto_activate: the code WeCom bound to a member by itself.

    ``previous_status``: 1 no licence before, 2 active with ≤ 7 days left, 3 expired.
    """

    active_code: str
    type: int | None
    user_id: str
    expire_time: int | None
    previous_status: int | None
    previous_active_code: str | None


@dataclass(frozen=True, kw_only=True, repr=False)
class AutoActivateEvent(Event):
    """auto_activate (system event, docs 95994): a corp with auto-activation on bound codes.

    ``scene``: 1 a member opened the app, 2 the provider sent a message, 3 the provider
    called an 互通 API. Each ``<AccountList>`` element is one account.
    """

    service_corp_id: str
    scene: int | None
    accounts: tuple[AutoActivatedAccount, ...]


@dataclass(frozen=True, kw_only=True, repr=False)
class UnknownEvent(Event):
    """Any InfoType / Event / MsgType qywx has no handler for: logged, not an error."""


# ---------------------------------------------------------------------------------------
# Parsing


class _BaseFields(TypedDict):
    info_type: str
    kind: EventKind
    suite_id: str | None
    corp_id: str | None
    timestamp: int | None
    fields: Mapping[str, str]


@dataclass(frozen=True)
class _Common:
    info_type: str
    kind: EventKind
    suite_id: str | None
    corp_id: str | None
    timestamp: int | None
    fields: Mapping[str, str]
    #: the document's tree, or None for a flat one (read without a tree; built on demand)
    node: ET.Element | None
    xml: str | bytes = field(default=b"", repr=False)

    @functools.cached_property
    def root(self) -> ET.Element:
        """The element the fields came from; a flat document is parsed only if asked."""
        return self.node if self.node is not None else parse_xml(self.xml)

    def required(self, name: str, max_bytes: int | None = None) -> str:
        value = self.fields.get(name, "")
        if not value:
            raise EventError(f"{self.info_type} event is missing {name}")
        if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
            raise EventError(f"{self.info_type} event's {name} is longer than {max_bytes} bytes")
        return value

    def optional(self, name: str) -> str | None:
        return self.fields.get(name) or None

    def integer(self, name: str) -> int | None:
        return _int_field(self.fields, name)

    def nested(self, node: ET.Element) -> _Common:
        """The same event read at ``node`` (``<BatchJob>``, one ``<AccountList>``)."""
        return replace(self, fields=MappingProxyType(element_fields(node)), node=node)

    def base(self) -> _BaseFields:
        return {
            "info_type": self.info_type,
            "kind": self.kind,
            "suite_id": self.suite_id,
            "corp_id": self.corp_id,
            "timestamp": self.timestamp,
            "fields": self.fields,
        }


def _suite_ticket(c: _Common) -> Event:
    c.required("SuiteId")
    # WeCom: "最长为512字节" (§3.1); a longer one is not WeCom's and would be stored as is.
    return SuiteTicketEvent(**c.base(), ticket=c.required("SuiteTicket", MAX_CODE_BYTES))


def _create_auth(c: _Common) -> Event:
    c.required("SuiteId")
    return CreateAuthEvent(
        **c.base(),
        auth_code=c.required("AuthCode", MAX_CODE_BYTES),
        state=c.optional("State"),
        extra_info=c.optional("ExtraInfo"),
    )


def _change_auth(c: _Common) -> Event:
    c.required("SuiteId")
    c.required("AuthCorpId")
    return ChangeAuthEvent(**c.base(), state=c.optional("State"))


def _cancel_auth(c: _Common) -> Event:
    c.required("SuiteId")
    c.required("AuthCorpId")
    return CancelAuthEvent(**c.base())


def _reset_permanent_code(c: _Common) -> Event:
    c.required("SuiteId")
    return ResetPermanentCodeEvent(**c.base(), auth_code=c.required("AuthCode", MAX_CODE_BYTES))


def _change_contact(c: _Common) -> Event:
    return ChangeContactEvent(
        **c.base(),
        change_type=c.required("ChangeType"),
        user_id=c.optional("UserID"),
        party_id=c.optional("Id"),
        tag_id=c.optional("TagId"),
        new_user_id=c.optional("NewUserID"),
    )


def _change_external_contact(c: _Common) -> Event:
    return ChangeExternalContactEvent(
        **c.base(),
        change_type=c.required("ChangeType"),
        user_id=c.optional("UserID"),
        external_user_id=c.optional("ExternalUserID"),
    )


def _enter_agent(c: _Common) -> Event:
    return EnterAgentEvent(
        **c.base(),
        user_id=c.required("FromUserName"),
        agent_id=c.integer("AgentID"),
        event_key=c.optional("EventKey"),
    )


def _text(c: _Common) -> Event:
    # Content is the member's text as typed: not stripped (element_fields strips, so the
    # element's own text is read), and an empty message is still a message.
    node = c.root.find("Content")
    if node is None:
        raise EventError("text message is missing Content")
    return TextMessageEvent(
        **c.base(),
        user_id=c.required("FromUserName"),
        content=node.text or "",
        msg_id=c.optional("MsgId"),
        agent_id=c.integer("AgentID"),
    )


def _batch_job_result(c: _Common) -> Event:
    job = c.root.find("BatchJob")
    inner = c.nested(job) if job is not None and len(job) else c
    errcode = inner.integer("ErrCode")
    if errcode is None:
        raise EventError("batch_job_result event is missing ErrCode")
    return BatchJobResultEvent(
        **c.base(),
        job_id=inner.required("JobId"),
        job_type=inner.required("JobType"),
        errcode=errcode,
        errmsg=inner.optional("ErrMsg"),
    )


def _change_app_admin(c: _Common) -> Event:
    return ChangeAppAdminEvent(**c.base(), agent_id=c.integer("AgentID"))


def _unlicensed_notify(c: _Common) -> Event:
    return UnlicensedNotifyEvent(
        **c.base(), user_id=c.required("FromUserName"), agent_id=c.integer("AgentID")
    )


def _licence_common(c: _Common) -> str:
    c.required("AuthCorpId")
    return c.required("ServiceCorpId")


def _license_pay_success(c: _Common) -> Event:
    return LicensePaySuccessEvent(
        **c.base(),
        service_corp_id=_licence_common(c),
        order_id=c.required("OrderId"),
        buyer_user_id=c.optional("BuyerUserId"),
    )


def _license_refund(c: _Common) -> Event:
    return LicenseRefundEvent(
        **c.base(),
        service_corp_id=_licence_common(c),
        order_id=c.required("OrderId"),
        order_status=c.integer("OrderStatus"),
    )


def _auto_activate(c: _Common) -> Event:
    accounts = []
    for node in c.root.iter("AccountList"):
        # Some samples wrap each account in <Item>; read the leaves either way.
        items = node.findall("Item") or [node]
        for item in items:
            one = c.nested(item)
            accounts.append(
                AutoActivatedAccount(
                    active_code=one.required("ActiveCode"),
                    type=one.integer("Type"),
                    user_id=one.required("UserId"),
                    expire_time=one.integer("ExpireTime"),
                    previous_status=one.integer("PreviousStatus"),
                    previous_active_code=one.optional("PreviousActiveCode"),
                )
            )
    return AutoActivateEvent(
        **c.base(),
        service_corp_id=_licence_common(c),
        scene=c.integer("Scene"),
        accounts=tuple(accounts),
    )


_COMMAND_PARSERS: Final[Mapping[str, Callable[[_Common], Event]]] = {
    "suite_ticket": _suite_ticket,
    "create_auth": _create_auth,
    "change_auth": _change_auth,
    "cancel_auth": _cancel_auth,
    "reset_permanent_code": _reset_permanent_code,
    "change_contact": _change_contact,
    "change_external_contact": _change_external_contact,
    # System events (provider URL): the command shape, ServiceCorpId for SuiteId.
    "license_pay_success": _license_pay_success,
    "license_refund": _license_refund,
    "auto_activate": _auto_activate,
}
# The auth events never arrive in the data format; contact events come in both (§3.6).
_DATA_PARSERS: Final[Mapping[str, Callable[[_Common], Event]]] = {
    "change_contact": _change_contact,
    "change_external_contact": _change_external_contact,
    "enter_agent": _enter_agent,
    "text": _text,
    "batch_job_result": _batch_job_result,
    "change_app_admin": _change_app_admin,
    "unlicensed_notify": _unlicensed_notify,
}


def _int_field(fields: Mapping[str, str], name: str) -> int | None:
    value = fields.get(name, "")
    if not value:
        return None
    # WeCom's integers are epoch seconds and ids; the stores keep them as 64-bit signed
    # integers (SQLite's INTEGER, PostgreSQL's bigint), so a larger one is malformed.
    if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > _INT64_MAX:
        raise EventError(f"{name} is not an integer from 0 to 2**63-1")
    return int(value)


_INT64_MAX: Final = 2**63 - 1


def parse_event(xml: str | bytes) -> Event:
    """Parse a decrypted callback into its event type; unknown types give UnknownEvent."""
    try:
        parsed, root = parse_document(xml)
    except UnsafeXMLError:
        raise
    except CallbackCryptoError as exc:
        raise EventError(f"callback event is not well-formed XML: {exc}") from None
    fields = MappingProxyType(parsed)
    if info_type := fields.get("InfoType", ""):
        common = _Common(
            info_type=info_type,
            kind="command",
            suite_id=fields.get("SuiteId") or None,
            corp_id=fields.get("AuthCorpId") or None,
            timestamp=_int_field(fields, "TimeStamp"),
            fields=fields,
            node=root,
            xml=xml,
        )
        parsers = _COMMAND_PARSERS
    else:
        msg_type = fields.get("MsgType", "")
        if not msg_type:
            raise EventError("callback XML has neither InfoType nor MsgType")
        if msg_type == "event":
            info_type = fields.get("Event", "")
            if not info_type:
                raise EventError("event callback is missing Event")
        else:
            info_type = msg_type  # a message (text, image…) to the app: recorded as is
        common = _Common(
            info_type=info_type,
            kind="data",
            suite_id=None,
            corp_id=fields.get("ToUserName") or None,
            timestamp=_int_field(fields, "CreateTime"),
            fields=fields,
            node=root,
            xml=xml,
        )
        parsers = _DATA_PARSERS
    parser = parsers.get(info_type)
    if parser is None:
        return UnknownEvent(**common.base())
    return parser(common)


# ---------------------------------------------------------------------------------------
# Building (simulate-callback, fake WeCom, tests)

_NO_OVERRIDES: Final[Mapping[str, str]] = MappingProxyType({})
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


@functools.cache
def _not_xml_char() -> re.Pattern[str]:
    """A character XML cannot carry. Compiled on first use: the Unicode ranges cost 10-17 ms
    to compile, paid by every process that loads the events (``qywx serve`` at each
    start), though only building an event (simulate, the fake) asks."""
    return re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _escape(value: str) -> str:
    """Character data as XML text: ``&`` first, then the two angle brackets.

    Written here rather than taken from ``xml.sax.saxutils``, which imports
    ``urllib.request`` (and with it http.client and email): about 35 ms of every qywx
    process that loads the events, for three replacements.
    """
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cdata(value: str) -> str:
    # "]]>" cannot appear inside CDATA: close the section after "]]" and reopen for ">".
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _auth_code(corp_id: str | None, token: Callable[[int], str]) -> str:
    """64+ characters (get_permanent_code takes 64-512, §4); the corp is readable if given."""
    if corp_id is None:
        return token(48)
    # The random tail has no "-", so the corp id is everything up to the last "-".
    return f"{AUTH_CODE_PREFIX}{corp_id}-{token(48).replace('-', '_')}"


def corp_id_from_auth_code(auth_code: str) -> str | None:
    """The corp a simulated AuthCode was built for (see :func:`build_event_xml`), else None."""
    if not auth_code.startswith(AUTH_CODE_PREFIX):
        return None
    corp_id, sep, _ = auth_code[len(AUTH_CODE_PREFIX) :].rpartition("-")
    return corp_id if sep and corp_id else None


def _template(
    info_type: str, suite_id: str, corp_id: str | None, now: int, token: Callable[[int], str]
) -> list[tuple[str, str, bool]]:
    """(name, value, as CDATA) in the documented order of each sample (§3.1-3.6)."""

    def corp() -> str:
        if corp_id is None:
            raise UsageError(f"a {info_type} event needs a corp id (AuthCorpId)")
        return corp_id

    head = [("SuiteId", suite_id, True)]
    kind = ("InfoType", info_type, True)
    stamp = ("TimeStamp", str(now), False)
    if info_type == "suite_ticket":
        return [*head, kind, stamp, ("SuiteTicket", token(48), True)]
    if info_type == "create_auth":
        return [
            *head,
            ("AuthCode", _auth_code(corp_id, token), True),
            kind,
            stamp,
            ("State", "", True),
            ("ExtraInfo", "", False),
        ]
    if info_type == "change_auth":
        return [*head, kind, stamp, ("AuthCorpId", corp(), True), ("State", "", True)]
    if info_type == "cancel_auth":
        return [*head, kind, stamp, ("AuthCorpId", corp(), True)]
    if info_type == "reset_permanent_code":
        return [*head, ("AuthCode", _auth_code(corp_id, token), True), kind, stamp]
    if info_type == "change_contact":
        return [
            *head,
            ("AuthCorpId", corp(), True),
            kind,
            stamp,
            ("ChangeType", "create_user", True),
            ("UserID", "zhangsan", True),
            ("Name", "张三", True),
            ("Department", "1", True),
        ]
    if info_type in DATA_EVENT_NAMES:
        return _data_template(info_type, corp(), now, token)
    raise UsageError(f"unknown event {info_type!r}; choose one of {', '.join(EVENT_NAMES)}")


def _data_template(
    info_type: str, corp_id: str, now: int, token: Callable[[int], str]
) -> list[tuple[str, str, bool]]:
    """A data callback in the self-built-app format, fields in the order of the samples.

    change_external_contact follows docs 96361 (§3.7), enter_agent and the text message
    the self-built app's samples (§1.7), batch_job_result its ``<BatchJob>`` sample, and
    change_app_admin the admin-change notice (MsgType event, Event, AgentID). Fresh
    WelcomeCode / JobId / MsgId per build keep repeated sends distinct deliveries.
    """
    stamp = ("CreateTime", str(now), False)
    head = [("ToUserName", corp_id, True)]
    event = [("MsgType", "event", True), ("Event", info_type, True)]
    sys_sender = ("FromUserName", "sys", True)
    member = ("FromUserName", "zhangsan", True)
    agent = ("AgentID", "1", False)
    if info_type == "change_external_contact":
        return [
            *head,
            sys_sender,
            stamp,
            *event,
            ("ChangeType", "add_external_contact", True),
            ("UserID", "zhangsan", True),
            ("ExternalUserID", "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA", True),
            ("State", "", True),
            ("WelcomeCode", token(32), True),
        ]
    if info_type == "change_app_admin":
        return [*head, sys_sender, stamp, *event, agent]
    if info_type == "batch_job_result":
        job = (
            f"<JobId>{_cdata(token(24))}</JobId><JobType>{_cdata('sync_user')}</JobType>"
            "<ErrCode>0</ErrCode><ErrMsg>ok</ErrMsg>"
        )
        return [*head, sys_sender, stamp, *event, ("BatchJob", job, False)]
    if info_type == "enter_agent":
        return [*head, member, stamp, *event, ("EventKey", "", True), agent]
    # text: a member's message; MsgId is WeCom's dedupe key (§3.8), 19 digits at most.
    msg_id = str(int(hashlib.sha256(token(16).encode("utf-8")).hexdigest()[:15], 16))
    return [
        *head,
        member,
        stamp,
        ("MsgType", "text", True),
        ("Content", "hello", True),
        ("MsgId", msg_id, False),
        agent,
    ]


def build_event_xml(
    info_type: str,
    *,
    suite_id: str,
    corp_id: str | None = None,
    overrides: Mapping[str, str] = _NO_OVERRIDES,
    now: Callable[[], float] = time.time,
    token: Callable[[int], str] = secrets.token_urlsafe,
) -> str:
    """The plaintext XML WeCom would encrypt for ``info_type``, with fresh ticket / AuthCode.

    ``overrides`` replace a field's value in place (keeping its CDATA or plain style) or
    append a new CDATA field; any value is escaped so the document stays well-formed.
    :data:`DATA_EVENT_NAMES` come in the data format, addressed to ``corp_id``.
    """
    fields = _template(info_type, suite_id, corp_id, int(now()), token)
    return _render(fields, overrides, raw={"BatchJob"})


PROVIDER_EVENT_NAMES: Final = ("license_pay_success", "license_refund", "auto_activate")
"""System events :func:`build_provider_event_xml` builds (``simulate-callback --provider``)."""


def build_provider_event_xml(
    info_type: str,
    *,
    provider_corp_id: str,
    corp_id: str,
    overrides: Mapping[str, str] = _NO_OVERRIDES,
    now: Callable[[], float] = time.time,
    token: Callable[[int], str] = secrets.token_urlsafe,
) -> str:
    """A system event for the provider URL, fields in the order of the docs' samples.

    Each build gets a fresh OrderId / ActiveCode, so repeated sends are distinct
    deliveries; ``overrides`` work as in :func:`build_event_xml`.
    """
    stamp = int(now())
    head = [
        ("ServiceCorpId", provider_corp_id, True),
        ("InfoType", info_type, True),
        ("AuthCorpId", corp_id, True),
    ]
    order = ("OrderId", "OI" + token(24).replace("-", "").replace("_", ""), True)
    fields: list[tuple[str, str, bool]]
    if info_type == "license_pay_success":
        fields = [*head, order, ("BuyerUserId", "zhangsan", True), ("TimeStamp", str(stamp), False)]
    elif info_type == "license_refund":
        fields = [*head, order, ("OrderStatus", "1", False), ("TimeStamp", str(stamp), False)]
    elif info_type == "auto_activate":
        fields = [
            *head,
            ("Scene", "1", False),
            ("TimeStamp", str(stamp), False),
            # One account; the nested element is written out whole by _render.
            ("AccountList", _account_xml(token(24), stamp), False),
        ]
    else:
        raise UsageError(
            f"unknown system event {info_type!r}; choose one of {', '.join(PROVIDER_EVENT_NAMES)}"
        )
    return _render(fields, overrides, raw={"AccountList"})


def _account_xml(code: str, now: int) -> str:
    year = 365 * 86400
    return (
        f"<ActiveCode>{_cdata(code)}</ActiveCode><Type>1</Type>"
        f"<ExpireTime>{now + year}</ExpireTime><UserId>{_cdata('zhangsan')}</UserId>"
        "<PreviousStatus>1</PreviousStatus>"
    )


def _render(
    fields: list[tuple[str, str, bool]],
    overrides: Mapping[str, str],
    raw: frozenset[str] | set[str] = frozenset(),
) -> str:
    """``<xml>`` of ``fields`` with ``overrides`` applied; names in ``raw`` hold markup."""
    positions = {name: i for i, (name, _, _) in enumerate(fields)}
    raw = set(raw)
    for name, value in overrides.items():
        if not _FIELD_NAME.fullmatch(name):
            raise UsageError(f"{name!r} is not a valid XML field name")
        if _not_xml_char().search(value):
            raise UsageError(f"the value for {name} contains characters XML cannot carry")
        raw.discard(name)  # an override is a value, never markup
        if name in positions:
            fields[positions[name]] = (name, value, fields[positions[name]][2])
        else:
            positions[name] = len(fields)
            fields.append((name, value, True))

    def text(name: str, value: str, as_cdata: bool) -> str:
        if name in raw:
            return value
        return _cdata(value) if as_cdata else _escape(value)

    body = "\n".join(f"<{n}>{text(n, v, c)}</{n}>" for n, v, c in fields)
    return f"<xml>\n{body}\n</xml>"


# ---------------------------------------------------------------------------------------
# Display and dedupe


def mask_fields(
    event_or_fields: Event | Mapping[str, str], show_secrets: bool = False
) -> dict[str, str]:
    """The fields for display, credentials masked unless ``show_secrets``."""
    if isinstance(event_or_fields, Event):
        fields, secret = event_or_fields.fields, event_or_fields.secret_fields
    else:
        fields, secret = event_or_fields, frozenset()
    if show_secrets:
        return dict(fields)
    return {
        name: mask(value) if name in secret or is_secret_field(name) else value
        for name, value in fields.items()
    }


def content_key(instance: str, plaintext: bytes) -> str:
    """The Store's dedupe key for a redelivery: the same decrypted content, re-encrypted.

    WeCom encrypts each delivery with a fresh random prefix (§1.2), so only the plaintext
    identifies a retry; the instance is included so two instances never collide.
    """
    return hashlib.sha256(instance.encode("utf-8") + b"\0" + plaintext).hexdigest()
