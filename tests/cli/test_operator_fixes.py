"""Operator mistakes that used to give a wrong or unhelpful answer."""

from __future__ import annotations

import json
from pathlib import Path

from qywx_cli.core.app import App
from qywx_cli.core.wsgi import NotifyApp
from tests.helpers import run_qywx, serving

SUITE = "dk1234567890abcdef"


def test_init_shows_the_token_and_key_to_enter_in_the_console(tmp_path: Path) -> None:
    result = run_qywx("init", "MyApp", "--suite-id", SUITE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "auths/MyApp/MyApp.json").read_text())["authConfig"]
    step = next(line for line in result.stderr.splitlines() if "WeCom console" in line)
    assert f"Token {written['token']}" in step
    assert f"EncodingAESKey {written['encodingAESKey']}" in step


def test_a_second_instance_reuses_the_suite_secret_reference(tmp_path: Path) -> None:
    assert run_qywx("init", "MyApp", "--suite-id", SUITE, cwd=tmp_path).returncode == 0
    env = {"QYWX_SUITE_SECRET": "s3cret"}
    result = run_qywx("init", "Second", "--suite-id", SUITE, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    second = json.loads((tmp_path / "auths/Second/Second.json").read_text())["authConfig"]
    assert second["suiteSecret"] == "env:QYWX_MYAPP_SUITE_SECRET"
    assert "QYWX_SUITE_SECRET was not written" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_devtools_work_without_the_suite_secret(cli_env: dict[str, str], auths: Path) -> None:
    doc_path = auths / "QywxProxyTemp" / "QywxProxyTemp.json"
    doc = json.loads(doc_path.read_text())
    doc["authConfig"]["suiteSecret"] = "env:QYWX_NOT_SET_HERE"
    doc_path.write_text(json.dumps(doc))
    url = "http://127.0.0.1:9/notify/QywxProxyTemp"
    dry = run_qywx(
        "simulate-callback", "--auth", "QywxProxyTemp", "--url", url, "--dry-run", "-f", "json",
        env=cli_env,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    request = json.loads(dry.stdout)
    query = request["url"].split("?", 1)[1]
    opened = run_qywx(
        "decrypt", "--auth", "QywxProxyTemp", "--url", f"{url}?{query}", "-", "-f", "json",
        env=cli_env, input=request["body"],
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout)["signature_valid"] is True
    sealed = run_qywx("encrypt", "--auth", "QywxProxyTemp", "-", env=cli_env, input="<xml/>")
    assert sealed.returncode == 0, sealed.stderr


def test_simulate_to_another_instances_route_names_the_right_route(
    cli_env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    app = App(auths, db=tmp_path / "serve.db", env={}, background=False)
    with serving(NotifyApp(app.callbacks)) as base:
        result = run_qywx(
            "simulate-callback", "--auth", "QywxProxyCompanyA", "--url",
            f"{base}/notify/QywxProxyTemp", env=cli_env,
        )  # fmt: skip
    app.close()
    assert result.returncode == 1
    hint = result.stderr.splitlines()[-1]
    assert hint.startswith("qywx: hint: the URL routes to instance QywxProxyTemp"), hint
    assert f"{base}/notify/QywxProxyCompanyA" in hint


def _simulate(cli_env: dict[str, str], instance: str, url: str) -> tuple[int, list[str]]:
    result = run_qywx("simulate-callback", "--auth", instance, "--url", url, env=cli_env)
    return result.returncode, result.stderr.splitlines()


def test_simulate_to_a_mistyped_route_names_the_right_one(
    cli_env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    app = App(auths, db=tmp_path / "serve.db", env={}, background=False)
    with serving(NotifyApp(app.callbacks)) as base:
        typo = _simulate(cli_env, "QywxProxyTemp", f"{base}/notify/QywxProxyTmp")
        elsewhere = _simulate(cli_env, "QywxProxyTemp", f"{base}/callback/QywxProxyTemp")
    app.close()
    for code, lines in (typo, elsewhere):
        assert code == 1
        hint = lines[-1]
        assert hint.startswith("qywx: hint: "), lines
        assert f"{base}/notify/QywxProxyTemp" in hint, hint
