"""What the store holds, as frozen dataclasses, and the status words every backend uses.

Records are plain values: a backend builds them from its rows, and nothing above the
store sees a row, a cursor or a connection. Reprs of records that hold a credential
mask it (:class:`qywx_cli.core.masking.MaskedRepr`), so a record logged by mistake does
not leak a permanent code, a ticket or an access token.

The callback log's records are defined here; the rest (tickets, tokens, corps, codes,
licences) in :mod:`.authrecords`, loaded the first time one of them is asked for, so
reading the log does not build classes it never uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from qywx_cli.core.store.authrecords import (
        AuthLink,
        CachedToken,
        CorpAuth,
        IdMapping,
        Licence,
        LoginCode,
        OrgCode,
        Resealed,
        SecretsAtRest,
        SuiteTicket,
        UnlicensedMember,
    )

__all__ = [
    "AUTH_RECORDS",
    "CALLBACK_KINDS",
    "CALLBACK_STATUSES",
    "CLAIMABLE_STATUSES",
    "CORP_AUTH_STATES",
    "DEFAULT_LEASE_SECONDS",
    "FINISH_STATUSES",
    "FOLD_AFTER",
    "FOLD_WINDOW_SECONDS",
    "ID_KINDS",
    "LEASE_RENEW_SECONDS",
    "MAX_CIPHERTEXT",
    "MAX_LEASE_SECONDS",
    "MAX_STORED_ERROR",
    "MIN_LEASE_SECONDS",
    "NONE_LABEL",
    "PRUNABLE_STATUSES",
    "RECORDABLE_STATUSES",
    "SUITE_TICKET_HISTORY",
    "TICKET_PRUNE_EVERY",
    "AuthLink",
    "CachedToken",
    "CallbackRecord",
    "CallbackStats",
    "CorpAuth",
    "IdMapping",
    "Licence",
    "LoginCode",
    "OrgCode",
    "Resealed",
    "SecretsAtRest",
    "SuiteTicket",
    "UnlicensedMember",
    "renew_interval",
]

CALLBACK_KINDS: Final = frozenset({"command", "data", "verify"})
"""``command``: 指令回调 on the template URL; ``data``: the 代开发 app's own callback URL;
``verify``: the GET URL handshake (§2.2)."""

CALLBACK_STATUSES: Final = frozenset(
    {"received", "processed", "failed", "duplicate", "rejected", "unknown"}
)
"""``rejected``: signature / decryption failed; ``unknown``: an InfoType nobody handles."""

RECORDABLE_STATUSES: Final = CALLBACK_STATUSES - {"duplicate"}
"""What a new record may be created as; ``duplicate`` is the store's own verdict."""
FINISH_STATUSES: Final = frozenset({"processed", "failed", "unknown"})
"""What processing may end in."""
CLAIMABLE_STATUSES: Final = ("received", "failed", "unknown")
"""What a worker may claim (``processed`` too, when an operator forces a re-run)."""
CORP_AUTH_STATES: Final = frozenset({"active", "cancelled"})
PRUNABLE_STATUSES: Final = ("processed", "duplicate", "rejected", "unknown")
"""What ``qywx log prune`` and ``retention_days`` may delete: records whose handling is
over. ``received`` and ``failed`` records (and any a worker holds) are kept until they
are handled, however old: they are work still owed."""

MAX_CIPHERTEXT: Final = 128 * 1024
"""The longest ciphertext (a POST's ``Encrypt``, a GET's ``echostr``) qywx accepts and
stores, in characters of base64.

WeCom's callbacks are small: a suite_ticket is about 350 characters of ciphertext, an
install (create_auth) about 430, and a text message at WeCom's 2,048-byte limit about
3,100. 128 KiB is some 40 times the largest, so no callback WeCom sends comes near it,
while a record can never hold more."""
MAX_STORED_ERROR: Final = 1000
"""Characters of ``last_error`` a record keeps; longer texts are cut with "…"."""

FOLD_WINDOW_SECONDS: Final = 600.0
"""The window in which refusals of one kind are counted for folding (10 minutes)."""
FOLD_AFTER: Final = 3
"""Rows a kind of refusal gets per :data:`FOLD_WINDOW_SECONDS`; further ones only count.

A kind is a ``rejected`` request's (instance, error) or a ``duplicate``'s (original,
reason). Past this many rows of one kind in the window, a new delivery of that kind adds
one to the newest row's ``folded`` instead of a row, so a flood of replays or stale
copies costs a few rows every 10 minutes, whatever its rate; every delivery is still
counted and answered as before."""

DEFAULT_LEASE_SECONDS: Final = 10.0
"""How long a claim keeps other workers away without being renewed.

Short on purpose: a worker renews its claims every :data:`LEASE_RENEW_SECONDS` while it
works (:meth:`Store.renew_claims`), so a live worker keeps its record through a slow
WeCom call, and a killed host's records come back to the others within seconds."""
LEASE_RENEW_SECONDS: Final = 3.0
"""How often a working worker renews its claims: under a third of the lease, so two
renewals may be late (a busy database, a pause) before another worker may take over."""
MIN_LEASE_SECONDS: Final = 1.0
MAX_LEASE_SECONDS: Final = 3600.0
"""The range of qywx.toml's ``lease_seconds``, which replaces :data:`DEFAULT_LEASE_SECONDS`."""


def renew_interval(lease_seconds: float) -> float:
    """How often claims of ``lease_seconds`` are renewed (and pending records looked
    for): the same share of the lease as :data:`LEASE_RENEW_SECONDS` of the default."""
    return lease_seconds * LEASE_RENEW_SECONDS / DEFAULT_LEASE_SECONDS


SUITE_TICKET_HISTORY: Final = 20
"""Tickets kept per suite: a few hours of pushes (one every ~10 min, §3.1), for forensics."""
TICKET_PRUNE_EVERY: Final = 16
"""History is pruned back to SUITE_TICKET_HISTORY once this many more tickets are kept."""

NONE_LABEL: Final = "(none)"
"""Stats key for a NULL info_type (GET handshakes, rejected requests) or last_error."""


@dataclass(frozen=True)
class CallbackRecord:
    """One HTTP request from WeCom as it was received, and what became of it.

    ``envelope`` is the signed ciphertext, still encrypted: a POST's ``Encrypt`` value
    (at most :data:`MAX_CIPHERTEXT`), a GET handshake's echostr. That is all the
    signature covers and all ``qywx log show --decrypt`` and ``qywx retry`` need to redo
    the work with the instance's key; the rest of the request body is never stored, so
    padding around ``Encrypt`` costs nothing. (Records written before schema v6 may hold
    the whole XML body; :attr:`ciphertext` reads either.) ``duplicate_reason`` is
    ``"replay"`` for a byte-identical request (same msg_signature, timestamp, nonce) and
    ``"content"`` for the same decrypted content re-encrypted by WeCom (a redelivery).

    ``folded`` counts later deliveries of the same kind of refusal that were counted on
    this row instead of getting their own (:data:`FOLD_AFTER`); ``folded_at`` is when the
    last of them came.
    """

    id: int
    received_at: float
    instance: str
    kind: str
    info_type: str | None
    suite_id: str | None
    corp_id: str | None
    msg_signature: str
    timestamp: str
    nonce: str
    envelope: str = field(repr=False)
    content_key: str | None
    status: str
    attempts: int
    last_error: str | None
    processed_at: float | None
    duplicate_of: int | None
    duplicate_reason: str | None
    claimed_by: str | None
    claimed_at: float | None
    folded: int = 0
    folded_at: float | None = None

    @property
    def is_duplicate(self) -> bool:
        return self.status == "duplicate"

    @property
    def ciphertext(self) -> str:
        """The signed ciphertext to verify and decrypt again (``retry``, ``log show``).

        An XML body (a record from before schema v6, or one a caller stored whole) is
        read for its ``Encrypt`` element; anything else is the ciphertext itself."""
        if self.kind == "verify" or not self.envelope.lstrip().startswith("<"):
            return self.envelope
        from qywx_cli.core.xmlsafe import envelope_encrypt

        return envelope_encrypt(self.envelope)


@dataclass(frozen=True)
class CallbackStats:
    """Counts for ``qywx log stats``; ``None`` info types / errors count under NONE_LABEL."""

    total: int
    by_status: dict[str, int]
    by_event: dict[str, int]
    failures_by_error: list[tuple[str, int]]
    latest_suite_ticket_at: float | None


ID_KINDS: Final = ("corpid", "userid", "external_userid")
"""What the ID security upgrade converts (docs 97104): corp ids, member ids, customer ids."""

AUTH_RECORDS: Final = frozenset(
    {
        "AuthLink",
        "CachedToken",
        "CorpAuth",
        "IdMapping",
        "Licence",
        "LoginCode",
        "OrgCode",
        "Resealed",
        "SecretsAtRest",
        "SuiteTicket",
        "UnlicensedMember",
    }
)


def __getattr__(name: str) -> Any:
    """The records of :mod:`.authrecords`, imported on first use (PEP 562)."""
    if name in AUTH_RECORDS:
        from qywx_cli.core.store import authrecords

        value = getattr(authrecords, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
