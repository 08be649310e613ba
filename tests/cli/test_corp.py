"""``qywx corp list|show|refresh`` over a real database and the fake WeCom on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from qywx_cli.core.app import App
from qywx_cli.core.store import open_store
from tests.helpers import CallbackSender, LoopbackWeCom, assert_one_line_error, run_qywx

CORP = "ww1234567890abcdef"
SUITE = "tj1234567890abcdef"


def install(env: dict[str, str], auths: Path, api_base: str) -> None:
    app = App(auths, db=env["QYWX_DB"], api_base=api_base, env={}, background=False)
    sender = CallbackSender(app)
    sender.send("suite_ticket")
    sender.send("create_auth", CORP)
    app.close()


def test_list_show_and_refresh(
    wecom_env: dict[str, str], auths: Path, loopback_wecom: LoopbackWeCom
) -> None:
    install(wecom_env, auths, loopback_wecom.api_base)
    listed = json.loads(run_qywx("corp", "list", "-f", "json", env=wecom_env).stdout)
    assert [(c["corp_id"], c["suite_id"], c["state"]) for c in listed] == [(CORP, SUITE, "active")]
    corp = listed[0]
    assert corp["permanent_code_held"] is True and corp["instances"] == ["QywxProxyTemp"]
    assert corp["agent_id"] and corp["corp_name"] and corp["authorized_at"]
    shown = json.loads(run_qywx("corp", "show", CORP, "-f", "json", env=wecom_env).stdout)
    assert shown == corp
    with open_store(wecom_env["QYWX_DB"]) as store:  # what a stale row looks like
        store.upsert_corp_auth(SUITE, CORP, corp_name="old name", state="active")
    refreshed = run_qywx("corp", "refresh", CORP, "-f", "json", env=wecom_env)
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout)["corp_name"] == corp["corp_name"]
    text = run_qywx("corp", "list", env=wecom_env).stdout
    assert any(CORP in line and "held" in line for line in text.splitlines())


def test_unknown_corp_and_no_database(wecom_env: dict[str, str], auths: Path) -> None:
    assert_one_line_error(run_qywx("corp", "list", env=wecom_env), 1, "no database at")
    with open_store(wecom_env["QYWX_DB"]):
        pass
    assert_one_line_error(run_qywx("corp", "show", "wwnobody", env=wecom_env), 1, "wwnobody")
    empty = run_qywx("corp", "list", env=wecom_env)
    assert empty.returncode == 0 and "no corp has authorized" in empty.stderr


def test_show_reads_as_text_and_warns_with_the_qywx_prefix(
    wecom_env: dict[str, str], auths: Path, loopback_wecom: LoopbackWeCom
) -> None:
    """`corp show` printed Python's ['QywxProxyTemp'] and True in its text table, and the
    not-online warning began "warning:", the prefix issue 14 asked to be "qywx: warning:"."""
    install(wecom_env, auths, loopback_wecom.api_base)
    loopback_wecom.fake.set_publish_status(CORP, 1)
    refreshed = run_qywx("corp", "refresh", CORP, env=wecom_env)
    assert refreshed.returncode == 0, refreshed.stderr
    warnings = refreshed.stderr.splitlines()
    assert warnings and all(w.startswith("qywx: warning: corp ") for w in warnings), warnings
    shown = run_qywx("corp", "show", CORP, env=wecom_env).stdout
    assert "['" not in shown and "True" not in shown and "False" not in shown, shown
    fields = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in shown.splitlines()
        if line.count("│") == 3
    }
    assert fields["instances"] == "QywxProxyTemp"
    assert fields["permanent_code_held"] == "yes" and fields["online"] == "no"
