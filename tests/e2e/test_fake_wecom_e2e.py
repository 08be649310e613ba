"""`qywx fake-wecom --push-to` plays WeCom's suite_ticket push against a real `qywx serve`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qywx_cli.core.store import Store
from tests.e2e.conftest import Proc, wait_for
from tests.helpers import run_qywx

SUITE = "tj1234567890abcdef"


def test_scheduled_pushes_reach_serve_and_refresh_the_ticket(
    env: dict[str, str], tmp_path: Path, server: Proc
) -> None:
    pusher = Proc(
        [
            "fake-wecom",
            "--port",
            "0",
            "--push-to",
            f"{server.url}/notify/QywxProxyTemp",
            "--auth",
            "QywxProxyTemp",
            "--interval",
            "0.3",
        ],
        env,
        tmp_path,
    )
    try:

        def tickets() -> list[str]:
            with Store(env["QYWX_DB"]) as store:
                return [r.info_type or "" for r in store.list_callbacks(status="processed")]

        assert wait_for(lambda: len(tickets()) >= 3)
        assert set(tickets()) == {"suite_ticket"}
        with Store(env["QYWX_DB"]) as store:
            assert store.latest_suite_ticket(SUITE) is not None
    finally:
        assert pusher.stop() == 0
    assert "suite_ticket pushed: success" in pusher.log


def test_pushes_a_receiver_answers_wrongly_are_reported(
    env: dict[str, str], tmp_path: Path
) -> None:
    """What WeCom's console would show as a failed push is logged, each time."""
    target = Proc(["fake-wecom", "--port", "0"], env, tmp_path)  # answers 404 on /notify
    pusher = Proc(
        ["fake-wecom", "--port", "0", "--push-to", f"{target.url}/notify/QywxProxyTemp",
         "--auth", "QywxProxyTemp", "--interval", "0.2"],
        env,
        tmp_path,
    )  # fmt: skip
    try:
        assert wait_for(lambda: pusher.log.count("WeCom expects exactly 'success'") >= 2)
    finally:
        assert pusher.stop() == 0
        target.stop()


def test_push_without_auth_is_a_usage_error(env: dict[str, str]) -> None:
    r = run_qywx("fake-wecom", "--push-to", "http://127.0.0.1:9/notify", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--auth" in r.stderr


def test_shell_completion_offers_commands_and_subcommands(env: dict[str, str]) -> None:
    def complete(words: str, cword: int) -> list[str]:
        e = dict(env, _QYWX_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
        r = subprocess.run(
            [sys.executable, "-m", "qywx_cli"], env=e, capture_output=True, text=True, timeout=30
        )
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert complete("qywx va", 1) == ["validate"]
    assert complete("qywx log s", 2) == ["show", "stats"]
    assert {"schema", "serve", "simulate-callback"} <= set(complete("qywx s", 1))
