"""``qywx log list|show|tail|stats|prune`` as a subprocess against a real SQLite log."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.config import find_instance
from qywx_cli.core.store import Store
from qywx_cli.core.store.records import FOLD_AFTER
from tests.helpers import QYWX, REPO, Clock, assert_one_line_error, run_qywx

NOW = time.time()
"""The wall clock when the running test began (see _now): the CLI reads the real clock."""
DAY = 86400.0
TICKET = "TICKETsecretVALUE0123456789abcdef"
AUTH_CODE = "AUTHCODE-wwa1b2c3d4e5f60a01-" + "s" * 64
TAIL_OPTS = ("--interval", "0.1", "--format", "json")
LIST_KEYS = {
    "id",
    "received_at",
    "instance",
    "kind",
    "info_type",
    "corp_id",
    "status",
    "attempts",
    "last_error",
    "folded",
}


def no_secrets(proc: subprocess.CompletedProcess[str]) -> None:
    """No ticket or AuthCode of the log (run_qywx checks the sample secrets)."""
    for secret in (TICKET, AUTH_CODE):
        assert secret not in proc.stdout + proc.stderr


def record(store: Store, auths: Path, xml: str, *, name: str = "QywxProxyTemp", n: int) -> int:
    """Log a callback as serve does: its real ciphertext, encrypted with the instance's key."""
    inst = find_instance(name, auths)
    env = inst.crypto().encrypt_msg(xml, inst.suite_id, "1700000000", str(n))
    event = ev.parse_event(xml)
    rec = store.record_callback(
        instance=name,
        kind=event.kind,
        info_type=event.info_type,
        suite_id=inst.suite_id,
        corp_id=event.corp_id,
        msg_signature=env.msg_signature,
        timestamp=env.timestamp,
        nonce=env.nonce,
        envelope=env.encrypt,
        content_key=None,
    )
    return rec.id


@pytest.fixture(autouse=True)
def _now() -> None:
    """Take NOW as each test starts, not when the module is imported: under a long or
    parallel run that can be minutes before the test, and ages are checked to the minute."""
    global NOW
    NOW = time.time()


@pytest.fixture
def log(cli_env: dict[str, str], auths: Path) -> dict[str, int]:
    """Four records: an old processed ticket, a failed create_auth, two recent others."""
    clock = Clock(NOW - 3 * DAY)
    suite = "tj1234567890abcdef"
    ids: dict[str, int] = {}
    with Store(cli_env["QYWX_DB"], now=clock) as store:
        ticket_xml = ev.build_event_xml(
            "suite_ticket", suite_id=suite, overrides={"SuiteTicket": TICKET}
        )
        ids["ticket"] = record(store, auths, ticket_xml, n=1)
        store.claim_callback(ids["ticket"], "w")
        store.finish_callback(ids["ticket"], "processed")
        clock.t = NOW - 600
        create_xml = ev.build_event_xml(
            "create_auth", suite_id=suite, overrides={"AuthCode": AUTH_CODE}
        )
        ids["create"] = record(store, auths, create_xml, n=2)
        store.claim_callback(ids["create"], "w")
        store.finish_callback(
            ids["create"], "failed", "service/get_permanent_code: WeCom errcode 40084: invalid"
        )
        clock.t = NOW - 300
        cancel_xml = ev.build_event_xml("cancel_auth", suite_id=suite, corp_id="wwcorp0000000001")
        ids["cancel"] = record(store, auths, cancel_xml, n=3)
        clock.t = NOW - 60
        ids["other"] = record(
            store,
            auths,
            ev.build_event_xml("suite_ticket", suite_id="dk7f3a9c2e51b04d18"),
            name="QywxProxyCompanyA",
            n=4,
        )
        store.save_suite_ticket(suite, TICKET, int(NOW))
    return ids


# -- a row changed outside qywx -------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "shown"),
    [
        ("received_at = 'garbage'", "received_at", "not a time: 'garbage'"),
        ("received_at = 1e300", "received_at", "not a time: '1e+300'"),
        ("processed_at = -1e20", "processed_at", "not a time: '-1e+20'"),
        ("kind = x'00ff', status = x'41', info_type = x'ff'", "kind", "b'\\x00\\xff'"),
    ],
    ids=["text-time", "huge-time", "negative-time", "bytes"],
)
def test_a_row_written_outside_qywx_is_shown_not_an_internal_error(
    cli_env: dict[str, str], log: dict[str, int], change: str, field: str, shown: str
) -> None:
    """SQLite stores any type in any column: a row someone edited by hand holds text
    where a time belongs, or bytes. Every reader still lists the log and shows the value;
    each was "internal error", exit 70."""
    import sqlite3

    db = sqlite3.connect(cli_env["QYWX_DB"])
    with db:
        db.execute(f"UPDATE callbacks SET {change} WHERE id = ?", (log["create"],))
    db.close()
    rid = str(log["create"])
    for args in (
        ("log", "list"),
        ("log", "list", "-f", "json"),
        ("log", "show", rid),
        ("log", "tail", "-n", "10"),
        ("log", "tail", "-n", "10", "-f", "json"),
        ("log", "export"),
        ("log", "export", "--format", "csv"),
        ("log", "stats", "-f", "json"),
    ):
        result = run_qywx(*args, env=cli_env)
        assert result.returncode == 0 and "error" not in result.stderr, (args, result.stderr)
        assert args[1] in ("show", "stats") or str(log["other"]) in result.stdout, args
    assert shown in run_qywx("log", "show", rid, env=cli_env).stdout
    doc = json.loads(run_qywx("log", "show", rid, "-f", "json", env=cli_env).stdout)
    assert doc[field] == shown


# -- no database ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["list"], ["stats"], ["tail"], ["show", "1"]])
def test_a_missing_database_is_reported_and_not_created(
    cli_env: dict[str, str], command: list[str]
) -> None:
    proc = run_qywx("log", *command, env=cli_env)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"qywx: error: no database at {cli_env['QYWX_DB']}; run qywx serve first or pass --db\n"
    )
    assert proc.stdout == ""
    assert not Path(cli_env["QYWX_DB"]).exists()


# -- list ----------------------------------------------------------------------------------


def test_list_json_is_newest_first_with_the_contract_keys(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    proc = run_qywx("log", "list", "--format", "json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["id"] for r in rows] == [log["other"], log["cancel"], log["create"], log["ticket"]]
    assert all(set(r) == LIST_KEYS for r in rows)
    failed = rows[2]
    assert failed["status"] == "failed" and "40084" in failed["last_error"]
    received = datetime.fromisoformat(failed["received_at"])
    assert received.utcoffset() == timedelta(0)
    assert abs(received.timestamp() - (NOW - 600)) < 0.01
    no_secrets(proc)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--status", "failed"], ["create"]),
        (["--event", "suite_ticket"], ["other", "ticket"]),
        (["--corp", "wwcorp0000000001"], ["cancel"]),
        (["--instance", "QywxProxyCompanyA"], ["other"]),
        (["--since", "1d"], ["other", "cancel", "create"]),
        (["--since", "7m"], ["other", "cancel"]),
        (["--event", "suite_ticket", "--since", "2h"], ["other"]),
        (["--limit", "2"], ["other", "cancel"]),
    ],
)
def test_list_filters(
    cli_env: dict[str, str], log: dict[str, int], args: list[str], expected: list[str]
) -> None:
    proc = run_qywx("log", "list", "-f", "json", *args, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in json.loads(proc.stdout)] == [log[k] for k in expected]


def test_list_since_accepts_dates_and_iso_times(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(NOW - 2 * DAY))
    proc = run_qywx("log", "list", "-f", "json", "--since", day, env=cli_env)
    assert len(json.loads(proc.stdout)) == 3
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(NOW - 450))
    proc = run_qywx("log", "list", "-f", "json", "--since", iso, env=cli_env)
    assert [r["id"] for r in json.loads(proc.stdout)] == [log["other"], log["cancel"]]


@pytest.mark.parametrize("args", [["--since", "yesterday"], ["--status", "lost"], ["--limit", "0"]])
def test_list_usage_errors_exit_2_with_one_line(
    cli_env: dict[str, str], log: dict[str, int], args: list[str]
) -> None:
    assert_one_line_error(run_qywx("log", "list", *args, env=cli_env), 2)


def test_list_text_is_a_table(cli_env: dict[str, str], log: dict[str, int]) -> None:
    proc = run_qywx("log", "list", env=cli_env)
    assert proc.returncode == 0
    assert "Callback log, newest first (4 shown)" in proc.stdout
    assert "create_auth" in proc.stdout and "failed" in proc.stdout


# -- show ----------------------------------------------------------------------------------


def test_show_json_is_the_whole_record_with_the_envelope_encrypted(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    proc = run_qywx("log", "show", str(log["ticket"]), "--format", "json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    with Store(cli_env["QYWX_DB"]) as store:
        stored = store.get_callback(log["ticket"])
    assert doc["envelope"] == stored.envelope
    assert (doc["msg_signature"], doc["nonce"], doc["status"]) == (
        stored.msg_signature,
        "1",
        "processed",
    )
    assert LIST_KEYS | {"suite_id", "processed_at", "duplicate_of", "content_key"} <= set(doc)
    assert (doc["folded"], doc["folded_at"]) == (0, None)
    assert "decrypted" not in doc
    no_secrets(proc)


def test_show_decrypt_masks_ticket_and_auth_code(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    for key, secret, field in (
        ("ticket", TICKET, "SuiteTicket"),
        ("create", AUTH_CODE, "AuthCode"),
    ):
        proc = run_qywx("log", "show", str(log[key]), "--decrypt", "-f", "json", env=cli_env)
        assert proc.returncode == 0, proc.stderr
        dec = json.loads(proc.stdout)["decrypted"]
        assert dec["signature_valid"] is True
        assert dec["receive_id"] == "tj1234567890abcdef" and dec["receive_id_kind"] == "suite"
        assert dec["fields"][field] == f"{secret[:3]}***{secret[-3:]}"
        assert f"<{field}><![CDATA[{secret[:3]}***{secret[-3:]}]]>" in dec["plaintext"]
        no_secrets(proc)
        text = run_qywx("log", "show", str(log[key]), "--decrypt", env=cli_env)
        assert text.returncode == 0 and field in text.stdout
        no_secrets(text)


def test_show_secrets_reveals_them_on_request(cli_env: dict[str, str], log: dict[str, int]) -> None:
    proc = run_qywx(
        "log", "show", str(log["ticket"]), "--decrypt", "--show-secrets", "-f", "json", env=cli_env
    )
    dec = json.loads(proc.stdout)["decrypted"]
    assert dec["fields"]["SuiteTicket"] == TICKET and TICKET in dec["plaintext"]
    proc = run_qywx("log", "show", str(log["ticket"]), "--show-secrets", env=cli_env)
    assert proc.returncode == 2


def test_show_unknown_id(cli_env: dict[str, str], log: dict[str, int]) -> None:
    proc = run_qywx("log", "show", "999", env=cli_env)
    assert proc.returncode == 1
    assert proc.stderr == "qywx: error: no callback record with id 999\n"
    huge = run_qywx("log", "show", str(2**63), env=cli_env)  # beyond SQLite's INTEGER
    assert (huge.returncode, huge.stderr) == (
        1,
        f"qywx: error: no callback record with id {2**63}\n",
    )


# -- tail ----------------------------------------------------------------------------------


def test_tail_prints_the_latest_records_oldest_first(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    proc = run_qywx("log", "tail", "-n", "2", "--format", "json", env=cli_env)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [log["cancel"], log["other"]]
    text = run_qywx("log", "tail", "-n", "1", env=cli_env)
    assert text.stdout.split()[0] == str(log["other"])


def test_tail_follow_streams_new_records_and_ctrl_c_exits_0(
    cli_env: dict[str, str], log: dict[str, int], auths: Path
) -> None:
    proc = subprocess.Popen(
        [*QYWX, "log", "tail", "-n", "1", "--follow", *TAIL_OPTS],
        env=cli_env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert json.loads(lines.get(timeout=10))["id"] == log["other"]
        with Store(cli_env["QYWX_DB"]) as store:
            new_id = record(
                store,
                auths,
                ev.build_event_xml("suite_ticket", suite_id="tj1234567890abcdef"),
                n=99,
            )
        arrived = json.loads(lines.get(timeout=10))
        assert (arrived["id"], arrived["info_type"]) == (new_id, "suite_ticket")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
    assert code == 0, proc.stderr.read() if proc.stderr else ""


# -- stats ---------------------------------------------------------------------------------


def test_stats_json_counts_failures_and_ticket_freshness(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    proc = run_qywx("log", "stats", "--format", "json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) >= {"total", "by_status", "by_event", "failures", "suite_tickets"}
    assert doc["total"] == 4
    assert doc["by_status"] == {"processed": 1, "failed": 1, "received": 2}
    assert doc["by_event"] == {"suite_ticket": 2, "create_auth": 1, "cancel_auth": 1}
    assert doc["failures"] == [
        {"error": "service/get_permanent_code: WeCom errcode 40084: invalid", "count": 1}
    ]
    tickets = {t["suite_id"]: t for t in doc["suite_tickets"]}
    assert set(tickets) == {
        "tj1234567890abcdef",
        "dk7f3a9c2e51b04d18",
        "dk7f3a9c2e51b04d29",
        "dk7f3a9c2e51b04d3a",
    }
    fresh = tickets["tj1234567890abcdef"]
    assert fresh["stale"] is False and 0 <= fresh["age_seconds"] < 120
    missing = tickets["dk7f3a9c2e51b04d18"]
    assert missing == {
        "suite_id": "dk7f3a9c2e51b04d18",
        "received_at": None,
        "age_seconds": None,
        "stale": True,
    }
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 1
    assert "every 10 minutes" in warnings[0] and "tj1234567890abcdef" not in warnings[0]
    no_secrets(proc)


def test_stats_warns_about_an_old_ticket_and_honours_since(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    with Store(cli_env["QYWX_DB"], now=Clock(NOW - 3600)) as store:
        store.save_suite_ticket("dk7f3a9c2e51b04d18", "old-ticket-123456", int(NOW - 3600))
    proc = run_qywx("log", "stats", "--since", "2h", env=cli_env)
    assert proc.returncode == 0
    assert "3 callback record(s) since" in proc.stdout
    old = [w for w in proc.stderr.splitlines() if "dk7f3a9c2e51b04d18" in w]
    assert len(old) == 1 and "dk7f3a9c2e51b04d18 (1h 0m old)" in old[0]


def test_log_list_by_kind(cli_env: dict[str, str], auths: Path) -> None:
    """Typed data callbacks (the app's own URL) are listed apart with --kind data."""
    enter = (
        "<xml><ToUserName><![CDATA[wwa1b2c3d4e5f60a01]]></ToUserName><FromUserName>"
        "<![CDATA[zhangsan]]></FromUserName><CreateTime>1408091189</CreateTime><MsgType>"
        "<![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event><AgentID>1</AgentID>"
        "</xml>"
    )
    with Store(cli_env["QYWX_DB"]) as store:
        record(store, auths, ev.build_event_xml("suite_ticket", suite_id="tj1234567890abcdef"), n=1)
        data_id = record(store, auths, enter, n=2)
    listed = run_qywx("log", "list", "--kind", "data", "-f", "json", env=cli_env)
    docs = json.loads(listed.stdout)
    assert [(d["id"], d["kind"], d["info_type"]) for d in docs] == [
        (data_id, "data", "enter_agent")
    ]
    bad = run_qywx("log", "list", "--kind", "nope", env=cli_env)
    assert bad.returncode == 2


# -- folded refusals -------------------------------------------------------------------------


def _stale_flood(cli_env: dict[str, str], copies: int) -> list[int]:
    """``copies`` stale copies of one request, recorded as serve records them."""
    with Store(cli_env["QYWX_DB"]) as store:
        return [
            store.record_callback(
                instance="QywxProxyTemp",
                kind="command",
                info_type=None,
                suite_id=None,
                corp_id=None,
                msg_signature=f"s{i}",
                timestamp="1",
                nonce="n",
                envelope="QUJD",
                content_key=None,
                status="rejected",
                last_error="timestamp is more than 300 s from now (stale or replayed)",
            ).id
            for i in range(copies)
        ]


def test_list_show_and_tail_tell_how_many_refusals_were_folded(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    ids = _stale_flood(cli_env, FOLD_AFTER + 7)
    kept = ids[FOLD_AFTER - 1]
    assert set(ids[FOLD_AFTER:]) == {kept}
    listed = json.loads(run_qywx("log", "list", "--format", "json", env=cli_env).stdout)
    newest = next(r for r in listed if r["status"] == "rejected")
    assert (newest["id"], newest["folded"]) == (kept, 7)
    text = run_qywx("log", "list", "--status", "rejected", env=cli_env).stdout
    assert "rejected (+7 similar folded)" in text
    shown = json.loads(run_qywx("log", "show", str(kept), "-f", "json", env=cli_env).stdout)
    assert shown["folded"] == 7 and shown["folded_at"] is not None
    assert "(+7 similar folded)" in run_qywx("log", "show", str(kept), env=cli_env).stdout
    assert "(+7 similar folded)" in run_qywx("log", "tail", "-n", "1", env=cli_env).stdout


# -- prune ---------------------------------------------------------------------------------


def test_prune_dry_run_then_prune_keeps_what_is_owed(
    cli_env: dict[str, str], log: dict[str, int]
) -> None:
    dry = run_qywx("log", "prune", "--older-than", "1d", "--dry-run", "-f", "json", env=cli_env)
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert (doc["dry_run"], doc["deleted"], doc["total"]) == (True, {"processed": 1}, 1)
    assert doc["older_than_seconds"] == 86400
    assert doc["statuses"] == ["processed", "duplicate", "rejected", "unknown"]
    with Store(cli_env["QYWX_DB"]) as store:
        assert len(store.list_callbacks()) == 4
    done = run_qywx("log", "prune", "--older-than", "1d", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "deleted 1 record(s) received before" in done.stderr
    assert ": 1 processed" in done.stderr
    with Store(cli_env["QYWX_DB"]) as store:
        left = {r.id for r in store.list_callbacks()}
    # the failed create_auth (10 min old) and the rest stay; only the old ticket went
    assert left == {log["create"], log["cancel"], log["other"]}
    none = run_qywx("log", "prune", "--older-than", "2m", "--status", "rejected", env=cli_env)
    assert "deleted 0 record(s)" in none.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "30"], "--older-than '30': use an age with a unit"),
        (["--older-than", "soon"], "--older-than 'soon': use an age with a unit"),
        (["--older-than", "0d"], "the age must be more than zero"),
        (["--older-than", "30d", "--status", "failed"], "failed records are kept until"),
        (["--older-than", "30d", "--status", "received"], "received records are kept until"),
        (["--older-than", "30d", "--status", "processed,bogus"], "'bogus': not a status"),
    ],
)
def test_prune_usage_errors_are_one_line(
    cli_env: dict[str, str], log: dict[str, int], args: list[str], message: str
) -> None:
    proc = run_qywx("log", "prune", *args, env=cli_env)
    assert_one_line_error(proc, 2, message)
    with Store(cli_env["QYWX_DB"]) as store:
        assert len(store.list_callbacks()) == 4
