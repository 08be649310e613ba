"""The PostgreSQL backend: several ``qywx serve`` hosts sharing one database.

psycopg 3 with its connection pool (the ``qywx-cli[postgres]`` extra). Every connection
is in autocommit mode, so a one-statement method is one round trip that is also its own
durable transaction (``synchronous_commit`` on, the server default: the commit is on
disk before the server answers). How the contract of :mod:`.base` is kept across hosts:

* **Record before reply, deduplicated by the database.** :meth:`PostgresStore.
  record_callback` is ONE statement: a CTE looks for the original (the order of
  :data:`.rules.DEDUPE_ORDER`), inserts the record as an original or a duplicate, and
  inserts its suite ticket. Originals are unique by two partial unique indexes (request
  bytes; content key), so when the same delivery reaches two hosts at once one insert
  wins and the other, blocked on the index until the winner commits, inserts nothing
  (``ON CONFLICT DO NOTHING``) and runs the statement again: now it sees the committed
  original and stores a ``duplicate``. Both hosts answer ``success``; one processes.
* **Claims** are one ``UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED)``: a row
  another host is claiming is skipped at once rather than waited for, and exactly one
  claimant wins. Leases are short and renewed by the working host
  (:meth:`renew_claims`), so a killed host's records come back within seconds.
* **Newest ticket wins**: tickets are rows, never overwritten; the latest is read by
  :data:`.rules.TICKET_ORDER` (greatest WeCom TimeStamp), whatever order hosts wrote in.
* **Token refresh single-flight**: :meth:`token_lock` holds a session advisory lock
  (``pg_advisory_lock``) on a pooled connection while one host asks WeCom; the others
  wait, then find the fresh token in the cache. Tokens and tickets are separate tables,
  so dropping a token never touches a ticket.
* **Login codes single use** (``UPDATE … WHERE used_at IS NULL RETURNING``) and **org
  codes unique** (the primary key on the lower-cased code; the ``force`` check is in
  the upsert's ``WHERE``) are decided in one statement each.
* **Database down or read-only**: every failure is a StoreError (the notify endpoint
  answers 503, never ``success``); :meth:`healthcheck` reports ``ok: false`` and
  ``read_only``; the pool replaces broken connections, so the service recovers when
  the database returns, without a restart.

Passwords: libpq's own ``PGPASSWORD`` and ``~/.pgpass`` work as usual, and a password
written ``env:VAR`` (in the URL's user-info or as ``?password=env:VAR``) is read from
that environment variable. No password is ever part of :attr:`url`, a repr, or an
error message.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, TypeVar

import psycopg
import psycopg_pool
from psycopg import conninfo as pg_conninfo

from qywx_cli.core.errors import RecordNotFound, StoreError, UsageError
from qywx_cli.core.sealing import NO_KEYS, Keyring, Slot
from qywx_cli.core.store import rules
from qywx_cli.core.store.base import SCHEMA_VERSION, Store, plan_reseal, survey_secrets
from qywx_cli.core.store.records import (
    DEFAULT_LEASE_SECONDS,
    FOLD_AFTER,
    FOLD_WINDOW_SECONDS,
    SUITE_TICKET_HISTORY,
    TICKET_PRUNE_EVERY,
    AuthLink,
    CachedToken,
    CallbackRecord,
    CallbackStats,
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
from qywx_cli.core.store.urls import safe_url

__all__ = ["MIGRATIONS", "PostgresStore"]

_T = TypeVar("_T")
log = logging.getLogger("qywx.store")

POOL_MAX: Final = 16
"""Connections per process: one per serving thread at most, plus the workers'."""
POOL_WAIT: Final = 3.0
"""Seconds a caller waits for a pooled connection before StoreError (503), when every
connection is busy."""
RECONNECT_WINDOW: Final = 0.5
"""Seconds the pool keeps retrying a lost connection by itself (psycopg_pool's
``reconnect_timeout``: its back-off of 1 s, 2 s, 4 s... would otherwise grow for five
minutes, so a server back after a minute's outage could wait half a minute more for
the pool's next attempt). Past it the pool tries again as soon as a caller waits for a
connection."""
OUTAGE_WAIT: Final = 1.0
"""Seconds a caller waits instead during an outage (:attr:`_Reach.outage`): not three
seconds of a serving thread for each callback WeCom sends meanwhile, and for each
/healthz probe, but long enough for the pool's next attempt (at most
:data:`RECONNECT_WINDOW` away) to connect to a server that has just come back, so a
call made after the server is back is served."""
CONNECT_TIMEOUT: Final = 5
TOKEN_LOCK_WAIT_MS: Final = 30_000
PRUNE_BATCH: Final = 2000
"""Records a prune deletes per transaction."""
_MIGRATION_LOCK: Final = 0x71797778  # "qywx": serialises schema migrations across hosts


def _migrate_v1(cur: psycopg.Cursor[Any]) -> None:
    """The initial schema: the SQLite schema's tables, with the dedupe keys as unique
    constraints (the database, not a lock, decides between hosts)."""
    cur.execute(
        """
        CREATE TABLE callbacks (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            received_at double precision NOT NULL,
            instance text NOT NULL,
            kind text NOT NULL,
            info_type text,
            suite_id text,
            corp_id text,
            msg_signature text NOT NULL,
            timestamp text NOT NULL,
            nonce text NOT NULL,
            envelope text NOT NULL,
            content_key text,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            last_error text,
            processed_at double precision,
            duplicate_of bigint REFERENCES callbacks(id),
            duplicate_reason text,
            claimed_by text,
            claimed_at double precision
        );
        CREATE INDEX callbacks_by_status ON callbacks(status, received_at);
        CREATE INDEX callbacks_by_info_type ON callbacks(info_type, received_at);
        CREATE INDEX callbacks_by_corp ON callbacks(corp_id, received_at);
        CREATE INDEX callbacks_by_instance ON callbacks(instance, received_at);
        CREATE INDEX callbacks_by_received ON callbacks(received_at);
        CREATE UNIQUE INDEX callbacks_replay ON callbacks(instance, msg_signature, timestamp, nonce)
            WHERE status NOT IN ('duplicate', 'rejected');
        CREATE UNIQUE INDEX callbacks_content ON callbacks(content_key)
            WHERE content_key IS NOT NULL AND status NOT IN ('duplicate', 'rejected');

        CREATE TABLE suite_tickets (
            id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            suite_id text NOT NULL,
            ticket text NOT NULL,
            timestamp bigint NOT NULL,
            received_at double precision NOT NULL,
            callback_id bigint REFERENCES callbacks(id),
            UNIQUE (suite_id, timestamp, ticket)
        );
        CREATE INDEX suite_tickets_latest ON suite_tickets(suite_id, timestamp DESC, id DESC);

        CREATE TABLE tokens (
            kind text NOT NULL,
            key text NOT NULL,
            token text NOT NULL,
            expires_at double precision NOT NULL,
            PRIMARY KEY (kind, key)
        );

        CREATE TABLE corp_auths (
            suite_id text NOT NULL,
            corp_id text NOT NULL,
            permanent_code text,
            agent_id bigint,
            corp_name text,
            state text NOT NULL,
            auth_user_id text,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            PRIMARY KEY (suite_id, corp_id)
        );
        CREATE INDEX corp_auths_by_corp ON corp_auths(corp_id);

        CREATE TABLE org_codes (
            code text PRIMARY KEY CHECK (code = lower(code)),
            corp_id text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL
        );

        CREATE TABLE login_codes (
            code_hash text PRIMARY KEY,
            instance text NOT NULL,
            corp_id text NOT NULL,
            user_id text NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision NOT NULL,
            used_at double precision
        );
        CREATE INDEX login_codes_by_expiry ON login_codes(expires_at);
        """
    )


def _migrate_v2(cur: psycopg.Cursor[Any]) -> None:
    """Schema v2 is SQLite's page diet (no AUTOINCREMENT, fewer indexes, a WITHOUT ROWID
    ticket table); PostgreSQL's tables already have that shape, so only the version
    moves, keeping one number for one logical schema on every backend."""


def _migrate_v3(cur: psycopg.Cursor[Any]) -> None:
    """The ID upgrade's mappings, interface licences and unlicensed members (as SQLite)."""
    cur.execute(
        """
        CREATE TABLE id_mappings (
            kind text NOT NULL,
            corp_id text NOT NULL,
            plain_id text NOT NULL,
            open_id text NOT NULL,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            PRIMARY KEY (kind, corp_id, plain_id)
        );
        CREATE INDEX id_mappings_by_open ON id_mappings(open_id);
        CREATE INDEX id_mappings_by_plain ON id_mappings(plain_id);

        CREATE TABLE licences (
            corp_id text NOT NULL,
            user_id text NOT NULL,
            type integer NOT NULL,
            active_code text,
            active_time bigint,
            expire_time bigint,
            updated_at double precision NOT NULL,
            PRIMARY KEY (corp_id, user_id, type)
        );
        CREATE INDEX licences_by_expiry ON licences(expire_time);

        CREATE TABLE unlicensed_members (
            corp_id text NOT NULL,
            user_id text NOT NULL,
            agent_id bigint,
            first_seen double precision NOT NULL,
            last_seen double precision NOT NULL,
            count integer NOT NULL,
            PRIMARY KEY (corp_id, user_id)
        );
        CREATE INDEX unlicensed_by_last_seen ON unlicensed_members(last_seen);
        """
    )


def _migrate_v4(cur: psycopg.Cursor[Any]) -> None:
    """Schema v4 gives SQLite an index of events by name; PostgreSQL has had
    ``callbacks_by_info_type (info_type, received_at)`` since v1, so only the version moves."""


def _migrate_v5(cur: psycopg.Cursor[Any]) -> None:
    """Authorization links, and each corp's link state and publish status (as SQLite)."""
    cur.execute(
        """
        ALTER TABLE corp_auths ADD COLUMN link_state text;
        ALTER TABLE corp_auths ADD COLUMN publish_status integer;
        ALTER TABLE corp_auths ADD COLUMN publish_checked_at double precision;

        CREATE TABLE auth_links (
            state text PRIMARY KEY,
            instance text NOT NULL,
            suite_id text NOT NULL,
            qrcode_url text NOT NULL,
            created_at double precision NOT NULL,
            expires_at double precision NOT NULL,
            corp_id text,
            linked_at double precision
        );
        CREATE INDEX auth_links_by_corp ON auth_links(corp_id);
        """
    )


def _migrate_v6(cur: psycopg.Cursor[Any]) -> None:
    """A bounded callback log (as SQLite): ``folded`` / ``folded_at``, duplicates indexed
    by their original, and every stored XML body reduced to its ``Encrypt`` value.

    The reduction reads the bodies in id order, a batch at a time, and parses each in
    Python (the same parser that read them on receipt); a body that does not parse is
    kept as it is."""
    cur.execute(
        """
        ALTER TABLE callbacks ADD COLUMN folded integer NOT NULL DEFAULT 0;
        ALTER TABLE callbacks ADD COLUMN folded_at double precision;
        CREATE INDEX callbacks_by_original ON callbacks(duplicate_of, received_at)
            WHERE duplicate_of IS NOT NULL;
        """
    )
    last = 0
    while True:
        cur.execute(
            "SELECT id, envelope FROM callbacks WHERE id > %s AND kind <> 'verify' "
            # Any leading whitespace, as CallbackRecord.ciphertext skips it: ltrim()
            # alone strips only spaces, and a captured body may begin with a line break.
            "AND ltrim(envelope, ' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)) "
            "LIKE '<%%' ORDER BY id LIMIT 500",
            (last,),
        )
        rows = cur.fetchall()
        if not rows:
            return
        cur.executemany(
            "UPDATE callbacks SET envelope = %s WHERE id = %s",
            [(rules.reduce_envelope(envelope), id) for id, envelope in rows],
        )
        last = rows[-1][0]


MIGRATIONS: Final[tuple[Callable[[psycopg.Cursor[Any]], None], ...]] = (
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
    _migrate_v5,
    _migrate_v6,
)
"""Forward migrations; the version is the one row of ``qywx_schema``."""

assert len(MIGRATIONS) == SCHEMA_VERSION, "every backend's migrations end at SCHEMA_VERSION"

_CALLBACK_COLUMNS: Final = (
    "id, received_at, instance, kind, info_type, suite_id, corp_id, msg_signature, "
    "timestamp, nonce, envelope, content_key, status, attempts, last_error, processed_at, "
    "duplicate_of, duplicate_reason, claimed_by, claimed_at, folded, folded_at"
)
_CORP_AUTH_INSERT: Final = (
    "suite_id, corp_id, permanent_code, agent_id, corp_name, state, auth_user_id, "
    "created_at, updated_at"
)
_CORP_AUTH_COLUMNS: Final = f"{_CORP_AUTH_INSERT}, link_state, publish_status, publish_checked_at"
_AUTH_LINK_COLUMNS: Final = (
    "state, instance, suite_id, qrcode_url, created_at, expires_at, corp_id, linked_at"
)
_LOGIN_CODE_COLUMNS: Final = (
    "code_hash, instance, corp_id, user_id, created_at, expires_at, used_at"
)
_NOT_ORIGINAL: Final = f"status NOT IN ({', '.join(repr(s) for s in rules.NOT_ORIGINAL_STATUSES)})"
_NUMERIC_KEYS: Final = frozenset({"id", "type"})
_ID_MAPPING_COLUMNS: Final = "kind, corp_id, plain_id, open_id, created_at, updated_at"
_LICENCE_COLUMNS: Final = (
    "corp_id, user_id, type, active_code, active_time, expire_time, updated_at"
)
_UNLICENSED_COLUMNS: Final = "corp_id, user_id, agent_id, first_seen, last_seen, count"
# The other form of a corp id, through a recorded corpid mapping (either direction).
_CORP_ALIASES: Final = (
    "SELECT open_id FROM id_mappings WHERE kind = 'corpid' AND plain_id = %(corp)s "
    "UNION SELECT plain_id FROM id_mappings WHERE kind = 'corpid' AND open_id = %(corp)s"
)
_NEWEST_FIRST: Final = "ORDER BY received_at DESC, id DESC"
_OLDEST_FIRST: Final = "ORDER BY received_at, id"

# One round trip per callback: find the original, insert, keep the ticket, prune.
_RECORD: Final = f"""
WITH hit AS (
    SELECT id, reason FROM (
        SELECT id, 1 AS ord, 'replay' AS reason FROM callbacks
         WHERE %(dedupe)s::boolean AND instance = %(instance)s::text
           AND msg_signature = %(msg_signature)s::text
           AND timestamp = %(timestamp)s::text AND nonce = %(nonce)s::text AND {_NOT_ORIGINAL}
        UNION ALL
        SELECT id, 2, 'content' FROM callbacks
         WHERE %(dedupe)s::boolean AND content_key = %(content_key)s::text AND {_NOT_ORIGINAL}
    ) found ORDER BY ord, id LIMIT 1
), kin AS (
    -- Rows of the same kind of refusal in the fold window: a duplicate's original and
    -- reason (callbacks_by_original), a rejected request's instance and error.
    SELECT count(*) AS n, max(c.id) AS newest FROM callbacks c JOIN hit
        ON c.duplicate_of = hit.id AND c.duplicate_reason = hit.reason
     WHERE c.received_at >= %(fold_since)s::float8
    UNION ALL
    SELECT count(*), max(id) FROM callbacks
     WHERE NOT %(dedupe)s::boolean AND status = 'rejected' AND instance = %(instance)s::text
       AND last_error IS NOT DISTINCT FROM %(last_error)s::text
       AND received_at >= %(fold_since)s::float8
), fold AS (
    UPDATE callbacks SET folded = folded + 1, folded_at = %(now)s::float8
     WHERE id = (SELECT max(newest) FROM kin WHERE n >= %(fold_after)s::bigint)
    RETURNING {_CALLBACK_COLUMNS}
), ins AS (
    INSERT INTO callbacks (received_at, instance, kind, info_type, suite_id, corp_id,
        msg_signature, timestamp, nonce, envelope, content_key, status, attempts,
        last_error, duplicate_of, duplicate_reason, processed_at)
    SELECT %(now)s::float8, %(instance)s::text, %(kind)s::text, %(info_type)s::text,
        %(suite_id)s::text, %(corp_id)s::text, %(msg_signature)s::text,
        %(timestamp)s::text, %(nonce)s::text, %(envelope)s::text, %(content_key)s::text,
        CASE WHEN hit.id IS NULL THEN %(status)s::text ELSE 'duplicate' END,
        CASE WHEN hit.id IS NULL AND %(status)s::text = 'processed' THEN 1 ELSE 0 END,
        %(last_error)s::text, hit.id, hit.reason,
        CASE WHEN hit.id IS NULL AND %(status)s::text = 'processed' THEN %(now)s::float8 END
    FROM (SELECT 1) AS one LEFT JOIN hit ON true
    WHERE NOT EXISTS (SELECT 1 FROM fold)
    ON CONFLICT DO NOTHING
    RETURNING {_CALLBACK_COLUMNS}
), ticket AS (
    INSERT INTO suite_tickets (suite_id, ticket, timestamp, received_at, callback_id)
    SELECT %(t_suite)s::text, %(t_ticket)s::text, %(t_timestamp)s::bigint,
           ins.received_at, ins.id FROM ins
     WHERE %(has_ticket)s::boolean AND ins.status <> 'duplicate'
    ON CONFLICT DO NOTHING
), pruned AS (
    DELETE FROM suite_tickets
     WHERE %(has_ticket)s::boolean AND suite_id = %(t_suite)s::text
       AND (SELECT count(*) FROM suite_tickets WHERE suite_id = %(t_suite)s::text)
           >= %(prune_at)s::bigint
       AND id NOT IN (SELECT id FROM suite_tickets WHERE suite_id = %(t_suite)s::text
                      ORDER BY {rules.TICKET_ORDER} LIMIT %(keep)s::bigint)
)
SELECT {_CALLBACK_COLUMNS} FROM ins UNION ALL SELECT {_CALLBACK_COLUMNS} FROM fold
"""

_SAVE_TICKET: Final = f"""
WITH ticket AS (
    INSERT INTO suite_tickets (suite_id, ticket, timestamp, received_at, callback_id)
    VALUES (%(t_suite)s::text, %(t_ticket)s::text, %(t_timestamp)s::bigint, %(now)s::float8,
            %(callback_id)s::bigint)
    ON CONFLICT DO NOTHING
), pruned AS (
    DELETE FROM suite_tickets
     WHERE suite_id = %(t_suite)s::text
       AND (SELECT count(*) FROM suite_tickets WHERE suite_id = %(t_suite)s::text)
           >= %(prune_at)s::bigint
       AND id NOT IN (SELECT id FROM suite_tickets WHERE suite_id = %(t_suite)s::text
                      ORDER BY {rules.TICKET_ORDER} LIMIT %(keep)s::bigint)
)
SELECT 1
"""

_CLAIM: Final = f"""
WITH claimed AS (
    UPDATE callbacks SET claimed_by = %(worker)s, claimed_at = %(now)s,
           attempts = attempts + 1
     WHERE id = (SELECT id FROM callbacks
                  WHERE id = %(id)s AND status = ANY(%(statuses)s)
                    AND (claimed_by IS NULL OR claimed_by = %(worker)s
                         OR claimed_at <= %(expired)s)
                    AND (NOT %(automatic)s OR status <> 'failed'
                         OR right(last_error, %(mark_length)s) = %(mark)s)
                  FOR UPDATE SKIP LOCKED)
    RETURNING {_CALLBACK_COLUMNS}
)
SELECT {_CALLBACK_COLUMNS}, true FROM claimed
UNION ALL
SELECT {", ".join("NULL" for _ in _CALLBACK_COLUMNS.split(","))},
       EXISTS (SELECT 1 FROM callbacks WHERE id = %(id)s)
 WHERE NOT EXISTS (SELECT 1 FROM claimed)
"""

_UPSERT_CORP: Final = f"""
INSERT INTO corp_auths ({_CORP_AUTH_INSERT})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (suite_id, corp_id) DO UPDATE SET
    permanent_code = coalesce(excluded.permanent_code, corp_auths.permanent_code),
    agent_id = coalesce(excluded.agent_id, corp_auths.agent_id),
    corp_name = coalesce(excluded.corp_name, corp_auths.corp_name),
    auth_user_id = coalesce(excluded.auth_user_id, corp_auths.auth_user_id),
    state = excluded.state, updated_at = excluded.updated_at
RETURNING {_CORP_AUTH_COLUMNS}
"""


def _resolve(url: str) -> tuple[str, str]:
    """(libpq conninfo with the password resolved, a printable URL)."""
    shown = safe_url(url)
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise UsageError(f"not a valid PostgreSQL URL: {shown}") from None
    password = params.get("password")
    if isinstance(password, str) and password.startswith("env:"):
        var = password[4:]
        value = os.environ.get(var)
        if not value:
            raise StoreError(f"the database password variable {var} is not set (URL {shown})")
        params["password"] = value
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    params.setdefault("application_name", "qywx")
    return pg_conninfo.make_conninfo("", **params), shown


def _one_line(exc: BaseException, secret: str | None) -> str:
    """A psycopg error as one line, with the password scrubbed should libpq ever echo it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if secret:
        text = text.replace(secret, "***")
    return text[:300]


_CALLBACK_WIDTH: Final = len(_CALLBACK_COLUMNS.split(","))


def _callback(row: Sequence[Any]) -> CallbackRecord:
    return CallbackRecord(*row[:_CALLBACK_WIDTH])  # a claim's row carries one more


class _Reach:
    """What the pool's attempts to connect found, and whether connections still serve.

    The pool connects in threads of its own; this is how a caller about to wait for a
    connection learns that the server is away (:attr:`outage`), so that it waits
    :data:`OUTAGE_WAIT` instead of :data:`POOL_WAIT` and its error gives libpq's reason.
    A failed attempt alone is no outage: a server that refuses one more connection (a
    role's connection limit, max_connections, a changed password) still serves the
    connections it has, so callers queue for those as usual. The start and end of a run
    of failed attempts are logged once each, in one line (psycopg_pool logs every
    attempt, over two)."""

    def __init__(self, url: str, secret: str | None) -> None:
        self._url = url
        self._secret = secret
        self._lock = threading.Lock()
        self._ok_at = 0.0  # when the latest successful attempt started
        self._failed_at = 0.0  # when the latest failed attempt started
        self._served_at = 0.0  # when a caller last gave a working connection back
        self._failing_since = 0.0
        self.error: str | None = None
        """libpq's reason the latest attempt failed (password scrubbed); None once an
        attempt that started after it succeeds."""
        self.in_use = 0
        """Connections callers hold right now (:meth:`PostgresStore._connection`)."""

    @property
    def outage(self) -> bool:
        """The latest attempt failed, no connection is held, and none came back working
        since that attempt began. Each half alone misfires under a connection limit: a
        connection passed straight from one caller to the next is held by neither for a
        moment, and one held for seconds (a token refresh) comes back late."""
        return self.error is not None and self.in_use == 0 and self._served_at < self._failed_at

    def failed(self, exc: BaseException, started: float) -> None:
        why = _one_line(exc, self._secret)
        with self._lock:
            if started < self._ok_at:  # began before a success that came back first
                return
            self._failed_at = max(self._failed_at, started)
            first = self.error is None
            self.error = why
            if first:
                self._failing_since = time.monotonic()
        if first:
            log.warning("cannot connect to database %s: %s", self._url, why)

    def succeeded(self, started: float) -> None:
        with self._lock:
            self._ok_at = max(self._ok_at, started)
            if started < self._failed_at:  # a failure that began later stands
                return
            was, self.error = self.error, None
        if was is not None:
            log.warning(
                "connected to database %s again, after %.1f s",
                self._url,
                time.monotonic() - self._failing_since,
            )

    def take(self) -> None:
        with self._lock:
            self.in_use += 1

    def give_back(self, working: bool) -> None:
        with self._lock:
            self.in_use -= 1
            if working:
                self._served_at = time.monotonic()


def _forget_timed_out(pool: psycopg_pool.ConnectionPool[Any]) -> None:
    """Take the callers that gave up waiting out of the pool's queue.

    psycopg_pool leaves a caller whose ``getconn`` timed out in its queue until a
    connection is given back, which passes over it. In an outage none is given back,
    so every refused call stayed queued, holding its PoolTimeout and, through that
    exception's traceback, the frames of the call (a request's body among them): memory
    grew for as long as the outage lasted, about 50 KB/s under 8 threads. The queue is
    the pool's own (``_waiting``, under ``_lock``); if a release renames them, this does
    nothing and the pool behaves as it always did."""
    lock, waiting = getattr(pool, "_lock", None), getattr(pool, "_waiting", None)
    if lock is None or not isinstance(waiting, deque):
        return
    with lock:
        live = [w for w in waiting if getattr(w, "error", None) is None]
        if len(live) != len(waiting):  # order kept: first come, first served
            waiting.clear()
            waiting.extend(live)


class _Connection(psycopg.Connection[Any]):
    """The pool's connections. The first the pool asks for is the one the store opened
    itself to try the URL (handed over once through ``qywx_first``), so opening a store
    costs one connection, not two: one TCP, TLS and SCRAM handshake fewer per command.
    Every attempt the pool makes is reported to ``qywx_reach``."""

    @classmethod
    def connect(  # type: ignore[override]  # keywords of our own, the rest as psycopg's
        cls,
        conninfo: str = "",
        *,
        qywx_first: list[_Connection] | None = None,
        qywx_reach: _Reach | None = None,
        **kwargs: Any,
    ) -> _Connection:
        if qywx_first:
            return qywx_first.pop()
        started = time.monotonic()
        try:
            conn = super().connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            if qywx_reach is not None:
                qywx_reach.failed(exc, started)
            raise
        if qywx_reach is not None:
            qywx_reach.succeeded(started)
        return conn


class PostgresStore(Store):
    """The qywx database on a PostgreSQL server; safe to share between threads,
    processes and hosts."""

    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        now: Callable[[], float] = time.time,
        pool_size: int = POOL_MAX,
        migrate: bool = True,
        keys: Keyring | None = None,
    ) -> None:
        self._now = now
        self._keys = keys if keys is not None else NO_KEYS
        conninfo, self._url = _resolve(str(url))
        secret = pg_conninfo.conninfo_to_dict(conninfo).get("password")
        self._secret = str(secret) if secret else None
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._closed = False
        # One direct attempt first: a wrong password, host or database name fails at
        # once with libpq's reason, instead of after the pool's retries. The pool then
        # takes that connection as its first.
        try:
            first = [_Connection.connect(conninfo, autocommit=True)]
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to {self._url}: {_one_line(exc, self._secret)}"
            ) from None
        self._reach = _Reach(self._url, self._secret)
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            connection_class=_Connection,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={"autocommit": True, "qywx_first": first, "qywx_reach": self._reach},
            timeout=POOL_WAIT,
            reconnect_timeout=RECONNECT_WINDOW,
            name="qywx",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=POOL_WAIT + CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise StoreError(
                f"cannot connect to {self._url}: {self._reach.error or 'timed out'}"
            ) from None
        finally:
            while first:  # not taken (the pool failed to open): nobody else will close it
                first.pop().close()
        try:
            if migrate:
                self.migrate()
            else:
                self._check_version(self.schema_version)
        except BaseException:
            self._pool.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self._url

    @property
    def schema_version(self) -> int:
        def version(cur: psycopg.Cursor[Any]) -> int:
            cur.execute("SELECT to_regclass('qywx_schema') IS NOT NULL")
            if not cur.fetchone()[0]:  # type: ignore[index]
                return 0
            cur.execute("SELECT version FROM qywx_schema")
            row = cur.fetchone()
            return int(row[0]) if row is not None else 0

        return self._run(version)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema v{version} is newer than this qywx (v{SCHEMA_VERSION}); "
                "upgrade qywx"
            )

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION (one transaction, one host at a time)."""
        version = self.schema_version
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return version

        def migrate(cur: psycopg.Cursor[Any]) -> int:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS qywx_schema (version integer NOT NULL)")
            cur.execute("SELECT version FROM qywx_schema")
            row = cur.fetchone()
            current = int(row[0]) if row is not None else 0
            self._check_version(current)
            for target, step in enumerate(MIGRATIONS[current:], start=current + 1):
                try:
                    step(cur)
                except psycopg.Error as exc:
                    raise StoreError(
                        f"cannot migrate {self._url} to schema v{target}: "
                        f"{_one_line(exc, self._secret)}"
                    ) from None
            cur.execute("DELETE FROM qywx_schema")
            cur.execute("INSERT INTO qywx_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
            return SCHEMA_VERSION

        return self._run(migrate, transaction=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    # -- connections --------------------------------------------------------------------

    def _run(self, fn: Callable[[psycopg.Cursor[Any]], _T], *, transaction: bool = False) -> _T:
        """Run ``fn`` on a pooled connection (in one transaction if asked); database
        failures become StoreError. A connection found broken (the server restarted) is
        replaced and ``fn`` run again, so the first request after an outage works."""
        if self._closed:
            raise StoreError(f"store {self._url} is closed")
        attempts = self._pool.max_size + 1  # every pooled connection may be stale at once
        for attempt in range(attempts):
            try:
                with self._connection() as conn:
                    try:
                        if transaction:
                            with conn.transaction(), conn.cursor() as cur:
                                return fn(cur)
                        with conn.cursor() as cur:
                            return fn(cur)
                    except psycopg.OperationalError:
                        if attempt < attempts - 1 and conn.broken:
                            continue
                        raise
            except psycopg.errors.ReadOnlySqlTransaction:
                raise StoreError(f"database {self._url} is read-only") from None
            except psycopg_pool.PoolClosed:  # a psycopg.Error: caught before it
                raise StoreError(f"store {self._url} is closed") from None
            except psycopg.Error as exc:
                raise StoreError(f"database error: {_one_line(exc, self._secret)}") from None
        raise StoreError(f"database {self._url} unavailable (connection lost)")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[_Connection]:
        """A pooled connection, as ``pool.connection()`` gives it, or StoreError (503).

        A caller waits up to :data:`POOL_WAIT` for a busy pool, first come first
        served, and up to :data:`OUTAGE_WAIT` during an outage (:attr:`_Reach.outage`);
        either way the error names libpq's reason when the latest attempt to connect
        failed."""
        reach = self._reach
        try:
            conn = self._pool.getconn(timeout=OUTAGE_WAIT if reach.outage else POOL_WAIT)
        except psycopg_pool.PoolTimeout:
            _forget_timed_out(self._pool)
            why = reach.error
            if why is not None:
                raise StoreError(f"database {self._url} unavailable: {why}") from None
            raise StoreError(
                f"database {self._url} unavailable (no connection within {POOL_WAIT:g} s)"
            ) from None
        reach.take()
        try:
            with conn:  # commit or roll back, as the pool's own context manager does
                yield conn
        finally:
            working = not conn.broken
            self._pool.putconn(conn)
            reach.give_back(working)  # after: a caller that sees none in use finds them idle

    def _one(self, sql: str, params: Any = None) -> tuple[Any, ...] | None:
        def one(cur: psycopg.Cursor[Any]) -> tuple[Any, ...] | None:
            cur.execute(sql, params, prepare=True)
            return cur.fetchone()

        return self._run(one)

    def _all(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        def rows(cur: psycopg.Cursor[Any]) -> list[tuple[Any, ...]]:
            cur.execute(sql, params)
            return cur.fetchall()

        return self._run(rows)

    def _rowcount(self, sql: str, params: Any = None) -> int:
        def count(cur: psycopg.Cursor[Any]) -> int:
            cur.execute(sql, params, prepare=True)
            return cur.rowcount

        return self._run(count)

    # -- callbacks ----------------------------------------------------------------------

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
        rules.check_new_callback(instance, kind, status, envelope)
        t_suite, t_ticket, t_timestamp = suite_ticket if suite_ticket else (None, None, None)
        params = {
            "dedupe": status != "rejected",
            "instance": instance,
            "kind": kind,
            "info_type": info_type,
            "suite_id": suite_id,
            "corp_id": corp_id,
            "msg_signature": msg_signature,
            "timestamp": timestamp,
            "nonce": nonce,
            "envelope": envelope,
            "content_key": content_key,
            "status": status,
            "last_error": rules.clip_error(last_error),
            "fold_after": FOLD_AFTER,
            "has_ticket": suite_ticket is not None,
            "t_suite": t_suite,
            "t_ticket": t_ticket,
            "t_timestamp": int(t_timestamp) if t_timestamp is not None else None,
            "prune_at": SUITE_TICKET_HISTORY + TICKET_PRUNE_EVERY,
            "keep": SUITE_TICKET_HISTORY,
        }

        # A lost race (another host inserted the same original a moment earlier) inserts
        # nothing; the next attempt sees the committed original and stores a duplicate.
        # So does a race with a prune: the original found was deleted before this insert
        # could reference it (the foreign key fails); the next attempt no longer finds it.
        def insert(cur: psycopg.Cursor[Any]) -> tuple[Any, ...] | None:
            try:
                cur.execute(_RECORD, params, prepare=True)
            except psycopg.errors.ForeignKeyViolation:
                return None
            return cur.fetchone()

        for _ in range(3):
            now = self._now()
            params["now"] = now
            params["fold_since"] = now - FOLD_WINDOW_SECONDS
            row = self._run(insert)
            if row is not None:
                return _callback(row)
        raise StoreError("could not record the callback (dedupe race did not settle)")

    def get_callback(self, id: int) -> CallbackRecord:
        rules.check_id(id)
        row = self._one(f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE id = %s", (id,))
        if row is None:
            raise RecordNotFound(f"no callback record with id {id}")
        return _callback(row)

    def claim_callback(
        self,
        id: int,
        worker: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        force: bool = False,
        automatic: bool = False,
    ) -> CallbackRecord | None:
        rules.require(worker, "worker")
        rules.check_id(id)
        now = self._now()
        row = self._one(
            _CLAIM,
            {
                "worker": worker,
                "now": now,
                "id": id,
                "statuses": list(rules.claimable_statuses(force)),
                "expired": now - lease_seconds,
                "automatic": automatic,
                "mark": rules.RETRYING_MARK,
                "mark_length": len(rules.RETRYING_MARK),
            },
        )
        assert row is not None
        if row[0] is not None:
            return _callback(row)
        if not row[-1]:
            raise RecordNotFound(f"no callback record with id {id}")
        return None

    def renew_claims(self, claims: Iterable[tuple[int, str]]) -> int:
        return self._update_claims(claims, "claimed_at = %s", lambda: (self._now(),))

    def release_claims(self, claims: Iterable[tuple[int, str]]) -> int:
        return self._update_claims(claims, "claimed_by = NULL, claimed_at = NULL", tuple)

    def _update_claims(
        self,
        claims: Iterable[tuple[int, str]],
        assignment: str,
        values: Callable[[], tuple[object, ...]],
    ) -> int:
        """``SET assignment`` on each (record id, worker) claim that worker still holds,
        in one statement; ``values()`` fills the assignment's placeholders. How many
        rows changed."""
        held = list(claims)
        if not held:
            return 0
        return self._rowcount(
            f"UPDATE callbacks AS c SET {assignment} "
            "FROM unnest(%s::bigint[], %s::text[]) AS h(id, worker) "
            "WHERE c.id = h.id AND c.claimed_by = h.worker",
            (*values(), [i for i, _ in held], [w for _, w in held]),
        )

    def held_claims(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        failed_since: float | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, str]]:
        rules.check_limit(limit)
        live = self._now() - lease_seconds
        since = math.inf if failed_since is None else failed_since
        rows = self._all(
            "SELECT id, claimed_by FROM callbacks WHERE claimed_by IS NOT NULL "
            "AND claimed_at > %(live)s AND (status = 'received' OR (status = 'failed' "
            "AND received_at >= %(since)s)) "
            f"{_OLDEST_FIRST} LIMIT %(limit)s",
            {"live": live, "since": since, "limit": limit},
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def finish_callback(self, id: int, status: str, error: str | None = None) -> None:
        rules.check_id(id)
        rules.check_finish_status(status)
        changed = self._rowcount(
            "UPDATE callbacks SET status = %s, last_error = %s, processed_at = %s, "
            "claimed_by = NULL, claimed_at = NULL WHERE id = %s",
            (status, rules.clip_error(error), self._now(), id),
        )
        if changed == 0:
            raise RecordNotFound(f"no callback record with id {id}")

    def pending_callbacks(
        self,
        limit: int = 100,
        older_than: float | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[CallbackRecord]:
        rules.check_limit(limit)
        now = self._now()
        newest = now - older_than if older_than is not None else math.inf
        rows = self._all(
            f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE status = 'received' "
            "AND (claimed_by IS NULL OR claimed_at <= %s) AND received_at <= %s "
            f"{_OLDEST_FIRST} LIMIT %s",
            (now - lease_seconds, newest, limit),
        )
        return [_callback(r) for r in rows]

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
        rules.check_limit(limit)
        where: list[str] = []
        params: list[object] = []
        for column, value in (
            ("status", status),
            ("info_type", info_type),
            ("corp_id", corp_id),
            ("instance", instance),
            ("kind", kind),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if since is not None:
            where.append("received_at >= %s")
            params.append(since)
        if until is not None:
            where.append("received_at < %s")
            params.append(until)
        if before_id is not None:
            where.append("id < %s")
            params.append(before_id)
        if after_id is not None:
            where.append("id > %s")
            params.append(after_id)
            order = "ORDER BY id"
        else:
            order = _NEWEST_FIRST if newest_first else _OLDEST_FIRST
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        params.append(limit)
        sql = f"SELECT {_CALLBACK_COLUMNS} FROM callbacks {clause}{order} LIMIT %s"
        rows = self._all(sql, params)
        return [_callback(r) for r in rows]

    def prune_callbacks(
        self, *, before: float, statuses: Sequence[str], dry_run: bool = False
    ) -> dict[str, int]:
        """Delete old finished records in batches; see :meth:`Store.prune_callbacks`.

        Each batch locks its rows (``FOR UPDATE SKIP LOCKED``), so two hosts pruning at
        once share the work, and a worker's claim in between is not deleted under it.
        The newest record is kept, as on SQLite, so both backends delete the same rows.
        """
        chosen = list(rules.check_prune(before, statuses))
        where = (
            "received_at < %(before)s AND status = ANY(%(statuses)s) AND claimed_by IS NULL "
            "AND id < (SELECT max(id) FROM callbacks) AND NOT EXISTS (SELECT 1 FROM callbacks "
            "AS d WHERE d.duplicate_of = callbacks.id AND d.received_at >= %(before)s)"
        )
        params: dict[str, Any] = {"before": before, "statuses": chosen, "limit": PRUNE_BATCH}
        if dry_run:
            rows = self._all(
                f"SELECT status, count(*) FROM callbacks WHERE {where} GROUP BY status", params
            )
            return {str(status): int(n) for status, n in rows}

        def batch(cur: psycopg.Cursor[Any]) -> list[tuple[int, str]]:
            cur.execute(
                f"SELECT id, status FROM callbacks WHERE {where} ORDER BY received_at, id "
                "LIMIT %(limit)s FOR UPDATE SKIP LOCKED",
                params,
            )
            found = [(int(i), str(st)) for i, st in cur.fetchall()]
            ids = [i for i, _ in found]
            if ids:
                cur.execute(
                    "UPDATE callbacks SET duplicate_of = NULL WHERE duplicate_of = ANY(%s)",
                    (ids,),
                )
                cur.execute(
                    "UPDATE suite_tickets SET callback_id = NULL WHERE callback_id = ANY(%s)",
                    (ids,),
                )
                cur.execute("DELETE FROM callbacks WHERE id = ANY(%s)", (ids,))
            return found

        counts: dict[str, int] = {}
        while True:
            done = self._run(batch, transaction=True)
            for _, status in done:
                counts[status] = counts.get(status, 0) + 1
            if len(done) < PRUNE_BATCH:
                return counts

    def callback_stats(self, *, since: float | None = None) -> CallbackStats:
        window = "WHERE received_at >= %(since)s" if since is not None else ""
        failed_window = "AND received_at >= %(since)s" if since is not None else ""
        params = {"since": since}

        def stats(cur: psycopg.Cursor[Any]) -> CallbackStats:
            cur.execute(f"SELECT status, count(*) FROM callbacks {window} GROUP BY 1", params)
            by_status = cur.fetchall()
            cur.execute(f"SELECT info_type, count(*) FROM callbacks {window} GROUP BY 1", params)
            by_event = cur.fetchall()
            cur.execute(
                "SELECT last_error, count(*) FROM callbacks WHERE status = 'failed' "
                f"{failed_window} GROUP BY last_error "
                'ORDER BY count(*) DESC, last_error COLLATE "C" NULLS FIRST LIMIT 10',
                params,
            )
            failures = cur.fetchall()
            cur.execute("SELECT max(received_at) FROM suite_tickets")
            latest = cur.fetchone()
            return rules.build_stats(
                by_status, by_event, failures, latest[0] if latest is not None else None
            )

        return self._run(stats, transaction=True)  # one snapshot for every count

    # -- suite tickets ------------------------------------------------------------------

    def save_suite_ticket(
        self, suite_id: str, ticket: str, timestamp: int, callback_id: int | None = None
    ) -> None:
        rules.require(suite_id, "suite_id")
        rules.require(ticket, "ticket")
        self._one(
            _SAVE_TICKET,
            {
                "t_suite": suite_id,
                "t_ticket": ticket,
                "t_timestamp": int(timestamp),
                "now": self._now(),
                "callback_id": callback_id,
                "prune_at": SUITE_TICKET_HISTORY + TICKET_PRUNE_EVERY,
                "keep": SUITE_TICKET_HISTORY,
            },
        )

    def latest_suite_ticket(self, suite_id: str) -> SuiteTicket | None:
        row = self._one(
            "SELECT suite_id, ticket, timestamp, received_at FROM suite_tickets "
            f"WHERE suite_id = %s ORDER BY {rules.TICKET_ORDER} LIMIT 1",
            (suite_id,),
        )
        return SuiteTicket(row[0], row[1], int(row[2]), row[3]) if row is not None else None

    # -- tokens -------------------------------------------------------------------------

    def get_token(self, kind: str, key: str, *, margin: float = 0) -> CachedToken | None:
        row = self._one(
            "SELECT kind, key, token, expires_at FROM tokens "
            "WHERE kind = %s AND key = %s AND expires_at > %s",
            (kind, key, self._now() + margin),
        )
        return self._cached_token(row) if row is not None else None

    def put_token(self, kind: str, key: str, token: str, expires_at: float) -> None:
        rules.require(kind, "token kind")
        rules.require(token, "token")
        self._rowcount(
            "INSERT INTO tokens (kind, key, token, expires_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (kind, key) DO UPDATE SET token = excluded.token, "
            "expires_at = excluded.expires_at",
            (kind, key, self._seal_token(kind, key, token), expires_at),
        )

    def drop_tokens(self, kind: str | None = None, key: str | None = None) -> int:
        return self._run(lambda cur: _drop_tokens(cur, kind, key))

    @contextlib.contextmanager
    def token_lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold a session advisory lock on (kind, key) for the length of a token refresh.

        The lock lives on one pooled connection, taken for the duration; threads of
        this process queue on a local lock first so they do not each hold a connection
        while waiting. A database that cannot be reached makes this a StoreError.
        """
        with self._locks_guard:
            local = self._locks.setdefault((kind, key), threading.Lock())
        lock_id = zlib.crc32(f"qywx-token\0{kind}\0{key}".encode()) - 2**31
        with local:
            try:
                with self._connection() as conn:
                    conn.execute(f"SET statement_timeout = {TOKEN_LOCK_WAIT_MS}")
                    conn.execute("SELECT pg_advisory_lock(%s)", (lock_id,))
                    try:
                        yield
                    finally:
                        with contextlib.suppress(psycopg.Error):
                            conn.execute("SELECT pg_advisory_unlock(%s)", (lock_id,))
                            conn.execute("SET statement_timeout = 0")
            except psycopg.Error as exc:
                raise StoreError(f"database error: {_one_line(exc, self._secret)}") from None

    # -- corp auths ---------------------------------------------------------------------

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
        rules.require(suite_id, "suite_id")
        rules.require(corp_id, "corp_id")
        rules.check_corp_auth_state(state)
        now = self._now()
        code = self._seal_code(suite_id, corp_id, permanent_code)
        row = self._one(
            _UPSERT_CORP,
            (suite_id, corp_id, code, agent_id, corp_name, state, auth_user_id, now, now),
        )
        assert row is not None
        return self._corp_auth(row)

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
        rules.require(suite_id, "suite_id")
        rules.require(corp_id, "corp_id")
        rules.require(permanent_code, "permanent_code")
        now = self._now()
        code = self._seal_code(suite_id, corp_id, permanent_code)

        def save(cur: psycopg.Cursor[Any]) -> tuple[Any, ...]:
            _drop_corp_credentials(cur, corp_id)
            cur.execute("UPDATE callbacks SET corp_id = %s WHERE id = %s", (corp_id, callback_id))
            if link_state:
                cur.execute(
                    "UPDATE auth_links SET corp_id = %s, linked_at = %s "
                    "WHERE state = %s AND suite_id = %s",
                    (corp_id, now, link_state, suite_id),
                )
            cur.execute(
                _UPSERT_CORP,
                (
                    suite_id,
                    corp_id,
                    code,
                    agent_id,
                    corp_name,
                    "active",
                    auth_user_id,
                    now,
                    now,
                ),
            )
            row: tuple[Any, ...] | None = cur.fetchone()
            assert row is not None
            if link_state:
                cur.execute(
                    "UPDATE corp_auths SET link_state = %s WHERE suite_id = %s AND corp_id = %s "
                    f"RETURNING {_CORP_AUTH_COLUMNS}",
                    (link_state, suite_id, corp_id),
                )
                row = cur.fetchone()
                assert row is not None
            return row

        return self._corp_auth(self._run(save, transaction=True))

    def set_publish_status(self, suite_id: str, corp_id: str, status: int | None) -> CorpAuth:
        rules.require(suite_id, "suite_id")
        rules.require(corp_id, "corp_id")
        row = self._one(
            "UPDATE corp_auths SET publish_status = %s, publish_checked_at = %s "
            f"WHERE suite_id = %s AND corp_id = %s RETURNING {_CORP_AUTH_COLUMNS}",
            (status, self._now(), suite_id, corp_id),
        )
        if row is None:
            raise RecordNotFound(f"corp {corp_id} never authorized suite {suite_id}")
        return self._corp_auth(row)

    # -- authorization links --------------------------------------------------------------

    def save_auth_link(
        self,
        state: str,
        *,
        instance: str,
        suite_id: str,
        qrcode_url: str,
        expires_at: float,
    ) -> AuthLink:
        rules.require(state, "state")
        rules.require(suite_id, "suite_id")
        rules.require(qrcode_url, "qrcode_url")
        now = self._now()

        def save(cur: psycopg.Cursor[Any]) -> AuthLink:
            # One statement decides: a state held by another template is not overwritten.
            cur.execute(
                f"INSERT INTO auth_links ({_AUTH_LINK_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, NULL, NULL) "
                "ON CONFLICT (state) DO UPDATE SET instance = excluded.instance, "
                "qrcode_url = excluded.qrcode_url, expires_at = excluded.expires_at "
                "WHERE auth_links.suite_id = excluded.suite_id "
                f"RETURNING {_AUTH_LINK_COLUMNS}",
                (state, instance, suite_id, qrcode_url, now, expires_at),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute("SELECT suite_id FROM auth_links WHERE state = %s", (state,))
                held = cur.fetchone()
                raise rules.auth_link_conflict(state, held[0] if held else "?")
            return AuthLink(*row)

        return self._run(save, transaction=True)

    def get_auth_link(self, state: str) -> AuthLink | None:
        row = self._one(f"SELECT {_AUTH_LINK_COLUMNS} FROM auth_links WHERE state = %s", (state,))
        return AuthLink(*row) if row is not None else None

    def list_auth_links(self, corp_id: str | None = None) -> list[AuthLink]:
        sql = f"SELECT {_AUTH_LINK_COLUMNS} FROM auth_links"
        params: list[object] = []
        if corp_id is not None:
            sql += " WHERE corp_id = %s"
            params.append(corp_id)
        sql += ' ORDER BY created_at DESC, state COLLATE "C"'
        return [AuthLink(*r) for r in self._all(sql, params)]

    def get_corp_auth(self, corp_id: str, suite_id: str | None = None) -> CorpAuth | None:
        # Either form of the corp id, once a corpid mapping is recorded; the form given
        # wins (exact rows sort first), as on SQLite.
        sql = (
            f"SELECT {_CORP_AUTH_COLUMNS} FROM corp_auths "
            f"WHERE (corp_id = %(corp)s OR corp_id IN ({_CORP_ALIASES}))"
        )
        if suite_id is not None:
            sql += " AND suite_id = %(suite)s"
        sql += " ORDER BY corp_id = %(corp)s DESC, state = 'active' DESC, updated_at DESC LIMIT 1"
        row = self._one(sql, {"corp": corp_id, "suite": suite_id})
        return self._corp_auth(row) if row is not None else None

    def list_corp_auths(
        self, suite_id: str | None = None, state: str | None = None
    ) -> list[CorpAuth]:
        where: list[str] = []
        params: list[object] = []
        if suite_id is not None:
            where.append("suite_id = %s")
            params.append(suite_id)
        if state is not None:
            where.append("state = %s")
            params.append(state)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._all(
            f"SELECT {_CORP_AUTH_COLUMNS} FROM corp_auths{clause} "
            'ORDER BY suite_id COLLATE "C", corp_id COLLATE "C"',
            params,
        )
        return [self._corp_auth(r) for r in rows]

    def cancel_corp_auth(self, suite_id: str, corp_id: str) -> bool:
        now = self._now()

        def cancel(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute(
                "UPDATE corp_auths SET state = 'cancelled', permanent_code = NULL, "
                "updated_at = %s WHERE suite_id = %s AND corp_id = %s",
                (now, suite_id, corp_id),
            )
            changed = cur.rowcount
            _drop_corp_credentials(cur, corp_id)
            return changed > 0

        return self._run(cancel, transaction=True)

    # -- id mappings --------------------------------------------------------------------

    def save_id_mappings(self, kind: str, corp_id: str, pairs: Sequence[tuple[str, str]]) -> int:
        rules.check_mapping(kind, corp_id, pairs)
        rows = list(dict(pairs).items())  # one row per plain id, the last answer wins
        if not rows:
            return 0
        now = self._now()

        def save(cur: psycopg.Cursor[Any]) -> int:
            cur.executemany(
                "INSERT INTO id_mappings (kind, corp_id, plain_id, open_id, created_at, "
                "updated_at) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (kind, corp_id, plain_id) "
                "DO UPDATE SET open_id = excluded.open_id, updated_at = excluded.updated_at",
                [(kind, corp_id, plain, opened, now, now) for plain, opened in rows],
            )
            return len(rows)

        return self._run(save, transaction=True)

    def known_open_ids(self, kind: str, corp_id: str, plain_ids: Sequence[str]) -> dict[str, str]:
        rules.check_id_kind(kind)
        wanted = list(dict.fromkeys(plain_ids))
        if not wanted:
            return {}
        rows = self._all(
            "SELECT plain_id, open_id FROM id_mappings WHERE kind = %s AND corp_id = %s "
            "AND plain_id = ANY(%s)",
            (kind, corp_id, wanted),
        )
        return {str(plain): str(opened) for plain, opened in rows}

    def lookup_id(self, id: str) -> list[IdMapping]:
        rows = self._all(
            f"SELECT * FROM (SELECT {_ID_MAPPING_COLUMNS} FROM id_mappings "
            f"WHERE plain_id = %(id)s UNION SELECT {_ID_MAPPING_COLUMNS} FROM id_mappings "
            "WHERE open_id = %(id)s) AS found "
            'ORDER BY kind COLLATE "C", corp_id COLLATE "C", plain_id COLLATE "C"',
            {"id": id},
        )
        return [IdMapping(*row) for row in rows]

    # -- interface licences --------------------------------------------------------------

    def record_unlicensed(
        self, corp_id: str, user_id: str, *, agent_id: int | None, seen_at: float
    ) -> None:
        rules.require(corp_id, "corp_id")
        rules.require(user_id, "user_id")
        self._rowcount(
            f"INSERT INTO unlicensed_members ({_UNLICENSED_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, 1) ON CONFLICT (corp_id, user_id) DO UPDATE SET "
            "agent_id = coalesce(excluded.agent_id, unlicensed_members.agent_id), "
            "last_seen = greatest(unlicensed_members.last_seen, excluded.last_seen), "
            "count = unlicensed_members.count + 1",
            (corp_id, user_id, agent_id, seen_at, seen_at),
        )

    def unlicensed_members(
        self, *, corp_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[UnlicensedMember]:
        rules.check_limit(limit)
        where: list[str] = ["true"]
        params: list[object] = []
        if corp_id is not None:
            where.append("corp_id = %s")
            params.append(corp_id)
        if since is not None:
            where.append("last_seen >= %s")
            params.append(since)
        params.append(limit)
        rows = self._all(
            f"SELECT {_UNLICENSED_COLUMNS} FROM unlicensed_members "
            f"WHERE {' AND '.join(where)} ORDER BY last_seen DESC LIMIT %s",
            params,
        )
        return [UnlicensedMember(*row) for row in rows]

    def save_licences(
        self, corp_id: str, licences: Sequence[Licence], *, complete: bool = False
    ) -> int:
        rules.require(corp_id, "corp_id")
        for licence in licences:
            rules.require(licence.user_id, "user_id")
            if licence.corp_id != corp_id:
                raise UsageError("every licence saved must belong to corp_id")
        now = self._now()

        def save(cur: psycopg.Cursor[Any]) -> int:
            if complete:
                cur.execute("DELETE FROM licences WHERE corp_id = %s", (corp_id,))
            if licences:
                cur.executemany(
                    f"INSERT INTO licences ({_LICENCE_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (corp_id, user_id, type) DO UPDATE SET "
                    "active_code = coalesce(excluded.active_code, licences.active_code), "
                    "active_time = coalesce(excluded.active_time, licences.active_time), "
                    "expire_time = coalesce(excluded.expire_time, licences.expire_time), "
                    "updated_at = excluded.updated_at",
                    [
                        (
                            corp_id,
                            x.user_id,
                            x.type,
                            x.active_code,
                            x.active_time,
                            x.expire_time,
                            now,
                        )
                        for x in licences
                    ],
                )
            licensed = [x.user_id for x in licences if (x.expire_time or math.inf) > now]
            if licensed:
                cur.execute(
                    "DELETE FROM unlicensed_members WHERE corp_id = %s AND user_id = ANY(%s)",
                    (corp_id, licensed),
                )
            return len(licences)

        return self._run(save, transaction=True)

    def list_licences(
        self,
        *,
        corp_id: str | None = None,
        user_id: str | None = None,
        expiring_before: float | None = None,
        limit: int = 1000,
    ) -> list[Licence]:
        rules.check_limit(limit)
        where: list[str] = []
        params: list[object] = []
        for column, value in (("corp_id", corp_id), ("user_id", user_id)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if expiring_before is not None:
            where.append("expire_time IS NOT NULL AND expire_time < %s")
            params.append(expiring_before)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        params.append(limit)
        rows = self._all(
            f"SELECT {_LICENCE_COLUMNS} FROM licences {clause}"
            'ORDER BY expire_time IS NULL, expire_time, corp_id COLLATE "C", '
            'user_id COLLATE "C", type LIMIT %s',
            params,
        )
        return [Licence(*row) for row in rows]

    # -- org codes ----------------------------------------------------------------------

    def set_org_code(self, code: str, corp_id: str, *, force: bool = False) -> OrgCode:
        normalised = rules.normalise_org_code(code)
        rules.require(corp_id, "corp_id")
        now = self._now()
        # The check and the write in one statement: the upsert takes the row only when it
        # is ours already or force is given; otherwise nothing is returned, and the
        # current holder is read for the message.
        row = self._one(
            "WITH up AS ("
            "INSERT INTO org_codes (code, corp_id, created_at, updated_at) "
            "VALUES (%(code)s, %(corp)s, %(now)s, %(now)s) ON CONFLICT (code) DO UPDATE SET "
            "corp_id = excluded.corp_id, updated_at = excluded.updated_at "
            "WHERE org_codes.corp_id = excluded.corp_id OR %(force)s "
            "RETURNING code, corp_id, created_at, updated_at) "
            "SELECT code, corp_id, created_at, updated_at, true FROM up "
            "UNION ALL SELECT code, corp_id, created_at, updated_at, false FROM org_codes "
            "WHERE code = %(code)s AND NOT EXISTS (SELECT 1 FROM up)",
            {"code": normalised, "corp": corp_id, "now": now, "force": force},
        )
        if row is None:  # a concurrent delete between the upsert and the read: try again
            return self.set_org_code(code, corp_id, force=force)
        if not row[4]:
            raise rules.org_code_conflict(normalised, row[1])
        return OrgCode(*row[:4])

    def get_org_code(self, code: str) -> OrgCode:
        normalised = rules.normalise_org_code(code)
        row = self._one(
            "SELECT code, corp_id, created_at, updated_at FROM org_codes WHERE code = %s",
            (normalised,),
        )
        if row is None:
            raise RecordNotFound(f"no org code {normalised!r}")
        return OrgCode(*row)

    def delete_org_code(self, code: str) -> OrgCode:
        normalised = rules.normalise_org_code(code)
        row = self._one(
            "DELETE FROM org_codes WHERE code = %s RETURNING code, corp_id, created_at, updated_at",
            (normalised,),
        )
        if row is None:
            raise RecordNotFound(f"no org code {normalised!r}")
        return OrgCode(*row)

    def list_org_codes(self) -> list[OrgCode]:
        rows = self._all(
            'SELECT code, corp_id, created_at, updated_at FROM org_codes ORDER BY code COLLATE "C"'
        )
        return [OrgCode(*r) for r in rows]

    # -- login codes --------------------------------------------------------------------

    def save_login_code(
        self, code_hash: str, *, instance: str, corp_id: str, user_id: str, expires_at: float
    ) -> None:
        rules.require(code_hash, "code_hash")
        now = self._now()

        def save(cur: psycopg.Cursor[Any]) -> None:
            cur.execute(
                "DELETE FROM login_codes WHERE expires_at < %s",
                (now - rules.LOGIN_CODE_RETENTION,),
            )
            cur.execute(
                f"INSERT INTO login_codes ({_LOGIN_CODE_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, NULL)",
                (code_hash, instance, corp_id, user_id, now, expires_at),
            )

        self._run(save, transaction=True)

    def consume_login_code(self, code_hash: str) -> LoginCode | None:
        now = self._now()
        row = self._one(
            "UPDATE login_codes SET used_at = %s "
            "WHERE code_hash = %s AND used_at IS NULL AND expires_at > %s "
            f"RETURNING {_LOGIN_CODE_COLUMNS}",
            (now, code_hash, now),
        )
        return LoginCode(*row) if row is not None else None

    # -- health -------------------------------------------------------------------------

    def healthcheck(self, *, write: bool = True) -> dict[str, object]:
        """See :meth:`Store.healthcheck`; the write probe rewrites the schema version in
        place (one row, one commit), which a read-only server or replica refuses."""
        try:
            row = self._one(
                "SELECT (SELECT version FROM qywx_schema), "
                "current_setting('transaction_read_only') = 'on' OR pg_is_in_recovery(), "
                "(SELECT coalesce(max(id), 0) FROM callbacks), "
                "(SELECT max(received_at) FROM suite_tickets)"
            )
        except StoreError as exc:
            return {"ok": False, "backend": self.backend, "writable": False, "error": str(exc)}
        assert row is not None
        read_only = bool(row[1])
        health: dict[str, object] = {
            "ok": not read_only,
            "backend": self.backend,
            "schema_version": int(row[0] or 0),
            "read_only": read_only,
            "callbacks": int(row[2]),
            "suite_ticket_at": float(row[3]) if row[3] is not None else None,
        }
        if read_only:
            health["error"] = f"database {self._url} is read-only"
        if not write:
            return health
        if read_only:
            return {**health, "writable": False}
        try:
            self._rowcount("UPDATE qywx_schema SET version = version")
        except StoreError as exc:
            return {**health, "ok": False, "writable": False, "error": str(exc)}
        return {**health, "writable": True}

    # -- secrets at rest ----------------------------------------------------------------

    def secrets_at_rest(self) -> SecretsAtRest:
        return survey_secrets(
            r[0]
            for r in self._all(
                "SELECT permanent_code FROM corp_auths WHERE permanent_code IS NOT NULL "
                "UNION ALL SELECT token FROM tokens"
            )
        )

    def reseal_secrets(self) -> Resealed:
        def reseal(cur: psycopg.Cursor[Any]) -> Resealed:
            # Rows locked for the transaction: a host refreshing a token meanwhile waits,
            # then writes its own (sealed with its own key, which the next run reseals).
            cur.execute(
                "SELECT suite_id, corp_id, permanent_code FROM corp_auths "
                "WHERE permanent_code IS NOT NULL FOR UPDATE"
            )
            rows = [(Slot.permanent_code(s, c), code) for s, c, code in cur.fetchall()]
            cur.execute("SELECT kind, key, token FROM tokens FOR UPDATE")
            rows += [(Slot.token(kind, key), token) for kind, key, token in cur.fetchall()]
            updates, report = plan_reseal(self._keys, rows)
            for slot, old, new in updates:
                if slot.table == "corp_auths":
                    cur.execute(
                        "UPDATE corp_auths SET permanent_code = %s WHERE suite_id = %s "
                        "AND corp_id = %s AND permanent_code = %s",
                        (new, *slot.row, old),
                    )
                else:
                    cur.execute(
                        "UPDATE tokens SET token = %s WHERE kind = %s AND key = %s AND token = %s",
                        (new, *slot.row, old),
                    )
            return report

        report = self._run(reseal, transaction=True)
        if report.sealed or report.rekeyed:
            # The rows' old versions stay in the table files until vacuumed; rewrite the
            # two small tables so a file-level copy of them holds only the new values.
            # Best effort: it needs the tables' owner (qywx's role, which created them).
            with contextlib.suppress(StoreError):
                self._run(lambda cur: cur.execute("VACUUM FULL corp_auths, tokens"))
        return report

    # -- maintenance (qywx db) ----------------------------------------------------------

    def table_counts(self) -> dict[str, int]:
        from qywx_cli.core.store.maintenance import TABLES

        def counts(cur: psycopg.Cursor[Any]) -> dict[str, int]:
            cur.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES))
            row = cur.fetchone()
            assert row is not None
            return dict(zip(TABLES, (int(n) for n in row), strict=True))

        return self._run(counts, transaction=True)

    def size_bytes(self) -> int:
        row = self._one("SELECT pg_database_size(current_database())")
        return int(row[0]) if row is not None else 0

    def dump_rows(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        after: Sequence[object] | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        order = ", ".join(f'{k} COLLATE "C"' if k not in _NUMERIC_KEYS else k for k in key)
        where = ""
        if after:
            left = ", ".join(f'{k} COLLATE "C"' if k not in _NUMERIC_KEYS else k for k in key)
            where = f"WHERE ({left}) > ({', '.join('%s' for _ in key)}) "
        sql = f"SELECT {', '.join(columns)} FROM {table} {where}ORDER BY {order} LIMIT %s"
        return [tuple(r) for r in self._all(sql, [*(after or ()), limit])]

    def load_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('%s' for _ in columns)}) ON CONFLICT DO NOTHING"
        )

        def load(cur: psycopg.Cursor[Any]) -> int:
            cur.executemany(sql, [tuple(row) for row in rows])  # pipelined
            new = max(cur.rowcount, 0)
            if "id" in columns:  # later inserts must not reuse a copied id
                cur.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
            return new

        return self._run(load, transaction=True)


def _drop_corp_credentials(cur: psycopg.Cursor[Any], corp_id: str) -> None:
    """A corp's token and JS-SDK tickets (jsapi_ticket; agent_ticket keyed corp/agentid)."""
    cur.execute(
        "DELETE FROM tokens WHERE (kind IN ('corp', 'jsapi_ticket') AND key = %s) "
        "OR (kind = 'agent_ticket' AND left(key, %s) = %s)",
        (corp_id, len(corp_id) + 1, corp_id + "/"),
    )


def _drop_tokens(cur: psycopg.Cursor[Any], kind: str | None, key: str | None) -> int:
    where: list[str] = []
    params: list[object] = []
    if kind is not None:
        where.append("kind = %s")
        params.append(kind)
    if key is not None:
        where.append("key = %s")
        params.append(key)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    cur.execute(f"DELETE FROM tokens{clause}", params)
    return cur.rowcount
