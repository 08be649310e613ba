"""core.retry: which records a retry takes, and the store and service it opens and closes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core.app import App
from qywx_cli.core.errors import RecordNotFound, StoreError, UsageError
from qywx_cli.core.retry import retry_callbacks, select_for_retry
from qywx_cli.core.settings import Settings, load_settings
from qywx_cli.core.store import Store
from tests.helpers import CallbackSender, LoopbackWeCom

CORP = "wwretrycore0000001"


@pytest.fixture
def settings(auths: Path, tmp_path: Path, loopback_wecom: LoopbackWeCom) -> Settings:
    return load_settings(
        auths=auths, db=tmp_path / "qywx.db", env={"QYWX_API_BASE": loopback_wecom.api_base}
    )


@pytest.fixture
def failed_id(settings: Settings, loopback_wecom: LoopbackWeCom) -> Iterator[int]:
    """A create_auth whose get_permanent_code failed once (WeCom was busy)."""
    app = App(settings.auths_dir, db=settings.db_path, api_base=settings.api_base, background=False)
    try:
        sender = CallbackSender(app)
        sender.send("suite_ticket")
        loopback_wecom.fake.inject_fault("get_permanent_code", errcode=-1)
        record_id = sender.send("create_auth", CORP).record_id
        assert record_id is not None
    finally:
        app.close()
    yield record_id


def test_a_failed_record_is_rerun_and_the_store_is_closed(
    settings: Settings, failed_id: int
) -> None:
    seen: list[tuple[int, int]] = []
    (result,) = retry_callbacks(settings, failed=True, progress=lambda d, t: seen.append((d, t)))
    assert (result.before.status, result.after.status, result.ran) == ("failed", "processed", True)
    assert result.after.attempts == 2 and not result.still_failing
    assert seen == [(0, 1), (1, 1)]
    with Store(settings.db_path) as store:  # no claim or transaction left behind
        assert store.get_callback(failed_id).claimed_by is None
        auth = store.get_corp_auth(CORP)
        assert auth is not None and auth.is_active


def test_a_dry_run_changes_nothing(settings: Settings, failed_id: int) -> None:
    (result,) = retry_callbacks(settings, ids=[failed_id, failed_id], dry_run=True)
    assert (result.ran, result.reason, result.after.status) == (False, "would retry", "failed")
    with Store(settings.db_path) as store:
        assert store.get_callback(failed_id).attempts == 1
    (processed,) = retry_callbacks(settings, ids=[1], dry_run=True)  # the suite_ticket
    assert processed.reason == "already processed (use --force to re-run)"


def test_selection_needs_ids_or_failed_and_not_both(settings: Settings, failed_id: int) -> None:
    with Store(settings.db_path) as store:
        for kwargs, message in [
            ({}, "give record IDs to retry, or --failed"),
            ({"ids": [1], "failed": True}, "not both"),
            ({"ids": [1], "since": 0.0}, "use them with --failed"),
        ]:
            with pytest.raises(UsageError, match=message):
                select_for_retry(store, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(RecordNotFound):
            select_for_retry(store, ids=[999])
        assert [r.id for r in select_for_retry(store, failed=True, info_type="create_auth")] == [
            failed_id
        ]
        assert select_for_retry(store, failed=True, info_type="suite_ticket") == []


def test_no_database_or_no_auths_is_refused(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no database at"):
        retry_callbacks(settings, failed=True)
    assert not Path(settings.db_path).exists()  # and none was created
    bare = load_settings(auths=tmp_path / "none", db=settings.db_path)
    with pytest.raises(UsageError, match="no auths/ folder"):
        retry_callbacks(bare, failed=True)
