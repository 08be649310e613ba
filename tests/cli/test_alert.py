"""``qywx alert test``: one sample alert, sent as users run the command."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Receiver, assert_one_line_error, dead_url, run_qywx, serving


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serving(r) as url:
        yield r, url


def test_a_wecom_robot_gets_a_markdown_sample(
    receiver: tuple[Receiver, str], cli_env: dict[str, str]
) -> None:
    r, url = receiver
    hook = f"{url}/cgi-bin/webhook/send?key=robot-key-for-test"
    done = run_qywx("alert", "test", "--webhook", hook, env=cli_env, secrets=["robot-key"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"✓ test alert accepted by {url}/cgi-bin/webhook/send?key=*** "
        "(WeCom group robot (markdown))\n"
    )
    (body,) = r.bodies
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["content"].startswith('**qywx: <font color="info">test alert</font>**')


def test_the_webhook_comes_from_the_environment_too(
    receiver: tuple[Receiver, str], cli_env: dict[str, str]
) -> None:
    r, url = receiver
    env = {**cli_env, "QYWX_ALERT_WEBHOOK": f"{url}/alerts"}
    done = run_qywx("alert", "test", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    assert '"kind": "JSON webhook"' in done.stdout
    assert [b["title"] for b in r.bodies] == ["test alert"]


def test_refusals_are_one_line(receiver: tuple[Receiver, str], cli_env: dict[str, str]) -> None:
    r, url = receiver
    dead = run_qywx(
        "alert",
        "test",
        "--webhook",
        dead_url() + "?key=k-secret-1",
        env=cli_env,
        secrets=["k-secret-1"],
    )
    assert_one_line_error(dead, 1, "alert webhook http://127.0.0.1:", "?key=***", "ConnectError")
    r.status = 500
    refused = run_qywx("alert", "test", "--webhook", f"{url}/alerts", env=cli_env)
    assert_one_line_error(refused, 1, "answered HTTP 500")
    r.status = 200
    r.errcodes = [93000]
    robot = run_qywx("alert", "test", "--webhook", f"{url}/cgi-bin/webhook/send?key=x", env=cli_env)
    assert_one_line_error(robot, 1, "errcode 93000")
    none = run_qywx("alert", "test", env=cli_env)
    assert_one_line_error(none, 2, "no alert webhook: pass --webhook URL")
    bad = run_qywx("alert", "test", "--webhook", "ftp://x", env=cli_env)
    assert_one_line_error(bad, 2, "absolute http(s) URL")
