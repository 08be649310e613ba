"""Shared fixtures: the published vectors live in ../shared/vectors beside the repo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = REPO / "sample_auths"


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    path = SHARED / "vectors" / "wxbizmsgcrypt.json"
    if not path.is_file():
        pytest.fail(f"published vectors not found at {path}: check out ../shared beside the repo")
    return list(json.loads(path.read_text(encoding="utf-8"))["vectors"])


@pytest.fixture
def auths(tmp_path: Path) -> Path:
    """A private copy of sample_auths/ that a test may break."""
    dest = tmp_path / "auths"
    shutil.copytree(SAMPLES, dest)
    return dest
