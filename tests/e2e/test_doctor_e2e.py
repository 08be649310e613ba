"""`qywx doctor` against a real `qywx serve` and a FakeWeCom on loopback: green, then each
way it breaks."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from qywx_cli.core.doctor import run_doctor
from qywx_cli.core.settings import load_settings
from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, wait_for
from tests.helpers import run_qywx

NAME = "QywxProxyTemp"
SUITE = "tj1234567890abcdef"


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    r = run_qywx("doctor", "--auth", NAME, "--format", "json", *args, env=env)
    return r.returncode, json.loads(r.stdout)


def failing(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"] if not c["ok"]}


def push_ticket(env: dict[str, str], server: Proc) -> None:
    r = run_qywx(
        "simulate-callback", "--auth", NAME, "--url", f"{server.url}/notify/{NAME}", env=env
    )
    assert r.returncode == 0, r.stdout + r.stderr

    def processed() -> bool:
        with Store(env["QYWX_DB"]) as store:
            return store.latest_suite_ticket(SUITE) is not None

    assert wait_for(processed)


def test_all_green_then_server_down(env: dict[str, str], server: Proc) -> None:
    push_ticket(env, server)
    url = f"{server.url}/notify/{NAME}"
    code, doc = doctor(env, "--url", url)
    assert (code, doc["ok"], failing(doc)) == (0, True, {})
    assert [c["name"] for c in doc["checks"]] == [
        "config",
        "secrets",
        "database",
        "secrets_at_rest",
        "suite_ticket",
        "suite_token",
        "licences",
        "handshake",
        "callback",
    ]
    # the probe ticket never displaces the real one
    with Store(env["QYWX_DB"]) as store:
        latest = store.latest_suite_ticket(SUITE)
        assert latest is not None and latest.ticket != "qywx-doctor-probe"

    server.stop()
    code, doc = doctor(env, "--url", url)
    bad = failing(doc)
    assert code == 1 and set(bad) == {"handshake", "callback"}
    assert "cannot connect" in bad["handshake"]["detail"]
    assert "nothing answered" in bad["handshake"]["fix"]

    # A cached suite token does not vouch for WeCom now: doctor asks again.
    code, doc = doctor(dict(env, QYWX_API_BASE="http://127.0.0.1:9/cgi-bin"))
    bad = failing(doc)
    assert code == 1 and set(bad) == {"suite_token"}
    assert "unreachable" in bad["suite_token"]["detail"]


def test_wrong_token_is_named(env: dict[str, str], server: Proc) -> None:
    push_ticket(env, server)
    biz = Path(env["QYWX_AUTHS"]) / NAME / f"{NAME}.json"
    data = json.loads(biz.read_text())
    data["authConfig"]["token"] = "DifferentToken123"
    biz.write_text(json.dumps(data))
    code, doc = doctor(env, "--url", f"{server.url}/notify/{NAME}")
    bad = failing(doc)
    assert code == 1 and "handshake" in bad
    assert "403" in bad["handshake"]["detail"] and "token" in bad["handshake"]["fix"]
    assert "-40001" in bad["handshake"]["detail"]  # the server's own reason
    assert "DifferentToken123" not in json.dumps(doc)


def test_missing_db_and_unset_secret(env: dict[str, str], tmp_path: Path) -> None:
    biz = Path(env["QYWX_AUTHS"]) / NAME / f"{NAME}.json"
    data = json.loads(biz.read_text())
    data["authConfig"]["suiteSecret"] = "env:QYWX_TEST_UNSET_SECRET"
    biz.write_text(json.dumps(data))
    code, doc = doctor(env)
    bad = failing(doc)
    assert code == 1 and set(bad) >= {"secrets"}
    assert "QYWX_TEST_UNSET_SECRET" in bad["secrets"]["detail"]
    r = run_qywx("doctor", "--auth", NAME, env=env)  # text mode: a table and a summary, exit 1
    assert r.returncode == 1 and "✗" in r.stdout


def test_stale_ticket_and_unreachable_api(tmp_path: Path, auths: Path) -> None:
    settings = load_settings(
        auths=auths, db=tmp_path / "q.db", env={"QYWX_API_BASE": "http://127.0.0.1:9/cgi-bin"}
    )
    with Store(settings.db_path) as store:
        store.save_suite_ticket(SUITE, "a-real-looking-ticket", int(time.time()))
    later = time.time() + 3600
    checks = {c.name: c for c in run_doctor(settings, NAME, now=lambda: later)}
    assert not checks["suite_ticket"].ok and "10 minutes" in checks["suite_ticket"].fix
    assert not checks["suite_token"].ok and "get_suite_token" in checks["suite_token"].detail
    assert checks["config"].ok and checks["database"].ok


def test_doctor_and_log_stats_show_unlicensed_and_expiring_licences(
    server: Proc, env: dict[str, str]
) -> None:
    """unlicensed_notify members fail the licences check; an expiry within 30 days is a
    reminder only. log stats lists both."""
    import time

    from qywx_cli.core.store import Licence, Store

    push_ticket(env, server)
    now = time.time()
    with Store(env["QYWX_DB"]) as store:
        store.save_licences(
            "wwa1b2c3d4e5f60a01",
            [Licence("wwa1b2c3d4e5f60a01", "soon", 1, "C1", None, int(now + 3 * 86400), 0.0)],
        )
    code, doc = doctor(env)
    licences = next(c for c in doc["checks"] if c["name"] == "licences")
    assert code == 0 and licences["ok"] and "soon@wwa1b2c3d4e5f60a01" in licences["detail"]
    with Store(env["QYWX_DB"]) as store:
        store.record_unlicensed("wwa1b2c3d4e5f60a01", "lisi", agent_id=1, seen_at=now)
    code, doc = doctor(env)
    assert code == 1 and "lisi@wwa1b2c3d4e5f60a01" in failing(doc)["licences"]["detail"]
    assert "qywx license activate" in failing(doc)["licences"]["fix"]

    stats = run_qywx("log", "stats", "-f", "json", env=env)
    sdoc = json.loads(stats.stdout)
    assert [m["user_id"] for m in sdoc["unlicensed_members"]] == ["lisi"]
    assert [(x["user_id"], x["days_left"]) for x in sdoc["expiring_licences"]] == [("soon", 3.0)]
    text = run_qywx("log", "stats", env={**env, "COLUMNS": "200"})
    assert "used the app unlicensed" in text.stdout and "expiring within 30 days" in text.stdout
