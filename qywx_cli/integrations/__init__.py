"""The notify endpoint inside an existing web application: Flask, Django, ASGI.

Each adapter is its own module and imports its framework only when it is used; the
core never imports one. All three answer through :meth:`NotifyApp.respond_notify`, so
an embedded endpoint keeps what ``qywx serve`` promises: the reply is sent only after
the callback is committed to the store, and a refused request gets a one-line reason.

=====================  ===========================================  ====================
framework              entry point                                  extra
=====================  ===========================================  ====================
Flask                  :func:`qywx_cli.integrations.flask.notify_blueprint`  ``qywx-cli[flask]``
Django                 :func:`qywx_cli.integrations.django.notify_urls`      ``qywx-cli[django]``
ASGI (Starlette,       :func:`qywx_cli.integrations.asgi.notify_asgi`        ``qywx-cli[asgi]``
FastAPI)
=====================  ===========================================  ====================
"""
