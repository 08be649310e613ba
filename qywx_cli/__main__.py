"""Allow ``python -m qywx_cli``."""

from qywx_cli.cli import main

main()
