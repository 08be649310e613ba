"""Private files and folders: what holds a secret is readable by its owner only.

The database holds every corp's permanent code (the 代开发 app's secret) and access
tokens, and an instance folder holds the suite secret, so both are kept 0600 / 0700
whatever the process umask, and a file found wider than that (a copied backup, a
``chmod 666`` made while debugging) is narrowed, or refused when it cannot be.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["make_private_dirs", "make_private_file"]


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parent 0700; existing folders are left alone.

    ``Path.mkdir(mode=…, parents=True)`` applies the mode to the last folder only, and
    the umask to all of them, so under ``umask 000`` its parents come out 0777.
    """
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # created meanwhile by another process
            continue
        os.chmod(path, 0o700)  # the umask may have narrowed it to something unusable


def make_private_file(path: Path) -> bool:
    """Narrow ``path`` to 0600 if group or others have any access; True if it changed.

    Raises OSError (``EPERM`` when another user owns it) for the caller to refuse with
    one line. A missing file is fine (False).
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    if not mode & 0o077:
        return False
    os.chmod(path, mode & 0o700 | 0o600)
    return True
