"""The XML parser sees unauthenticated input: it must refuse, not expand, anything odd."""

from __future__ import annotations

import pytest

from qywx_cli.core.errors import CallbackCryptoError, UnsafeXMLError
from qywx_cli.core.xmlsafe import MAX_XML_BYTES, element_fields, envelope_encrypt, parse_xml

XXE = b"""<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<xml><Encrypt>&xxe;</Encrypt></xml>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<xml><Encrypt>&lol3;</Encrypt></xml>"""
EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE xml SYSTEM "http://127.0.0.1:9/x.dtd"><xml/>'
PARAM_ENTITY = b'<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/hosts"> %p;]><xml/>'


@pytest.mark.parametrize("doc", [XXE, BILLION_LAUGHS, EXTERNAL_DTD, PARAM_ENTITY])
def test_dtds_and_entities_are_refused(doc: bytes) -> None:
    with pytest.raises(UnsafeXMLError) as err:
        parse_xml(doc)
    assert err.value.wecom_code == -40002
    assert "root:" not in str(err.value)  # nothing from a file leaked into the message


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(UnsafeXMLError):
        parse_xml("<a>" * 50_000 + "</a>" * 50_000)


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(UnsafeXMLError, match="larger than"):
        parse_xml(b"<xml>" + b"a" * MAX_XML_BYTES + b"</xml>")


@pytest.mark.parametrize(
    "doc", [b"", b"   ", b"garbage", b"<xml>", b"\xff\xfe\x00<", b"<xml>\xc3\x28</xml>"]
)
def test_malformed_is_40002(doc: bytes) -> None:
    with pytest.raises(CallbackCryptoError) as err:
        parse_xml(doc)
    assert err.value.wecom_code == -40002


def test_fields_are_stripped_and_cdata_read() -> None:
    root = parse_xml(
        "<xml><InfoType> <![CDATA[suite_ticket]]></InfoType><TimeStamp>1</TimeStamp></xml>"
    )
    assert element_fields(root) == {"InfoType": "suite_ticket", "TimeStamp": "1"}


def test_envelope_without_encrypt() -> None:
    with pytest.raises(CallbackCryptoError, match="no Encrypt"):
        envelope_encrypt("<xml><ToUserName>x</ToUserName></xml>")
    assert envelope_encrypt("<xml><Encrypt>\n abc= \n</Encrypt></xml>") == "abc="
