"""The one place where failures become exit codes and a single stderr line.

Exit codes (the CLI contract, docs/architecture.md "Two layers"): 0 success, 1 the
thing checked is wrong (invalid config, bad signature, failed callback, unreachable
WeCom…), 2 usage error.
A bug in qywx itself exits 70 (EX_SOFTWARE) with one line; ``--debug`` shows the
traceback for any of them.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any, NoReturn

import typer

from qywx_cli.core.errors import InstanceNotFound, QywxError, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class _Shown(int):
    """An exit status whose reason the command has printed itself."""


EXIT_INTERRUPTED_SHOWN = _Shown(EXIT_INTERRUPTED)
"""130 from a command that said it was interrupted in its own output (a load run's
summary): run_cli adds no ``qywx: interrupted`` line of its own."""


def exit_code_for(exc: QywxError) -> int:
    if isinstance(exc, (UsageError, InstanceNotFound)):
        return EXIT_USAGE
    return EXIT_FAILED


def _click() -> Any:
    """click's exception classes: typer vendors click in recent releases."""
    import importlib

    try:
        return importlib.import_module("typer._click")
    except ImportError:  # pragma: no cover - older typer depends on click
        return importlib.import_module("click")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    print(f"qywx: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(code)


def run_cli(command: Any, args: list[str] | None, debug: bool) -> NoReturn:
    """Run the click command in non-standalone mode and map every outcome to an exit code."""
    click = _click()
    try:
        rv = command.main(args=args, prog_name="qywx", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `qywx group`: show its help
            print(exc.format_message(), file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        if debug:
            traceback.print_exc()
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        fail(f"{exc.format_message()}{where}", EXIT_USAGE)
    except click.exceptions.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("qywx: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except QywxError as exc:
        if debug:
            traceback.print_exc()
        fail(exc.message, exit_code_for(exc))
    except BrokenPipeError:
        raise SystemExit(EXIT_FAILED) from None
    except OSError as exc:  # the machine's, not ours: a full disk under `> file`, say
        if debug:
            traceback.print_exc()
        fail(_os_problem(exc), EXIT_FAILED)
    except Exception as exc:  # a bug in qywx: one line, traceback only on --debug
        if debug:
            traceback.print_exc()
        fail(
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            EXIT_INTERNAL,
        )
    if rv == EXIT_INTERRUPTED and not isinstance(rv, _Shown):
        print("qywx: interrupted", file=sys.stderr)  # Typer returns Ctrl-C as 130, silently
    try:  # what is still buffered: a full disk shows here, not in the command
        sys.stdout.flush()
    except BrokenPipeError:
        raise SystemExit(EXIT_FAILED) from None
    except OSError as exc:
        fail(f"cannot write the output: {_os_problem(exc)}", EXIT_FAILED)
    raise SystemExit(rv if isinstance(rv, int) else EXIT_OK)


def _os_problem(exc: OSError) -> str:
    """An operating-system error in one line: its reason, and the file when it names one."""
    reason = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {reason}" if exc.filename else reason
