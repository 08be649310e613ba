"""Where qywx finds things: flags, then environment, then ``qywx.toml``, then defaults.

One resolved :class:`Settings` is passed down so no module reads ``os.environ`` on
its own (tests pass their own mapping instead of patching the process).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qywx_cli.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CONFIG_FILE", "DEFAULT_API_BASE", "Settings", "load_settings"]

CONFIG_FILE = "qywx.toml"
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"

_KNOWN_KEYS = {"auths", "db", "api_base", "provider_corp_id", "max_clock_skew"}


@dataclass(frozen=True)
class Settings:
    auths_dir: Path
    db_path: Path
    api_base: str
    provider_corp_id: str | None = None
    #: seconds a POST callback's timestamp may differ from now (0 = unchecked)
    max_clock_skew: int = 300
    config_file: Path | None = None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    return data


def load_settings(
    *,
    config: Path | None = None,
    auths: Path | None = None,
    db: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings; paths in qywx.toml are relative to the file's folder."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    if config is not None and not config.is_file():
        raise ConfigError(f"config file not found: {config}")
    path = config if config is not None else (cwd / CONFIG_FILE)
    data = _read_toml(path) if path.is_file() else {}
    base = path.parent if path.is_file() else cwd

    def pick_path(flag: Path | None, env_key: str, key: str, default: str) -> Path:
        if flag is not None:
            return flag
        if env.get(env_key):
            return Path(env[env_key])
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigError(f"{path}: {key} must be a string")
            return base / data[key]
        return cwd / default

    api_base = env.get("QYWX_API_BASE") or data.get("api_base") or DEFAULT_API_BASE
    if not isinstance(api_base, str) or not api_base.startswith(("http://", "https://")):
        raise ConfigError("api_base / QYWX_API_BASE must be an http(s) URL")
    skew = data.get("max_clock_skew", 300)
    if not isinstance(skew, int) or isinstance(skew, bool) or skew < 0:
        raise ConfigError(f"{path}: max_clock_skew must be a non-negative integer (seconds)")
    provider = env.get("QYWX_PROVIDER_CORP_ID") or data.get("provider_corp_id") or None
    return Settings(
        auths_dir=pick_path(auths, "QYWX_AUTHS", "auths", "auths"),
        db_path=pick_path(db, "QYWX_DB", "db", "qywx.db"),
        api_base=api_base.rstrip("/"),
        provider_corp_id=provider,
        max_clock_skew=skew,
        config_file=path if path.is_file() else None,
    )
