"""The SQLite backend: one file in WAL mode, the embedded default that needs no set-up.

How it keeps the contract of :mod:`qywx_cli.core.store.base` on one host:

* **Durable before reply.** :meth:`SQLiteStore.record_callback` commits one ``BEGIN
  IMMEDIATE`` transaction with ``synchronous=FULL`` in WAL mode before it returns; the
  threads of one process share that commit (:mod:`.groupcommit`), one fsync for all.
* **Deduplicated in the same transaction.** The replay and content lookups run under
  the write lock, so no other writer can insert between the check and the insert.
* **Claimed, not just read.** One ``UPDATE … RETURNING`` under the write lock hands a
  record to exactly one worker of any thread or process sharing the file.
* **Processes coordinate through SQLite's locking**: a 5 s busy timeout, then a few
  retries with back-off before :class:`~qywx_cli.core.errors.StoreError`.
* **Private file.** It holds permanent codes and cached access tokens, so it is created
  0600 before SQLite opens it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from qywx_cli.core.errors import QywxError, RecordNotFound, StoreError, UsageError
from qywx_cli.core.private import make_private_dirs, make_private_file
from qywx_cli.core.sealing import NO_KEYS, Keyring, Slot
from qywx_cli.core.store import records as _records
from qywx_cli.core.store import rules
from qywx_cli.core.store.base import SCHEMA_VERSION, Store, plan_reseal, survey_secrets
from qywx_cli.core.store.groupcommit import Failed, GroupCommit
from qywx_cli.core.store.records import (
    CALLBACK_STATUSES,
    DEFAULT_LEASE_SECONDS,
    FOLD_WINDOW_SECONDS,
    SUITE_TICKET_HISTORY,
    TICKET_PRUNE_EVERY,
    CallbackRecord,
    CallbackStats,
)
from qywx_cli.core.store.rules import check_id as _check_id
from qywx_cli.core.store.rules import check_limit as _check_limit
from qywx_cli.core.store.rules import require as _require

if TYPE_CHECKING:  # built through _records, which loads them on first use
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

__all__ = ["MIGRATIONS", "SQLiteStore"]

_T = TypeVar("_T")

_TOKEN_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_TOKEN_LOCKS_GUARD: Final = threading.Lock()

BUSY_TIMEOUT_MS: Final = 5000
_LOCK_RETRIES: Final = 3
_LOCK_BACKOFF: Final = (0.05, 0.2, 0.5)


# ---------------------------------------------------------------------------------------
# Schema


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run each statement of ``script`` inside the caller's transaction.

    ``sqlite3``'s own ``executescript`` commits first, which would split a migration
    into pieces another process could see half done.
    """
    statement = ""
    for part in script.split(";"):
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                db.execute(statement)
            statement = ""


_NOT_ORIGINAL: Final = f"status NOT IN ({', '.join(repr(s) for s in rules.NOT_ORIGINAL_STATUSES)})"
_OPEN: Final = "status != 'processed'"
"""The partial status index's condition; a query names it word for word to use it."""
_NOT_TICKET: Final = "info_type IS NOT 'suite_ticket'"
"""The partial event index's condition (NULL, a rejected request, is in it)."""


def _migrate_v1(db: sqlite3.Connection) -> None:
    """The initial schema.

    Every list filter of ``qywx log list`` has an index ending in ``received_at`` (and,
    implicitly, the rowid) so that "filter [and since], newest first, LIMIT n" walks one
    index backwards and stops after n rows; the same indexes cover the GROUP BYs of
    ``log stats``, so those never read the table. AUTOINCREMENT keeps ids strictly
    increasing, which ``log tail --follow`` (``after_id``) relies on.
    """
    _run_script(
        db,
        """
        CREATE TABLE callbacks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            received_at REAL NOT NULL,
            instance TEXT NOT NULL,
            kind TEXT NOT NULL,
            info_type TEXT,
            suite_id TEXT,
            corp_id TEXT,
            msg_signature TEXT NOT NULL,
            timestamp TEXT NOT NULL,
            nonce TEXT NOT NULL,
            envelope TEXT NOT NULL,
            content_key TEXT,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            processed_at REAL,
            duplicate_of INTEGER REFERENCES callbacks(id),
            duplicate_reason TEXT,
            claimed_by TEXT,
            claimed_at REAL
        );
        CREATE INDEX callbacks_by_status ON callbacks(status, received_at);
        CREATE INDEX callbacks_by_info_type ON callbacks(info_type, received_at);
        CREATE INDEX callbacks_by_corp ON callbacks(corp_id, received_at);
        CREATE INDEX callbacks_by_instance ON callbacks(instance, received_at);
        CREATE INDEX callbacks_by_received ON callbacks(received_at);
        CREATE INDEX callbacks_replay ON callbacks(instance, msg_signature, timestamp, nonce);
        CREATE INDEX callbacks_content ON callbacks(content_key)
            WHERE content_key IS NOT NULL;

        CREATE TABLE suite_tickets (
            id INTEGER PRIMARY KEY,
            suite_id TEXT NOT NULL,
            ticket TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            received_at REAL NOT NULL,
            callback_id INTEGER REFERENCES callbacks(id),
            UNIQUE (suite_id, timestamp, ticket)
        );

        CREATE TABLE tokens (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            token TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID;

        CREATE TABLE corp_auths (
            suite_id TEXT NOT NULL,
            corp_id TEXT NOT NULL,
            permanent_code TEXT,
            agent_id INTEGER,
            corp_name TEXT,
            state TEXT NOT NULL,
            auth_user_id TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (suite_id, corp_id)
        );
        CREATE INDEX corp_auths_by_corp ON corp_auths(corp_id);

        CREATE TABLE org_codes (
            code TEXT PRIMARY KEY,
            corp_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );

        CREATE TABLE login_codes (
            code_hash TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            corp_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL
        );
        """,
    )


_CALLBACKS_V2: Final = """
    CREATE TABLE callbacks_v2 (
        id INTEGER PRIMARY KEY,
        received_at REAL NOT NULL,
        instance TEXT NOT NULL,
        kind TEXT NOT NULL,
        info_type TEXT,
        suite_id TEXT,
        corp_id TEXT,
        msg_signature TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        nonce TEXT NOT NULL,
        envelope TEXT NOT NULL,
        content_key TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        processed_at REAL,
        duplicate_of INTEGER REFERENCES callbacks(id),
        duplicate_reason TEXT,
        claimed_by TEXT,
        claimed_at REAL
    )
"""

_DEDUPE_KEY: Final = "substr(coalesce(content_key, msg_signature), 1, 16)"
"""What the one dedupe index holds. A byte-identical replay decrypts to the same content,
so it carries the same ``content_key`` as its original and is found under that key;
records without one (the GET handshake) are found by their msg_signature. The index only
names candidates, which the lookup then compares in full, so 16 characters of those
hashes do: a third of the entry, and of the page splits."""


def _migrate_v2(db: sqlite3.Connection) -> None:
    """Fewer pages per callback: each index is a page every insert writes, and an fsync
    of the WAL costs what it writes.

    * ``callbacks`` without AUTOINCREMENT: its ``sqlite_sequence`` row was one more page
      per commit. Ids still only grow (SQLite takes max(rowid) + 1, and callback records
      are never deleted), which ``log tail --follow`` relies on.
    * One index every callback writes, ``callbacks_log (received_at, id, info_type,
      instance, status)``: newest-first walks it backwards with the filters checked in
      the index itself, and ``--since`` is a range of it, so the log and ``log stats
      --since`` read in proportion to the window.
    * Partial indexes for the rest, which a suite_ticket never touches: records not yet
      ``processed`` by status (pending work, ``--status failed``, the failures table) and
      records that name a corp by corp.
    * One dedupe index (:data:`_DEDUPE_KEY`) serving both duplicate checks, only over
      records that can be an original.
    * ``suite_tickets`` keyed by (suite, TimeStamp, ticket) in a WITHOUT ROWID table: the
      history lookup, the once-only insert and the latest ticket are one b-tree.

    The table is rebuilt (ids kept); :meth:`SQLiteStore._migrate` turns foreign keys off
    around it, as SQLite's documented procedure for changing a table requires.
    """
    db.execute(_CALLBACKS_V2)
    db.execute("INSERT INTO callbacks_v2 SELECT * FROM callbacks")
    db.execute("DROP TABLE callbacks")
    db.execute("ALTER TABLE callbacks_v2 RENAME TO callbacks")
    db.execute("DELETE FROM sqlite_sequence WHERE name = 'callbacks'")
    db.execute(
        "CREATE INDEX callbacks_log ON callbacks(received_at, id, info_type, instance, status)"
    )
    db.execute(f"CREATE INDEX callbacks_open ON callbacks(status, received_at) WHERE {_OPEN}")
    db.execute(
        "CREATE INDEX callbacks_by_corp ON callbacks(corp_id, received_at) "
        "WHERE corp_id IS NOT NULL"
    )
    db.execute(f"CREATE INDEX callbacks_dedupe ON callbacks({_DEDUPE_KEY}) WHERE {_NOT_ORIGINAL}")
    db.execute(
        """
        CREATE TABLE suite_tickets_v2 (
            suite_id TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            ticket TEXT NOT NULL,
            id INTEGER NOT NULL,
            received_at REAL NOT NULL,
            callback_id INTEGER REFERENCES callbacks(id),
            PRIMARY KEY (suite_id, timestamp, ticket)
        ) WITHOUT ROWID
        """
    )
    db.execute(
        "INSERT INTO suite_tickets_v2 (suite_id, timestamp, ticket, id, received_at, "
        "callback_id) SELECT suite_id, timestamp, ticket, id, received_at, callback_id "
        "FROM suite_tickets"
    )
    db.execute("DROP TABLE suite_tickets")
    db.execute("ALTER TABLE suite_tickets_v2 RENAME TO suite_tickets")
    broken = db.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreError(f"foreign key check failed after the rebuild: {broken[:3]}")


def _migrate_v3(db: sqlite3.Connection) -> None:
    """The ID upgrade's mappings, interface licences and unlicensed members.

    ``id_mappings`` is keyed by (kind, corp, plain id) and indexed by each form alone,
    so :meth:`SQLiteStore.lookup_id` and the corp-id alias in ``get_corp_auth`` are
    index searches whichever form WeCom sends. No callback index is added: a callback
    writes no more pages than under v2 (``log list --kind`` filters in the log walk).
    """
    _run_script(
        db,
        """
        CREATE TABLE id_mappings (
            kind TEXT NOT NULL,
            corp_id TEXT NOT NULL,
            plain_id TEXT NOT NULL,
            open_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (kind, corp_id, plain_id)
        ) WITHOUT ROWID;
        CREATE INDEX id_mappings_by_open ON id_mappings(open_id);
        CREATE INDEX id_mappings_by_plain ON id_mappings(plain_id);

        CREATE TABLE licences (
            corp_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            type INTEGER NOT NULL,
            active_code TEXT,
            active_time INTEGER,
            expire_time INTEGER,
            updated_at REAL NOT NULL,
            PRIMARY KEY (corp_id, user_id, type)
        ) WITHOUT ROWID;
        CREATE INDEX licences_by_expiry ON licences(expire_time);

        CREATE TABLE unlicensed_members (
            corp_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            agent_id INTEGER,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (corp_id, user_id)
        ) WITHOUT ROWID;
        CREATE INDEX unlicensed_by_last_seen ON unlicensed_members(last_seen);
        """,
    )


def _migrate_v4(db: sqlite3.Connection) -> None:
    """Events by name, for every event but suite_ticket (whose inserts stay at four
    pages): ``log list --event X`` seeks instead of walking the log, and ``log stats``
    counts each event with one range seek, in proportion to the window; suite_tickets
    are the window's total minus the rest."""
    db.execute(
        "CREATE INDEX IF NOT EXISTS callbacks_by_event ON callbacks(info_type, received_at) "
        f"WHERE {_NOT_TICKET}"
    )


def _migrate_v5(db: sqlite3.Connection) -> None:
    """Authorization links, the link state and app publish status of each corp.

    ``auth_links`` is keyed by the link's state (doc 98744: a-zA-Z0-9, ≤ 32 bytes), the
    value WeCom hands back in create_auth. New corp_auths columns are nullable, so rows
    written before this version read as "no link, status never read".
    """
    _run_script(
        db,
        """
        ALTER TABLE corp_auths ADD COLUMN link_state TEXT;
        ALTER TABLE corp_auths ADD COLUMN publish_status INTEGER;
        ALTER TABLE corp_auths ADD COLUMN publish_checked_at REAL;

        CREATE TABLE auth_links (
            state TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            suite_id TEXT NOT NULL,
            qrcode_url TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            corp_id TEXT,
            linked_at REAL
        );
        CREATE INDEX auth_links_by_corp ON auth_links(corp_id);
        """,
    )


_REDUCIBLE: Final = "kind != 'verify' AND ltrim(envelope, char(9, 10, 11, 12, 13, 32)) LIKE '<%'"
"""Records whose envelope is a whole XML body (written before v6), after any leading
whitespace as :attr:`~.records.CallbackRecord.ciphertext` skips it (``ltrim`` alone
strips only spaces, and a captured body often begins with a line break)."""


def _migrate_v6(db: sqlite3.Connection) -> None:
    """A bounded callback log.

    * ``envelope`` keeps only the signed ciphertext: each stored XML body is reduced to
      its ``Encrypt`` value (what the signature covers and all retry needs), so the
      padding a captured request was posted with no longer sits in the file.
    * ``folded`` / ``folded_at``: refusals past :data:`~.records.FOLD_AFTER` of one kind
      in the window are counted on a row instead of adding one.
    * ``callbacks_by_original``: duplicates by the record they repeat, only over
      duplicates (a suite_ticket or an original writes no page of it), for the fold
      count and for the prune that must unlink a deleted original.
    """
    db.execute("ALTER TABLE callbacks ADD COLUMN folded INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE callbacks ADD COLUMN folded_at REAL")
    db.execute(
        "CREATE INDEX callbacks_by_original ON callbacks(duplicate_of, received_at) "
        "WHERE duplicate_of IS NOT NULL"
    )
    db.create_function("qywx_encrypt_of", 1, rules.reduce_envelope, deterministic=True)
    db.execute(f"UPDATE callbacks SET envelope = qywx_encrypt_of(envelope) WHERE {_REDUCIBLE}")


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _migrate_v1,
    _migrate_v2,
    _migrate_v3,
    _migrate_v4,
    _migrate_v5,
    _migrate_v6,
)
"""Forward migrations in order; migration i takes the schema from v(i) to v(i+1).
The version is kept in ``PRAGMA user_version``."""

assert len(MIGRATIONS) == SCHEMA_VERSION, "every backend's migrations end at SCHEMA_VERSION"


class _NewFileSchema:
    """The CREATE statements a new file is given in one step, read back from the first
    file this process migrated from nothing: tables first, then indexes.

    Replaying the six migrations on a new file costs about 5 ms of CPU (v2 rebuilds
    tables that are still empty, and SQLite re-reads the schema after every change);
    these statements about 2 ms (``benchmarks/new_store_bench.py``). The first new file
    of a process is still migrated step by step, so a process that makes one database
    pays about what it did, and each later one gains (the test suite makes about 500);
    there is no second copy of the schema to keep in step with the migrations.

    Only CREATE statements are copied: a migration that writes rows or sets a per-file
    PRAGMA (``auto_vacuum``, ``application_id``) must add them to :meth:`create` too,
    and ``tests/core/store/test_sqlite.py`` compares the rows and those PRAGMAs of both
    paths. SQLite's own tables are not copied (``sqlite_sequence`` is v1's
    AUTOINCREMENT, which v2 dropped)."""

    statements: tuple[str, ...] | None = None

    @classmethod
    def read(cls, db: sqlite3.Connection) -> None:
        """Keep the statements of ``db``, just migrated from nothing (in its transaction)."""
        rows = db.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite^_%' ESCAPE '^' ORDER BY type != 'table', rowid"
        ).fetchall()
        cls.statements = tuple(str(sql) for (sql,) in rows)

    @classmethod
    def create(cls, db: sqlite3.Connection) -> None:
        assert cls.statements is not None
        for statement in cls.statements:
            db.execute(statement)


_CALLBACK_COLUMNS: Final = (
    "id, received_at, instance, kind, info_type, suite_id, corp_id, msg_signature, "
    "timestamp, nonce, envelope, content_key, status, attempts, last_error, processed_at, "
    "duplicate_of, duplicate_reason, claimed_by, claimed_at, folded, folded_at"
)
_CORP_AUTH_INSERT: Final = (
    "suite_id, corp_id, permanent_code, agent_id, corp_name, state, auth_user_id, "
    "created_at, updated_at"
)
_ID_MAPPING_COLUMNS: Final = "kind, corp_id, plain_id, open_id, created_at, updated_at"
_LICENCE_COLUMNS: Final = (
    "corp_id, user_id, type, active_code, active_time, expire_time, updated_at"
)
_UNLICENSED_COLUMNS: Final = "corp_id, user_id, agent_id, first_seen, last_seen, count"
# The other form of a corp id, through a recorded corpid mapping (either direction).
_CORP_ALIASES: Final = (
    "SELECT open_id FROM id_mappings WHERE kind = 'corpid' AND plain_id = ? "
    "UNION SELECT plain_id FROM id_mappings WHERE kind = 'corpid' AND open_id = ?"
)
_CORP_AUTH_COLUMNS: Final = f"{_CORP_AUTH_INSERT}, link_state, publish_status, publish_checked_at"
_AUTH_LINK_COLUMNS: Final = (
    "state, instance, suite_id, qrcode_url, created_at, expires_at, corp_id, linked_at"
)
_LOGIN_CODE_COLUMNS: Final = (
    "code_hash, instance, corp_id, user_id, created_at, expires_at, used_at"
)
_SECRET_VALUES: Final = (
    "SELECT permanent_code FROM corp_auths WHERE permanent_code IS NOT NULL "
    "UNION ALL SELECT token FROM tokens"
)
_NEWEST_FIRST: Final = "ORDER BY received_at DESC, id DESC"
_OLDEST_FIRST: Final = "ORDER BY received_at, id"
_FIND_ORIGINALS: Final = (
    # Both duplicate checks in one lookup: (oldest replay, oldest same content) among the
    # candidates the dedupe index holds under the new record's key or signature. Its
    # parameters are numbered as in _RECORD, which it is part of; a rejected request
    # (?12) is never looked up.
    "SELECT min(CASE WHEN instance = ?2 AND msg_signature = ?7 AND timestamp = ?8 "
    "AND nonce = ?9 THEN id END) AS replay, "
    "min(CASE WHEN content_key = ?11 THEN id END) AS content FROM callbacks "
    f"WHERE ?12 != 'rejected' AND {_DEDUPE_KEY} IN (substr(?11, 1, 16), substr(?7, 1, 16)) "
    f"AND {_NOT_ORIGINAL}"
)
_RECORD: Final = (
    # The dedupe lookup and the insert as ONE statement: each statement is a trip through
    # sqlite3's binding and a release of the GIL, which under load hands the interpreter
    # to another thread while this one holds the write lock. The verdict is
    # rules.dedupe_verdict and rules.handled_on_record written in SQL (the PostgreSQL
    # backend's statement follows the same rules): a replay wins over a content match,
    # only a new `processed` record counts an attempt. Parameters: ?1 received_at,
    # ?2 instance, ?3 kind, ?4 info_type, ?5 suite_id, ?6 corp_id, ?7 msg_signature,
    # ?8 timestamp, ?9 nonce, ?10 envelope, ?11 content_key, ?12 status, ?13 last_error.
    "INSERT INTO callbacks (received_at, instance, kind, info_type, suite_id, corp_id, "
    "msg_signature, timestamp, nonce, envelope, content_key, status, attempts, last_error, "
    "duplicate_of, duplicate_reason, processed_at) "
    "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
    "CASE WHEN original IS NULL THEN ?12 ELSE 'duplicate' END, "
    "original IS NULL AND ?12 = 'processed', ?13, original, "
    "CASE WHEN replay IS NOT NULL THEN 'replay' WHEN original IS NOT NULL THEN 'content' END, "
    "CASE WHEN original IS NULL AND ?12 = 'processed' THEN ?1 END "
    f"FROM (SELECT coalesce(replay, content) AS original, replay FROM ({_FIND_ORIGINALS})) "
    "RETURNING id, status, attempts, duplicate_of, duplicate_reason, processed_at"
)
_KIN_OF_DUPLICATE: Final = (
    # Rows of one kind of duplicate in the fold window (callbacks_by_original).
    "SELECT count(*), max(id) FROM callbacks WHERE duplicate_of = ? AND received_at >= ? "
    "AND duplicate_reason IS ?"
)
_KIN_OF_REJECTED: Final = (
    # Rows of one kind of rejected request in the fold window (callbacks_open).
    f"SELECT count(*), max(id) FROM callbacks WHERE status = 'rejected' AND {_OPEN} "
    "AND received_at >= ? AND instance = ? AND last_error IS ?"
)
_FOLD: Final = (
    "UPDATE callbacks SET folded = folded + 1, folded_at = ? WHERE id = ? "
    f"RETURNING {_CALLBACK_COLUMNS}"
)
PRUNE_BATCH: Final = 2000
"""Records a prune deletes per transaction: short enough that recording never waits long."""
_AUTOMATIC: Final = (
    # An automatic claim's extra condition (claim_callback): a failed record only while its
    # retry is pending, the mark ending its error. substr(x, -n) is x's last n characters.
    f"AND (status != 'failed' OR substr(last_error, -{len(rules.RETRYING_MARK)}) = "
    f"'{rules.RETRYING_MARK}') "
)
_PENDING: Final = (
    f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE status = 'received' AND {_OPEN} "
    f"AND (claimed_by IS NULL OR claimed_at <= ?) AND received_at <= ? {_OLDEST_FIRST} LIMIT ?"
)

_HELD: Final = (
    # Two range seeks of the open-records index, received (any age) and recent failed,
    # rather than one OR that SQLite would answer with a scan of every open record.
    "SELECT id, claimed_by, received_at FROM callbacks WHERE status = 'received' "
    f"AND {_OPEN} AND claimed_by IS NOT NULL AND claimed_at > ? "
    "UNION ALL SELECT id, claimed_by, received_at FROM callbacks WHERE status = 'failed' "
    f"AND {_OPEN} AND claimed_by IS NOT NULL AND claimed_at > ? AND received_at >= ? "
    "ORDER BY received_at, id LIMIT ?"
)


def _callback(row: Sequence[Any]) -> CallbackRecord:
    return CallbackRecord(*row)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


_OWN_FAULTS: Final = (
    OverflowError,  # an int beyond SQLite's 64 bits, refused while binding
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    QywxError,
)
"""What a write's own values or rules raise inside a group commit: that write fails
alone. Anything else (a locked or full disk, a corrupt file) fails the whole batch."""


def _own_fault(exc: BaseException) -> QywxError:
    return exc if isinstance(exc, QywxError) else StoreError(f"database error: {exc}")


def _noting_own_fault(
    writes: Sequence[tuple[int, Callable[[sqlite3.Connection], _T]]],
    culprit: list[tuple[int, BaseException]],
) -> Callable[[sqlite3.Connection], list[_T]]:
    """One write running each of ``writes`` (index, write) in turn; the one that fails
    by its own fault (:data:`_OWN_FAULTS`) is noted in ``culprit`` (its index and
    error) before the error goes on and the transaction is rolled back."""

    def run(db: sqlite3.Connection) -> list[_T]:
        done = []
        for index, write in writes:
            try:
                done.append(write(db))
            except _OWN_FAULTS as exc:
                culprit.append((index, exc))
                raise
        return done

    return run


def _placeholders(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


def _open_problem(path: Path, exc: sqlite3.Error) -> str:
    """What an operator can do about a database SQLite will not open, in one line.

    SQLite's own words mislead here: a folder the user cannot write gives "attempt to
    write a readonly database" (WAL mode needs ``-wal``/``-shm`` files beside the
    database), and a corrupt file "file is not a database".
    """
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return (
            f"cannot write {path}: the file or its folder {path.parent} is not writable by "
            f"this user (SQLite also creates {path.name}-wal and {path.name}-shm there); "
            "fix the permissions or pass --db"
        )
    if "not a database" in text or "malformed" in text:
        return (
            f"{path} is not a SQLite database (corrupt, or another kind of file): pass --db "
            "with the qywx database, or move the file aside and restore it from a backup"
        )
    return f"cannot open database {path}: {text}"


class SQLiteStore(Store):
    """The qywx database in the SQLite file ``path``; safe to share between threads and
    processes of one host.

    One connection per Store, serialised by a lock; processes coordinate through SQLite's
    own locking (WAL, ``BEGIN IMMEDIATE`` for every read-modify-write, a 5 s busy timeout,
    then a few retries with back-off before :class:`StoreError`).
    """

    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        now: Callable[[], float] = time.time,
        keys: Keyring | None = None,
        migrate: bool = True,
    ) -> None:
        self._path = sqlite_path(path)
        self._now = now
        self._keys = keys if keys is not None else NO_KEYS
        self._lock = threading.Lock()
        # record_callback's group commit: requests waiting for the connection queue there
        # and the next one to get it commits them all in one transaction (one fsync).
        self._lock_key = os.path.abspath(self._path)
        self._group: GroupCommit[sqlite3.Connection] = GroupCommit(self._commit_batch)
        self._db: sqlite3.Connection | None = None
        # Reads get a connection of their own (WAL: readers never wait for the writer),
        # so a read never queues behind a commit's fsync for the write connection's lock.
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        created = self._create_private_file()
        try:
            conn = sqlite3.connect(
                str(self._path),
                check_same_thread=False,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self._path}: {exc}") from None
        try:
            db = conn
            self._configure(db)
            if not created:  # only now that it is known to be ours
                self._make_private(self._path.name, *self._side_files())
            if migrate:  # False: look at the schema as it is (qywx db info)
                self._migrate(db)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(_open_problem(self._path, exc)) from None
        except BaseException:
            conn.close()
            raise
        self._db = db
        try:  # SQLite creates -wal/-shm with the umask's mode; narrow them too
            self._make_private(*self._side_files())
        except BaseException:
            self.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def url(self) -> str:
        return str(self._path)

    @property
    def schema_version(self) -> int:
        return int(self._read(lambda db: db.execute("PRAGMA user_version").fetchone()[0]))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _make_private(self, *names: str) -> None:
        """Bring the database's files to 0600, or refuse to use them (one line)."""
        for name in names:
            path = self._path.with_name(name)
            try:
                make_private_file(path)
            except OSError as exc:
                raise StoreError(
                    f"{path} is readable by other users and cannot be made private "
                    f"({exc.strerror}); run `chmod 600 {path}` as its owner"
                ) from None

    def _side_files(self) -> tuple[str, str]:
        return self._path.name + "-wal", self._path.name + "-shm"

    def _create_private_file(self) -> bool:
        """Create the file 0600 before SQLite does, so no umask can widen it. An existing
        file (and its -wal/-shm) is narrowed to 0600 by the caller once ``_configure``
        has seen it is a qywx database: another program's file is left as it was."""
        try:
            make_private_dirs(self._path.parent)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot create database {self._path}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
        return True

    def _configure(self, db: sqlite3.Connection) -> None:
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise StoreError(_open_problem(self._path, exc)) from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema v{version} is newer than this qywx (v{SCHEMA_VERSION}); "
                "upgrade qywx"
            )
        if version == 0:
            self._refuse_foreign(db)
        for attempt in range(_LOCK_RETRIES + 1):
            try:
                db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == _LOCK_RETRIES:
                    raise StoreError(_open_problem(self._path, exc)) from None
                time.sleep(_LOCK_BACKOFF[attempt])
        # FULL: a recorded callback survives power loss, not just a crash of qywx.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")

    def _refuse_foreign(self, db: sqlite3.Connection) -> None:
        """A file with no qywx schema version but tables of its own is another program's
        database (a --db typo, a path reused): writing qywx's schema and WAL mode into it
        would damage it, and reading it would show an empty log. A SQLite file with no
        tables at all holds nothing to protect and becomes a qywx database."""
        rows = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite^_%' ESCAPE '^' ORDER BY name LIMIT 4"
        ).fetchall()
        if not rows:
            return
        # Another process may have migrated the new file since user_version was read: its
        # tables and its version commit together, so a version now set means they are ours.
        if int(db.execute("PRAGMA user_version").fetchone()[0]) != 0:
            return
        names = ", ".join(str(r[0]) for r in rows[:3]) + (", …" if len(rows) > 3 else "")
        raise StoreError(
            f"{self._path} is a SQLite database but not a qywx database (it holds tables "
            f"{names}); qywx leaves it untouched: pass --db with the qywx database, or a new "
            "file name for a new one"
        )

    def _migrate(self, db: sqlite3.Connection) -> None:
        def migrate(db: sqlite3.Connection) -> None:
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema v{version} is newer than this qywx "
                    f"(v{SCHEMA_VERSION}); upgrade qywx"
                )
            # A new file has no table of ours (a foreign one was refused by _refuse_foreign).
            fresh = version == 0 and _NewFileSchema.statements is not None
            steps: Iterable[tuple[int, Callable[[sqlite3.Connection], None]]] = (
                [(SCHEMA_VERSION, _NewFileSchema.create)]
                if fresh
                else enumerate(MIGRATIONS[version:], start=version + 1)
            )
            for target, step in steps:
                try:
                    step(db)
                except sqlite3.Error as exc:
                    raise StoreError(
                        f"cannot migrate {self._path} to schema v{target}: {exc}"
                    ) from None
            if version == 0 and not fresh:
                _NewFileSchema.read(db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

        if int(db.execute("PRAGMA user_version").fetchone()[0]) < SCHEMA_VERSION:
            # A table rebuild must not cascade through foreign keys (SQLite's procedure for
            # changing a table); the pragma only takes effect outside a transaction, and
            # each migration checks the keys itself before its commit.
            db.execute("PRAGMA foreign_keys = OFF")
            try:
                self._transaction(db, migrate, "BEGIN IMMEDIATE")
            finally:
                db.execute("PRAGMA foreign_keys = ON")

    # -- transactions -------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return self._run(fn, "BEGIN IMMEDIATE")

    def _write_grouped(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """A durable write that may share its transaction, and fsync, with other threads'."""
        return self._group.submit(fn)

    def _commit_batch(self, fns: Sequence[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        """One transaction for every write in ``fns``. A write that fails by its own
        fault (:data:`_OWN_FAULTS`: a value SQLite cannot hold, a broken constraint) is
        left out and the rest committed again without it, so one callback's bad value
        never fails the others that shared its commit."""
        results: list[Any] = [None] * len(fns)
        live = list(range(len(fns)))
        with self._lock:
            while live:
                if self._db is None:
                    raise StoreError(f"store {self._path} is closed")
                culprit = self._try_batch(self._db, fns, live, results)
                if culprit is None:
                    break
                live.remove(culprit)
        return results

    def _try_batch(
        self,
        db: sqlite3.Connection,
        fns: Sequence[Callable[[sqlite3.Connection], Any]],
        live: list[int],
        results: list[Any],
    ) -> int | None:
        """Commit the writes ``live`` (indexes into ``fns``) into ``results``; or, when
        one fails by its own fault, roll all back and return its index (its
        :class:`Failed` in ``results``)."""
        culprit: list[tuple[int, BaseException]] = []
        run = _noting_own_fault([(i, fns[i]) for i in live], culprit)
        try:
            done = self._transaction(db, run, "BEGIN IMMEDIATE")
        except QywxError:
            if not culprit:
                raise
            index, fault = culprit[0]
            results[index] = Failed(_own_fault(fault))
            return index
        for i, result in zip(live, done, strict=True):
            results[i] = result
        return None

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in a read transaction on the read connection (opened on first use)."""
        with self._read_lock:
            if self._db is None:
                raise StoreError(f"store {self._path} is closed")
            if self._reader is None:
                self._reader = self._open_reader()
            return self._transaction(self._reader, fn, "BEGIN")

    def _open_reader(self) -> sqlite3.Connection:
        # The file the write connection opened: by its absolute path (a relative one
        # would follow a later chdir) and never created (mode=rw), so a read can only
        # fail, never open a new empty database beside or instead of this one.
        uri = f"file:{urllib.parse.quote(self._lock_key)}?mode=rw"
        try:
            reader = sqlite3.connect(
                uri,
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            reader.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise StoreError(_open_problem(self._path, exc)) from None
        return reader

    def _run(self, fn: Callable[[sqlite3.Connection], _T], begin: str) -> _T:
        with self._lock:
            if self._db is None:
                raise StoreError(f"store {self._path} is closed")
            return self._transaction(self._db, fn, begin)

    def _transaction(
        self, db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T], begin: str
    ) -> _T:
        """Run ``fn`` in one transaction; re-run it from scratch if the file stays locked."""
        for attempt in range(_LOCK_RETRIES + 1):
            try:
                db.execute(begin)
                result = fn(db)
                db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                self._rollback(db)
                if not _is_locked(exc):
                    raise StoreError(f"database error: {exc}") from None
                if attempt == _LOCK_RETRIES:
                    raise StoreError(
                        f"database {self._path} is locked (gave up after "
                        f"{_LOCK_RETRIES + 1} attempts)"
                    ) from None
            except (sqlite3.Error, OverflowError) as exc:  # Overflow: an int SQLite cannot bind
                self._rollback(db)
                raise StoreError(f"database error: {exc}") from None
            except BaseException:
                self._rollback(db)
                raise
            time.sleep(_LOCK_BACKOFF[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

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
        """Durably log one request from WeCom; the caller replies only after this returns.

        Committed (``synchronous=FULL``) before returning. A ``rejected`` request is stored
        as is; anything else that repeats an earlier original, byte for byte or by
        ``content_key``, is stored as ``duplicate`` with ``duplicate_of`` set.

        ``suite_ticket`` (suite id, ticket, WeCom TimeStamp) is saved in the same
        transaction unless the callback is a duplicate: a suite_ticket push needs no
        WeCom call, so it is handled as it is recorded (status ``processed``).
        """
        return self._write_grouped(
            self._callback_insert(
                instance=instance,
                kind=kind,
                info_type=info_type,
                suite_id=suite_id,
                corp_id=corp_id,
                msg_signature=msg_signature,
                timestamp=timestamp,
                nonce=nonce,
                envelope=envelope,
                content_key=content_key,
                status=status,
                last_error=last_error,
                suite_ticket=suite_ticket,
            )
        )

    def record_callbacks(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> list[CallbackRecord | QywxError]:
        """All of ``requests`` in one transaction (shared with other threads' writes
        through the group commit), so a batch costs one fsync. A request that fails by
        its own fault (:data:`_OWN_FAULTS`) fails alone: the rest are written again
        without it."""
        slots: list[CallbackRecord | QywxError | None] = []
        inserts: list[tuple[int, Callable[[sqlite3.Connection], CallbackRecord]]] = []
        for request in requests:
            try:
                inserts.append((len(slots), self._callback_insert(**request)))
                slots.append(None)
            except QywxError as exc:  # refused before any SQL: only this one fails
                slots.append(exc)
        while inserts:
            culprit: list[tuple[int, BaseException]] = []
            try:
                written = self._write_grouped(_noting_own_fault(inserts, culprit))
            except QywxError:
                if not culprit:
                    raise
                index, fault = culprit[0]
                slots[index] = _own_fault(fault)
                inserts = [insert for insert in inserts if insert[0] != index]
                continue
            for (index, _), record in zip(inserts, written, strict=True):
                slots[index] = record
            break
        return [slot for slot in slots if slot is not None]

    def _callback_insert(
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
    ) -> Callable[[sqlite3.Connection], CallbackRecord]:
        """The checked write of :meth:`record_callback`, to run inside a transaction."""
        rules.check_new_callback(instance, kind, status, envelope)
        last_error = rules.clip_error(last_error)

        def insert(db: sqlite3.Connection) -> CallbackRecord:
            # Taken inside the write lock, so received_at follows id order across processes.
            received_at = self._now()
            since = received_at - FOLD_WINDOW_SECONDS
            if status == "rejected":  # refusals of one kind past the limit only count
                rows, newest = db.execute(
                    _KIN_OF_REJECTED, (since, instance, last_error)
                ).fetchone()
                if rules.should_fold(rows):
                    return _callback(db.execute(_FOLD, (received_at, newest)).fetchone())
            id_, stored, attempts, original, reason, processed_at = db.execute(
                _RECORD,
                (
                    received_at,
                    instance,
                    kind,
                    info_type,
                    suite_id,
                    corp_id,
                    msg_signature,
                    timestamp,
                    nonce,
                    envelope,
                    content_key,
                    status,
                    last_error,
                ),
            ).fetchone()
            if original is not None:
                # A duplicate is known only once the statement ran (the one-statement
                # insert keeps originals at one trip); past FOLD_AFTER of its kind in the
                # window, the row just written (uncommitted, its id never handed out)
                # goes again and the newest of the others counts it instead.
                rows, newest = db.execute(
                    _KIN_OF_DUPLICATE + " AND id != ?", (original, since, reason, id_)
                ).fetchone()
                if rules.should_fold(rows):
                    db.execute("DELETE FROM callbacks WHERE id = ?", (id_,))
                    return _callback(db.execute(_FOLD, (received_at, newest)).fetchone())
            if suite_ticket is not None and original is None:
                _insert_ticket(db, *suite_ticket, received_at, id_)
            # Built from what was written rather than read back: RETURNING the envelope
            # would copy it out of SQLite again for a record the caller already holds.
            return CallbackRecord(
                id_,
                received_at,
                instance,
                kind,
                info_type,
                suite_id,
                corp_id,
                msg_signature,
                timestamp,
                nonce,
                envelope,
                content_key,
                stored,
                attempts,
                last_error,
                processed_at,
                original,
                reason,
                None,
                None,
            )

        return insert

    def get_callback(self, id: int) -> CallbackRecord:
        _check_id(id)
        row = self._read(
            lambda db: db.execute(
                f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE id = ?", (id,)
            ).fetchone()
        )
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
        """Take record ``id`` for processing, or None if it is not claimable.

        Claimable: status received / failed / unknown (plus processed with ``force``, for an
        operator's deliberate re-run), and not claimed by another worker within the last
        ``lease_seconds``. One UPDATE under the write lock, so of any number of threads or
        processes exactly one gets the record. Counts an attempt.
        """
        _require(worker, "worker")
        _check_id(id)
        statuses = rules.claimable_statuses(force)

        def claim(db: sqlite3.Connection) -> CallbackRecord | None:
            now = self._now()
            row = db.execute(
                "UPDATE callbacks SET claimed_by = ?, claimed_at = ?, attempts = attempts + 1 "
                f"WHERE id = ? AND status IN ({_placeholders(statuses)}) "
                "AND (claimed_by IS NULL OR claimed_by = ? OR claimed_at <= ?) "
                f"{_AUTOMATIC if automatic else ''}"
                f"RETURNING {_CALLBACK_COLUMNS}",
                (worker, now, id, *statuses, worker, now - lease_seconds),
            ).fetchone()
            if row is not None:
                return _callback(row)
            if db.execute("SELECT 1 FROM callbacks WHERE id = ?", (id,)).fetchone() is None:
                raise RecordNotFound(f"no callback record with id {id}")
            return None

        return self._write(claim)

    def renew_claims(self, claims: Iterable[tuple[int, str]]) -> int:
        return self._update_claims(claims, "claimed_at = ?", lambda: (self._now(),))

    def release_claims(self, claims: Iterable[tuple[int, str]]) -> int:
        return self._update_claims(claims, "claimed_by = NULL, claimed_at = NULL", tuple)

    def _update_claims(
        self,
        claims: Iterable[tuple[int, str]],
        assignment: str,
        values: Callable[[], tuple[object, ...]],
    ) -> int:
        """``SET assignment`` on each (record id, worker) claim that worker still holds,
        in one write transaction; ``values()`` (read inside it) fills the assignment's
        placeholders. How many rows changed."""
        held = list(claims)
        if not held:
            return 0
        sql = f"UPDATE callbacks SET {assignment} WHERE id = ? AND claimed_by = ?"

        def update(db: sqlite3.Connection) -> int:
            leading = values()
            return sum(db.execute(sql, (*leading, id, worker)).rowcount for id, worker in held)

        return self._write(update)

    def held_claims(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        failed_since: float | None = None,
        limit: int = 1000,
    ) -> list[tuple[int, str]]:
        _check_limit(limit)

        def held(db: sqlite3.Connection) -> list[tuple[int, str]]:
            live = self._now() - lease_seconds
            since = math.inf if failed_since is None else failed_since
            rows = db.execute(_HELD, (live, live, since, limit))
            # A claimant that is no text was written outside qywx: no process to judge.
            return [(row[0], row[1]) for row in rows if isinstance(row[1], str)]

        return self._read(held)

    def finish_callback(self, id: int, status: str, error: str | None = None) -> None:
        """Record the outcome of processing and release the claim."""
        _check_id(id)
        rules.check_finish_status(status)
        error = rules.clip_error(error)

        def finish(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE callbacks SET status = ?, last_error = ?, processed_at = ?, "
                "claimed_by = NULL, claimed_at = NULL WHERE id = ?",
                (status, error, self._now(), id),
            ).rowcount

        if self._write(finish) == 0:
            raise RecordNotFound(f"no callback record with id {id}")

    def pending_callbacks(
        self,
        limit: int = 100,
        older_than: float | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> list[CallbackRecord]:
        """Records still ``received`` and not held by a live claim, oldest first.

        What a crash left behind, for start-up. ``older_than`` is an age in seconds: skip
        records younger than that, which a sibling process may be about to claim.
        """
        _check_limit(limit)

        def pending(db: sqlite3.Connection) -> list[CallbackRecord]:
            now = self._now()
            newest = now - older_than if older_than is not None else math.inf
            params = (now - lease_seconds, newest, limit)
            return [_callback(row) for row in db.execute(_PENDING, params).fetchall()]

        return self._read(pending)

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
        """The callback log, filtered; see :meth:`Store.list_callbacks`."""
        sql, params = self._list_query(
            until=until,
            before_id=before_id,
            status=status,
            info_type=info_type,
            corp_id=corp_id,
            instance=instance,
            since=since,
            limit=limit,
            after_id=after_id,
            newest_first=newest_first,
            kind=kind,
        )
        rows = self._read(lambda db: db.execute(sql, params).fetchall())
        return [_callback(row) for row in rows]

    def explain_list_callbacks(self, **filters: Any) -> list[str]:
        """``EXPLAIN QUERY PLAN`` of :meth:`list_callbacks` with these filters.

        For operators checking that a filter uses an index on a large log, and for tests.
        """
        sql, params = self._list_query(**filters)
        return self._explain(sql, params)

    @staticmethod
    def _list_query(
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
    ) -> tuple[str, list[object]]:
        _check_limit(limit)
        where: list[str] = []
        params: list[object] = []
        # With after_id (tail --follow) the new rows are a short rowid range at the end of
        # the table; "+column" keeps SQLite from walking a whole filter index instead.
        unindexed = "+" if after_id is not None else ""
        for column, value in (
            ("status", status),
            ("info_type", info_type),
            ("corp_id", corp_id),
            ("instance", instance),
        ):
            if value is not None:
                where.append(f"{unindexed}{column} = ?")
                params.append(value)
        if kind is not None:  # no index: checked on the rows the log walk reads
            where.append("+kind = ?")
            params.append(kind)
        if since is not None:
            where.append(f"{unindexed}received_at >= ?")
            params.append(since)
        if until is not None:
            where.append(f"{unindexed}received_at < ?")
            params.append(until)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        if status is not None and status != "processed" and after_id is None:
            where.append(_OPEN)  # lets SQLite use the partial index of open records
        if info_type is not None and info_type != "suite_ticket" and after_id is None:
            where.append(_NOT_TICKET)  # and the partial index of events
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
            order = "ORDER BY id"
        else:
            order = _NEWEST_FIRST if newest_first else _OLDEST_FIRST
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        params.append(limit)
        return f"SELECT {_CALLBACK_COLUMNS} FROM callbacks {clause}{order} LIMIT ?", params

    def prune_callbacks(
        self, *, before: float, statuses: Sequence[str], dry_run: bool = False
    ) -> dict[str, int]:
        """Delete old finished records in batches; see :meth:`Store.prune_callbacks`.

        The record with the greatest id is never deleted: SQLite gives a new row
        max(rowid) + 1, so deleting the newest would hand its id out again, behind the
        back of ``log tail --follow``.
        """
        chosen = rules.check_prune(before, statuses)
        where = (
            f"received_at < ? AND status IN ({_placeholders(chosen)}) AND claimed_by IS NULL "
            "AND id < (SELECT max(id) FROM callbacks) AND NOT EXISTS (SELECT 1 FROM callbacks "
            "AS d WHERE d.duplicate_of = callbacks.id AND d.received_at >= ?)"
        )
        params = (before, *chosen, before)
        if dry_run:
            sql = f"SELECT status, count(*) FROM callbacks WHERE {where} GROUP BY status"
            return dict(self._read(lambda db: db.execute(sql, params).fetchall()))

        def batch(db: sqlite3.Connection) -> list[tuple[int, str]]:
            found = db.execute(
                f"SELECT id, status FROM callbacks WHERE {where} ORDER BY received_at, id LIMIT ?",
                (*params, PRUNE_BATCH),
            ).fetchall()
            ids = [row[0] for row in found]
            for start in range(0, len(ids), rules.IN_CHUNK):
                chunk = ids[start : start + rules.IN_CHUNK]
                marks = _placeholders(chunk)
                db.execute(
                    f"UPDATE callbacks SET duplicate_of = NULL WHERE duplicate_of IN ({marks})",
                    chunk,
                )
                db.execute(
                    f"UPDATE suite_tickets SET callback_id = NULL WHERE callback_id IN ({marks})",
                    chunk,
                )
                db.execute(f"DELETE FROM callbacks WHERE id IN ({marks})", chunk)
            return [(int(i), str(st)) for i, st in found]

        counts: dict[str, int] = {}
        while True:
            done = self._write(batch)
            for _, status in done:
                counts[status] = counts.get(status, 0) + 1
            if len(done) < PRUNE_BATCH:
                return counts

    def callback_stats(self, *, since: float | None = None) -> CallbackStats:
        """Counts by status and by event, the commonest failures, and ticket freshness.

        Every count is a range seek that reads only the window's index entries: the
        window's total from ``callbacks_log`` (it leads with ``received_at``), each open
        status from ``callbacks_open`` and each event from ``callbacks_by_event`` (the
        events are found by skipping from one name to the next in that index);
        ``processed`` and ``suite_ticket`` are the total minus the rest. Only failed rows'
        error texts are read from the table.
        """

        queries = _stats_queries(since)

        def stats(db: sqlite3.Connection) -> CallbackStats:
            window, params = queries.window, queries.params
            total = db.execute(*queries.total).fetchone()[0]
            by_status = _split(
                total,
                "processed",
                [
                    (status, _count(db, f"status = ? AND {_OPEN}{window}", (status, *params)))
                    for status in sorted(CALLBACK_STATUSES - {"processed"})
                ],
            )
            events: list[tuple[str | None, int]] = []
            name = db.execute(_FIRST_EVENT).fetchone()
            while name is not None:
                value = name[0]
                if value is None:
                    where = f"info_type IS NULL AND {_NOT_TICKET}{window}"
                    n = _count(db, where, params)
                    name = db.execute(_FIRST_NAMED_EVENT).fetchone()
                else:
                    n = _count(db, f"info_type = ? AND {_NOT_TICKET}{window}", (value, *params))
                    name = db.execute(_NEXT_EVENT, (value,)).fetchone()
                # A name that is no text (a row written outside qywx) is shown as written.
                events.append((value if value is None or isinstance(value, str) else str(value), n))
            return rules.build_stats(
                by_status,
                _split(total, "suite_ticket", events),
                db.execute(*queries.failures).fetchall(),
                db.execute(*queries.latest_ticket).fetchone()[0],
            )

        return self._read(stats)

    def explain_callback_stats(self, *, since: float | None = None) -> list[str]:
        """``EXPLAIN QUERY PLAN`` of every query :meth:`callback_stats` runs."""
        queries = _stats_queries(since)
        plans = self._explain(*queries.total)
        where = f"SELECT count(*) FROM callbacks WHERE status = ? AND {_OPEN}{queries.window}"
        plans.extend(self._explain(where, ("failed", *queries.params)))
        plans.extend(self._explain(_FIRST_EVENT, ()))
        where = (
            f"SELECT count(*) FROM callbacks WHERE info_type = ? AND {_NOT_TICKET}{queries.window}"
        )
        plans.extend(self._explain(where, ("create_auth", *queries.params)))
        plans.extend(self._explain(_NEXT_EVENT, ("create_auth",)))
        plans.extend(self._explain(*queries.failures))
        plans.extend(self._explain(*queries.latest_ticket))
        return plans

    def query_plans(self) -> dict[str, list[str]]:
        """``EXPLAIN QUERY PLAN`` of the per-callback hot path: dedupe lookups and pending.

        Each must be an index SEARCH; a SCAN here would make every callback slower as the
        log grows.
        """
        return {
            "record_callback.dedupe": self._explain(_FIND_ORIGINALS, ("",) * 12),
            "pending_callbacks": self._explain(_PENDING, (0.0, 0.0, 1)),
        }

    def id_query_plans(self) -> dict[str, list[str]]:
        """``EXPLAIN QUERY PLAN`` of the lookups by either form of an id (no SCAN)."""
        return {
            "lookup_id": self._explain(
                f"SELECT {_ID_MAPPING_COLUMNS} FROM id_mappings WHERE plain_id = ? "
                f"UNION SELECT {_ID_MAPPING_COLUMNS} FROM id_mappings WHERE open_id = ?",
                ("", ""),
            ),
            "get_corp_auth": self._explain(
                f"SELECT {_CORP_AUTH_COLUMNS} FROM corp_auths "
                f"WHERE (corp_id = ? OR corp_id IN ({_CORP_ALIASES}))",
                ("", "", ""),
            ),
        }

    def _explain(self, sql: str, params: Sequence[object]) -> list[str]:
        rows = self._read(lambda db: db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall())
        return [str(row[-1]) for row in rows]

    # -- suite tickets ------------------------------------------------------------------

    def save_suite_ticket(
        self, suite_id: str, ticket: str, timestamp: int, callback_id: int | None = None
    ) -> None:
        """Keep a pushed ticket (§3.1); saving the same push twice is a no-op."""
        _require(suite_id, "suite_id")
        _require(ticket, "ticket")

        def save(db: sqlite3.Connection) -> None:
            _insert_ticket(db, suite_id, ticket, timestamp, self._now(), callback_id)

        self._write(save)

    def latest_suite_ticket(self, suite_id: str) -> SuiteTicket | None:
        """The ticket with the greatest WeCom TimeStamp: "always use the newest" (§3.1)."""
        row = self._read(
            lambda db: db.execute(
                "SELECT suite_id, ticket, timestamp, received_at FROM suite_tickets "
                f"WHERE suite_id = ? ORDER BY {rules.TICKET_ORDER} LIMIT 1",
                (suite_id,),
            ).fetchone()
        )
        return _records.SuiteTicket(*row) if row is not None else None

    # -- tokens -------------------------------------------------------------------------

    def get_token(self, kind: str, key: str, *, margin: float = 0) -> CachedToken | None:
        """A cached token still valid ``margin`` seconds from now, else None."""
        row = self._read(
            lambda db: db.execute(
                "SELECT kind, key, token, expires_at FROM tokens "
                "WHERE kind = ? AND key = ? AND expires_at > ?",
                (kind, key, self._now() + margin),
            ).fetchone()
        )
        return self._cached_token(row) if row is not None else None

    def put_token(self, kind: str, key: str, token: str, expires_at: float) -> None:
        _require(kind, "token kind")
        _require(token, "token")
        sealed = self._seal_token(kind, key, token)
        self._write(
            lambda db: db.execute(
                "INSERT INTO tokens (kind, key, token, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET token = excluded.token, "
                "expires_at = excluded.expires_at",
                (kind, key, sealed, expires_at),
            )
        )

    def drop_tokens(self, kind: str | None = None, key: str | None = None) -> int:
        """Forget cached tokens (all, one kind, or one key); suite tickets are untouched."""
        return self._write(lambda db: _drop_tokens(db, kind, key))

    @contextlib.contextmanager
    def token_lock(self, kind: str, key: str) -> Iterator[None]:
        """One refresh per (kind, key) at a time among this process's threads (SQLite
        serves one host; a second process at worst refreshes once more, harmlessly)."""
        with _TOKEN_LOCKS_GUARD:  # per file, shared by every Store of this process
            lock = _TOKEN_LOCKS.setdefault((self._lock_key, kind, key), threading.Lock())
        with lock:
            yield

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
        """Create or update a corp's authorization; a None argument keeps the stored value."""
        _require(suite_id, "suite_id")
        _require(corp_id, "corp_id")
        rules.check_corp_auth_state(state)
        code = self._seal_code(suite_id, corp_id, permanent_code)
        values = (code, agent_id, corp_name, auth_user_id, state)
        row = self._write(lambda db: _upsert_corp(db, self._now(), suite_id, corp_id, *values))
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
        """Store a freshly exchanged permanent code in ONE transaction (see Store)."""
        _require(suite_id, "suite_id")
        _require(corp_id, "corp_id")
        _require(permanent_code, "permanent_code")
        code = self._seal_code(suite_id, corp_id, permanent_code)

        def save(db: sqlite3.Connection) -> Sequence[Any]:
            now = self._now()
            _drop_corp_credentials(db, corp_id)
            db.execute("UPDATE callbacks SET corp_id = ? WHERE id = ?", (corp_id, callback_id))
            if link_state:
                db.execute(
                    "UPDATE auth_links SET corp_id = ?, linked_at = ? "
                    "WHERE state = ? AND suite_id = ?",
                    (corp_id, now, link_state, suite_id),
                )
            saved = _upsert_corp(
                db,
                self._now(),
                suite_id,
                corp_id,
                code,
                agent_id,
                corp_name,
                auth_user_id,
                "active",
            )
            if not link_state:
                return saved
            row: Sequence[Any] = db.execute(
                "UPDATE corp_auths SET link_state = ? WHERE suite_id = ? AND corp_id = ? "
                f"RETURNING {_CORP_AUTH_COLUMNS}",
                (link_state, suite_id, corp_id),
            ).fetchone()
            return row

        return self._corp_auth(self._write(save))

    def set_publish_status(self, suite_id: str, corp_id: str, status: int | None) -> CorpAuth:
        """Record agent/get's customized_publish_status and when it was read."""
        _require(suite_id, "suite_id")
        _require(corp_id, "corp_id")

        def save(db: sqlite3.Connection) -> Sequence[Any]:
            row: Sequence[Any] | None = db.execute(
                "UPDATE corp_auths SET publish_status = ?, publish_checked_at = ? "
                f"WHERE suite_id = ? AND corp_id = ? RETURNING {_CORP_AUTH_COLUMNS}",
                (status, self._now(), suite_id, corp_id),
            ).fetchone()
            if row is None:
                raise RecordNotFound(f"corp {corp_id} never authorized suite {suite_id}")
            return row

        return self._corp_auth(self._write(save))

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
        """Record an authorization link before it is handed out (see Store)."""
        _require(state, "state")
        _require(suite_id, "suite_id")
        _require(qrcode_url, "qrcode_url")

        def save(db: sqlite3.Connection) -> AuthLink:
            held = db.execute(
                "SELECT suite_id FROM auth_links WHERE state = ?", (state,)
            ).fetchone()
            if held is not None and held[0] != suite_id:
                raise rules.auth_link_conflict(state, held[0])
            now = self._now()
            row = db.execute(
                f"INSERT INTO auth_links ({_AUTH_LINK_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL) "
                "ON CONFLICT (state) DO UPDATE SET instance = excluded.instance, "
                "qrcode_url = excluded.qrcode_url, expires_at = excluded.expires_at "
                f"RETURNING {_AUTH_LINK_COLUMNS}",
                (state, instance, suite_id, qrcode_url, now, expires_at),
            ).fetchone()
            return _records.AuthLink(*row)

        return self._write(save)

    def get_auth_link(self, state: str) -> AuthLink | None:
        row = self._read(
            lambda db: db.execute(
                f"SELECT {_AUTH_LINK_COLUMNS} FROM auth_links WHERE state = ?", (state,)
            ).fetchone()
        )
        return _records.AuthLink(*row) if row is not None else None

    def list_auth_links(self, corp_id: str | None = None) -> list[AuthLink]:
        sql = f"SELECT {_AUTH_LINK_COLUMNS} FROM auth_links"
        params: list[object] = []
        if corp_id is not None:
            sql += " WHERE corp_id = ?"
            params.append(corp_id)
        sql += " ORDER BY created_at DESC, state"
        rows = self._read(lambda db: db.execute(sql, params).fetchall())
        return [_records.AuthLink(*row) for row in rows]

    def get_corp_auth(self, corp_id: str, suite_id: str | None = None) -> CorpAuth | None:
        """The corp's authorization; without ``suite_id`` the active, most recent one.

        Either form of the corp id finds it once a corpid mapping is recorded; the form
        given wins (one query: exact rows sort before aliased ones).
        """
        sql = (
            f"SELECT {_CORP_AUTH_COLUMNS} FROM corp_auths "
            f"WHERE (corp_id = ? OR corp_id IN ({_CORP_ALIASES}))"
        )
        params: list[object] = [corp_id, corp_id, corp_id]
        if suite_id is not None:
            sql += " AND suite_id = ?"
            params.append(suite_id)
        sql += " ORDER BY corp_id = ? DESC, state = 'active' DESC, updated_at DESC LIMIT 1"
        params.append(corp_id)
        row = self._read(lambda db: db.execute(sql, params).fetchone())
        return self._corp_auth(row) if row is not None else None

    def list_corp_auths(
        self, suite_id: str | None = None, state: str | None = None
    ) -> list[CorpAuth]:
        where: list[str] = []
        params: list[object] = []
        if suite_id is not None:
            where.append("suite_id = ?")
            params.append(suite_id)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {_CORP_AUTH_COLUMNS} FROM corp_auths{clause} ORDER BY suite_id, corp_id",
                params,
            ).fetchall()
        )
        return [self._corp_auth(row) for row in rows]

    def cancel_corp_auth(self, suite_id: str, corp_id: str) -> bool:
        """cancel_auth (§3.4): forget the permanent code and the corp's cached tokens.

        "服务商收到取消授权事件后,应当确保删除该企业所有相关的数据" — the row itself stays,
        as state ``cancelled``, so the log can still name the corp. False if unknown.
        """

        def cancel(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE corp_auths SET state = 'cancelled', permanent_code = NULL, "
                "updated_at = ? WHERE suite_id = ? AND corp_id = ?",
                (self._now(), suite_id, corp_id),
            ).rowcount
            _drop_corp_credentials(db, corp_id)
            return changed > 0

        return self._write(cancel)

    # -- org codes ----------------------------------------------------------------------

    def set_org_code(self, code: str, corp_id: str, *, force: bool = False) -> OrgCode:
        """Point an org code at a corp; taking a code from another corp needs ``force``."""
        normalised = rules.normalise_org_code(code)
        _require(corp_id, "corp_id")

        def set_code(db: sqlite3.Connection) -> OrgCode:
            now = self._now()
            held = db.execute(
                "SELECT corp_id FROM org_codes WHERE code = ?", (normalised,)
            ).fetchone()
            if held is not None and held[0] != corp_id and not force:
                raise rules.org_code_conflict(normalised, held[0])
            row = db.execute(
                "INSERT INTO org_codes (code, corp_id, created_at, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (code) DO UPDATE SET "
                "corp_id = excluded.corp_id, updated_at = excluded.updated_at "
                "RETURNING code, corp_id, created_at, updated_at",
                (normalised, corp_id, now, now),
            ).fetchone()
            return _records.OrgCode(*row)

        return self._write(set_code)

    def get_org_code(self, code: str) -> OrgCode:
        normalised = rules.normalise_org_code(code)
        row = self._read(
            lambda db: db.execute(
                "SELECT code, corp_id, created_at, updated_at FROM org_codes WHERE code = ?",
                (normalised,),
            ).fetchone()
        )
        if row is None:
            raise RecordNotFound(f"no org code {normalised!r}")
        return _records.OrgCode(*row)

    def delete_org_code(self, code: str) -> OrgCode:
        normalised = rules.normalise_org_code(code)

        def delete(db: sqlite3.Connection) -> OrgCode:
            row = db.execute(
                "SELECT code, corp_id, created_at, updated_at FROM org_codes WHERE code = ?",
                (normalised,),
            ).fetchone()
            if row is None:
                raise RecordNotFound(f"no org code {normalised!r}")
            db.execute("DELETE FROM org_codes WHERE code = ?", (normalised,))
            return _records.OrgCode(*row)

        return self._write(delete)

    def list_org_codes(self) -> list[OrgCode]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT code, corp_id, created_at, updated_at FROM org_codes ORDER BY code"
            ).fetchall()
        )
        return [_records.OrgCode(*row) for row in rows]

    # -- login codes --------------------------------------------------------------------

    def save_login_code(
        self, code_hash: str, *, instance: str, corp_id: str, user_id: str, expires_at: float
    ) -> None:
        """Store a one-time code by its hash; codes expired a day ago are pruned here."""
        _require(code_hash, "code_hash")

        def save(db: sqlite3.Connection) -> None:
            now = self._now()
            db.execute(
                "DELETE FROM login_codes WHERE expires_at < ?", (now - rules.LOGIN_CODE_RETENTION,)
            )
            db.execute(
                f"INSERT INTO login_codes ({_LOGIN_CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (code_hash, instance, corp_id, user_id, now, expires_at),
            )

        self._write(save)

    def consume_login_code(self, code_hash: str) -> LoginCode | None:
        """Use a login code once: only an unused, unexpired code is returned, and marked used."""

        def consume(db: sqlite3.Connection) -> LoginCode | None:
            now = self._now()
            row = db.execute(
                "UPDATE login_codes SET used_at = ? "
                "WHERE code_hash = ? AND used_at IS NULL AND expires_at > ? "
                f"RETURNING {_LOGIN_CODE_COLUMNS}",
                (now, code_hash, now),
            ).fetchone()
            return _records.LoginCode(*row) if row is not None else None

        return self._write(consume)

    # -- id mappings ----------------------------------------------------------------------

    def save_id_mappings(self, kind: str, corp_id: str, pairs: Sequence[tuple[str, str]]) -> int:
        rules.check_mapping(kind, corp_id, pairs)
        rows = list(dict(pairs).items())  # one row per plain id, the last answer wins
        if not rows:
            return 0

        def save(db: sqlite3.Connection) -> int:
            now = self._now()
            db.executemany(
                "INSERT INTO id_mappings (kind, corp_id, plain_id, open_id, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, corp_id, plain_id) "
                "DO UPDATE SET open_id = excluded.open_id, updated_at = excluded.updated_at",
                [(kind, corp_id, plain, opened, now, now) for plain, opened in rows],
            )
            return len(rows)

        return self._write(save)

    def known_open_ids(self, kind: str, corp_id: str, plain_ids: Sequence[str]) -> dict[str, str]:
        rules.check_id_kind(kind)
        wanted = list(dict.fromkeys(plain_ids))

        def known(db: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), rules.IN_CHUNK):
                chunk = wanted[start : start + rules.IN_CHUNK]
                found.update(
                    db.execute(
                        "SELECT plain_id, open_id FROM id_mappings WHERE kind = ? AND "
                        f"corp_id = ? AND plain_id IN ({_placeholders(chunk)})",
                        (kind, corp_id, *chunk),
                    ).fetchall()
                )
            return found

        return self._read(known) if wanted else {}

    def lookup_id(self, id: str) -> list[IdMapping]:
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {_ID_MAPPING_COLUMNS} FROM id_mappings WHERE plain_id = ? "
                f"UNION SELECT {_ID_MAPPING_COLUMNS} FROM id_mappings WHERE open_id = ? "
                "ORDER BY kind, corp_id, plain_id",
                (id, id),
            ).fetchall()
        )
        return [_records.IdMapping(*row) for row in rows]

    # -- interface licences --------------------------------------------------------------

    def record_unlicensed(
        self, corp_id: str, user_id: str, *, agent_id: int | None, seen_at: float
    ) -> None:
        _require(corp_id, "corp_id")
        _require(user_id, "user_id")
        self._write(
            lambda db: db.execute(
                f"INSERT INTO unlicensed_members ({_UNLICENSED_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (corp_id, user_id) DO UPDATE SET "
                "agent_id = coalesce(excluded.agent_id, agent_id), "
                "last_seen = max(last_seen, excluded.last_seen), count = count + 1",
                (corp_id, user_id, agent_id, seen_at, seen_at),
            )
        )

    def unlicensed_members(
        self, *, corp_id: str | None = None, since: float | None = None, limit: int = 100
    ) -> list[UnlicensedMember]:
        _check_limit(limit)
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if corp_id is not None:
            where.append("corp_id = ?")
            params.append(corp_id)
        if since is not None:
            where.append("last_seen >= ?")
            params.append(since)
        params.append(limit)
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {_UNLICENSED_COLUMNS} FROM unlicensed_members "
                f"WHERE {' AND '.join(where)} ORDER BY last_seen DESC LIMIT ?",
                params,
            ).fetchall()
        )
        return [_records.UnlicensedMember(*row) for row in rows]

    def save_licences(
        self, corp_id: str, licences: Sequence[Licence], *, complete: bool = False
    ) -> int:
        _require(corp_id, "corp_id")
        for licence in licences:
            _require(licence.user_id, "user_id")
            if licence.corp_id != corp_id:
                raise UsageError("every licence saved must belong to corp_id")

        def save(db: sqlite3.Connection) -> int:
            now = self._now()
            if complete:
                db.execute("DELETE FROM licences WHERE corp_id = ?", (corp_id,))
            db.executemany(
                f"INSERT INTO licences ({_LICENCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (corp_id, user_id, type) DO UPDATE SET "
                "active_code = coalesce(excluded.active_code, active_code), "
                "active_time = coalesce(excluded.active_time, active_time), "
                "expire_time = coalesce(excluded.expire_time, expire_time), "
                "updated_at = excluded.updated_at",
                [
                    (corp_id, x.user_id, x.type, x.active_code, x.active_time, x.expire_time, now)
                    for x in licences
                ],
            )
            licensed = [x.user_id for x in licences if (x.expire_time or math.inf) > now]
            for start in range(0, len(licensed), rules.IN_CHUNK):
                chunk = licensed[start : start + rules.IN_CHUNK]
                db.execute(
                    "DELETE FROM unlicensed_members WHERE corp_id = ? AND "
                    f"user_id IN ({_placeholders(chunk)})",
                    (corp_id, *chunk),
                )
            return len(licences)

        return self._write(save)

    def list_licences(
        self,
        *,
        corp_id: str | None = None,
        user_id: str | None = None,
        expiring_before: float | None = None,
        limit: int = 1000,
    ) -> list[Licence]:
        _check_limit(limit)
        where: list[str] = []
        params: list[object] = []
        for column, value in (("corp_id", corp_id), ("user_id", user_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if expiring_before is not None:
            where.append("expire_time IS NOT NULL AND expire_time < ?")
            params.append(expiring_before)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        params.append(limit)
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {_LICENCE_COLUMNS} FROM licences {clause}"
                "ORDER BY expire_time IS NULL, expire_time, corp_id, user_id, type LIMIT ?",
                params,
            ).fetchall()
        )
        return [_records.Licence(*row) for row in rows]

    # -- secrets at rest ----------------------------------------------------------------

    def secrets_at_rest(self) -> SecretsAtRest:
        def values(db: sqlite3.Connection) -> list[str]:
            return [row[0] for row in db.execute(_SECRET_VALUES).fetchall()]

        return survey_secrets(self._read(values))

    def reseal_secrets(self) -> Resealed:
        """One write transaction (see Store); then the file is left without the old values
        as far as SQLite allows: secure_delete during it, the WAL emptied after it."""

        def reseal(db: sqlite3.Connection) -> Resealed:
            rows = [
                (Slot.permanent_code(suite, corp), code)
                for suite, corp, code in db.execute(
                    "SELECT suite_id, corp_id, permanent_code FROM corp_auths "
                    "WHERE permanent_code IS NOT NULL"
                ).fetchall()
            ]
            rows += [
                (Slot.token(kind, key), token)
                for kind, key, token in db.execute("SELECT kind, key, token FROM tokens")
            ]
            updates, report = plan_reseal(self._keys, rows)
            for slot, old, new in updates:
                if slot.table == "corp_auths":
                    db.execute(
                        "UPDATE corp_auths SET permanent_code = ? WHERE suite_id = ? "
                        "AND corp_id = ? AND permanent_code = ?",
                        (new, *slot.row, old),
                    )
                else:
                    db.execute(
                        "UPDATE tokens SET token = ? WHERE kind = ? AND key = ? AND token = ?",
                        (new, *slot.row, old),
                    )
            return report

        # The old values must not linger in the file: secure_delete zeroes the space a
        # rewritten row leaves, and the checkpoint moves the new pages into the database
        # and empties the WAL, which still held the old ones.
        self._run(lambda db: db.execute("PRAGMA secure_delete = ON"), "BEGIN")
        try:
            report = self._write(reseal)
        finally:
            self._run(lambda db: db.execute("PRAGMA secure_delete = OFF"), "BEGIN")
        # A reader's open snapshot keeps the checkpoint from finishing (busy = 1): then the
        # old pages are still in the WAL and the file, and the caller must say so.
        emptied = False
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                    emptied = busy == 0
        return replace(report, old_copies_left=not emptied)

    # -- maintenance --------------------------------------------------------------------

    def table_counts(self) -> dict[str, int]:
        from qywx_cli.core.store.maintenance import TABLES

        def counts(db: sqlite3.Connection) -> dict[str, int]:
            return {t: int(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}

        return self._read(counts)

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += self._path.with_name(self._path.name + suffix).stat().st_size
        return total

    def dump_rows(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str],
        after: Sequence[object] | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        where = f"WHERE ({', '.join(key)}) > ({_placeholders(key)}) " if after else ""
        sql = f"SELECT {', '.join(columns)} FROM {table} {where}ORDER BY {', '.join(key)} LIMIT ?"
        params = [*(after or ()), limit]
        return [tuple(r) for r in self._read(lambda db: db.execute(sql, params).fetchall())]

    def load_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        sql = (
            f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) "
            f"VALUES ({_placeholders(columns)})"
        )

        def load(db: sqlite3.Connection) -> int:
            return sum(db.execute(sql, tuple(row)).rowcount for row in rows)

        return self._write(load)

    # -- health -------------------------------------------------------------------------

    def healthcheck(self, *, write: bool = True) -> dict[str, object]:
        """Liveness for ``/healthz`` and ``doctor``: can a callback be recorded right now?

        Reading is not enough: a full disk, a read-only mount or a 0444 file still
        answer reads while every callback gets 503, and a load balancer must stop
        routing to such a host. So with ``write`` this commits one real write (the
        schema version rewritten in place: one page, one fsync) and reports
        ``writable``; callers cache the answer for a few seconds. Also reports
        ``suite_ticket_at``, when the latest SuiteTicket of any suite arrived.
        """

        def probe(db: sqlite3.Connection) -> dict[str, object]:
            # Numbers only: max() over a column SQLite let text into (a row written
            # outside qywx) would be that text, and /healthz must still answer.
            latest = db.execute(
                "SELECT max(received_at) FROM suite_tickets "
                "WHERE typeof(received_at) IN ('integer', 'real')"
            ).fetchone()[0]
            return {
                "ok": True,
                "backend": self.backend,
                "schema_version": int(db.execute("PRAGMA user_version").fetchone()[0]),
                "journal_mode": str(db.execute("PRAGMA journal_mode").fetchone()[0]),
                "callbacks": int(
                    db.execute("SELECT coalesce(max(id), 0) FROM callbacks").fetchone()[0]
                ),
                "suite_ticket_at": float(latest) if latest is not None else None,
            }

        try:
            health = self._read(probe)
        except StoreError as exc:
            return {"ok": False, "backend": self.backend, "writable": False, "error": str(exc)}
        if not write:
            return health
        if not os.access(self._path, os.W_OK):
            return {**health, "ok": False, "writable": False, "error": "database file is read-only"}
        try:
            self._write(lambda db: db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}"))
        except StoreError as exc:
            return {**health, "ok": False, "writable": False, "error": str(exc)}
        return {**health, "writable": True}


# ---------------------------------------------------------------------------------------
# helpers shared by several queries


def _insert_ticket(
    db: sqlite3.Connection,
    suite_id: str,
    ticket: str,
    timestamp: int,
    received_at: float,
    callback_id: int | None,
) -> None:
    # id only orders tickets of one suite with the same TimeStamp (the later stored is
    # greater): the next one after the suite's greatest, read from the same b-tree range.
    row = db.execute(
        "INSERT OR IGNORE INTO suite_tickets "
        "(suite_id, ticket, timestamp, id, received_at, callback_id) VALUES (?, ?, ?, "
        "(SELECT coalesce(max(id), 0) + 1 FROM suite_tickets WHERE suite_id = ?), ?, ?) "
        "RETURNING id",
        (suite_id, ticket, int(timestamp), suite_id, received_at, callback_id),
    ).fetchone()
    # Pruning sorts the suite's history, a sixth of a suite_ticket's cost in the
    # recording transaction, so it is done once every TICKET_PRUNE_EVERY tickets of a
    # suite; the per-suite id counts them, without a query of its own.
    if row is not None and row[0] % TICKET_PRUNE_EVERY == 0:
        db.execute(
            "DELETE FROM suite_tickets WHERE suite_id = ? AND id NOT IN ("
            "SELECT id FROM suite_tickets WHERE suite_id = ? "
            f"ORDER BY {rules.TICKET_ORDER} LIMIT ?)",
            (suite_id, suite_id, SUITE_TICKET_HISTORY),
        )


def _upsert_corp(
    db: sqlite3.Connection,
    now: float,
    suite_id: str,
    corp_id: str,
    permanent_code: str | None,
    agent_id: int | None,
    corp_name: str | None,
    auth_user_id: str | None,
    state: str,
) -> Sequence[Any]:
    """The corp's row after the upsert; ``permanent_code`` arrives sealed (or None)."""
    row: Sequence[Any] = db.execute(
        f"INSERT INTO corp_auths ({_CORP_AUTH_INSERT}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (suite_id, corp_id) DO UPDATE SET "
        "permanent_code = coalesce(excluded.permanent_code, permanent_code), "
        "agent_id = coalesce(excluded.agent_id, agent_id), "
        "corp_name = coalesce(excluded.corp_name, corp_name), "
        "auth_user_id = coalesce(excluded.auth_user_id, auth_user_id), "
        "state = excluded.state, updated_at = excluded.updated_at "
        f"RETURNING {_CORP_AUTH_COLUMNS}",
        (suite_id, corp_id, permanent_code, agent_id, corp_name, state, auth_user_id, now, now),
    ).fetchone()
    return row


def _drop_corp_credentials(db: sqlite3.Connection, corp_id: str) -> None:
    """A corp's token and JS-SDK tickets (jsapi_ticket; agent_ticket keyed corp/agentid)."""
    db.execute(
        "DELETE FROM tokens WHERE (kind IN ('corp', 'jsapi_ticket') AND key = ?) "
        "OR (kind = 'agent_ticket' AND substr(key, 1, ?) = ?)",
        (corp_id, len(corp_id) + 1, corp_id + "/"),
    )


def _drop_tokens(db: sqlite3.Connection, kind: str | None, key: str | None) -> int:
    where: list[str] = []
    params: list[object] = []
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if key is not None:
        where.append("key = ?")
        params.append(key)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return int(db.execute(f"DELETE FROM tokens{clause}", params).rowcount)


_Query = tuple[str, list[object]]


@dataclass(frozen=True)
class _StatsQueries:
    """callback_stats' SQL: the window's condition, its total, failures, ticket time."""

    window: str
    params: list[object]
    total: _Query
    failures: _Query
    latest_ticket: _Query


_FIRST_EVENT: Final = (
    f"SELECT info_type FROM callbacks WHERE {_NOT_TICKET} ORDER BY info_type LIMIT 1"
)
_FIRST_NAMED_EVENT: Final = (
    "SELECT info_type FROM callbacks WHERE info_type IS NOT NULL "
    f"AND {_NOT_TICKET} ORDER BY info_type LIMIT 1"
)
_NEXT_EVENT: Final = (
    f"SELECT info_type FROM callbacks WHERE info_type > ? AND {_NOT_TICKET} "
    "ORDER BY info_type LIMIT 1"
)


def _count(db: sqlite3.Connection, where: str, params: Sequence[object]) -> int:
    return int(db.execute(f"SELECT count(*) FROM callbacks WHERE {where}", params).fetchone()[0])


def _split(
    total: int, rest: str, counted: list[tuple[str | None, int]]
) -> list[tuple[str | None, int]]:
    """The non-zero counts, with ``rest`` given what ``total`` leaves over, in key order."""
    rows = [(key, n) for key, n in counted if n]
    remainder = total - sum(n for _, n in rows)
    if remainder:
        rows.append((rest, remainder))
    return sorted(rows, key=lambda row: (row[0] is not None, row[0] or ""))


def _stats_queries(since: float | None) -> _StatsQueries:
    window = " AND received_at >= ?" if since is not None else ""
    params: list[object] = [since] if since is not None else []
    return _StatsQueries(
        window=window,
        params=params,
        total=(
            "SELECT count(*) FROM callbacks"
            + (" WHERE received_at >= ?" if since is not None else ""),
            params,
        ),
        failures=(
            f"SELECT last_error, count(*) FROM callbacks WHERE status = 'failed' AND {_OPEN} "
            f"{window} GROUP BY last_error "
            "ORDER BY count(*) DESC, last_error LIMIT 10",
            params,
        ),
        latest_ticket=("SELECT max(received_at) FROM suite_tickets", []),
    )


def sqlite_path(target: str | Path) -> Path:
    """The file a SQLite target names: a path, or a URL the way SQLAlchemy spells it,
    ``sqlite:///relative/q.db`` or ``sqlite:////absolute/q.db``."""
    text = str(target)
    if text.startswith("sqlite://"):
        rest = text[len("sqlite://") :]
        return Path(rest[1:] if rest.startswith("/") else rest)
    return Path(target)
