"""WeCom's pushes to a template's command URL, played by the fake (§3.1, §2.2)."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlunsplit

import httpx

from qywx_cli.core.crypto import WXBizMsgCrypt
from qywx_cli.core.errors import QywxError
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


def post_command(
    url: str,
    instance: SuiteInstanceLike,
    plaintext: str,
    *,
    timestamp: int,
    nonce: str,
    what: str,
    client: httpx.Client | None = None,
) -> httpx.Response:
    """POST ``plaintext`` as a signed, encrypted command callback (receiveid = suite id)."""
    crypt = WXBizMsgCrypt(instance.token, instance.encoding_aes_key, {instance.suite_id: "suite"})
    envelope = crypt.encrypt_msg(plaintext, instance.suite_id, str(timestamp), nonce)
    http = client or httpx.Client(timeout=5.0)
    try:
        return http.post(
            url,
            params=envelope.query(),
            content=envelope.request_xml(instance.suite_id).encode("utf-8"),
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
