"""``qywx log …`` (read the callback log) and ``qywx retry`` (re-run recorded callbacks).

Every command here reads an existing database and never creates one: an empty new
file at a mistyped ``--db`` would only hide the mistake. The log's envelopes stay
encrypted; ``log show --decrypt`` decrypts one with its instance's key and masks
SuiteTicket, AuthCode and permanent codes unless ``--show-secrets``.

``log tail --format json`` is the one streaming exception to "one JSON document on
stdout": it prints one JSON object per line (JSON Lines) as records arrive.

No ``from __future__ import annotations`` here: Typer reads each command's annotations
at start-up, and as strings it would compile and evaluate every one of them several
times (about 4 ms for ``log list``); built once at import, they come from the bytecode
cache. Names imported only for type checking are quoted instead.
"""

import contextlib
import enum
import json
import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any

import typer

from qywx_cli.cli._errors import EXIT_FAILED, EXIT_OK
from qywx_cli.cli._output import Format, console, emit_json, note, table
from qywx_cli.cli._state import globals_of
from qywx_cli.core.errors import QywxError, UsageError

if TYPE_CHECKING:
    from pathlib import Path

    from qywx_cli.core.retry import RetryResult
    from qywx_cli.core.settings import Settings
    from qywx_cli.core.store import CallbackRecord, Store

SUITE_TICKET_STALE_SECONDS = 30 * 60
"""WeCom pushes a suite_ticket every 10 minutes and each lives 30 (§3.1, §5.1)."""

PROGRESS_THRESHOLD = 3
"""Show a progress bar when retrying more records than this (and stderr is a terminal)."""

_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Status(str, enum.Enum):
    received = "received"
    processed = "processed"
    failed = "failed"
    duplicate = "duplicate"
    rejected = "rejected"
    unknown = "unknown"


class Kind(str, enum.Enum):
    command = "command"
    data = "data"
    verify = "verify"


# -- shared helpers (login_cmds uses open_store too) ---------------------------------------


def open_store(settings: "Settings") -> "Store":
    """The existing database, or StoreError (exit 1): never create an empty one here."""
    from qywx_cli.core.store import open_existing

    return open_existing(settings.db_path, keys=settings.secret_keys)


INT64_MAX = 2**63 - 1
"""The largest id or count an option takes: what SQLite's INTEGER and bigint hold."""


def parse_since(text: str, now: float, option: str = "--since") -> float:
    """``2h``, ``30m``, ``7d`` (ago), a date ``2026-11-01`` or an ISO datetime; naive = UTC."""
    value = text.strip()
    m = _RELATIVE.fullmatch(value)
    if m:
        from qywx_cli.core.retention import MAX_AGE_SECONDS

        ago = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if ago > MAX_AGE_SECONDS:
            raise UsageError(f"{option} {text[:40]!r}: an age must be at most 100 years")
        return now - ago
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: use an age such as 30m, 2h, 7d or a date/time such as "
            "2026-11-01 or 2026-11-01T08:00:00+08:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _utc(ts: object) -> datetime | str:
    """``ts`` as a UTC time, or a note of what is there instead. A row written outside
    qywx (an SQLite column takes any type) may hold text or a number past the calendar;
    the log still lists every other row, and this one shows its value."""
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return datetime.fromtimestamp(ts, timezone.utc)
    return f"not a time: {str(ts)[:40]!r}"


def iso(ts: float | None) -> str | None:
    """ISO 8601 in UTC, millisecond precision (what json output carries)."""
    if ts is None:
        return None
    when = _utc(ts)
    return when if isinstance(when, str) else when.isoformat(timespec="milliseconds")


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    when = _utc(ts)
    return when if isinstance(when, str) else when.strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    delta = timedelta(seconds=int(seconds))
    if delta.days:
        return f"{delta.days}d {delta.seconds // 3600}h"
    hours, rest = divmod(delta.seconds, 3600)
    return f"{hours}h {rest // 60}m" if hours else f"{rest // 60}m {rest % 60}s"


def record_summary(rec: "CallbackRecord") -> dict[str, Any]:
    """One ``log list`` row; the key names are part of the CLI contract."""
    return {
        "id": rec.id,
        "received_at": iso(rec.received_at),
        "instance": rec.instance,
        "kind": rec.kind,
        "info_type": rec.info_type,
        "corp_id": rec.corp_id,
        "status": rec.status,
        "attempts": rec.attempts,
        "last_error": rec.last_error,
        "folded": rec.folded,
    }


def _status_text(rec: "CallbackRecord") -> str:
    """The status, with how many similar refusals were counted on this row."""
    return f"{rec.status} (+{rec.folded} similar folded)" if rec.folded else rec.status


def _record_full(rec: "CallbackRecord") -> dict[str, Any]:
    """Every column; the envelope is the signed ciphertext (still encrypted)."""
    return {
        **record_summary(rec),
        "suite_id": rec.suite_id,
        "msg_signature": rec.msg_signature,
        "timestamp": rec.timestamp,
        "nonce": rec.nonce,
        "envelope": rec.envelope,
        "content_key": rec.content_key,
        "processed_at": iso(rec.processed_at),
        "duplicate_of": rec.duplicate_of,
        "duplicate_reason": rec.duplicate_reason,
        "claimed_by": rec.claimed_by,
        "claimed_at": iso(rec.claimed_at),
        "folded_at": iso(rec.folded_at),
    }


def _row(rec: "CallbackRecord") -> list[Any]:
    return [
        rec.id,
        _when(rec.received_at),
        rec.instance,
        rec.kind,
        rec.info_type or "",
        rec.corp_id or "",
        _status_text(rec),
        rec.attempts,
        rec.last_error or "",
    ]


_COLUMNS = ["id", "received (UTC)", "instance", "kind", "event", "corp", "status", "tries", "error"]


# -- log list ----------------------------------------------------------------------------


def log_list(
    ctx: typer.Context,
    status: Annotated[Status | None, typer.Option("--status", help="Only this status.")] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="Only this InfoType / Event.")
    ] = None,
    corp: Annotated[str | None, typer.Option("--corp", help="Only this corp id.")] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Only this auth instance.")
    ] = None,
    kind: Annotated[
        Kind | None,
        typer.Option(
            "--kind", help="command (template URL), data (the app's URL) or verify (GET)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="30m, 2h, 7d, 2026-11-01 or an ISO time (UTC).")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", help="Received before this: 30m (ago), a date or an ISO time."),
    ] = None,
    before_id: Annotated[
        int | None,
        typer.Option(
            "--before-id",
            min=1,
            max=INT64_MAX,
            help="Only records with a smaller id: the last id of a page starts the next one.",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=INT64_MAX, help="At most this many.")
    ] = 50,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """List recorded callbacks, newest first; page on with --before-id LAST_ID."""
    now = time.time()
    since_ts = parse_since(since, now) if since else None
    until_ts = parse_since(until, now, "--until") if until else None
    settings = globals_of(ctx).settings()
    with open_store(settings) as store:
        records = store.list_callbacks(
            status=status.value if status else None,
            info_type=event,
            corp_id=corp,
            instance=instance,
            since=since_ts,
            until=until_ts,
            before_id=before_id,
            limit=limit,
            kind=kind.value if kind else None,
        )
    if fmt is Format.json:
        emit_json([record_summary(r) for r in records])
    elif records:
        table(
            f"Callback log, newest first ({len(records)} shown)",
            _COLUMNS,
            [_row(r) for r in records],
        )
        if len(records) == limit:
            note(f"more may be older: pass --before-id {records[-1].id} for the next page")
    else:
        note("no callback records match" + _unknown_instance(instance, settings.auths_dir))
    return EXIT_OK


def _unknown_instance(instance: str | None, auths_dir: "Path") -> str:
    """Why an --instance filter may match nothing: a name with no folder (a typo). The
    log may still hold records of a removed instance, so it is a remark, not an error."""
    from qywx_cli.core.config import instance_names

    names = instance_names(auths_dir) if instance else []
    if not names or instance in names:
        return ""
    return f"; no instance folder {instance} in {auths_dir} (available: {', '.join(names)})"


# -- log export --------------------------------------------------------------------------


class ExportFormat(str, enum.Enum):
    csv = "csv"
    jsonl = "jsonl"


def log_export(
    ctx: typer.Context,
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="csv (a header row) or jsonl (one object a line)."),
    ] = ExportFormat.jsonl,
    since: Annotated[
        str | None, typer.Option("--since", help="Received at or after: 7d, a date, an ISO time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Received before: 1d (ago), a date, an ISO time.")
    ] = None,
) -> int:
    """Write the callback log, oldest first, as CSV or JSON Lines on stdout (streamed).

    The columns are log list's json keys. Records are read in batches, so memory stays
    flat on a log of millions; envelopes stay out (log show has them).
    """
    import csv

    now = time.time()
    since_ts = parse_since(since, now) if since else None
    until_ts = parse_since(until, now, "--until") if until else None
    out = sys.stdout
    with open_store(globals_of(ctx).settings()) as store:
        rows = (record_summary(r) for r in store.iter_callbacks(since=since_ts, until=until_ts))
        if fmt is ExportFormat.csv:
            writer = csv.DictWriter(out, fieldnames=list(_EXPORT_KEYS), lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
        else:
            for row in rows:
                out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    out.flush()
    return EXIT_OK


_EXPORT_KEYS = (
    "id",
    "received_at",
    "instance",
    "kind",
    "info_type",
    "corp_id",
    "status",
    "attempts",
    "last_error",
    "folded",
)


# -- log show ----------------------------------------------------------------------------


def _decrypted(rec: "CallbackRecord", settings: "Settings", show_secrets: bool) -> dict[str, Any]:
    """Decrypt the stored envelope with the instance's key; secrets masked unless asked."""
    from qywx_cli.core import events as ev
    from qywx_cli.core.config import find_instance
    from qywx_cli.core.errors import CallbackCryptoError
    from qywx_cli.core.service import PROVIDER_ROUTE, provider_crypto

    crypto = provider_crypto(settings) if rec.instance == PROVIDER_ROUTE else None
    if crypto is None:
        inst = find_instance(rec.instance, settings.auths_dir, need_secret=False)
        crypto = inst.crypto(inst.receive_ids(provider_corp_id=settings.provider_corp_id))
    encrypt = rec.ciphertext  # a POST's Encrypt value, a GET handshake's echostr
    try:
        crypto.verify(rec.msg_signature, rec.timestamp, rec.nonce, encrypt)
        signature_valid = True
    except CallbackCryptoError:
        signature_valid = False
    dec = crypto.decrypt(encrypt, check_receive_id=False)
    out: dict[str, Any] = {
        "signature_valid": signature_valid,
        "receive_id": dec.receive_id,
        "receive_id_kind": dec.receive_id_kind,
    }
    plaintext = dec.text
    if rec.kind == "verify":
        return {**out, "plaintext": plaintext, "fields": {}}
    try:
        event = ev.parse_event(dec.message)
    except QywxError as exc:
        # Unparsed, its secrets cannot be located: show it only when asked to.
        return {
            **out,
            "plaintext": plaintext if show_secrets else None,
            "fields": {},
            "error": f"{exc.message}" + ("" if show_secrets else " (plaintext withheld)"),
        }
    shown = ev.mask_fields(event, show_secrets)
    for name, value in event.fields.items():
        if value and shown.get(name) != value:
            plaintext = plaintext.replace(value, shown[name])
    return {**out, "info_type": event.info_type, "plaintext": plaintext, "fields": shown}


def log_show(
    ctx: typer.Context,
    record_id: Annotated[int, typer.Argument(metavar="ID", help="Callback record id.")],
    decrypt: Annotated[
        bool, typer.Option("--decrypt", help="Decrypt the envelope with the instance's key.")
    ] = False,
    show_secrets: Annotated[
        bool,
        typer.Option("--show-secrets", help="With --decrypt: SuiteTicket/AuthCode in clear."),
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Show one recorded callback; --decrypt shows its plaintext (secrets masked)."""
    if show_secrets and not decrypt:
        raise UsageError("--show-secrets only applies with --decrypt")
    settings = globals_of(ctx).settings()
    with open_store(settings) as store:
        rec = store.get_callback(record_id)
    doc = _record_full(rec)
    code = EXIT_OK
    if decrypt:
        try:
            doc["decrypted"] = _decrypted(rec, settings, show_secrets)
        except QywxError as exc:
            doc["decrypted"] = {"error": exc.message}
            code = EXIT_FAILED
    if fmt is Format.json:
        emit_json(doc)
        return code
    decrypted = doc.pop("decrypted", None)
    doc["status"] = _status_text(rec)
    table(f"Callback {rec.id}", ["field", "value"], [[k, v] for k, v in doc.items()])
    if decrypted is not None:
        plaintext = decrypted.pop("plaintext", None)
        fields = decrypted.pop("fields", {})
        error = decrypted.pop("error", None)
        if decrypted:
            table("Decrypted", ["field", "value"], [[k, v] for k, v in decrypted.items()])
        if fields:
            table("Event fields", ["field", "value"], [[k, v] for k, v in fields.items()])
        if plaintext is not None:
            print(plaintext)
        if error:
            note(f"qywx: error: record {rec.id}: {error}")
    return code


# -- log tail ----------------------------------------------------------------------------


def _tail_line(rec: "CallbackRecord", fmt: Format) -> str:
    if fmt is Format.json:
        return json.dumps(record_summary(rec), ensure_ascii=False, default=str)
    line = (
        f"{rec.id:>6}  {_when(rec.received_at)}  {rec.instance}  {rec.kind}  "
        f"{rec.info_type or '-'}  {rec.corp_id or '-'}  {_status_text(rec)}  "
        f"attempts={rec.attempts}"
    )
    return f"{line}  {rec.last_error}" if rec.last_error else line


TAIL_WATCH = 1000
"""``log tail --follow`` re-reads this many of the newest records each poll to see status
changes (a failed record processed by ``qywx retry``, a received one handled)."""


def log_tail(
    ctx: typer.Context,
    lines: Annotated[
        int,
        typer.Option(
            "--lines", "-n", min=0, max=INT64_MAX, help="Show this many recent records first."
        ),
    ] = 10,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Keep printing new records, and records whose status changes; Ctrl-C stops.",
        ),
    ] = False,
    status: Annotated[
        Status | None, typer.Option("--status", help="Only records with this status.")
    ] = None,
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.05, max=3600, help="Seconds between polls with --follow."),
    ] = 1.0,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Print the latest records, then (--follow) new ones and status changes as they happen.

    A record whose status, attempts or folded count change (among the newest 1,000) is
    printed again with its new state. With --format json, one JSON object per line (JSON Lines).
    """
    if math.isnan(interval):  # the only value click's range (0.05-3600) lets through
        raise UsageError("--interval must be from 0.05 to 3600 seconds")
    wanted = status.value if status else None

    def emit(records: "list[CallbackRecord]") -> None:
        for rec in records:
            if wanted is None or rec.status == wanted:
                print(_tail_line(rec, fmt))
        sys.stdout.flush()

    with open_store(globals_of(ctx).settings()) as store:
        try:
            # The window is read before the backlog is printed, so a change made after
            # the backlog was read is seen by the first poll.
            window = store.list_callbacks(limit=TAIL_WATCH) if follow else []
            recent = store.list_callbacks(status=wanted, limit=max(lines, 1))
            emit(list(reversed(recent[:lines])))
            if not follow:
                return EXIT_OK
            last_id = window[0].id if window else 0
            seen = {r.id: (r.status, r.attempts, r.folded) for r in window}
            while True:
                time.sleep(interval)
                new = store.list_callbacks(after_id=last_id, limit=TAIL_WATCH)
                changed = [
                    r
                    for r in reversed(store.list_callbacks(limit=TAIL_WATCH))
                    if r.id in seen and seen[r.id] != (r.status, r.attempts, r.folded)
                ]
                for rec in (*changed, *new):
                    seen[rec.id] = (rec.status, rec.attempts, rec.folded)
                if new:
                    last_id = new[-1].id
                if len(seen) > 4 * TAIL_WATCH:  # forget what has left the window
                    floor = last_id - TAIL_WATCH
                    seen = {k: v for k, v in seen.items() if k > floor}
                emit([*changed, *new])
        except KeyboardInterrupt:
            return EXIT_OK


# -- log prune ---------------------------------------------------------------------------


def log_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete finished records older than this age: 30d, 12h, 2w."
        ),
    ],
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            help="Only these (repeat or comma-separate): processed, duplicate, rejected, unknown.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Delete old finished callback records; received and failed ones stay until handled.

    Finished means processed, duplicate, rejected or unknown (an event nothing handles);
    a record a worker holds is skipped. SQLite reuses the freed space for new records
    (run VACUUM to give it back to the disk).
    """
    from qywx_cli.core.retention import parse_age, parse_statuses, prune_log

    age, statuses = parse_age(older_than), parse_statuses(status or ())  # before any I/O
    with open_store(globals_of(ctx).settings()) as store:
        report = prune_log(
            store, older_than=age, now=time.time(), statuses=statuses, dry_run=dry_run
        )
    if fmt is Format.json:
        emit_json(
            {
                "dry_run": report.dry_run,
                "older_than_seconds": int(report.older_than),
                "cutoff": iso(report.cutoff),
                "statuses": list(report.statuses),
                "deleted": report.deleted,
                "total": report.total,
            }
        )
        return EXIT_OK
    verb = "would delete" if dry_run else "deleted"
    detail = ", ".join(f"{n} {s}" for s, n in report.deleted.items())
    note(
        f"{verb} {report.total} record(s) received before {_when(report.cutoff)} UTC"
        + (f": {detail}" if detail else "")
    )
    return EXIT_OK


# -- log stats ---------------------------------------------------------------------------


def _ticket_ages(store: "Store", settings: "Settings", now: float) -> list[dict[str, Any]]:
    """The latest suite_ticket of each active instance's suite, and whether it is stale."""
    from qywx_cli.core.config import load_instances

    if not settings.auths_dir.is_dir():
        return []
    suites = sorted({i.suite_id for i in load_instances(settings.auths_dir) if i.is_active})
    out = []
    for suite in suites:
        ticket = store.latest_suite_ticket(suite)
        age = None if ticket is None else max(0.0, now - ticket.received_at)
        out.append(
            {
                "suite_id": suite,
                "received_at": iso(ticket.received_at) if ticket else None,
                "age_seconds": None if age is None else int(age),
                "stale": age is None or age > SUITE_TICKET_STALE_SECONDS,
            }
        )
    return out


def log_stats(
    ctx: typer.Context,
    since: Annotated[
        str | None, typer.Option("--since", help="Count only records since (30m, 2h, 7d, date).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Counts by status and event, the commonest failures, and suite_ticket freshness."""
    now = time.time()
    since_ts = parse_since(since, now) if since else None
    settings = globals_of(ctx).settings()
    from qywx_cli.core.licensing import licence_report

    with open_store(settings) as store:
        stats = store.callback_stats(since=since_ts)
        tickets = _ticket_ages(store, settings, now)
        licences = licence_report(store, now=now, since=since_ts)
    warning = _stale_ticket_warning(tickets)
    failures = [{"error": e, "count": n} for e, n in stats.failures_by_error]
    if fmt is Format.json:
        if warning:
            note(warning)
        emit_json(
            {
                "total": stats.total,
                "since": iso(since_ts),
                "by_status": stats.by_status,
                "by_event": stats.by_event,
                "failures": failures,
                "suite_tickets": tickets,
                **licences.as_dict(),
            }
        )
        return EXIT_OK
    print(
        f"{stats.total} callback record(s)" + (f" since {_when(since_ts)} UTC" if since_ts else "")
    )
    by = sorted(stats.by_status.items(), key=lambda kv: -kv[1])
    table("By status", ["status", "count"], [list(kv) for kv in by])
    by = sorted(stats.by_event.items(), key=lambda kv: -kv[1])
    table("By event", ["event", "count"], [list(kv) for kv in by])
    if failures:
        table("Failures by error", ["error", "count"], [[f["error"], f["count"]] for f in failures])
    if tickets:
        table(
            "Latest suite_ticket",
            ["suite", "received (UTC)", "age", "stale"],
            [
                [
                    t["suite_id"],
                    (t["received_at"] or "never")[:19].replace("T", " "),
                    "" if t["age_seconds"] is None else _age(t["age_seconds"]),
                    "yes" if t["stale"] else "no",
                ]
                for t in tickets
            ],
        )
    if licences.unlicensed:
        table(
            "Members who used the app unlicensed (unlicensed_notify)",
            ["corp", "member", "times", "last seen (UTC)"],
            [[m.corp_id, m.user_id, m.count, _when(m.last_seen)] for m in licences.unlicensed],
        )
    if licences.expiring:
        table(
            f"Licences expiring within {licences.days} days",
            ["corp", "member", "type", "expires (UTC)", "days left"],
            [
                [
                    x.corp_id,
                    x.user_id,
                    x.type,
                    _when(x.expire_time) if x.expire_time is not None else "",
                    f"{licences.days_left(x) or 0:.0f}",
                ]
                for x in licences.expiring
            ],
        )
    if warning:  # one line, after the table that lists each suite
        note(warning)
    return EXIT_OK


def _stale_ticket_warning(tickets: list[dict[str, Any]]) -> str | None:
    stale = [
        f"{t['suite_id']} ("
        + ("never" if t["age_seconds"] is None else f"{_age(t['age_seconds'])} old")
        + ")"
        for t in tickets
        if t["stale"]
    ]
    if not stale:
        return None
    return (
        f"qywx: warning: no recent suite_ticket for {len(stale)} suite(s): {', '.join(stale)}; "
        "WeCom pushes one every 10 minutes, so callbacks are not arriving for them (check "
        "each template's callback URL and that qywx serve is reachable)"
    )


# -- retry -------------------------------------------------------------------------------


def retry(
    ctx: typer.Context,
    ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="[ID]...", help="Callback record ids.", show_default=False),
    ] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Retry every failed record (oldest first).")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="With --failed: received since (30m, 2h, …).")
    ] = None,
    event: Annotated[
        str | None, typer.Option("--event", help="With --failed: only this InfoType.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be retried; change nothing.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-run processed records too.")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.text,
) -> int:
    """Re-run recorded callbacks from their stored envelopes; exit 1 if any still fails.

    The signature was checked on receipt and the timestamp window is not applied
    again, so a callback that failed hours ago can still be re-run.
    """
    from qywx_cli.core.retry import retry_callbacks

    with _progress_bar() as progress:
        results = retry_callbacks(
            globals_of(ctx).settings(),
            ids=ids or (),
            failed=failed,
            since=parse_since(since, time.time()) if since else None,
            info_type=event,
            force=force,
            dry_run=dry_run,
            progress=progress,
        )
    return _retry_report(results, fmt, dry_run=dry_run)


@contextlib.contextmanager
def _progress_bar() -> Iterator[Callable[[int, int], None]]:
    """A transient bar on a terminal's stderr once there are more than a few records."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task: list[Any] = []

        def advance(done: int, total: int) -> None:
            if total <= PROGRESS_THRESHOLD:
                return
            if not task:
                task.append(bar.add_task("retrying", total=total))
            bar.update(task[0], completed=done)

        yield advance


def _retry_row(result: "RetryResult") -> dict[str, Any]:
    """One row of the retry report (json keys are part of the CLI contract)."""
    before, after = result.before, result.after
    return {
        "id": before.id,
        "event": before.info_type,
        "before": before.status,
        "after": after.status,
        "attempts": after.attempts,
        "error": after.last_error,
        "ran": result.ran,
        "reason": result.reason,
    }


def _retry_report(results: "list[RetryResult]", fmt: Format, *, dry_run: bool) -> int:
    rows = [_retry_row(r) for r in results]
    # failed, or still waiting (e.g. held by another worker's claim): not done either way
    still_failed = [] if dry_run else [r.before.id for r in results if r.still_failing]
    if fmt is Format.json:
        emit_json(rows)
    elif rows:
        table(
            "Retry (dry run)" if dry_run else "Retry",
            ["id", "event", "before", "after", "attempts", "error", "note"],
            [
                [
                    r["id"],
                    r["event"] or "",
                    r["before"],
                    r["after"],
                    r["attempts"],
                    r["error"] or "",
                    r["reason"] if dry_run or not r["ran"] else "",
                ]
                for r in rows
            ],
        )
    if not rows:
        note("no callback records to retry")
    elif still_failed:
        note(f"{len(still_failed)} record(s) still failed: {', '.join(map(str, still_failed))}")
    return EXIT_FAILED if still_failed else EXIT_OK


LOG_COMMANDS: dict[str, Callable[..., int]] = {
    "list": log_list,
    "show": log_show,
    "tail": log_tail,
    "export": log_export,
    "stats": log_stats,
    "prune": log_prune,
}


def register(app: typer.Typer) -> None:
    _register_log(app, LOG_COMMANDS)
    app.command("retry")(retry)


def register_command(app: typer.Typer, command: str, sub: str | None) -> None:
    """Only what ``qywx COMMAND [SUB]`` runs: ``qywx log list`` converts ``log list``
    alone (Typer turns every registered function into click at start-up, and the log
    commands are read in scripts and CI); ``qywx log`` and an unknown subcommand get the
    whole group, so help and "no such command" list all of it."""
    if command == "retry":
        app.command("retry")(retry)
        return
    one = LOG_COMMANDS.get(sub or "")
    _register_log(app, {sub: one} if sub is not None and one is not None else LOG_COMMANDS)


def _register_log(app: typer.Typer, commands: dict[str, Callable[..., int]]) -> None:
    log = typer.Typer(
        name="log",
        help="Read the callback log (list, show, tail, export, stats) and prune it.",
        no_args_is_help=True,
    )
    for name, function in commands.items():
        log.command(name)(function)
    app.add_typer(log, name="log")
