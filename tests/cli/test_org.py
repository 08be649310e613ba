"""``qywx org set-code|show|list`` against a database with authorized corps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from qywx_cli.core.store import Store
from tests.helpers import assert_one_line_error, run_qywx

SUITE = "tj1234567890abcdef"
CORP_A = "wwa1b2c3d4e5f60a01"
CORP_B = "wwa1b2c3d4e5f60b02"
PERMANENT_CODE = "PERMcodeSECRET0123456789abcdefgh"


@pytest.fixture
def corps(cli_env: dict[str, str]) -> None:
    """Two corps that installed the app (what processed create_auth callbacks leave)."""
    with Store(cli_env["QYWX_DB"]) as store:
        for n, corp in enumerate((CORP_A, CORP_B)):
            store.upsert_corp_auth(
                SUITE,
                corp,
                permanent_code=f"{PERMANENT_CODE}{n}",
                agent_id=1000002 + n,
                corp_name=f"Corp {n}",
            )
        store.upsert_corp_auth(SUITE, "wwcancelled0000001", permanent_code="x" * 32, agent_id=9)
        store.cancel_corp_auth(SUITE, "wwcancelled0000001")


def org(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``qywx org ARGS``; no permanent code is ever shown."""
    return run_qywx("org", *args, env=env, secrets=[PERMANENT_CODE])


def test_set_show_and_list(cli_env: dict[str, str], corps: None) -> None:
    proc = org(cli_env, "set-code", CORP_A, "Acme-HQ_1", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {k: doc[k] for k in ("code", "corp_id", "agent_id", "suite_id", "state")} == {
        "code": "acme-hq_1",
        "corp_id": CORP_A,
        "agent_id": 1000002,
        "suite_id": SUITE,
        "state": "active",
    }
    assert doc["created_at"].endswith("+00:00")
    shown = json.loads(org(cli_env, "show", "ACME-hq_1", "-f", "json").stdout)
    assert shown == doc
    assert org(cli_env, "set-code", CORP_B, "beta").returncode == 0
    listed = json.loads(org(cli_env, "list", "-f", "json").stdout)
    assert [(d["code"], d["corp_id"]) for d in listed] == [("acme-hq_1", CORP_A), ("beta", CORP_B)]
    text = org(cli_env, "list")
    assert "acme-hq_1" in text.stdout and CORP_B in text.stdout


def test_a_code_held_by_another_corp_needs_force(cli_env: dict[str, str], corps: None) -> None:
    assert org(cli_env, "set-code", CORP_A, "shared").returncode == 0
    taken = org(cli_env, "set-code", CORP_B, "SHARED")
    assert taken.returncode == 1
    assert taken.stderr == (
        f"qywx: error: org code 'shared' already belongs to corp {CORP_A}; "
        "reassign it with --force (force=True in Python)\n"
    )
    assert json.loads(org(cli_env, "show", "shared", "-f", "json").stdout)["corp_id"] == CORP_A
    forced = org(cli_env, "set-code", CORP_B, "SHARED", "--force", "-f", "json")
    assert forced.returncode == 0 and json.loads(forced.stdout)["corp_id"] == CORP_B
    # Setting the code a corp already holds again is fine without --force.
    assert org(cli_env, "set-code", CORP_B, "shared").returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["set-code", CORP_A, "has space"], 2, "letters, digits"),
        (["set-code", CORP_A, "x" * 65], 2, "1-64 characters"),
        (["set-code", "wwnever0000000001", "fresh"], 1, "no active authorization"),
        (["set-code", "wwcancelled0000001", "gone"], 1, "no active authorization"),
        (["show", "missing"], 1, "no org code 'missing'"),
    ],
)
def test_refusals_are_one_line(
    cli_env: dict[str, str], corps: None, args: list[str], code: int, fragment: str
) -> None:
    assert_one_line_error(org(cli_env, *args), code, fragment)


def test_empty_list_and_missing_database(
    cli_env: dict[str, str], corps: None, tmp_path: Path
) -> None:
    proc = org(cli_env, "list", "-f", "json")
    assert (proc.returncode, json.loads(proc.stdout)) == (0, [])
    cli_env["QYWX_DB"] = str(tmp_path / "absent.db")
    proc = org(cli_env, "list")
    assert proc.returncode == 1 and "no database at" in proc.stderr
    assert not (tmp_path / "absent.db").exists()


def test_org_unset_removes_a_code(cli_env: dict[str, str]) -> None:
    from qywx_cli.core.store import open_store

    with open_store(cli_env["QYWX_DB"]) as store:
        store.upsert_corp_auth("tj1234567890abcdef", "wwa1b2c3d4e5f60a01", state="active")
        store.set_org_code("acme", "wwa1b2c3d4e5f60a01")
    gone = run_qywx("org", "unset", "ACME", "-f", "json", env=cli_env)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["corp_id"] == "wwa1b2c3d4e5f60a01"
    again = run_qywx("org", "unset", "acme", env=cli_env)
    assert again.returncode == 1 and again.stderr.startswith("qywx: error: no org code 'acme'")
