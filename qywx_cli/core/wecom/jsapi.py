"""The JS-SDK family: jsapi tickets per corp and per app, and the signature (doc 96909).

* ``get_jsapi_ticket`` — the corp ticket behind ``wx.config``;
* ``ticket/get?type=agent_config`` — the app ticket behind ``wx.agentConfig``.

Both are fetched with the 代开发 app's corp access_token (never the suite token:
that answers 40014), live ``expires_in`` (7200 s) and are rate limited — 400 per
hour per corp and 100 per hour per app for the corp ticket — so they are cached in
the store (kinds ``jsapi_ticket`` keyed by corp id, ``agent_ticket`` keyed by
``corp/agentid``) and every process sharing the store reuses them until shortly
before they expire. cancel_auth drops them with the corp's token.

The signature is the same for both (doc 96909): SHA-1, lowercase hex, of
``jsapi_ticket=T&noncestr=N&timestamp=TS&url=URL`` — keys in that order, values raw
(no URL-encoding), the URL without its ``#fragment``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from qywx_cli.core.errors import UsageError
from qywx_cli.core.masking import MaskedRepr, mask
from qywx_cli.core.wecom._http import expires_in, required
from qywx_cli.core.wecom._tokens import AGENT_TICKET, JSAPI_TICKET
from qywx_cli.core.wecom.corp import CorpAPI

APIS: dict[str, str] = {
    "get_jsapi_ticket": "GET",
    "ticket/get": "GET",
}
"""The paths this family calls and their methods (the fake must route every one)."""


def agent_ticket_key(corp_id: str, agent_id: int) -> str:
    """The store key of an app's agent_config ticket (cancel_auth drops ``corp/…``)."""
    return f"{corp_id}/{agent_id}"


@dataclass(frozen=True, repr=False)
class JsapiSignature(MaskedRepr):
    """One signature and exactly what was signed (the debugging aid for "invalid signature")."""

    _secret_fields = frozenset({"ticket"})
    _repr_fields = ("signature", "noncestr", "timestamp", "url")

    ticket: str
    noncestr: str
    timestamp: int
    url: str
    signature: str

    @property
    def string_to_sign(self) -> str:
        return signature_string(self.ticket, self.noncestr, self.timestamp, self.url)

    @property
    def masked_string_to_sign(self) -> str:
        """What was signed with the ticket masked, for output that must not leak it."""
        return signature_string(mask(self.ticket), self.noncestr, self.timestamp, self.url)


def page_url(url: str) -> str:
    """The URL as signed: the page's full URL, without ``#`` and what follows."""
    url = url.strip().split("#", 1)[0]
    if not url:
        raise UsageError("the page URL must not be empty")
    if not url.startswith(("http://", "https://")):
        raise UsageError(
            "the page URL must be the page's absolute http(s) URL, as location.href shows it"
        )
    return url


def check_nonce(noncestr: str) -> str:
    if not noncestr or any(c in noncestr for c in "&= \t\r\n"):
        raise UsageError("the nonce must be non-empty, without spaces, '&' or '='")
    return noncestr


def signature_string(ticket: str, noncestr: str, timestamp: int, url: str) -> str:
    """The exact string WeCom's front end signs: keys sorted, values raw (doc 96909)."""
    return f"jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}"


def sign(ticket: str, noncestr: str, timestamp: int, url: str) -> JsapiSignature:
    """The wx.config / wx.agentConfig signature of ``url`` (fragment dropped)."""
    if not ticket:
        raise UsageError("the jsapi ticket must not be empty")
    if timestamp < 0:
        raise UsageError("the timestamp must be a non-negative number of seconds")
    url = page_url(url)
    check_nonce(noncestr)
    text = signature_string(ticket, noncestr, timestamp, url)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return JsapiSignature(ticket, noncestr, timestamp, url, digest)


class JsapiAPI(CorpAPI):
    """The JS-SDK tickets, fetched with the corp token and cached in the store."""

    def jsapi_ticket(self, corp_id: str, permanent_code: str) -> str:
        """The corp jsapi_ticket for ``wx.config`` (``get_jsapi_ticket``)."""
        return self._tokens.get(
            JSAPI_TICKET,
            corp_id,
            lambda: self._fetch_ticket(corp_id, permanent_code, "get_jsapi_ticket", {}),
        )

    def agent_config_ticket(self, corp_id: str, permanent_code: str, agent_id: int) -> str:
        """The app ticket for ``wx.agentConfig`` (``ticket/get?type=agent_config``)."""
        return self._tokens.get(
            AGENT_TICKET,
            agent_ticket_key(corp_id, agent_id),
            lambda: self._fetch_ticket(
                corp_id, permanent_code, "ticket/get", {"type": "agent_config"}
            ),
        )

    def _fetch_ticket(
        self, corp_id: str, permanent_code: str, api: str, params: dict[str, str]
    ) -> tuple[str, int]:
        data = self._corp_call(corp_id, permanent_code, "GET", api, params=params)
        return required(data, api, "ticket"), expires_in(data)
