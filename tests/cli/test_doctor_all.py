"""``qywx doctor --all``: every instance's checks, then gettoken for every authorized corp,
against a real database and the fake WeCom on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.app import App
from qywx_cli.core.store import open_store
from tests.helpers import (
    CallbackSender,
    LoopbackWeCom,
    assert_one_line_error,
    one_json,
    run_qywx,
)

TEMP, COMPANY_A = "QywxProxyTemp", "QywxProxyCompanyA"
SUITE_TEMP, SUITE_A = "tj1234567890abcdef", "dk7f3a9c2e51b04d18"
GOOD, BROKEN, GONE = "wwgood0000000001", "wwbroken000000002", "wwgone0000000003"


@pytest.fixture
def two(auths: Path, wecom_env: dict[str, str], loopback_wecom: LoopbackWeCom) -> dict[str, str]:
    """Two instances, each with a fresh suite_ticket; GOOD installed Temp, BROKEN
    CompanyA, GONE installed Temp and cancelled."""
    for other in ("QywxProxyCompanyB", "QywxProxyDefault"):
        shutil.rmtree(auths / other)
    app = App(
        auths, db=wecom_env["QYWX_DB"], api_base=loopback_wecom.api_base, env={}, background=False
    )
    temp, company = CallbackSender(app, TEMP), CallbackSender(app, COMPANY_A)
    temp.send("suite_ticket")
    company.send("suite_ticket")
    temp.send("create_auth", GOOD)
    company.send("create_auth", BROKEN)
    temp.send("create_auth", GONE)
    temp.send("cancel_auth", GONE)
    app.close()
    return wecom_env


def gettoken_calls(wecom: LoopbackWeCom) -> int:
    return int(wecom.state()["calls"].get("gettoken", 0))


def doctor_all(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = run_qywx("doctor", "--all", "--format", "json", env=env)
    assert result.stderr == "", result.stderr
    return result.returncode, one_json(result)


def test_every_instance_and_every_corp(two: dict[str, str], loopback_wecom: LoopbackWeCom) -> None:
    before = gettoken_calls(loopback_wecom)
    code, doc = doctor_all(two)
    assert (code, doc["ok"]) == (0, True), doc
    assert [r["instance"] for r in doc["instances"]] == [COMPANY_A, TEMP]
    assert all(r["ok"] for r in doc["instances"])
    corps = {c["corp_id"]: c for c in doc["corps"]}
    assert {k: (c["status"], c["suite_id"]) for k, c in corps.items()} == {
        BROKEN: ("ok", SUITE_A),
        GOOD: ("ok", SUITE_TEMP),
        GONE: ("skipped", SUITE_TEMP),
    }
    assert corps[GOOD]["instances"] == [TEMP] and corps[GOOD]["errcode"] is None
    # doctor asks WeCom now for each active corp, never trusting the cache
    assert gettoken_calls(loopback_wecom) == before + 2
    assert doc["summary"]["failed"] == 0 and doc["summary"]["skipped"] == 1


def test_one_corp_refused_fails_the_verdict_with_its_errcode(
    two: dict[str, str], loopback_wecom: LoopbackWeCom
) -> None:
    with open_store(two["QYWX_DB"]) as store:  # the code WeCom holds is no longer this one
        store.upsert_corp_auth(SUITE_A, BROKEN, permanent_code="superseded-permanent-code")
    code, doc = doctor_all(two)
    assert (code, doc["ok"]) == (1, False)
    assert all(r["ok"] for r in doc["instances"])  # the instances themselves are fine
    corps = {c["corp_id"]: c for c in doc["corps"]}
    broken = corps[BROKEN]
    assert (broken["status"], broken["errcode"]) == ("failed", 40001)
    assert broken["detail"] == "gettoken refused: errcode 40001 (invalid credential)"
    assert "重置Secret" in broken["fix"]
    assert corps[GOOD]["status"] == "ok" and corps[GONE]["status"] == "skipped"
    summary = doc["summary"]
    assert (summary["failed"], summary["skipped"]) == (1, 1)
    assert "superseded-permanent-code" not in str(doc)

    text = run_qywx("doctor", "--all", env=two, secrets=["superseded-permanent-code"])
    assert text.returncode == 1 and text.stderr == ""
    lines = text.stdout.splitlines()
    assert any(BROKEN in line and "40001" in line for line in lines)
    ran = sum(summary[k] for k in ("ok", "warning", "failed"))
    assert f"3 corp(s): ✗ 1 of {ran} checks failed, 1 skipped" in text.stdout
    assert "corps: ✗ 1 of 2 checks failed, 1 skipped" in text.stdout
    assert f"{TEMP}: ✓ all" in text.stdout and f"{COMPANY_A}: ✓ all" in text.stdout


def test_a_broken_instance_is_checked_and_named(two: dict[str, str], auths: Path) -> None:
    biz = auths / COMPANY_A / f"{COMPANY_A}.json"
    biz.write_text(biz.read_text().replace('"token": "', '"token": "not a token! '))
    code, doc = doctor_all(two)
    assert code == 1
    failed = {r["instance"]: r for r in doc["instances"] if not r["ok"]}
    assert list(failed) == [COMPANY_A]
    assert [c["name"] for c in failed[COMPANY_A]["checks"] if c["status"] == "failed"] == ["config"]
    # its corp's gettoken needs no callback key: still checked, under no instance
    broken = next(c for c in doc["corps"] if c["corp_id"] == BROKEN)
    assert (broken["status"], broken["instances"]) == ("ok", [])


def test_without_a_database_or_instances(
    auths: Path, wecom_env: dict[str, str], tmp_path: Path
) -> None:
    code, doc = doctor_all(wecom_env)
    assert code == 1 and doc["corps"] == [] and "database" in doc["corps_note"]
    assert len(doc["instances"]) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        run_qywx("doctor", "--all", env={**wecom_env, "QYWX_AUTHS": str(empty)}),
        1,
        "no instance folders in",
        "qywx init",
    )


def test_usage(wecom_env: dict[str, str]) -> None:
    assert_one_line_error(run_qywx("doctor", env=wecom_env), 2, "--auth NAME", "--all")
    assert_one_line_error(
        run_qywx("doctor", "--all", "--auth", TEMP, env=wecom_env), 2, "leave out --auth"
    )
    assert_one_line_error(
        run_qywx("doctor", "--all", "--url", "http://127.0.0.1:9/notify", env=wecom_env),
        2,
        "leave out --auth and --url",
    )
