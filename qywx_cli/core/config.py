"""The auths/ folder model: load instance folders, validate them, report every problem.

Layout, exactly as qywx-proxy-login.md lays it out::

    auths/<Name>/e.json          {"title": …, "type": "auths.loginTypes.QywxProxyType"}
    auths/<Name>/<Name>.json     {"authConfig": {suiteId, suiteSecret, encodingAESKey, token},
                                  "isActive": true, "corpId": "ww…"}

Validation collects :class:`Diagnostic` objects and never stops at the first, because
CI wants the whole list in one run. The rules are data (:data:`E_JSON_FIELDS`,
:data:`AUTH_CONFIG_FIELDS`, :data:`BUSINESS_FIELDS`) so the JSON Schema export is
generated from the same source and cannot drift from ``validate``.

Secret values (suiteSecret, encodingAESKey, token) may be written as ``env:VAR`` and
are resolved from the environment; messages name the variable, never a value.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qywx_cli.core.crypto import ReceiveIdKind, WXBizMsgCrypt
from qywx_cli.core.errors import ConfigError, InstanceNotFound, UsageError

__all__ = [
    "AUTH_CONFIG_FIELDS",
    "AUTH_MODEL_ELEMENT",
    "BUSINESS_FIELDS",
    "ELEMENT_TYPE",
    "E_JSON_FIELDS",
    "AuthInstance",
    "Diagnostic",
    "FieldRule",
    "ValidationReport",
    "find_instance",
    "instance_dirs",
    "validate_paths",
]

ELEMENT_TYPE = "auths.loginTypes.QywxProxyType"
AUTH_MODEL_ELEMENT = "auths.loginTypes.QywxProxyType.QywxProxyAuthModel"
ENV_PREFIX = "env:"
MAX_CONFIG_BYTES = 1024 * 1024

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

Severity = Literal["error", "warning"]
JsonType = Literal["string", "boolean", "object"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One documented field: its JSON type, whether required, and its extra constraints."""

    name: str
    json_type: JsonType
    required: bool
    title: str
    description: str
    secret: bool = False
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    const: str | None = None
    default: Any = None


E_JSON_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "title", "string", True, "title", "元素显示名称 (display name of the element)", min_length=1
    ),
    FieldRule(
        "type",
        "string",
        True,
        "type",
        f"固定值：{ELEMENT_TYPE} (the login Type this instance belongs to)",
        const=ELEMENT_TYPE,
    ),
)

AUTH_CONFIG_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "suiteId",
        "string",
        True,
        "suiteId",
        "第三方应用套件ID: the 代开发 template id (dk…) or suite id (ww/wx/tj…)",
        pattern=r"^[A-Za-z0-9_-]+$",
        min_length=1,
    ),
    FieldRule(
        "suiteSecret",
        "string",
        True,
        "suiteSecret",
        "第三方应用套件密钥: the template secret; may be env:VAR",
        secret=True,
        min_length=1,
    ),
    FieldRule(
        "encodingAESKey",
        "string",
        True,
        "encodingAESKey",
        "用于加密回调数据的AES密钥: 43 characters of the base64 alphabet, as entered in the "
        "WeCom console; may be env:VAR",
        secret=True,
        pattern=r"^[A-Za-z0-9+/]{43}$",
        min_length=43,
        max_length=43,
    ),
    FieldRule(
        "token",
        "string",
        True,
        "token",
        "用于验证回调请求的token: letters and digits, at most 32; may be env:VAR",
        secret=True,
        pattern=r"^[A-Za-z0-9]{1,32}$",
        min_length=1,
        max_length=32,
    ),
)

BUSINESS_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "authConfig", "object", True, "authConfig", "认证配置对象 (callback and API credentials)"
    ),
    FieldRule(
        "isActive", "boolean", False, "isActive", "是否启用该登录方式，默认true", default=True
    ),
    FieldRule(
        "corpId",
        "string",
        False,
        "corpId",
        "企业微信企业ID (plain ww…/wx… or an encrypted open corpid)",
        pattern=r"^[A-Za-z0-9_-]+$",
        min_length=1,
    ),
)

#: Keys editors add that are not config (JSON Schema reference).
_META_KEYS = frozenset({"$schema"})

#: The element doc's literal placeholders, which can never work against WeCom.
PLACEHOLDERS = {
    "suiteSecret": "your_suite_secret",
    "encodingAESKey": "your_encoding_aes_key",
    "token": "your_token",
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One validation finding. ``line`` is 1-based where it could be located."""

    severity: Severity
    file: str
    line: int | None
    code: str
    message: str
    instance: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "code": self.code,
            "message": self.message,
            "instance": self.instance,
        }


@dataclass(frozen=True)
class AuthInstance:
    """One login instance element, secrets resolved. ``repr`` never shows a secret."""

    name: str
    title: str
    type: str
    suite_id: str
    suite_secret: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)
    token: str = field(repr=False)
    corp_id: str | None
    is_active: bool
    path: Path

    @property
    def element_name(self) -> str:
        return f"auths.{self.name}"

    def receive_ids(
        self, authorized_corp_ids: Iterable[str] = (), provider_corp_id: str | None = None
    ) -> dict[str, ReceiveIdKind]:
        """The receiveids a callback for this instance may carry (wecom-protocol.md §2.2).

        Command callbacks carry the suite id; the GET handshake the provider corp id;
        data callbacks the authorized corp. The instance's own ``corpId`` is treated as
        the provider corp when no provider corp id is configured separately.
        """
        ids: dict[str, ReceiveIdKind] = {cid: "authorized_corp" for cid in authorized_corp_ids}
        for cid in (self.corp_id, provider_corp_id):
            if cid:
                ids[cid] = "provider_corp"
        ids[self.suite_id] = "suite"
        return ids

    def crypto(self, receive_ids: Mapping[str, ReceiveIdKind] | None = None) -> WXBizMsgCrypt:
        return WXBizMsgCrypt(
            self.token,
            self.encoding_aes_key,
            self.receive_ids() if receive_ids is None else receive_ids,
        )

    def public_dict(self) -> dict[str, Any]:
        """What may be shown anywhere: identifiers, never secrets."""
        return {
            "name": self.name,
            "title": self.title,
            "type": self.type,
            "suiteId": self.suite_id,
            "corpId": self.corp_id,
            "isActive": self.is_active,
            "path": str(self.path),
        }


@dataclass(frozen=True)
class ValidationReport:
    instances: tuple[AuthInstance, ...]
    diagnostics: tuple[Diagnostic, ...]
    #: instance folders that were looked at, valid or not
    checked: tuple[str, ...] = ()

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def ok(self, *, strict: bool = False) -> bool:
        return not self.errors and not (strict and self.warnings)


# -- locating folders ------------------------------------------------------------------


def _looks_like_instance(path: Path) -> bool:
    return (path / "e.json").is_file() or (path / f"{path.name}.json").is_file()


def instance_dirs(path: Path) -> list[Path]:
    """Instance folders under ``path``: an auths/ folder, one instance, or a project root."""
    if not path.exists():
        raise UsageError(f"path does not exist: {path}")
    if not path.is_dir():
        if path.suffix == ".json" and path.parent.is_dir():
            return [path.parent]  # a file inside an instance (pre-commit passes files)
        raise UsageError(f"not a folder: {path}")
    if _looks_like_instance(path):
        return [path]
    root = path / "auths" if (path / "auths").is_dir() else path
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# -- reading JSON with positions --------------------------------------------------------


class _Collector:
    """Gathers diagnostics for one instance folder."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.items: list[Diagnostic] = []

    def add(
        self, severity: Severity, file: Path | str, line: int | None, code: str, message: str
    ) -> None:
        self.items.append(Diagnostic(severity, str(file), line, code, message, self.instance))


def _line_of(text: str, key: str, after: str | None = None) -> int | None:
    """1-based line of the first ``"key":`` (after ``"after":`` for nested keys)."""
    start = 0
    if after is not None:
        m = re.search(rf'"{re.escape(after)}"\s*:', text)
        if m is None:
            return None
        start = m.end()
    m = re.compile(rf'"{re.escape(key)}"\s*:').search(text, start)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _read_json(path: Path, out: _Collector) -> tuple[dict[str, Any] | None, str]:
    """Parse one JSON object file, reporting syntax errors with their line."""
    if not path.is_file():
        return None, ""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        out.add("error", path, None, "unreadable", f"cannot read file: {exc.strerror}")
        return None, ""
    if len(raw) > MAX_CONFIG_BYTES:
        out.add("error", path, None, "too-large", f"file larger than {MAX_CONFIG_BYTES} bytes")
        return None, ""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        out.add("error", path, line, "encoding", "file is not valid UTF-8")
        return None, ""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                duplicates.append(k)
            seen[k] = v
        return seen

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        out.add(
            "error",
            path,
            exc.lineno,
            "json-syntax",
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
        )
        return None, text
    except RecursionError:
        out.add("error", path, None, "json-syntax", "invalid JSON: nested too deeply")
        return None, text
    for key in duplicates:
        out.add(
            "warning",
            path,
            _line_of(text, key),
            "duplicate-key",
            f"key {key!r} appears more than once; the last one wins",
        )
    if not isinstance(data, dict):
        out.add(
            "error",
            path,
            1,
            "wrong-type",
            f"top level must be a JSON object, not {_json_type_name(data)}",
        )
        return None, text
    return data, text


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _check_fields(
    data: Mapping[str, Any],
    rules: Sequence[FieldRule],
    path: Path,
    text: str,
    out: _Collector,
    *,
    prefix: str = "",
    parent: str | None = None,
) -> None:
    """Presence, JSON type and unknown keys of one object against its rules."""
    known = {r.name for r in rules} | _META_KEYS
    for rule in rules:
        label = f"{prefix}{rule.name}"
        line = _line_of(text, rule.name, parent)
        if rule.name not in data:
            if rule.required:
                out.add(
                    "error",
                    path,
                    _line_of(text, parent) if parent else None,
                    "missing-field",
                    f"required field {label} is missing",
                )
            continue
        value = data[rule.name]
        if _json_type_name(value) != rule.json_type:
            out.add(
                "error",
                path,
                line,
                "wrong-type",
                f"{label} must be a {rule.json_type}, not {_json_type_name(value)}",
            )
        elif rule.json_type == "string" and not value.strip():
            out.add("error", path, line, "empty-field", f"{label} must not be empty")
    for key in data:
        if key not in known:
            out.add(
                "warning",
                path,
                _line_of(text, key, parent),
                "unknown-key",
                f"unknown key {prefix}{key} (not part of {ELEMENT_TYPE}); typo?",
            )


def _resolve_secret(
    value: str,
    label: str,
    path: Path,
    line: int | None,
    env: Mapping[str, str],
    out: _Collector,
) -> str | None:
    if not value.startswith(ENV_PREFIX):
        return value
    var = value[len(ENV_PREFIX) :].strip()
    if not _ENV_NAME_RE.fullmatch(var):
        out.add(
            "error",
            path,
            line,
            "env-reference",
            f"{label}: {value!r} is not a valid env:VAR reference",
        )
        return None
    if var not in env or not env[var]:
        out.add(
            "error",
            path,
            line,
            "env-unset",
            f"{label} refers to environment variable {var}, which is not set",
        )
        return None
    return env[var]


def _check_secret_value(
    name: str, value: str, label: str, path: Path, line: int | None, out: _Collector
) -> bool:
    """Format rules for resolved secrets; messages describe, never quote, the value."""
    if value == PLACEHOLDERS.get(name):
        out.add(
            "error",
            path,
            line,
            "placeholder",
            f"{label} is the element doc's placeholder {value!r}; use the value from the "
            "WeCom console, or generate a new token and key with `qywx init NAME` and enter "
            "them in the console",
        )
        return False
    if name == "encodingAESKey":
        if len(value) != 43:
            out.add(
                "error",
                path,
                line,
                "bad-aes-key",
                f"{label} must be exactly 43 characters (got {len(value)})",
            )
            return False
        if not re.fullmatch(r"[A-Za-z0-9+/]{43}", value):
            out.add(
                "error",
                path,
                line,
                "bad-aes-key",
                f"{label} may contain only letters, digits, '+' and '/'",
            )
            return False
        if len(base64.b64decode(value + "=")) != 32:  # pragma: no cover - follows from above
            out.add("error", path, line, "bad-aes-key", f"{label} does not decode to 32 bytes")
            return False
    elif name == "token":
        if len(value) > 32:
            out.add(
                "error",
                path,
                line,
                "bad-token",
                f"{label} must be at most 32 characters (got {len(value)})",
            )
            return False
        if not value.isascii() or not value.isalnum():
            out.add(
                "error",
                path,
                line,
                "bad-token",
                f"{label} may contain only letters and digits (WeCom console rule)",
            )
            return False
    return True


def _validate_instance(
    folder: Path, env: Mapping[str, str]
) -> tuple[AuthInstance | None, list[Diagnostic]]:
    name = folder.name
    out = _Collector(name)
    if not NAME_RE.fullmatch(name):
        out.add(
            "error",
            folder,
            None,
            "bad-name",
            f"instance folder name {name!r} must start with a letter and contain only "
            "letters, digits and '_' (it becomes the element name auths.{name})",
        )
    e_path, biz_path = folder / "e.json", folder / f"{name}.json"

    e_data, e_text = _read_json(e_path, out)
    if not e_path.is_file():
        out.add("error", e_path, None, "missing-file", "e.json is missing")
    elif e_data is not None:
        _check_fields(e_data, E_JSON_FIELDS, e_path, e_text, out)
        etype = e_data.get("type")
        if isinstance(etype, str) and etype.strip() and etype != ELEMENT_TYPE:
            out.add(
                "error",
                e_path,
                _line_of(e_text, "type"),
                "wrong-element-type",
                f"type must be {ELEMENT_TYPE!r}, not {etype!r}",
            )

    biz, biz_text = _read_json(biz_path, out)
    if not biz_path.is_file():
        others = sorted(p.name for p in folder.glob("*.json") if p.name != "e.json")
        hint = f" (found {', '.join(others)}; it must be named after the folder)" if others else ""
        out.add(
            "error", biz_path, None, "missing-file", f"business file {name}.json is missing{hint}"
        )
    resolved: dict[str, str] = {}
    if biz is not None:
        _check_fields(biz, BUSINESS_FIELDS, biz_path, biz_text, out)
        auth = biz.get("authConfig")
        if isinstance(auth, dict):
            _check_fields(
                auth,
                AUTH_CONFIG_FIELDS,
                biz_path,
                biz_text,
                out,
                prefix="authConfig.",
                parent="authConfig",
            )
            for rule in AUTH_CONFIG_FIELDS:
                value = auth.get(rule.name)
                if not isinstance(value, str) or not value.strip():
                    continue
                label = f"authConfig.{rule.name}"
                line = _line_of(biz_text, rule.name, "authConfig")
                if rule.secret:
                    secret = _resolve_secret(value, label, biz_path, line, env, out)
                    if secret is None or not _check_secret_value(
                        rule.name, secret, label, biz_path, line, out
                    ):
                        continue
                    value = secret
                elif rule.pattern and not re.fullmatch(rule.pattern, value):
                    out.add(
                        "error",
                        biz_path,
                        line,
                        "bad-id",
                        f"{label} may contain only letters, digits, '_' and '-'",
                    )
                    continue
                resolved[rule.name] = value
        corp = biz.get("corpId")
        if isinstance(corp, str) and corp.strip() and not re.fullmatch(r"[A-Za-z0-9_-]+", corp):
            out.add(
                "error",
                biz_path,
                _line_of(biz_text, "corpId"),
                "bad-id",
                "corpId may contain only letters, digits, '_' and '-'",
            )

    if any(d.severity == "error" for d in out.items) or e_data is None or biz is None:
        return None, out.items
    instance = AuthInstance(
        name=name,
        title=e_data["title"],
        type=e_data["type"],
        suite_id=resolved["suiteId"],
        suite_secret=resolved["suiteSecret"],
        encoding_aes_key=resolved["encodingAESKey"],
        token=resolved["token"],
        corp_id=biz.get("corpId") or None,
        is_active=biz.get("isActive", True),
        path=folder,
    )
    return instance, out.items


def _cross_check(instances: Sequence[AuthInstance]) -> Iterator[Diagnostic]:
    """Rules across instances: what would make callback verification or routing ambiguous."""
    active = [i for i in instances if i.is_active]
    by_suite: dict[str, AuthInstance] = {}
    by_corp: dict[tuple[str, str], AuthInstance] = {}
    for inst in active:
        biz = str(inst.path / f"{inst.name}.json")
        first = by_suite.setdefault(inst.suite_id, inst)
        if first is not inst and (
            first.token != inst.token or first.encoding_aes_key != inst.encoding_aes_key
        ):
            yield Diagnostic(
                "error",
                biz,
                None,
                "suite-conflict",
                f"active instances {first.name} and {inst.name} share suiteId {inst.suite_id} "
                "but have different token/encodingAESKey; WeCom signs a suite's callbacks with "
                "one pair, so one of them can never verify",
                inst.name,
            )
        if inst.corp_id:
            other = by_corp.setdefault((inst.suite_id, inst.corp_id), inst)
            if other is not inst:
                yield Diagnostic(
                    "error",
                    biz,
                    None,
                    "ambiguous-corp",
                    f"active instances {other.name} and {inst.name} both claim corpId "
                    f"{inst.corp_id} for suiteId {inst.suite_id}; logins for that corp "
                    "cannot be routed",
                    inst.name,
                )


def validate_paths(paths: Iterable[Path], env: Mapping[str, str] | None = None) -> ValidationReport:
    """Validate every instance folder under ``paths`` and the rules across them."""
    env = os.environ if env is None else env
    folders: list[Path] = []
    for p in paths:
        for folder in instance_dirs(Path(p)):
            if folder.resolve() not in {f.resolve() for f in folders}:
                folders.append(folder)
    instances: list[AuthInstance] = []
    diagnostics: list[Diagnostic] = []
    for folder in folders:
        inst, diags = _validate_instance(folder, env)
        diagnostics.extend(diags)
        if inst is not None:
            instances.append(inst)
    diagnostics.extend(_cross_check(instances))
    return ValidationReport(tuple(instances), tuple(diagnostics), tuple(str(f) for f in folders))


def load_instances(auths_dir: Path, env: Mapping[str, str] | None = None) -> list[AuthInstance]:
    """Every valid instance under ``auths_dir`` (invalid ones are skipped, not fatal)."""
    return list(validate_paths([auths_dir], env).instances)


def find_instance(ref: str, auths_dir: Path, env: Mapping[str, str] | None = None) -> AuthInstance:
    """Resolve ``--auth NAME`` or ``--auth path/to/instance`` to a valid instance."""
    env = os.environ if env is None else env
    candidate = Path(ref)
    if ("/" in ref or os.sep in ref or ref in (".", "..")) and candidate.is_dir():
        folder = candidate
    else:
        name = ref.removeprefix("auths.")
        folder = auths_dir / name
        if not folder.is_dir():
            available = (
                ", ".join(p.name for p in instance_dirs(auths_dir)) if auths_dir.is_dir() else ""
            )
            where = f"in {auths_dir}" + (f" (available: {available})" if available else "")
            raise InstanceNotFound(f"no auth instance named {name!r} {where}")
    inst, diags = _validate_instance(folder, env)
    if inst is None:
        first = next(d for d in diags if d.severity == "error")
        line = f":{first.line}" if first.line else ""
        raise ConfigError(f"instance {folder.name} is invalid: {first.file}{line}: {first.message}")
    return inst
