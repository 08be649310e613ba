"""The system event URL end to end: `qywx serve` with the provider's key, driven by
`qywx simulate-callback --provider` and by wechatpy, then read back with `qywx log`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.store import Store
from tests.core.test_service_provider import (
    CORP,
    PROVIDER,
    PROVIDER_KEY,
    PROVIDER_TOKEN,
    pay_success,
    wechatpy_request,
)
from tests.e2e.conftest import Proc, http, wait_for
from tests.helpers import assert_one_line_error, one_json, run_qywx

pytestmark = pytest.mark.e2e


@pytest.fixture
def provider_env(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Provider settings in qywx.toml, the token through an env: reference."""
    (tmp_path / "qywx.toml").write_text(
        f'provider_corp_id = "{PROVIDER}"\n'
        'provider_token = "env:SYSTEM_EVENT_TOKEN"\n'
        f'provider_encoding_aes_key = "{PROVIDER_KEY}"\n',
        encoding="utf-8",
    )
    return {**env, "SYSTEM_EVENT_TOKEN": PROVIDER_TOKEN}


@pytest.fixture
def provider_server(provider_env: dict[str, str], tmp_path: Path) -> Iterator[Proc]:
    proc = Proc(["serve", "--port", "0", "--threads", "2"], provider_env, tmp_path)
    yield proc
    proc.stop()


def simulate(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    proc = run_qywx("simulate-callback", *args, "-f", "json", env=env, cwd=cwd,
                    secrets=(PROVIDER_TOKEN, PROVIDER_KEY))  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return one_json(proc)


def test_simulated_licence_events_reach_the_system_route(
    provider_server: Proc, provider_env: dict[str, str], tmp_path: Path
) -> None:
    url = f"{provider_server.url}/notify/provider"
    for event in ("license_pay_success", "license_refund", "auto_activate"):
        doc = simulate(
            provider_env, tmp_path, "--provider", "--url", url, "--event", event,
            "--corp-id", CORP,
        )  # fmt: skip
        assert doc["ok"] and doc["response"]["body"] == "success", doc
    assert simulate(provider_env, tmp_path, "--provider", "--url", url, "--verify-url")["ok"]

    # The template's key is refused there: a bare instance-signed callback.
    refused = run_qywx(
        "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, "-f", "json",
        env=provider_env, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 1 and one_json(refused)["response"]["status"] == 403

    with Store(provider_env["QYWX_DB"]) as store:
        records = wait_for(
            lambda: [r for r in store.list_callbacks(instance="provider") if r.kind == "command"]
        )
    assert sorted(r.info_type or "" for r in records) == [
        "auto_activate",
        "license_pay_success",
        "license_refund",
    ]
    assert {r.status for r in records} == {"processed"}

    listed = run_qywx("log", "list", "--instance", "provider", "-f", "json",
                      env=provider_env, cwd=tmp_path)  # fmt: skip
    assert {d["info_type"] for d in one_json_list(listed)} >= {"license_pay_success", "verify_url"}
    pay = next(r for r in records if r.info_type == "license_pay_success")
    shown = run_qywx(
        "log", "show", str(pay.id), "--decrypt", "-f", "json",
        env=provider_env, cwd=tmp_path, secrets=(PROVIDER_TOKEN, PROVIDER_KEY),
    )  # fmt: skip
    doc = one_json(shown)
    assert doc["decrypted"]["signature_valid"] is True
    assert doc["decrypted"]["receive_id"] == PROVIDER
    assert doc["decrypted"]["fields"]["AuthCorpId"] == CORP


def one_json_list(result: Any) -> list[dict[str, Any]]:
    import json

    assert result.returncode == 0, result.stderr
    doc: list[dict[str, Any]] = json.loads(result.stdout)
    return doc


def test_wechatpy_signed_system_event_over_http(provider_server: Proc) -> None:
    url = f"{provider_server.url}/notify/provider"
    request = wechatpy_request(PROVIDER_TOKEN, PROVIDER_KEY, PROVIDER, pay_success(), "4242")
    body = request.pop("body")
    with http() as client:
        ok = client.post(url, params=request, content=body.encode())
        assert (ok.status_code, ok.text) == (200, "success")
        template = wechatpy_request(
            "QywxProxyTempToken", "a" * 43, PROVIDER, pay_success("OI2"), "4243"
        )
        tbody = template.pop("body")
        refused = client.post(url, params=template, content=tbody.encode())
        assert refused.status_code == 403


def test_simulate_provider_needs_the_settings(env: dict[str, str], tmp_path: Path) -> None:
    result = run_qywx(
        "simulate-callback", "--provider", "--url", "http://127.0.0.1:9/notify/provider",
        "--corp-id", CORP, "--dry-run", env=env, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, 1, "provider_token")
    no_auth = run_qywx("simulate-callback", "--url", "http://127.0.0.1:9/", env=env, cwd=tmp_path)
    assert_one_line_error(no_auth, 2, "--auth")


def test_simulate_provider_dry_run_needs_a_corp(
    provider_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_qywx(
        "simulate-callback", "--provider", "--url", "http://127.0.0.1:9/notify/provider",
        "--dry-run", env=provider_env, cwd=tmp_path,
    )  # fmt: skip
    assert_one_line_error(result, 2, "--corp-id")
    dry = simulate(
        provider_env, tmp_path, "--provider", "--url", "http://127.0.0.1:9/notify/provider",
        "--corp-id", CORP, "--dry-run",
    )  # fmt: skip
    assert dry["receive_id"] == PROVIDER and "license_pay_success" in dry["plaintext"]


def test_the_fake_pushes_system_events_and_data_callbacks(
    provider_server: Proc, provider_env: dict[str, str], auths: Path
) -> None:
    """FakeWeCom plays WeCom's pushes: a licence event to the system URL (provider key)
    and an unlicensed_notify to the app's URL (the instance's key, receiveid the corp)."""
    from qywx_cli.core.config import find_instance
    from qywx_cli.core.fakewecom import FakeWeCom, ProviderKey

    fake = FakeWeCom()
    key = ProviderKey(PROVIDER, PROVIDER_TOKEN, PROVIDER_KEY)
    for event in ("license_pay_success", "auto_activate"):
        pushed = fake.push_system_event(f"{provider_server.url}/notify/provider", key, event, CORP)
        assert (pushed.status_code, pushed.text) == (200, "success")

    inst = find_instance("QywxProxyTemp", auths)
    with Store(provider_env["QYWX_DB"]) as store:
        store.upsert_corp_auth(inst.suite_id, CORP, state="active")
    xml = (
        f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[lisi]]>"
        "</FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]>"
        "</MsgType><Event><![CDATA[unlicensed_notify]]></Event><AgentID>1</AgentID></xml>"
    )
    pushed = fake.push_data_event(f"{provider_server.url}/notify/QywxProxyTemp", inst, CORP, xml)
    assert (pushed.status_code, pushed.text) == (200, "success")
    with Store(provider_env["QYWX_DB"]) as store:
        assert wait_for(lambda: [m.user_id for m in store.unlicensed_members()]) == ["lisi"]
        assert wait_for(lambda: store.list_licences(corp_id=CORP))
        data = store.list_callbacks(kind="data")
    assert [(r.info_type, r.corp_id) for r in data] == [("unlicensed_notify", CORP)]
