"""The notify endpoint in Flask, through Flask's own test client.

Flask is imported by the tests that use it, not at collection, which every pytest
worker does (0.25 s of CPU each).
"""

from __future__ import annotations

from qywx_cli.core.app import SERVICE_ELEMENT, App
from qywx_cli.core.wsgi import MAX_BODY_BYTES
from tests.integrations.conftest import WeComRequests, ticket_of


def _doc_style_app(project: App) -> object:
    """The element doc's handler, as written: a view that returns auth_service.notify(...)."""
    import flask

    auth_service = project.getElement(SERVICE_ELEMENT)
    request = flask.request
    web = flask.Flask("doc-style")

    @web.route("/callback", methods=["GET", "POST"])
    def handle_qywx_callback():  # type: ignore[no-untyped-def]
        response = auth_service.notify(
            nonce=request.args.get("nonce"),
            msg_signature=request.args.get("msg_signature"),
            timestamp=request.args.get("timestamp"),
            echostr=request.args.get("echostr"),
        )
        return response

    return web


def test_a_view_returning_notify_gets_a_flask_response(project: App, wecom: WeComRequests) -> None:
    import flask

    web = _doc_style_app(project)
    with web.test_request_context("/callback", query_string=wecom.handshake().query):  # type: ignore[attr-defined]
        auth_service = project.getElement(SERVICE_ELEMENT)
        args = flask.request.args
        got = auth_service.notify(
            args["nonce"], args["msg_signature"], args["timestamp"], args["echostr"]
        )
        assert isinstance(got, flask.Response)
        assert (got.status_code, got.get_data()) == (200, b"8848123456789")
        assert got.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_doc_style_view_answers_handshake_and_callback(project: App, wecom: WeComRequests) -> None:
    client = _doc_style_app(project).test_client()  # type: ignore[attr-defined]
    got = client.get("/callback", query_string=wecom.handshake().query)
    assert (got.status_code, got.data) == (200, b"8848123456789")

    signed = wecom.suite_ticket("flask-doc-ticket-0123456789abcdef")
    posted = client.post("/callback", query_string=signed.query, data=signed.body)
    assert (posted.status_code, posted.data) == (200, b"success")
    assert ticket_of(project) == "flask-doc-ticket-0123456789abcdef"

    again = client.post("/callback", query_string=signed.query, data=signed.body)
    assert (again.status_code, again.data) == (200, b"success")  # idempotent

    forged = {**signed.query, "msg_signature": "0" * 40}
    refused = client.post("/callback", query_string=forged, data=signed.body)
    assert refused.status_code == 403
    assert b"\n" not in refused.data and refused.data.startswith(b"signature")


def test_doc_style_view_caps_the_body(project: App, wecom: WeComRequests) -> None:
    client = _doc_style_app(project).test_client()  # type: ignore[attr-defined]
    signed = wecom.suite_ticket("t" * 40)
    got = client.post("/callback", query_string=signed.query, data=b"x" * (MAX_BODY_BYTES + 1))
    assert (got.status_code, got.data) == (
        413,
        f"request body larger than {MAX_BODY_BYTES} bytes".encode(),
    )


def test_blueprint(project: App, wecom: WeComRequests) -> None:
    import flask

    from qywx_cli.integrations.flask import notify_blueprint

    web = flask.Flask("blueprint")
    web.register_blueprint(notify_blueprint(project, url_prefix="/wecom"))
    client = web.test_client()

    got = client.get("/wecom/notify/QywxProxyTemp", query_string=wecom.handshake().query)
    assert (got.status_code, got.data) == (200, b"8848123456789")
    bare = client.get("/wecom/notify", query_string=wecom.handshake().query)
    assert (bare.status_code, bare.data) == (200, b"8848123456789")

    signed = wecom.suite_ticket("flask-bp-ticket-0123456789abcdef")
    posted = client.post("/wecom/notify/QywxProxyTemp", query_string=signed.query, data=signed.body)
    assert (posted.status_code, posted.data) == (200, b"success")
    assert ticket_of(project) == "flask-bp-ticket-0123456789abcdef"

    refusals = [
        (client.put("/wecom/notify/QywxProxyTemp"), 405, b"method not allowed"),
        (client.get("/wecom/notify/../etc"), 404, b"no such instance"),
        (
            client.get("/wecom/notify/NoSuch", query_string=wecom.handshake().query),
            404,
            b"no active auth instance named 'NoSuch'",
        ),
        (client.get("/wecom/notify/QywxProxyTemp"), 400, b"missing query parameter: echostr"),
        (
            client.post(
                "/wecom/notify/QywxProxyTemp",
                query_string=signed.query,
                data=b"x" * (MAX_BODY_BYTES + 1),
            ),
            413,
            f"request body larger than {MAX_BODY_BYTES} bytes".encode(),
        ),
    ]
    for response, status, text in refusals:
        assert (response.status_code, response.data) == (status, text)
