"""qywx ids convert / lookup as users run them, against a FakeWeCom on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qywx_cli.core.fakewecom.ids import open_userid
from qywx_cli.core.store import Store
from qywx_cli.core.wecom import WeComClient
from tests.helpers import (
    SAMPLES,
    LoopbackWeCom,
    assert_one_line_error,
    auth_config,
    one_json,
    run_qywx,
)

CORP = "wwa1b2c3d4e5f60a01"
USERIDS = "batch/userid_to_openuserid"


def _calls(loopback: LoopbackWeCom) -> dict[str, int]:
    calls: dict[str, int] = loopback.state()["calls"]
    return calls


@pytest.fixture
def authorized(wecom_env: dict[str, str], loopback_wecom: LoopbackWeCom) -> dict[str, str]:
    """The database knows CORP with a permanent code the fake issued."""
    conf = auth_config(SAMPLES, "QywxProxyTemp")
    suite, secret = conf["suiteId"], conf["suiteSecret"]
    with (
        Store(wecom_env["QYWX_DB"]) as store,
        WeComClient(store, base_url=loopback_wecom.api_base) as client,
    ):
        store.save_suite_ticket(suite, "ticket-for-the-fake-0001", 1_700_000_000)
        perm = client.get_permanent_code(suite, secret, f"AUTHCODE-{CORP}-" + "x" * 48)
        store.upsert_corp_auth(suite, perm.corp_id, permanent_code=perm.permanent_code)
    return wecom_env


def test_convert_2500_userids_in_three_calls_with_progress(
    authorized: dict[str, str], loopback_wecom: LoopbackWeCom, tmp_path: Path
) -> None:
    ids = tmp_path / "users.txt"
    ids.write_text("".join(f"user{n:04d}\n" for n in range(2500)), encoding="utf-8")
    result = run_qywx(
        "ids", "convert", "userid", "--corp-id", CORP, str(ids), "-f", "json", env=authorized
    )
    assert result.returncode == 0, result.stderr
    doc = one_json(result)
    assert (doc["total"], doc["calls"], doc["converted"], doc["unconverted"]) == (2500, 3, 2500, 0)
    assert _calls(loopback_wecom)[USERIDS] == 3
    bars = [line for line in result.stderr.splitlines() if line.startswith("converting userids")]
    assert [b.rsplit("(", 1)[1] for b in bars] == ["batch 1)", "batch 2)", "batch 3)"]
    assert bars[-1].count("#") == 30 and "2500/2500" in bars[-1]

    lookup = run_qywx("ids", "lookup", "user0042", "-f", "json", env=authorized)
    (mapping,) = json.loads(lookup.stdout)
    assert mapping["open_id"] == open_userid(CORP, "user0042") and mapping["kind"] == "userid"
    back = run_qywx("ids", "lookup", mapping["open_id"], env=authorized)
    assert back.returncode == 0 and "user0042" in back.stdout


def test_convert_from_stdin_csv_reports_failures_and_exits_1(authorized: dict[str, str]) -> None:
    csv_text = "name,userid\nZhang,zhangsan\nGone,invalid-gone\n"
    result = run_qywx(
        "ids", "convert", "userid", "--corp-id", CORP, "--column", "userid", "-", "-f", "csv",
        env=authorized, input=csv_text,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = result.stdout.splitlines()
    assert rows[0] == "id,open_id,status,reason"
    assert rows[1].startswith(f"zhangsan,{open_userid(CORP, 'zhangsan')},converted")
    assert rows[2].startswith("invalid-gone,,unconverted,")


def test_convert_text_output_and_a_second_run(authorized: dict[str, str], tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n", encoding="utf-8")
    first = run_qywx("ids", "convert", "userid", "--corp-id", CORP, str(ids), env=authorized)
    assert first.returncode == 0 and "converted" in first.stdout
    again = run_qywx(
        "ids", "convert", "userid", "--corp-id", CORP, str(ids), "-f", "json", env=authorized
    )
    assert (one_json(again)["calls"], one_json(again)["already_known"]) == (0, 2)


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("userid", "ids.txt"), 2, "--corp-id"),
        (("userid", "--corp-id", CORP, "missing.txt"), 2, "cannot read"),
        (("userid", "--corp-id", CORP, "empty.txt"), 2, "no ids"),
        (("userid", "--corp-id", "wwunknowncorp0001", "ids.txt"), 1, "no permanent code"),
        (("email", "--corp-id", CORP, "ids.txt"), 2, "email"),
    ],
)
def test_convert_refusals(
    authorized: dict[str, str], tmp_path: Path, args: tuple[str, ...], code: int, fragment: str
) -> None:
    (tmp_path / "ids.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    result = run_qywx("ids", "convert", *args, env=authorized, cwd=tmp_path)
    if code == 2 and fragment == "email":
        assert result.returncode == 2 and "email" in result.stderr
        return
    assert_one_line_error(result, code, fragment)


def test_lookup_of_an_unknown_id(authorized: dict[str, str]) -> None:
    result = run_qywx("ids", "lookup", "nobody", env=authorized)
    assert result.returncode == 1 and "no mapping recorded for nobody" in result.stderr


def test_corp_list_shows_both_forms_once_mapped(authorized: dict[str, str]) -> None:
    opened = "wpOpEnC0rpIdOfCompanyA01"
    with Store(authorized["QYWX_DB"]) as store:
        store.save_id_mappings("corpid", CORP, [(CORP, opened)])
    (corp,) = json.loads(run_qywx("corp", "list", "-f", "json", env=authorized).stdout)
    assert (corp["corp_id"], corp["plain_corp_id"], corp["open_corp_id"]) == (CORP, CORP, opened)
    shown = run_qywx("corp", "show", opened, "-f", "json", env=authorized)
    assert shown.returncode == 0 and json.loads(shown.stdout)["corp_id"] == CORP
    text = run_qywx("corp", "list", env={**authorized, "COLUMNS": "250"})
    assert opened in text.stdout and "other id form" in text.stdout


def test_convert_corp_ids_with_the_provider_secret(authorized: dict[str, str]) -> None:
    from qywx_cli.core.fakewecom.ids import open_corpid

    env = {
        **authorized,
        "QYWX_PROVIDER_CORP_ID": "wwprov1d3r0c0rp1d0",
        "QYWX_PROVIDER_SECRET": "provider-secret-for-the-fake",
    }
    result = run_qywx(
        "ids", "convert", "corpid", "-", "-f", "json", env=env, input=f"{CORP}\n",
        secrets=("provider-secret-for-the-fake",),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert one_json(result)["mappings"] == [{"id": CORP, "open_id": open_corpid(CORP)}]
    (mapping,) = json.loads(
        run_qywx("ids", "lookup", open_corpid(CORP), "-f", "json", env=env).stdout
    )
    assert (mapping["kind"], mapping["id"]) == ("corpid", CORP)
    missing = run_qywx("ids", "convert", "corpid", "-", env=authorized, input=f"{CORP}\n")
    assert_one_line_error(missing, 1, "provider")
