"""Three ``qywx serve`` processes on one SQLite database (issue 6, item 3).

Runs the harness of ``benchmarks/concurrency.py`` with a small load: round-robin
delivery across the processes, with duplicate deliveries fired at two processes at the
same instant, half byte-identical replays and half WeCom-style redeliveries.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.concurrency import run_concurrency

pytestmark = pytest.mark.usefixtures("forked_benchmark_processes")


def test_three_servers_share_one_database_without_locks_or_double_handling(
    tmp_path: Path,
) -> None:
    result = run_concurrency(120, 3, clients=8, duplicates=0.4, seed=3, workdir=tmp_path)
    report = result.table() + "\n" + "\n".join(result.notes)

    assert result.racing_replays > 5 and result.racing_redeliveries > 5, report
    assert sorted(result.per_process) == [0, 1, 2], report  # the load reached all three
    # What WeCom sees: no 5xx, no lock error, each answer as designed.
    assert result.server_errors == 0 and result.locked == 0, report
    assert result.wrong_answers == 0, report
    assert set(result.statuses) == {200}, report  # replays and redeliveries: idempotent
    # What happened inside: one original per callback, handled once, every delivery logged.
    assert result.not_recorded_once == 0 and result.acknowledged_missing == 0, report
    assert result.not_processed_once == 0, report
    # And WeCom's API was asked exactly once per AuthCode and per corp token.
    assert result.create_auths == 60, report
    assert result.get_permanent_code_calls == result.create_auths, report
    assert result.gettoken_calls == result.create_auths, report
    assert result.ok
