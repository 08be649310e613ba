"""`qywx doctor`'s verdict counts what failed, not what could not run because of it."""

from __future__ import annotations

import json

from qywx_cli.core.store import Store
from tests.helpers import run_qywx


def test_a_skipped_check_is_counted_apart_from_the_failed(cli_env: dict[str, str]) -> None:
    Store(cli_env["QYWX_DB"]).close()  # a database, but no suite_ticket yet
    doc = json.loads(
        run_qywx("doctor", "--auth", "QywxProxyTemp", "-f", "json", env=cli_env).stdout
    )
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert status["suite_ticket"] == "failed" and status["suite_token"] == "skipped"
    assert status["secrets_at_rest"] == "warning"  # no QYWX_SECRET_KEY: a warning, not a failure
    others = {"suite_ticket", "suite_token", "secrets_at_rest"}
    assert {s for name, s in status.items() if name not in others} == {"ok"}
    ran = len(status) - 1
    text = run_qywx("doctor", "--auth", "QywxProxyTemp", env=cli_env)
    assert text.returncode == 1
    verdict = f"✗ 1 of {ran} checks failed, 1 skipped, 1 with a warning"
    assert text.stdout.splitlines()[-1] == verdict
