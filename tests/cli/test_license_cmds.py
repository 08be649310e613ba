"""qywx license list / show / activate / transfer against a FakeWeCom on loopback, over the
provider token; licence states, a refused activation and a partial transfer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qywx_cli.core.store import Store
from tests.helpers import LoopbackWeCom, assert_one_line_error, one_json, run_qywx

CORP = "wwa1b2c3d4e5f60a01"
PROVIDER = "wwprov1d3r0c0rp1d0"
SECRET = "provider-secret-for-the-fake"


@pytest.fixture
def env(wecom_env: dict[str, str]) -> dict[str, str]:
    with Store(wecom_env["QYWX_DB"]):
        pass  # the database exists, as after qywx serve
    return {**wecom_env, "QYWX_PROVIDER_CORP_ID": PROVIDER, "QYWX_PROVIDER_SECRET": SECRET}


def _json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = run_qywx("license", *args, "-f", "json", env=env, secrets=(SECRET,))
    assert result.returncode == code, result.stderr
    return json.loads(result.stdout)


def test_activate_show_list_and_transfer(
    env: dict[str, str], loopback_wecom: LoopbackWeCom
) -> None:
    _, codes = loopback_wecom.fake.create_licence_order(CORP, count=3, days=400)
    assert _json(env, "list", "--corp-id", CORP) == []
    assert _json(env, "show", "--corp-id", CORP, "--user-id", "zhangsan", code=1) == []

    (row,) = _json(env, "activate", "--corp-id", CORP, "--code", codes[0], "--user-id", "zhangsan")
    assert (row["user_id"], row["type_name"], row["active_code"]) == ("zhangsan", "basic", codes[0])
    assert row["expire_time"] - row["active_time"] == 400 * 86400
    _json(env, "activate", "--corp-id", CORP, "--code", codes[1], "--user-id", "lisi")

    listed = _json(env, "list", "--corp-id", CORP)
    # Soonest expiry first, then by user: the two activations may fall in one second or two.
    assert {r["user_id"] for r in listed} == {"lisi", "zhangsan"}
    assert listed == sorted(listed, key=lambda r: (r["expire_time"], r["user_id"]))
    with Store(env["QYWX_DB"]) as store:
        assert {x.user_id for x in store.list_licences(corp_id=CORP)} == {"lisi", "zhangsan"}

    # zhangsan → wangwu works; lisi → zhangsan is refused (zhangsan has left, holds none now,
    # but lisi → wangwu would clash with wangwu's new basic account).
    moved = _json(
        env, "transfer", "--corp-id", CORP, "--from", "zhangsan", "--to", "wangwu",
        "--from", "lisi", "--to", "wangwu", code=1,
    )  # fmt: skip
    assert [r["errcode"] for r in moved] == [0, 40058]
    with Store(env["QYWX_DB"]) as store:
        assert {x.user_id for x in store.list_licences(corp_id=CORP)} == {"lisi", "wangwu"}


def test_activation_clears_the_unlicensed_member(
    env: dict[str, str], loopback_wecom: LoopbackWeCom
) -> None:
    _, (code,) = loopback_wecom.fake.create_licence_order(CORP)
    with Store(env["QYWX_DB"]) as store:
        store.record_unlicensed(CORP, "lisi", agent_id=1, seen_at=1_700_000_000)
    _json(env, "activate", "--corp-id", CORP, "--code", code, "--user-id", "lisi")
    stats = run_qywx("log", "stats", "-f", "json", env=env)
    assert one_json(stats)["unlicensed_members"] == []


def test_a_used_code_is_refused_with_wecoms_errcode(
    env: dict[str, str], loopback_wecom: LoopbackWeCom
) -> None:
    _, (code,) = loopback_wecom.fake.create_licence_order(CORP)
    _json(env, "activate", "--corp-id", CORP, "--code", code, "--user-id", "zhangsan")
    again = run_qywx(
        "license", "activate", "--corp-id", CORP, "--code", code, "--user-id", "lisi",
        env=env, secrets=(SECRET,),
    )  # fmt: skip
    assert_one_line_error(again, 1, "license/active_account", "40058")


def test_license_needs_the_provider_secret(wecom_env: dict[str, str]) -> None:
    result = run_qywx(
        "license", "list", "--corp-id", CORP, env={**wecom_env, "QYWX_PROVIDER_CORP_ID": PROVIDER}
    )
    assert_one_line_error(result, 1, "QYWX_PROVIDER_SECRET")


def test_transfer_needs_pairs(env: dict[str, str]) -> None:
    result = run_qywx(
        "license", "transfer", "--corp-id", CORP, "--from", "a", "--from", "b", "--to", "c",
        env=env,
    )  # fmt: skip
    assert_one_line_error(result, 2, "one --to for each --from")
