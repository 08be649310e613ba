"""The ``qywx`` console script and ``python -m qywx_cli``: the CLI, imported under a
Ctrl-C guard.

``qywx_cli.cli`` imports Typer and click before :func:`qywx_cli.cli.main` can catch
anything, 0.1-0.4 s in which a Ctrl-C printed Python's traceback of the import. Here the
import itself is guarded, so an interrupt at any point after the interpreter has started
ends with the one ``qywx: interrupted`` line and exit 130, as one during a command does.
"""

from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # as qywx_cli.cli._errors.EXIT_INTERRUPTED; not imported, on purpose


def main() -> None:
    try:
        from qywx_cli.cli import main as run
    except KeyboardInterrupt:
        print("qywx: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    run()
