"""events: the app's data callbacks and the provider's system events, from WeCom's samples.

Samples are the documentation's own (doc numbers beside each; wecom-provider-apis.md §7-8),
copied with their whitespace, CDATA and placeholder values.
"""

from __future__ import annotations

import pytest

from qywx_cli.core.errors import EventError, UsageError
from qywx_cli.core.events import (
    PROVIDER_EVENT_NAMES,
    AutoActivatedAccount,
    AutoActivateEvent,
    BatchJobResultEvent,
    ChangeContactEvent,
    EnterAgentEvent,
    LicensePaySuccessEvent,
    LicenseRefundEvent,
    TextMessageEvent,
    UnknownEvent,
    UnlicensedNotifyEvent,
    build_provider_event_xml,
    parse_event,
)

# 进入应用 (self-built/代开发 receive-event page, 8.x "enter_agent")
ENTER_AGENT = """<xml><ToUserName><![CDATA[toUser]]></ToUserName>
<FromUserName><![CDATA[FromUser]]></FromUserName>
<CreateTime>1408091189</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[enter_agent]]></Event>
<EventKey><![CDATA[]]></EventKey>
<AgentID>1</AgentID>
</xml>"""

# 文本消息 (receive-message page)
TEXT = """<xml>
   <ToUserName><![CDATA[toUser]]></ToUserName>
   <FromUserName><![CDATA[fromUser]]></FromUserName>
   <CreateTime>1348831860</CreateTime>
   <MsgType><![CDATA[text]]></MsgType>
   <Content><![CDATA[ this is a test ]]></Content>
   <MsgId>1234567890123456</MsgId>
   <AgentID>1</AgentID>
</xml>"""

# 异步任务完成通知 (contact async-job page)
BATCH_JOB_RESULT = """<xml><ToUserName><![CDATA[wx28dbb14e37208abe]]></ToUserName>
<FromUserName><![CDATA[FromUser]]></FromUserName>
<CreateTime>1425284517</CreateTime>
<MsgType><![CDATA[event]]></MsgType>
<Event><![CDATA[batch_job_result]]></Event>
<BatchJob><JobId><![CDATA[S0MrnndvRG5fadSlLwiBqiDDbM143UqTmKP3152FZk4]]></JobId>
<JobType><![CDATA[sync_user]]></JobType>
<ErrCode>0</ErrCode>
<ErrMsg><![CDATA[ok]]></ErrMsg>
</BatchJob>
</xml>"""

# 接口许可失效通知 (doc 95716 / 97195)
UNLICENSED_NOTIFY = (
    "<xml><ToUserName><![CDATA[toUser]]></ToUserName><FromUserName><![CDATA[FromUser]]>"
    "</FromUserName><CreateTime>1408091189</CreateTime><MsgType><![CDATA[event]]></MsgType>"
    "<Event><![CDATA[unlicensed_notify]]></Event><AgentID>1</AgentID></xml>"
)

# 成员变更 / 部门 / 标签 in the data format (doc 96302 and its siblings)
UPDATE_USER = """<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_contact]]></Event>
	<ChangeType>update_user</ChangeType>
	<UserID><![CDATA[zhangsan]]></UserID>
	<NewUserID><![CDATA[zhangsan001]]></NewUserID>
	<Department><![CDATA[1,2,3]]></Department>
</xml>"""

DELETE_PARTY = """<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_contact]]></Event>
	<ChangeType><![CDATA[delete_party]]></ChangeType>
	<Id>2</Id>
</xml>"""

UPDATE_TAG = """<xml>
	<ToUserName><![CDATA[toUser]]></ToUserName>
	<FromUserName><![CDATA[sys]]></FromUserName>
	<CreateTime>1403610513</CreateTime>
	<MsgType><![CDATA[event]]></MsgType>
	<Event><![CDATA[change_contact]]></Event>
	<ChangeType><![CDATA[update_tag]]></ChangeType>
	<TagId>1</TagId>
	<AddUserItems><![CDATA[zhangsan,lisi]]></AddUserItems>
	<DelUserItems><![CDATA[zhangsan1,lisi1]]></DelUserItems>
	<AddPartyItems><![CDATA[1,2]]></AddPartyItems>
	<DelPartyItems><![CDATA[3,4]]></DelPartyItems>
</xml>"""

# System events (服务商代开发 docs 97196, 97197, 97198)
LICENSE_PAY_SUCCESS = (
    "<xml><ServiceCorpId><![CDATA[xxxx]]></ServiceCorpId>"
    "<InfoType><![CDATA[license_pay_success]]></InfoType>"
    "<AuthCorpId><![CDATA[yyyy]]></AuthCorpId>"
    "<OrderId><![CDATA[zzzz]]></OrderId><BuyerUserId><![CDATA[USERID]]></BuyerUserId>"
    "<TimeStamp>1403610513</TimeStamp></xml>"
)

LICENSE_REFUND = (
    "<xml><ServiceCorpId><![CDATA[xxxx]]></ServiceCorpId>"
    "<InfoType><![CDATA[license_refund]]></InfoType>"
    "<AuthCorpId><![CDATA[yyyy]]></AuthCorpId>"
    "<OrderId><![CDATA[zzzz]]></OrderId>"
    "<OrderStatus>2</OrderStatus>"
    "<TimeStamp>1403610513</TimeStamp></xml>"
)

AUTO_ACTIVATE = (
    "<xml><ServiceCorpId><![CDATA[aaaa]]></ServiceCorpId>"
    "<InfoType><![CDATA[auto_activate]]></InfoType>"
    "<AuthCorpId><![CDATA[bbbb]]></AuthCorpId><Scene>1</Scene>"
    "<TimeStamp>1403610513</TimeStamp>"
    "<AccountList><ActiveCode><![CDATA[XXXX]]></ActiveCode><Type>1</Type>"
    "<ExpireTime>1700000000</ExpireTime><UserId><![CDATA[USERID]]></UserId>"
    "<PreviousStatus>1</PreviousStatus></AccountList></xml>"
)


def test_enter_agent() -> None:
    event = parse_event(ENTER_AGENT)
    assert type(event) is EnterAgentEvent
    assert (event.kind, event.info_type, event.corp_id, event.timestamp) == (
        "data",
        "enter_agent",
        "toUser",
        1408091189,
    )
    assert (event.user_id, event.agent_id, event.event_key) == ("FromUser", 1, None)


def test_text_message_keeps_the_text_as_sent() -> None:
    event = parse_event(TEXT)
    assert type(event) is TextMessageEvent
    assert event.info_type == "text" and event.kind == "data"
    assert event.content == " this is a test "
    assert (event.user_id, event.msg_id, event.agent_id) == ("fromUser", "1234567890123456", 1)


def test_text_message_without_content_is_refused() -> None:
    with pytest.raises(EventError, match="Content"):
        parse_event(TEXT.replace("<Content><![CDATA[ this is a test ]]></Content>", ""))


def test_batch_job_result_nested_as_documented() -> None:
    event = parse_event(BATCH_JOB_RESULT)
    assert type(event) is BatchJobResultEvent
    assert event.job_id == "S0MrnndvRG5fadSlLwiBqiDDbM143UqTmKP3152FZk4"
    assert (event.job_type, event.errcode, event.errmsg, event.succeeded) == (
        "sync_user",
        0,
        "ok",
        True,
    )
    assert event.corp_id == "wx28dbb14e37208abe"


def test_batch_job_result_flat_layout_and_failure() -> None:
    flat = (
        "<xml><ToUserName>ww1</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>"
        "<Event>batch_job_result</Event><JobId>j1</JobId><JobType>replace_party</JobType>"
        "<ErrCode>60123</ErrCode><ErrMsg>invalid party</ErrMsg></xml>"
    )
    event = parse_event(flat)
    assert isinstance(event, BatchJobResultEvent)
    assert (event.job_id, event.job_type, event.errcode, event.succeeded) == (
        "j1",
        "replace_party",
        60123,
        False,
    )


@pytest.mark.parametrize("drop", ["JobId", "JobType", "ErrCode"])
def test_batch_job_result_missing_a_field(drop: str) -> None:
    xml = BATCH_JOB_RESULT
    start = xml.index(f"<{drop}>")
    end = xml.index(f"</{drop}>") + len(drop) + 3
    with pytest.raises(EventError, match=drop):
        parse_event(xml[:start] + xml[end:])


def test_unlicensed_notify() -> None:
    event = parse_event(UNLICENSED_NOTIFY)
    assert type(event) is UnlicensedNotifyEvent
    assert (event.kind, event.corp_id, event.user_id, event.agent_id) == (
        "data",
        "toUser",
        "FromUser",
        1,
    )


def test_change_contact_data_format_changes() -> None:
    user = parse_event(UPDATE_USER)
    assert isinstance(user, ChangeContactEvent) and user.kind == "data"
    assert (user.change_type, user.user_id, user.new_user_id) == (
        "update_user",
        "zhangsan",
        "zhangsan001",
    )
    party = parse_event(DELETE_PARTY)
    assert isinstance(party, ChangeContactEvent)
    assert (party.change_type, party.party_id, party.user_id) == ("delete_party", "2", None)
    tag = parse_event(UPDATE_TAG)
    assert isinstance(tag, ChangeContactEvent)
    assert (tag.change_type, tag.tag_id) == ("update_tag", "1")
    assert tag.fields["AddUserItems"] == "zhangsan,lisi"


def test_license_pay_success() -> None:
    event = parse_event(LICENSE_PAY_SUCCESS)
    assert event == LicensePaySuccessEvent(
        info_type="license_pay_success",
        kind="command",
        suite_id=None,
        corp_id="yyyy",
        timestamp=1403610513,
        fields=event.fields,
        service_corp_id="xxxx",
        order_id="zzzz",
        buyer_user_id="USERID",
    )


def test_license_refund_refused() -> None:
    event = parse_event(LICENSE_REFUND)
    assert isinstance(event, LicenseRefundEvent)
    assert (event.order_id, event.order_status, event.refunded) == ("zzzz", 2, False)


def test_auto_activate_one_and_several_accounts() -> None:
    event = parse_event(AUTO_ACTIVATE)
    assert isinstance(event, AutoActivateEvent)
    assert (event.service_corp_id, event.corp_id, event.scene) == ("aaaa", "bbbb", 1)
    assert event.accounts == (
        AutoActivatedAccount(
            active_code="XXXX",
            type=1,
            user_id="USERID",
            expire_time=1700000000,
            previous_status=1,
            previous_active_code=None,
        ),
    )
    second = (
        "<AccountList><ActiveCode>YYYY</ActiveCode><Type>2</Type><ExpireTime>1800000000"
        "</ExpireTime><UserId>lisi</UserId><PreviousStatus>3</PreviousStatus>"
        "<PreviousActiveCode>OLD</PreviousActiveCode></AccountList>"
    )
    two = parse_event(AUTO_ACTIVATE.replace("</xml>", second + "</xml>"))
    assert isinstance(two, AutoActivateEvent)
    assert [a.user_id for a in two.accounts] == ["USERID", "lisi"]
    assert two.accounts[1].previous_active_code == "OLD"


@pytest.mark.parametrize(
    ("sample", "drop"),
    [
        (LICENSE_PAY_SUCCESS, "OrderId"),
        (LICENSE_PAY_SUCCESS, "ServiceCorpId"),
        (LICENSE_REFUND, "AuthCorpId"),
        (AUTO_ACTIVATE, "ActiveCode"),
        (AUTO_ACTIVATE, "UserId"),
    ],
)
def test_system_event_missing_a_field(sample: str, drop: str) -> None:
    start = sample.index(f"<{drop}>")
    end = sample.index(f"</{drop}>") + len(drop) + 3
    with pytest.raises(EventError, match=drop):
        parse_event(sample[:start] + sample[end:])


def test_a_non_integer_order_status_is_refused() -> None:
    with pytest.raises(EventError, match="OrderStatus"):
        parse_event(LICENSE_REFUND.replace("<OrderStatus>2", "<OrderStatus>two"))


def test_other_messages_stay_unknown_data_events() -> None:
    image = TEXT.replace("[text]", "[image]").replace(
        "<Content><![CDATA[ this is a test ]]></Content>", "<PicUrl>http://x/y</PicUrl>"
    )
    event = parse_event(image)
    assert type(event) is UnknownEvent and event.kind == "data" and event.info_type == "image"


@pytest.mark.parametrize("name", PROVIDER_EVENT_NAMES)
def test_built_system_events_parse_back(name: str) -> None:
    xml = build_provider_event_xml(
        name, provider_corp_id="wwprovider", corp_id="wwcorp", now=lambda: 1_700_000_000
    )
    event = parse_event(xml)
    assert event.info_type == name and event.kind == "command"
    assert event.corp_id == "wwcorp" and event.timestamp == 1_700_000_000
    assert event.fields["ServiceCorpId"] == "wwprovider"


def test_built_system_events_are_distinct_deliveries_and_take_overrides() -> None:
    one = build_provider_event_xml("license_pay_success", provider_corp_id="p", corp_id="c")
    two = build_provider_event_xml("license_pay_success", provider_corp_id="p", corp_id="c")
    assert one != two  # a fresh OrderId each time
    fixed = build_provider_event_xml(
        "license_pay_success",
        provider_corp_id="p",
        corp_id="c",
        overrides={"OrderId": "O<1>", "Extra": "x"},
    )
    event = parse_event(fixed)
    assert isinstance(event, LicensePaySuccessEvent)
    assert event.order_id == "O<1>" and event.fields["Extra"] == "x"


def test_unknown_system_event_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="license_pay_success"):
        build_provider_event_xml("nope", provider_corp_id="p", corp_id="c")
