"""The XML parser sees unauthenticated input: it must refuse, not expand, anything odd."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qywx_cli.core.errors import CallbackCryptoError, UnsafeXMLError
from qywx_cli.core.xmlsafe import (
    MAX_XML_BYTES,
    _flat_pairs,
    element_fields,
    envelope_encrypt,
    parse_fields,
    parse_xml,
)
from tests.helpers import examples

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


# -- flat documents are read without a tree: both routes must agree ---------------------

# Mostly characters a flat document may hold, some that send it to expat instead.
_TEXTS = st.text(
    alphabet=st.sampled_from(
        list("aZ09+/= \t\né中\x7f\x85\u2028\U0001f600") * 8
        + list("\r]>[<&;!-\x00\x01\ufffe\uffff\ud800")
    ),
    max_size=12,
)
_TAGS = st.sampled_from(["xml", "Encrypt", "InfoType", "a_1", "Encrypt", "xml", "1a", "x-y", ""])


@st.composite
def _flat_like(draw: st.DrawFn) -> str:
    """Documents close to WeCom's flat shape, with the odd character or tag thrown in."""
    root = draw(_TAGS)
    parts = [draw(st.sampled_from(["", "", "", " ", "\n", "\r\n", "\ufeff"])), f"<{root}>"]
    for _ in range(draw(st.integers(0, 4))):
        tag = draw(_TAGS)
        close = tag if draw(st.integers(0, 9)) else draw(_TAGS)
        value = draw(_TEXTS)
        if draw(st.booleans()):
            ws = draw(st.sampled_from(["", " ", "\n "]))
            value = f"{ws}<![CDATA[{value}]]>{ws}"
        parts.append(draw(st.sampled_from(["", "\n", " "])) + f"<{tag}>{value}</{close}>")
    parts.append(f"</{root if draw(st.integers(0, 9)) else draw(_TAGS)}>")
    parts.append(draw(st.sampled_from(["", "", "\n", "x"])))
    return "".join(parts)


def _slow_route(doc: str | bytes) -> tuple[str, object]:
    try:
        root = parse_xml(doc)
    except CallbackCryptoError as exc:
        return ("error", (type(exc), exc.wecom_code))
    node = root.find("Encrypt")
    return ("ok", (element_fields(root), (node.text or "").strip() if node is not None else ""))


@settings(max_examples=examples(1500), deadline=None)
@given(_flat_like(), st.booleans())
def test_the_flat_route_reads_what_expat_reads(doc: str, as_bytes: bool) -> None:
    data: str | bytes = doc.encode("utf-8", "surrogatepass") if as_bytes else doc
    pairs = _flat_pairs(data)
    outcome, detail = _slow_route(data)
    if pairs is not None:  # recognised as flat: expat must agree on every field
        assert outcome == "ok"
        assert isinstance(detail, tuple)
        fields, encrypt = detail
        assert dict(pairs) == fields
        assert next((v for t, v in pairs if t == "Encrypt"), "") == encrypt
    fast: tuple[str, object]
    try:
        fast = ("ok", parse_fields(data))
    except CallbackCryptoError as exc:
        fast = ("error", (type(exc), exc.wecom_code))
    assert fast[0] == outcome
    if outcome == "ok":
        assert isinstance(detail, tuple)
        assert fast[1] == detail[0]
    else:
        assert fast[1] == detail


def test_wecom_envelopes_take_the_flat_route() -> None:
    envelope = (
        "<xml><ToUserName><![CDATA[ww1]]></ToUserName>"
        "<Encrypt><![CDATA[abc=]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    )
    assert _flat_pairs(envelope) == [("ToUserName", "ww1"), ("Encrypt", "abc="), ("AgentID", "")]
    assert envelope_encrypt(envelope.encode()) == "abc="
    # what WeCom never sends goes to expat, which refuses it as before
    assert _flat_pairs(XXE) is None
    with pytest.raises(UnsafeXMLError):
        envelope_encrypt(XXE)


@settings(max_examples=examples(500), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Encrypt", "InfoType", "SuiteTicket", "a_1"]),
            st.text(alphabet=st.sampled_from(list("aZ09+/= \t\né中>\x7f\u2028")), max_size=20),
            st.booleans(),
        ),
        max_size=6,
    )
)
def test_flat_documents_are_recognised_and_read_alike(
    items: list[tuple[str, str, bool]],
) -> None:
    doc = "<xml>" + "".join(
        f"<{tag}>{f'<![CDATA[{value}]]>' if cdata else value}</{tag}>"
        for tag, value, cdata in items
    )
    doc += "</xml>\n"
    pairs = _flat_pairs(doc.encode())
    assert pairs is not None
    assert dict(pairs) == element_fields(parse_xml(doc))
