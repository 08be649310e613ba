"""The app's data callbacks end to end: `qywx simulate-callback --event` for each one
against a real `qywx serve` on loopback, then the log read back from the database.

A data callback is encrypted for the authorized corp (receiveid = the corp) and its
envelope names the corp and the app; the template's command callbacks are encrypted for
the suite id. The server records each under the instance, kind ``data``, filed under the
corp, and refuses one encrypted for the other URL's receiveid.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.events import DATA_EVENT_NAMES
from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, wait_for
from tests.helpers import one_json, run_qywx

pytestmark = pytest.mark.e2e

SUITE = "tj1234567890abcdef"  # sample_auths/QywxProxyTemp
CORP = "wwd4ta0c0rp0000001"  # authorized by the test, not the instance's own corpId
OTHER = "wwd4ta0c0rp0000002"


def simulate(env: dict[str, str], cwd: Path, url: str, *args: str, code: int = 0) -> Any:
    proc = run_qywx(
        "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, "-f", "json", *args,
        env=env, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return one_json(proc)


@pytest.fixture
def authorized(server: Proc, env: dict[str, str]) -> str:
    """The corp the data callbacks come from, authorized for the suite in the database."""
    with Store(env["QYWX_DB"]) as store:
        store.upsert_corp_auth(SUITE, CORP, state="active", agent_id=1000002)
        store.upsert_corp_auth(SUITE, OTHER, state="active", agent_id=1000003)
    return f"{server.url}/notify/QywxProxyTemp"


def test_every_data_event_is_recorded_under_its_corp(
    authorized: str, env: dict[str, str], tmp_path: Path
) -> None:
    for event in DATA_EVENT_NAMES:
        doc = simulate(env, tmp_path, authorized, "--event", event, "--corp-id", CORP,
                       "--set", "AgentID=1000002")  # fmt: skip
        assert doc["ok"] and doc["response"] == {**doc["response"], "status": 200}, doc
        request = doc["request"]
        assert doc["receive_id"] == CORP
        envelope = ET.fromstring(request["body"])
        # The envelope of a data callback names the corp and the app, not the suite.
        assert (envelope.findtext("ToUserName"), envelope.findtext("AgentID")) == (
            CORP,
            "1000002",
        )

    with Store(env["QYWX_DB"]) as store:
        records = wait_for(
            lambda: [r for r in store.list_callbacks(kind="data", limit=100) if r.status]
        )
    got = sorted((r.info_type or "", r.kind, r.corp_id, r.status, r.instance) for r in records)
    assert got == sorted(
        (name, "data", CORP, "processed", "QywxProxyTemp") for name in DATA_EVENT_NAMES
    )


def test_text_in_the_log_listing(authorized: str, env: dict[str, str], tmp_path: Path) -> None:
    simulate(env, tmp_path, authorized, "--event", "text", "--corp-id", CORP)
    listed = run_qywx("log", "list", "--kind", "data", "-f", "json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows: list[dict[str, Any]] = json.loads(listed.stdout)
    (row,) = rows
    assert (row["info_type"], row["kind"]) == ("text", "data")
    assert row["corp_id"] == CORP


def test_a_data_callback_encrypted_for_the_suite_is_refused(
    authorized: str, env: dict[str, str], tmp_path: Path
) -> None:
    """The app's events signed as if for the template's URL: -40005, recorded rejected."""
    doc = simulate(env, tmp_path, authorized, "--event", "enter_agent", "--corp-id", CORP,
                   "--receive-id", SUITE, code=1)  # fmt: skip
    assert doc["response"]["status"] == 403 and doc["response"]["body"] != "success"
    assert "-40005" in doc["response"]["body"] or "receiveid" in doc["response"]["body"]
    with Store(env["QYWX_DB"]) as store:
        (rec,) = store.list_callbacks(status="rejected")
    assert rec.last_error and "encrypted for the suite id" in rec.last_error


def test_a_command_callback_encrypted_for_a_corp_is_refused(
    authorized: str, env: dict[str, str], tmp_path: Path
) -> None:
    doc = simulate(env, tmp_path, authorized, "--event", "change_auth", "--corp-id", CORP,
                   "--receive-id", CORP, code=1)  # fmt: skip
    assert doc["response"]["status"] == 403
    with Store(env["QYWX_DB"]) as store:
        (rec,) = store.list_callbacks(status="rejected")
    assert rec.last_error and "command callbacks for the suite id" in rec.last_error


def test_a_data_callback_addressed_to_another_corp_is_refused(
    authorized: str, env: dict[str, str], tmp_path: Path
) -> None:
    doc = simulate(env, tmp_path, authorized, "--event", "text", "--corp-id", CORP,
                   "--set", f"ToUserName={OTHER}", code=1)  # fmt: skip
    assert doc["response"]["status"] == 403
    with Store(env["QYWX_DB"]) as store:
        assert store.list_callbacks(kind="data") == []


def test_an_unknown_corp_is_refused(authorized: str, env: dict[str, str], tmp_path: Path) -> None:
    doc = simulate(env, tmp_path, authorized, "--event", "enter_agent", "--corp-id",
                   "wwn0tauth0r1zed001", code=1)  # fmt: skip
    assert doc["response"]["status"] == 403


def test_the_instance_corp_is_the_default(
    server: Proc, env: dict[str, str], tmp_path: Path
) -> None:
    """Without --corp-id the instance's own corpId is the corp (sample: ww1234567890abcdef)."""
    url = f"{server.url}/notify/QywxProxyTemp"
    doc = simulate(env, tmp_path, url, "--event", "batch_job_result", "--dry-run")
    assert doc["receive_id"] == "ww1234567890abcdef"
    assert "<Event><![CDATA[batch_job_result]]></Event>" in doc["plaintext"]
