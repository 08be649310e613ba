"""Re-running recorded callbacks: which records, and the store and service around them.

``qywx retry`` and library callers use :func:`retry_callbacks`; it picks the records
(ids, or every failed one in a window), opens the existing store, runs each through
:meth:`CallbackService.retry` without background workers, and closes both whatever
happens. The stored envelope's signature was checked on receipt and the timestamp
window is not applied again, so a callback that failed hours ago can still be re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qywx_cli.core.errors import UsageError
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import CallbackRecord, Store, check_not_empty, open_existing

__all__ = [
    "RetryResult",
    "check_not_empty",
    "open_existing_store",
    "retry_callbacks",
    "select_for_retry",
]

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called before the first record and after each one."""


@dataclass(frozen=True)
class RetryResult:
    """One record: as it was selected, as it is now, whether it ran, and why not."""

    before: CallbackRecord
    after: CallbackRecord
    ran: bool
    reason: str = ""

    @property
    def still_failing(self) -> bool:
        """Failed again, or still waiting (held by another worker's claim)."""
        return self.after.status in ("failed", "received")


def open_existing_store(settings: Settings) -> Store:
    """The configured database, or StoreError: reading commands never create an empty one."""
    return open_existing(settings.db_path, keys=settings.secret_keys)


def _check_selection(
    ids: Sequence[int], failed: bool, since: float | None, info_type: str | None
) -> None:
    if ids and failed:
        raise UsageError("give record IDs or --failed, not both")
    if not ids and not failed:
        raise UsageError("give record IDs to retry, or --failed")
    if (since is not None or info_type) and not failed:
        raise UsageError("--since and --event select failed records; use them with --failed")


def select_for_retry(
    store: Store,
    *,
    ids: Sequence[int] = (),
    failed: bool = False,
    since: float | None = None,
    info_type: str | None = None,
) -> list[CallbackRecord]:
    """The records ``ids`` (each once, in the order given; an unknown id raises
    RecordNotFound) or, with ``failed``, every failed record oldest first."""
    _check_selection(ids, failed, since, info_type)
    if ids:
        return [store.get_callback(i) for i in dict.fromkeys(ids)]
    return store.list_callbacks(
        status="failed", since=since, info_type=info_type, limit=1_000_000, newest_first=False
    )


def retry_callbacks(
    settings: Settings,
    *,
    ids: Sequence[int] = (),
    failed: bool = False,
    since: float | None = None,
    info_type: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[RetryResult]:
    """Select records (:func:`select_for_retry`) and re-run each one's handler.

    ``force`` re-runs processed records too. ``dry_run`` changes nothing: each result
    says why the record would be skipped, or ``"would retry"``.
    """
    from qywx_cli.core.service import CallbackService

    _check_selection(ids, failed, since, info_type)  # before anything is opened
    if not dry_run and not settings.auths_dir.is_dir():
        raise UsageError(
            f"no auths/ folder at {settings.auths_dir}; retry needs the instances' keys "
            "(pass --auths DIR)"
        )
    with open_existing_store(settings) as store:
        targets = select_for_retry(store, ids=ids, failed=failed, since=since, info_type=info_type)
        if dry_run:
            return [
                RetryResult(
                    r, r, False, CallbackService.retry_skip_reason(r, force=force) or "would retry"
                )
                for r in targets
            ]
        results: list[RetryResult] = []
        with CallbackService(settings, store=store, background=False) as service:
            if progress is not None:
                progress(0, len(targets))
            for rec in targets:
                outcome = service.retry(rec.id, force=force)
                results.append(RetryResult(rec, outcome.record, outcome.ran, outcome.reason))
                if progress is not None:
                    progress(len(results), len(targets))
        return results
