"""What an operator sees when `qywx serve` cannot serve everything it was given."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from tests.e2e.conftest import Proc, http
from tests.helpers import assert_one_line_error, run_qywx


def break_instances(auths: Path) -> None:
    """CompanyA: its suiteSecret names an unset variable; CompanyB: broken JSON."""
    a = auths / "QywxProxyCompanyA" / "QywxProxyCompanyA.json"
    doc = json.loads(a.read_text("utf-8"))
    doc["authConfig"]["suiteSecret"] = "env:QYWX_TEST_UNSET_SECRET"
    a.write_text(json.dumps(doc), "utf-8")
    (auths / "QywxProxyCompanyB" / "QywxProxyCompanyB.json").write_text('{"authConfig": {', "utf-8")


def test_serve_names_each_instance_it_cannot_load_and_healthz_lists_the_served(
    env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    break_instances(auths)
    proc = Proc(["serve", "--port", "0"], env, tmp_path)
    try:
        with http() as client:
            health = client.get(f"{proc.url}/healthz").json()
    finally:
        proc.stop()
    not_loaded = [line for line in proc.lines if "not loaded:" in line]
    assert len(not_loaded) == 2, proc.log
    assert "instance QywxProxyCompanyA not loaded:" in not_loaded[0]
    assert "QYWX_TEST_UNSET_SECRET" in not_loaded[0]
    assert "instance QywxProxyCompanyB not loaded:" in not_loaded[1]
    assert "JSON" in not_loaded[1] or "json" in not_loaded[1]
    banner = next(line for line in proc.lines if "listening on" in line)
    assert "NOT loaded: QywxProxyCompanyA, QywxProxyCompanyB" in banner
    assert health["instances"] == ["QywxProxyDefault", "QywxProxyTemp"]
    assert health["not_loaded"] == ["QywxProxyCompanyA", "QywxProxyCompanyB"]


def test_serve_strict_refuses_to_start_with_a_broken_instance(
    env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    break_instances(auths)
    result = run_qywx("serve", "--port", "0", "--strict", env=env, cwd=tmp_path, process=True)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert sum("not loaded:" in line for line in lines) == 2
    assert lines[-1].startswith("qywx: error: 2 instance problem(s)"), lines[-1]
    assert "strict" in lines[-1]


def test_strict_true_in_qywx_toml_refuses_too(
    env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    break_instances(auths)
    (tmp_path / "qywx.toml").write_text("strict = true\n")
    result = run_qywx("serve", "--port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "strict" in result.stderr.splitlines()[-1]


def test_strict_must_be_a_boolean(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "qywx.toml").write_text('strict = "yes"\n')
    result = run_qywx("serve", "--port", "0", env=env, cwd=tmp_path)
    assert_one_line_error(result, 1, "strict must be true or false")


def test_a_port_in_use_exits_1_not_the_usage_code(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_qywx("serve", "--port", str(port), env=env, cwd=tmp_path)
        fake = run_qywx("fake-wecom", "--port", str(port), env=env, cwd=tmp_path)
    for r in (result, fake):
        assert r.returncode == 1, r.stderr
        last = r.stderr.splitlines()[-1]
        assert last.startswith("qywx: error: cannot listen on 127.0.0.1:"), last
        assert "in use" in last and "--port" in last


def test_a_metrics_port_in_use_exits_1_and_names_the_flag(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The metrics listener's port in use is the deployment's problem, as for --port."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_qywx(
            "serve", "--port", "0", "--metrics-port", str(port), env=env, cwd=tmp_path
        )
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"qywx: error: cannot listen on 127.0.0.1:{port} for metrics"), last
    assert "in use" in last and "--metrics-port" in last


def test_a_callback_to_an_instance_serve_did_not_load_says_not_loaded(
    env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    """Its route answered 404 "no active auth instance named 'X'", as if the name were
    wrong; simulate-callback now hears it was not loaded and says where the reason is.
    (Signing needs no suite secret, so the simulator works where the server did not.)"""
    break_instances(auths)
    proc = Proc(["serve", "--port", "0"], env, tmp_path)
    try:
        url = f"{proc.url}/notify/QywxProxyCompanyA"
        result = run_qywx("simulate-callback", "--auth", "QywxProxyCompanyA", "--url", url, env=env)
    finally:
        proc.stop()
    assert result.returncode == 1
    assert "was not loaded at start-up" in result.stdout, result.stdout
    hint = result.stderr.splitlines()[-1]
    assert hint.startswith("qywx: hint: "), result.stderr
    assert "/healthz" in hint and "qywx validate" in hint, hint


def test_strict_under_serve_in_qywx_toml_refuses_too(
    env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    """Every other serve setting lives in [serve], so that is where operators write it;
    it was refused as an unknown key."""
    break_instances(auths)
    (tmp_path / "qywx.toml").write_text("[serve]\nstrict = true\n")
    result = run_qywx("serve", "--port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "strict mode is on" in result.stderr.splitlines()[-1], result.stderr


def test_bad_numbers_are_refused_first_in_one_line(
    env: dict[str, str], auths: Path, tmp_path: Path
) -> None:
    """A bad --port or --threads was reported after the start-up warnings; --workers 0
    started a server whose callbacks were recorded and never handled."""
    break_instances(auths)
    for flag, value in (
        ("--port", "99999"),
        ("--threads", "0"),
        ("--workers", "0"),
        ("--workers", "-2"),
        ("--metrics-port", "70000"),
    ):
        args = ["serve", "--port", "0", flag, value] if flag != "--port" else ["serve", flag, value]
        result = run_qywx(*args, env=env, cwd=tmp_path, timeout=20, process=True)
        assert_one_line_error(result, 2, flag)
