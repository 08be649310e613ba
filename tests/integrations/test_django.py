"""The notify endpoint in Django, through Django's own test Client.

Django is configured here with the least it needs (no database of its own, no apps):
qywx keeps its callbacks in its own store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qywx_cli.core.app import App
from qywx_cli.core.wsgi import MAX_BODY_BYTES
from tests.integrations.conftest import WeComRequests, ticket_of


def _configure() -> None:
    """Configure Django once, for the first test that uses it: importing Django at
    collection cost every pytest worker 0.4 s of CPU, most of them for no test."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="qywx-tests-only",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",  # the view must be exempt
        ],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    django.setup()


urlpatterns: list[Any] = []


@pytest.fixture
def client(project: App) -> Iterator[Any]:
    _configure()
    from django.test import Client
    from django.urls import clear_url_caches, include, path

    from qywx_cli.integrations.django import notify_urls

    urlpatterns[:] = [path("wecom/", include(notify_urls(project)))]
    clear_url_caches()
    yield Client()
    urlpatterns.clear()
    clear_url_caches()


def test_handshake_and_callback(client: Any, project: App, wecom: WeComRequests) -> None:
    got = client.get("/wecom/notify/QywxProxyTemp", wecom.handshake().query)
    assert (got.status_code, got.content) == (200, b"8848123456789")
    assert got["Content-Type"] == "text/plain; charset=utf-8"
    bare = client.get("/wecom/notify", wecom.handshake().query)
    assert (bare.status_code, bare.content) == (200, b"8848123456789")

    signed = wecom.suite_ticket("django-ticket-0123456789abcdef")
    url = "/wecom/notify/QywxProxyTemp?" + "&".join(f"{k}={v}" for k, v in signed.query.items())
    posted = client.post(url, data=signed.body, content_type="text/xml")
    assert (posted.status_code, posted.content) == (200, b"success")
    assert ticket_of(project) == "django-ticket-0123456789abcdef"

    again = client.post(url, data=signed.body, content_type="text/xml")
    assert (again.status_code, again.content) == (200, b"success")  # idempotent


def test_refusals_are_one_line(client: Any, wecom: WeComRequests) -> None:
    signed = wecom.suite_ticket("t" * 40)
    query = "&".join(f"{k}={v}" for k, v in signed.query.items())
    forged = query.replace(signed.query["msg_signature"], "0" * 40)
    cases = [
        (client.put("/wecom/notify/QywxProxyTemp"), 405, b"method not allowed"),
        (client.get("/wecom/notify/Bad-Name"), 404, b"no such instance"),
        (client.get("/wecom/notify/QywxProxyTemp"), 400, b"missing query parameter: echostr"),
        (
            client.post(
                f"/wecom/notify/QywxProxyTemp?{query}&nonce=1",
                data=signed.body,
                content_type="text/xml",
            ),
            400,
            b"query parameter nonce given twice",
        ),
        (
            client.post(
                f"/wecom/notify/QywxProxyTemp?{query}",
                data=b"x" * (MAX_BODY_BYTES + 1),
                content_type="text/xml",
            ),
            413,
            f"request body larger than {MAX_BODY_BYTES} bytes".encode(),
        ),
    ]
    for response, status, text in cases:
        assert (response.status_code, response.content) == (status, text)
    refused = client.post(
        f"/wecom/notify/QywxProxyTemp?{forged}", data=signed.body, content_type="text/xml"
    )
    assert refused.status_code == 403
    assert b"\n" not in refused.content and refused.content.startswith(b"signature")
