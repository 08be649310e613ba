"""What ``qywx init`` writes: an instance folder that validates on the first try.

The token and EncodingAESKey are generated here because the developer chooses them
and enters them in the WeCom console (the console's own "random" button makes the
same kind of values). The suite secret comes from WeCom, so it is never invented:
it is taken from the caller or written as an ``env:`` reference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qywx_cli.core.config import ELEMENT_TYPE, ENV_PREFIX, NAME_RE
from qywx_cli.core.crypto import generate_encoding_aes_key, generate_token
from qywx_cli.core.errors import ConfigError, UsageError

__all__ = ["SCHEMA_URLS", "Scaffold", "env_var_names", "write_instance"]

#: ``$schema`` values written by init; ``qywx schema`` exports the same documents.
SCHEMA_URLS = {
    "e": "https://qywx.dev/schema/e.json",
    "business": "https://qywx.dev/schema/business.json",
}


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


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


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
    token: Callable[[], str] = generate_token,
    aes_key: Callable[[], str] = generate_encoding_aes_key,
) -> Scaffold:
    """Write ``auths_dir/name/{e.json,name.json}``; refuse to overwrite unless ``force``."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"instance name {name!r} must start with a letter and contain only "
            "letters, digits and '_'"
        )
    if not suite_id.strip():
        raise UsageError("--suite-id must not be empty")
    folder = auths_dir / name
    e_path, biz_path = folder / "e.json", folder / f"{name}.json"
    existing = [p for p in (e_path, biz_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; use --force to overwrite")
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
        lines = [f"export {names[k]}={v}" for k, v in generated.items()]
        if suite_secret:
            lines.insert(0, f"export {names['suiteSecret']}={suite_secret}")
        secrets_file = folder / f"{name}.secrets.env"
        _write_private(secrets_file, "\n".join(lines) + "\n")
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
