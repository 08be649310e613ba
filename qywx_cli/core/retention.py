"""Retention of the callback log: ``qywx log prune`` and ``retention_days``.

The log keeps a row per callback (refusals folded, :mod:`.store.records`), so a busy
install grows it by a few thousand rows a day. Old rows whose handling is over are
deleted here; records still owed work (``received``, ``failed``, or held by a worker)
stay however old they are, until someone handles them.

``qywx serve`` with ``retention_days`` calls :func:`apply_retention` once at start and
then every :data:`RETENTION_EVERY` seconds; the timer only calls this module, so the
behaviour is tested here, not through the timer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from qywx_cli.core.errors import UsageError
from qywx_cli.core.store.records import PRUNABLE_STATUSES

if TYPE_CHECKING:
    from qywx_cli.core.store import Store

__all__ = [
    "DAY",
    "RETENTION_EVERY",
    "PruneReport",
    "apply_retention",
    "parse_age",
    "parse_statuses",
    "prune_log",
]

DAY: Final = 86400.0
RETENTION_EVERY: Final = 3600.0
"""How often ``qywx serve`` applies ``retention_days`` (and once at start)."""

_AGE = re.compile(r"(\d{1,9})\s*([smhdw])")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class PruneReport:
    """What a prune deleted (or, with ``dry_run``, would delete), by status."""

    cutoff: float
    """Records received before this epoch time were candidates."""
    older_than: float
    """The age asked for, in seconds."""
    statuses: tuple[str, ...]
    dry_run: bool
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def parse_age(text: str, option: str = "--older-than") -> float:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as seconds (more than zero).

    An age, not a date: "older than" a fixed date is rarely what a retention rule means,
    and a typo such as ``30`` (no unit) is refused rather than read as seconds."""
    m = _AGE.fullmatch(text.strip())
    if m is None:
        raise UsageError(
            f"{option} {text[:40]!r}: use an age with a unit, such as 30d, 12h, 90m or 2w"
        )
    seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise UsageError(f"{option} {text[:40]!r}: the age must be more than zero")
    if seconds > MAX_AGE_SECONDS:
        raise UsageError(f"{option} {text[:40]!r}: the age must be at most 100 years")
    return float(seconds)


MAX_AGE_SECONDS: Final = 100 * 366 * 86400
"""The longest age an option takes: any more reaches before 1970, which no date holds."""


def parse_statuses(values: Iterable[str], option: str = "--status") -> tuple[str, ...]:
    """Statuses given repeated or comma-separated; none means every prunable one."""
    chosen = tuple(
        dict.fromkeys(part.strip() for value in values for part in value.split(",") if part)
    )
    if not chosen:
        return PRUNABLE_STATUSES
    for status in chosen:
        if status in ("received", "failed"):
            raise UsageError(
                f"{option} {status}: {status} records are kept until they are handled, "
                f"however old (qywx retry); prunable: {', '.join(PRUNABLE_STATUSES)}"
            )
        if status not in PRUNABLE_STATUSES:
            raise UsageError(
                f"{option} {status[:40]!r}: not a status; prunable: {', '.join(PRUNABLE_STATUSES)}"
            )
    return chosen


def prune_log(
    store: Store,
    *,
    older_than: float,
    now: float,
    statuses: Iterable[str] = (),
    dry_run: bool = False,
) -> PruneReport:
    """Delete (or count, with ``dry_run``) finished records older than ``older_than``
    seconds; ``statuses`` narrows which (default: every prunable status)."""
    if not older_than > 0:
        raise UsageError("the age to prune must be more than zero")
    chosen = parse_statuses(statuses)
    cutoff = now - older_than
    deleted = store.prune_callbacks(before=cutoff, statuses=chosen, dry_run=dry_run)
    order = {s: i for i, s in enumerate(PRUNABLE_STATUSES)}
    return PruneReport(
        cutoff=cutoff,
        older_than=older_than,
        statuses=chosen,
        dry_run=dry_run,
        deleted=dict(sorted(deleted.items(), key=lambda kv: order.get(kv[0], 99))),
    )


def apply_retention(store: Store, days: int, *, now: float) -> PruneReport:
    """``retention_days``: every finished record older than ``days`` days goes."""
    return prune_log(store, older_than=days * DAY, now=now)
