"""What an operator reading the log through pipes and `--follow` relies on."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

from qywx_cli.core import events as ev
from qywx_cli.core.store import Store
from tests.cli.test_log import record
from tests.helpers import QYWX, QYWX_SCRIPT, REPO, run_qywx

SUITE = "tj1234567890abcdef"
LONG_ERROR = "service/get_permanent_code: WeCom errcode 40084: invalid permanent code received"


def failed_record(cli_env: dict[str, str], auths: Path, n: int = 1) -> int:
    with Store(cli_env["QYWX_DB"]) as store:
        rid = record(store, auths, ev.build_event_xml("create_auth", suite_id=SUITE), n=n)
        store.claim_callback(rid, "w")
        store.finish_callback(rid, "failed", LONG_ERROR)
    return rid


def test_piped_log_list_keeps_every_record_on_one_line(
    cli_env: dict[str, str], auths: Path
) -> None:
    ids = [failed_record(cli_env, auths, n) for n in (1, 2)]
    env = {k: v for k, v in cli_env.items() if k != "COLUMNS"}  # a pipe: rich assumes 80
    out = run_qywx("log", "list", env=env).stdout
    for rid in ids:
        line = next(x for x in out.splitlines() if x.startswith(f"│ {rid} "))
        assert "create_auth" in line and "failed" in line and LONG_ERROR in line, line
    narrow = run_qywx("log", "list", env={**env, "COLUMNS": "40"}).stdout
    assert sum(LONG_ERROR in line for line in narrow.splitlines()) == 2


def follow(cli_env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
    proc = subprocess.Popen(
        [*QYWX, "log", "tail", "--follow", "--interval", "0.1", "-f", "json", *args],
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
    return proc, lines


def test_tail_follow_shows_a_record_changing_status(cli_env: dict[str, str], auths: Path) -> None:
    rid = failed_record(cli_env, auths)
    proc, lines = follow(cli_env, "-n", "1")
    try:
        first = json.loads(lines.get(timeout=30))
        assert (first["id"], first["status"]) == (rid, "failed")
        with Store(cli_env["QYWX_DB"]) as store:  # what `qywx retry` does to it
            store.claim_callback(rid, "retry")
            store.finish_callback(rid, "processed")
        changed = json.loads(lines.get(timeout=30))
        assert (changed["id"], changed["status"], changed["attempts"]) == (rid, "processed", 2)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""


def test_tail_status_filters_both_the_backlog_and_the_stream(
    cli_env: dict[str, str], auths: Path
) -> None:
    failed = failed_record(cli_env, auths, 1)
    with Store(cli_env["QYWX_DB"]) as store:
        done = record(store, auths, ev.build_event_xml("suite_ticket", suite_id=SUITE), n=2)
        store.claim_callback(done, "w")
        store.finish_callback(done, "processed")
        received = record(store, auths, ev.build_event_xml("suite_ticket", suite_id=SUITE), n=3)
    backlog = run_qywx("log", "tail", "--status", "failed", "-f", "json", env=cli_env)
    assert [json.loads(x)["id"] for x in backlog.stdout.splitlines()] == [failed]
    proc, lines = follow(cli_env, "--status", "processed", "-n", "5")
    try:
        assert json.loads(lines.get(timeout=30))["id"] == done  # the backlog: it is following
        with Store(cli_env["QYWX_DB"]) as store:
            store.claim_callback(received, "w")
            store.finish_callback(received, "processed")
        shown = json.loads(lines.get(timeout=30))
        assert (shown["id"], shown["status"]) == (received, "processed")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""


def test_stats_warns_once_after_the_tables(cli_env: dict[str, str], auths: Path) -> None:
    """Three sample suites without a ticket were three warning lines printed before the
    tables; the table already says which are stale, so one line follows it."""
    failed_record(cli_env, auths)
    proc = run_qywx("log", "stats", env=cli_env)
    warnings = proc.stderr.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("qywx: warning: "), warnings
    for suite in ("dk7f3a9c2e51b04d18", "dk7f3a9c2e51b04d29", "dk7f3a9c2e51b04d3a"):
        assert suite in warnings[0]
    merged = subprocess.run(
        [*QYWX_SCRIPT, "log", "stats"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert merged[-1] == warnings[0], merged


def test_list_pages_with_before_id_and_stops_at_until(cli_env: dict[str, str], auths: Path) -> None:
    ids = [failed_record(cli_env, auths, n) for n in range(1, 6)]
    page = json.loads(run_qywx("log", "list", "--limit", "2", "-f", "json", env=cli_env).stdout)
    assert [r["id"] for r in page] == ids[:-3:-1]
    more = run_qywx(
        "log", "list", "--limit", "2", "--before-id", str(page[-1]["id"]), "-f", "json",
        env=cli_env,
    )  # fmt: skip
    assert [r["id"] for r in json.loads(more.stdout)] == [ids[2], ids[1]]
    until = run_qywx("log", "list", "--until", "2000-01-01", "-f", "json", env=cli_env)
    assert json.loads(until.stdout) == []
    bad = run_qywx("log", "list", "--until", "soon", env=cli_env)
    assert bad.returncode == 2 and bad.stderr.startswith("qywx: error: --until 'soon'")


def test_a_full_page_says_how_to_see_the_next(cli_env: dict[str, str], auths: Path) -> None:
    """--limit cut the list with nothing to say more records were left out; the text
    output now names the --before-id of the next page (on stderr: stdout stays the table)."""
    ids = [failed_record(cli_env, auths, n) for n in range(1, 4)]
    full = run_qywx("log", "list", "--limit", "2", env=cli_env)
    assert full.stderr.splitlines() == [
        f"more may be older: pass --before-id {ids[1]} for the next page"
    ], full.stderr
    last = run_qywx("log", "list", "--limit", "5", env=cli_env)
    assert last.stderr == ""
    as_json = run_qywx("log", "list", "--limit", "2", "-f", "json", env=cli_env)
    assert as_json.stderr == ""


def test_an_instance_filter_that_names_no_instance_says_so(
    cli_env: dict[str, str], auths: Path
) -> None:
    """`--instance QywxProxyTmp` (a typo) answered only "no callback records match"."""
    failed_record(cli_env, auths)
    typo = run_qywx("log", "list", "--instance", "QywxProxyTmp", env=cli_env)
    assert typo.returncode == 0 and typo.stdout == ""
    line = typo.stderr.strip()
    assert line.startswith("no callback records match"), line
    assert "no instance folder QywxProxyTmp" in line and "QywxProxyTemp" in line, line
    known = run_qywx("log", "list", "--instance", "QywxProxyDefault", env=cli_env)
    assert known.stderr == "no callback records match\n"


def test_export_streams_csv_and_jsonl_oldest_first(cli_env: dict[str, str], auths: Path) -> None:
    import csv
    import io

    ids = [failed_record(cli_env, auths, n) for n in range(1, 4)]
    listed = json.loads(run_qywx("log", "list", "-f", "json", env=cli_env).stdout)[::-1]
    jsonl = run_qywx("log", "export", env=cli_env)
    assert jsonl.returncode == 0, jsonl.stderr
    assert [json.loads(line) for line in jsonl.stdout.splitlines()] == listed
    table = run_qywx("log", "export", "--format", "csv", env=cli_env).stdout
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [int(r["id"]) for r in rows] == ids
    assert rows[0]["last_error"] == LONG_ERROR and rows[0]["corp_id"] == ""
    none = run_qywx("log", "export", "--until", "2000-01-01", "-f", "csv", env=cli_env).stdout
    assert none.splitlines() == [",".join(listed[0])]
