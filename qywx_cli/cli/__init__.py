"""The ``qywx`` command line: a thin Typer layer over ``qywx_cli.core``.

Each command parses options, makes one library call and renders the result; command
modules import heavy libraries (httpx, sqlite_utils, rich) inside the command body so
``qywx --help`` and ``qywx validate`` start fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from qywx_cli import __version__
from qywx_cli.cli import (
    config_cmds,
    devtools_cmds,
    doctor_cmds,
    login_cmds,
    ops_cmds,
    server_cmds,
)
from qywx_cli.cli._state import Globals

app = typer.Typer(
    name="qywx",
    help="Operations tool for WeCom (企业微信) 代开发 login: validate auths/, handle and "
    "simulate callbacks, inspect the callback log, log users in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"qywx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="qywx.toml with defaults (default: ./qywx.toml if present).",
            dir_okay=False,
        ),
    ] = None,
    auths: Annotated[
        Path | None,
        typer.Option("--auths", envvar="QYWX_AUTHS", help="The auths/ folder (default ./auths)."),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", envvar="QYWX_DB", help="The SQLite database (default ./qywx.db)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = Globals(config=config, auths=auths, db=db, debug=debug)


config_cmds.register(app)
server_cmds.register(app)
doctor_cmds.register(app)
devtools_cmds.register(app)
ops_cmds.register(app)
login_cmds.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every outcome leaves through ``cli._errors.run_cli``."""
    from qywx_cli.cli._errors import run_cli

    args = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, not only before the command name.
    debug = "--debug" in args
    if debug:
        args = ["--debug", *(a for a in args if a != "--debug")]
    run_cli(typer.main.get_command(app), args, debug=debug)
