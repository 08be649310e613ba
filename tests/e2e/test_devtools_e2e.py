"""simulate-callback and decrypt against a real `qywx serve` and a FakeWeCom on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.events import EVENT_NAMES
from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import one_json, run_qywx

pytestmark = pytest.mark.e2e


def simulate_json(
    env: dict[str, str], cwd: Path, url: str, *args: str, code: int = 0
) -> dict[str, Any]:
    proc = run_qywx(
        "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, "-f", "json", *args,
        env=env, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return one_json(proc)


def test_qywx_serve_passes_every_devtools_check(
    server: Proc, env: dict[str, str], tmp_path: Path
) -> None:
    url = f"{server.url}/notify/QywxProxyTemp"

    def handled() -> bool:
        with Store(env["QYWX_DB"]) as store:
            return all(r.status != "received" for r in store.list_callbacks(limit=1000))

    for event in EVENT_NAMES:
        doc = simulate_json(env, tmp_path, url, "--event", event)
        assert doc["ok"] and doc["verdict"] == "ok", (event, doc["reason"])
        assert doc["response"] == {**doc["response"], "status": 200, "body": "success"}
        # One at a time, as WeCom sends them: change_auth comes for an installed corp, so
        # the create_auth before it must have been handled (the server's workers would
        # otherwise be free to take the two in either order).
        assert wait_for(handled), event

    handshake = simulate_json(env, tmp_path, url, "--verify-url")
    assert handshake["ok"] and handshake["response"]["body"] == handshake["request"]["plaintext"]
    # The bare /notify route finds the instance by whose token verifies.
    assert simulate_json(env, tmp_path, f"{server.url}/notify")["ok"]

    tamper = simulate_json(env, tmp_path, url, "--tamper", "all")
    assert tamper["baseline"]["ok"] and tamper["all_rejected"]
    statuses = {c["case"]: c["status"] for c in tamper["cases"]}
    verdicts = {c["case"]: c["verdict"] for c in tamper["cases"]}
    assert verdicts.pop("replay") == "acknowledged, handled once", statuses
    assert set(verdicts.values()) == {"rejected"}, statuses
    assert statuses["replay"] == 200 and statuses["truncated"] == 400

    load = simulate_json(env, tmp_path, url, "--count", "50", "--concurrency", "4")
    assert (load["sent"], load["ok"], load["wrong_reply"], load["errors"]) == (50, 50, 0, 0)
    assert load["latency_ms"]["p50"] > 0 and load["throughput_rps"] > 0

    # Every simulated command callback was real enough to be handled to the end.
    with Store(env["QYWX_DB"]) as store:

        def settled() -> list[Any] | None:
            recs = store.list_callbacks(instance="QywxProxyTemp", limit=1000)
            return recs if recs and all(r.status != "received" for r in recs) else None

        records = wait_for(settled)
        assert records, "callbacks still being handled"
        by_type: dict[str, set[str]] = {}
        for rec in records:
            by_type.setdefault(rec.info_type or "?", set()).add(rec.status)
        for event in EVENT_NAMES:
            assert "processed" in by_type.get(event, set()), (event, by_type)
        assert store.latest_suite_ticket("tj1234567890abcdef") is not None


def test_dry_run_replays_against_qywx_serve_and_decrypts(
    server: Proc, env: dict[str, str], tmp_path: Path
) -> None:
    url = f"{server.url}/notify/QywxProxyTemp"
    proc = run_qywx(
        "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, "--dry-run", "-f", "json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    request = json.loads(proc.stdout)
    with http() as client:
        first = client.request(
            request["method"], request["url"], headers=request["headers"], content=request["body"]
        )
        again = client.request(
            request["method"], request["url"], headers=request["headers"], content=request["body"]
        )
    assert (first.status_code, first.text) == (200, "success")
    assert (again.status_code, again.text) == (200, "success")  # replay: idempotent

    opened = run_qywx(
        "decrypt", "--auth", "QywxProxyTemp", "--url", request["url"], "-", "-f", "json",
        "--show-secrets",
        env=env, cwd=tmp_path, input=request["body"].encode(),
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    doc = json.loads(opened.stdout)
    assert doc["plaintext"] == request["plaintext"] and doc["receive_id_kind"] == "suite"
