"""Where qywx finds things: flags, then environment, then ``qywx.toml``, then defaults.

One resolved :class:`Settings` is passed down so no module reads ``os.environ`` on
its own (tests pass their own mapping instead of patching the process).

Relative paths stay relative: a ``qywx.toml`` path is joined to the file's folder, an
environment path to the working folder, and nothing is made absolute, so the file
names ``qywx validate`` reports are the ones CI annotations (GitHub's ``file=``) can
attach to the repository.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qywx_cli.core.config import BUSINESS_FIELDS
from qywx_cli.core.errors import ConfigError, UsageError
from qywx_cli.core.urls import split_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CONFIG_FILE", "DEFAULT_API_BASE", "Settings", "load_settings"]

CONFIG_FILE = "qywx.toml"
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"

_KNOWN_KEYS = {"auths", "db", "api_base", "provider_corp_id", "max_clock_skew"}
_CORP_ID_RULE = next(r for r in BUSINESS_FIELDS if r.name == "corpId")


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    return data


def _check_url(value: Any, where: str) -> str:
    """WeCom's API base must be an absolute http(s) URL; tests point it at a fake server."""
    parts = split_url(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        # The value is not echoed: a URL may carry credentials (https://user:pass@…).
        raise ConfigError(f"{where} must be an absolute http(s) URL such as {DEFAULT_API_BASE}")
    return str(value).rstrip("/")


def _check_corp_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(_CORP_ID_RULE.pattern or "", value):
        raise ConfigError(f"{where} must be a corp id (ww…/wx… or an open corpid), not {value!r}")
    return value


def load_settings(
    *,
    config: Path | None = None,
    auths: Path | None = None,
    db: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings: flag > environment > qywx.toml > default, for each key.

    ``cwd`` is the folder relative defaults and environment paths are taken from
    (default: the working folder, kept as the relative path ``.``).
    """
    env = os.environ if env is None else env
    cwd = Path() if cwd is None else cwd
    if config is not None and not config.is_file():
        raise UsageError(f"config file not found: {config}")
    path = config if config is not None else (cwd / CONFIG_FILE)
    data = _read_toml(path) if path.is_file() else {}
    base = path.parent if path.is_file() else cwd

    def pick_path(flag: Path | None, env_key: str, key: str, default: str) -> Path:
        if flag is not None:
            return flag
        if env.get(env_key):
            return cwd / env[env_key]
        if key in data:
            value = data[key]
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{path}: {key} must be a non-empty string (a path)")
            return base / value
        return cwd / default

    if env.get("QYWX_API_BASE"):
        api_base = _check_url(env["QYWX_API_BASE"], "QYWX_API_BASE")
    elif "api_base" in data:
        api_base = _check_url(data["api_base"], f"{path}: api_base")
    else:
        api_base = DEFAULT_API_BASE

    skew = data.get("max_clock_skew", 300)
    if not isinstance(skew, int) or isinstance(skew, bool) or skew < 0:
        raise ConfigError(
            f"{path}: max_clock_skew must be a non-negative whole number of seconds, not {skew!r}"
        )

    provider: str | None = None
    if env.get("QYWX_PROVIDER_CORP_ID"):
        provider = _check_corp_id(env["QYWX_PROVIDER_CORP_ID"], "QYWX_PROVIDER_CORP_ID")
    elif "provider_corp_id" in data:
        provider = _check_corp_id(data["provider_corp_id"], f"{path}: provider_corp_id")

    return Settings(
        auths_dir=pick_path(auths, "QYWX_AUTHS", "auths", "auths"),
        db_path=pick_path(db, "QYWX_DB", "db", "qywx.db"),
        api_base=api_base,
        provider_corp_id=provider,
        max_clock_skew=skew,
        config_file=path if path.is_file() else None,
    )
