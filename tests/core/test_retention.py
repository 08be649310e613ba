"""Retention of the callback log (core/retention.py) against a real SQLite file.

What ``qywx log prune`` and serve's ``retention_days`` timer call; the timer only calls
:func:`apply_retention`, so this is where the behaviour is tested.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qywx_cli.core.errors import UsageError
from qywx_cli.core.retention import DAY, apply_retention, parse_age, parse_statuses, prune_log
from qywx_cli.core.store import Store
from qywx_cli.core.store.records import PRUNABLE_STATUSES
from tests.helpers import Clock

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * DAY), ("12h", 43200), ("90m", 5400), ("2w", 14 * DAY), (" 45s ", 45)],
)
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("30", "use an age with a unit"),
        ("-3d", "use an age with a unit"),
        ("3y", "use an age with a unit"),
        ("2026-01-01", "use an age with a unit"),
        ("1" * 20 + "d", "use an age with a unit"),
        ("0h", "more than zero"),
    ],
)
def test_bad_ages_are_one_line(text: str, words: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_age(text)
    assert words in err.value.message and err.value.message.startswith("--older-than")


def test_statuses_repeat_or_comma_separate_and_default_to_every_finished_one() -> None:
    assert parse_statuses([]) == PRUNABLE_STATUSES
    assert parse_statuses(["processed,rejected", "processed"]) == ("processed", "rejected")
    with pytest.raises(UsageError, match="failed records are kept until they are handled"):
        parse_statuses(["processed", "failed"])


def _log(store: Store, status: str, n: int, error: str | None = None) -> int:
    return store.record_callback(
        instance="QywxProxyTemp",
        kind="command",
        info_type="suite_ticket",
        suite_id="dk1",
        corp_id=None,
        msg_signature=f"s{n}",
        timestamp="1",
        nonce="n",
        envelope="QUJD",
        content_key=None if status == "rejected" else f"c{n}",
        status=status,
        last_error=error,
    ).id


def test_retention_keeps_owed_work_and_recent_records(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Store(tmp_path / "q.db", now=clock) as store:
        old = {s: _log(store, s, i, "e" if s == "rejected" else None) for i, s in enumerate(
            ("processed", "received", "rejected", "unknown"))}  # fmt: skip
        failed = _log(store, "received", 10)
        store.claim_callback(failed, "w")
        store.finish_callback(failed, "failed", "errcode -1")
        clock.advance(31 * DAY)
        recent = _log(store, "processed", 11)
        report = apply_retention(store, 30, now=clock())
        assert report.deleted == {"processed": 1, "rejected": 1, "unknown": 1}
        assert report.total == 3 and report.cutoff == clock() - 30 * DAY
        left = {r.id for r in store.list_callbacks()}
        assert left == {old["received"], failed, recent}
        assert apply_retention(store, 30, now=clock()).total == 0  # nothing more to do


def test_prune_log_dry_run_and_status_filter(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Store(tmp_path / "q.db", now=clock) as store:
        for i in range(3):
            _log(store, "processed", i)
        _log(store, "rejected", 5, "bad")
        clock.advance(2 * DAY)
        _log(store, "processed", 9)
        dry = prune_log(store, older_than=DAY, now=clock(), dry_run=True)
        assert (dry.dry_run, dry.deleted) == (True, {"processed": 3, "rejected": 1})
        assert list(dry.deleted) == ["processed", "rejected"]  # in PRUNABLE_STATUSES order
        only = prune_log(store, older_than=DAY, now=clock(), statuses=["rejected"])
        assert only.deleted == {"rejected": 1} and only.statuses == ("rejected",)
        assert len(store.list_callbacks()) == 4
