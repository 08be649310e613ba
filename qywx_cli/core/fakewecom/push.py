"""WeCom's pushes, played by the fake: command callbacks to a template's URL (§3.1, §2.2),
system events to the provider's URL (receiveid: the provider corp id) and data callbacks
to an app's URL (receiveid: the authorized corp)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlunsplit

import httpx

from qywx_cli.core.crypto import WXBizMsgCrypt
from qywx_cli.core.errors import QywxError
from qywx_cli.core.tls import client_ssl_context
from qywx_cli.core.urls import split_url


class SuiteInstanceLike(Protocol):
    """What a push needs of an auths/ instance (config.AuthInstance fits)."""

    @property
    def suite_id(self) -> str: ...

    @property
    def token(self) -> str: ...

    @property
    def encoding_aes_key(self) -> str: ...


def _cdata(value: str) -> str:
    # "]]>" cannot occur inside CDATA; split it across two sections.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def suite_ticket_xml(suite_id: str, ticket: str, timestamp: int) -> str:
    """The decrypted suite_ticket command callback, field for field as §3.1 shows it."""
    return (
        "<xml>\n"
        f"<SuiteId>{_cdata(suite_id)}</SuiteId>\n"
        f"<InfoType>{_cdata('suite_ticket')}</InfoType>\n"
        f"<TimeStamp>{timestamp}</TimeStamp>\n"
        f"<SuiteTicket>{_cdata(ticket)}</SuiteTicket>\n"
        "</xml>"
    )


@dataclass(frozen=True, repr=False)
class ProviderKey:
    """The 系统事件接收URL's token and key; ``suite_id`` is the provider corp id, the
    receiveid and envelope name of a system event (wecom-provider-apis.md §7.2)."""

    suite_id: str
    token: str
    encoding_aes_key: str

    def __repr__(self) -> str:
        return f"ProviderKey(provider_corp_id={self.suite_id!r})"


def push_client() -> httpx.Client:
    """The client a push is made with when the caller lends none: a 5 s timeout, and the
    process's one TLS context (loading the CA bundle costs 55 ms of CPU a client)."""
    return httpx.Client(timeout=5.0, verify=client_ssl_context())


def post_command(
    url: str,
    instance: SuiteInstanceLike,
    plaintext: str,
    *,
    timestamp: int,
    nonce: str,
    what: str,
    client: httpx.Client | None = None,
    receive_id: str | None = None,
) -> httpx.Response:
    """POST ``plaintext`` signed and encrypted with ``instance``'s key; receiveid is the
    suite id unless ``receive_id`` says otherwise (a data callback's corp)."""
    rid = receive_id or instance.suite_id
    crypt = WXBizMsgCrypt(instance.token, instance.encoding_aes_key, {rid: "suite"})
    envelope = crypt.encrypt_msg(plaintext, rid, str(timestamp), nonce)
    http = client or push_client()
    try:
        return http.post(
            url,
            params=envelope.query(),
            content=envelope.request_xml(rid).encode("utf-8"),
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise QywxError(
            f"{what} push to {without_query(url)} failed: {type(exc).__name__}",
            code="push-failed",
        ) from None
    finally:
        if client is None:
            http.close()


def without_query(url: str) -> str:
    parts = split_url(url)
    if parts is None:
        return "a malformed URL"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
