"""Every ```python example of the element doc (qywx-proxy-login.md), run exactly as written.

The element doc is the login type's documentation, kept beside the repository
(``../shared/qywx-proxy-login.md``), not in it. When it is there, its snippets are read at
test time and executed in
document order in one namespace (later ones use names earlier ones define, as a
reader would), with ``app = App(<copy of sample_auths>)`` and, for the Flask-style
handler, a ``request`` whose ``.args`` is a dict. The project behind it is offline:
FakeWeCom over httpx.WSGITransport, corp ww1234567890abcdef has installed the app,
and record 123 is a callback that failed and can be retried. The module also checks that
the doc's two JSON examples are still those copied to ``tests/data/element_doc/``, which
the rest of the suite tests against. Without the doc the module is skipped, saying so.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from qywx_cli.core import events as ev
from qywx_cli.core.app import App, QywxProxyAuthService
from qywx_cli.core.fakewecom import FakeWeCom
from qywx_cli.core.service import NotifyResponse
from tests.helpers import (
    SAMPLE_SECRETS,
    SAMPLES,
    SHARED,
    TEST_DATA,
    CallbackSender,
    independent_encrypt,
    sha1_sign,
)

DOC = SHARED / "qywx-proxy-login.md"
if not DOC.is_file():
    pytest.skip(
        f"the element doc's examples were not run: {DOC} is not there (the doc lives "
        "beside the repository, not in it; check it out as ../shared to run them)",
        allow_module_level=True,
    )
CORP = "ww1234567890abcdef"
SUITE = "tj1234567890abcdef"
DOC_CODE = "auth_code_from_qywx"
RETRY_ID = 123

_BLOCK = re.compile(r'```python(?: title="([^"]*)")?\n(.*?)```', re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    """(title, code) of each python block, in document order."""
    return [(title, code) for title, code in _BLOCK.findall(DOC.read_text(encoding="utf-8"))]


@dataclass
class Request:
    """The Flask ``request`` the event-handling example reads ``.args`` from."""

    args: dict[str, str] = field(default_factory=dict)


class Project:
    """A copy of sample_auths with an offline WeCom and a prepared database."""

    def __init__(self, auths: Path) -> None:
        self.fake = FakeWeCom()
        self.app = App(
            auths,
            api_base="http://fake.wecom.test/cgi-bin",
            transport=httpx.WSGITransport(app=self.fake),
            background=False,
        )
        self.sender = CallbackSender(self.app)
        self.service: QywxProxyAuthService = self.sender.service
        self.instance = self.sender.instance
        self.sender.send("suite_ticket")
        self.sender.send("create_auth", CORP)
        store = self.app.callbacks.store
        # Callbacks 3-122: refused requests, as a busy log holds; 123: a create_auth
        # that failed on a WeCom hiccup (系统繁忙) and waits for retryCallBack.
        refused = 0
        while store.list_callbacks(limit=1)[0].id < RETRY_ID - 1:
            refused += 1
            store.record_callback(
                instance="QywxProxyTemp",
                kind="command",
                info_type=None,
                suite_id=SUITE,
                corp_id=None,
                msg_signature="0" * 40,
                timestamp="0",
                nonce=str(refused),
                envelope="<xml/>",
                content_key=None,
                status="rejected",
                # distinct reasons: refusals of one kind would fold into a count
                last_error=f"receiveid 'ww{refused:016d}' is not accepted",
            )
        self.fake.inject_fault("get_permanent_code", errcode=-1)
        assert self.sender.send("create_auth", "wwretried000000001").record_id == RETRY_ID
        assert store.get_callback(RETRY_ID).status == "failed"

    def handshake_args(self) -> dict[str, str]:
        """What WeCom's URL verification GET carries (receiveid = the corp, §2.2)."""
        crypt = self.instance.crypto()
        echostr = crypt.encrypt("8848123456789", CORP)
        return {
            "nonce": "1372623149",
            "msg_signature": crypt.sign("1409659589", "1372623149", echostr),
            "timestamp": "1409659589",
            "echostr": echostr,
        }


@dataclass
class Run:
    """One pass over the doc: each example's namespace (as it was then) and printed output."""

    project: Project
    results: dict[str, tuple[dict[str, Any], str]]

    def __getitem__(self, title: str) -> tuple[dict[str, Any], str]:
        return self.results[title]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Run every example once, in document order, in one namespace."""
    auths = tmp_path_factory.mktemp("doc") / "auths"
    shutil.copytree(SAMPLES, auths)
    project = Project(auths)
    namespace: dict[str, Any] = {"app": project.app, "request": Request()}
    results: dict[str, tuple[dict[str, Any], str]] = {}
    for title, code in snippets():
        # WeCom's code is single use: each example stands for a fresh redirect.
        project.fake.register_code(DOC_CODE, user_id="zhangsan", corp_id=CORP)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{DOC.name}: {title}", "exec"), namespace)
        results[title] = (dict(namespace), out.getvalue())
    yield Run(project, results)
    project.app.close()


@pytest.mark.parametrize(
    ("title", "copy"), [("元素配置文件", "e.json"), ("业务配置文件", "business.json")]
)
def test_the_json_examples_in_test_data_are_the_docs(title: str, copy: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    block = re.search(rf'```json title="{title}"\n(.*?)```', doc, re.S)
    assert block is not None, title
    assert (TEST_DATA / "element_doc" / copy).read_text(encoding="utf-8") == block.group(1)


def test_the_doc_has_the_examples_this_file_checks() -> None:
    assert [t for t, _ in snippets()] == [
        "基本调用示例",
        "获取登录配置",
        "获取登录码",
        "工作台登录示例",
        "处理回调通知示例",
        "设置组织代号示例",
        "获取登录配置示例",
        "重试回调示例",
        "获取认证配置",
        "事件处理示例",
    ]


def test_basic_call(run: Run) -> None:
    ns, _ = run["基本调用示例"]
    assert ns["auth_instance"].authType == "auths.loginTypes.QywxProxyType"
    assert ns["config"]["suiteId"] == SUITE
    result = ns["login_result"]
    assert (result["userId"], result["corpId"]) == ("zhangsan", CORP)
    assert len(result["loginCode"]) >= 43
    assert [c["corpId"] for c in result["corpList"]] == [CORP]  # 123 has not been retried yet
    assert isinstance(ns["auth_service"], QywxProxyAuthService)


def test_get_login_config(run: Run) -> None:
    _, out = run["获取登录配置"]
    assert out == f"套件ID: {SUITE}\n"


def test_get_login_code(run: Run) -> None:
    ns, out = run["获取登录码"]
    assert out == f"登录码: {ns['result']['loginCode']}\n用户ID: zhangsan\n"
    assert run.project.service.redeemLoginCode(ns["result"]["loginCode"])["userId"] == "zhangsan"


def test_login_by_workbench(run: Run) -> None:
    ns, _ = run["工作台登录示例"]
    result = ns["result"]
    assert (result["userId"], result["corpId"], result["platform"]) == ("zhangsan", CORP, "app")
    assert result["token"] and result["element"] == "auths.QywxProxyTemp"


def test_notify_with_the_docs_placeholder_values(run: Run) -> None:
    ns, _ = run["处理回调通知示例"]
    response = ns["response"]
    # "signature_value" is not a signature of anything: refused, as WeCom's would be.
    assert isinstance(response, NotifyResponse)
    assert (response.status, response.text) == (403, "signature mismatch (-40001)")


def test_set_code(run: Run) -> None:
    run["设置组织代号示例"]
    assert run.project.app.callbacks.store.get_org_code("org_code_123").corp_id == CORP


def test_get_login_config_by_code(run: Run) -> None:
    ns, out = run["获取登录配置示例"]
    agent = run.project.app.callbacks.store.get_corp_auth(CORP, SUITE).agent_id  # type: ignore[union-attr]
    assert out == f"企业ID: {CORP}\n应用ID: {agent}\n"
    assert ns["config"] == run.project.service.getLoginConfigByCode("org_code_123")


def test_retry_call_back(run: Run) -> None:
    run["重试回调示例"]
    record = run.project.app.callbacks.store.get_callback(RETRY_ID)
    assert (record.status, record.attempts, record.last_error) == ("processed", 2, None)


def test_auth_config_is_masked(run: Run) -> None:
    ns, out = run["获取认证配置"]
    assert out == f"套件ID: {SUITE}\n"
    shown = repr(ns["config"])
    assert not any(secret in shown for secret in SAMPLE_SECRETS)


def test_event_handler_answers_wecom(run: Run) -> None:
    ns, _ = run["事件处理示例"]
    ns["request"].args.update(run.project.handshake_args())
    response = ns["handle_qywx_callback"]()
    assert (response.status, response.body) == (200, b"8848123456789")
    started: list[str] = []
    body = b"".join(response({}, lambda status, headers: started.append(status)))
    assert (started, body) == (["200 OK"], b"8848123456789")


def test_event_handler_in_a_real_flask_route(tmp_path: Path) -> None:
    """The event-handling example as a Flask view, as written: it passes no body, so a
    POST suite_ticket is read from Flask's own request, and GET answers the handshake."""
    import flask  # a test dependency: the element doc's examples are Flask views

    shutil.copytree(SAMPLES, tmp_path / "auths")
    project = Project(tmp_path / "auths")
    try:
        title, code = next((t, c) for t, c in snippets() if t == "事件处理示例")
        namespace: dict[str, Any] = {"auth_service": project.service, "request": flask.request}
        exec(compile(code, f"{DOC.name}: {title}", "exec"), namespace)
        web = flask.Flask("doc-example")
        web.add_url_rule(
            "/callback", view_func=namespace["handle_qywx_callback"], methods=["GET", "POST"]
        )
        client = web.test_client()

        got = client.get("/callback", query_string=project.handshake_args())
        assert (got.status_code, got.data) == (200, b"8848123456789")

        inst = project.instance
        ticket = "flask-route-ticket-0123456789abcdef"
        xml = ev.build_event_xml("suite_ticket", suite_id=SUITE, overrides={"SuiteTicket": ticket})
        encrypt = independent_encrypt(inst.encoding_aes_key, xml, SUITE)
        timestamp, nonce = str(int(time.time())), "424242"
        query = {
            "msg_signature": sha1_sign(inst.token, timestamp, nonce, encrypt),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        envelope = (
            f"<xml><ToUserName><![CDATA[{SUITE}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        )
        posted = client.post("/callback", query_string=query, data=envelope)
        assert (posted.status_code, posted.data) == (200, b"success")
        stored = project.app.callbacks.store.latest_suite_ticket(SUITE)
        assert stored is not None and stored.ticket == ticket
    finally:
        project.app.close()
