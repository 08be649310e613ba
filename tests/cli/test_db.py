"""``qywx db info|upgrade|copy``, and the operator commands on a postgresql:// --db.

A real SQLite file and a real PostgreSQL database (the session's server); the password
is given in the URL itself here, so every run also proves it is never printed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from qywx_cli.core.store import SCHEMA_VERSION, Store
from tests.helpers import assert_one_line_error, run_qywx
from tests.pgserver import PgServer

SUITE = "tj1234567890abcdef"
CORP = "wwa1b2c3d4e5f60a01"
PERMANENT_CODE = "PERMcodeSECRET0123456789abcdefgh"


@pytest.fixture
def pg_url_pw(pg_server: PgServer, pg_url: str) -> str:
    """The fresh database's URL with the password written in it."""
    return pg_url.replace("qywx@", f"qywx:{pg_server.password}@", 1)


def _fill(target: str, n: int = 30) -> None:
    with Store(target) as s:
        for i in range(n):
            rec = s.record_callback(
                instance="QywxProxyTemp",
                kind="command",
                info_type="suite_ticket" if i % 3 else "create_auth",
                suite_id=SUITE,
                corp_id=CORP if i % 3 == 0 else None,
                msg_signature=f"sig{i}",
                timestamp=str(1_700_000_000 + i),
                nonce=f"n{i}",
                envelope=f"<xml>{i}</xml>",
                content_key=f"k{i % 25}",  # the last five are content duplicates
                status="processed" if i % 3 else "received",
                suite_ticket=(SUITE, f"ticket-{i}", 1_700_000_000 + i) if i % 3 else None,
            )
            if i == 4:
                s.claim_callback(rec.id, "w")
                s.finish_callback(rec.id, "failed", "WeCom errcode 40085")
        s.upsert_corp_auth(SUITE, CORP, permanent_code=PERMANENT_CODE, agent_id=1000002)
        s.set_org_code("acme", CORP)
        s.put_token("corp", CORP, "tokenSECRETvalue0123456789", 2e9)


def _run(env: dict[str, str], *args: str, secret: str = "") -> tuple[int, str, str]:
    secrets = [PERMANENT_CODE, "tokenSECRETvalue0123456789", *([secret] if secret else [])]
    out = run_qywx(*args, env=env, secrets=secrets)
    return out.returncode, out.stdout, out.stderr


def test_info_and_upgrade_on_sqlite(cli_env: dict[str, str]) -> None:
    env = {**cli_env}
    code, _, err = _run(env, "db", "info")
    assert code == 1 and "no database at" in err
    code, out, _ = _run(env, "db", "upgrade")
    assert code == 0 and f"schema v0 → v{SCHEMA_VERSION}" in out
    code, out, _ = _run(env, "db", "upgrade")
    assert code == 0 and "already current" in out
    _fill(env["QYWX_DB"])
    code, out, _ = _run(env, "db", "info", "--format", "json")
    info = json.loads(out)
    assert (info["backend"], info["schema_version"]) == ("sqlite", SCHEMA_VERSION)
    assert info["counts"]["callbacks"] == 30 and info["counts"]["org_codes"] == 1
    assert info["size_bytes"] > 0


def test_a_newer_schema_is_refused_by_upgrade_and_serve_in_one_line(
    cli_env: dict[str, str],
) -> None:
    db = cli_env["QYWX_DB"]
    Store(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for args in (("db", "upgrade"), ("serve", "--port", "0")):
        out = run_qywx(*args, env=cli_env, timeout=30)
        assert_one_line_error(out, 1, "is newer than this qywx")


def test_copy_sqlite_to_postgres_is_verified_idempotent_and_resumable(
    cli_env: dict[str, str], pg_server: PgServer, pg_url_pw: str
) -> None:
    env = {**cli_env}
    _fill(env["QYWX_DB"])
    pw = pg_server.password
    code, out, err = _run(
        env,
        "db",
        "copy",
        "--from",
        env["QYWX_DB"],
        "--to",
        pg_url_pw,
        "--format",
        "json",
        secret=pw,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["verified"] is True and report["copied"] == report["counts"]
    assert report["counts"]["callbacks"] == 30 and report["counts"]["suite_tickets"] == 16
    again = json.loads(
        _run(
            env,
            "db",
            "copy",
            "--from",
            env["QYWX_DB"],
            "--to",
            pg_url_pw,
            "--format",
            "json",
            secret=pw,
        )[1]
    )
    assert set(again["copied"].values()) == {0}  # idempotent
    # Interrupted copy: drop the newest rows at the destination and copy again.
    with Store(pg_url_pw) as s:
        ids = [r.id for r in s.list_callbacks(limit=1000)]
    dbname = pg_url_pw.rsplit("/", 1)[1]
    pg_server.psql(f"DELETE FROM suite_tickets WHERE callback_id > {sorted(ids)[19]}", dbname)
    pg_server.psql(f"DELETE FROM callbacks WHERE id > {sorted(ids)[19]}", dbname)
    resumed = json.loads(
        _run(
            env,
            "db",
            "copy",
            "--from",
            env["QYWX_DB"],
            "--to",
            pg_url_pw,
            "--format",
            "json",
            secret=pw,
        )[1]
    )
    assert resumed["copied"]["callbacks"] == 10 and resumed["counts"]["callbacks"] == 30
    # The copy keeps ids and the identity moves past them: a new record gets a new id.
    with Store(pg_url_pw) as s:
        with Store(env["QYWX_DB"]) as src:
            assert s.list_callbacks(limit=100) == src.list_callbacks(limit=100)
        new = s.record_callback(
            instance="QywxProxyTemp",
            kind="command",
            info_type="suite_ticket",
            suite_id=SUITE,
            corp_id=None,
            msg_signature="new",
            timestamp="1",
            nonce="new",
            envelope="<xml/>",
            content_key="brand-new",
        )
        assert new.id == 31


def test_copy_refuses_a_missing_source_and_the_same_database(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    code, _, err = _run(
        cli_env, "db", "copy", "--from", str(tmp_path / "nope.db"), "--to", str(tmp_path / "x.db")
    )
    assert code == 1 and "no database at" in err
    _fill(cli_env["QYWX_DB"], 1)
    code, _, err = _run(
        cli_env, "db", "copy", "--from", cli_env["QYWX_DB"], "--to", cli_env["QYWX_DB"]
    )
    assert code == 2 and "same database" in err


@pytest.mark.parametrize("how", ["flag", "env", "toml"])
def test_every_operator_command_works_on_a_postgresql_url(
    cli_env: dict[str, str], pg_server: PgServer, pg_url_pw: str, tmp_path: Path, how: str
) -> None:
    """log, retry, org, login-config, doctor and db on PostgreSQL, the URL given three
    ways; the URL's password appears in no output."""
    _fill(pg_url_pw)
    env = {k: v for k, v in cli_env.items() if k != "QYWX_DB"}
    root: list[str] = []
    cwd = tmp_path
    if how == "flag":
        root = ["--db", pg_url_pw]
    elif how == "env":
        env["QYWX_DB"] = pg_url_pw
    else:
        (tmp_path / "qywx.toml").write_text(f'db = "{pg_url_pw}"\n')
        root = ["--config", str(tmp_path / "qywx.toml")]
    pw = pg_server.password
    checks: list[tuple[list[str], int, str]] = [
        (["db", "info", "--format", "json"], 0, '"backend": "postgresql"'),
        (["log", "list", "--format", "json"], 0, "create_auth"),
        (["log", "list", "--status", "failed"], 0, "40085"),
        (["log", "show", "1", "--format", "json"], 0, '"id": 1'),
        (["log", "stats", "--format", "json"], 0, '"failed": 1'),
        (["log", "tail", "-n", "3"], 0, "suite_ticket"),
        (["org", "show", "ACME"], 0, CORP),
        (["retry", "--failed", "--format", "json"], 1, "still failed: 5"),
        (["doctor", "--auth", "QywxProxyTemp"], 1, "(postgresql): schema v"),
    ]
    for args, want_code, want in checks:
        out = run_qywx(*root, *args, env=env, cwd=cwd, secrets=[PERMANENT_CODE, pw])
        assert out.returncode == want_code, (args, out.stdout, out.stderr)
        assert want in out.stdout + out.stderr, (args, out.stdout, out.stderr)


def test_info_reports_an_older_schema_without_upgrading_it(cli_env: dict[str, str]) -> None:
    """`db info` opened the store, which migrates, so it always answered "schema v5" and
    upgraded the file as a side effect: under hosts still running the older qywx too."""
    from qywx_cli.core.store.sqlite import MIGRATIONS

    db = Path(cli_env["QYWX_DB"])
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("COMMIT")
    conn.close()
    code, out, err = _run(cli_env, "db", "info", "--format", "json")
    assert code == 0, err
    info = json.loads(out)
    assert (info["schema_version"], info["latest_schema_version"]) == (1, SCHEMA_VERSION)
    text = run_qywx("db", "info", env=cli_env)
    assert f"schema v1 (this qywx: v{SCHEMA_VERSION})" in text.stdout
    assert "qywx db upgrade" in text.stderr
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1  # untouched
    conn.close()
    code, out, _ = _run(cli_env, "db", "upgrade")
    assert code == 0 and f"schema v1 → v{SCHEMA_VERSION}" in out
