"""events: the documented samples of wecom-protocol.md §3, and build → parse round trips."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
import xml.sax.saxutils
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qywx_cli.core.errors import EventError, UnsafeXMLError, UsageError
from qywx_cli.core.events import (
    DATA_EVENT_NAMES,
    EVENT_NAMES,
    BatchJobResultEvent,
    CancelAuthEvent,
    ChangeAppAdminEvent,
    ChangeAuthEvent,
    ChangeContactEvent,
    ChangeExternalContactEvent,
    CreateAuthEvent,
    EnterAgentEvent,
    Event,
    ResetPermanentCodeEvent,
    SuiteTicketEvent,
    TextMessageEvent,
    UnknownEvent,
    build_event_xml,
    content_key,
    corp_id_from_auth_code,
    mask_fields,
    parse_event,
)

# -- the documented samples (wecom-protocol.md §3), copied as published ------------------

SUITE_TICKET = """<xml>
<SuiteId><![CDATA[ww4asffe99e54c0fxxxx]]></SuiteId>
<InfoType> <![CDATA[suite_ticket]]></InfoType>
<TimeStamp>1403610513</TimeStamp>
<SuiteTicket><![CDATA[asdfasfdasdfasdf]]></SuiteTicket>
</xml>"""

CREATE_AUTH = """<xml>
	<SuiteId><![CDATA[ww4asffe9xxx4c0f4c]]></SuiteId>
	<AuthCode><![CDATA[AUTHCODE]]></AuthCode>
	<InfoType><![CDATA[create_auth]]></InfoType>
	<TimeStamp>1403610513</TimeStamp>
	<State><![CDATA[123]]></State>
	<ExtraInfo></ExtraInfo>
</xml>"""

CHANGE_AUTH = """<xml>
	<SuiteId><![CDATA[ww4asffe99exxx0f4c]]></SuiteId>
	<InfoType><![CDATA[change_auth]]></InfoType>
	<TimeStamp>1403610513</TimeStamp>
	<AuthCorpId><![CDATA[wxf8b4f85f3a794e77]]></AuthCorpId>
	<State><![CDATA[abc]]></State>
</xml>"""

CANCEL_AUTH = """<xml>
	<SuiteId><![CDATA[ww4asffe99e54cxxxx]]></SuiteId>
	<InfoType><![CDATA[cancel_auth]]></InfoType>
	<TimeStamp>1403610513</TimeStamp>
	<AuthCorpId><![CDATA[wxf8b4f85fxx794xxx]]></AuthCorpId>
</xml>"""

RESET_PERMANENT_CODE = """<xml>
	<SuiteId><![CDATA[dk4asffe9xxx4c0f4c]]></SuiteId>
	<AuthCode><![CDATA[AUTHCODE]]></AuthCode>
	<InfoType><![CDATA[reset_permanent_code]]></InfoType>
	<TimeStamp>1403610513</TimeStamp>
</xml>"""

# The third-party sample elides the last fields with "…"; they are filled in here.
CHANGE_CONTACT_COMMAND = """<xml>
	<SuiteId><![CDATA[ww4asffe99e54c0f4c]]></SuiteId>
	<AuthCorpId><![CDATA[wxf8b4f85f3axxxxxx]]></AuthCorpId>
	<InfoType><![CDATA[change_contact]]></InfoType>
	<TimeStamp>1403610513</TimeStamp>
	<ChangeType><![CDATA[create_user]]></ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<OpenUserID><![CDATA[woxxx]]></OpenUserID>
	<Name><![CDATA[张三]]></Name>
	<Department><![CDATA[1,2,3]]></Department>
	<MainDepartment>1</MainDepartment>
	<IsLeaderInDept><![CDATA[1,0,0]]></IsLeaderInDept>
	<DirectLeader><![CDATA[lisi,wangwu]]></DirectLeader>
	<Mobile><![CDATA[11111111111]]></Mobile>
	<Position><![CDATA[产品经理]]></Position>
	<Gender>1</Gender>
	<Email><![CDATA[zhangsan@gzdev.com]]></Email>
	<BizMail><![CDATA[zhangsan@qyycs2.wecom.work]]></BizMail>
	<Avatar><![CDATA[http://wx.qlogo.cn/mmopen/ajNVdqHZLLA3WJ6DSZUfiakYe37PKnQhBIeOQBO4czqrnZDS79FH5Wm5m4X69TBicnHFlhiafvDwklOpZeXYQQ2icg/0]]></Avatar>
	<Alias><![CDATA[zhangsan]]></Alias>
	<Telephone><![CDATA[020-123456]]></Telephone>
	<ExtAttr><Item><Name><![CDATA[爱好]]></Name><Type>0</Type><Text><Value><![CDATA[旅游]]></Value></Text></Item></ExtAttr>
</xml>"""

CHANGE_CONTACT_DATA = """<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_contact]]></Event>
	<ChangeType>create_user</ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<Name><![CDATA[张三]]></Name>
	<Department><![CDATA[1,2,3]]></Department>
	<MainDepartment>1</MainDepartment>
</xml>"""

CHANGE_EXTERNAL_CONTACT = """<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_external_contact]]></Event>
	<ChangeType><![CDATA[add_external_contact]]></ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mAAAA]]></ExternalUserID>
	<State><![CDATA[teststate]]></State>
	<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>
</xml>"""

# The plaintext of the official DecryptMsg vector (§1.7, vector B): a text message.
TEXT_MESSAGE = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>\n"
    "<FromUserName><![CDATA[mycreate]]></FromUserName>\n<CreateTime>1409659813</CreateTime>\n"
    "<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[hello]]></Content>\n"
    "<MsgId>4561255354251345929</MsgId>\n<AgentID>218</AgentID>\n</xml>"
)


def test_suite_ticket_sample_with_padded_info_type() -> None:
    event = parse_event(SUITE_TICKET)
    assert event == SuiteTicketEvent(
        info_type="suite_ticket",
        kind="command",
        suite_id="ww4asffe99e54c0fxxxx",
        corp_id=None,
        timestamp=1403610513,
        fields={
            "SuiteId": "ww4asffe99e54c0fxxxx",
            "InfoType": "suite_ticket",
            "TimeStamp": "1403610513",
            "SuiteTicket": "asdfasfdasdfasdf",
        },
        ticket="asdfasfdasdfasdf",
    )


def test_create_auth_sample() -> None:
    event = parse_event(CREATE_AUTH.encode("utf-8"))
    assert isinstance(event, CreateAuthEvent)
    assert (event.suite_id, event.auth_code, event.state, event.extra_info) == (
        "ww4asffe9xxx4c0f4c",
        "AUTHCODE",
        "123",
        None,
    )
    assert (event.kind, event.corp_id, event.timestamp) == ("command", None, 1403610513)


def test_change_auth_sample() -> None:
    event = parse_event(CHANGE_AUTH)
    assert isinstance(event, ChangeAuthEvent)
    assert (event.suite_id, event.corp_id, event.state) == (
        "ww4asffe99exxx0f4c",
        "wxf8b4f85f3a794e77",
        "abc",
    )


def test_cancel_auth_sample() -> None:
    event = parse_event(CANCEL_AUTH)
    assert isinstance(event, CancelAuthEvent)
    assert (event.info_type, event.suite_id, event.corp_id) == (
        "cancel_auth",
        "ww4asffe99e54cxxxx",
        "wxf8b4f85fxx794xxx",
    )


def test_reset_permanent_code_sample_has_no_corp() -> None:
    event = parse_event(RESET_PERMANENT_CODE)
    assert isinstance(event, ResetPermanentCodeEvent)
    assert (event.suite_id, event.auth_code, event.corp_id) == (
        "dk4asffe9xxx4c0f4c",
        "AUTHCODE",
        None,
    )


def test_change_contact_command_sample() -> None:
    event = parse_event(CHANGE_CONTACT_COMMAND)
    assert isinstance(event, ChangeContactEvent)
    assert (event.kind, event.corp_id, event.change_type, event.user_id) == (
        "command",
        "wxf8b4f85f3axxxxxx",
        "create_user",
        "zhangsan",
    )
    assert (event.party_id, event.tag_id) == (None, None)
    assert event.fields["Name"] == "张三" and event.fields["Position"] == "产品经理"


def test_change_contact_data_sample() -> None:
    event = parse_event(CHANGE_CONTACT_DATA)
    assert isinstance(event, ChangeContactEvent)
    assert (event.kind, event.info_type, event.suite_id, event.corp_id, event.timestamp) == (
        "data",
        "change_contact",
        None,
        "toUser",
        1403610513,
    )
    assert (event.change_type, event.user_id) == ("create_user", "zhangsan")


def test_party_and_tag_changes_carry_their_ids() -> None:
    party = parse_event(
        "<xml><SuiteId>dk1</SuiteId><AuthCorpId>ww1</AuthCorpId>"
        "<InfoType>change_contact</InfoType><TimeStamp>1</TimeStamp>"
        "<ChangeType>create_party</ChangeType><Id>2</Id><Name>R&amp;D</Name>"
        "<ParentId>1</ParentId></xml>"
    )
    tag = parse_event(
        "<xml><ToUserName>ww1</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>"
        "<Event>change_contact</Event><ChangeType>update_tag</ChangeType><TagId>7</TagId>"
        "</xml>"
    )
    assert isinstance(party, ChangeContactEvent) and isinstance(tag, ChangeContactEvent)
    assert (party.party_id, party.user_id, party.fields["Name"]) == ("2", None, "R&D")
    assert (tag.tag_id, tag.party_id) == ("7", None)


def test_change_external_contact_sample() -> None:
    event = parse_event(CHANGE_EXTERNAL_CONTACT)
    assert isinstance(event, ChangeExternalContactEvent)
    assert (event.change_type, event.user_id, event.external_user_id) == (
        "add_external_contact",
        "zhangsan",
        "woAJ2GCAAAXtWyujaWJHDDGi0mAAAA",
    )
    assert mask_fields(event)["WelcomeCode"] != "WELCOMECODE"


def test_a_text_message_is_a_typed_data_event() -> None:
    event = parse_event(TEXT_MESSAGE)
    assert type(event) is TextMessageEvent
    assert (event.info_type, event.kind, event.corp_id, event.timestamp) == (
        "text",
        "data",
        "wx5823bf96d3bd56c7",
        1409659813,
    )
    assert event.fields["Content"] == "hello"
    assert event.content == "hello"


def test_unknown_info_type_is_not_an_error() -> None:
    event = parse_event(
        "<xml><SuiteId>dk1</SuiteId><InfoType>  approve_special_auth </InfoType>"
        "<TimeStamp>1403610513</TimeStamp><AuthCorpId>ww1</AuthCorpId></xml>"
    )
    assert type(event) is UnknownEvent
    assert (event.info_type, event.suite_id, event.corp_id) == (
        "approve_special_auth",
        "dk1",
        "ww1",
    )


def test_auth_events_in_the_data_format_are_not_trusted_as_such() -> None:
    event = parse_event(
        "<xml><ToUserName>ww1</ToUserName><MsgType>event</MsgType><Event>create_auth</Event>"
        "<AuthCode>x</AuthCode></xml>"
    )
    assert type(event) is UnknownEvent and event.info_type == "create_auth"


def test_whitespace_around_every_value_is_stripped() -> None:
    event = parse_event(
        "<xml>\n <SuiteId>\n  <![CDATA[dk1]]>\n </SuiteId>\n"
        " <InfoType>\t<![CDATA[suite_ticket]]> </InfoType>\n"
        " <TimeStamp> 1403610513 </TimeStamp>\n"
        " <SuiteTicket> <![CDATA[tkt]]> </SuiteTicket>\n</xml>"
    )
    assert isinstance(event, SuiteTicketEvent)
    assert (event.suite_id, event.ticket, event.timestamp) == ("dk1", "tkt", 1403610513)


# -- malformed events ---------------------------------------------------------------------


def _without(xml: str, tag: str) -> str:
    stripped = re.sub(rf"\s*<{tag}>.*?</{tag}>", "", xml, flags=re.S)
    assert stripped != xml
    return stripped


@pytest.mark.parametrize(
    ("sample", "field"),
    [
        (SUITE_TICKET, "SuiteTicket"),
        (SUITE_TICKET, "SuiteId"),
        (CREATE_AUTH, "AuthCode"),
        (CREATE_AUTH, "SuiteId"),
        (CHANGE_AUTH, "AuthCorpId"),
        (CANCEL_AUTH, "AuthCorpId"),
        (RESET_PERMANENT_CODE, "AuthCode"),
        (CHANGE_CONTACT_COMMAND, "ChangeType"),
        (CHANGE_EXTERNAL_CONTACT, "ChangeType"),
        (CHANGE_CONTACT_DATA, "Event"),
    ],
)
def test_missing_required_field_names_the_field(sample: str, field: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event(_without(sample, field))
    assert field in str(err.value)


def test_empty_required_field_counts_as_missing() -> None:
    with pytest.raises(EventError, match="SuiteTicket"):
        parse_event(SUITE_TICKET.replace("asdfasfdasdfasdf", "   "))


@pytest.mark.parametrize(
    ("name", "field"), [("suite_ticket", "SuiteTicket"), ("create_auth", "AuthCode")]
)
def test_codes_longer_than_wecom_allows_are_refused(name: str, field: str) -> None:
    at_limit = build_event_xml(name, suite_id="dk1", corp_id="ww1", overrides={field: "a" * 512})
    assert parse_event(at_limit).info_type == name
    over = build_event_xml(name, suite_id="dk1", corp_id="ww1", overrides={field: "a" * 513})
    with pytest.raises(EventError, match=f"{field} is longer than 512 bytes"):
        parse_event(over)


def test_error_messages_never_quote_secret_values() -> None:
    xml = _without(CREATE_AUTH, "SuiteId").replace("AUTHCODE", "SECRET-AUTH-CODE-VALUE")
    with pytest.raises(EventError) as err:
        parse_event(xml)
    assert "SECRET" not in str(err.value) and "SuiteId" in str(err.value)
    with pytest.raises(EventError) as err:
        parse_event(SUITE_TICKET.replace("1403610513", "SECRET"))
    assert "SECRET" not in str(err.value) and "TimeStamp" in str(err.value)


@pytest.mark.parametrize(
    "xml",
    [
        "<xml><SuiteId>dk1</SuiteId><TimeStamp>1</TimeStamp></xml>",
        "<xml><InfoType>  </InfoType><Event>change_contact</Event></xml>",
        "<xml/>",
    ],
)
def test_neither_info_type_nor_msg_type_is_an_error(xml: str) -> None:
    with pytest.raises(EventError, match="neither InfoType nor MsgType"):
        parse_event(xml)


def test_malformed_xml_is_an_event_error_and_dtds_are_refused() -> None:
    with pytest.raises(EventError, match="not well-formed"):
        parse_event("<xml><InfoType>suite_ticket</xml>")
    with pytest.raises(UnsafeXMLError):
        parse_event('<!DOCTYPE x [<!ENTITY a "b">]><xml><InfoType>&a;</InfoType></xml>')


# -- building -----------------------------------------------------------------------------

NOW = 1_700_000_123.9


def fixed_token(nbytes: int) -> str:
    """Deterministic stand-in for secrets.token_urlsafe, with the "-" it may produce."""
    return ("Ab-9_" * nbytes)[: (nbytes * 4 + 2) // 3]


def build(name: str, **kwargs: object) -> str:
    kwargs.setdefault("suite_id", "dk0123456789abcd")
    kwargs.setdefault("corp_id", "wwcorp0000000001")
    return build_event_xml(name, now=lambda: NOW, token=fixed_token, **kwargs)  # type: ignore[arg-type]


def _tags(xml: str) -> list[str]:
    return [child.tag for child in ET.fromstring(xml)]


DOCUMENTED_ORDER = {
    "suite_ticket": ["SuiteId", "InfoType", "TimeStamp", "SuiteTicket"],
    "create_auth": ["SuiteId", "AuthCode", "InfoType", "TimeStamp", "State", "ExtraInfo"],
    "change_auth": ["SuiteId", "InfoType", "TimeStamp", "AuthCorpId", "State"],
    "cancel_auth": ["SuiteId", "InfoType", "TimeStamp", "AuthCorpId"],
    "reset_permanent_code": ["SuiteId", "AuthCode", "InfoType", "TimeStamp"],
    "change_contact": [
        "SuiteId",
        "AuthCorpId",
        "InfoType",
        "TimeStamp",
        "ChangeType",
        "UserID",
        "Name",
        "Department",
    ],
}

EXPECTED_TYPE: dict[str, type[Event]] = {
    "suite_ticket": SuiteTicketEvent,
    "create_auth": CreateAuthEvent,
    "change_auth": ChangeAuthEvent,
    "cancel_auth": CancelAuthEvent,
    "reset_permanent_code": ResetPermanentCodeEvent,
    "change_contact": ChangeContactEvent,
}


COMMAND_NAMES = tuple(n for n in EVENT_NAMES if n not in DATA_EVENT_NAMES)


def test_event_names_are_the_simulated_events() -> None:
    assert set(COMMAND_NAMES) == set(DOCUMENTED_ORDER)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_build_uses_the_documented_order_and_cdata_style(name: str) -> None:
    xml = build(name)
    assert _tags(xml) == DOCUMENTED_ORDER[name]
    assert f"<TimeStamp>{int(NOW)}</TimeStamp>" in xml
    assert "<SuiteId><![CDATA[dk0123456789abcd]]></SuiteId>" in xml
    assert f"<InfoType><![CDATA[{name}]]></InfoType>" in xml


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_build_then_parse_round_trips_with_overrides(name: str) -> None:
    overrides = {"State": "st<a>&'\"", "ExtraField": "added"}
    event = parse_event(build(name, overrides=overrides))
    assert isinstance(event, EXPECTED_TYPE[name])
    assert (event.info_type, event.kind, event.suite_id, event.timestamp) == (
        name,
        "command",
        "dk0123456789abcd",
        int(NOW),
    )
    assert event.fields["State"] == "st<a>&'\""
    assert event.fields["ExtraField"] == "added"
    assert list(event.fields)[: len(DOCUMENTED_ORDER[name])] == DOCUMENTED_ORDER[name]
    if name in ("change_auth", "cancel_auth", "change_contact"):
        assert event.corp_id == "wwcorp0000000001"


def test_overrides_replace_in_place_and_keep_plain_fields_plain() -> None:
    xml = build("create_auth", overrides={"ExtraInfo": "<a&b>", "TimeStamp": "42", "State": "s1"})
    assert _tags(xml) == DOCUMENTED_ORDER["create_auth"]
    assert "<ExtraInfo>&lt;a&amp;b&gt;</ExtraInfo>" in xml and "<TimeStamp>42</TimeStamp>" in xml
    event = parse_event(xml)
    assert isinstance(event, CreateAuthEvent)
    assert (event.extra_info, event.timestamp, event.state) == ("<a&b>", 42, "s1")


@pytest.mark.parametrize("value", ["]]>", "a]]>b]]>c", "]]]]>", "x]]"])
def test_cdata_terminator_in_an_override_stays_well_formed(value: str) -> None:
    xml = build("suite_ticket", overrides={"SuiteTicket": value, "Note": value})
    event = parse_event(xml)
    assert isinstance(event, SuiteTicketEvent)
    assert event.ticket == value and event.fields["Note"] == value
    assert _tags(xml)[-1] == "Note"


def test_overriding_a_field_empty_builds_an_invalid_event_for_testing() -> None:
    with pytest.raises(EventError, match="AuthCode"):
        parse_event(build("create_auth", overrides={"AuthCode": ""}))


def test_fresh_secrets_are_random_and_realistic() -> None:
    a = parse_event(build_event_xml("suite_ticket", suite_id="dk1"))
    b = parse_event(build_event_xml("suite_ticket", suite_id="dk1"))
    assert isinstance(a, SuiteTicketEvent) and isinstance(b, SuiteTicketEvent)
    assert a.ticket != b.ticket and len(a.ticket) >= 43
    codes = {
        parse_event(build_event_xml(n, suite_id="dk1")).fields["AuthCode"]
        for n in ("create_auth", "reset_permanent_code", "create_auth")
    }
    assert len(codes) == 3 and all(len(c) >= 64 for c in codes)


@pytest.mark.parametrize("corp_id", ["wwcorp0000000001", "wpHylaFgAAZSqam2uawB3_8m6TDvhtdd", "a-b"])
def test_auth_code_names_the_corp_for_a_fake_wecom(corp_id: str) -> None:
    for name in ("create_auth", "reset_permanent_code"):
        event = parse_event(build_event_xml(name, suite_id="dk1", corp_id=corp_id))
        assert isinstance(event, CreateAuthEvent | ResetPermanentCodeEvent)
        assert event.auth_code.startswith(f"AUTHCODE-{corp_id}-")
        assert len(event.auth_code) >= 64
        assert corp_id_from_auth_code(event.auth_code) == corp_id
    # The deterministic token contains "-", which must not confuse the parse.
    code = parse_event(build("create_auth", corp_id=corp_id)).fields["AuthCode"]
    assert corp_id_from_auth_code(code) == corp_id


def test_auth_code_without_corp_names_none() -> None:
    code = parse_event(build("create_auth", corp_id=None)).fields["AuthCode"]
    assert len(code) >= 64 and corp_id_from_auth_code(code) is None
    assert corp_id_from_auth_code("AUTHCODE") is None
    assert corp_id_from_auth_code("AUTHCODE-") is None


@pytest.mark.parametrize("name", ["change_auth", "cancel_auth", "change_contact"])
def test_corp_events_need_a_corp(name: str) -> None:
    with pytest.raises(UsageError, match="corp"):
        build(name, corp_id=None)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("nonsense", {}),
        ("suite_ticket", {"1Bad": "x"}),
        ("suite_ticket", {"a b": "x"}),
        ("suite_ticket", {"<x>": "x"}),
        ("suite_ticket", {"State": "bell\x07"}),
        ("suite_ticket", {"State": "nul\x00"}),
    ],
)
def test_bad_build_requests_are_usage_errors(name: str, overrides: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        build(name, overrides=overrides)


# -- display and dedupe -------------------------------------------------------------------


def test_mask_fields_hides_credentials_unless_asked() -> None:
    event = parse_event(SUITE_TICKET.replace("asdfasfdasdfasdf", "TicketValue0123456789"))
    shown = mask_fields(event)
    assert shown["SuiteTicket"] == "Tic***789"
    assert shown["SuiteId"] == "ww4asffe99e54c0fxxxx"
    assert mask_fields(event, show_secrets=True)["SuiteTicket"] == "TicketValue0123456789"
    assert "TicketValue" not in repr(event)

    created = parse_event(build("create_auth"))
    assert "AUTHCODE-" not in str(mask_fields(created)) + repr(created)

    plain = mask_fields(
        {
            "PermanentCode": "perm-code-value",
            "AccessToken": "access-token-value",
            "AuthCode": "short",
            "UserID": "zhangsan",
            "SomeNewTicket": "new-ticket-value",
        }
    )
    assert plain == {
        "PermanentCode": "per***lue",
        "AccessToken": "acc***lue",
        "AuthCode": "******",
        "UserID": "zhangsan",
        "SomeNewTicket": "new***lue",
    }


def test_every_event_type_declares_its_secret_fields() -> None:
    assert SuiteTicketEvent.secret_fields == {"SuiteTicket"}
    assert CreateAuthEvent.secret_fields == {"AuthCode"}
    assert ResetPermanentCodeEvent.secret_fields == {"AuthCode"}
    for cls in (ChangeAuthEvent, CancelAuthEvent, ChangeContactEvent, UnknownEvent):
        assert cls.secret_fields == frozenset()


def test_events_are_frozen() -> None:
    event = parse_event(CANCEL_AUTH)
    with pytest.raises(AttributeError):
        event.corp_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.fields["AuthCorpId"] = "other"  # type: ignore[index]


@pytest.mark.parametrize(
    ("instance", "plaintext"),
    [("QywxProxyTemp", b"<xml/>"), ("", b""), ("A", "张三".encode())],
)
def test_content_key_is_sha256_of_instance_nul_plaintext(instance: str, plaintext: bytes) -> None:
    expected = hashlib.sha256(instance.encode() + b"\0" + plaintext).hexdigest()
    assert content_key(instance, plaintext) == expected


def test_content_key_separates_instances() -> None:
    key: Callable[[str, bytes], str] = content_key
    assert key("A", b"<xml/>") != key("B", b"<xml/>")
    assert key("A", b"B<xml/>") != key("AB", b"<xml/>")


# -- data callbacks built for simulate-callback ------------------------------------------

DATA_ORDER = {
    "change_external_contact": [
        "ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "ChangeType", "UserID",
        "ExternalUserID", "State", "WelcomeCode",
    ],
    "change_app_admin": ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "AgentID"],
    "batch_job_result": [
        "ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "BatchJob",
    ],
    "enter_agent": [
        "ToUserName", "FromUserName", "CreateTime", "MsgType", "Event", "EventKey", "AgentID",
    ],
    "text": [
        "ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "AgentID",
    ],
}  # fmt: skip

DATA_TYPE: dict[str, type[Event]] = {
    "change_external_contact": ChangeExternalContactEvent,
    "change_app_admin": ChangeAppAdminEvent,
    "batch_job_result": BatchJobResultEvent,
    "enter_agent": EnterAgentEvent,
    "text": TextMessageEvent,
}


def test_data_event_names_are_typed() -> None:
    assert set(DATA_EVENT_NAMES) == set(DATA_ORDER) == set(DATA_TYPE)
    assert set(DATA_EVENT_NAMES) <= set(EVENT_NAMES)


@pytest.mark.parametrize("name", DATA_EVENT_NAMES)
def test_data_events_build_in_the_self_built_format_and_parse_typed(name: str) -> None:
    xml = build(name)
    assert _tags(xml) == DATA_ORDER[name]
    assert "SuiteId" not in xml and "InfoType" not in xml
    event = parse_event(xml)
    assert isinstance(event, DATA_TYPE[name])
    assert (event.info_type, event.kind, event.suite_id, event.corp_id, event.timestamp) == (
        name,
        "data",
        None,
        "wwcorp0000000001",
        int(NOW),
    )


def test_data_events_need_the_corp() -> None:
    with pytest.raises(UsageError, match="needs a corp id"):
        build("enter_agent", corp_id=None)


def test_typed_fields_of_the_built_data_events() -> None:
    admin = parse_event(build("change_app_admin", overrides={"AgentID": "1000002"}))
    assert isinstance(admin, ChangeAppAdminEvent) and admin.agent_id == 1000002
    job = parse_event(build("batch_job_result"))
    assert isinstance(job, BatchJobResultEvent)
    assert (job.job_type, job.errcode, job.succeeded) == ("sync_user", 0, True)
    text = parse_event(build("text", overrides={"Content": "  hi <there> "}))
    assert isinstance(text, TextMessageEvent)
    assert (text.content, text.user_id, text.agent_id) == ("  hi <there> ", "zhangsan", 1)
    assert text.msg_id is not None and text.msg_id.isdigit() and len(text.msg_id) <= 19
    contact = parse_event(build("change_external_contact"))
    assert isinstance(contact, ChangeExternalContactEvent)
    assert contact.change_type == "add_external_contact"
    assert "WelcomeCode" in contact.secret_fields
    assert contact.fields["WelcomeCode"] not in repr(contact)
    enter = parse_event(build("enter_agent"))
    assert isinstance(enter, EnterAgentEvent) and enter.user_id == "zhangsan"


def test_repeated_builds_are_distinct_deliveries() -> None:
    """A fresh WelcomeCode / JobId / MsgId per build: two sends are not one redelivery."""
    import secrets

    for name in ("change_external_contact", "batch_job_result", "text"):
        first, second = (
            build_event_xml(name, suite_id="dk1", corp_id="wwc", now=lambda: NOW,
                            token=secrets.token_urlsafe)
            for _ in range(2)
        )  # fmt: skip
        assert first != second, name


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from(list("a&<>;\"'] 中\t")), max_size=30))
def test_a_plain_field_override_is_escaped_as_the_standard_library_does(value: str) -> None:
    # TimeStamp is written as plain text, not CDATA: its value must be escaped, and read
    # back unchanged by an XML parser.
    doc = build_event_xml("suite_ticket", suite_id="dk1", overrides={"TimeStamp": value})
    assert f"<TimeStamp>{xml.sax.saxutils.escape(value)}</TimeStamp>" in doc
    assert (ET.fromstring(doc).findtext("TimeStamp") or "") == value


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [("9223372036854775807", True), ("9223372036854775808", False), ("9" * 19, False)],
)
def test_an_integer_field_is_at_most_what_a_64_bit_column_holds(stamp: str, ok: bool) -> None:
    """SQLite's INTEGER and PostgreSQL's bigint hold up to 2**63-1; a signed callback
    with more is malformed (an EventError: recorded as rejected, a 4xx), not a value
    that fails the database write (a 503 WeCom would retry for ever)."""
    xml = (
        "<xml><SuiteId>dk1</SuiteId><InfoType>suite_ticket</InfoType>"
        f"<TimeStamp>{stamp}</TimeStamp><SuiteTicket>t</SuiteTicket></xml>"
    )
    if ok:
        assert parse_event(xml).timestamp == int(stamp)
    else:
        with pytest.raises(EventError, match="TimeStamp is not an integer from 0 to 2"):
            parse_event(xml)
