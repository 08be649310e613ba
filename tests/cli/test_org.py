"""``qywx org set-code|show|list`` against a database with authorized corps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qywx_cli.core.store import Store

REPO = Path(__file__).resolve().parents[2]
SUITE = "tj1234567890abcdef"
CORP_A = "wwa1b2c3d4e5f60a01"
CORP_B = "wwa1b2c3d4e5f60b02"
PERMANENT_CODE = "PERMcodeSECRET0123456789abcdefgh"


@pytest.fixture
def env(auths: Path, tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("QYWX_")}
    e.update(
        QYWX_AUTHS=str(auths),
        QYWX_DB=str(tmp_path / "qywx.db"),
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    return e


@pytest.fixture
def corps(env: dict[str, str]) -> None:
    """Two corps that installed the app (what processed create_auth callbacks leave)."""
    with Store(env["QYWX_DB"]) as store:
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


def qywx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "qywx_cli", "org", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert PERMANENT_CODE not in proc.stdout + proc.stderr
    return proc


def test_set_show_and_list(env: dict[str, str], corps: None) -> None:
    proc = qywx(env, "set-code", CORP_A, "Acme-HQ_1", "--format", "json")
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
    shown = json.loads(qywx(env, "show", "ACME-hq_1", "-f", "json").stdout)
    assert shown == doc
    assert qywx(env, "set-code", CORP_B, "beta").returncode == 0
    listed = json.loads(qywx(env, "list", "-f", "json").stdout)
    assert [(d["code"], d["corp_id"]) for d in listed] == [("acme-hq_1", CORP_A), ("beta", CORP_B)]
    text = qywx(env, "list")
    assert "acme-hq_1" in text.stdout and CORP_B in text.stdout


def test_a_code_held_by_another_corp_needs_force(env: dict[str, str], corps: None) -> None:
    assert qywx(env, "set-code", CORP_A, "shared").returncode == 0
    taken = qywx(env, "set-code", CORP_B, "SHARED")
    assert taken.returncode == 1
    assert taken.stderr == (
        f"qywx: error: org code 'shared' already belongs to corp {CORP_A}; "
        "use force to reassign it\n"
    )
    assert json.loads(qywx(env, "show", "shared", "-f", "json").stdout)["corp_id"] == CORP_A
    forced = qywx(env, "set-code", CORP_B, "SHARED", "--force", "-f", "json")
    assert forced.returncode == 0 and json.loads(forced.stdout)["corp_id"] == CORP_B
    # Setting the code a corp already holds again is fine without --force.
    assert qywx(env, "set-code", CORP_B, "shared").returncode == 0


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
    env: dict[str, str], corps: None, args: list[str], code: int, fragment: str
) -> None:
    proc = qywx(env, *args)
    assert (proc.returncode, proc.stdout) == (code, "")
    assert proc.stderr.startswith("qywx: error: ") and proc.stderr.count("\n") == 1
    assert fragment in proc.stderr


def test_empty_list_and_missing_database(env: dict[str, str], corps: None, tmp_path: Path) -> None:
    proc = qywx(env, "list", "-f", "json")
    assert (proc.returncode, json.loads(proc.stdout)) == (0, [])
    env["QYWX_DB"] = str(tmp_path / "absent.db")
    proc = qywx(env, "list")
    assert proc.returncode == 1 and "no database at" in proc.stderr
    assert not (tmp_path / "absent.db").exists()
