"""The element API facade: App.getElement and the instance / service elements' methods."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.app import SERVICE_ELEMENT, App, QywxProxyAuthService, QywxProxyInstance
from qywx_cli.core.config import AuthInstance
from qywx_cli.core.errors import (
    ConfigError,
    ConflictError,
    LoginError,
    RecordNotFound,
)
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.service import NotifyResponse

CORP = "ww1234567890abcdef"
SUITE = "tj1234567890abcdef"
SECRETS = (
    "sample-8FGGBZPkm3buLjylPWWqkOw76adCdiDhzxAUNv4Z",
    "4CUdYrBwSjnWyz4yYNsz3PukTqABgnMBwKuGToYu25b",
    "Ob05nvp8DucDexAf5iTh6IZK",
)
API = "http://fake.test/cgi-bin"


def signed_post(inst: AuthInstance, xml: str) -> dict[str, Any]:
    """notify() keyword arguments for a POST callback WeCom would send."""
    env = inst.crypto().encrypt_msg(xml, inst.suite_id, str(int(time.time())), "4242")
    return {
        "nonce": env.nonce,
        "msg_signature": env.msg_signature,
        "timestamp": env.timestamp,
        "body": env.request_xml(inst.suite_id),
    }


@pytest.fixture
def fake() -> FakeWeCom:
    return FakeWeCom()


@pytest.fixture
def app(auths: Path, fake: FakeWeCom) -> Iterator[App]:
    a = App(auths, api_base=API, transport=httpx.WSGITransport(app=fake), background=False)
    yield a
    a.close()


def authorize(app: App, corp: str = CORP) -> QywxProxyInstance:
    temp: QywxProxyInstance = app.getElement("auths.QywxProxyTemp")
    service = app.getElement(SERVICE_ELEMENT)
    inst = temp.instance
    assert (
        service.notify(**signed_post(inst, ev.build_event_xml("suite_ticket", suite_id=SUITE))).text
        == "success"
    )
    xml = ev.build_event_xml("create_auth", suite_id=SUITE, corp_id=corp)
    assert service.notify(**signed_post(inst, xml)).text == "success"
    return temp


# -- locating the project and its elements ---------------------------------------------------


def test_app_accepts_a_project_root_or_the_auths_folder(auths: Path) -> None:
    from_root = App(auths.parent)
    from_auths = App(auths)
    assert from_root.settings.auths_dir == from_auths.settings.auths_dir == auths
    assert from_root.settings.db_path == auths.parent / "qywx.db"
    with pytest.raises(ConfigError, match="no project or auths folder"):
        App(auths / "missing")


def test_db_and_api_base_overrides_and_project_toml(auths: Path, tmp_path: Path) -> None:
    (tmp_path / "qywx.toml").write_text('db = "data/project.db"\n', encoding="utf-8")
    assert App(tmp_path).settings.db_path == tmp_path / "data" / "project.db"
    other = App(tmp_path, db=tmp_path / "other.db", api_base="http://127.0.0.1:9/cgi-bin/")
    assert other.settings.db_path == tmp_path / "other.db"
    assert other.settings.api_base == "http://127.0.0.1:9/cgi-bin"
    env = {"QYWX_API_BASE": "http://127.0.0.1:8/cgi-bin"}
    assert App(tmp_path, env=env).settings.api_base == "http://127.0.0.1:8/cgi-bin"


def test_a_project_toml_may_keep_auths_elsewhere(auths: Path, tmp_path: Path) -> None:
    """App(project) reads the project's qywx.toml as the CLI run there does."""
    project = tmp_path / "project"
    (project / "cfg").mkdir(parents=True)
    auths.rename(project / "cfg" / "auths")
    (project / "qywx.toml").write_text('auths = "cfg/auths"\ndb = "data.db"\n', "utf-8")
    app = App(project, env={"QYWX_AUTHS": str(tmp_path / "elsewhere")})
    assert app.settings.auths_dir == project / "cfg" / "auths"
    assert app.settings.db_path == project / "data.db"
    assert app.getElement("auths.QywxProxyTemp").getLoginConfig()["suiteId"] == SUITE


def test_instance_element_properties_and_masked_auth_config(app: App) -> None:
    inst = app.getElement("auths.QywxProxyTemp")
    assert isinstance(inst, QywxProxyInstance)
    assert app.getElement("auths.QywxProxyTemp") is inst
    assert inst.authType == "auths.loginTypes.QywxProxyType"
    assert inst.authModelElemName == "auths.loginTypes.QywxProxyType.QywxProxyAuthModel"
    cfg = inst.authConfig
    assert set(cfg) == {"suiteId", "suiteSecret", "encodingAESKey", "token"}
    assert cfg["suiteId"] == SUITE
    for secret in SECRETS:
        assert secret not in json.dumps(cfg)
        assert secret[:6] not in json.dumps(cfg)
    assert cfg["token"] == "Ob0***IZK"
    # Reading elements and their config never creates the database.
    assert not Path(app.settings.db_path).exists()


def test_unknown_elements_list_what_exists(app: App) -> None:
    for name in ("auths.Nope", "auths.loginTypes.QywxProxyType.services.Other", "models.X"):
        with pytest.raises(RecordNotFound) as info:
            app.getElement(name)
        assert f"no element {name!r}" in str(info.value)
        assert "auths.QywxProxyTemp" in str(info.value)
        assert SERVICE_ELEMENT in str(info.value)


def test_a_broken_instance_folder_says_why(app: App, auths: Path) -> None:
    (auths / "QywxProxyCompanyB" / "QywxProxyCompanyB.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="QywxProxyCompanyB is invalid"):
        app.getElement("auths.QywxProxyCompanyB")


# -- logins ----------------------------------------------------------------------------------


def test_get_login_config_and_code_after_authorization(app: App) -> None:
    temp = app.getElement("auths.QywxProxyTemp")
    before = temp.getLoginConfig()
    assert (before["suiteId"], before["corpId"], before["authorized"]) == (SUITE, CORP, False)
    authorize(app)
    cfg = temp.getLoginConfig()
    assert cfg["authorized"] is True and isinstance(cfg["agentId"], int)
    assert not set(cfg) & {"suiteSecret", "token", "encodingAESKey"}
    result = temp.getLoginCode(corpId=CORP, code="CODE-zhangsan", loginType="qr")
    assert result["userId"] == "zhangsan"
    assert result["corpList"] == [
        {"corpId": CORP, "corpName": cfg["corpName"], "agentId": cfg["agentId"]}
    ]
    assert len(result["loginCode"]) >= 43
    service = app.getElement(SERVICE_ELEMENT)
    assert service.redeemLoginCode(result["loginCode"]) == {
        "userId": "zhangsan",
        "corpId": CORP,
        "element": "auths.QywxProxyTemp",
    }
    with pytest.raises(LoginError):
        service.redeemLoginCode(result["loginCode"])


def test_login_by_workbench_routes_the_corp_to_its_instance(app: App) -> None:
    authorize(app)
    service = app.getElement(SERVICE_ELEMENT)
    assert isinstance(service, QywxProxyAuthService)
    result = service.loginByWorkbench(corpId=CORP, code="CODE-wangwu")
    assert (result["userId"], result["corpId"], result["platform"]) == ("wangwu", CORP, "app")
    assert result["element"] == "auths.QywxProxyTemp"
    assert service.redeemLoginCode(result["token"])["userId"] == "wangwu"
    with pytest.raises(LoginError, match="has not authorized any active instance"):
        service.loginByWorkbench(corpId="wwunknown000000001", code="CODE-x")


def test_org_codes_through_the_service(app: App) -> None:
    authorize(app)
    authorize(app, corp="wwsecond0000000001")
    service = app.getElement(SERVICE_ELEMENT)
    assert service.setCode(corpId=CORP, code="org_code_123") is None
    cfg = service.getLoginConfig(code="ORG_CODE_123")
    assert cfg == service.getLoginConfigByCode("org_code_123")
    assert cfg["corpId"] == CORP and isinstance(cfg["agentId"], int)
    with pytest.raises(ConflictError):
        service.setCode(corpId="wwsecond0000000001", code="org_code_123")


# -- notify and retry --------------------------------------------------------------------------


def test_notify_returns_a_wsgi_response_and_never_raises(app: App) -> None:
    service = app.getElement(SERVICE_ELEMENT)
    bad = service.notify(
        nonce="random_nonce",
        msg_signature="signature_value",
        timestamp="1234567890",
        echostr="echo_string",
    )
    assert isinstance(bad, NotifyResponse) and bad.status == 403
    seen: list[Any] = []
    body = b"".join(bad({}, lambda status, headers: seen.append((status, headers))))
    assert seen[0][0] == "403 Forbidden" and body == bad.body
    missing = service.notify(nonce=None, msg_signature=None, timestamp=None)
    assert missing.status == 400


def test_retry_call_back_reruns_a_failed_record(app: App, fake: FakeWeCom) -> None:
    temp = authorize(app)
    service = app.getElement(SERVICE_ELEMENT)
    fake.inject_fault("get_permanent_code", errcode=-1)
    xml = ev.build_event_xml("create_auth", suite_id=SUITE, corp_id="wwretry00000000001")
    response = service.notify(**signed_post(temp.instance, xml))
    assert response.text == "success"
    assert response.record_id is not None
    record = app.callbacks.store.get_callback(response.record_id)
    assert record.status == "failed" and "errcode -1" in (record.last_error or "")
    done = service.retryCallBack(recordId=record.id)
    assert (done["status"], done["ran"], done["attempts"]) == ("processed", True, 2)
    again = service.retryCallBack(record.id)
    assert (again["ran"], again["status"]) == (False, "processed")
    assert "already processed" in again["reason"]
    with pytest.raises(RecordNotFound, match="no callback record with id 999"):
        service.retryCallBack(recordId=999)


def test_background_notify_is_handled_by_workers(auths: Path, fake: FakeWeCom) -> None:
    with App(auths, api_base=API, transport=httpx.WSGITransport(app=fake)) as app:
        temp = app.getElement("auths.QywxProxyTemp")
        service = app.getElement(SERVICE_ELEMENT)
        xml = ev.build_event_xml("suite_ticket", suite_id=SUITE)
        response = service.notify(**signed_post(temp.instance, xml))
        assert response.text == "success"
        app.drain()
        assert response.record_id is not None
        record = app.callbacks.store.get_callback(response.record_id)
        assert record.status == "processed"
        assert app.callbacks.store.latest_suite_ticket(SUITE) is not None


def test_a_post_without_a_body_says_what_is_missing(app: App) -> None:
    """Outside a framework that passes the body, a body-less POST names the fix instead of
    an XML parse error."""
    service: QywxProxyAuthService = app.getElement(SERVICE_ELEMENT)
    response = service.notify("1", "0" * 40, str(int(time.time())))
    assert response.status == 400
    assert response.text == "POST callback without a body: pass the raw request body (body=...)"


def test_the_element_api_on_postgresql(auths: Path, fake: FakeWeCom, pg_url: str) -> None:
    """``App(…, db="postgresql://…")``: the same element API, the store on a server."""
    from qywx_cli.core.store import Store

    app = App(
        auths, db=pg_url, api_base=API, transport=httpx.WSGITransport(app=fake), background=False
    )
    try:
        assert pg_url in repr(app)
        temp = authorize(app)
        assert temp.getLoginConfig()["authorized"] is True
        result = temp.getLoginCode(corpId=CORP, code="CODE-lisi", loginType="qr")
        service = app.getElement(SERVICE_ELEMENT)
        assert service.redeemLoginCode(result["loginCode"])["userId"] == "lisi"
        with pytest.raises(LoginError):
            service.redeemLoginCode(result["loginCode"])  # single use, on the server too
    finally:
        app.close()
    with Store(pg_url) as store:
        assert store.backend == "postgresql"
        assert [a.corp_id for a in store.list_corp_auths(state="active")] == [CORP]
        assert {r.status for r in store.list_callbacks()} == {"processed"}


def test_with_a_secret_key_the_element_api_stores_secrets_sealed(
    auths: Path, fake: FakeWeCom
) -> None:
    """App(path) reads QYWX_SECRET_KEY as the CLI does: the install and the login work as
    before, and the database row holds the permanent code only sealed."""
    import sqlite3

    from qywx_cli.core.sealing import PREFIX, generate_key
    from qywx_cli.core.store import Store

    key = generate_key()
    app = App(
        auths,
        api_base=API,
        env={"QYWX_SECRET_KEY": key},
        transport=httpx.WSGITransport(app=fake),
        background=False,
    )
    try:
        temp = authorize(app)
        result = temp.getLoginCode(corpId=CORP, code="CODE-zhangsan", loginType="qr")
        assert result["userId"] == "zhangsan"
    finally:
        app.close()
    with Store(app.settings.db_path, keys=app.settings.secret_keys) as store:
        auth = store.get_corp_auth(CORP)
    assert auth is not None and auth.permanent_code
    with sqlite3.connect(app.settings.db_path) as conn:
        [(stored,)] = conn.execute("SELECT permanent_code FROM corp_auths").fetchall()
        tokens = [t for (t,) in conn.execute("SELECT token FROM tokens")]
    assert stored.startswith(PREFIX) and auth.permanent_code not in stored
    assert tokens and all(t.startswith(PREFIX) for t in tokens)
