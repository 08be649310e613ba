"""A project with an offline WeCom, and WeCom's requests signed independently of qywx."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qywx_cli.core.app import App
from qywx_cli.core.fakewecom import FakeWeCom
from tests.helpers import SAMPLES, WeComRequests

SUITE = "tj1234567890abcdef"

__all__ = ["WeComRequests", "ticket_of"]


@pytest.fixture
def project(tmp_path: Path) -> Iterator[App]:
    """A copy of sample_auths over a fresh SQLite file; WeCom's API is an in-process fake."""
    shutil.copytree(SAMPLES, tmp_path / "auths")
    app = App(
        tmp_path / "auths",
        db=tmp_path / "qywx.db",
        api_base="http://fake.wecom.test/cgi-bin",
        transport=httpx.WSGITransport(app=FakeWeCom()),
    )
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def wecom(project: App) -> WeComRequests:
    return WeComRequests(project.getElement("auths.QywxProxyTemp").instance)


def ticket_of(app: App) -> str | None:
    """The suite_ticket the store holds now (committed before the reply was sent)."""
    stored = app.callbacks.store.latest_suite_ticket(SUITE)
    return stored.ticket if stored is not None else None
