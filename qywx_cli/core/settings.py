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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from qywx_cli.core.errors import ConfigError, UsageError
from qywx_cli.core.limits import DEFAULT_LIMITS, ServerLimits
from qywx_cli.core.sealing import KEY_ENV, NO_KEYS, OLD_KEY_ENV, Keyring, SecretKey
from qywx_cli.core.store.records import (
    DEFAULT_LEASE_SECONDS,
    MAX_LEASE_SECONDS,
    MIN_LEASE_SECONDS,
)
from qywx_cli.core.urls import split_url

__all__ = ["CONFIG_FILE", "DEFAULT_API_BASE", "Settings", "load_settings"]

CONFIG_FILE = "qywx.toml"
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com/cgi-bin"

_KNOWN_KEYS = {
    "auths",
    "db",
    "api_base",
    "provider_corp_id",
    "max_clock_skew",
    "retention_days",
    "lease_seconds",
    "same_host_takeover",
    "provider_token",
    "provider_encoding_aes_key",
    "strict",
    "serve",
    "provider_secret",
    "secret_key",
}
_SERVE_KEYS = {"connection_limit", "channel_timeout", "header_timeout", "body_timeout"}
#: [serve] keys of observability (core/metrics.py, core/alerts.py, core/logfmt.py)
_SERVE_OBSERVE_KEYS = {
    "log_format",
    "metrics_port",
    "metrics_host",
    "metrics_token",
    "alert_webhook",
}
#: [serve] keys read by load_settings itself (strict may also be written at the top level)
_SERVE_OTHER_KEYS = {"strict", "health_probe_seconds"}
DEFAULT_HEALTH_PROBE_SECONDS: Final = 5.0
MAX_HEALTH_PROBE_SECONDS: Final = 300.0
LOG_FORMATS = ("text", "json")
_WEBHOOK_EXAMPLE = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…"
ENV_VAR_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""What an ``env:VAR`` reference (or ``--old-key-env VAR``) may name."""
# The system event URL's Token and EncodingAESKey follow the console's rules for any
# callback URL, the same as an instance's (wecom-protocol.md §1.1): setting -> (the
# field whose rule applies, what the rule says).
_SECRET_RULES: dict[str, tuple[str, str]] = {
    "provider_token": ("token", "must be 1 to 32 ASCII letters and digits"),
    "provider_encoding_aes_key": (
        "encodingAESKey",
        "must be 43 characters of letters, digits, '+' and '/'",
    ),
}


def _pattern(rules: str, name: str) -> str:
    """A field rule's pattern from config, imported only when a setting needs checking:
    every command loads settings, and ``log …`` must not pay for the validation rules."""
    from qywx_cli.core import config

    fields = config.BUSINESS_FIELDS if rules == "business" else config.AUTH_CONFIG_FIELDS
    return next(r for r in fields if r.name == name).pattern or ""


@dataclass(frozen=True)
class Settings:
    auths_dir: Path
    #: the store: a SQLite file (a Path) or a database URL kept as given (a str)
    db_path: Path | str
    api_base: str
    provider_corp_id: str | None = None
    #: seconds a POST callback's timestamp may differ from now (0 = unchecked)
    max_clock_skew: int = 300
    #: ``qywx serve`` prunes finished callback records older than this many days (None:
    #: keep every record); received and failed ones stay until handled
    retention_days: int | None = None
    #: how long a worker's claim on a callback keeps other workers (and hosts) away
    #: unless renewed (every :func:`.store.records.renew_interval` seconds while it
    #: works), so a killed host's records are taken over after about this long. Every
    #: host sharing a database must use the same value.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    #: take back at once the claims of processes that ended on this machine, rather
    #: than after their lease (:mod:`.store.claimants`); off where machines are cloned
    #: from one memory snapshot, which share everything the check goes by
    same_host_takeover: bool = True
    config_file: Path | None = None
    #: the 系统事件接收URL's Token and EncodingAESKey (服务商后台 → 通用开发参数); with
    #: ``provider_corp_id`` they enable the ``/notify/provider`` route. Never in a repr.
    provider_token: str | None = field(default=None, repr=False)
    provider_encoding_aes_key: str | None = field(default=None, repr=False)
    #: ``qywx serve``: access and event log lines as text or one JSON object each
    log_format: str = "text"
    #: ``qywx serve``: a separate /metrics listener (None = off) and its interface
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: ``qywx serve``: /metrics on the public port for ``Authorization: Bearer`` this
    metrics_token: str | None = field(default=None, repr=False)
    #: ``qywx serve``: where alerts are POSTed (a WeCom group robot or any JSON webhook);
    #: its query string holds the robot's key, so it is a secret too
    alert_webhook: str | None = field(default=None, repr=False)
    #: the HTTP edge's connection limits (``[serve]`` in qywx.toml)
    http_limits: ServerLimits = DEFAULT_LIMITS
    #: the provider_secret (服务商管理后台 → 通用开发参数) for the provider API; never shown
    provider_secret: str | None = field(default=None, repr=False)
    #: where provider_secret was looked for, for the one-line error when it is missing
    provider_secret_source: str = "QYWX_PROVIDER_SECRET"
    #: the key sealing permanent codes and cached tokens in the store (core/sealing.py),
    #: plus an older one still accepted for reading during a rotation; empty = plaintext
    secret_keys: Keyring = field(default=NO_KEYS, repr=False)

    @property
    def has_provider_callbacks(self) -> bool:
        """True when the system event URL can be served: token, key and provider corp id."""
        return bool(
            self.provider_token and self.provider_encoding_aes_key and self.provider_corp_id
        )

    #: ``qywx serve`` refuses to start while any instance cannot be loaded
    strict: bool = False
    #: ``qywx serve``: how long /healthz reuses its write probe (one commit, one fsync)
    #: before it probes again; 0 probes on every request
    health_probe_seconds: float = DEFAULT_HEALTH_PROBE_SECONDS


def _serve_limits(data: Any, path: Path) -> ServerLimits:
    """``[serve]``: connection_limit and the three timeouts, each checked like the flags."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: serve must be a table ([serve])")
    read_elsewhere = _SERVE_OBSERVE_KEYS | _SERVE_OTHER_KEYS
    unknown = sorted(set(data) - _SERVE_KEYS - read_elsewhere)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [serve]: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_SERVE_KEYS | read_elsewhere))}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in read_elsewhere:
            continue  # read by load_settings
        whole = key == "connection_limit"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            kind = "a whole number" if whole else "a number of seconds"
            raise ConfigError(f"{path}: serve.{key} must be {kind}, not {value!r}")
        values[key] = value
    limits = ServerLimits(**values)
    try:
        return limits.check()
    except UsageError as exc:
        raise ConfigError(f"{path}: serve.{exc.message}") from None


def _seconds(value: Any, key: str, low: float, high: float, path: Path) -> float:
    """A qywx.toml number of seconds within [low, high] (NaN and booleans refused)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(
            f"{path}: {key} must be a number of seconds from {low:g} to {high:g}, "
            f"not {str(value)[:40]!r}"
        )
    return float(value)


MAX_TOML_BYTES: Final = 1024 * 1024
"""A qywx.toml is a few lines; a bigger file is another file, read no further."""
MAX_KEY_PARTS: Final = 32
"""Dots in a key (or table header) before tomllib is asked: qywx's keys have one."""


def _read_toml(path: Path) -> dict[str, Any]:
    # Imported only when there is a qywx.toml to read: every command loads settings.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_TOML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_TOML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_TOML_BYTES // 1024} KiB; not a qywx.toml")
    for number, line in enumerate(raw.splitlines(), 1):
        # tomllib's time grows with the square of a dotted key's parts: one 40 KB line of
        # them took seconds and gigabytes, 100,000 parts were killed for memory. qywx's
        # keys are two deep, so anything near this is no qywx setting.
        if line.partition(b"=")[0].count(b".") > MAX_KEY_PARTS:
            raise ConfigError(
                f"{path}: line {number} has a key of more than {MAX_KEY_PARTS} dotted parts"
            )
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    return data


def _check_url(value: Any, where: str, *, example: str = DEFAULT_API_BASE) -> str:
    """WeCom's API base must be an absolute http(s) URL; tests point it at a fake server."""
    parts = split_url(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        # The value is not echoed: a URL may carry credentials (https://user:pass@…).
        raise ConfigError(f"{where} must be an absolute http(s) URL such as {example}")
    return str(value).rstrip("/")


def _check_corp_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(_pattern("business", "corpId"), value):
        raise ConfigError(f"{where} must be a corp id (ww…/wx… or an open corpid), not {value!r}")
    return value


def _secret(
    key: str, data: Mapping[str, Any], env: Mapping[str, str], path: Path, table: str = ""
) -> str | None:
    """A secret setting: ``QYWX_<KEY>`` in the environment, else ``key`` in qywx.toml, whose
    value may be ``env:VAR``. Messages name the key or variable, never the value."""
    env_key = f"QYWX_{key.upper()}"
    if env.get(env_key):
        value, where = env[env_key], env_key
    elif key in data:
        raw = data[key]
        where = f"{path}: {table}{key}"
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"{where} must be a non-empty string or env:VAR")
        if raw.startswith("env:"):
            var = raw[len("env:") :]
            if not ENV_VAR_NAME.fullmatch(var):
                raise ConfigError(f"{where} is not a valid env:VAR reference")
            if not env.get(var):
                raise ConfigError(f"{where} refers to ${var}, which is not set")
            value, where = env[var], f"{where} (from ${var})"
        else:
            value = raw
    else:
        return None
    if key in _SECRET_RULES:
        field_name, shape = _SECRET_RULES[key]
        if not re.fullmatch(_pattern("auth_config", field_name), value):
            raise ConfigError(f"{where} {shape} (the value is not shown)")
    if key == "alert_webhook":
        value = _check_url(value, where, example=_WEBHOOK_EXAMPLE)
    return value


def load_settings(
    *,
    config: Path | None = None,
    auths: Path | None = None,
    db: Path | str | None = None,
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

    def pick_db(flag: Path | str | None) -> Path | str:
        """A path like any other, or a database URL (``postgresql://…``) kept as given:
        a URL is not a file name, and joining it to a folder would break it."""
        from qywx_cli.core.store import scheme_of  # light: no backend is imported

        for value in (flag, env.get("QYWX_DB") or None, data.get("db")):
            if isinstance(value, str) and scheme_of(value) != "sqlite":
                return value
            if value is not None:
                break
        if isinstance(flag, str):
            flag = Path(flag)
        return pick_path(flag, "QYWX_DB", "db", "qywx.db")

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

    retention = data.get("retention_days")
    if retention is not None and (
        not isinstance(retention, int) or isinstance(retention, bool) or not 1 <= retention <= 36600
    ):
        raise ConfigError(
            f"{path}: retention_days must be a whole number of days from 1 to 36600, not "
            f"{str(retention)[:40]!r}"
        )

    lease = _seconds(
        data.get("lease_seconds", DEFAULT_LEASE_SECONDS),
        "lease_seconds",
        MIN_LEASE_SECONDS,
        MAX_LEASE_SECONDS,
        path,
    )

    takeover = data.get("same_host_takeover", True)
    if not isinstance(takeover, bool):
        raise ConfigError(
            f"{path}: same_host_takeover must be true or false, not {repr(takeover)[:40]}"
        )

    table = data.get("serve")
    serve_table: dict[str, Any] = table if isinstance(table, dict) else {}
    if "strict" in data and "strict" in serve_table and data["strict"] != serve_table["strict"]:
        raise ConfigError(f"{path}: strict and serve.strict disagree; keep one of them")
    strict = data.get("strict", serve_table.get("strict", False))
    if not isinstance(strict, bool):
        raise ConfigError(f"{path}: strict must be true or false, not {strict!r}")

    provider: str | None = None
    if env.get("QYWX_PROVIDER_CORP_ID"):
        provider = _check_corp_id(env["QYWX_PROVIDER_CORP_ID"], "QYWX_PROVIDER_CORP_ID")
    elif "provider_corp_id" in data:
        provider = _check_corp_id(data["provider_corp_id"], f"{path}: provider_corp_id")

    provider_token = _secret("provider_token", data, env, path)
    provider_key = _secret("provider_encoding_aes_key", data, env, path)
    if (provider_token is None) != (provider_key is None):
        given, needed = (
            ("provider_token", "provider_encoding_aes_key")
            if provider_key is None
            else ("provider_encoding_aes_key", "provider_token")
        )
        raise ConfigError(f"{given} is set but {needed} is not; the system event URL needs both")
    if provider_token is not None and provider is None:
        raise ConfigError(
            "provider_token is set but provider_corp_id is not; the system event URL's "
            "receiveid is the provider corp id"
        )

    limits = _serve_limits(data["serve"], path) if "serve" in data else DEFAULT_LIMITS
    serve: dict[str, Any] = data.get("serve", {})
    log_format = serve.get("log_format", "text")
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"{path}: serve.log_format must be one of {', '.join(LOG_FORMATS)}")
    metrics_port = serve.get("metrics_port")
    if metrics_port is not None and (
        not isinstance(metrics_port, int)
        or isinstance(metrics_port, bool)
        or not 0 <= metrics_port <= 65535
    ):
        raise ConfigError(f"{path}: serve.metrics_port must be a port number (0-65535)")
    metrics_host = serve.get("metrics_host", "127.0.0.1")
    if not isinstance(metrics_host, str) or not metrics_host:
        raise ConfigError(f"{path}: serve.metrics_host must be an interface name or address")

    probe = _seconds(
        serve.get("health_probe_seconds", DEFAULT_HEALTH_PROBE_SECONDS),
        "serve.health_probe_seconds",
        0.0,
        MAX_HEALTH_PROBE_SECONDS,
        path,
    )

    secret, source = _provider_secret(data, env, path)

    return Settings(
        secret_keys=_secret_keys(data, env, path),
        provider_secret=secret,
        provider_secret_source=source,
        log_format=log_format,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_token=_secret("metrics_token", serve, env, path, "serve."),
        alert_webhook=_secret("alert_webhook", serve, env, path, "serve."),
        auths_dir=pick_path(auths, "QYWX_AUTHS", "auths", "auths"),
        db_path=pick_db(db),
        api_base=api_base,
        provider_corp_id=provider,
        max_clock_skew=skew,
        retention_days=retention,
        lease_seconds=lease,
        same_host_takeover=takeover,
        config_file=path if path.is_file() else None,
        provider_token=provider_token,
        provider_encoding_aes_key=provider_key,
        strict=strict,
        http_limits=limits,
        health_probe_seconds=probe,
    )


def _env_only(data: Mapping[str, Any], key: str, path: Path, what: str) -> str:
    """The variable that qywx.toml's ``key = "env:VAR"`` names: for the settings whose
    value must never sit in the file, anything but such a reference is refused."""
    raw = data[key]
    var = raw[len("env:") :] if isinstance(raw, str) and raw.startswith("env:") else ""
    if not ENV_VAR_NAME.fullmatch(var):
        raise ConfigError(
            f"{path}: {key} must be an env:VAR reference (the {what} itself belongs in the "
            "environment, not in the file)"
        )
    return var


def _secret_keys(data: Mapping[str, Any], env: Mapping[str, str], path: Path) -> Keyring:
    """``QYWX_SECRET_KEY``, else qywx.toml's ``secret_key = "env:VAR"``; and
    ``QYWX_OLD_SECRET_KEY``, a key still accepted for reading while a rotation rolls out.

    Like provider_secret, the file may only name a variable (a key beside the config in
    version control protects nothing). A named variable that is unset is an error: the
    operator asked for encryption, and silently writing plaintext would be worse.
    """
    current: SecretKey | None = None
    if env.get(KEY_ENV):
        current = SecretKey.parse(env[KEY_ENV], KEY_ENV)
    elif "secret_key" in data:
        var = _env_only(data, "secret_key", path, "key")
        if not env.get(var):
            if SecretKey.looks_like_one(var):  # the key itself where the variable's name belongs
                raise ConfigError(
                    f'{path}: secret_key = "env:VAR" names the variable that holds the '
                    "key, not the key itself (the value is not shown)"
                )
            raise ConfigError(f"{path}: secret_key refers to ${var}, which is not set")
        current = SecretKey.parse(env[var], f"${var} (secret_key in {path})")
    old = (SecretKey.parse(env[OLD_KEY_ENV], OLD_KEY_ENV),) if env.get(OLD_KEY_ENV) else ()
    if current is None and not old:
        return NO_KEYS
    return Keyring(current).with_old(*old)


def _provider_secret(
    data: Mapping[str, Any], env: Mapping[str, str], path: Path
) -> tuple[str | None, str]:
    """``QYWX_PROVIDER_SECRET``, else qywx.toml's ``provider_secret = "env:VAR"``.

    The file may only name a variable: the secret that mints provider tokens (ID
    conversion, licences, authorization links) does not belong in a file under version
    control. An unset variable is not an error here — only the commands that call the
    provider API need it, and they say which variable to set.
    """
    if env.get("QYWX_PROVIDER_SECRET"):
        return env["QYWX_PROVIDER_SECRET"], "QYWX_PROVIDER_SECRET"
    if "provider_secret" not in data:
        return None, "QYWX_PROVIDER_SECRET"
    var = _env_only(data, "provider_secret", path, "secret")
    return (env.get(var) or None), f"${var} (provider_secret in {path})"
