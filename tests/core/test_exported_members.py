"""qywx_cli.core's public surface: ``__all__``, the lazy loader and the typed imports agree."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import qywx_cli.core as core

INIT = Path(core.__file__)


def _type_checking_imports() -> dict[str, str]:
    """name -> module of the imports under ``if TYPE_CHECKING:`` in core/__init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    (block,) = (
        node
        for node in tree.body
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
        if node.test.id == "TYPE_CHECKING"
    )
    found: dict[str, str] = {}
    for stmt in block.body:
        assert isinstance(stmt, ast.ImportFrom) and stmt.module is not None
        for alias in stmt.names:
            found[alias.asname or alias.name] = stmt.module
    return found


def test_all_is_sorted_without_duplicates() -> None:
    assert core.__all__ == sorted(set(core.__all__), key=lambda n: (not n.isupper(), n))


def test_every_exported_name_is_loaded_from_the_module_that_exports_it() -> None:
    exports = core._EXPORTS
    assert set(exports) == set(core.__all__)
    for name, module_name in exports.items():
        module = importlib.import_module(f"qywx_cli.core.{module_name}")
        assert name in module.__all__, (name, module_name)
        assert getattr(core, name) is getattr(module, name)


def test_typed_imports_match_the_lazy_table() -> None:
    expected = {name: f"qywx_cli.core.{module}" for name, module in core._EXPORTS.items()}
    assert _type_checking_imports() == expected


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from qywx_cli.core import *", namespace)
    assert sorted(n for n in namespace if n != "__builtins__") == sorted(core.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        core.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("core.NoSuchThing resolved")


def test_importing_the_package_loads_no_submodule() -> None:
    """The CLI imports submodules directly; the package itself must cost nothing."""
    code = (
        "import sys, qywx_cli.core\n"
        "print(sorted(m for m in sys.modules if m.startswith('qywx_cli.core.')))\n"
        "print('httpx' in sys.modules, 'sqlite_utils' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["[]", "False False"]


def test_the_lazily_loaded_record_classes_are_listed_once_alike() -> None:
    """store.records names the classes of store/authrecords.py so that it can load them
    on first use without importing the module; the two lists must not drift apart, and
    each name must resolve, through the lazy path, to the class itself."""
    from qywx_cli.core.store import authrecords, records

    assert set(authrecords.__all__) == records.AUTH_RECORDS
    for name in sorted(records.AUTH_RECORDS):
        assert getattr(records, name) is getattr(authrecords, name)
