"""Global options shared by every command (``--config --auths --db --debug``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qywx_cli.core.settings import Settings, load_settings


@dataclass
class Globals:
    config: Path | None = None
    auths: Path | None = None
    db: str | None = None
    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(config=self.config, auths=self.auths, db=self.db)
        return self._settings


def globals_of(ctx: Any) -> Globals:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, Globals) else Globals()
