"""The one place exit statuses are made (``cli._errors.run_cli``), driven by real Typer
commands: an interruption is said once, by the command or by run_cli, never twice."""

from __future__ import annotations

import pytest
import typer

from qywx_cli.cli._errors import EXIT_INTERRUPTED_SHOWN, run_cli


def _command(said_by_the_command: bool) -> object:
    app = typer.Typer()

    @app.command()
    def work() -> int:
        if not said_by_the_command:
            raise KeyboardInterrupt  # Typer makes this a silent 130
        print("✗ interrupted after 3 of 10 requests")
        return EXIT_INTERRUPTED_SHOWN

    return typer.main.get_command(app)


@pytest.mark.parametrize(
    ("said_by_the_command", "stdout", "stderr"),
    [
        (False, "", "qywx: interrupted\n"),
        (True, "✗ interrupted after 3 of 10 requests\n", ""),
    ],
    ids=["typer-swallowed", "said-by-the-command"],
)
def test_an_interruption_is_said_exactly_once(
    capsys: pytest.CaptureFixture[str], said_by_the_command: bool, stdout: str, stderr: str
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(_command(said_by_the_command), [], debug=False)
    assert info.value.code == 130
    assert capsys.readouterr() == (stdout, stderr)
