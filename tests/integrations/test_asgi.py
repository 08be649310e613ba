"""The notify endpoint mounted in a Starlette app, through Starlette's own TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from qywx_cli.core.app import App
from qywx_cli.core.wsgi import MAX_BODY_BYTES
from tests.integrations.conftest import WeComRequests, ticket_of

if TYPE_CHECKING:  # imported by the fixture, not at collection (every worker collects)
    from starlette.testclient import TestClient


@pytest.fixture
def client(project: App) -> Iterator[TestClient]:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.testclient import TestClient

    from qywx_cli.integrations.asgi import notify_asgi

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("the rest of the application")

    web = Starlette(routes=[Route("/", home), Mount("/wecom", app=notify_asgi(project))])
    with TestClient(web) as client:
        yield client


def test_handshake_and_callback(client: TestClient, project: App, wecom: WeComRequests) -> None:
    assert client.get("/").text == "the rest of the application"
    got = client.get("/wecom/notify/QywxProxyTemp", params=wecom.handshake().query)
    assert (got.status_code, got.content) == (200, b"8848123456789")
    assert got.headers["content-type"] == "text/plain; charset=utf-8"

    signed = wecom.suite_ticket("asgi-ticket-0123456789abcdef")
    posted = client.post("/wecom/notify/QywxProxyTemp", params=signed.query, content=signed.body)
    assert (posted.status_code, posted.content) == (200, b"success")
    assert ticket_of(project) == "asgi-ticket-0123456789abcdef"

    again = client.post("/wecom/notify", params=signed.query, content=signed.body)
    assert (again.status_code, again.content) == (200, b"success")  # idempotent
    health = client.get("/wecom/healthz")
    assert health.status_code == 200 and health.json()["ok"] is True


def test_refusals_are_one_line(client: TestClient, wecom: WeComRequests) -> None:
    signed = wecom.suite_ticket("t" * 40)
    cases = [
        (client.put("/wecom/notify/QywxProxyTemp"), 405, b"method not allowed"),
        (client.get("/wecom/notify/Bad-Name"), 404, b"no such instance"),
        (client.get("/wecom/elsewhere"), 404, b"not found"),
        (client.get("/wecom/notify/QywxProxyTemp"), 400, b"missing query parameter: echostr"),
        (
            client.post(
                "/wecom/notify/QywxProxyTemp",
                params=signed.query,
                content=b"x" * (MAX_BODY_BYTES + 1),
            ),
            413,
            f"request body larger than {MAX_BODY_BYTES} bytes".encode(),
        ),
    ]
    for response, status, text in cases:
        assert (response.status_code, response.content) == (status, text)
    forged = {**signed.query, "msg_signature": "0" * 40}
    refused = client.post("/wecom/notify/QywxProxyTemp", params=forged, content=signed.body)
    assert refused.status_code == 403
    assert b"\n" not in refused.content and refused.content.startswith(b"signature")
