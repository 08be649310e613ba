"""A project with an offline WeCom, and WeCom's requests signed independently of qywx."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.app import App
from qywx_cli.core.config import AuthInstance
from qywx_cli.core.fakewecom import FakeWeCom
from tests.helpers import SAMPLES, independent_encrypt, sha1_sign

SUITE = "tj1234567890abcdef"
CORP = "ww1234567890abcdef"


@dataclass
class Signed:
    """One request as WeCom sends it: query parameters and (for a POST) the body."""

    query: dict[str, str]
    body: str = ""


class WeComRequests:
    """Builds WeCom's URL-verification GET and signed callback POSTs for one instance."""

    def __init__(self, instance: AuthInstance) -> None:
        self.instance = instance
        self.nonce = 0

    def handshake(self, plaintext: str = "8848123456789") -> Signed:
        encrypt = independent_encrypt(self.instance.encoding_aes_key, plaintext, CORP)
        ts, nonce = "1409659589", "1372623149"
        return Signed(
            {
                "msg_signature": sha1_sign(self.instance.token, ts, nonce, encrypt),
                "timestamp": ts,
                "nonce": nonce,
                "echostr": encrypt,
            }
        )

    def suite_ticket(self, ticket: str) -> Signed:
        self.nonce += 1
        xml = ev.build_event_xml("suite_ticket", suite_id=SUITE, overrides={"SuiteTicket": ticket})
        encrypt = independent_encrypt(self.instance.encoding_aes_key, xml, SUITE)
        ts, nonce = str(int(time.time())), str(7000 + self.nonce)
        body = (
            f"<xml><ToUserName><![CDATA[{SUITE}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
        query = {
            "msg_signature": sha1_sign(self.instance.token, ts, nonce, encrypt),
            "timestamp": ts,
            "nonce": nonce,
        }
        return Signed(query, body)


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
