"""Write the checkout's bytecode caches once, before the xdist workers start.

On a fresh clone (every CI run) there is no ``__pycache__`` yet, and every xdist worker
collects every test module at the same moment. All four found pytest's cache of the
rewritten test modules (``*-pytest-*.pyc``) missing and rewrote all of them, 4.5 s of CPU
each: the rewrite walks each module's syntax tree in Python, ten times the cost of
compiling it. They, their servers and the commands they ran also compiled qywx_cli
side by side until the first of them had written its cache. A fresh clone's run took
99-111 s of wall and 172-190 s of CPU; with this step, 84-86 s and 142-146 s, the same
as a second run (two of each, alternating, same machine).

So the controlling process compiles qywx_cli and the test helpers (``compileall``) and
rewrites the test modules whose cache is missing or out of date, split over one forked
process per core. A second run finds nothing to do: it reads each cache's header and
source hash, a few milliseconds.

The rewrite leans on pytest's private functions. If a pytest release changes them, that
part is skipped and each worker rewrites for itself as before: slower, never wrong.
"""

from __future__ import annotations

import compileall
import os
from collections.abc import Callable, Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest


def warm(config: pytest.Config, tests: Path, packages: Sequence[Path]) -> int:
    """Compile ``packages`` and the helper modules under ``tests``, and rewrite the test
    modules there whose cache is stale; return how many test modules were rewritten."""
    patterns = [*config.getini("python_files"), "conftest.py"]
    sources = [p for p in sorted(tests.rglob("*.py")) if "__pycache__" not in p.parts]
    modules = [p for p in sources if any(fnmatch(p.name, pattern) for pattern in patterns)]
    helpers = [p for p in sources if p not in modules]
    rewrite_all, stale = _stale_test_modules(config, modules)
    stale.sort(key=lambda path: path.stat().st_size, reverse=True)
    ways = max(1, min(os.cpu_count() or 1, len(stale)))
    shares = [stale[i::ways] for i in range(ways)]  # largest first, dealt round-robin
    children: list[int] = []
    for share in shares[1:]:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child leaves through os._exit
            status = 1
            try:
                rewrite_all(share)
                status = 0
            finally:
                os._exit(status)
        children.append(pid)
    try:
        for package in packages:
            compileall.compile_dir(package, quiet=2)
        for helper in helpers:
            compileall.compile_file(helper, quiet=2)
        rewrite_all(shares[0] if shares else [])
    except Exception:
        pass  # a worker meets the same fault (a syntax error, say) and reports it
    finally:
        for pid in children:
            os.waitpid(pid, 0)
    return len(stale)


def _stale_test_modules(
    config: pytest.Config, modules: Sequence[Path]
) -> tuple[Callable[[Sequence[Path]], None], list[Path]]:
    """A function that rewrites and caches test modules as pytest's import hook does, and
    those of ``modules`` whose cache is missing or stale (none if pytest is not the one
    expected, or asserts are not rewritten)."""

    def nothing(paths: Sequence[Path]) -> None:
        return None

    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        read_pyc: Callable[..., Any] = rewrite._read_pyc
        rewrite_test: Callable[..., Any] = rewrite._rewrite_test
        write_pyc: Callable[..., Any] = rewrite._write_pyc
        tail: str = rewrite.PYC_TAIL
        cache_dir: Callable[[Path], Path] = rewrite.get_cache_dir
    except (ImportError, AttributeError, KeyError):
        return nothing, []
    if getattr(config.option, "assertmode", "rewrite") != "rewrite":
        return nothing, []

    def pyc(source: Path) -> Path:
        return cache_dir(source) / (source.name[:-3] + tail)

    def rewrite_all(paths: Sequence[Path]) -> None:
        for path in paths:
            cache_dir(path).mkdir(exist_ok=True)
            source_hash, code = rewrite_test(path, config)
            write_pyc(state, code, source_hash, pyc(path))

    try:
        return rewrite_all, [path for path in modules if read_pyc(path, pyc(path)) is None]
    except TypeError:  # another signature than the one above
        return nothing, []
