"""Secrets at rest: the permanent codes and cached tokens in the store, sealed with AES-GCM.

A copied database backup must not be every customer's credentials, so with a key set
(``QYWX_SECRET_KEY``, or ``secret_key = "env:VAR"`` in qywx.toml) the store keeps each
permanent code (a corp's app secret) and each cached token or JS-SDK ticket as::

    qywx:v1:<key id>:<base64url(12-byte nonce | AES-256-GCM ciphertext and tag)>

in the column that held the plaintext, so no schema change is needed and a value says
by itself whether it is plaintext (written without a key), sealed with the current key
or with an older one. The key id is a short hash of the key, never the key.

Each value is bound to its row: the associated data names the table, the column and the
row's key (suite and corp for a permanent code, kind and key for a token), so a sealed
permanent code copied onto another corp's row fails authentication instead of handing
corp B corp A's secret. A key is 32 random bytes in base64url (``qywx db gen-key``).

Nothing here reads the environment: :func:`qywx_cli.core.settings.load_settings`
resolves the keys into a :class:`Keyring`, and the store is opened with it. The AEAD
itself (``cryptography``) is imported on first use, so commands that never touch a
secret do not pay for it.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from qywx_cli.core.errors import ConfigError, SecretKeyError, StoreError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from qywx_cli.core.store.records import SecretsAtRest

__all__ = [
    "KEY_BYTES",
    "KEY_ENV",
    "OLD_KEY_ENV",
    "PREFIX",
    "Keyring",
    "SecretKey",
    "SecretKeyError",
    "Slot",
    "Verdict",
    "assess_at_rest",
    "generate_key",
    "is_sealed",
    "key_id_of",
]

PREFIX: Final = "qywx:v1:"
"""What every sealed value starts with; a WeCom token or permanent code never does."""
KEY_BYTES: Final = 32
KEY_ENV: Final = "QYWX_SECRET_KEY"
OLD_KEY_ENV: Final = "QYWX_OLD_SECRET_KEY"
_NONCE_BYTES: Final = 12
_SEALED: Final = re.compile(r"qywx:v1:([0-9a-f]{8}):([A-Za-z0-9_-]+)")
_KEY_TEXT: Final = re.compile(r"[A-Za-z0-9_\-+/]{43}=?")
_HOW_TO_SET: Final = f'set {KEY_ENV} (or secret_key = "env:VAR" in qywx.toml)'


def generate_key() -> str:
    """A fresh key: 32 bytes from the OS's CSPRNG, base64url without padding (43 chars)."""
    import base64

    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode().rstrip("=")


@dataclass(frozen=True, repr=False)
class SecretKey:
    """One AES-256 key and where it came from (for messages); its repr shows neither the
    key nor a part of it, only the key id."""

    raw: bytes = field(repr=False)
    source: str = KEY_ENV

    @classmethod
    def parse(cls, text: str, source: str = KEY_ENV) -> SecretKey:
        """32 bytes in base64url (or standard base64), padding optional; anything else is
        one ConfigError line that names ``source``, never the value."""
        import base64
        import binascii

        value = text.strip()
        raw = b""
        if _KEY_TEXT.fullmatch(value):
            alphabet = value.replace("+", "-").replace("/", "_").rstrip("=")
            try:
                raw = base64.urlsafe_b64decode(alphabet + "=")
            except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits none
                raw = b""
        if len(raw) != KEY_BYTES:
            raise ConfigError(
                f"{source} is not a qywx secret key: it must be {KEY_BYTES} random bytes "
                "in base64url (43 characters); make one with `qywx db gen-key` "
                "(the value is not shown)"
            )
        return cls(raw, source)

    @classmethod
    def looks_like_one(cls, text: str) -> bool:
        """Whether ``text`` parses as a key: where a variable's *name* was expected, the
        caller refuses it without echoing it (``--old-key-env "$OLD"``, ``env:<key>``)."""
        try:
            cls.parse(text)
        except ConfigError:
            return False
        return True

    @functools.cached_property
    def kid(self) -> str:
        """The key id written into every value it seals: 8 hex digits of a hash of the
        key, enough to tell keys apart and nothing to guess the key from."""
        import hashlib

        return hashlib.sha256(b"qywx secret key id\0" + self.raw).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"SecretKey(kid={self.kid!r}, source={self.source!r})"


@dataclass(frozen=True)
class Slot:
    """Where a secret lives: its table, column and the row's key, which the ciphertext is
    bound to (AES-GCM associated data)."""

    table: str
    column: str
    row: tuple[str, ...]

    @classmethod
    def permanent_code(cls, suite_id: str, corp_id: str) -> Slot:
        return cls("corp_auths", "permanent_code", (suite_id, corp_id))

    @classmethod
    def token(cls, kind: str, key: str) -> Slot:
        return cls("tokens", "token", (kind, key))

    @property
    def aad(self) -> bytes:
        return "\0".join((PREFIX, self.table, self.column, *self.row)).encode()

    def describe(self) -> str:
        """For messages: which secret, by identifiers only."""
        if self.table == "corp_auths":
            suite_id, corp_id = self.row
            return f"the permanent code of corp {corp_id} (suite {suite_id})"
        kind, key = self.row
        return f"the cached {kind} token for {key}" if key else f"the cached {kind} token"


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(PREFIX)


def key_id_of(value: str) -> str | None:
    """The key id a sealed value names, or None for plaintext."""
    m = _SEALED.fullmatch(value)
    return m.group(1) if m else None


@dataclass(frozen=True, repr=False)
class Keyring:
    """The key that seals (``current``, None = store plaintext) and older keys that may
    still open values (during a rotation). Empty by default: qywx works as it always did."""

    current: SecretKey | None = None
    old: tuple[SecretKey, ...] = ()
    _aead: dict[str, Any] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        kid = self.current.kid if self.current else None
        return f"Keyring(current={kid!r}, old={[k.kid for k in self.old]!r})"

    @property
    def enabled(self) -> bool:
        return self.current is not None

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(k.kid for k in ((self.current,) if self.current else ()) + self.old)

    def _key(self, kid: str) -> SecretKey | None:
        every = ((self.current,) if self.current else ()) + self.old
        return next((k for k in every if k.kid == kid), None)

    def with_old(self, *keys: SecretKey) -> Keyring:
        """This keyring, also able to open values sealed with ``keys``."""
        known = set(self.kids)
        extra = tuple(k for k in keys if k.kid not in known)
        return Keyring(self.current, self.old + extra)

    def _cipher(self, key: SecretKey) -> AESGCM:
        aead = self._aead.get(key.kid)
        if aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            aead = self._aead[key.kid] = AESGCM(key.raw)
        return aead

    def seal(self, value: str, slot: Slot) -> str:
        """``value`` as it is to be stored: sealed with the current key, or as is without
        one. A plaintext that looks sealed is refused: it could never be read back."""
        if value.startswith(PREFIX):
            raise UsageError(f"{slot.describe()} may not begin with {PREFIX!r}")
        if self.current is None:
            return value
        import base64

        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._cipher(self.current).encrypt(nonce, value.encode(), slot.aad)
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self.current.kid}:{body}"

    def seal_optional(self, value: str | None, slot: Slot) -> str | None:
        return None if value is None else self.seal(value, slot)

    def open(self, stored: str, slot: Slot) -> str:
        """The plaintext of a stored value: plaintext rows as they are, sealed ones opened
        with the key they name. SecretKeyError when that key is not set; StoreError when
        the value does not authenticate (altered, or moved from another row)."""
        if not stored.startswith(PREFIX):
            return stored
        m = _SEALED.fullmatch(stored)
        if m is None:
            raise StoreError(f"{slot.describe()} is not a valid sealed value (damaged)")
        kid, body = m.groups()
        key = self._key(kid)
        if key is None:
            if self.current is None:
                raise SecretKeyError(
                    f"{slot.describe()} is encrypted (key id {kid}) and no secret key is "
                    f"set: {_HOW_TO_SET} to that key"
                )
            raise SecretKeyError(
                f"{slot.describe()} is encrypted with key id {kid}, but {self.current.source} "
                f"is key id {self.current.kid}: set it to the key the database was written "
                f"with, or during a rotation pass that one as {OLD_KEY_ENV}"
            )
        import base64
        import binascii

        from cryptography.exceptions import InvalidTag

        try:
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            plain = self._cipher(key).decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], slot.aad)
        except (InvalidTag, binascii.Error, ValueError):
            raise StoreError(
                f"{slot.describe()} does not authenticate under key id {kid}: it was altered "
                "or copied from another row; restore it from a backup or reinstall the app"
            ) from None
        return plain.decode()

    def open_optional(self, stored: str | None, slot: Slot) -> str | None:
        return None if stored is None else self.open(stored, slot)

    def reseal(self, stored: str, slot: Slot) -> str | None:
        """``stored`` sealed with the current key, or None when it already is (or when
        there is no current key and it is plaintext): what a rotation writes."""
        if self.current is not None and key_id_of(stored) == self.current.kid:
            self.open(stored, slot)  # still proves it authenticates
            return None
        plain = self.open(stored, slot)
        if self.current is None:
            return plain if plain != stored else None
        return self.seal(plain, slot)


NO_KEYS: Final = Keyring()
"""No key: secrets are stored and read as plaintext (sealed ones cannot be read)."""


@dataclass(frozen=True)
class Verdict:
    """What ``doctor`` and ``serve`` say about secrets at rest: ``status`` ok, warning
    (works, but something should be done) or failed (secrets cannot be read)."""

    status: str
    detail: str
    fix: str = ""


_ROTATE: Final = "run `qywx db rotate-key`"


def assess_at_rest(keys: Keyring, survey: SecretsAtRest) -> Verdict:
    """Judge how the store's secrets are kept against the keys set.

    No key is a warning, not an error (qywx works as before; a copied backup holds every
    corp's credentials). Rows sealed with a key that is not set are a failure: every
    call needing them fails until it is set. Plaintext rows or rows of an older key
    under a new one are a warning: ``qywx db rotate-key`` seals them.
    """
    gen = f"make a key with `qywx db gen-key`, set it as {KEY_ENV}, then {_ROTATE}"
    unknown = {kid: n for kid, n in survey.by_key.items() if kid not in keys.kids}
    if unknown:
        kids = ", ".join(sorted(unknown))
        n = sum(unknown.values())
        if keys.current is None:
            return Verdict(
                "failed",
                f"{n} stored secret(s) are encrypted (key id {kids}) and no secret key is set",
                f"{_HOW_TO_SET} to the key they were written with",
            )
        return Verdict(
            "failed",
            f"{n} stored secret(s) are encrypted with key id {kids}, which is not set "
            f"({keys.current.source} is key id {keys.current.kid})",
            f"set {keys.current.source} to that key, or pass it as {OLD_KEY_ENV} and {_ROTATE}",
        )
    if keys.current is None:
        held = f" ({survey.plaintext} stored)" if survey.plaintext else ""
        return Verdict(
            "warning",
            "no secret key is set: permanent codes and access tokens are stored in "
            f"plaintext{held}, so a copy of the database holds every corp's credentials",
            gen,
        )
    current = keys.current.kid
    stale = survey.total - survey.by_key.get(current, 0)
    if stale:
        return Verdict(
            "warning",
            f"{stale} stored secret(s) not under the current key id {current} "
            f"({survey.plaintext} plaintext)",
            _ROTATE,
        )
    return Verdict("ok", f"{survey.total} stored secret(s) encrypted with key id {current}")
