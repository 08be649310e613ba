"""``qywx token suite|corp|provider`` over a real database and the fake WeCom on loopback.

The fake counts every API call, so "from the cache" is proved by a count that does not
move and ``--refresh`` by one that does; the token itself is read back from the store
to prove it is never printed whole unless ``--show-secrets`` asks.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from qywx_cli.core.app import App
from qywx_cli.core.masking import mask
from qywx_cli.core.store import open_store
from tests.helpers import (
    CallbackSender,
    LoopbackWeCom,
    assert_one_line_error,
    one_json,
    run_qywx,
)

NAME = "QywxProxyTemp"
CORP = "ww1234567890abcdef"
SUITE = "tj1234567890abcdef"
PROVIDER = "wwprov1d3r0c0rp1d0"


def install(env: dict[str, str], auths: Path, api_base: str, *corps: str) -> None:
    """A suite_ticket, then a create_auth per corp, handled as `qywx serve` would."""
    app = App(auths, db=env["QYWX_DB"], api_base=api_base, env={}, background=False)
    sender = CallbackSender(app)
    sender.send("suite_ticket")
    for corp in corps:
        sender.send("create_auth", corp)
    app.close()


def calls(wecom: LoopbackWeCom, api: str) -> int:
    counted: dict[str, int] = wecom.state()["calls"]
    return counted.get(api, 0)


def stored(env: dict[str, str], kind: str, key: str) -> tuple[str, float]:
    with open_store(env["QYWX_DB"]) as store:
        token = store.get_token(kind, key)
    assert token is not None
    return token.token, token.expires_at


def token_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    result = run_qywx("token", *args, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return one_json(result)


def test_suite_token_from_the_cache_then_refreshed(
    wecom_env: dict[str, str], auths: Path, loopback_wecom: LoopbackWeCom
) -> None:
    install(wecom_env, auths, loopback_wecom.api_base, CORP)  # create_auth cached one
    before = calls(loopback_wecom, "service/get_suite_token")
    cached = token_json(wecom_env, "suite", "--auth", NAME)
    assert calls(loopback_wecom, "service/get_suite_token") == before
    token, expires_at = stored(wecom_env, "suite", SUITE)
    assert cached["source"] == "cache" and cached["masked"] is True
    assert (cached["kind"], cached["key"], cached["instance"]) == ("suite", SUITE, NAME)
    assert cached["token"] == mask(token) and token not in json.dumps(cached)
    shown_at = datetime.fromisoformat(cached["expires_at"]).timestamp()
    assert abs(shown_at - expires_at) < 0.001  # the stored expiry, to the millisecond
    assert 0 < cached["expires_in"] <= 7200

    fresh = token_json(wecom_env, "suite", "--auth", NAME, "--refresh")
    assert calls(loopback_wecom, "service/get_suite_token") == before + 1
    assert fresh["source"] == "wecom"
    new_token, _ = stored(wecom_env, "suite", SUITE)  # what was fetched is what is cached
    assert fresh["token"] == mask(new_token)
    again = token_json(wecom_env, "suite", "--auth", NAME)
    assert again["source"] == "cache" and again["token"] == fresh["token"]
    assert calls(loopback_wecom, "service/get_suite_token") == before + 1

    text = run_qywx("token", "suite", "--auth", NAME, env=wecom_env)
    assert text.returncode == 0 and text.stderr == ""
    assert mask(new_token) in text.stdout and new_token not in text.stdout
    assert "cache (no WeCom call)" in text.stdout and "expires in" in text.stdout
    shown = run_qywx("token", "suite", "--auth", NAME, "--show-secrets", env=wecom_env)
    assert new_token in shown.stdout and "masked" not in shown.stdout
    shown_json = token_json(wecom_env, "suite", "--auth", NAME, "--show-secrets")
    assert (shown_json["token"], shown_json["masked"]) == (new_token, False)


def test_corp_token_from_the_cache_then_refreshed(
    wecom_env: dict[str, str], auths: Path, loopback_wecom: LoopbackWeCom
) -> None:
    install(wecom_env, auths, loopback_wecom.api_base, CORP)  # agent/get cached one
    before = calls(loopback_wecom, "gettoken")
    cached = token_json(wecom_env, "corp", "--corp-id", CORP)
    assert calls(loopback_wecom, "gettoken") == before and cached["source"] == "cache"
    assert (cached["corp_id"], cached["suite_id"], cached["key"]) == (CORP, SUITE, CORP)
    token, _ = stored(wecom_env, "corp", CORP)
    assert cached["token"] == mask(token)

    fresh = token_json(wecom_env, "corp", "--corp-id", CORP, "--auth", NAME, "--refresh")
    assert calls(loopback_wecom, "gettoken") == before + 1
    assert (fresh["source"], fresh["instance"]) == ("wecom", NAME)
    text = run_qywx("token", "corp", "--corp-id", CORP, env=wecom_env)
    assert text.returncode == 0 and "cache (no WeCom call)" in text.stdout
    assert stored(wecom_env, "corp", CORP)[0] not in text.stdout
    assert calls(loopback_wecom, "gettoken") == before + 1


def test_provider_token(wecom_env: dict[str, str], loopback_wecom: LoopbackWeCom) -> None:
    with open_store(wecom_env["QYWX_DB"]):
        pass
    assert_one_line_error(
        run_qywx("token", "provider", env=wecom_env), 1, "provider_corp_id is not set"
    )
    env = {
        **wecom_env,
        "QYWX_PROVIDER_CORP_ID": PROVIDER,
        "QYWX_PROVIDER_SECRET": "provider-secret-for-the-fake",
    }
    first = token_json(env, "provider")
    second = token_json(env, "provider")
    assert (first["source"], second["source"]) == ("wecom", "cache")
    assert first["corp_id"] == PROVIDER and calls(loopback_wecom, "service/get_provider_token") == 1
    assert token_json(env, "provider", "--refresh")["source"] == "wecom"
    assert calls(loopback_wecom, "service/get_provider_token") == 2
    assert_one_line_error(
        run_qywx("token", "provider", "--corp-id", CORP, env=env), 2, "provider corp"
    )


def test_no_ticket_yet_is_one_line_saying_how_to_check(
    wecom_env: dict[str, str], loopback_wecom: LoopbackWeCom
) -> None:
    with open_store(wecom_env["QYWX_DB"]):
        pass
    for extra in ((), ("--refresh",)):
        line = assert_one_line_error(
            run_qywx("token", "suite", "--auth", NAME, *extra, env=wecom_env),
            1,
            f"no suite_ticket received yet for suite {SUITE}",
            "WeCom has not pushed one",
            "qywx log list --event suite_ticket",
        )
        assert "qywx doctor" in line
    assert calls(loopback_wecom, "service/get_suite_token") == 0


def test_corps_that_cannot_have_a_token(
    wecom_env: dict[str, str], auths: Path, loopback_wecom: LoopbackWeCom
) -> None:
    env = wecom_env
    assert_one_line_error(
        run_qywx("token", "corp", "--corp-id", CORP, env=env), 1, "no database at"
    )
    install(env, auths, loopback_wecom.api_base, CORP)
    assert_one_line_error(
        run_qywx("token", "corp", "--corp-id", "wwnobody00000001", env=env),
        1,
        "corp wwnobody00000001 has not authorized any suite here",
        "qywx corp list",
    )
    assert_one_line_error(
        run_qywx("token", "corp", "--corp-id", CORP, "--auth", "QywxProxyCompanyA", env=env),
        1,
        "has not authorized QywxProxyCompanyA",
        SUITE,
    )
    with open_store(env["QYWX_DB"]) as store:
        store.upsert_corp_auth(SUITE, "wwnocode00000001", corp_name="Lost", state="active")
    assert_one_line_error(
        run_qywx("token", "corp", "--corp-id", "wwnocode00000001", env=env),
        1,
        "holds no permanent code",
        "重置Secret",
    )
    with open_store(env["QYWX_DB"]) as store:
        assert store.cancel_corp_auth(SUITE, CORP)
    before = calls(loopback_wecom, "gettoken")
    assert_one_line_error(
        run_qywx("token", "corp", "--corp-id", CORP, "--refresh", env=env),
        1,
        f"corp {CORP} cancelled its authorization",
        "install the app again",
    )
    assert calls(loopback_wecom, "gettoken") == before


def test_usage_errors(wecom_env: dict[str, str]) -> None:
    env = wecom_env
    with open_store(env["QYWX_DB"]):
        pass
    for args, fragment in (
        (("suite",), "needs --auth NAME"),
        (("suite", "--auth", NAME, "--corp-id", CORP), "--corp-id is for"),
        (("corp",), "needs --corp-id"),
        (("corp", "--corp-id", " "), "must not be empty"),
        (("suite", "--auth", "NoSuch"), "NoSuch"),
        (("session",), "suite|corp|provider"),
        ((), "Missing argument"),
    ):
        assert_one_line_error(run_qywx("token", *args, env=env), 2, fragment)


def test_on_postgresql(
    wecom_env: dict[str, str], auths: Path, loopback_wecom: LoopbackWeCom, pg_url: str
) -> None:
    """The same cache on a database server: cached, then --refresh, then doctor --all."""
    env = {**wecom_env, "QYWX_DB": pg_url, "PGPASSWORD": os.environ["PGPASSWORD"]}
    install(env, auths, loopback_wecom.api_base, CORP)
    before = calls(loopback_wecom, "gettoken")
    assert token_json(env, "corp", "--corp-id", CORP)["source"] == "cache"
    fresh = token_json(env, "corp", "--corp-id", CORP, "--refresh")
    assert fresh["source"] == "wecom" and calls(loopback_wecom, "gettoken") == before + 1
    assert fresh["token"] == mask(stored(env, "corp", CORP)[0])
    doctor = run_qywx("doctor", "--all", "--format", "json", env=env)
    corps = one_json(doctor)["corps"]
    assert [(c["corp_id"], c["status"]) for c in corps] == [(CORP, "ok")]
    assert calls(loopback_wecom, "gettoken") == before + 2
