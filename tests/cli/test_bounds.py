"""Numbers no command can use are refused as usage errors (exit 2, one line), before
they reach SQLite, datetime or a timer; each was an "internal error" (exit 70)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, run_qywx

BIG = "99999999999999999999"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("log", "list", "--limit", BIG), "--limit"),
        (("fake-wecom", "--port", "0", "--token-ttl", "0"), "--token-ttl"),
        (("fake-wecom", "--port", "0", "--token-ttl", "2592001"), "--token-ttl"),
        (("log", "list", "--before-id", BIG), "--before-id"),
        (("log", "tail", "-n", BIG), "--lines"),
        (("log", "tail", "--follow", "--interval", "nan"), "--interval must be from 0.05"),
        (("log", "tail", "--follow", "--interval", "inf"), "--interval"),
        (("log", "stats", "--since", "99999999999w"), "at most 100 years"),
        (("log", "prune", "--older-than", "999999999w", "--dry-run"), "at most 100 years"),
        (
            (
                *("simulate-callback", "--auth", "QywxProxyTemp", "--url", "http://127.0.0.1:1/x"),
                *("--count", "2", "--rate", "1e-300"),
            ),
            "--rate must be from 0.001",
        ),
        (
            (
                *("fake-wecom", "--port", "0", "--interval", "nan", "--auth", "QywxProxyTemp"),
                *("--push-to", "http://127.0.0.1:1/"),
            ),
            "--interval must be from more than 0",
        ),
    ],
    ids=lambda v: " ".join(v[:4]) if isinstance(v, tuple) else None,
)
def test_a_number_out_of_range_is_a_usage_error(
    cli_env: dict[str, str], args: tuple[str, ...], fragment: str
) -> None:
    run_qywx("db", "upgrade", env=cli_env)  # a database: the refusal is the number's
    assert_one_line_error(run_qywx(*args, env=cli_env), 2, fragment)


def test_a_retention_beyond_a_century_is_a_configuration_error(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "qywx.toml").write_text("retention_days = 1" + "0" * 400 + "\n", "utf-8")
    result = run_qywx("log", "list", env=cli_env, cwd=tmp_path)
    assert_one_line_error(result, 1, "retention_days must be a whole number of days from 1")
