"""Allow ``python -m qywx_cli``."""

from qywx_cli._entry import main

main()
