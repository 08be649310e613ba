"""The system event URL (/notify/provider) and typed data callbacks through CallbackService.

Requests are encrypted and signed by wechatpy's ``WeChatCrypto`` (an implementation
independent of qywx's), with the provider's own token and key; the same events signed
with a template's key must be refused on that route.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.config import AuthInstance, load_instances
from qywx_cli.core.errors import ConfigError
from qywx_cli.core.service import PROVIDER_ROUTE, CallbackService, NotifyResponse
from qywx_cli.core.settings import Settings
from qywx_cli.core.store import Store

PROVIDER = "wwprov1d3r0c0rp1d0"
PROVIDER_TOKEN = "ProviderToken42"
PROVIDER_KEY = "Pr0v1derEnc0d1ngAESKeyF0rSystemEventsXYZ012"
CORP = "wwa1b2c3d4e5f60a01"


def _settings(auths: Path, db: Path) -> Settings:
    return Settings(
        auths_dir=auths,
        db_path=db,
        api_base="http://fake.test/cgi-bin",
        provider_corp_id=PROVIDER,
        provider_token=PROVIDER_TOKEN,
        provider_encoding_aes_key=PROVIDER_KEY,
    )


def wechatpy_request(
    token: str, key: str, receive_id: str, xml: str, nonce: str, ts: int | None = None
) -> dict[str, str]:
    """What WeCom POSTs, built with wechatpy: query triple plus the envelope body."""
    from wechatpy.enterprise.crypto import WeChatCrypto

    stamp = str(int(time.time()) if ts is None else ts)
    reply = WeChatCrypto(token, key, receive_id).encrypt_message(xml, nonce, stamp)
    encrypt = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", reply)
    signature = re.search(r"<MsgSignature><!\[CDATA\[(.*?)\]\]></MsgSignature>", reply)
    assert encrypt and signature
    body = (
        f"<xml><ToUserName><![CDATA[{receive_id}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt.group(1)}]]></Encrypt><AgentID><![CDATA[]]></AgentID></xml>"
    )
    return {"msg_signature": signature.group(1), "timestamp": stamp, "nonce": nonce, "body": body}


class World:
    def __init__(self, auths: Path, db: Path) -> None:
        self.store = Store(db)
        self.instances = {i.name: i for i in load_instances(auths)}
        self.inst: AuthInstance = self.instances["QywxProxyCompanyA"]
        self.service = CallbackService(
            _settings(auths, db),
            store=self.store,
            instances=self.instances.values(),
            background=False,
        )
        self.nonce = 5000

    def system(
        self, xml: str, *, token: str = PROVIDER_TOKEN, key: str = PROVIDER_KEY, rid: str = PROVIDER
    ) -> NotifyResponse:
        self.nonce += 1
        request = wechatpy_request(token, key, rid, xml, str(self.nonce))
        return self.service.notify(**request, instance=PROVIDER_ROUTE)

    def data(self, xml: str, corp: str = CORP) -> NotifyResponse:
        """A data callback to the instance's route, receiveid the authorized corp."""
        self.nonce += 1
        request = wechatpy_request(
            self.inst.token, self.inst.encoding_aes_key, corp, xml, str(self.nonce)
        )
        return self.service.notify(**request, instance=self.inst.name)


@pytest.fixture
def world(auths: Path, tmp_path: Path) -> Iterator[World]:
    w = World(auths, tmp_path / "qywx.db")
    yield w
    w.service.close()


def pay_success(order: str = "OI0001") -> str:
    return ev.build_provider_event_xml(
        "license_pay_success",
        provider_corp_id=PROVIDER,
        corp_id=CORP,
        overrides={"OrderId": order},
    )


def test_provider_signed_license_pay_success_is_accepted_and_processed(world: World) -> None:
    response = world.system(pay_success())
    assert (response.status, response.text) == (200, "success")
    rec = world.store.get_callback(response.record_id or 0)
    assert (rec.instance, rec.kind, rec.info_type, rec.corp_id, rec.status) == (
        PROVIDER_ROUTE,
        "command",
        "license_pay_success",
        CORP,
        "processed",
    )


@pytest.mark.parametrize("name", ev.PROVIDER_EVENT_NAMES)
def test_every_licence_event_is_recorded_typed(world: World, name: str) -> None:
    xml = ev.build_provider_event_xml(name, provider_corp_id=PROVIDER, corp_id=CORP)
    response = world.system(xml)
    assert response.text == "success"
    rec = world.store.get_callback(response.record_id or 0)
    assert rec.info_type == name and rec.status == "processed"


def test_template_signed_callback_is_refused_on_the_provider_route(world: World) -> None:
    inst = world.inst
    response = world.system(pay_success(), token=inst.token, key=inst.encoding_aes_key)
    assert response.status == 403 and "-40001" in response.text
    assert world.store.list_callbacks() == []


def test_provider_key_with_the_wrong_receiveid_is_refused(world: World) -> None:
    response = world.system(pay_success(), rid=world.inst.suite_id)
    assert response.status == 403 and "-40005" in response.text
    (rec,) = world.store.list_callbacks()
    assert rec.status == "rejected" and rec.instance == PROVIDER_ROUTE


def test_provider_signed_callback_is_refused_on_an_instance_route(world: World) -> None:
    request = wechatpy_request(PROVIDER_TOKEN, PROVIDER_KEY, PROVIDER, pay_success(), "77")
    response = world.service.notify(**request, instance=world.inst.name)
    assert response.status == 403 and "-40001" in response.text


def test_redelivery_is_acknowledged_once_and_not_processed_twice(world: World) -> None:
    xml = pay_success("OI-redelivered")
    first, again = world.system(xml), world.system(xml)
    assert first.text == again.text == "success"
    assert again.outcome == "duplicate: redelivery"
    records = world.store.list_callbacks(newest_first=False)
    assert [r.status for r in records] == ["processed", "duplicate"]
    assert records[1].duplicate_of == records[0].id


def test_system_event_retry_reruns_from_the_stored_envelope(world: World) -> None:
    response = world.system(pay_success())
    outcome = world.service.retry(response.record_id or 0, force=True)
    assert outcome.ran and outcome.record.status == "processed"
    assert outcome.record.attempts == 2


def test_provider_handshake(world: World) -> None:
    from wechatpy.enterprise.crypto import WeChatCrypto

    crypto = WeChatCrypto(PROVIDER_TOKEN, PROVIDER_KEY, PROVIDER)
    echostr = crypto.encrypt_message("1616140317555161061", "9", "1700000000")
    encrypt = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", echostr)
    signature = re.search(r"<MsgSignature><!\[CDATA\[(.*?)\]\]></MsgSignature>", echostr)
    assert encrypt and signature
    response = world.service.notify(
        msg_signature=signature.group(1),
        timestamp="1700000000",
        nonce="9",
        echostr=encrypt.group(1),
        instance=PROVIDER_ROUTE,
    )
    assert (response.status, response.text) == (200, "1616140317555161061")


def test_unconfigured_provider_route_says_what_to_set(auths: Path, tmp_path: Path) -> None:
    settings = Settings(auths_dir=auths, db_path=tmp_path / "q.db", api_base="http://x.test")
    with CallbackService(settings, background=False) as service:
        request = wechatpy_request(PROVIDER_TOKEN, PROVIDER_KEY, PROVIDER, pay_success(), "1")
        response = service.notify(**request, instance=PROVIDER_ROUTE)
    assert response.status == 404 and "provider_token" in response.text


def test_an_instance_named_provider_clashes_with_the_route(auths: Path, tmp_path: Path) -> None:
    inst = next(iter(load_instances(auths)))
    renamed = dataclasses.replace(inst, name=PROVIDER_ROUTE)
    with pytest.raises(ConfigError, match="shadow"):
        CallbackService(_settings(auths, tmp_path / "q.db"), instances=[renamed], background=False)


# -- typed data callbacks on the app's own URL ---------------------------------------------


@pytest.mark.parametrize(
    ("xml", "info_type"),
    [
        (
            f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[zhangsan]]>"
            "</FromUserName><CreateTime>1408091189</CreateTime><MsgType><![CDATA[event]]>"
            "</MsgType><Event><![CDATA[enter_agent]]></Event><EventKey><![CDATA[]]></EventKey>"
            "<AgentID>1000002</AgentID></xml>",
            "enter_agent",
        ),
        (
            f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[lisi]]>"
            "</FromUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[text]]>"
            "</MsgType><Content><![CDATA[hi]]></Content><MsgId>1234567890123456</MsgId>"
            "<AgentID>1000002</AgentID></xml>",
            "text",
        ),
        (
            f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]>"
            "</FromUserName><CreateTime>1425284517</CreateTime><MsgType><![CDATA[event]]>"
            "</MsgType><Event><![CDATA[batch_job_result]]></Event><BatchJob><JobId>j1</JobId>"
            "<JobType>sync_user</JobType><ErrCode>0</ErrCode><ErrMsg>ok</ErrMsg></BatchJob></xml>",
            "batch_job_result",
        ),
    ],
)
def test_typed_data_callbacks_are_recorded_as_data(world: World, xml: str, info_type: str) -> None:
    world.store.upsert_corp_auth(world.inst.suite_id, CORP, state="active")
    response = world.data(xml)
    assert response.text == "success", response.text
    rec = world.store.get_callback(response.record_id or 0)
    assert (rec.kind, rec.info_type, rec.corp_id, rec.status) == (
        "data",
        info_type,
        CORP,
        "processed",
    )


# -- either form of a corp id (the ID upgrade) ----------------------------------------------

OPEN_CORP = "wpOpEnC0rpIdOfCompanyA01"


def _enter_agent(corp: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[zhangsan]]>"
        "</FromUserName><CreateTime>1408091189</CreateTime><MsgType><![CDATA[event]]>"
        "</MsgType><Event><![CDATA[enter_agent]]></Event><AgentID>1000002</AgentID></xml>"
    )


def test_a_data_callback_under_the_open_corp_id_is_routed_to_the_known_corp(
    world: World,
) -> None:
    world.store.upsert_corp_auth(world.inst.suite_id, CORP, state="active")
    refused = world.data(_enter_agent(OPEN_CORP), corp=OPEN_CORP)
    assert refused.status == 403 and "-40005" in refused.text  # no mapping yet

    world.store.save_id_mappings("corpid", CORP, [(CORP, OPEN_CORP)])
    response = world.data(_enter_agent(OPEN_CORP), corp=OPEN_CORP)
    assert response.text == "success", response.text
    rec = world.store.get_callback(response.record_id or 0)
    assert (rec.kind, rec.corp_id) == ("data", CORP)
    assert [r.id for r in world.store.list_callbacks(corp_id=CORP, kind="data")] == [rec.id]


def test_cancel_auth_under_the_open_corp_id_cancels_the_known_corp(world: World) -> None:
    world.store.upsert_corp_auth(world.inst.suite_id, CORP, permanent_code="p", state="active")
    world.store.save_id_mappings("corpid", CORP, [(CORP, OPEN_CORP)])
    xml = ev.build_event_xml("cancel_auth", suite_id=world.inst.suite_id, corp_id=OPEN_CORP)
    world.nonce += 1
    request = wechatpy_request(
        world.inst.token, world.inst.encoding_aes_key, world.inst.suite_id, xml, str(world.nonce)
    )
    response = world.service.notify(**request, instance=world.inst.name)
    assert response.text == "success"
    rec = world.store.get_callback(response.record_id or 0)
    assert (rec.corp_id, rec.status) == (CORP, "processed")
    auth = world.store.get_corp_auth(CORP, world.inst.suite_id)
    assert auth is not None and auth.state == "cancelled"


def test_unlicensed_notify_lists_the_member(world: World) -> None:
    world.store.upsert_corp_auth(world.inst.suite_id, CORP, state="active")
    xml = (
        f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[lisi]]>"
        "</FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]>"
        "</MsgType><Event><![CDATA[unlicensed_notify]]></Event><AgentID>1000002</AgentID></xml>"
    )
    response = world.data(xml)
    assert response.text == "success"
    assert world.store.get_callback(response.record_id or 0).status == "processed"
    (member,) = world.store.unlicensed_members()
    assert (member.corp_id, member.user_id, member.agent_id, member.last_seen) == (
        CORP,
        "lisi",
        1000002,
        1700000000,
    )


def test_auto_activate_records_the_accounts_and_clears_unlicensed(world: World) -> None:
    world.store.record_unlicensed(CORP, "zhangsan", agent_id=None, seen_at=1_700_000_000)
    expire = int(time.time()) + 20 * 86400
    xml = (
        f"<xml><ServiceCorpId><![CDATA[{PROVIDER}]]></ServiceCorpId>"
        "<InfoType><![CDATA[auto_activate]]></InfoType>"
        f"<AuthCorpId><![CDATA[{CORP}]]></AuthCorpId><Scene>1</Scene>"
        f"<TimeStamp>{int(time.time())}</TimeStamp>"
        "<AccountList><ActiveCode><![CDATA[CODE1]]></ActiveCode><Type>1</Type>"
        f"<ExpireTime>{expire}</ExpireTime><UserId><![CDATA[zhangsan]]></UserId>"
        "<PreviousStatus>1</PreviousStatus></AccountList></xml>"
    )
    response = world.system(xml)
    assert response.text == "success"
    assert world.store.get_callback(response.record_id or 0).status == "processed"
    (licence,) = world.store.list_licences(corp_id=CORP)
    assert (licence.user_id, licence.type, licence.expire_time) == ("zhangsan", 1, expire)
    assert world.store.unlicensed_members() == []


def test_licence_report_lists_unlicensed_and_expiring(world: World) -> None:
    from qywx_cli.core.licensing import licence_report
    from qywx_cli.core.store import Licence

    now = 1_700_000_000.0
    world.store.record_unlicensed(CORP, "lisi", agent_id=1, seen_at=now - 60)
    world.store.save_licences(
        CORP,
        [
            Licence(CORP, "soon", 1, "C1", None, int(now + 5 * 86400), 0.0),
            Licence(CORP, "later", 1, "C2", None, int(now + 60 * 86400), 0.0),
        ],
    )
    report = licence_report(world.store, now=now)
    assert [m.user_id for m in report.unlicensed] == ["lisi"]
    assert [x.user_id for x in report.expiring] == ["soon"]
    doc = report.as_dict()
    assert doc["expiring_licences"][0]["days_left"] == 5.0 and not report.ok
