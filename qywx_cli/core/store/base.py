"""The store contract: what every backend promises, written where a backend author reads it.

Every method below is abstract; :mod:`qywx_cli.core.store.sqlite` and
:mod:`qywx_cli.core.store.postgres` implement all of them, and ``tests/core/store/``
runs one contract suite against each. Nothing above the store may know which backend
it has: callers write ``Store(target)`` (a path or a URL, see :func:`open_store`) and
get the right subclass.

Durability contract (every backend):

* **Committed before return.** A write method returns only after its transaction is
  durably committed (SQLite ``synchronous=FULL``; PostgreSQL ``synchronous_commit`` on,
  the server default); the caller answers WeCom only after :meth:`Store.record_callback`
  returned. A write that raises was not committed, and nothing half of it is visible.
* **Atomic per method.** Each method is one transaction: :meth:`record_callback` writes
  the record and its suite ticket together; :meth:`save_permanent_code` drops the corp's
  old token, stores the code and names the record's corp together.
* **Safe across threads, processes and hosts.** Claims, login-code use and org-code
  assignment are decided by the database in one statement, so of any number of
  concurrent callers exactly one wins, whichever host it runs on.
* **Errors are StoreError.** Database failures (down, read-only, locked for too long)
  are :class:`~qywx_cli.core.errors.StoreError` with a one-line message that never holds
  a password; bad arguments are ``UsageError``; unknown ids ``RecordNotFound``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from qywx_cli.core.errors import QywxError
from qywx_cli.core.sealing import NO_KEYS, Keyring, Slot, key_id_of
from qywx_cli.core.store import records as _records
from qywx_cli.core.store.records import DEFAULT_LEASE_SECONDS, CallbackRecord, CallbackStats

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

__all__ = ["SCHEMA_VERSION", "Store", "plan_reseal", "survey_secrets"]

SCHEMA_VERSION = 6
"""The logical schema this qywx writes. Every backend's migrations end at this version,
so a number means the same tables and rules whichever database holds them.

v2 keeps v1's tables, columns and rules; it changes how SQLite stores them (the callback
log's indexes, ids without AUTOINCREMENT, the ticket history keyed by suite), so a v1
file is rebuilt once on opening. v3 adds the ID upgrade's id mappings, interface
licences and the members reported unlicensed. v4 adds an index of callbacks by event.
v5 adds authorization links. v6 bounds the callback log: ``envelope`` holds only the
signed ciphertext (existing XML bodies are reduced to their ``Encrypt`` value), refusals
of one kind fold into ``folded`` / ``folded_at``, and an index of duplicates by original
serves folding and pruning."""


class Store(abc.ABC):
    """The qywx database: callback log, suite tickets, token cache, corp auths, codes.

    ``Store(target, now=...)`` opens the backend ``target`` names (a file path or
    ``sqlite://`` URL: SQLite; ``postgresql://``: PostgreSQL) and returns that backend's
    instance, so ``isinstance(s, Store)`` holds for every backend.
    """

    backend: str = "?"
    """Short backend name shown by ``qywx db info`` and ``/healthz``."""

    _keys: Keyring = NO_KEYS
    """Seals permanent codes and tokens on the way in and opens them on the way out
    (core/sealing.py); a backend's ``__init__`` sets it from its ``keys`` argument."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Store:
        if cls is Store:
            from qywx_cli.core.store import backend_class

            target = args[0] if args else kwargs.get("target", kwargs.get("path"))
            cls = backend_class(target)
        return super().__new__(cls)

    # -- lifecycle ----------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where the store is, safe to print: a path, or a URL with no password."""

    @property
    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version the database is at now."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; idempotent. A closed store raises StoreError."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- secrets at rest -----------------------------------------------------------------
    # Backends seal on every write of a permanent code or token and build records through
    # these helpers, so what leaves the store is plaintext and what is stored is not.

    @property
    def secret_keys(self) -> Keyring:
        """The keys this store seals and opens secrets with (empty: plaintext)."""
        return self._keys

    def _seal_code(self, suite_id: str, corp_id: str, code: str | None) -> str | None:
        return self._keys.seal_optional(code, Slot.permanent_code(suite_id, corp_id))

    def _seal_token(self, kind: str, key: str, token: str) -> str:
        return self._keys.seal(token, Slot.token(kind, key))

    def _corp_auth(self, row: Sequence[Any]) -> CorpAuth:
        """A CorpAuth from a row in ``corp_auths`` column order, its code opened."""
        auth = _records.CorpAuth(*row)
        if auth.permanent_code is None:
            return auth
        slot = Slot.permanent_code(auth.suite_id, auth.corp_id)
        return dataclasses.replace(auth, permanent_code=self._keys.open(auth.permanent_code, slot))

    def _cached_token(self, row: Sequence[Any]) -> CachedToken:
        """A CachedToken from a (kind, key, token, expires_at) row, its token opened."""
        kind, key, token, expires_at = row
        return _records.CachedToken(
            kind, key, self._keys.open(token, Slot.token(kind, key)), expires_at
        )

    @abc.abstractmethod
    def secrets_at_rest(self) -> SecretsAtRest:
        """How the stored secrets are kept: plaintext rows, sealed rows by key id.
        Needs no key (it reads prefixes); ``doctor`` and ``serve`` report it."""

    @abc.abstractmethod
    def reseal_secrets(self) -> Resealed:
        """Seal every stored secret with the current key, in ONE transaction.

        Plaintext rows (written before a key was set) are sealed, rows of an older key
        in the keyring are opened and sealed again, rows already under the current key
        are checked and left. If any row cannot be opened (its key is not in the
        keyring, or it does not authenticate) nothing is changed and the error says
        which. With no current key it writes plaintext back (the way out of sealing).
        """

    # -- callbacks ----------------------------------------------------------------------

    @abc.abstractmethod
    def record_callback(
        self,
        *,
        instance: str,
        kind: str,
        info_type: str | None,
        suite_id: str | None,
        corp_id: str | None,
        msg_signature: str,
        timestamp: str,
        nonce: str,
        envelope: str,
        content_key: str | None,
        status: str = "received",
        last_error: str | None = None,
        suite_ticket: tuple[str, str, int] | None = None,
    ) -> CallbackRecord:
        """Durably log one request from WeCom; the caller replies only after this returns.

        Committed before returning. A ``rejected`` request is never deduplicated;
        anything else that repeats an earlier original, byte for byte or by
        ``content_key``, is a ``duplicate`` with ``duplicate_of`` set (order and meaning:
        :mod:`.rules`). Two deliveries of the same request at once, on any two hosts,
        give exactly one original and one duplicate.

        ``envelope`` is the signed ciphertext only (the POST's ``Encrypt``, the GET's
        echostr), at most :data:`~.records.MAX_CIPHERTEXT` characters (else UsageError);
        ``last_error`` is kept to :data:`~.records.MAX_STORED_ERROR` characters.

        Refusals are bounded: when :data:`~.records.FOLD_AFTER` rows of the same kind
        (``rejected``: same instance and error; ``duplicate``: same original and reason)
        were recorded in the last :data:`~.records.FOLD_WINDOW_SECONDS`, no row is added:
        the newest of them gets ``folded`` + 1 and ``folded_at`` = now, and is returned.
        (On several hosts at once a few more rows may slip in; the bound holds.)

        ``suite_ticket`` (suite id, ticket, WeCom TimeStamp) is saved in the same
        transaction unless the callback is a duplicate: a suite_ticket push needs no
        WeCom call, so it is handled as it is recorded (status ``processed``).
        """

    def record_callbacks(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[CallbackRecord | QywxError]:
        """:meth:`record_callback` for each of ``requests`` (its keyword arguments), in
        order; what each returned, or the :class:`QywxError` it raised.

        Committed before returning, like each single call. A backend may write them all
        in one transaction (SQLite does: one fsync for the lot); then a failed commit
        fails every one of them with the same error. This is how a server answering
        from one event loop has its callbacks written: one writer thread takes every
        request waiting and hands the records back together.
        """
        results: list[CallbackRecord | QywxError] = []
        for request in requests:
            try:
                results.append(self.record_callback(**request))
            except QywxError as exc:
                results.append(exc)
        return results

    @abc.abstractmethod
    def get_callback(self, id: int) -> CallbackRecord:
        """One record; RecordNotFound if there is none."""

    @abc.abstractmethod
    def claim_callback(
        self,
        id: int,
        worker: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        force: bool = False,
        automatic: bool = False,
    ) -> CallbackRecord | None:
        """Take record ``id`` for processing, or None if it is not claimable.

        Claimable: status received / failed / unknown (plus processed with ``force``, for
        an operator's deliberate re-run), and not claimed by another worker within the
        last ``lease_seconds``. Decided in one statement, so of any number of threads,
        processes or hosts exactly one gets the record. Counts an attempt. The claimant
        may claim again (a renewal that counts an attempt).

        ``automatic`` is a server's own run (its queue, a retry timer, a sweep): a
        ``failed`` record is then claimable only while its error ends with
        :data:`.rules.RETRYING_MARK`. That is checked in the same statement, so a run
        queued twice cannot take a record another run has just failed for good.
        """

    @abc.abstractmethod
    def renew_claims(self, claims: Iterable[tuple[int, str]]) -> int:
        """Extend the leases of claims still held: each (record id, worker) whose record
        that worker still holds gets ``claimed_at`` = now. Returns how many were renewed.

        A worker renews every :data:`.records.LEASE_RENEW_SECONDS` while it works, so a
        lease can be short: a live worker keeps its record through a slow WeCom call,
        and a dead one's records come back to the others within seconds.
        """

    @abc.abstractmethod
    def held_claims(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        failed_since: float | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, str]]:
        """(record id, worker) of the claims still within their lease on ``received``
        records, and on ``failed`` ones received at or after ``failed_since`` (a transient
        failure being retried while its AuthCode lives; None: no failed ones). Oldest
        record first, at most ``limit``.

        The sweeper reads these to find claims of processes that have ended (see
        :mod:`.claimants`) and hands those to :meth:`release_claims`, so a killed
        process's records need not wait out their lease.
        """

    @abc.abstractmethod
    def release_claims(self, claims: Iterable[tuple[int, str]]) -> int:
        """Drop each (record id, worker) claim that worker still holds, so another may
        claim the record at once; the record is otherwise unchanged. Returns how many
        were dropped. A pair whose record has since been finished or claimed again is
        left alone, so a release cannot take a record from a worker that holds it now.
        """

    @abc.abstractmethod
    def finish_callback(self, id: int, status: str, error: str | None = None) -> None:
        """Record the outcome of processing and release the claim."""

    @abc.abstractmethod
    def pending_callbacks(
        self,
        limit: int = 100,
        older_than: float | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[CallbackRecord]:
        """Records still ``received`` and not held by a live claim, oldest first.

        What a crash left behind, for start-up and the sweeper. ``older_than`` is an age
        in seconds: skip records younger than that, which a sibling may be about to claim.
        """

    @abc.abstractmethod
    def list_callbacks(
        self,
        *,
        status: str | None = None,
        info_type: str | None = None,
        corp_id: str | None = None,
        instance: str | None = None,
        since: float | None = None,
        limit: int = 50,
        after_id: int | None = None,
        newest_first: bool = True,
        kind: str | None = None,
        until: float | None = None,
        before_id: int | None = None,
    ) -> list[CallbackRecord]:
        """The callback log, filtered; newest first unless ``after_id`` or ``newest_first=False``.

        With ``after_id`` (``log tail --follow``) only rows with a greater id, oldest first.
        ``since`` (inclusive) and ``until`` (exclusive) are epoch times compared with
        ``received_at``; ``before_id`` keeps rows with a smaller id, so a page's last id
        is where the next page starts (``log list --before-id``); ``kind`` is one of
        :data:`~.records.CALLBACK_KINDS` (``data``: the app's own callback URL).
        """

    def iter_callbacks(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        batch: int = 1000,
    ) -> Iterator[CallbackRecord]:
        """Every record received in [since, until), oldest (lowest id) first, streamed.

        Memory stays at one batch whatever the log's size (``log export`` of a million
        records): each batch is one keyset query (``id > last``) on the backend's own
        :meth:`list_callbacks`, so no cursor or lock is held between batches and a
        server may keep writing; records added during the walk with a greater id are
        included if they fall in the window. Read-only: it changes nothing.
        """
        last = 0
        while True:
            rows = self.list_callbacks(after_id=last, since=since, until=until, limit=batch)
            yield from rows
            if len(rows) < batch:
                return
            last = rows[-1].id

    @abc.abstractmethod
    def prune_callbacks(
        self, *, before: float, statuses: Sequence[str], dry_run: bool = False
    ) -> dict[str, int]:
        """Delete the records received before ``before`` whose status is one of
        ``statuses``; how many of each status went (or would go, with ``dry_run``).

        Only :data:`~.records.PRUNABLE_STATUSES` may be named (else UsageError): received
        and failed records are work still owed, and a record a worker holds is skipped
        whatever its status. An original that a duplicate received at or after
        ``before`` points to is kept with it: deleting it would make the next redelivery
        of that content a new original, handled again. Kept records that pointed at a
        deleted one (older duplicates, when ``duplicate`` is not pruned) lose the
        pointer (``duplicate_of``, a suite ticket's ``callback_id``) in the same
        transaction. Deleted in batches, each one committed transaction, so a server
        keeps recording meanwhile; SQLite reuses the freed pages (the file does not
        shrink without VACUUM).
        """

    @abc.abstractmethod
    def callback_stats(self, *, since: float | None = None) -> CallbackStats:
        """Counts by status and by event, the ten commonest failures, ticket freshness."""

    # -- suite tickets ------------------------------------------------------------------

    @abc.abstractmethod
    def save_suite_ticket(
        self, suite_id: str, ticket: str, timestamp: int, callback_id: int | None = None
    ) -> None:
        """Keep a pushed ticket (§3.1); saving the same push twice is a no-op."""

    @abc.abstractmethod
    def latest_suite_ticket(self, suite_id: str) -> SuiteTicket | None:
        """The ticket with the greatest WeCom TimeStamp: "always use the newest" (§3.1).

        An older push stored later, by any host, never wins (:data:`.rules.TICKET_ORDER`).
        """

    # -- tokens -------------------------------------------------------------------------

    @abc.abstractmethod
    def get_token(self, kind: str, key: str, *, margin: float = 0) -> CachedToken | None:
        """A cached token still valid ``margin`` seconds from now, else None."""

    @abc.abstractmethod
    def put_token(self, kind: str, key: str, token: str, expires_at: float) -> None:
        """Cache a token, replacing the one of the same (kind, key)."""

    @abc.abstractmethod
    def drop_tokens(self, kind: str | None = None, key: str | None = None) -> int:
        """Forget cached tokens (all, one kind, or one key); suite tickets are untouched."""

    @abc.abstractmethod
    def token_lock(self, kind: str, key: str) -> AbstractContextManager[None]:
        """Single-flight for a token refresh: held while one caller asks WeCom for a new
        (kind, key) token, so N threads (SQLite: of this process; PostgreSQL: of every
        host, an advisory lock) make one call. Callers re-read the cache once inside.
        Never touches suite tickets."""

    # -- corp auths ---------------------------------------------------------------------

    @abc.abstractmethod
    def upsert_corp_auth(
        self,
        suite_id: str,
        corp_id: str,
        *,
        permanent_code: str | None = None,
        agent_id: int | None = None,
        corp_name: str | None = None,
        auth_user_id: str | None = None,
        state: str = "active",
    ) -> CorpAuth:
        """Create or update a corp's authorization; a None argument keeps the stored value."""

    @abc.abstractmethod
    def save_permanent_code(
        self,
        suite_id: str,
        corp_id: str,
        permanent_code: str,
        *,
        callback_id: int,
        agent_id: int | None = None,
        corp_name: str | None = None,
        auth_user_id: str | None = None,
        link_state: str | None = None,
    ) -> CorpAuth:
        """Store a freshly exchanged permanent code in ONE transaction.

        The AuthCode it came from is single use (wecom-protocol.md §5.5), so the window
        between WeCom's answer and a durable copy must be as short as possible: the
        corp's old token and JS-SDK tickets (issued for the previous secret) are
        dropped, the corp is upserted, and the callback record learns its corp, all in
        one commit. ``link_state`` (create_auth's State) is kept on the corp and, in
        the same commit, links the :class:`AuthLink` of that state and template to it.
        """

    @abc.abstractmethod
    def get_corp_auth(self, corp_id: str, suite_id: str | None = None) -> CorpAuth | None:
        """The corp's authorization; without ``suite_id`` the active, most recent one.

        ``corp_id`` may be either form of the corp's id once a ``corpid`` mapping is
        recorded (:meth:`save_id_mappings`): during the ID upgrade WeCom sends the open
        corp id of a corp stored under its plain one, or the reverse (docs 97104). The
        form given wins when both are stored.
        """

    @abc.abstractmethod
    def list_corp_auths(
        self, suite_id: str | None = None, state: str | None = None
    ) -> list[CorpAuth]:
        """Corp authorizations ordered by (suite_id, corp_id)."""

    @abc.abstractmethod
    def set_publish_status(self, suite_id: str, corp_id: str, status: int | None) -> CorpAuth:
        """Record agent/get's customized_publish_status (doc 96448) and when it was read.

        One statement; ``updated_at`` is left alone (a status read is not an
        authorization change). RecordNotFound if the corp never authorized the suite.
        """

    @abc.abstractmethod
    def save_auth_link(
        self,
        state: str,
        *,
        instance: str,
        suite_id: str,
        qrcode_url: str,
        expires_at: float,
    ) -> AuthLink:
        """Record an authorization link before it is handed out (committed on return).

        Saving a state again (a new link for the same state and template) replaces the
        URL and expiry and keeps any corp already linked; a state held by another
        template is a ConflictError.
        """

    @abc.abstractmethod
    def get_auth_link(self, state: str) -> AuthLink | None:
        """The link with that state (states are compared exactly), else None."""

    @abc.abstractmethod
    def list_auth_links(self, corp_id: str | None = None) -> list[AuthLink]:
        """Links, newest first; with ``corp_id`` only those that brought that corp in."""

    @abc.abstractmethod
    def cancel_corp_auth(self, suite_id: str, corp_id: str) -> bool:
        """cancel_auth (§3.4): forget the permanent code, the corp's cached tokens and its
        JS-SDK tickets (kinds ``jsapi_ticket`` key corp id, ``agent_ticket`` keys
        ``corp/agentid``), in one transaction.

        "服务商收到取消授权事件后,应当确保删除该企业所有相关的数据" — the row itself stays,
        as state ``cancelled``, so the log can still name the corp. False if unknown.
        """

    # -- id mappings (the ID security upgrade) -----------------------------------------

    @abc.abstractmethod
    def save_id_mappings(self, kind: str, corp_id: str, pairs: Sequence[tuple[str, str]]) -> int:
        """Record (plain id, open id) pairs of ``kind`` in ``corp_id`` in ONE transaction.

        Committed before return, so a conversion run that dies keeps every batch it got
        an answer for. A plain id already mapped gets the new open id (WeCom's answer is
        stable; a different one means the stored one was wrong). Returns the pairs
        written. ``kind`` is one of :data:`~.records.ID_KINDS`, else UsageError.
        """

    @abc.abstractmethod
    def known_open_ids(self, kind: str, corp_id: str, plain_ids: Sequence[str]) -> dict[str, str]:
        """plain id → open id for those of ``plain_ids`` already mapped."""

    @abc.abstractmethod
    def lookup_id(self, id: str) -> list[IdMapping]:
        """Every mapping whose plain or open form is exactly ``id``, any kind or corp."""

    # -- interface licences --------------------------------------------------------------

    @abc.abstractmethod
    def record_unlicensed(
        self, corp_id: str, user_id: str, *, agent_id: int | None, seen_at: float
    ) -> None:
        """Count one ``unlicensed_notify`` for the member (first / last seen, how often)."""

    @abc.abstractmethod
    def unlicensed_members(
        self, *, corp_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[UnlicensedMember]:
        """Members reported unlicensed (last seen at or after ``since``), latest first."""

    @abc.abstractmethod
    def save_licences(
        self, corp_id: str, licences: Sequence[Licence], *, complete: bool = False
    ) -> int:
        """Record members' licence accounts in ONE transaction, by (corp, member, type).

        ``complete`` says the list is every active account of the corp (a full
        ``list_actived_account``), so accounts not in it are dropped. A member with an
        account that has not expired leaves the unlicensed list in the same transaction.
        Returns the accounts written.
        """

    @abc.abstractmethod
    def list_licences(
        self,
        *,
        corp_id: str | None = None,
        user_id: str | None = None,
        expiring_before: float | None = None,
        limit: int = 1000,
    ) -> list[Licence]:
        """Recorded accounts, soonest expiry first; ``expiring_before`` keeps those whose
        expire_time is before it (epoch seconds)."""

    # -- org codes ----------------------------------------------------------------------

    @abc.abstractmethod
    def set_org_code(self, code: str, corp_id: str, *, force: bool = False) -> OrgCode:
        """Point an org code at a corp; taking a code from another corp needs ``force``.

        Codes are unique case-insensitively (:func:`.rules.normalise_org_code`); the
        check and the write are one statement, so two hosts cannot both take a code.
        """

    @abc.abstractmethod
    def get_org_code(self, code: str) -> OrgCode:
        """The org code (any case); RecordNotFound if unknown."""

    @abc.abstractmethod
    def list_org_codes(self) -> list[OrgCode]:
        """Every org code, ordered by code."""

    @abc.abstractmethod
    def delete_org_code(self, code: str) -> OrgCode:
        """Remove an org code (any case) and return what it was; RecordNotFound if unknown.

        Durable when it returns (committed); the read and the delete are one transaction,
        so two hosts cannot both report removing it.
        """

    # -- login codes --------------------------------------------------------------------

    @abc.abstractmethod
    def save_login_code(
        self, code_hash: str, *, instance: str, corp_id: str, user_id: str, expires_at: float
    ) -> None:
        """Store a one-time code by its hash; codes expired a day ago are pruned here."""

    @abc.abstractmethod
    def consume_login_code(self, code_hash: str) -> LoginCode | None:
        """Use a login code once: only an unused, unexpired code is returned, and marked
        used, in one statement, so of concurrent uses on any hosts one wins."""

    # -- maintenance (qywx db info / copy) ----------------------------------------------
    # Table and column names come from :data:`.maintenance.TABLES`, never from users.

    @abc.abstractmethod
    def table_counts(self) -> dict[str, int]:
        """Rows per table, in one snapshot (``qywx db info``, ``qywx db copy``'s check)."""

    @abc.abstractmethod
    def size_bytes(self) -> int:
        """What the database occupies on disk (file + WAL; or the server's figure)."""

    @abc.abstractmethod
    def dump_rows(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        after: Sequence[object] | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows of ``table`` ordered by ``key``, after the key ``after``."""

    @abc.abstractmethod
    def load_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert rows as they are (ids kept), skipping any whose key is already there,
        in one transaction; how many were new. Id sequences are moved past the rows."""

    # -- health -------------------------------------------------------------------------

    @abc.abstractmethod
    def healthcheck(self, *, write: bool = True) -> dict[str, object]:
        """Probe for ``/healthz`` and ``doctor``: could a callback be recorded right now?

        Returns ``ok`` (bool), ``schema_version``, ``callbacks`` (the greatest id),
        ``suite_ticket_at`` (when the newest SuiteTicket of any suite arrived, or None)
        and backend details. With ``write`` (the default) it also commits one small real
        write and reports ``writable``: a full disk, a read-only mount or file, or a
        read-only PostgreSQL replica answer reads while every callback would get 503,
        so ``ok`` is False unless the write committed. Without ``write``, reads only and
        no ``writable`` key. ``{"ok": False, "writable": False, "error": line}`` when the
        database cannot be used; never raises for a database failure."""


def survey_secrets(values: Iterable[str]) -> SecretsAtRest:
    """Count stored secret values as plaintext or by the key id they name."""
    plaintext = 0
    by_key: dict[str, int] = {}
    for value in values:
        kid = key_id_of(value)
        if kid is None:
            plaintext += 1
        else:
            by_key[kid] = by_key.get(kid, 0) + 1
    return _records.SecretsAtRest(plaintext, dict(sorted(by_key.items())))


def plan_reseal(
    keys: Keyring, rows: Iterable[tuple[Slot, str]]
) -> tuple[list[tuple[Slot, str, str]], Resealed]:
    """What a rotation writes: (slot, stored value, new value) for each row that changes,
    and the counts. Raises before anything is written if any row cannot be opened."""
    updates: list[tuple[Slot, str, str]] = []
    sealed = rekeyed = unchanged = 0
    for slot, stored in rows:
        new = keys.reseal(stored, slot)
        if new is None:
            unchanged += 1
            continue
        updates.append((slot, stored, new))
        if key_id_of(stored) is None:
            sealed += 1
        else:
            rekeyed += 1
    kid = keys.current.kid if keys.current else None
    return updates, _records.Resealed(sealed, rekeyed, unchanged, kid)


NowFn = Callable[[], float]
PathLike = str | Path
