"""Every command, text and json, on the samples: no secret may reach stdout or stderr.

The secrets are the samples' suiteSecret, token and encodingAESKey, plus what flowed
through the pipeline during the test: the SuiteTicket pushed and the permanent code
WeCom (the fake) issued.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, wait_for

NAME = "QywxProxyTemp"
CORP = "wwsweep0000000001"
TICKET = "SweepTicket" + "x" * 40


def qywx(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qywx_cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def sample_secrets(auths: Path) -> set[str]:
    found: set[str] = set()
    for biz in auths.glob("*/*.json"):
        if biz.name == "e.json":
            continue
        cfg = json.loads(biz.read_text())["authConfig"]
        found.update(cfg[k] for k in ("suiteSecret", "token", "encodingAESKey"))
    return found


@pytest.fixture
def populated(env: dict[str, str], server: Proc) -> tuple[dict[str, str], Proc, set[str]]:
    url = f"{server.url}/notify/{NAME}"
    for args in (["--set", f"SuiteTicket={TICKET}"], ["--event", "create_auth", "--corp-id", CORP]):
        r = qywx(env, "simulate-callback", "--auth", NAME, "--url", url, *args)
        assert r.returncode == 0, r.stdout + r.stderr

    def done() -> bool:
        with Store(env["QYWX_DB"]) as store:
            auth = store.get_corp_auth(CORP)
            return auth is not None and bool(auth.permanent_code)

    assert wait_for(done)
    with Store(env["QYWX_DB"]) as store:
        auth = store.get_corp_auth(CORP)
        assert auth is not None
        perm = auth.permanent_code
        assert perm is not None
    secrets = sample_secrets(Path(env["QYWX_AUTHS"])) | {TICKET, perm}
    return env, server, secrets


def commands(server_url: str, captured_url: str) -> list[list[str]]:
    url = f"{server_url}/notify/{NAME}"
    return [
        ["validate"],
        ["validate", "--strict"],
        ["schema"],
        ["doctor", "--auth", NAME],
        ["doctor", "--auth", NAME, "--url", url],
        ["simulate-callback", "--auth", NAME, "--url", url, "--dry-run"],
        ["simulate-callback", "--auth", NAME, "--url", url, "--verify-url"],
        ["simulate-callback", "--auth", NAME, "--url", url, "--tamper", "all"],
        ["simulate-callback", "--auth", NAME, "--url", url, "--count", "5", "--concurrency", "2"],
        ["decrypt", "--auth", NAME, "--url", captured_url],
        ["decrypt", "--auth", NAME, "--url", captured_url.replace("nonce=", "nonce=9")],
        ["log", "list"],
        ["log", "show", "1", "--decrypt"],
        ["log", "show", "2", "--decrypt"],
        ["log", "tail"],
        ["log", "stats"],
        ["retry", "--failed", "--dry-run"],
        ["retry", "2"],
        ["login-config", "--auth", NAME],
        ["org", "set-code", CORP, "sweep"],
        ["org", "list"],
        ["org", "show", "sweep"],
        ["login-url", "--auth", NAME, "--corp-id", CORP, "--redirect-uri", "https://a.example/cb"],
        ["login", "--auth", NAME, "--corp-id", CORP, "--code", "CODE-lisi"],
    ]


def test_no_command_prints_a_secret(populated: tuple[dict[str, str], Proc, set[str]]) -> None:
    env, server, secrets = populated
    dry = json.loads(
        qywx(
            env,
            "simulate-callback",
            "--auth",
            NAME,
            "--url",
            f"{server.url}/notify/{NAME}",
            "--verify-url",
            "--dry-run",
            "--format",
            "json",
        ).stdout
    )
    ran = 0
    for args in commands(server.url, dry["url"]):
        # schema always prints JSON; every other command takes --format text|json
        for fmt in (None,) if args[0] == "schema" else ("text", "json"):
            r = qywx(env, *args, *(("--format", fmt) if fmt else ()))
            out = r.stdout + r.stderr
            assert "Traceback" not in out, (args, out)
            assert r.returncode in (0, 1), (args, fmt, r.returncode, r.stderr)  # not a usage error
            leaked = [s for s in secrets if s in out]
            assert not leaked, (args, fmt, "leaked a secret")
            ran += 1
    assert ran == 2 * len(commands(server.url, dry["url"])) - 1
    # --show-secrets is the one way to see them, and it works
    shown = qywx(env, "log", "show", "1", "--decrypt", "--show-secrets", "--format", "json")
    assert TICKET in shown.stdout
    # the server's own log holds none either
    assert not [s for s in secrets if s in server.log]


def test_files_holding_secrets_are_private(
    populated: tuple[dict[str, str], Proc, set[str]], tmp_path: Path
) -> None:
    env, _server, _ = populated
    db = Path(env["QYWX_DB"])
    for path in [db, *db.parent.glob(db.name + "-*")]:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    r = qywx(
        env,
        "init",
        "Scaffolded",
        "--suite-id",
        "dk0000000000000001",
        "--dir",
        str(tmp_path / "new"),
        "--secrets-from-env",
    )
    assert r.returncode == 0, r.stderr
    secret_files = [
        p
        for p in (tmp_path / "new" / "Scaffolded").iterdir()
        if re.search(r"secrets|Scaffolded\.json$", p.name)
    ]
    assert len(secret_files) >= 2
    for path in secret_files:
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
