"""``qywx db``: what a database holds, its schema, and moving it to another backend.

The copy (``qywx db copy --from qywx.db --to postgresql://…``) is how a one-host
deployment moves to several hosts. It is

* **idempotent**: rows keep their ids and keys, and a row already at the destination
  is skipped, so running it twice copies nothing the second time;
* **resumable**: tables are copied in key order in batches, each batch one committed
  transaction; an interrupted copy is simply run again (the log resumes after the
  destination's greatest callback id);
* **verified**: at the end the row counts of every table must match, else
  :class:`~qywx_cli.core.errors.StoreError` says which differ.

Stop the servers writing to the source before the final copy: rows changed after they
were copied (a record processed later) are not copied again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qywx_cli.core.errors import StoreError, UsageError
from qywx_cli.core.sealing import KEY_ENV, Keyring, SecretKey
from qywx_cli.core.settings import ENV_VAR_NAME
from qywx_cli.core.store import SCHEMA_VERSION, Store, display_target, local_file, open_store
from qywx_cli.core.store.records import Resealed, SecretsAtRest

__all__ = ["TABLES", "CopyReport", "DbInfo", "copy_store", "db_info", "rotate_key", "upgrade"]

TABLES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    # table: (columns, key). Callbacks before the tables that point at them.
    "callbacks": (
        (
            "id",
            "received_at",
            "instance",
            "kind",
            "info_type",
            "suite_id",
            "corp_id",
            "msg_signature",
            "timestamp",
            "nonce",
            "envelope",
            "content_key",
            "status",
            "attempts",
            "last_error",
            "processed_at",
            "duplicate_of",
            "duplicate_reason",
            "claimed_by",
            "claimed_at",
            "folded",
            "folded_at",
        ),
        ("id",),
    ),
    "suite_tickets": (
        ("id", "suite_id", "ticket", "timestamp", "received_at", "callback_id"),
        ("id",),
    ),
    "tokens": (("kind", "key", "token", "expires_at"), ("kind", "key")),
    "corp_auths": (
        (
            "suite_id",
            "corp_id",
            "permanent_code",
            "agent_id",
            "corp_name",
            "state",
            "auth_user_id",
            "created_at",
            "updated_at",
            "link_state",
            "publish_status",
            "publish_checked_at",
        ),
        ("suite_id", "corp_id"),
    ),
    "org_codes": (("code", "corp_id", "created_at", "updated_at"), ("code",)),
    "login_codes": (
        ("code_hash", "instance", "corp_id", "user_id", "created_at", "expires_at", "used_at"),
        ("code_hash",),
    ),
    "id_mappings": (
        ("kind", "corp_id", "plain_id", "open_id", "created_at", "updated_at"),
        ("kind", "corp_id", "plain_id"),
    ),
    "licences": (
        (
            "corp_id",
            "user_id",
            "type",
            "active_code",
            "active_time",
            "expire_time",
            "updated_at",
        ),
        ("corp_id", "user_id", "type"),
    ),
    "unlicensed_members": (
        ("corp_id", "user_id", "agent_id", "first_seen", "last_seen", "count"),
        ("corp_id", "user_id"),
    ),
    "auth_links": (
        (
            "state",
            "instance",
            "suite_id",
            "qrcode_url",
            "created_at",
            "expires_at",
            "corp_id",
            "linked_at",
        ),
        ("state",),
    ),
}
"""Every table a store holds, with its columns and its key (the copy's order)."""

BATCH: Final = 500

Progress = Callable[[str, int, int], None]
"""``progress(table, rows_done, rows_total)`` after each batch."""


@dataclass(frozen=True)
class DbInfo:
    backend: str
    url: str
    schema_version: int
    latest_schema_version: int
    counts: dict[str, int]
    size_bytes: int
    #: how permanent codes and cached tokens are kept (plaintext / sealed, by key id)
    secrets: SecretsAtRest | None = None


@dataclass(frozen=True)
class CopyReport:
    source: str
    destination: str
    copied: dict[str, int]
    """Rows new at the destination, per table (0 everywhere on a second run)."""
    counts: dict[str, int]
    """Rows per table, equal on both sides."""


def _existing(target: str | Path, what: str) -> None:
    path = local_file(target)
    if path is not None and not path.is_file():
        raise StoreError(f"no database at {path} ({what})")
    if path is not None:  # opening it would make a 0-byte file a database
        from qywx_cli.core.retry import check_not_empty

        check_not_empty(path)


def db_info(target: str | Path) -> DbInfo:
    _existing(target, "--db")
    # Not migrated: info reports the schema as it is (``qywx db upgrade`` migrates), and
    # rows are counted only in the current schema, whose tables the counts name.
    with open_store(target, migrate=False) as store:
        version = store.schema_version
        return DbInfo(
            backend=store.backend,
            url=store.url,
            schema_version=version,
            latest_schema_version=SCHEMA_VERSION,
            counts=store.table_counts() if version == SCHEMA_VERSION else {},
            size_bytes=store.size_bytes(),
            secrets=store.secrets_at_rest(),
        )


def rotate_key(
    target: str | Path,
    keys: Keyring,
    *,
    old_key_env: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Resealed:
    """``qywx db rotate-key``: seal every stored secret with ``keys.current``, in one
    transaction (:meth:`Store.reseal_secrets`).

    The first run after a key is set seals the plaintext rows; a later one, given the
    previous key (``QYWX_OLD_SECRET_KEY`` in ``keys``, or the variable ``old_key_env``
    names), moves every row to the new key. A row whose key is not given stops the run
    before anything is written, with a line naming what to set.
    """
    if keys.current is None:
        raise UsageError(
            f"rotate-key seals with the new key: set {KEY_ENV} (or secret_key = "
            '"env:VAR" in qywx.toml); make one with `qywx db gen-key`'
        )
    if old_key_env is not None:
        env = os.environ if env is None else env
        if SecretKey.looks_like_one(old_key_env):  # `--old-key-env "$OLD"`: never echo it
            raise UsageError(
                "--old-key-env takes the name of the environment variable that holds the "
                "old key, not the key itself (the value is not shown)"
            )
        if not ENV_VAR_NAME.fullmatch(old_key_env):
            raise UsageError(f"--old-key-env {old_key_env!r} is not an environment variable name")
        if not env.get(old_key_env):
            raise UsageError(f"--old-key-env {old_key_env}: ${old_key_env} is not set")
        keys = keys.with_old(SecretKey.parse(env[old_key_env], f"${old_key_env}"))
    _existing(target, "--db")
    with open_store(target, keys=keys) as store:
        return store.reseal_secrets()


def schema_version_of(target: str | Path) -> int:
    """The schema version a database is at, without migrating it (0: no qywx schema)."""
    path = local_file(target)
    if path is not None:
        import sqlite3

        if not path.is_file():
            return 0
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                return int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:  # named as every other command names it
            from qywx_cli.core.store.sqlite import _open_problem

            raise StoreError(_open_problem(path, exc)) from None
    from qywx_cli.core.store.postgres import PostgresStore

    with PostgresStore(str(target), migrate=False) as store:
        return store.schema_version


def upgrade(target: str | Path) -> tuple[int, int]:
    """Migrate to this qywx's schema; (version before, version after). A newer schema
    than this qywx knows is refused untouched (StoreError)."""
    before = schema_version_of(target)
    if before > SCHEMA_VERSION:
        raise StoreError(
            f"database schema v{before} is newer than this qywx (v{SCHEMA_VERSION}); upgrade qywx"
        )
    with open_store(target) as store:  # opening migrates, in one transaction
        return before, store.schema_version


def copy_store(
    source: str | Path, destination: str | Path, *, progress: Progress | None = None
) -> CopyReport:
    """Copy every row of ``source`` into ``destination`` (created and migrated if new)."""
    _existing(source, "--from")
    if display_target(source) == display_target(destination):
        raise UsageError("--from and --to name the same database")
    with open_store(source) as src, open_store(destination) as dst:
        totals = src.table_counts()
        copied: dict[str, int] = {}
        for table, (columns, key) in TABLES.items():
            copied[table] = _copy_table(src, dst, table, columns, key, totals[table], progress)
        want, got = src.table_counts(), dst.table_counts()
        differ = [f"{t} {want[t]} vs {got[t]}" for t in TABLES if want[t] != got[t]]
        if differ:
            raise StoreError(
                "copy incomplete, row counts differ (source vs destination): "
                + ", ".join(differ)
                + "; was something writing to either database? run the copy again"
            )
        return CopyReport(src.url, dst.url, copied, got)


def _copy_table(
    src: Store,
    dst: Store,
    table: str,
    columns: tuple[str, ...],
    key: tuple[str, ...],
    total: int,
    progress: Progress | None,
) -> int:
    after: tuple[object, ...] | None = None
    done = new = 0
    if key == ("id",):
        # Resume: the copy writes in id order, so the destination holds a prefix of the
        # source as it was; carry on after the destination's last id. Not after the
        # source's n-th: a prune of the source since then (retention_days on a live
        # server) shifts that past rows never copied, and the counts could still agree.
        # (Rows are inserted idempotently and the counts are checked at the end.)
        have = dst.table_counts()[table]
        if have:
            ids = dst.dump_rows(table, ("id",), ("id",), None, have)
            if ids:
                after, done = (ids[-1][0],), len(ids)
    if progress is not None:
        progress(table, done, total)
    while True:
        rows = src.dump_rows(table, columns, key, after, BATCH)
        if not rows:
            return new
        new += dst.load_rows(table, columns, rows)
        done += len(rows)
        after = tuple(rows[-1][columns.index(k)] for k in key)
        if progress is not None:
            progress(table, min(done, total), total)
