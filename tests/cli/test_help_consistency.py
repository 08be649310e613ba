"""One naming rule across every command's help: what `--help` shows is the contract
people read, so drift between commands is a bug."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from qywx_cli.cli import build_app
from qywx_cli.cli._help import _leaves, polish
from tests.helpers import run_qywx


def commands() -> list[tuple[str, Any]]:
    root = polish(typer.main.get_command(build_app()))
    out = []
    for group_name, group in root.commands.items():
        subs = getattr(group, "commands", None)
        if subs is None:
            out.append((group_name, group))
        else:
            out.extend((f"{group_name} {n}", c) for n, c in subs.items())
    assert len(out) == len(_leaves(root))
    return out


def test_no_short_flag_means_two_things() -> None:
    meaning: dict[str, set[str]] = {}
    for _, cmd in commands():
        for param in cmd.params:
            shorts = [o for o in param.opts if not o.startswith("--")]
            longs = [o for o in param.opts if o.startswith("--")]
            for short in shorts:
                meaning.setdefault(short, set()).update(longs)
    clashes = {s: longs for s, longs in meaning.items() if len(longs) > 1}
    assert not clashes, clashes
    assert meaning["-f"] == {"--format"}


def test_every_option_has_help_and_a_readable_metavar() -> None:
    for name, cmd in commands():
        ctx = cmd.make_context(name, [], resilient_parsing=True)
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help, (name, param.opts)
                record = param.get_help_record(ctx)
                assert record is not None
                assert "<" not in record[0] and "{" not in record[0], (name, record[0])
                if "--auth" in param.opts:
                    assert record[0] == "--auth NAME", (name, record[0])
            else:
                shown = param.make_metavar(ctx)
                assert "{" not in shown and ":" not in shown, (name, shown)
                assert shown.strip("[].") == shown.strip("[].").upper() or "|" in shown


@pytest.mark.parametrize("command", ["log list", "serve", "decrypt", "org show", "init"])
def test_subcommand_help_lists_the_root_options(command: str) -> None:
    out = run_qywx(*command.split(), "--help").stdout
    for option in ("--auths DIR", "--db PATH", "--config FILE", "--debug"):
        assert option in out, (command, option)


def test_readable_usage_lines() -> None:
    assert "Usage: qywx init [OPTIONS] NAME\n" in run_qywx("init", "--help").stdout
    assert "Usage: qywx validate [OPTIONS] [PATH]...\n" in run_qywx("validate", "--help").stdout
    assert "Usage: qywx schema [OPTIONS] [e|business]\n" in run_qywx("schema", "--help").stdout


def test_log_tail_takes_f_for_format() -> None:
    result = run_qywx("log", "tail", "-f", "json", "--db", "/nonexistent/qywx.db")
    assert result.returncode == 1, result.stderr  # no database: not a usage error
    assert "no database at" in result.stderr


def test_top_level_help_names_the_root_options_as_each_command_does() -> None:
    """`qywx --help` showed `--config <file>`, `--auths <path>`, `--db <str>` while every
    command's help says FILE, DIR and PATH for the same options."""
    out = run_qywx("--help").stdout
    for option in ("--config FILE", "--auths DIR", "--db PATH"):
        assert option in out, (option, out)
    options = out.split("Options:", 1)[1].split("Commands:", 1)[0]
    assert "<" not in options, options


def test_the_log_group_names_export() -> None:
    """`log export` is new; the group's one-line summary still listed the four others."""
    for args in (("--help",), ("log", "--help")):
        summary = next(
            line for line in run_qywx(*args).stdout.splitlines() if "callback log (" in line
        )
        assert "export" in summary, summary


def test_an_argument_error_names_the_argument_as_help_shows_it() -> None:
    """`qywx schema foo` said "Invalid value for 'which'", the code's parameter name."""
    result = run_qywx("schema", "foo")
    assert result.returncode == 2
    assert "'e|business'" in result.stderr and "'which'" not in result.stderr, result.stderr
