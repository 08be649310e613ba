"""The auths/ folder model: load instance folders, validate them, report every problem.

Layout, exactly as qywx-proxy-login.md lays it out::

    auths/<Name>/e.json          {"title": …, "type": "auths.loginTypes.QywxProxyType"}
    auths/<Name>/<Name>.json     {"authConfig": {suiteId, suiteSecret, encodingAESKey, token},
                                  "isActive": true, "corpId": "ww…"}

Validation collects :class:`Diagnostic` objects and never stops at the first, because
CI wants the whole list in one run. The field rules are data (:data:`E_JSON_FIELDS`,
:data:`BUSINESS_FIELDS`, whose ``authConfig`` rule nests :data:`AUTH_CONFIG_FIELDS`):
the same :class:`FieldRule` drives the checks here and the JSON Schema that
``qywx_cli.core.schema`` exports, so the two cannot drift.

The files are read the way the platform that consumes them reads JSON: strict UTF-8
without a byte order mark, RFC 8259 only (no comments, no trailing commas, no
``NaN``/``Infinity``, which Python's own ``json`` would otherwise accept), at most
:data:`MAX_CONFIG_BYTES`. Line numbers come from a small key scanner run over the text,
so a diagnostic points at the key it is about even when the same name occurs at
another level.

Secret values (suiteSecret, encodingAESKey, token) may be written as ``env:VAR`` and
are resolved from the environment; messages name the variable, never a value.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from qywx_cli.core.errors import ConfigError, InstanceNotFound, UsageError

if TYPE_CHECKING:
    from qywx_cli.core.crypto import ReceiveIdKind, WXBizMsgCrypt

__all__ = [
    "AUTH_CONFIG_FIELDS",
    "AUTH_MODEL_ELEMENT",
    "BUSINESS_FIELDS",
    "ELEMENT_TYPE",
    "ENV_PREFIX",
    "ENV_REFERENCE_PATTERN",
    "E_JSON_FIELDS",
    "MAX_CONFIG_BYTES",
    "META_KEYS",
    "NAME_RE",
    "AuthInstance",
    "Diagnostic",
    "FieldRule",
    "ValidationReport",
    "find_instance",
    "instance_dirs",
    "load_instances",
    "validate_paths",
    "value_problem",
]

ELEMENT_TYPE = "auths.loginTypes.QywxProxyType"
AUTH_MODEL_ELEMENT = "auths.loginTypes.QywxProxyType.QywxProxyAuthModel"
ENV_PREFIX = "env:"
#: What follows ``env:`` must be a portable shell variable name (POSIX "Name").
ENV_REFERENCE_PATTERN = r"^env:[A-Za-z_][A-Za-z0-9_]*$"
MAX_CONFIG_BYTES = 1024 * 1024

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

Severity = Literal["error", "warning"]
JsonType = Literal["string", "boolean", "object"]


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One documented field and every constraint ``validate`` and the schema apply to it.

    ``pattern`` is written in the subset shared by Python's ``re`` and ECMA-262 (the
    dialect JSON Schema editors use), anchored with ``^…$``. ``hint`` completes the
    sentence "<field> …" when the pattern fails; ``code`` is the diagnostic code for
    length, pattern and ``const`` failures. String rules without a pattern still
    reject blank values (``empty-field``), and every pattern given here rejects them too.
    """

    name: str
    json_type: JsonType
    required: bool
    title: str
    description: str
    secret: bool = False
    pattern: str | None = None
    hint: str = ""
    code: str = "bad-value"
    min_length: int | None = None
    max_length: int | None = None
    const: str | None = None
    #: the element doc's literal placeholder for this field, which can never work
    placeholder: str | None = None
    default: Any = None
    #: for ``object`` fields: the rules of the nested object
    fields: tuple[FieldRule, ...] = ()


# Descriptions are shown by editors on hover, so they speak to users; the sources are
# wecom-protocol.md §1.1 (EncodingAESKey, token) and §2.3 (suite and corp id formats).
_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
_ID_HINT = "may contain only ASCII letters, digits, '_' and '-'"

E_JSON_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "title",
        "string",
        True,
        "元素显示名称",
        "Display name of the login instance element, shown in the JitAi tools (one line).",
        pattern=r"^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$",
        hint="must be one line of text without control characters",
        code="bad-title",
        min_length=1,
        max_length=128,
    ),
    FieldRule(
        "type",
        "string",
        True,
        "元素类型",
        f"固定值：{ELEMENT_TYPE} (the login Type this instance element belongs to).",
        code="wrong-element-type",
        const=ELEMENT_TYPE,
    ),
)

AUTH_CONFIG_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "suiteId",
        "string",
        True,
        "第三方应用套件ID",
        "The 代开发 template id (dk…) or third-party suite id (ww…/wx…, formerly tj…) "
        "from the WeCom provider console.",
        pattern=_ID_PATTERN,
        hint=_ID_HINT + " (suite ids look like dk…, ww…, wx… or tj…)",
        code="bad-id",
        min_length=1,
        max_length=64,
    ),
    FieldRule(
        "suiteSecret",
        "string",
        True,
        "第三方应用套件密钥",
        "The template / suite secret from the WeCom provider console, or env:VAR to read "
        "it from the environment.",
        secret=True,
        pattern=r"^[!-~]+$",
        hint="may contain only printable ASCII characters and no spaces",
        code="bad-secret",
        min_length=1,
        max_length=256,
        placeholder="your_suite_secret",
    ),
    FieldRule(
        "encodingAESKey",
        "string",
        True,
        "用于加密回调数据的AES密钥",
        "EncodingAESKey: 43 characters of the base64 alphabet, the same value as entered "
        "in the WeCom console's callback settings, or env:VAR.",
        secret=True,
        pattern=r"^[A-Za-z0-9+/]{43}$",
        hint="may contain only letters, digits, '+' and '/' (the base64 alphabet)",
        code="bad-aes-key",
        min_length=43,
        max_length=43,
        placeholder="your_encoding_aes_key",
    ),
    FieldRule(
        "token",
        "string",
        True,
        "用于验证回调请求的token",
        "Callback token: 1 to 32 ASCII letters and digits, the same value as entered in "
        "the WeCom console's callback settings, or env:VAR.",
        secret=True,
        pattern=r"^[A-Za-z0-9]{1,32}$",
        hint="may contain only ASCII letters and digits (WeCom console rule)",
        code="bad-token",
        min_length=1,
        max_length=32,
        placeholder="your_token",
    ),
)

BUSINESS_FIELDS: tuple[FieldRule, ...] = (
    FieldRule(
        "authConfig",
        "object",
        True,
        "认证配置对象",
        "Callback and API credentials of the 代开发 template.",
        fields=AUTH_CONFIG_FIELDS,
    ),
    FieldRule(
        "isActive",
        "boolean",
        False,
        "是否启用该登录方式",
        "Whether this login instance is enabled; default true. Inactive instances are "
        "exempt from the cross-instance rules.",
        default=True,
    ),
    FieldRule(
        "corpId",
        "string",
        False,
        "企业微信企业ID",
        "The corp this instance serves: a plain corpid (ww…/wx…) or an encrypted open "
        "corpid, which is case-sensitive.",
        pattern=_ID_PATTERN,
        hint=_ID_HINT + " (plain ww…/wx… or an encrypted open corpid)",
        code="bad-id",
        min_length=1,
        max_length=64,
    ),
)

#: Keys editors add to the top level of a file that are not configuration.
META_KEYS = frozenset({"$schema"})

#: How far up from a path argument to look for the instance folder it lies in.
_ENCLOSING_LEVELS = 4

#: Numbers longer than this are refused before Python's int conversion limit is hit.
_MAX_NUMBER_CHARS = 1000


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
        # Imported here: loading the AES backend costs more than validating a folder.
        from qywx_cli.core.crypto import WXBizMsgCrypt

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

    def not_loaded(self) -> dict[str, str]:
        """Instance name → its first error, for every checked instance that is not usable.

        A server must say which instances it is not serving and why: WeCom's callbacks
        for a silently dropped instance only ever see a 404.
        """
        loaded = {i.name for i in self.instances}
        out: dict[str, str] = {}
        for d in self.errors:
            if d.instance and d.instance not in loaded and d.instance not in out:
                out[d.instance] = f"{d.file}{f':{d.line}' if d.line else ''}: {d.message}"
        return out

    def conflicts(self) -> list[Diagnostic]:
        """Errors across instances among the loaded ones (suite-conflict, ambiguous-corp…)."""
        loaded = {i.name for i in self.instances}
        return [d for d in self.errors if d.instance in loaded]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]

    def ok(self, *, strict: bool = False) -> bool:
        return not self.errors and not (strict and self.warnings)

    def promoted(self) -> ValidationReport:
        """The report as ``--strict`` sees it: every warning is an error, in every format."""
        return dataclasses.replace(
            self,
            diagnostics=tuple(dataclasses.replace(d, severity="error") for d in self.diagnostics),
        )


# -- text that ends up in messages -----------------------------------------------------


def _shown(text: str) -> str:
    """Printable on any UTF-8 stream: undecodable file-name bytes become ``\\xNN`` escapes."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _quoted(value: str, limit: int = 60) -> str:
    """A user-written name or value, safe for a one-line message (quoted, escaped, cut)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _key_label(path: Sequence[str]) -> str:
    return ".".join(k if k.isprintable() and len(k) <= 60 else _quoted(k) for k in path)


# -- locating folders ------------------------------------------------------------------


def _looks_like_instance(path: Path) -> bool:
    return (path / "e.json").is_file() or (path / f"{path.name}.json").is_file()


def instance_names(auths_dir: Path) -> list[str]:
    """The instance folders of an auths/ folder, by name ([] when there is none)."""
    if not auths_dir.is_dir():
        return []
    return [p.name for p in _subfolders(auths_dir) if _looks_like_instance(p)]


class _Listings:
    """The folder listings of one validation run, each read once.

    The auths/ folder is listed to find the instances and again for the rules across
    instances; with 10,000 instances the second listing (and its 10,000 paths) cost as
    much as a tenth of the run. The listing also says which subfolders are plain
    folders, not links, which :class:`_Identities` would otherwise ``lstat`` one by one.
    """

    def __init__(self) -> None:
        self._folders: dict[Path, list[Path]] = {}
        self.plain: set[Path] = set()

    def subfolders(self, root: Path) -> list[Path]:
        found = self._folders.get(root)
        if found is None:
            found = self._folders[root] = _subfolders(root, self.plain)
        return found


def _subfolders(root: Path, plain: set[Path] | None = None) -> list[Path]:
    """Non-hidden subfolders, plus dangling or looping links so they get reported.

    ``plain`` collects the subfolders that are folders themselves, not links to one.
    """
    try:
        with os.scandir(root) as listing:
            entries = [e for e in listing if not e.name.startswith(".")]
    except OSError as exc:
        raise ConfigError(f"cannot read folder {_shown(str(root))}: {exc.strerror}") from None
    # DirEntry knows its type from the listing itself: no stat per entry but for links.
    found: list[Path] = []
    for e in sorted(entries, key=lambda e: e.name):
        if _is_dir(e):
            found.append(root / e.name)
            if plain is not None and not e.is_symlink():
                plain.add(found[-1])
        elif e.is_symlink() and not os.path.exists(e.path):
            found.append(root / e.name)
    return found


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a link loop
        return False


def _enclosing_instance(path: Path) -> Path | None:
    """The nearest of a few ancestors that looks like an instance, not above an auths/."""
    for folder in list(path.parents)[:_ENCLOSING_LEVELS]:
        if _looks_like_instance(folder):
            return folder
        if folder.name == "auths":
            break
    return None


def _named(folder: Path) -> Path:
    """``folder`` spelled so that its last part is the instance name (``.`` has none)."""
    return Path(os.path.abspath(folder)) if folder.name in ("", "..") else folder


def instance_dirs(path: Path, listings: _Listings | None = None) -> list[Path]:
    """Instance folders for ``path``: an auths/ folder, one instance, a project root, a file.

    A file (pre-commit passes changed files) or a folder inside an instance stands for
    that instance. A file lying directly in an auths/ folder belongs to no instance; it
    stands for every instance in that folder. A file anywhere else is a usage error:
    guessing would validate an unrelated folder.
    """
    if not path.exists():
        raise UsageError(f"path does not exist: {_shown(str(path))}")
    path = _named(path)
    if path.is_dir():
        if _looks_like_instance(path):
            return [path]
        root = path / "auths" if (path / "auths").is_dir() else path
        children = listings.subfolders(root) if listings is not None else _subfolders(root)
        if children:
            return children
    enclosing = _enclosing_instance(path)
    if enclosing is not None:
        return [_named(enclosing)]
    if path.is_dir():
        return []
    parent = _named(path.parent)
    children = [p for p in _subfolders(parent) if _looks_like_instance(p)]
    if children:
        return children
    if parent.parent.name == "auths":  # an instance folder whose files are misnamed
        return [parent]
    raise UsageError(
        f"{_shown(str(path))} is not inside an auths/ instance folder; pass the folder "
        "(auths/, auths/<Name>/ or the project root)"
    )


class _Identities:
    """Folders' identities for de-duplication, at one ``lstat`` per folder.

    The identity is ``os.path.realpath``, which unlike ``resolve`` survives link loops.

    ``realpath`` walks every component of every path (ten ``lstat`` calls for a folder
    ten levels deep); for 10,000 instances in one auths/ folder that was a fifth of the
    run. A folder that is not itself a link is its parent's real path plus its name, so
    each parent is resolved once and each folder only asked whether it is a link.
    """

    def __init__(self, plain: set[Path] | None = None) -> None:
        self._parents: dict[Path, str] = {}
        #: folders a listing showed to be folders, not links: no lstat needed
        self._plain = plain if plain is not None else set()

    def parent(self, folder: Path) -> str:
        real = self._parents.get(folder)
        if real is None:
            real = self._parents[folder] = os.path.realpath(folder)
        return real

    def of(self, folder: Path) -> str:
        if folder not in self._plain and (folder.name in ("", ".", "..") or os.path.islink(folder)):
            return os.path.realpath(folder)
        return os.path.join(self.parent(folder.parent), folder.name)


# -- reading JSON with positions --------------------------------------------------------


class _Collector:
    """Gathers diagnostics for one instance folder."""

    def __init__(self, instance: str) -> None:
        self.instance = _shown(instance)
        self.items: list[Diagnostic] = []

    def add(
        self, severity: Severity, file: Path | str, line: int | None, code: str, message: str
    ) -> None:
        self.items.append(
            Diagnostic(severity, _shown(str(file)), line, code, _shown(message), self.instance)
        )

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.items)


_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|\s+|[^\s{}\[\],:"]+')


@dataclass(frozen=True, slots=True)
class _Scan:
    """Where things are in a JSON text: every key by its path, every bare literal."""

    keys: dict[tuple[str, ...], list[int]]
    literals: list[tuple[str, int]]
    first_line: int


class _Frame:
    __slots__ = ("index", "is_object", "key", "wants_key")

    def __init__(self, is_object: bool) -> None:
        self.is_object = is_object
        self.wants_key = is_object
        self.key = ""
        self.index = 0

    @property
    def segment(self) -> str:
        return self.key if self.is_object else f"[{self.index}]"


def _scan(text: str) -> _Scan:
    """Tokenise ``text`` (already known to be JSON, give or take a literal) for positions.

    Python's ``json`` reports no positions for parsed values, so this pass records the
    line of each object key under its full path (``("authConfig", "token")``); array
    elements contribute ``[i]`` so objects inside arrays never look like duplicates.
    """
    keys: dict[tuple[str, ...], list[int]] = {}
    literals: list[tuple[str, int]] = []
    stack: list[_Frame] = []
    line, first_line = 1, 0
    for m in _TOKEN_RE.finditer(text):
        tok = m.group()
        if tok.isspace():
            line += tok.count("\n")
            continue
        first_line = first_line or line
        top = stack[-1] if stack else None
        if tok[0] == '"':
            if top is not None and top.wants_key:
                if "\\" not in tok:  # no escapes: the key is the text between the quotes
                    top.key = tok[1:-1]
                else:
                    try:
                        top.key = str(json.loads(tok))
                    except ValueError:
                        top.key = tok[1:-1]
                top.wants_key = False
                path = (*(f.segment for f in stack[:-1]), top.key)
                keys.setdefault(path, []).append(line)
        elif tok in "{[":
            stack.append(_Frame(tok == "{"))
        elif tok in "}]":
            if stack:
                stack.pop()
        elif tok == ",":
            if top is not None:
                if top.is_object:
                    top.wants_key = True
                else:
                    top.index += 1
        elif tok != ":":
            literals.append((tok, line))
    return _Scan(keys, literals, first_line or 1)


class _NonStandardConstant(ValueError):
    """Raised from ``parse_constant``: RFC 8259 has no NaN or Infinity."""


def _reject_constant(name: str) -> Any:
    raise _NonStandardConstant(name)


@dataclass(frozen=True)
class _Doc:
    """A parsed JSON object file; where its keys are is worked out only when asked.

    Line numbers serve diagnostics alone, and most files have none: tokenising every
    file for positions was a fifth of validating 10,000 valid instances.
    """

    path: str
    data: dict[str, Any]
    text: str = field(repr=False)
    #: whether the text has a \u escape: only an escape can put a lone surrogate in a
    #: string (strict UTF-8 decoding refuses them), so without one no string is checked
    escapes: bool = True

    @functools.cached_property
    def scan(self) -> _Scan:
        return _scan(self.text)

    def line(self, key_path: Sequence[str]) -> int | None:
        """Line of a key; for an empty path, the line where the top-level object opens."""
        if not key_path:
            return self.scan.first_line
        return _first(self.scan.keys.get(tuple(key_path)))


def _syntax_hint(text: str, pos: int) -> str:
    """Name the usual culprits: JSON has no comments, trailing commas or single quotes."""
    rest = text[pos : pos + 2]
    if rest.startswith(("//", "/*", "#")):
        return "; comments are not allowed in JSON"
    if rest.startswith("'"):
        return "; strings must use double quotes"
    before = text[:pos].rstrip()
    if before.endswith(",") and rest[:1] in ("}", "]"):
        return "; remove the trailing comma"
    return ""


def _is_regular_file(path: str, out: _Collector) -> bool:
    """Refuse folders, FIFOs and devices before opening: reading a FIFO would hang."""
    name = os.path.basename(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        why = "a dangling or looping symbolic link" if os.path.islink(path) else exc.strerror
        out.add("error", path, None, "unreadable", f"cannot read {name}: {why}")
        return False
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        out.add("error", path, None, "not-a-file", f"{name} is {kind}; expected a JSON file")
        return False
    return True


def _decode(raw: bytes, path: str, out: _Collector) -> str | None:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        out.add(
            "error", path, 1, "encoding", "file is UTF-16 encoded; save it as UTF-8 without BOM"
        )
        return None
    if raw.startswith(b"\xef\xbb\xbf"):
        out.add(
            "error",
            path,
            1,
            "encoding",
            "file starts with a UTF-8 byte order mark (BOM), which strict JSON readers "
            "(Python's json among them) reject; save it as UTF-8 without BOM",
        )
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        out.add(
            "error",
            path,
            line,
            "encoding",
            f"file is not valid UTF-8 (byte {exc.start + 1}, line {line}); save it as UTF-8",
        )
        return None


_parse_state = threading.local()


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build each object as json does, noting a repeated key (positions come later)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        _parse_state.duplicates = True
    return obj


# One decoder for every file: json.loads with options builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_pairs_hook)


def _parse(text: str, path: str, out: _Collector) -> tuple[bool, Any]:
    """``json.loads`` held to RFC 8259, every failure turned into one diagnostic."""
    bad: tuple[int | None, str]
    try:
        if text.startswith("\ufeff"):  # json.loads has the message for a second BOM
            return True, json.loads(text, parse_constant=_reject_constant)
        return True, _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        hint = _syntax_hint(text, exc.pos)
        bad = exc.lineno, f"{exc.msg} (line {exc.lineno}, column {exc.colno}){hint}"
    except _NonStandardConstant as exc:
        lines = [ln for tok, ln in _scan(text).literals if tok == str(exc)]
        bad = (lines[0] if lines else None), f"{exc} is not a JSON value; write a number"
    except RecursionError:
        bad = None, "nested too deeply"
    except ValueError:  # Python refuses int literals beyond its conversion limit
        lines = [ln for tok, ln in _scan(text).literals if len(tok) > _MAX_NUMBER_CHARS]
        bad = (lines[0] if lines else None), "a number literal is too long"
    line, detail = bad
    out.add("error", path, line, "json-syntax", f"invalid JSON: {detail}")
    return False, None


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE_RE.search(text) is not None


def _lone_surrogates(data: Any) -> Iterator[tuple[str, ...]]:
    """Key paths whose key or string value holds an unpaired ``\\udXXX`` escape.

    Such strings are legal JSON escapes but cannot be encoded as UTF-8, so neither the
    platform nor any output stream could carry them. Iterative: depth is unbounded.
    """
    todo: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while todo:
        path, value = todo.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                yield path
        elif isinstance(value, dict):
            for k, v in value.items():
                todo.append(((*path, k), k if _has_surrogate(k) else v))
        elif isinstance(value, list):
            todo.extend(((*path, f"[{i}]"), v) for i, v in enumerate(value))


_READ_CHUNK = 64 * 1024
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)


def _read_capped(path: str) -> bytes:
    """At most ``MAX_CONFIG_BYTES + 1`` bytes of ``path``.

    In chunks, not one ``read(MAX_CONFIG_BYTES + 1)``: a buffered read of that size
    allocates (and the kernel maps) a whole MiB for every half-KiB file, which was most
    of the cost of reading 20,000 files.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, min(_READ_CHUNK, MAX_CONFIG_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def _read_json(path: str, out: _Collector, *, regular: bool = False) -> _Doc | None:
    """Parse one JSON object file; report why not, with a line wherever one is known.

    ``regular``: the folder listing already said this is a regular file (not a link),
    so the ``stat`` that keeps FIFOs and devices from being opened is skipped.
    """
    if not regular and not _is_regular_file(path, out):
        return None
    try:
        raw = _read_capped(path)
    except OSError as exc:
        name = os.path.basename(path)
        out.add("error", path, None, "unreadable", f"cannot read {name}: {exc.strerror}")
        return None
    if len(raw) > MAX_CONFIG_BYTES:
        out.add(
            "error",
            path,
            None,
            "too-large",
            f"file is larger than {MAX_CONFIG_BYTES // 1024} KiB; an instance file is well "
            "under 1 KiB",
        )
        return None
    text = _decode(raw, path, out)
    if text is None:
        return None
    if not text.strip():
        out.add("error", path, 1, "json-syntax", "file is empty; expected a JSON object")
        return None
    _parse_state.duplicates = False
    parsed, data = _parse(text, path, out)
    if not parsed:
        return None
    doc = _Doc(path, data, text, escapes="\\u" in text)
    if _parse_state.duplicates:
        for key_path, lines in doc.scan.keys.items():
            if len(lines) > 1:
                out.add(
                    "warning",
                    path,
                    lines[1],
                    "duplicate-key",
                    f"key {_key_label(key_path)} appears {len(lines)} times; the last one wins",
                )
    for key_path in _lone_surrogates(data) if doc.escapes else ():
        out.add(
            "error",
            path,
            _first(doc.scan.keys.get(key_path)),
            "encoding",
            f"{_key_label(key_path) or 'top level'} contains an unpaired UTF-16 surrogate "
            "escape (\\ud800-\\udfff), which is not text",
        )
    if not isinstance(data, dict):
        out.add(
            "error",
            path,
            doc.scan.first_line,
            "wrong-type",
            f"top level must be a JSON object {{…}}, not {_json_type_name(data)}",
        )
        return None
    return doc


def _first(lines: list[int] | None) -> int | None:
    return lines[0] if lines else None


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


# -- field rules ---------------------------------------------------------------------


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """A rule's pattern compiled once (``re``'s own cache is a lookup per call)."""
    return re.compile(pattern)


def value_problem(rule: FieldRule, value: str, label: str | None = None) -> tuple[str, str] | None:
    """``(code, message)`` if a (resolved) string breaks ``rule``; the message never quotes it.

    Secrets are described by length and alphabet only; ``const`` fields are not secret,
    so their wrong value is quoted to make the typo visible.
    """
    label = label or rule.name
    if not value.strip():
        return "empty-field", f"{label} must not be empty"
    if rule.placeholder is not None and value == rule.placeholder:
        return "placeholder", (
            f"{label} is the element doc's placeholder {rule.placeholder!r}; use the value "
            "from the WeCom console, or generate a new token and key with `qywx init NAME` "
            "and enter them in the console"
        )
    if rule.const is not None and value != rule.const:
        return rule.code, f"{label} must be {rule.const!r}, not {_quoted(value)}"
    n = len(value)
    lo, hi = rule.min_length, rule.max_length
    if lo is not None and lo == hi and n != lo:
        return rule.code, f"{label} must be exactly {lo} characters (got {n})"
    if hi is not None and n > hi:
        return rule.code, f"{label} must be at most {hi} characters (got {n})"
    if lo is not None and n < lo:
        return rule.code, f"{label} must be at least {lo} characters (got {n})"
    if rule.pattern is not None and not _compiled(rule.pattern).fullmatch(value):
        return rule.code, f"{label} {rule.hint}"
    return None


@dataclass
class _Values:
    """String values that passed their rules, by dotted path; unresolved env references."""

    strings: dict[str, str] = field(default_factory=dict)
    unresolved: set[str] = field(default_factory=set)
    #: secret fields as written in the file (a literal or an ``env:`` reference)
    written: dict[str, str] = field(default_factory=dict)


def _check_string(
    rule: FieldRule,
    value: str,
    label: str,
    doc: _Doc,
    path: tuple[str, ...],
    env: Mapping[str, str] | None,
    out: _Collector,
    values: _Values,
) -> None:
    """One string field; ``env`` is None when references are checked for syntax only."""
    if doc.escapes and _has_surrogate(value):
        return  # reported while reading the file
    source = ""
    if rule.secret:
        values.written[label] = value
    if rule.secret and value.startswith(ENV_PREFIX):
        var = value[len(ENV_PREFIX) :]
        if not _compiled(ENV_REFERENCE_PATTERN).fullmatch(value):
            out.add(
                "error",
                doc.path,
                doc.line(path),
                "env-reference",
                f"{label} is not a valid env:VAR reference: after 'env:' write a variable "
                "name of letters, digits and '_' that does not start with a digit",
            )
            return
        if env is None:
            values.strings[label] = value
            values.unresolved.add(label)
            return
        if not env.get(var):
            out.add(
                "error",
                doc.path,
                doc.line(path),
                "env-unset",
                f"{label} refers to environment variable {var}, which is not set or empty",
            )
            return
        value, source = env[var], f" (from ${var})"
    problem = value_problem(rule, value, label + source)
    if problem is not None:
        out.add("error", doc.path, doc.line(path), *problem)
        return
    values.strings[label] = value


def _check_object(
    data: Mapping[str, Any],
    rules: Sequence[FieldRule],
    doc: _Doc,
    env: Mapping[str, str] | None,
    out: _Collector,
    values: _Values,
    *,
    parents: tuple[str, ...] = (),
    elsewhere: Mapping[str, str] | None = None,
) -> None:
    """Presence, JSON type and constraints of one object's fields; unknown keys warn."""
    for rule in rules:
        path = (*parents, rule.name)
        label = ".".join(path)
        if rule.name not in data:
            if rule.required:
                out.add(
                    "error",
                    doc.path,
                    doc.line(parents),
                    "missing-field",
                    f"required field {label} is missing",
                )
            continue
        value = data[rule.name]
        if rule.json_type == "string" and type(value) is str:
            _check_string(rule, value, label, doc, path, env, out, values)
            continue
        actual = _json_type_name(value)
        if actual != rule.json_type:
            hint = ""
            if rule.json_type == "boolean" and value in ("true", "false"):
                hint = f" (write {value} without quotes)"
            out.add(
                "error",
                doc.path,
                doc.line(path),
                "wrong-type",
                f"{label} must be a{'n' if rule.json_type == 'object' else ''} "
                f"{rule.json_type}, not {actual}{hint}",
            )
        elif rule.json_type == "object":
            _check_object(value, rule.fields, doc, env, out, values, parents=path)
        elif rule.json_type == "string":
            _check_string(rule, value, label, doc, path, env, out, values)
    known = {r.name for r in rules}
    for key in data:
        if key in known or (doc.escapes and _has_surrogate(key)):
            continue
        path = (*parents, key)
        if not parents and key in META_KEYS:
            if not isinstance(data[key], str):
                out.add(
                    "error",
                    doc.path,
                    doc.line(path),
                    "wrong-type",
                    f"{key} must be a string (the URL of a JSON Schema), "
                    f"not {_json_type_name(data[key])}",
                )
            continue
        hint = ""
        if elsewhere and key in elsewhere:
            hint = f" (it belongs in {elsewhere[key]})"
        else:
            import difflib  # only needed when there is a typo to explain

            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            lowered = [k for k in known if k.lower() == key.lower()]
            if lowered or close:
                hint = f" (did you mean {(lowered or close)[0]}?)"
        out.add(
            "warning",
            doc.path,
            doc.line(path),
            "unknown-key",
            f"unknown key {_key_label(path)}, not part of {ELEMENT_TYPE}{hint}",
        )


# -- one instance folder -------------------------------------------------------------


_PAIR: Final = frozenset({"authConfig.token", "authConfig.encodingAESKey"})
"""The fields a suite's instances must share: WeCom signs a suite with one pair."""


@dataclass(frozen=True)
class _Loaded:
    """An instance plus what the cross-instance rules need to point at.

    ``complete`` is False for an instance with errors of its own whose suiteId is
    readable: it still takes part in the rules across instances, so every problem is
    reported in one run, with its invalid fields counted as unknown (``unresolved``).
    """

    instance: AuthInstance
    business_file: str
    business: _Doc
    unresolved: frozenset[str]
    complete: bool = True
    #: suiteSecret as written (literal or env: reference), None when absent
    secret_written: str | None = None

    def line(self, field: Literal["suiteId", "corpId"]) -> int | None:
        """Where a diagnostic about this instance points (looked up only when one is made)."""
        return self.business.line(("authConfig", "suiteId") if field == "suiteId" else (field,))


def _find_file(
    folder: Path, wanted: str, entries: Sequence[str], out: _Collector, what: str
) -> str | None:
    """The exactly named file, or a missing-file error that says what is there instead.

    Names are compared exactly, not through the file system: ``qywxproxytemp.json`` is
    found on macOS and Windows but not by the platform on Linux. The path is a string:
    it is opened and maybe named in a message, and a Path per file cost more than
    reading the file.
    """
    if wanted in entries:
        return os.path.join(folder, wanted)
    same_but_case = [e for e in entries if e.lower() == wanted.lower()]
    others = sorted(e for e in entries if e.lower().endswith(".json") and e != "e.json")
    if same_but_case:
        hint = f" (found {same_but_case[0]}: file names are case-sensitive)"
    elif others and wanted != "e.json":
        hint = f" (found {', '.join(others)}; it must be named after the folder)"
    else:
        hint = ""
    out.add("error", folder / wanted, None, "missing-file", f"{what} {wanted} is missing{hint}")
    return None


def _validate_instance(
    folder: Path, env: Mapping[str, str] | None
) -> tuple[_Loaded | None, list[Diagnostic]]:
    name = folder.name
    out = _Collector(name)
    if not NAME_RE.fullmatch(name):
        out.add(
            "error",
            folder,
            None,
            "bad-name",
            f"instance folder name {_quoted(name)} must start with a letter and contain only "
            "ASCII letters, digits and '_' (it becomes the element name auths.<Name>)",
        )
    try:
        with os.scandir(folder) as listing:
            # The listing's own file types (no stat): which names are plain regular files.
            typed = [(e.name, e.is_file(follow_symlinks=False)) for e in listing]
    except OSError as exc:
        why = "a dangling or looping symbolic link" if folder.is_symlink() else exc.strerror
        out.add("error", folder, None, "unreadable", f"cannot read instance folder: {why}")
        return None, out.items
    entries = sorted(name for name, _ in typed)
    regular = {name for name, is_file in typed if is_file}

    values = _Values()
    biz_name = f"{name}.json"
    e_path = _find_file(folder, "e.json", entries, out, "element file")
    e_doc = _read_json(e_path, out, regular="e.json" in regular) if e_path else None
    if e_doc is not None:
        _check_object(
            e_doc.data,
            E_JSON_FIELDS,
            e_doc,
            env,
            out,
            values,
            elsewhere={r.name: biz_name for r in BUSINESS_FIELDS},
        )
    biz_path = _find_file(folder, biz_name, entries, out, "business file")
    biz = _read_json(biz_path, out, regular=biz_name in regular) if biz_path else None
    if biz is not None:
        _check_object(
            biz.data,
            BUSINESS_FIELDS,
            biz,
            env,
            out,
            values,
            elsewhere={r.name: "e.json" for r in E_JSON_FIELDS},
        )

    s = values.strings
    if biz is None or "authConfig.suiteId" not in s:
        return None, out.items
    complete = not out.failed and e_doc is not None
    unknown = {k for k in _PAIR if k not in s}
    active = biz.data.get("isActive", True) if isinstance(biz.data, dict) else True
    instance = AuthInstance(
        name=name,
        title=s.get("title", ""),
        type=s.get("type", ""),
        suite_id=s["authConfig.suiteId"],
        suite_secret=s.get("authConfig.suiteSecret", ""),
        encoding_aes_key=s.get("authConfig.encodingAESKey", ""),
        token=s.get("authConfig.token", ""),
        corp_id=s.get("corpId"),
        is_active=active if isinstance(active, bool) else True,
        path=folder,
    )
    loaded = _Loaded(
        instance,
        _shown(str(biz.path)),
        biz,
        frozenset(values.unresolved | unknown),
        complete,
        values.written.get("authConfig.suiteSecret"),
    )
    return loaded, out.items


# -- across instances ----------------------------------------------------------------


def _differ(a: _Loaded, b: _Loaded, attr: str, label: str) -> bool:
    """Whether two instances certainly hold different values (unresolved refs: unknown)."""
    va, vb = getattr(a.instance, attr), getattr(b.instance, attr)
    if va == vb:
        return False
    return not ({label} & (a.unresolved | b.unresolved))


def _cross_check(
    loaded: Sequence[_Loaded], targets: set[Path], identities: _Identities
) -> Iterator[Diagnostic]:
    """Rules across the instances of each auths/ folder: what makes callbacks or logins
    ambiguous.

    WeCom signs and encrypts all command callbacks of one suite with one token and
    EncodingAESKey (wecom-protocol.md §1, §2.2), so two active instances of one suite
    with different pairs cannot both verify; two of one suite claiming one corp make
    the login route ambiguous (an error); two of different suites claiming one corp
    leave only the by-corp service call ambiguous (a warning). A conflict is reported
    once, on an instance being validated. Separate auths/ folders (two apps in one
    repository) are separate deployments and are not compared.
    """
    groups: dict[str, list[_Loaded]] = {}
    for x in loaded:
        if x.instance.is_active:
            groups.setdefault(identities.parent(x.instance.path.parent), []).append(x)
    for _, group in sorted(groups.items(), key=lambda item: Path(item[0])):
        yield from _cross_check_folder(sorted(group, key=lambda x: x.instance.path), targets)


def _cross_check_folder(active: Sequence[_Loaded], targets: set[Path]) -> Iterator[Diagnostic]:
    # Each suite's reference is its first instance whose token and key are both known;
    # instances before it (unset env: references, invalid fields) are compared with it
    # once it appears, later ones as they come. One odd instance is blamed once, and the
    # healthy ones that agree with the reference are not. Linear in the instances.
    reference: dict[str, _Loaded] = {}
    waiting: dict[str, list[_Loaded]] = {}
    corp_first: dict[str, _Loaded] = {}
    corp_in_suite: dict[tuple[str, str], _Loaded] = {}

    def clash(a: _Loaded, b: _Loaded) -> bool:
        return _differ(a, b, "token", "authConfig.token") or _differ(
            a, b, "encoding_aes_key", "authConfig.encodingAESKey"
        )

    def report(
        blamed: tuple[_Loaded, _Loaded],
        severity: Severity,
        field: Literal["suiteId", "corpId"],
        code: str,
        message: str,
    ) -> Iterator[Diagnostic]:
        """On the first of ``blamed`` being validated, at its ``field``; else nowhere."""
        at = next((x for x in blamed if x.instance.path in targets), None)
        if at is not None:
            yield Diagnostic(
                severity, at.business_file, at.line(field), code, message, at.instance.name
            )

    def conflict(odd: _Loaded, ref: _Loaded) -> Iterator[Diagnostic]:
        yield from report(
            (odd, ref),
            "error",
            "suiteId",
            "suite-conflict",
            f"active instances {ref.instance.name} and {odd.instance.name} share suiteId "
            f"{ref.instance.suite_id} but have different token/encodingAESKey; WeCom "
            "signs a suite's callbacks with one pair, so one of them can never verify",
        )

    secret_first: dict[str, _Loaded] = {}

    def secrets_differ(odd: _Loaded, first: _Loaded) -> Iterator[Diagnostic]:
        """One suite has one secret (wecom-protocol.md §4): two values cannot both work,
        and two spellings of it (a literal here, an env: reference there) drift apart at
        the next rotation."""
        if clash(odd, first):  # already a suite-conflict over the token/key: one finding
            return
        a, b = odd.instance, first.instance
        label = "authConfig.suiteSecret"
        both_known = (
            a.suite_secret
            and b.suite_secret
            and label not in odd.unresolved
            and label not in first.unresolved
        )
        if both_known and a.suite_secret != b.suite_secret:
            yield from report(
                (odd, first),
                "error",
                "suiteId",
                "suite-conflict",
                f"active instances {b.name} and {a.name} share suiteId {a.suite_id} but have "
                "different suiteSecret values; a suite has one secret, so get_suite_token "
                "fails for one of them",
            )
        elif odd.secret_written != first.secret_written:
            yield from report(
                (odd, first),
                "warning",
                "suiteId",
                "suite-secret-source",
                f"active instances {b.name} and {a.name} share suiteId {a.suite_id} but write "
                f"its suiteSecret differently ({_secret_spelling(first.secret_written)} vs "
                f"{_secret_spelling(odd.secret_written)}); write it the same way in both so "
                "one rotation changes both",
            )

    for cur in active:
        inst = cur.instance
        if cur.secret_written is not None:
            first_secret = secret_first.setdefault(inst.suite_id, cur)
            if first_secret is not cur:
                yield from secrets_differ(cur, first_secret)
        ref = reference.get(inst.suite_id)
        if ref is not None:
            if clash(ref, cur):
                yield from conflict(cur, ref)
        elif _PAIR & cur.unresolved:
            waiting.setdefault(inst.suite_id, []).append(cur)
        else:
            reference[inst.suite_id] = cur
            for earlier in waiting.pop(inst.suite_id, []):
                if clash(cur, earlier):
                    yield from conflict(earlier, cur)
        if not inst.corp_id:
            continue
        same = corp_in_suite.get((inst.corp_id, inst.suite_id))
        if same is not None:
            yield from report(
                (cur, same),
                "error",
                "corpId",
                "ambiguous-corp",
                f"active instances {same.instance.name} and {inst.name} both claim corpId "
                f"{inst.corp_id} for suiteId {inst.suite_id}; logins for that corp cannot "
                "be routed",
            )
            continue
        corp_in_suite[(inst.corp_id, inst.suite_id)] = cur
        other = corp_first.setdefault(inst.corp_id, cur)
        if other is not cur:
            yield from report(
                (cur, other),
                "warning",
                "corpId",
                "shared-corp",
                f"active instances {other.instance.name} and {inst.name} (suites "
                f"{other.instance.suite_id} and {inst.suite_id}) both claim corpId "
                f"{inst.corp_id}; the service's loginByWorkbench(corpId, …) cannot choose "
                "between them, call the instance's getLoginCode instead",
            )


def _secret_spelling(written: str | None) -> str:
    """How a suiteSecret is written, never its value: ``env:VAR`` or 'a literal'."""
    if written and written.startswith(ENV_PREFIX):
        return _quoted(written)
    return "a literal value"


def _siblings(parent: Path, known: set[Path], listings: _Listings) -> list[Path]:
    """Instance folders beside a validated one; best effort, they only add context.

    ``known`` folders (already validated) are skipped before touching the disk: when a
    whole auths/ folder is validated every sibling is known, and checking 10,000 of
    them again cost a third of the run.
    """
    try:
        return [
            p for p in listings.subfolders(parent) if p not in known and _looks_like_instance(p)
        ]
    except ConfigError:
        return []


def validate_paths(
    paths: Iterable[Path], env: Mapping[str, str] | None = None, *, resolve_env: bool = True
) -> ValidationReport:
    """Validate the instance folders ``paths`` name, and the rules across instances.

    The cross-instance rules also see the other instances in the same auths/ folder, so
    validating one instance (or one changed file, as pre-commit does) still catches a
    conflict with a sibling; siblings' own problems are not reported. With
    ``resolve_env=False`` env:VAR references are checked for syntax only, and the
    instances carry the reference in place of the secret (for checks where the
    production environment is absent, such as pre-commit).
    """
    source = (os.environ if env is None else env) if resolve_env else None
    folders: list[Path] = []
    seen: set[str] = set()
    listings = _Listings()
    identities = _Identities(listings.plain)
    for p in paths:
        for folder in instance_dirs(Path(p), listings):
            real = identities.of(folder)
            if real not in seen:
                seen.add(real)
                folders.append(folder)
    loaded: list[_Loaded] = []
    diagnostics: list[Diagnostic] = []
    for folder in folders:
        result, diags = _validate_instance(folder, source)
        diagnostics.extend(diags)
        if result is not None:
            loaded.append(result)
    valid = tuple(x.instance for x in loaded if x.complete)
    known = set(folders)
    for parent in dict.fromkeys(f.parent for f in folders):
        for sibling in _siblings(parent, known, listings):
            real = identities.of(sibling)
            if real in seen:
                continue
            seen.add(real)
            result, _ = _validate_instance(sibling, source)
            if result is not None:
                loaded.append(result)
    diagnostics.extend(_cross_check(loaded, set(folders), identities))
    return ValidationReport(valid, tuple(diagnostics), tuple(_shown(str(f)) for f in folders))


def load_instances(auths_dir: Path, env: Mapping[str, str] | None = None) -> list[AuthInstance]:
    """Every valid instance under ``auths_dir`` (invalid ones are skipped, not fatal)."""
    return list(validate_paths([auths_dir], env).instances)


def _only_secret_missing(diags: Iterable[Diagnostic]) -> bool:
    """Whether every error is an unset ``env:`` reference of suiteSecret."""
    errors = [d for d in diags if d.severity == "error"]
    return bool(errors) and all(
        d.code == "env-unset" and d.message.startswith("authConfig.suiteSecret ") for d in errors
    )


def find_instance(
    ref: str,
    auths_dir: Path,
    env: Mapping[str, str] | None = None,
    *,
    need_secret: bool = True,
) -> AuthInstance:
    """Resolve ``--auth NAME``, ``--auth auths.NAME`` or ``--auth path/to/instance``.

    ``need_secret=False`` is for callers that only sign, encrypt or decrypt callbacks:
    WXBizMsgCrypt uses the token and EncodingAESKey alone, so an unset suiteSecret
    variable (a developer's machine, a CI job) is not an error for them; the instance
    comes back with an empty ``suite_secret``.
    """
    env = os.environ if env is None else env
    candidate = Path(ref)
    if ("/" in ref or os.sep in ref or ref in (".", "..")) and candidate.is_dir():
        folder = _named(candidate)
    else:
        name = ref.removeprefix("auths.")
        folder = auths_dir / name
        if not NAME_RE.fullmatch(name) or not folder.is_dir():
            available = (
                ", ".join(p.name for p in _subfolders(auths_dir) if _looks_like_instance(p))
                if auths_dir.is_dir()
                else ""
            )
            where = f"in {_shown(str(auths_dir))}" + (
                f" (available: {available})" if available else ""
            )
            raise InstanceNotFound(f"no auth instance named {_quoted(name)} {where}")
    result, diags = _validate_instance(folder, env)
    if result is not None and not need_secret and _only_secret_missing(diags):
        return result.instance
    if result is None or not result.complete:
        first = next(d for d in diags if d.severity == "error")
        line = f":{first.line}" if first.line else ""
        raise ConfigError(f"instance {folder.name} is invalid: {first.file}{line}: {first.message}")
    return result.instance
