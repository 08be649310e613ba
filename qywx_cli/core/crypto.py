"""WXBizMsgCrypt: the signature and AES scheme WeCom uses for every callback.

Byte for byte as wecom-protocol.md §1 describes it:

* AES key = base64(EncodingAESKey + "="), 32 bytes; AES-256-CBC with IV = key[:16].
* plaintext = 16 random bytes ‖ big-endian uint32 length ‖ message ‖ receiveid,
  PKCS#7-padded to a **32-byte** block (WeCom pads to 32, not AES's 16: the official
  POST vector carries a pad byte of 30, which 16-byte unpadders reject).
* msg_signature = sha1 of the lexicographically sorted values (token, timestamp,
  nonce, encrypt), lowercase hex; compared in constant time.

The receiveid trailer differs by scenario (§2.2: provider corp id for the GET
handshake, suite id for command callbacks, the authorized corp for data callbacks),
so the crypto is given a mapping of acceptable ids to their kind and reports which
one matched instead of hard-coding one.

Decryption is on every callback's path, so it stays in C end to end: ``binascii`` for
base64, ``hashlib`` for the signature, and one AES-256-CBC call of the ``cryptography``
package per message on a cipher context kept per thread (the key schedule is built once,
see ``WXBizMsgCrypt.decrypt``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qywx_cli.core.errors import CallbackCryptoError
from qywx_cli.core.xmlsafe import envelope_encrypt

__all__ = [
    "BLOCK_SIZE",
    "Decrypted",
    "Envelope",
    "ReceiveIdKind",
    "WXBizMsgCrypt",
    "check_encoding_aes_key",
    "generate_encoding_aes_key",
    "generate_token",
    "sign",
]

BLOCK_SIZE = 32
"""WeCom's PKCS#7 block: 32 bytes (§1.1)."""

ReceiveIdKind = Literal["suite", "provider_corp", "authorized_corp", "unknown"]

_AES_BLOCK = 16
_PADDING = tuple(bytes([n]) * n for n in range(BLOCK_SIZE + 1))
"""The PKCS#7 padding of each length, so a check compares and builds nothing."""
_AES_KEY_RE = re.compile(r"[A-Za-z0-9+/]{43}")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def sign(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """msg_signature over the sorted *values* (not the parameter names), §1.3."""
    joined = "".join(sorted((token, str(timestamp), str(nonce), encrypt)))
    # surrogatepass: a lone surrogate from a hostile query must not crash, only mismatch
    return hashlib.sha1(joined.encode("utf-8", "surrogatepass")).hexdigest()


if sys.version_info >= (3, 11):

    def _b64decode(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)

else:  # pragma: no cover - strict_mode is new in 3.11

    def _b64decode(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


def check_encoding_aes_key(encoding_aes_key: str) -> bytes:
    """Return the 32-byte AES key, or raise -40004 without echoing the key."""
    if not isinstance(encoding_aes_key, str) or not _AES_KEY_RE.fullmatch(encoding_aes_key):
        raise CallbackCryptoError(
            CallbackCryptoError.ILLEGAL_AES_KEY,
            "EncodingAESKey must be exactly 43 characters of the base64 alphabet",
        )
    key = base64.b64decode(encoding_aes_key + "=")
    if len(key) != 32:  # pragma: no cover - 43 valid chars always decode to 32 bytes
        raise CallbackCryptoError(
            CallbackCryptoError.ILLEGAL_AES_KEY, "does not decode to 32 bytes"
        )
    return key


def generate_encoding_aes_key(choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh 43-character key from [A-Za-z0-9], the alphabet WeCom's console uses."""
    return "".join(choice(_ALNUM) for _ in range(43))


def generate_token(length: int = 32, choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh callback token: letters and digits, at most 32 (WeCom console rule)."""
    return "".join(choice(_ALNUM) for _ in range(length))


class Decrypted(NamedTuple):
    """A decrypted payload and which of the acceptable receiveids it carried.

    A named tuple rather than a frozen dataclass: one is built for every callback, and a
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) cost a sixth
    of ``decrypt`` itself.
    """

    message: bytes
    receive_id: str
    receive_id_kind: ReceiveIdKind

    @property
    def text(self) -> str:
        try:
            return self.message.decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackCryptoError(
                CallbackCryptoError.ILLEGAL_BUFFER, "message is not UTF-8"
            ) from None


@dataclass(frozen=True, slots=True)
class Envelope:
    """An encrypted, signed callback as WeCom sends it (query params + Encrypt)."""

    encrypt: str
    msg_signature: str
    timestamp: str
    nonce: str

    def request_xml(self, to_user_name: str, agent_id: str = "") -> str:
        """The POST body WeCom sends (§1.5); AgentID is empty for command callbacks."""
        return (
            f"<xml><ToUserName><![CDATA[{to_user_name}]]></ToUserName>"
            f"<Encrypt><![CDATA[{self.encrypt}]]></Encrypt>"
            f"<AgentID><![CDATA[{agent_id}]]></AgentID></xml>"
        )

    def reply_xml(self) -> str:
        """The encrypted passive-reply template (§1.5)."""
        return (
            f"<xml>\n<Encrypt><![CDATA[{self.encrypt}]]></Encrypt>\n"
            f"<MsgSignature><![CDATA[{self.msg_signature}]]></MsgSignature>\n"
            f"<TimeStamp>{self.timestamp}</TimeStamp>\n"
            f"<Nonce><![CDATA[{self.nonce}]]></Nonce>\n</xml>"
        )

    def query(self, *, echostr: bool = False) -> dict[str, str]:
        """Query parameters of the request; with ``echostr`` the GET handshake's."""
        params = {
            "msg_signature": self.msg_signature,
            "timestamp": self.timestamp,
            "nonce": self.nonce,
        }
        if echostr:
            params["echostr"] = self.encrypt
        return params


class WXBizMsgCrypt:
    """Sign, verify, encrypt and decrypt WeCom callbacks for one token + EncodingAESKey.

    ``receive_ids`` maps each acceptable receiveid to its kind; decryption reports the
    kind and, unless told not to, refuses an id outside the mapping with -40005.
    ``random_bytes`` is injected so encryption is reproducible in tests (vector C).
    """

    __slots__ = ("_iv", "_key", "_local", "_random_bytes", "receive_ids", "token")

    def __init__(
        self,
        token: str,
        encoding_aes_key: str,
        receive_ids: Mapping[str, ReceiveIdKind] | None = None,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.token = token
        self._key = check_encoding_aes_key(encoding_aes_key)
        self._iv = self._key[:16]
        self._local = threading.local()  # one CBC context per thread (see decrypt)
        self.receive_ids: dict[str, ReceiveIdKind] = dict(receive_ids or {})
        self._random_bytes = random_bytes

    def __repr__(self) -> str:  # never show the key or token
        return f"WXBizMsgCrypt(receive_ids={sorted(self.receive_ids)!r})"

    # -- signatures -------------------------------------------------------------
    def sign(self, timestamp: str, nonce: str, encrypt: str) -> str:
        return sign(self.token, timestamp, nonce, encrypt)

    def verify(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        """Raise -40001 unless ``msg_signature`` matches; constant-time comparison."""
        expected = self.sign(timestamp, nonce, encrypt).encode("ascii")
        given = (msg_signature or "").strip().lower().encode("utf-8", "replace")
        if not hmac.compare_digest(expected, given):
            raise CallbackCryptoError(CallbackCryptoError.VALIDATE_SIGNATURE)

    # -- AES --------------------------------------------------------------------
    def encrypt(self, message: str | bytes, receive_id: str) -> str:
        """Encrypt ``message`` for ``receive_id``; returns the base64 ``Encrypt`` text."""
        body = message.encode("utf-8") if isinstance(message, str) else message
        plain = (
            self._random_bytes(16)
            + struct.pack(">I", len(body))
            + body
            + receive_id.encode("utf-8")
        )
        pad = BLOCK_SIZE - len(plain) % BLOCK_SIZE  # a full block when already aligned
        plain += bytes([pad]) * pad
        cipher = Cipher(algorithms.AES(self._key), modes.CBC(self._iv)).encryptor()
        return base64.b64encode(cipher.update(plain) + cipher.finalize()).decode("ascii")

    def _cbc(self) -> Any:
        """This thread's decryption context (a context carries chaining state: not shared)."""
        try:
            return self._local.cbc
        except AttributeError:
            cbc = self._local.cbc = Cipher(
                algorithms.AES(self._key), modes.CBC(self._iv)
            ).decryptor()
            return cbc

    def decrypt(self, encrypt: str, *, check_receive_id: bool = True) -> Decrypted:
        """Decrypt the base64 ``Encrypt`` text; every malformation maps to a WeCom code."""
        try:
            raw = _b64decode((encrypt or "").strip())
        except (binascii.Error, ValueError):
            raise CallbackCryptoError(
                CallbackCryptoError.DECODE_BASE64, "Encrypt is not valid base64"
            ) from None
        if not raw or len(raw) % _AES_BLOCK:
            raise CallbackCryptoError(
                CallbackCryptoError.DECRYPT_AES, "ciphertext length is not a whole number of blocks"
            )
        # CBC decryption is P[i] = D(C[i]) xor C[i-1]; a context carries C[i-1] from one
        # call to the next. Feeding the IV as a first block makes it the C[-1] of this
        # message whatever the context saw before (that block's output is dropped), so
        # one context per thread serves every message with one C call and no new key
        # schedule. Inputs are whole blocks (checked above), so nothing stays buffered.
        plain = self._cbc().update(self._iv + raw)[_AES_BLOCK:]
        pad = plain[-1]
        if not 1 <= pad <= BLOCK_SIZE or not plain.endswith(_PADDING[pad]):
            raise CallbackCryptoError(
                CallbackCryptoError.DECRYPT_AES, "bad PKCS#7 padding (wrong key or corrupted data)"
            )
        content = plain[16:-pad]
        if len(content) < 4:
            raise CallbackCryptoError(CallbackCryptoError.ILLEGAL_BUFFER, "plaintext too short")
        (length,) = struct.unpack(">I", content[:4])
        if length > len(content) - 4:
            raise CallbackCryptoError(
                CallbackCryptoError.ILLEGAL_BUFFER, "length field exceeds the plaintext"
            )
        try:
            receive_id = content[4 + length :].decode("utf-8")
        except UnicodeDecodeError:
            raise CallbackCryptoError(
                CallbackCryptoError.ILLEGAL_BUFFER, "receiveid is not UTF-8"
            ) from None
        kind: ReceiveIdKind = self.receive_ids.get(receive_id, "unknown")
        if check_receive_id and kind == "unknown":
            # Name the id: a receiveid is an identifier (corp/suite id), not a secret.
            raise CallbackCryptoError(
                CallbackCryptoError.VALIDATE_RECEIVE_ID, f"receiveid {receive_id!r} is not accepted"
            )
        return Decrypted(content[4 : 4 + length], receive_id, kind)

    # -- whole requests ---------------------------------------------------------
    def verify_url(
        self,
        msg_signature: str,
        timestamp: str,
        nonce: str,
        echostr: str,
        *,
        check_receive_id: bool = True,
    ) -> Decrypted:
        """The GET handshake (§1.4): verify over the URL-decoded echostr, then decrypt it.

        Some proxies turn ``+`` into a space while decoding the query (§5.3); a
        space can never occur in base64, so it is restored before verifying.
        """
        echostr = (echostr or "").replace(" ", "+")
        self.verify(msg_signature, timestamp, nonce, echostr)
        return self.decrypt(echostr, check_receive_id=check_receive_id)

    def decrypt_msg(
        self,
        msg_signature: str,
        timestamp: str,
        nonce: str,
        body: str | bytes,
        *,
        check_receive_id: bool = True,
    ) -> Decrypted:
        """A POST callback: read ``Encrypt`` from the envelope, verify, decrypt."""
        encrypt = envelope_encrypt(body)
        self.verify(msg_signature, timestamp, nonce, encrypt)
        return self.decrypt(encrypt, check_receive_id=check_receive_id)

    def encrypt_msg(
        self, message: str | bytes, receive_id: str, timestamp: str, nonce: str
    ) -> Envelope:
        """Encrypt and sign, as WeCom does before calling a callback URL."""
        encrypt = self.encrypt(message, receive_id)
        return Envelope(encrypt, self.sign(timestamp, nonce, encrypt), str(timestamp), str(nonce))
