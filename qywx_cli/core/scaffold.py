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
import re
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qywx_cli.core.config import (
    AUTH_CONFIG_FIELDS,
    BUSINESS_FIELDS,
    E_JSON_FIELDS,
    ELEMENT_TYPE,
    ENV_PREFIX,
    ENV_REFERENCE_PATTERN,
    NAME_RE,
    FieldRule,
    value_problem,
)
from qywx_cli.core.errors import ConfigError, UsageError
from qywx_cli.core.private import make_private_dirs

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
    #: the instance of the same suite whose values were reused, and which ones
    reused_from: str | None = None
    reused: tuple[str, ...] = ()
    #: the freshly generated callback token and EncodingAESKey, which the user types into
    #: the WeCom console's callback settings (None when reused from a sibling)
    token: str | None = field(default=None, repr=False)
    encoding_aes_key: str | None = field(default=None, repr=False)
    #: a suite secret given for a suite whose sibling already holds one (not written)
    secret_ignored: bool = False


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


def _suite_sibling(auths_dir: Path, suite_id: str, name: str) -> tuple[str | None, dict[str, str]]:
    """The first other active instance of ``suite_id`` and its secrets as written.

    WeCom signs every command callback of a suite with one token and EncodingAESKey,
    and the suite has one secret, so a second instance of a suite (another corp) must
    carry the same three values; fresh ones would fail ``suite-conflict``. Values are
    returned as written (literal or ``env:`` reference), and only if validate would
    accept them.
    """
    try:
        folders = sorted(p for p in auths_dir.iterdir() if p.is_dir() and p.name != name)
    except OSError:
        return None, {}
    for folder in folders:
        try:
            data = json.loads((folder / f"{folder.name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):  # RecursionError: absurd nesting
            continue
        auth = data.get("authConfig") if isinstance(data, dict) else None
        if not isinstance(auth, dict) or auth.get("suiteId") != suite_id:
            continue
        if data.get("isActive", True) is False:
            continue
        found = {
            k: v
            for k in ("token", "encodingAESKey", "suiteSecret")
            if isinstance(v := auth.get(k), str)
            and (
                re.fullmatch(ENV_REFERENCE_PATTERN, v)
                or value_problem(_rule(AUTH_CONFIG_FIELDS, k), v) is None
            )
        }
        if "token" in found and "encodingAESKey" in found:
            return folder.name, found
    return None, {}


@contextmanager
def _file_errors(folder: Path) -> Iterator[None]:
    """A file-system failure while writing ``folder`` (not a folder, permissions, a name
    too long) as the one-line ConfigError every qywx failure is."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename is not None else folder
        raise ConfigError(f"cannot write {where}: {exc.strerror or exc}") from None


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
    suite_secret_source: str = "the suite secret given",
    force: bool = False,
    secrets_from_env: bool = False,
    with_schema: bool = True,
    token: Callable[[], str] | None = None,
    aes_key: Callable[[], str] | None = None,
) -> Scaffold:
    """Write ``auths_dir/name/{e.json,name.json}``; refuse to overwrite unless ``force``.

    ``token`` and ``aes_key`` default to fresh random values from ``crypto``; tests pass
    fixed sources. Another active instance of the same suite in ``auths_dir`` lends its
    token, key and (unless one is given) secret instead: see :func:`_suite_sibling`.
    With ``secrets_from_env`` all three secrets become ``env:`` references and literal
    values go to a 0600 ``<name>.secrets.env`` (shell ``export`` lines), git-ignored by
    a ``.gitignore`` in the instance folder. File-system failures are ConfigErrors.
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
        problem = value_problem(rule, suite_secret, suite_secret_source)
        if problem is not None:
            raise ConfigError(problem[1])
    folder = auths_dir / name
    e_path, biz_path = folder / "e.json", folder / f"{name}.json"
    with _file_errors(folder):  # exists() too can fail: a name too long, a file as --dir
        existing = [p for p in (e_path, biz_path) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; use --force to overwrite")
    reused_from, values = _suite_sibling(auths_dir, suite_id, name)
    # A suite has one secret: the sibling's, as it writes it (an env: reference stays a
    # reference), wins over one given now; a second spelling would drift at rotation.
    secret_ignored = bool(suite_secret) and "suiteSecret" in values
    if suite_secret and not secret_ignored:
        values["suiteSecret"] = suite_secret
    reused = tuple(
        k
        for k in ("token", "encodingAESKey", "suiteSecret")
        if k in values and not (k == "suiteSecret" and suite_secret and not secret_ignored)
    )
    fresh: tuple[str, str] | None = None
    if "token" not in values:
        if token is None or aes_key is None:
            default_token, default_key = _generators()
            token, aes_key = token or default_token, aes_key or default_key
        fresh = (token(), aes_key())
        values.update(token=fresh[0], encodingAESKey=fresh[1])
    names = env_var_names(name)
    env_vars: dict[str, str] = {}
    auth: dict[str, str] = {"suiteId": suite_id}
    exports: dict[str, str] = {}
    for key in ("suiteSecret", "encodingAESKey", "token"):
        value = values.get(key)
        if value is not None and (value.startswith(ENV_PREFIX) or not secrets_from_env):
            auth[key] = value  # a literal, or the sibling's reference kept as written
            continue
        auth[key] = ENV_PREFIX + names[key]
        env_vars[names[key]] = key
        if value is not None:
            exports[names[key]] = value
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
    secrets_file = folder / f"{name}.secrets.env" if exports else None
    with _file_errors(folder):
        make_private_dirs(folder)  # it holds the suite secret: 0700 whatever the umask
        if secrets_file is not None:
            lines = [f"export {var}={shlex.quote(v)}" for var, v in sorted(exports.items())]
            _write_private(secrets_file, "\n".join(lines) + "\n")
            _ignore_secrets(folder)
        _write_private(e_path, json.dumps(e_doc, ensure_ascii=False, indent=2) + "\n")
        os.chmod(e_path, 0o644)  # e.json holds no secret
        _write_private(biz_path, json.dumps(biz_doc, ensure_ascii=False, indent=2) + "\n")
    return Scaffold(
        folder,
        (e_path, biz_path),
        env_vars,
        secrets_file,
        reused_from,
        reused,
        token=fresh[0] if fresh else None,
        encoding_aes_key=fresh[1] if fresh else None,
        secret_ignored=secret_ignored,
    )
