"""Property-based fuzzing of everything that reads untrusted input (issue 6, item 4).

The one property everywhere: whatever arrives, qywx either succeeds or raises an error
of its own tree (:class:`QywxError`), which the CLI maps to an exit code and the notify
endpoint to a 4xx. Any other exception is a bug: in ``qywx serve`` it becomes a 500 and
a traceback in the log. The WSGI app is held to the HTTP form of the same rule: every
answer is below 500, short, and free of tracebacks.

Inputs are random bytes and text, grammar-built XML fragments (DTDs, entities, CDATA,
declarations of other encodings), and *mutated valid envelopes*: a real encrypted,
signed callback with bit flips, truncations and insertions, sent both with its old
signature (must fail the signature check) and re-signed (so the mutation reaches AES,
the padding, the length field and the receiveid check).

Reproducible: every test uses ``derandomize=True`` and no example database, so CI sees
the same examples on every run. A few hundred examples each keeps the file under 20 s.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode
from xml.sax.saxutils import escape

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qywx_cli.core import events as ev
from qywx_cli.core.config import load_instances, validate_paths
from qywx_cli.core.crypto import Decrypted, WXBizMsgCrypt, sign
from qywx_cli.core.errors import CallbackCryptoError, QywxError
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.service import CallbackService
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import Store
from qywx_cli.core.wecom import WeComClient
from qywx_cli.core.wsgi import NotifyApp
from qywx_cli.core.xmlsafe import element_fields, envelope_encrypt, parse_xml
from tests.helpers import SAMPLES, examples

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=examples(250),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TOKEN = "fuzzTok3n0123456789"
KEY = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ"
SUITE = "dkfuzz0000000001"
TS, NONCE = "1700000000", "424242"
XML = ev.build_event_xml(
    "suite_ticket", suite_id=SUITE, now=lambda: 1_700_000_000, token=lambda n: "T" * n
)
CRYPT = WXBizMsgCrypt(TOKEN, KEY, {SUITE: "suite"}, random_bytes=lambda n: bytes(range(n)))
VALID = CRYPT.encrypt_msg(XML, SUITE, TS, NONCE)
RAW = base64.b64decode(VALID.encrypt)


T = TypeVar("T")


def only_qywx_errors(call: Callable[[], T]) -> T | None:
    """Run ``call``; a QywxError is an accepted outcome, anything else fails the test."""
    try:
        return call()
    except QywxError as exc:
        assert "\n" not in str(exc), "error messages are one line"
        return None


# -- strategies ------------------------------------------------------------------------

XML_PIECES = [
    "<xml>",
    "</xml>",
    "<Encrypt>",
    "</Encrypt>",
    "<InfoType>",
    "</InfoType>",
    "<a>",
    "</a>",
    "<a/>",
    "<![CDATA[",
    "]]>",
    "<!DOCTYPE xml [",
    "<!ENTITY e 'boom'>",
    '<!ENTITY x SYSTEM "file:///etc/passwd">',
    "<!ENTITY % p 'q'>",
    "]>",
    "&e;",
    "&x;",
    "%p;",
    "&amp;",
    "&lt;",
    "&#0;",
    "&#x110000;",
    "&#65;",
    '<?xml version="1.0"?>',
    '<?xml version="1.0" encoding="UTF-16"?>',
    '<?xml version="1.0" encoding="ISO-8859-1"?>',
    "<?pi data?>",
    "<!-- c -->",
    '<x xmlns="urn:a" a="1">',
    "</x>",
    "\x00",
    "\ufeff",
]

xml_like = st.lists(st.sampled_from(XML_PIECES) | st.text(max_size=8), max_size=24).map("".join)


xml_inputs = (
    st.binary(max_size=600)
    | st.text(max_size=300)
    | xml_like
    | xml_like.map(lambda s: s.encode("utf-8"))
    | xml_like.map(lambda s: s.encode("utf-16"))
)


@st.composite
def mutated_ciphertext(draw: st.DrawFn) -> bytes:
    """The valid ciphertext with a bit flip, a truncation or an insertion."""
    raw = bytearray(RAW)
    kind = draw(st.sampled_from(["flip", "truncate", "cut-front", "insert", "replace-block"]))
    if kind == "flip":
        pos = draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif kind == "cut-front":
        del raw[: draw(st.integers(1, len(raw)))]
    elif kind == "insert":
        pos = draw(st.integers(0, len(raw)))
        raw[pos:pos] = draw(st.binary(min_size=1, max_size=48))
    else:
        block = draw(st.integers(0, len(raw) // 16 - 1))
        raw[block * 16 : block * 16 + 16] = draw(st.binary(min_size=16, max_size=16))
    return bytes(raw)


@st.composite
def mutated_encrypt_text(draw: st.DrawFn) -> str:
    """The base64 text itself damaged: characters dropped, inserted or replaced."""
    text = list(VALID.encrypt)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(text) - 1))
        op = draw(st.sampled_from(["drop", "insert", "replace"]))
        char = draw(st.sampled_from("A/+=-_.!%é0\u4e2d"))
        if op == "drop" and len(text) > 1:
            del text[pos]
        elif op == "insert":
            text.insert(pos, char)
        else:
            text[pos] = char
    return "".join(text)


def body_with(encrypt: str, to_user: str = SUITE) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    )


# -- crypto ----------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_decrypt_of_random_text_raises_only_crypto_errors(text: str) -> None:
    with contextlib.suppress(CallbackCryptoError):
        CRYPT.decrypt(text)


@FUZZ
@given(st.integers(1, 20).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)))
def test_decrypt_of_random_whole_blocks_raises_only_crypto_errors(raw: bytes) -> None:
    """Whole AES blocks get past base64 and length checks into padding and layout."""
    encrypt = base64.b64encode(raw).decode()
    result = only_qywx_errors(lambda: CRYPT.decrypt(encrypt))
    if result is not None:
        assert isinstance(result, Decrypted) and result.receive_id in CRYPT.receive_ids
    loose = only_qywx_errors(lambda: CRYPT.decrypt(encrypt, check_receive_id=False))
    assert loose is None or isinstance(loose, Decrypted)


@FUZZ
@given(mutated_ciphertext(), st.booleans())
def test_mutated_envelopes_fail_cleanly(raw: bytes, resign: bool) -> None:
    encrypt = base64.b64encode(raw).decode()
    sig = sign(TOKEN, TS, NONCE, encrypt) if resign else VALID.msg_signature
    try:
        dec = CRYPT.decrypt_msg(sig, TS, NONCE, body_with(encrypt))
    except CallbackCryptoError as exc:
        if not resign and encrypt != VALID.encrypt:
            # The signature covers the Encrypt text: any change is caught before AES
            # (an empty Encrypt is not an envelope at all).
            expected = "VALIDATE_SIGNATURE" if encrypt else "PARSE_XML"
            assert exc.wecom_code == getattr(CallbackCryptoError, expected)
        return
    # Only a flip confined to the random prefix (or a no-op) can still decrypt.
    assert resign or encrypt == VALID.encrypt
    assert dec.receive_id == SUITE


@FUZZ
@given(mutated_encrypt_text(), st.booleans())
def test_damaged_base64_fails_cleanly(encrypt: str, resign: bool) -> None:
    sig = sign(TOKEN, TS, NONCE, encrypt) if resign else VALID.msg_signature
    only_qywx_errors(lambda: CRYPT.decrypt_msg(sig, TS, NONCE, body_with(encrypt)))
    only_qywx_errors(lambda: CRYPT.verify_url(sig, TS, NONCE, encrypt))


@FUZZ
@given(
    st.text(max_size=60),
    st.text(max_size=30),
    st.text(max_size=30),
    st.text(max_size=300) | st.just(VALID.encrypt),
)
def test_verify_url_with_random_parameters(sig: str, ts: str, nonce: str, echostr: str) -> None:
    result = only_qywx_errors(lambda: CRYPT.verify_url(sig, ts, nonce, echostr))
    assert result is None or sig.strip().lower() == sign(TOKEN, ts, nonce, echostr)


@FUZZ
@given(st.text(max_size=60), xml_inputs)
def test_decrypt_msg_with_random_bodies(sig: str, body: str | bytes) -> None:
    only_qywx_errors(lambda: CRYPT.decrypt_msg(sig, TS, NONCE, body))


def test_lone_surrogates_raise_only_qywx_errors() -> None:
    only_qywx_errors(lambda: CRYPT.verify_url(VALID.msg_signature, "\udcff", NONCE, "AAAA"))
    only_qywx_errors(lambda: CRYPT.decrypt_msg("x", TS, NONCE, "<xml>\udcff</xml>"))


# -- XML and events --------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["bogus", "GBK", "UTF-7"])
def test_an_encoding_expat_cannot_use_is_a_parse_error(encoding: str) -> None:
    doc = f'<?xml version="1.0" encoding="{encoding}"?><xml><Encrypt>a</Encrypt></xml>'
    with pytest.raises(CallbackCryptoError) as err:
        parse_xml(doc.encode())
    assert err.value.wecom_code == CallbackCryptoError.PARSE_XML


@FUZZ
@given(xml_inputs)
def test_parse_xml_refuses_or_parses(data: str | bytes) -> None:
    root = only_qywx_errors(lambda: parse_xml(data))
    if root is not None:
        element_fields(root)
    only_qywx_errors(lambda: envelope_encrypt(data))


FIELD_NAMES = [
    "InfoType",
    "SuiteId",
    "SuiteTicket",
    "TimeStamp",
    "AuthCode",
    "AuthCorpId",
    "State",
    "ChangeType",
    "UserID",
    "MsgType",
    "Event",
    "ToUserName",
    "CreateTime",
    "ExternalUserID",
]
INFO_TYPES = [*ev.EVENT_NAMES, "change_external_contact", "event", "text", ""]


@st.composite
def event_documents(draw: st.DrawFn) -> str:
    """Callback-shaped XML: known field names, values known, numeric or random."""
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=10))
    parts = []
    for name in names:
        value = draw(
            st.sampled_from(INFO_TYPES)
            | st.integers(-(10**30), 10**30).map(str)
            | st.text(max_size=40)
        )
        cdata = draw(st.booleans()) and "]]>" not in value
        parts.append(f"<{name}>{'<![CDATA[' + value + ']]>' if cdata else escape(value)}</{name}>")
    return "<xml>" + "".join(parts) + "</xml>"


@FUZZ
@given(event_documents() | xml_inputs)
def test_parse_event_returns_an_event_or_an_event_error(doc: str | bytes) -> None:
    event = only_qywx_errors(lambda: ev.parse_event(doc))
    if event is not None:
        assert isinstance(event, ev.Event) and event.info_type
        ev.mask_fields(event)  # display never trips over a parsed value
        repr(event)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr", "", "a=b"]),
            st.text(alphabet="az09=+/%&; ", max_size=12),
        ),
        max_size=5,
    ).map(lambda pairs: "&".join(f"{k}={v}" if k != "a=b" else v for k, v in pairs))
)
def test_the_hand_split_query_is_what_parse_qsl_gives(query: str) -> None:
    from urllib.parse import parse_qsl

    from qywx_cli.core.wsgi import _query_pairs

    assert _query_pairs(query) == parse_qsl(query, keep_blank_values=True)


def test_an_absurd_timestamp_is_an_event_error() -> None:
    doc = f"<xml><InfoType>suite_ticket</InfoType><TimeStamp>{'9' * 5000}</TimeStamp></xml>"
    only_qywx_errors(lambda: ev.parse_event(doc))


# -- configuration ---------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=50)
    | st.sampled_from(["env:QYWX_FUZZ", "env:", "env:1BAD", KEY, TOKEN]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
secret_values = st.text(alphabet="ABCDEFGHJKMNPQRSTUVWXYZ23456789", min_size=12, max_size=30)


@st.composite
def business_documents(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A <Name>.json close to the real shape, so validation goes deep; plus its secrets."""
    secrets: list[str] = []
    auth: dict[str, Any] = {}
    for key in draw(
        st.lists(
            st.sampled_from(["suiteId", "suiteSecret", "encodingAESKey", "token", "other"]),
            unique=True,
        )
    ):
        if key in ("suiteSecret", "encodingAESKey", "token") and draw(st.booleans()):
            auth[key] = draw(secret_values)
            secrets.append(auth[key])
        else:
            auth[key] = draw(json_values)
    doc: dict[str, Any] = {"authConfig": auth if draw(st.booleans()) else draw(json_values)}
    for key in draw(st.lists(st.sampled_from(["isActive", "corpId", "$schema", "x"]))):
        doc[key] = draw(json_values)
    return doc, secrets


def _encode(value: Any, how: str) -> bytes:
    if how == "bom":
        return b"\xef\xbb\xbf" + json.dumps(value).encode()
    if how == "utf16":
        return json.dumps(value).encode("utf-16")
    return json.dumps(value, ensure_ascii=how == "ascii").encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def fuzz_auths(tmp_path_factory: pytest.TempPathFactory) -> Path:
    auths = tmp_path_factory.mktemp("fuzz") / "auths"
    (auths / "Fuzz").mkdir(parents=True)
    return auths


@FUZZ
@given(
    json_values | business_documents(),
    json_values,
    st.sampled_from(["utf8", "ascii", "bom", "utf16"]),
    st.binary(max_size=64),
    st.booleans(),
)
def test_config_validation_of_random_json(
    fuzz_auths: Path,
    business: Any,
    e_doc: Any,
    how: str,
    garbage: bytes,
    corrupt: bool,
) -> None:
    doc, secrets = business if isinstance(business, tuple) else (business, [])
    folder = fuzz_auths / "Fuzz"
    (folder / "Fuzz.json").write_bytes(
        garbage + _encode(doc, how) if corrupt else _encode(doc, how)
    )
    (folder / "e.json").write_bytes(_encode(e_doc, how))
    report = only_qywx_errors(lambda: validate_paths([fuzz_auths], env={}))
    only_qywx_errors(lambda: load_instances(fuzz_auths, env={}))
    if report is None:
        return
    text = json.dumps(doc, ensure_ascii=False) + json.dumps(e_doc, ensure_ascii=False)
    for diag in report.diagnostics:
        assert "\n" not in diag.message
        for secret in secrets:
            if text.count(secret) == 1:  # not also the value of a non-secret field
                assert secret not in diag.message, f"{diag.code} quotes a secret"


# -- the notify endpoint, called as WSGI -----------------------------------------------

NOW = 1_700_000_000.0


@dataclass
class Endpoint:
    app: NotifyApp
    crypt: WXBizMsgCrypt
    suite_id: str
    secrets: tuple[str, ...]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    db = tmp_path_factory.mktemp("fuzz-wsgi") / "qywx.db"
    store = Store(db, now=lambda: NOW)
    fake = FakeWeCom(now=lambda: NOW)
    client = WeComClient(
        store, base_url="http://fake.test/cgi-bin", transport=httpx.WSGITransport(app=fake)
    )
    instances = load_instances(SAMPLES, env={})
    service = CallbackService(
        Settings(auths_dir=SAMPLES, db_path=db, api_base="http://fake.test/cgi-bin"),
        store=store,
        client=client,
        instances=instances,
        now=lambda: NOW,
        background=False,
    )
    temp = next(i for i in instances if i.name == "QywxProxyTemp")
    secrets = tuple(s for i in instances for s in (i.token, i.encoding_aes_key, i.suite_secret))
    yield Endpoint(NotifyApp(service), temp.crypto(), temp.suite_id, secrets)
    service.close()


SERVED_PATHS = ["/notify", "/notify/", "/notify/QywxProxyTemp", "/notify/QywxProxyTemp/"]
NEAR_PATHS = ["/notify/QywxProxyCompanyA", "/notify/..", "/notify/Nope", "/healthz", "/", ""]


@st.composite
def routes(draw: st.DrawFn) -> tuple[str, str]:
    """A method and a path: mostly ones the app serves, then near misses and random text."""
    roll = draw(st.integers(0, 9))
    if roll < 7:
        method = draw(st.sampled_from(["POST", "GET"]))
        return method, draw(st.sampled_from(SERVED_PATHS))
    method = draw(
        st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "post"])
        | st.text(max_size=8)
    )
    if roll == 7:
        return method, draw(st.sampled_from(NEAR_PATHS))
    if roll == 8:
        return method, "/notify/" + draw(st.text(max_size=40))
    return method, draw(st.text(max_size=40))


def _environ(method: str, path: str, query: str, body: bytes, length: str | None) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    return environ


@st.composite
def signed_or_random(draw: st.DrawFn, crypt: WXBizMsgCrypt, suite: str) -> tuple[str, bytes]:
    """(query, body): unsigned junk, a valid callback, or a re-signed mutation of one."""
    kind = draw(st.sampled_from(["random", "fields", "valid", "mutated", "stale"]))
    if kind == "random":
        return draw(st.text(max_size=200)), draw(st.binary(max_size=300))
    if kind == "fields":
        keys = draw(
            st.dictionaries(
                st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr", "x"]),
                st.text(max_size=50),
            )
        )
        return urlencode(keys), draw(
            xml_inputs.map(lambda v: v if isinstance(v, bytes) else v.encode())
        )
    unique = draw(st.integers(0, 10**12))
    xml = ev.build_event_xml(
        "suite_ticket", suite_id=suite, now=lambda: NOW, token=lambda n: f"{unique:0{n}d}"
    )
    ts = str(int(NOW) - (draw(st.integers(301, 10**9)) if kind == "stale" else 0))
    nonce = str(draw(st.integers(0, 10**12)))
    envelope = crypt.encrypt_msg(xml, suite, ts, nonce)
    encrypt = envelope.encrypt
    if kind == "mutated":
        encrypt = draw(st.sampled_from([encrypt[:-4], encrypt[4:], "A" + encrypt[1:], encrypt * 2]))
    query = urlencode(
        {"msg_signature": crypt.sign(ts, nonce, encrypt), "timestamp": ts, "nonce": nonce}
        | ({"echostr": encrypt} if draw(st.booleans()) else {})
    )
    return query, body_with(encrypt, suite).encode()


@settings(FUZZ, max_examples=examples(400))
@given(st.data())
def test_notify_app_never_answers_5xx(endpoint: Endpoint, data: st.DataObject) -> None:
    method, path = data.draw(routes())
    query, body = data.draw(signed_or_random(endpoint.crypt, endpoint.suite_id))
    length = data.draw(
        st.sampled_from([str(len(body)), None, "", "abc", "-1", str(len(body) + 10), "0"])
    )
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    chunks = endpoint.app(
        _environ(method, path, query, body, length),
        lambda status, headers: seen.append((status, headers)),
    )
    answer = b"".join(chunks)
    assert len(seen) == 1
    status = int(seen[0][0].split()[0])
    event(f"HTTP {status}")
    assert 200 <= status < 500, (status, answer)
    if method.upper() == "HEAD":  # GET's headers, no body (RFC 9110 §9.3.2)
        assert answer == b""
    else:
        assert dict(seen[0][1])["Content-Length"] == str(len(answer))
    text = answer.decode("utf-8", "replace")
    assert "Traceback" not in text
    if status != 200:
        assert len(answer) < 300
    for secret in endpoint.secrets:
        assert secret not in text
