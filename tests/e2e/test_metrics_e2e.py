"""``qywx serve --metrics-port``: real processes, real signed callbacks, one shared store."""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from qywx_cli.core.config import find_instance
from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import WeComRequests, assert_one_line_error, run_qywx

SUITE = "tj1234567890abcdef"
_METRICS_RE = re.compile(r"metrics on (http://127\.0\.0\.1:\d+/metrics)")


def metrics_url(proc: Proc) -> str:
    found = wait_for(lambda: _METRICS_RE.search(proc.log))
    assert found, proc.log
    return found.group(1)


def samples(client: httpx.Client, url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    got = client.get(url)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(got.text)
        for s in family.samples
    }


ACCEPTED = (
    "qywx_callbacks_total",
    frozenset(
        {
            ("instance", "QywxProxyTemp"),
            ("kind", "command"),
            ("event", "suite_ticket"),
            ("outcome", "accepted"),
        }
    ),
)
AGE = ("qywx_suite_ticket_age_seconds", frozenset({("suite_id", SUITE)}))


def test_callbacks_move_the_counters_and_the_ticket_age(
    env: dict[str, str], tmp_path: Path, auths: Path
) -> None:
    proc = Proc(["serve", "--port", "0", "--threads", "4", "--metrics-port", "0"], env, tmp_path)
    try:
        url = metrics_url(proc)
        wecom = WeComRequests(find_instance("QywxProxyTemp", auths, {}))
        with http() as client:
            before = samples(client, url)
            assert before[AGE] == math.inf and ACCEPTED not in before
            for n in range(3):
                signed = wecom.suite_ticket(f"e2e-metrics-ticket-{n}-0123456789abcdef")
                got = client.post(
                    f"{proc.url}/notify/QywxProxyTemp", params=signed.query, content=signed.body
                )
                assert got.text == "success"
            after = samples(client, url)
            assert after[ACCEPTED] == 3
            assert 0 <= after[AGE] < 60
            reply_count = ("qywx_reply_seconds_count", frozenset({("kind", "command")}))
            assert after[reply_count] == 3
            # The public port has no /metrics unless a token is set.
            assert client.get(f"{proc.url}/metrics").status_code == 404
    finally:
        proc.stop()


def test_two_processes_on_one_store_report_the_same_pending_count(
    env: dict[str, str], tmp_path: Path
) -> None:
    # Records another host acknowledged and is still working on (its lease is renewed
    # throughout the test): pending for every process, handled by none of them.
    store = Store(tmp_path / "qywx.db")
    for n in range(5):
        rec = store.record_callback(
            instance="QywxProxyTemp",
            kind="command",
            info_type="create_auth",
            suite_id=SUITE,
            corp_id=None,
            msg_signature=f"{n:040d}",
            timestamp="1",
            nonce=f"p{n}",
            envelope="<xml/>",
            content_key=None,
            status="received",
        )
        assert store.claim_callback(rec.id, "a-live-worker") is not None
        if n == 4:
            store.finish_callback(rec.id, "failed", "WeCom errcode 40078")
    store.close()
    # The other host renews its leases for as long as the test runs, however slowly the
    # two servers start: its claims are dated a day ahead, so neither server takes them.
    with sqlite3.connect(tmp_path / "qywx.db") as conn:
        conn.execute(
            "UPDATE callbacks SET claimed_at = ? WHERE claimed_by = 'a-live-worker'",
            (time.time() + 86400,),
        )
    conn.close()
    procs = [
        Proc(["serve", "--port", "0", "--threads", "2", "--metrics-port", "0"], env, tmp_path)
        for _ in range(2)
    ]
    try:
        urls = [metrics_url(p) for p in procs]
        with http() as client:
            seen = [samples(client, u) for u in urls]
        for values in seen:
            assert values[("qywx_records_pending", frozenset())] == 4
            assert values[("qywx_records_failed", frozenset())] == 1
            assert values[("qywx_store_up", frozenset())] == 1
    finally:
        for p in procs:
            p.stop()


def test_metrics_without_the_extra_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "no_prometheus"
    blocker.mkdir()
    (blocker / "prometheus_client.py").write_text("raise ImportError('blocked for the test')\n")
    env = {**env, "PYTHONPATH": f"{blocker}:{env['PYTHONPATH']}"}
    result = run_qywx(  # a process: PYTHONPATH decides what it can import
        "serve", "--port", "0", "--metrics-port", "0", env=env, cwd=tmp_path, process=True
    )
    assert_one_line_error(
        result, 2, "metrics need prometheus_client: pip install 'qywx-cli[metrics]'"
    )
