"""What ``qywx init`` writes: an instance folder that validates on the first try.

The token and EncodingAESKey are generated here because the developer chooses them
and enters them in the WeCom console (the console's own "random" button makes the
same kind of values, wecom-protocol.md §1.1). The suite secret comes from WeCom, so it
is never invented: it is taken from the caller or written as an ``env:`` reference.

Every value is checked against the same :class:`~qywx_cli.core.config.FieldRule` that
``qywx validate`` applies before anything is written, so init cannot produce a folder
that validate rejects.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qywx_cli.core.config import (
    AUTH_CONFIG_FIELDS,
    BUSINESS_FIELDS,
    E_JSON_FIELDS,
    ELEMENT_TYPE,
    ENV_PREFIX,
    NAME_RE,
    FieldRule,
    value_problem,
)
from qywx_cli.core.errors import ConfigError, UsageError

__all__ = ["SCHEMA_URLS", "Scaffold", "env_var_names", "write_instance"]

#: ``$schema`` values written by init; ``qywx schema`` exports the same documents
#: with these as their ``$id`` (docs/ci.md maps them to local copies for editors).
SCHEMA_URLS = {
    "e": "https://qywx.dev/schema/e.json",
    "business": "https://qywx.dev/schema/business.json",
}

#: Written beside a generated secrets file so ``git add auths/`` cannot pick it up.
GITIGNORE_LINE = "*.secrets.env"


@dataclass(frozen=True)
class Scaffold:
    folder: Path
    files: tuple[Path, ...]
    #: env vars the user must set (name → what it holds), when secrets are references
    env_vars: dict[str, str]
    #: 0600 file holding generated secrets, with --secrets-from-env
    secrets_file: Path | None


def env_var_names(name: str) -> dict[str, str]:
    stem = "QYWX_" + "".join(c if c.isalnum() else "_" for c in name).upper()
    return {
        "suiteSecret": f"{stem}_SUITE_SECRET",
        "token": f"{stem}_TOKEN",
        "encodingAESKey": f"{stem}_ENCODING_AES_KEY",
    }


def _rule(rules: tuple[FieldRule, ...], name: str) -> FieldRule:
    return next(r for r in rules if r.name == name)


def _require(rules: tuple[FieldRule, ...], name: str, value: str, option: str) -> None:
    """Refuse a value validate would reject, naming the option it came from."""
    problem = value_problem(_rule(rules, name), value, option)
    if problem is not None:
        raise UsageError(problem[1])


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def _ignore_secrets(folder: Path) -> None:
    gitignore = folder / ".gitignore"
    lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.is_file() else []
    if GITIGNORE_LINE not in lines:
        gitignore.write_text("\n".join([*lines, GITIGNORE_LINE]) + "\n", encoding="utf-8")


def _generators() -> tuple[Callable[[], str], Callable[[], str]]:
    # Imported on use: the AES backend is not needed to validate or to print a schema.
    from qywx_cli.core.crypto import generate_encoding_aes_key, generate_token

    return generate_token, generate_encoding_aes_key


def write_instance(
    name: str,
    auths_dir: Path,
    *,
    suite_id: str,
    corp_id: str | None = None,
    title: str | None = None,
    suite_secret: str | None = None,
    force: bool = False,
    secrets_from_env: bool = False,
    with_schema: bool = True,
    token: Callable[[], str] | None = None,
    aes_key: Callable[[], str] | None = None,
) -> Scaffold:
    """Write ``auths_dir/name/{e.json,name.json}``; refuse to overwrite unless ``force``.

    ``token`` and ``aes_key`` default to fresh random values from ``crypto``; tests pass
    fixed sources. With ``secrets_from_env`` all three secrets become ``env:`` references
    and the generated values go to a 0600 ``<name>.secrets.env`` (shell ``export``
    lines), git-ignored by a ``.gitignore`` in the instance folder.
    """
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"instance name {name!r} must start with a letter and contain only "
            "ASCII letters, digits and '_'"
        )
    _require(AUTH_CONFIG_FIELDS, "suiteId", suite_id, "--suite-id")
    if corp_id is not None:
        _require(BUSINESS_FIELDS, "corpId", corp_id, "--corp-id")
    if title is not None:
        _require(E_JSON_FIELDS, "title", title, "--title")
    if suite_secret:
        rule = _rule(AUTH_CONFIG_FIELDS, "suiteSecret")
        problem = value_problem(rule, suite_secret, "the suite secret given")
        if problem is not None:
            raise ConfigError(problem[1])
    folder = auths_dir / name
    e_path, biz_path = folder / "e.json", folder / f"{name}.json"
    existing = [p for p in (e_path, biz_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; use --force to overwrite")
    if token is None or aes_key is None:
        default_token, default_key = _generators()
        token, aes_key = token or default_token, aes_key or default_key
    folder.mkdir(parents=True, exist_ok=True)

    names = env_var_names(name)
    generated = {"token": token(), "encodingAESKey": aes_key()}
    env_vars: dict[str, str] = {}
    secrets_file: Path | None = None
    auth: dict[str, str] = {"suiteId": suite_id}
    if secrets_from_env:
        for key in ("suiteSecret", "encodingAESKey", "token"):
            auth[key] = ENV_PREFIX + names[key]
            env_vars[names[key]] = key
        values = dict(generated, suiteSecret=suite_secret) if suite_secret else generated
        lines = [f"export {names[k]}={shlex.quote(v)}" for k, v in sorted(values.items())]
        secrets_file = folder / f"{name}.secrets.env"
        _write_private(secrets_file, "\n".join(lines) + "\n")
        _ignore_secrets(folder)
    else:
        if suite_secret:
            auth["suiteSecret"] = suite_secret
        else:
            auth["suiteSecret"] = ENV_PREFIX + names["suiteSecret"]
            env_vars[names["suiteSecret"]] = "suiteSecret"
        auth.update(generated)
    e_doc: dict[str, object] = {
        "title": title or f"{name} 企业微信代开发登录",
        "type": ELEMENT_TYPE,
    }
    biz_doc: dict[str, object] = {"authConfig": auth, "isActive": True}
    if corp_id:
        biz_doc["corpId"] = corp_id
    if with_schema:
        e_doc = {"$schema": SCHEMA_URLS["e"], **e_doc}
        biz_doc = {"$schema": SCHEMA_URLS["business"], **biz_doc}
    _write_private(e_path, json.dumps(e_doc, ensure_ascii=False, indent=2) + "\n")
    os.chmod(e_path, 0o644)  # e.json holds no secret
    _write_private(biz_path, json.dumps(biz_doc, ensure_ascii=False, indent=2) + "\n")
    return Scaffold(folder, (e_path, biz_path), env_vars, secrets_file)
