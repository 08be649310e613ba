"""The suite's own start-up step (tests/bytecode.py): the caches it writes are the ones
pytest and Python read, and a current cache is left alone."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests import bytecode


def test_warm_writes_the_caches_pytest_reads_and_only_when_stale(
    tmp_path: Path, pytestconfig: pytest.Config
) -> None:
    from _pytest.assertion import rewrite

    tests, package = tmp_path / "tests", tmp_path / "pkg"
    tests.mkdir()
    package.mkdir()
    (package / "mod.py").write_text("VALUE = 1\n", encoding="utf-8")
    (tests / "helper.py").write_text("HELP = 2\n", encoding="utf-8")
    for name in ("test_a.py", "test_b.py", "conftest.py"):
        (tests / name).write_text("def test_x():\n    assert 1 + 1 == 2\n", encoding="utf-8")

    assert bytecode.warm(pytestconfig, tests, [package]) == 3

    def rewritten(name: str) -> object:
        source = tests / name
        pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
        return rewrite._read_pyc(source, pyc)

    assert all(rewritten(n) is not None for n in ("test_a.py", "test_b.py", "conftest.py"))
    for plain in (package / "mod.py", tests / "helper.py"):
        assert Path(importlib.util.cache_from_source(str(plain))).is_file()
    assert not Path(importlib.util.cache_from_source(str(tests / "test_a.py"))).exists()

    assert bytecode.warm(pytestconfig, tests, [package]) == 0  # all current
    (tests / "test_b.py").write_text("def test_y():\n    assert True\n", encoding="utf-8")
    assert bytecode.warm(pytestconfig, tests, [package]) == 1
    assert rewritten("test_b.py") is not None
