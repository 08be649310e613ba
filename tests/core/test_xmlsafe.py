"""The XML parser sees unauthenticated input: it must refuse, not expand, anything odd."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qywx_cli.core.errors import CallbackCryptoError, UnsafeXMLError
from qywx_cli.core.xmlsafe import (
    MAX_XML_BYTES,
    _exact_envelope,
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


# Pieces of envelopes: WeCom's own, and the odd one that must leave the exact route.
_ENVELOPE_WS = st.sampled_from([""] * 30 + [" ", "\n", "\t", "\n  "] * 4 + ["\r\n", "\x0b"])
_ENVELOPE_TEXTS = {
    tag: st.one_of(
        *[st.text(alphabet=st.sampled_from(list(clean)), min_size=1, max_size=16)] * 3,
        st.text(alphabet=st.sampled_from(list(clean + " \n]>[<&;é\x00\x01")), max_size=16),
    )
    for tag, clean in (
        ("Encrypt", "aZ09+/="),
        ("ToUserName", "aZ09_@.-"),
        ("AgentID", "09"),
        ("MsgType", "ab"),
    )
}


@st.composite
def _envelope_like(draw: st.DrawFn) -> str:
    """A POST envelope as WeCom sends it, with whitespace, order and text varied."""

    def field(tag: str) -> str:
        value = draw(_ENVELOPE_TEXTS[tag])
        if draw(st.sampled_from([True, True, True, False])):  # CDATA, mostly
            ws = draw(_ENVELOPE_WS)
            value = f"{ws}<![CDATA[{value}]]>{ws}"
        return f"{draw(_ENVELOPE_WS)}<{tag}>{value}</{tag}>"

    tags = ["ToUserName", "Encrypt", "AgentID"]
    if draw(st.sampled_from([False] * 4 + [True])):  # now and then, any order or count
        tags = draw(st.permutations([*tags, "Encrypt", "MsgType"]))[: draw(st.integers(0, 5))]
    else:
        tags = [t for t in tags if t == "Encrypt" or draw(st.sampled_from([True] * 3 + [False]))]
    root = draw(st.sampled_from(["xml"] * 9 + ["xm", "Xml", "root"]))
    body = "".join(field(tag) for tag in tags)
    return f"{draw(_ENVELOPE_WS)}<{root}>{body}{draw(_ENVELOPE_WS)}</xml>{draw(_ENVELOPE_WS)}"


@settings(max_examples=examples(500), deadline=None)
@given(_envelope_like(), st.booleans())
def test_the_exact_envelope_route_reads_what_expat_reads(doc: str, as_bytes: bool) -> None:
    data: str | bytes = doc.encode() if as_bytes else doc
    exact = _exact_envelope(data)
    outcome, detail = _slow_route(data)
    if exact is not None:  # taken: expat parses it and reads the same Encrypt
        assert outcome == "ok"
        assert isinstance(detail, tuple)
        assert exact == detail[1]
        pairs = _flat_pairs(data)  # and the flat route recognises it too
        assert pairs is not None
        assert next(v for t, v in pairs if t == "Encrypt") == exact
    # whichever route answers, envelope_encrypt gives expat's answer
    try:
        answer: tuple[str, object] = ("ok", envelope_encrypt(data))
    except CallbackCryptoError as exc:
        answer = ("error", (type(exc), exc.wecom_code))
    if outcome == "ok":
        assert isinstance(detail, tuple)
        if detail[1]:
            assert answer == ("ok", detail[1])
        else:
            assert answer[0] == "error"
    else:
        assert answer == ("error", detail)


def test_wecoms_own_envelope_takes_the_exact_route() -> None:
    envelope = (
        "<xml><ToUserName><![CDATA[tj1234567890abcdef]]></ToUserName>"
        "<Encrypt><![CDATA[ab+/cd==]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    )
    assert _exact_envelope(envelope) == "ab+/cd=="
    assert _exact_envelope(envelope.encode()) == "ab+/cd=="
    assert _exact_envelope("<xml>\n<Encrypt><![CDATA[ x= ]]></Encrypt>\n</xml>\n") == "x="
    # anything else is left to the other routes: markup or an entity in the text, a
    # second CDATA end, another element, a declaration, an empty Encrypt
    for other in (
        envelope.replace("ab+/", "a&amp;"),
        envelope.replace("ab+/", "a]]>b"),
        envelope.replace("<AgentID>", "<MsgType>x</MsgType><AgentID>"),
        '<?xml version="1.0"?>' + envelope,
        envelope.replace("ab+/cd==", ""),
    ):
        assert _exact_envelope(other) is None
    assert (
        _exact_envelope(b"<xml><Encrypt><![CDATA[" + b"A" * MAX_XML_BYTES + b"]]></Encrypt></xml>")
        is None
    )


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
