"""The qywx store: one contract, a backend per database, chosen by the URL's scheme.

Layout (the seam is the contract in :mod:`.base`; nothing above the store knows which
backend it runs on)::

    records      the record dataclasses and status words
    base         Store, the abstract contract, durability promises in its docstrings
    rules        what every backend decides the same way (dedupe order, org codes,
                 ticket order, argument checks, stats shape)
    groupcommit  many threads' writes in one transaction (used by SQLite)
    sqlite       SQLite, one file in WAL mode: the embedded default, one host
    postgres     PostgreSQL via psycopg 3 and its pool: several hosts, one database

``Store(target)`` / :func:`open_store` take a path or ``sqlite://…`` (SQLite) or a
``postgresql://…`` URL (PostgreSQL, the ``qywx-cli[postgres]`` extra).

How each guarantee of :mod:`.base` is kept, backend by backend:

record before reply
    SQLite: one ``BEGIN IMMEDIATE`` transaction, ``synchronous=FULL`` in WAL mode, shared
    by the threads waiting at that moment (:mod:`.groupcommit`, one fsync for all).
    PostgreSQL: one autocommit statement; the server flushes its WAL before answering
    (``synchronous_commit`` on) and groups concurrent commits itself.
dedupe (one original, the rest ``duplicate``; order in :mod:`.rules`)
    SQLite: both lookups and the insert under the single writer lock. PostgreSQL: one
    CTE looks up and inserts; partial unique indexes over originals make a racing
    second insert do nothing, and its retry stores the duplicate.
one claimant per record; a dead worker's records come back within seconds
    Both: a short lease (:data:`.records.DEFAULT_LEASE_SECONDS`) renewed by the working
    process (:mod:`.leases`); the claim is one ``UPDATE … RETURNING`` (SQLite, under the
    writer lock; PostgreSQL, on the row taken ``FOR UPDATE SKIP LOCKED``).
newest suite_ticket wins
    Both: tickets are rows never overwritten; the latest is read by
    :data:`.rules.TICKET_ORDER` (WeCom's TimeStamp), whatever order they were written in.
token refresh single flight, never wiping a ticket
    SQLite: a per-file lock among the threads of the process. PostgreSQL: a session
    advisory lock shared by every host. Tokens and tickets are separate tables.
login codes single use; org codes unique, case-insensitive
    Both: one conditional ``UPDATE … RETURNING`` / upsert, the code normalised by
    :func:`.rules.normalise_org_code` into a primary key.
refusals bounded (ciphertext only, folded counts)
    Both: the length and error caps are :func:`.rules.check_new_callback` and
    :func:`.rules.clip_error`; the fold is decided in the recording transaction
    (SQLite: two lookups under the writer lock; PostgreSQL: CTEs of the same statement,
    so hosts racing may add a row or two more, never one per delivery).
old records pruned, owed work kept
    Both: :meth:`.base.Store.prune_callbacks` deletes in committed batches (PostgreSQL
    ``FOR UPDATE SKIP LOCKED``, so hosts share the work), unlinking what pointed at them.
database down or read-only
    Both: StoreError (the endpoint answers 503); ``healthcheck`` says ``ok: false``.
    PostgreSQL: the pool replaces broken connections, so service resumes without a
    restart when the server returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from qywx_cli.core.errors import StoreError, UsageError
from qywx_cli.core.sealing import Keyring
from qywx_cli.core.store.base import SCHEMA_VERSION, Store
from qywx_cli.core.store.records import (
    CALLBACK_KINDS,
    CALLBACK_STATUSES,
    DEFAULT_LEASE_SECONDS,
    ID_KINDS,
    NONE_LABEL,
    SUITE_TICKET_HISTORY,
    TICKET_PRUNE_EVERY,
    CallbackRecord,
    CallbackStats,
)

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
    "BACKENDS",
    "CALLBACK_KINDS",
    "CALLBACK_STATUSES",
    "DEFAULT_LEASE_SECONDS",
    "ID_KINDS",
    "NONE_LABEL",
    "SCHEMA_VERSION",
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
    "Store",
    "SuiteTicket",
    "UnlicensedMember",
    "backend_class",
    "check_not_empty",
    "display_target",
    "local_file",
    "open_existing",
    "open_store",
    "scheme_of",
]


def __getattr__(name: str) -> Any:
    """The records of :mod:`.authrecords`, loaded on first use (see :mod:`.records`)."""
    from qywx_cli.core.store import records

    if name not in records.AUTH_RECORDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(records, name)
    globals()[name] = value
    return value


def _sqlite() -> type[Store]:
    from qywx_cli.core.store.sqlite import SQLiteStore

    return SQLiteStore


def _postgres() -> type[Store]:
    try:
        from qywx_cli.core.store.postgres import PostgresStore
    except ImportError:
        raise StoreError(
            "a postgresql:// database needs the postgres extra: pip install 'qywx-cli[postgres]'"
        ) from None
    return PostgresStore


BACKENDS: Final[dict[str, Callable[[], type[Store]]]] = {
    "sqlite": _sqlite,
    "postgresql": _postgres,
    "postgres": _postgres,
}
"""URL scheme → the backend class (imported only when used, to keep start-up fast)."""


def scheme_of(target: str | Path) -> str:
    """The backend a target names: ``sqlite`` for a path, else the URL's scheme.

    Only ``word://`` counts as a URL, so a file name with a colon stays a file name, and
    an unknown scheme is refused rather than opened as a file called ``mysql:``.
    """
    text = str(target)
    head, sep, _ = text.partition("://")
    if not sep and "=" in text and _CONNINFO.search(text):
        # Taken as a file name it would be echoed whole, password and all, in "no
        # database at ..."; so it is refused, and never repeated.
        raise UsageError(
            "the database is a libpq keyword/value string, which qywx does not take: write "
            "it as a postgresql://USER@HOST:PORT/DBNAME URL, the password in PGPASSWORD "
            "or ~/.pgpass"
        )
    if not sep or not head.replace("+", "").isalnum() or not head[:1].isalpha():
        return "sqlite"
    return head.lower()


_CONNINFO: Final = re.compile(
    r"(?:^|\s)(?:host|hostaddr|port|dbname|user|password|passfile|sslmode|service)\s*=",
    re.IGNORECASE,
)
"""A libpq keyword/value connection string ("host=... password=..."), not a path."""


def backend_class(target: str | Path | None) -> type[Store]:
    if target is None:
        raise UsageError("a store needs a path or a URL")
    scheme = scheme_of(target)
    load = BACKENDS.get(scheme)
    if load is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise UsageError(f"unknown database URL scheme {scheme}://; use a path, {known}")
    return load()


def display_target(target: str | Path) -> str:
    """A target safe to print: a path as is, a URL without its password."""
    if scheme_of(target) == "sqlite":
        return str(target)
    from qywx_cli.core.store.urls import safe_url

    return safe_url(str(target))


def local_file(target: str | Path) -> Path | None:
    """The SQLite file a target names, or None for a server database."""
    if scheme_of(target) != "sqlite":
        return None
    from qywx_cli.core.store.sqlite import sqlite_path

    return sqlite_path(target)


def open_store(
    target: str | Path,
    *,
    now: Callable[[], float] | None = None,
    keys: Keyring | None = None,
    migrate: bool = True,
) -> Store:
    """Open the store ``target`` names (what ``--db`` / ``QYWX_DB`` / ``db =`` hold),
    sealing secrets with ``keys`` (``Settings.secret_keys``; None: plaintext).

    Opening migrates to this qywx's schema; ``migrate=False`` leaves the schema as it is
    (only for looking at it: the queries expect the current schema)."""
    cls = backend_class(target)
    extra: dict[str, Any] = {} if keys is None else {"keys": keys}
    if not migrate:
        extra["migrate"] = False
    return cls(target, **extra) if now is None else cls(target, now=now, **extra)


def open_existing(target: str | Path, *, keys: Keyring | None = None) -> Store:
    """The store ``target`` names, or StoreError: reading commands never create an empty one.

    Here rather than beside ``qywx retry`` so that the ``log`` commands, which only read,
    import nothing but the store.
    """
    path = local_file(target)  # None: a database server, nothing to create
    if path is not None and not path.is_file():
        raise StoreError(f"no database at {path}; run qywx serve first or pass --db")
    if path is not None:
        check_not_empty(path)
    return open_store(target, keys=keys)


def check_not_empty(path: Path) -> None:
    """A 0-byte file is no qywx database: SQLite would take it as an empty one, so a
    reading command would report an empty log and quietly make the file a database."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return  # open_store reports what is wrong with it
    if empty:
        raise StoreError(
            f"{path} is an empty file (0 bytes), not a qywx database: pass --db with the "
            "qywx database, or delete it and let qywx serve create one"
        )
