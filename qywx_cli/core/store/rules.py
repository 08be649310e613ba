"""The rules every store backend must apply the same way, in one place.

A backend owns its SQL and its connections; what a record *means* is decided here, so
SQLite and PostgreSQL cannot drift apart:

* **argument checks** (:func:`check_new_callback`, :func:`require`, :func:`check_id` …)
  raise the same :class:`~qywx_cli.core.errors.UsageError` / ``RecordNotFound`` lines;
* **duplicate-check order** (:data:`DEDUPE_ORDER`, :func:`dedupe_verdict`): a
  byte-identical replay (same instance, msg_signature, timestamp, nonce) is looked for
  first, then the same decrypted content (``content_key``); the original is the oldest
  record that is neither ``duplicate`` nor ``rejected``; a ``rejected`` request is
  never deduplicated and is never anyone's original;
* **org codes** (:func:`normalise_org_code`): typed by people, so case-insensitive,
  stored lower-case, 1-64 URL-safe characters;
* **ticket ordering** (:data:`TICKET_ORDER`, :func:`ticket_sort_key`): the latest ticket
  is the one with the greatest WeCom ``TimeStamp`` (ties: the later stored), never merely
  the last written (§5.1);
* **stats shape** (:func:`build_stats`): NULL keys count under :data:`NONE_LABEL`;
* **bounded refusals** (:func:`check_new_callback`, :func:`clip_error`,
  :func:`should_fold`): a record holds at most :data:`~.records.MAX_CIPHERTEXT` of
  ciphertext and :data:`~.records.MAX_STORED_ERROR` of error text, and past
  :data:`~.records.FOLD_AFTER` rows of one kind of refusal in
  :data:`~.records.FOLD_WINDOW_SECONDS` the next is counted on the newest row;
* **retention** (:func:`check_prune`): only :data:`~.records.PRUNABLE_STATUSES` go.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from qywx_cli.core.errors import ConflictError, RecordNotFound, UsageError
from qywx_cli.core.store.records import (
    CALLBACK_KINDS,
    CLAIMABLE_STATUSES,
    CORP_AUTH_STATES,
    FINISH_STATUSES,
    FOLD_AFTER,
    ID_KINDS,
    MAX_CIPHERTEXT,
    MAX_STORED_ERROR,
    NONE_LABEL,
    PRUNABLE_STATUSES,
    RECORDABLE_STATUSES,
    CallbackStats,
)

__all__ = [
    "DEDUPE_ORDER",
    "LOGIN_CODE_RETENTION",
    "NOT_ORIGINAL_STATUSES",
    "ORG_CODE_CHARS",
    "TICKET_ORDER",
    "auth_link_conflict",
    "build_stats",
    "check_corp_auth_state",
    "check_finish_status",
    "check_id",
    "check_limit",
    "check_new_callback",
    "check_prune",
    "claimable_statuses",
    "clip_error",
    "dedupe_verdict",
    "handled_on_record",
    "normalise_org_code",
    "org_code_conflict",
    "reduce_envelope",
    "require",
    "should_fold",
    "ticket_sort_key",
]

ORG_CODE_CHARS: Final = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
)
LOGIN_CODE_RETENTION: Final = 86400.0
"""Login codes expired longer ago than this are pruned when a new one is saved."""

NOT_ORIGINAL_STATUSES: Final = ("duplicate", "rejected")
"""Records that can never be the original another delivery duplicates."""
DEDUPE_ORDER: Final = ("replay", "content")
"""The duplicate checks, in the order they are made; the first hit decides the reason."""

TICKET_ORDER: Final = "timestamp DESC, id DESC"
"""SQL ORDER BY (both backends) putting the latest suite ticket first."""

MAX_RECORD_ID: Final = 2**63
"""Ids are 64-bit signed on both backends (SQLite rowid, PostgreSQL bigint)."""


def require(value: str | None, what: str) -> None:
    if not value:
        raise UsageError(f"{what} must not be empty")


def check_id(id: object) -> None:
    """A record id a backend can hold; anything else names no record (not an OverflowError)."""
    if isinstance(id, bool) or not isinstance(id, int) or not 0 < id < MAX_RECORD_ID:
        raise RecordNotFound(f"no callback record with id {str(id)[:40]}")


def check_limit(limit: int) -> None:
    if limit < 1:
        raise UsageError("limit must be at least 1")


def check_new_callback(instance: str, kind: str, status: str, envelope: str = "") -> None:
    require(instance, "instance")
    if len(envelope) > MAX_CIPHERTEXT:
        raise UsageError(
            f"a callback's stored ciphertext is at most {MAX_CIPHERTEXT // 1024} KiB "
            f"(got {len(envelope)} characters): store the Encrypt value, not the body"
        )
    if kind not in CALLBACK_KINDS:
        raise UsageError(f"callback kind must be one of {sorted(CALLBACK_KINDS)}")
    if status not in RECORDABLE_STATUSES:
        raise UsageError(f"a new callback's status must be one of {sorted(RECORDABLE_STATUSES)}")


def clip_error(error: str | None, limit: int = MAX_STORED_ERROR) -> str | None:
    """An error text as a record keeps it: at most ``limit`` (MAX_STORED_ERROR)
    characters, when recorded and when processing finishes."""
    if error is None or len(error) <= limit:
        return error
    return error[: limit - 1] + "…"


def reduce_envelope(envelope: str) -> str:
    """A stored XML body reduced to its ``Encrypt`` value (the schema v6 migration of
    both backends); a body that does not parse (it never was a callback) is kept."""
    from qywx_cli.core.xmlsafe import envelope_encrypt

    try:
        return envelope_encrypt(envelope)
    except Exception:  # any parse failure: leave the row as it was
        return envelope


def should_fold(rows_in_window: int) -> bool:
    """Whether a new refusal is counted on the newest row of its kind instead of
    getting its own: FOLD_AFTER rows of that kind are already in the window."""
    return rows_in_window >= FOLD_AFTER


def check_prune(before: float, statuses: Iterable[str]) -> tuple[str, ...]:
    """The statuses a prune may delete, checked: only finished ones, at least one."""
    chosen = tuple(dict.fromkeys(statuses))
    if not chosen:
        raise UsageError(f"name at least one status to prune: {', '.join(PRUNABLE_STATUSES)}")
    for status in chosen:
        if status not in PRUNABLE_STATUSES:
            if status in ("received", "failed"):
                raise UsageError(
                    f"{status} records are kept until they are handled, however old "
                    f"(qywx retry); prunable: {', '.join(PRUNABLE_STATUSES)}"
                )
            raise UsageError(
                f"unknown status {status[:40]!r}; prunable: {', '.join(PRUNABLE_STATUSES)}"
            )
    if before != before or before in (float("inf"), float("-inf")):
        raise UsageError("the prune cut-off must be a finite time")
    return chosen


def check_finish_status(status: str) -> None:
    if status not in FINISH_STATUSES:
        raise UsageError(f"a finished callback's status must be one of {sorted(FINISH_STATUSES)}")


def check_id_kind(kind: str) -> None:
    if kind not in ID_KINDS:
        raise UsageError(f"id kind must be one of {', '.join(ID_KINDS)}")


def check_mapping(kind: str, corp_id: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Both forms non-empty; a corpid's plain id is the corp id it is stored under."""
    check_id_kind(kind)
    require(corp_id, "corp_id")
    for plain, opened in pairs:
        if not plain or not opened:
            raise UsageError("an id mapping needs both the plain and the open id")
        if kind == "corpid" and plain != corp_id:
            raise UsageError("a corpid mapping is stored under the plain corp id itself")


IN_CHUNK: Final = 500
"""Ids per ``IN (…)`` list: well inside every backend's bound-parameter limit."""


def check_corp_auth_state(state: str) -> None:
    if state not in CORP_AUTH_STATES:
        raise UsageError(f"corp auth state must be one of {sorted(CORP_AUTH_STATES)}")


RETRYING_MARK: Final = " (transient: retried automatically while the AuthCode is valid)"
"""Ends a failed record's error while the server itself will run it again; an automatic
claim (:meth:`.base.Store.claim_callback`) takes a failed record only with it."""


def claimable_statuses(force: bool) -> tuple[str, ...]:
    """``processed`` is claimable only for an operator's deliberate re-run (``force``)."""
    return (*CLAIMABLE_STATUSES, "processed") if force else CLAIMABLE_STATUSES


def dedupe_verdict(
    status: str, replay_of: int | None, content_of: int | None
) -> tuple[int | None, str | None]:
    """(original id, reason) for a new record, given what each dedupe lookup found.

    ``replay_of`` / ``content_of`` are the oldest original matching by request bytes
    and by content. A rejected request is never a duplicate: it may be an attacker's
    copy and must not hide (or be hidden by) the genuine delivery.
    """
    if status == "rejected":
        return None, None
    if replay_of is not None:
        return replay_of, "replay"
    if content_of is not None:
        return content_of, "content"
    return None, None


def handled_on_record(status: str, original: int | None) -> bool:
    """A record created ``processed`` (a suite_ticket saved as it is recorded) counts one
    attempt and gets its processed_at; a duplicate is never handled."""
    return status == "processed" and original is None


def normalise_org_code(code: str) -> str:
    """Org codes are typed by people on a login page: case-insensitive, URL-safe."""
    if not code or len(code) > 64 or not set(code) <= ORG_CODE_CHARS:
        raise UsageError("org code must be 1-64 characters of letters, digits, '_' or '-'")
    return code.lower()


def org_code_conflict(code: str, held_by: str) -> ConflictError:
    return ConflictError(
        f"org code {code!r} already belongs to corp {held_by}; "
        "reassign it with --force (force=True in Python)"
    )


def auth_link_conflict(state: str, held_by: str) -> ConflictError:
    return ConflictError(
        f"state {state} already names an authorization link to template {held_by}; "
        "choose another state"
    )


def ticket_sort_key(timestamp: int, id: int) -> tuple[int, int]:
    """The Python twin of :data:`TICKET_ORDER` (greatest first when sorted descending)."""
    return (int(timestamp), id)


def build_stats(
    by_status: Iterable[tuple[str | None, int]],
    by_event: Iterable[tuple[str | None, int]],
    failures: Iterable[tuple[str | None, int]],
    latest_ticket_at: float | None,
) -> CallbackStats:
    """Assemble :class:`CallbackStats` from a backend's (key, count) rows."""
    status = {k if k is not None else NONE_LABEL: int(n) for k, n in by_status}
    return CallbackStats(
        total=sum(status.values()),
        by_status=status,
        by_event={k if k is not None else NONE_LABEL: int(n) for k, n in by_event},
        failures_by_error=[(e if e is not None else NONE_LABEL, int(n)) for e, n in failures],
        latest_suite_ticket_at=float(latest_ticket_at) if latest_ticket_at is not None else None,
    )
