"""WXBizMsgCrypt against the published vectors, an independent AES implementation, and tampering."""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from urllib.parse import parse_qsl

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from qywx_cli.core.crypto import (
    WXBizMsgCrypt,
    check_encoding_aes_key,
    generate_encoding_aes_key,
    generate_token,
    sign,
)
from qywx_cli.core.errors import CallbackCryptoError

TOKEN = "QDG6eK"
KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
CORP = "wx5823bf96d3bd56c7"
SUITE = "dk7f3a9c2e51b04d18"


# -- an independent implementation, written from the protocol text with `cryptography` --
def ref_encrypt(
    key43: str,
    plain: bytes,
    receive_id: bytes,
    *,
    pad_block: int = 32,
    length: int | None = None,
    pad_override: bytes | None = None,
) -> str:
    key = base64.b64decode(key43 + "=")
    body = os.urandom(16) + struct.pack(">I", len(plain) if length is None else length)
    body += plain + receive_id
    n = pad_block - len(body) % pad_block
    body += pad_override if pad_override is not None else bytes([n]) * n
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(body) + enc.finalize()).decode()


def ref_decrypt(key43: str, encrypt: str) -> tuple[bytes, bytes]:
    key = base64.b64decode(key43 + "=")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = dec.update(base64.b64decode(encrypt)) + dec.finalize()
    plain = plain[: -plain[-1]]
    (n,) = struct.unpack(">I", plain[16:20])
    return plain[20 : 20 + n], plain[20 + n :]


def ref_sign(*values: str) -> str:
    return hashlib.sha1("".join(sorted(values)).encode()).hexdigest()


# -- the published vectors -----------------------------------------------------------
def crypto_for(v: dict[str, str], **kw: object) -> WXBizMsgCrypt:
    return WXBizMsgCrypt(v["token"], v["encodingAESKey"], {v["receiveId"]: "provider_corp"}, **kw)  # type: ignore[arg-type]


def test_every_vector_reproduces(vectors: list[dict[str, str]]) -> None:
    kinds = set()
    for v in vectors:
        kinds.add(v["kind"])
        if v["kind"] == "verify_url":
            c = crypto_for(v)
            if "query" in v:  # the captured query, URL-decoded exactly once
                q = dict(parse_qsl(v["query"]))
                got = c.verify_url(q["msg_signature"], q["timestamp"], q["nonce"], q["echostr"])
                assert got.text == v["expect_plaintext"]
            got = c.verify_url(v["msg_signature"], v["timestamp"], v["nonce"], v["echostr"])
            assert got.receive_id == v["receiveId"] and got.receive_id_kind == "provider_corp"
            if "expect_plaintext" in v:
                assert got.text == v["expect_plaintext"]
            if "expect_signature_error_with_nonce" in v:
                with pytest.raises(CallbackCryptoError) as err:
                    c.verify_url(
                        v["msg_signature"],
                        v["timestamp"],
                        v["expect_signature_error_with_nonce"],
                        v["echostr"],
                    )
                assert err.value.wecom_code == -40001
        elif v["kind"] == "decrypt_msg":
            got = crypto_for(v).decrypt_msg(
                v["msg_signature"], v["timestamp"], v["nonce"], v["body"]
            )
            assert got.text == v["expect_plaintext"]
        elif v["kind"] == "encrypt_msg":
            c = crypto_for(v, random_bytes=lambda n, r=v["random16"]: r.encode())
            env = c.encrypt_msg(v["plaintext"], v["receiveId"], v["timestamp"], v["nonce"])
            assert env.encrypt == v["expect_encrypt"]
            assert env.msg_signature == v["expect_msg_signature"]
        else:  # pragma: no cover - a new kind in the file must be handled here
            pytest.fail(f"unhandled vector kind {v['kind']}")
    assert kinds == {"verify_url", "decrypt_msg", "encrypt_msg"}


def test_php_vector_has_32_byte_padding(vectors: list[dict[str, str]]) -> None:
    """The pad byte of the official POST vector is 30: a 16-byte unpadder would refuse it."""
    v = next(x for x in vectors if x["kind"] == "decrypt_msg")
    encrypt = v["body"].split("<Encrypt><![CDATA[")[1].split("]]>")[0]
    key = base64.b64decode(v["encodingAESKey"] + "=")
    dec = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    assert (dec.update(base64.b64decode(encrypt)) + dec.finalize())[-1] == 30
    assert crypto_for(v).decrypt(encrypt).text == v["expect_plaintext"]


# -- independent round trips ----------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([SUITE, CORP, "wpHylaFgAAZSqam2uawB3_8m6TDvhtdd"]))
def test_round_trip_both_directions(message: bytes, receive_id: str) -> None:
    c = WXBizMsgCrypt(TOKEN, KEY, {receive_id: "suite"})
    ours = c.encrypt(message, receive_id)
    assert ref_decrypt(KEY, ours) == (message, receive_id.encode())
    theirs = ref_encrypt(KEY, message, receive_id.encode())
    got = c.decrypt(theirs)
    assert (got.message, got.receive_id, got.receive_id_kind) == (message, receive_id, "suite")


def test_encrypt_pads_a_full_block_when_aligned() -> None:
    # 16 random + 4 length + 12 message = 32: still gets a full 32-byte pad block
    c = WXBizMsgCrypt(TOKEN, KEY, {"": "unknown"})
    raw = base64.b64decode(c.encrypt(b"x" * 12, ""))
    assert len(raw) == 64


def test_signature_matches_independent_sha1() -> None:
    assert sign(TOKEN, "1409659813", "1372623149", "abc") == ref_sign(
        TOKEN, "1409659813", "1372623149", "abc"
    )


def test_encrypt_msg_envelope_decrypts_with_independent_code() -> None:
    c = WXBizMsgCrypt(TOKEN, KEY, {SUITE: "suite"})
    env = c.encrypt_msg("<xml><InfoType>suite_ticket</InfoType></xml>", SUITE, "1700000000", "42")
    assert env.msg_signature == ref_sign(TOKEN, "1700000000", "42", env.encrypt)
    body = env.request_xml(SUITE)
    assert f"<Encrypt><![CDATA[{env.encrypt}]]></Encrypt>" in body
    assert c.decrypt_msg(env.msg_signature, env.timestamp, env.nonce, body).receive_id == SUITE
    assert ref_decrypt(KEY, env.encrypt)[1] == SUITE.encode()
    assert env.query(echostr=True)["echostr"] == env.encrypt


# -- receiveid -----------------------------------------------------------------------
def test_receive_id_kind_is_reported_and_unknown_refused() -> None:
    ids = {SUITE: "suite", CORP: "provider_corp", "wwcustomer": "authorized_corp"}
    c = WXBizMsgCrypt(TOKEN, KEY, ids)  # type: ignore[arg-type]
    for rid, kind in ids.items():
        assert c.decrypt(ref_encrypt(KEY, b"m", rid.encode())).receive_id_kind == kind
    stranger = ref_encrypt(KEY, b"m", b"wwstranger")
    with pytest.raises(CallbackCryptoError) as err:
        c.decrypt(stranger)
    assert err.value.wecom_code == -40005
    assert c.decrypt(stranger, check_receive_id=False).receive_id_kind == "unknown"


# -- tampering: each fails with WeCom's code, never a Python exception ---------------
def signed(c: WXBizMsgCrypt, encrypt: str) -> tuple[str, str, str, str]:
    return c.sign("1700000000", "7", encrypt), "1700000000", "7", encrypt


@pytest.fixture
def c() -> WXBizMsgCrypt:
    return WXBizMsgCrypt(TOKEN, KEY, {SUITE: "suite"})


def test_flipped_byte_fails_signature(c: WXBizMsgCrypt) -> None:
    sig, ts, nonce, enc = signed(c, c.encrypt(b"<xml/>", SUITE))
    raw = bytearray(base64.b64decode(enc))
    raw[5] ^= 0x01
    with pytest.raises(CallbackCryptoError) as err:
        c.verify_url(sig, ts, nonce, base64.b64encode(bytes(raw)).decode())
    assert err.value.wecom_code == -40001


def test_flipped_last_block_resigned_fails_padding(c: WXBizMsgCrypt) -> None:
    # CBC: flipping the penultimate block's last byte flips exactly the pad byte (pad ^ 0xFF,
    # always > 32); flipping the last block itself would randomise it (1/256 valid pads).
    raw = bytearray(base64.b64decode(c.encrypt(b"<xml/>", SUITE)))
    raw[-17] ^= 0xFF
    with pytest.raises(CallbackCryptoError) as err:
        c.verify_url(*signed(c, base64.b64encode(bytes(raw)).decode()))
    assert err.value.wecom_code == -40007


@pytest.mark.parametrize("pad", [b"\x00" * 32, b"\x21" * 32, b"\x05" * 31 + b"\x06"])
def test_wrong_padding(c: WXBizMsgCrypt, pad: bytes) -> None:
    # 16 random + 4 length + 26 message + 18 receiveid = 64: the pad is a whole 32-byte block
    enc = ref_encrypt(KEY, b"a" * 26, SUITE.encode(), pad_override=pad)
    with pytest.raises(CallbackCryptoError) as err:
        c.decrypt(enc)
    assert err.value.wecom_code == -40007


def test_wrong_length_field(c: WXBizMsgCrypt) -> None:
    enc = ref_encrypt(KEY, b"hello", SUITE.encode(), length=10_000)
    with pytest.raises(CallbackCryptoError) as err:
        c.decrypt(enc)
    assert err.value.wecom_code == -40008


def test_wrong_receive_id(c: WXBizMsgCrypt) -> None:
    with pytest.raises(CallbackCryptoError) as err:
        c.verify_url(*signed(c, ref_encrypt(KEY, b"x", b"wwattacker")))
    assert err.value.wecom_code == -40005


@pytest.mark.parametrize(("cut", "code"), [(-3, -40010), (-24, -40007), (None, -40010)])
def test_truncated_base64(c: WXBizMsgCrypt, cut: int | None, code: int) -> None:
    enc = c.encrypt(b"<xml>hello</xml>", SUITE)
    broken = enc[:cut] if cut is not None else enc[:10] + "!!" + enc[12:]
    with pytest.raises(CallbackCryptoError) as err:
        c.decrypt(broken)
    assert err.value.wecom_code == code


def test_wrong_key_fails_cleanly() -> None:
    enc = WXBizMsgCrypt(TOKEN, KEY, random_bytes=lambda n: b"0" * n).encrypt(b"<xml/>", SUITE)
    other = WXBizMsgCrypt(TOKEN, "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR", {SUITE: "suite"})
    with pytest.raises(CallbackCryptoError) as err:
        other.decrypt(enc)
    assert err.value.wecom_code in (-40007, -40008)


@pytest.mark.parametrize("sig", ["", "ZZZ", "签名" * 20, "0" * 40])
def test_verify_rejects_any_wrong_signature_without_type_errors(c: WXBizMsgCrypt, sig: str) -> None:
    with pytest.raises(CallbackCryptoError) as err:
        c.verify(sig, "1", "2", "abc")
    assert err.value.wecom_code == -40001


def test_verify_accepts_uppercase_hex(c: WXBizMsgCrypt) -> None:
    c.verify(c.sign("1", "2", "abc").upper(), "1", "2", "abc")


def test_plus_turned_into_space_by_a_proxy_is_restored(vectors: list[dict[str, str]]) -> None:
    v = vectors[0]
    got = crypto_for(v).verify_url(
        v["msg_signature"], v["timestamp"], v["nonce"], v["echostr"].replace("+", " ")
    )
    assert got.text == v["expect_plaintext"]


@pytest.mark.parametrize("key", ["", "short", KEY + "A", KEY[:-1] + "=", KEY[:-1] + "-", None])
def test_bad_aes_key_is_40004_and_never_echoed(key: str | None) -> None:
    with pytest.raises(CallbackCryptoError) as err:
        WXBizMsgCrypt(TOKEN, key)  # type: ignore[arg-type]
    assert err.value.wecom_code == -40004
    assert not key or key not in str(err.value)


def test_messages_and_repr_hold_no_secret(c: WXBizMsgCrypt) -> None:
    texts = [repr(c)]
    for bad in ["!!", "", c.encrypt(b"x", "wwother")]:
        try:
            c.verify_url(*signed(c, bad))
        except CallbackCryptoError as exc:
            texts.append(str(exc))
    assert len(texts) == 4
    for text in texts:
        assert TOKEN not in text and KEY not in text


def test_generators_make_valid_values() -> None:
    for _ in range(20):
        assert len(check_encoding_aes_key(generate_encoding_aes_key())) == 32
        tok = generate_token()
        assert len(tok) == 32 and tok.isalnum()


def test_one_context_per_thread_decrypts_every_message_alike() -> None:
    # The decryption context carries CBC state from one message to the next; messages of
    # every length, refused ones in between, and eight threads at once must not disturb it.
    import threading

    crypt = WXBizMsgCrypt(TOKEN, KEY, {SUITE: "suite"})
    messages = [os.urandom(n) for n in (0, 1, 15, 16, 31, 32, 33, 200, 1000)]
    texts = [ref_encrypt(KEY, m, SUITE.encode()) for m in messages]
    broken = ref_encrypt(KEY, b"a" * 26, SUITE.encode(), pad_override=b"\x00" * 32)
    failures: list[str] = []

    def work() -> None:
        for _ in range(200):
            for message, text in zip(messages, texts, strict=True):
                if crypt.decrypt(text).message != message:
                    failures.append("wrong plaintext")
                with pytest.raises(CallbackCryptoError):
                    crypt.decrypt(broken)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
