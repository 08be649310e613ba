"""Reading captured WeCom requests (URL, parts, raw dumps) and opening them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qywx_cli.core.capture import (
    from_http_dump,
    from_parts,
    from_url,
    looks_like_http_request,
    mask_plaintext,
    open_captured,
)
from qywx_cli.core.config import AuthInstance
from qywx_cli.core.crypto import WXBizMsgCrypt
from qywx_cli.core.errors import CallbackCryptoError, UsageError
from tests.helpers import independent_encrypt, sha1_sign


def _vector(vectors: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(v for v in vectors if v["name"] == name)


INSTANCE = AuthInstance(
    name="Demo",
    title="demo",
    type="auths.loginTypes.QywxProxyType",
    suite_id="dk0123456789abcdef",
    suite_secret="s",
    encoding_aes_key="E9UHtBKCXwKg2OOuJ5GfwRkNR3dcmHKmaJjmQt4cugP",
    token="tok3n",
    corp_id="wwcorp0000000001",
    is_active=True,
    path=Path("/nonexistent"),
)


# -- reading ------------------------------------------------------------------------------


def test_from_url_accepts_full_url_path_and_bare_query(vectors: list[dict[str, Any]]) -> None:
    v = _vector(vectors, "wecom-php-sample-verify-url")
    for text in (f"http://host:8080/cb?{v['query']}", f"/cgi-bin/wxpush?{v['query']}", v["query"]):
        cap = from_url(text)
        assert cap.kind == "verify_url" and cap.method == "GET"
        assert (cap.msg_signature, cap.timestamp, cap.nonce) == (
            v["msg_signature"],
            v["timestamp"],
            v["nonce"],
        )
        assert cap.echostr == v["echostr"]  # URL-decoded: %2B → '+', %2F → '/', %3D → '='
        assert cap.body is None


def test_from_url_post_needs_a_body_and_all_three_parameters() -> None:
    with pytest.raises(UsageError, match="body"):
        from_url("http://h/cb?msg_signature=a&timestamp=1&nonce=2")
    with pytest.raises(UsageError, match="nonce"):
        from_url("http://h/cb?msg_signature=a&timestamp=1", body=b"<xml/>")
    with pytest.raises(UsageError, match="more than once"):
        from_url("/cb?msg_signature=a&msg_signature=b&timestamp=1&nonce=2", body=b"<xml/>")
    with pytest.raises(UsageError, match="no query"):
        from_url("http://h/cb")
    with pytest.raises(UsageError, match="no body"):
        from_url("/cb?msg_signature=a&timestamp=1&nonce=2&echostr=x", body=b"<xml/>")
    cap = from_url("/cb?msg_signature=a&timestamp=1&nonce=2&other=z#frag", body=b"<xml/>")
    assert cap.kind == "callback" and cap.body == b"<xml/>" and cap.path == "/cb"


def test_from_parts_refuses_echostr_and_body_together() -> None:
    with pytest.raises(UsageError, match="not both"):
        from_parts("a", "1", "2", echostr="e", body=b"<xml/>")
    assert from_parts("a", "1", "2", echostr="e").kind == "verify_url"


def test_http_dump_crlf_with_content_length_ignores_trailing_bytes() -> None:
    body = b"<xml><Encrypt><![CDATA[abc]]></Encrypt></xml>"
    dump = (
        b"POST /notify/Demo?msg_signature=s&timestamp=1&nonce=2 HTTP/1.1\r\n"
        b"Host: example.com\r\nContent-Type: text/xml\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"\r\n\r\n"
    )
    assert looks_like_http_request(dump)
    cap = from_http_dump(dump)
    assert cap.body == body and cap.path == "/notify/Demo" and not cap.warnings
    assert (cap.msg_signature, cap.timestamp, cap.nonce) == ("s", "1", "2")


def test_http_dump_lf_endings_absolute_target_and_chunked_body() -> None:
    dump = (
        b"\xef\xbb\xbfPOST http://h:1/cb?msg_signature=s&timestamp=1&nonce=2 HTTP/2\n"
        b"transfer-encoding: chunked\n\n"
        b"5\n<xml>\n7\n</xml>\n\n0\n\n"
    )
    cap = from_http_dump(dump)
    assert cap.body == b"<xml></xml>\n"
    assert cap.path == "/cb"


def test_http_dump_get_handshake_and_short_body_warning() -> None:
    get = (
        b"GET /cb?msg_signature=s&timestamp=1&nonce=2&echostr=a%2Bb%3D%3D HTTP/1.1\r\n"
        b"Host: h\r\n\r\n"
    )
    cap = from_http_dump(get)
    assert cap.kind == "verify_url" and cap.echostr == "a+b=="
    short = b"POST /cb?msg_signature=s&timestamp=1&nonce=2 HTTP/1.1\nContent-Length: 99\n\n<xml/>"
    assert "truncated" in from_http_dump(short).warnings[0]


@pytest.mark.parametrize(
    "dump, message",
    [
        (b"<xml><Encrypt>x</Encrypt></xml>", "not an HTTP request dump"),
        (b"PUT /cb?msg_signature=s&timestamp=1&nonce=2 HTTP/1.1\n\nx", "GET and POST"),
        (b"GET /cb?msg_signature=s&timestamp=1&nonce=2 HTTP/1.1\n\n", "without echostr"),
        (b"POST /cb?msg_signature=s&timestamp=1&nonce=2 HTTP/1.1\nbad header\n\nx", "header"),
        (b"POST /cb?msg_signature=s HTTP/1.1\n\n<xml/>", "timestamp"),
    ],
)
def test_http_dump_refusals(dump: bytes, message: str) -> None:
    assert not looks_like_http_request(b"<xml/>")
    with pytest.raises(UsageError, match=message):
        from_http_dump(dump)


# -- opening ------------------------------------------------------------------------------


def test_official_vectors_open_to_the_published_plaintext(vectors: list[dict[str, Any]]) -> None:
    get = _vector(vectors, "wecom-php-sample-verify-url")
    crypto = WXBizMsgCrypt(get["token"], get["encodingAESKey"], {})
    opened = open_captured(from_url("http://host/cb?" + get["query"]), crypto)
    assert opened.plaintext == get["expect_plaintext"]
    assert opened.signature_valid and opened.kind == "verify_url" and dict(opened.fields) == {}
    assert (opened.receive_id, opened.receive_id_kind) == (get["receiveId"], "unknown")

    post = _vector(vectors, "wecom-php-sample-decrypt-msg")
    query = (
        f"msg_signature={post['msg_signature']}&timestamp={post['timestamp']}&nonce={post['nonce']}"
    )
    opened = open_captured(from_url(query, body=post["body"].encode()), crypto)
    assert opened.plaintext == post["expect_plaintext"]
    assert opened.fields["Content"] == "hello" and opened.info_type == "text"


def test_bad_signature_raises_unless_verify_is_off(vectors: list[dict[str, Any]]) -> None:
    v = _vector(vectors, "wechatpy-check-signature")
    crypto = WXBizMsgCrypt(v["token"], v["encodingAESKey"], {v["receiveId"]: "provider_corp"})
    wrong = from_parts(
        v["msg_signature"],
        v["timestamp"],
        v["expect_signature_error_with_nonce"],
        echostr=v["echostr"],
    )
    with pytest.raises(CallbackCryptoError) as info:
        open_captured(wrong, crypto)
    assert info.value.wecom_code == -40001
    opened = open_captured(wrong, crypto, verify=False)
    assert not opened.signature_valid
    assert opened.receive_id_kind == "provider_corp"
    # A '+' that arrived as a space (an unencoded paste) still verifies.
    spaced = from_parts(
        v["msg_signature"], v["timestamp"], v["nonce"], echostr=v["echostr"].replace("+", " ")
    )
    assert open_captured(spaced, crypto).signature_valid


def test_independent_envelope_opens_and_receiveid_is_classified() -> None:
    crypto = INSTANCE.crypto(INSTANCE.receive_ids(["wwauthorized01"]))
    message = (
        "<xml><SuiteId><![CDATA[dk0123456789abcdef]]></SuiteId>"
        "<InfoType><![CDATA[suite_ticket]]></InfoType><TimeStamp>1700000000</TimeStamp>"
        "<SuiteTicket><![CDATA[TICKET-very-secret-value]]></SuiteTicket></xml>"
    )
    for receive_id, kind in [
        (INSTANCE.suite_id, "suite"),
        ("wwcorp0000000001", "provider_corp"),
        ("wwauthorized01", "authorized_corp"),
        ("wwstranger", "unknown"),
    ]:
        encrypt = independent_encrypt(INSTANCE.encoding_aes_key, message.encode(), receive_id)
        body = f"<xml><ToUserName>x</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        sig = sha1_sign(INSTANCE.token, "1700000000", "99", encrypt)
        opened = open_captured(from_parts(sig, "1700000000", "99", body=body.encode()), crypto)
        assert (opened.receive_id, opened.receive_id_kind) == (receive_id, kind)
        assert opened.plaintext == message and opened.info_type == "suite_ticket"
        assert opened.fields["SuiteTicket"] == "TICKET-very-secret-value"


def test_undecryptable_but_signed_data_raises_with_wecom_code() -> None:
    crypto = INSTANCE.crypto()
    encrypt = "bm90IGEgYmxvY2s="  # valid base64, 11 bytes: not whole AES blocks
    sig = sha1_sign(INSTANCE.token, "1", "2", encrypt)
    with pytest.raises(CallbackCryptoError) as info:
        open_captured(from_parts(sig, "1", "2", echostr=encrypt), crypto)
    assert info.value.wecom_code == -40007


def test_non_xml_callback_plaintext_is_a_warning_not_a_failure() -> None:
    crypto = INSTANCE.crypto()
    encrypt = crypto.encrypt("just text", INSTANCE.suite_id)
    body = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()
    opened = open_captured(from_parts(crypto.sign("1", "2", encrypt), "1", "2", body=body), crypto)
    assert opened.plaintext == "just text" and opened.info_type is None
    assert "not callback XML" in opened.warnings[0]


def test_mask_plaintext_hides_credentials_only() -> None:
    xml = (
        "<xml><SuiteTicket><![CDATA[abcdefghijklmnop]]></SuiteTicket>\n"
        "<AuthCode>AUTHCODE-secret-123456</AuthCode><SuiteId><![CDATA[dk1]]></SuiteId></xml>"
    )
    masked = mask_plaintext(xml)
    assert "abcdefghijklmnop" not in masked and "AUTHCODE-secret-123456" not in masked
    assert "<SuiteTicket><![CDATA[abc***nop]]></SuiteTicket>" in masked
    assert "<AuthCode>AUT***456</AuthCode>" in masked
    assert "<SuiteId><![CDATA[dk1]]></SuiteId>" in masked
