"""What the read commands import: each ``log`` command loads only what it uses.

``qywx log list --format json`` runs in scripts and CI, where start-up is the whole
cost of a 0.3 ms query; rich (a table), httpx (WeCom), the retry machinery and the HTTP
server are not what it uses. Each case runs the real console entry point in a fresh
interpreter and reads ``sys.modules`` at the end, so a module-level import added
anywhere on the path shows up here. (How long start-up takes is measured in
``benchmarks/startup_bench.py``, not asserted.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qywx_cli.core.store import Store
from tests.helpers import REPO, qywx_env

NOT_FOR_READING = (
    "rich",
    "httpx",
    "sqlite_utils",
    "waitress",
    "qywx_cli.core.retry",
    "qywx_cli.core.httpserver",
    "qywx_cli.core.service",
    "qywx_cli.core.config",
)
"""Modules a JSON read of the log has no use for."""

_PROBE = """
import json, sys
from qywx_cli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""


def _loaded(db: Path, *args: str) -> set[str]:
    """The modules loaded once ``qywx --db DB ARGS`` finished (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "--db", str(db), *args],
        env=qywx_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = done.stderr.rsplit("\nMODULES ", 1)[-1]
    assert done.stdout.strip(), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return set(json.loads(line))


def _heavy(modules: set[str]) -> list[str]:
    """Which of NOT_FOR_READING were imported (a package's submodules import it first;
    the console script's empty ``httpx._main`` stand-in alone is not httpx)."""
    return sorted(m for m in modules if m in NOT_FOR_READING)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "qywx.db"
    with Store(path) as store:
        for i in range(3):
            store.record_callback(
                instance="QywxProxyTemp",
                kind="command",
                info_type="suite_ticket",
                suite_id="tj1234567890abcdef",
                corp_id=None,
                msg_signature=f"{i:040x}",
                timestamp=str(1_700_000_000 + i),
                nonce=f"n{i}",
                envelope=f"<xml><Encrypt><![CDATA[c{i}]]></Encrypt></xml>",
                content_key=f"{i:064x}",
                status="processed",
            )
    return path


@pytest.mark.parametrize(
    "args",
    [
        ("log", "list", "--format", "json"),
        ("log", "list", "--status", "failed", "--since", "2h", "--format", "json"),
        ("log", "tail", "--format", "json"),
        ("log", "show", "1", "--format", "json"),
    ],
    ids=["list", "list-filtered", "tail", "show"],
)
def test_json_reads_load_only_the_store(db: Path, args: tuple[str, ...]) -> None:
    assert _heavy(_loaded(db, *args)) == []


def test_the_text_table_does_load_rich(db: Path) -> None:
    """The same probe sees rich when a table is printed: it can tell."""
    assert "rich" in _heavy(_loaded(db, "log", "list"))


def test_one_log_command_converts_only_itself(db: Path) -> None:
    """``qywx log list`` builds ``log list`` alone (Typer converts every registered
    function at start-up); ``qywx log``, ``--help`` and a mistyped subcommand get the
    whole group, so help and click's suggestion list all of it."""
    import typer

    from qywx_cli.cli import build_app
    from tests.helpers import run_qywx

    def log_commands(*words: str) -> list[str]:
        root = typer.main.get_command(build_app(*words))
        group = root.commands["log"]  # type: ignore[attr-defined]
        return sorted(group.commands)

    every = ["export", "list", "prune", "show", "stats", "tail"]
    assert log_commands("log", "list") == ["list"]
    assert log_commands("log") == log_commands("log", "lst") == log_commands() == every
    listed = run_qywx("log", "--help")
    for name in every:
        assert f"  {name} " in listed.stdout
    typo = run_qywx("--db", str(db), "log", "lst")
    assert typo.returncode == 2 and "Did you mean 'list'?" in typo.stderr


def test_version_loads_no_command_module(db: Path) -> None:
    """``qywx --version`` registers none of the commands (it was the whole app: about
    0.15 s of CPU); with ``--help`` beside it the whole app is still listed."""
    from qywx_cli.cli import COMMANDS
    from tests.helpers import run_qywx

    command_modules = {f"qywx_cli.cli.{name}" for name in COMMANDS.values()}
    assert _loaded(db, "--version") & command_modules == set()
    assert _loaded(db, "--debug", "--version") & command_modules == set()
    both = run_qywx("--help", "--version")
    assert both.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in both.stdout
