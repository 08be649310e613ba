"""The element API of ``qywx-proxy-login.md``, reachable exactly as its examples write it.

::

    app = App("path/to/project")            # a folder holding auths/, or auths/ itself
    auth_instance = app.getElement("auths.QywxProxyTemp")
    auth_service = app.getElement("auths.loginTypes.QywxProxyType.services.QywxProxyAuthService")

The element doc's camelCase names (``getLoginConfig``, ``getLoginCode``, ``authConfig``,
``loginByWorkbench``, ``notify``, ``setCode``, ``getLoginConfigByCode``, ``retryCallBack``
…) live only here; each is a thin call into the snake_case core (:mod:`.login`,
:mod:`.service`, :mod:`.store`) and turns the typed result into the dict the doc
describes. Nothing returned here carries a secret: ``authConfig`` masks the suite
secret, token and EncodingAESKey with :func:`errors.mask`.

Settings come from :func:`settings.load_settings` with the project folder as the
working directory (so its ``qywx.toml`` applies); ``db=`` and ``api_base=`` override
them. The database, WeCom client and callback service are created on first use, so
``getElement`` and ``authConfig`` never touch the database.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import httpx

from qywx_cli.core.config import (
    AUTH_MODEL_ELEMENT,
    ELEMENT_TYPE,
    AuthInstance,
    find_instance,
    instance_dirs,
    load_instances,
)
from qywx_cli.core.errors import ConfigError, RecordNotFound
from qywx_cli.core.login import (
    CorpEntry,
    LoginConfig,
    LoginResult,
    LoginService,
    OrgCodeInfo,
    check_platform,
)
from qywx_cli.core.masking import mask
from qywx_cli.core.provider import ProviderService
from qywx_cli.core.service import CallbackService, NotifyResponse
from qywx_cli.core.settings import CONFIG_FILE, Settings, load_settings
from qywx_cli.core.store import open_store
from qywx_cli.core.wecom import UserDetail, WeComClient
from qywx_cli.core.wsgi import MAX_BODY_BYTES

if TYPE_CHECKING:
    from flask import Response as FlaskResponse

__all__ = [
    "SERVICE_ELEMENT",
    "App",
    "QywxProxyAuthService",
    "QywxProxyInstance",
    "login_config_dict",
    "login_result_dict",
    "user_detail_dict",
]

SERVICE_ELEMENT: Final = f"{ELEMENT_TYPE}.services.QywxProxyAuthService"
"""The service element's full name, as the element doc's examples spell it."""

_INSTANCE_PREFIX: Final = "auths."


def _corp_list(entries: tuple[CorpEntry, ...]) -> list[dict[str, Any]]:
    return [{"corpId": e.corp_id, "corpName": e.corp_name, "agentId": e.agent_id} for e in entries]


def user_detail_dict(detail: UserDetail) -> dict[str, Any]:
    """auth/getuserdetail's fields (doc 96443) under the element API's camelCase names."""
    return {
        "userId": detail.user_id,
        "gender": detail.gender,
        "avatar": detail.avatar,
        "qrCode": detail.qr_code,
        "mobile": detail.mobile,
        "email": detail.email,
        "bizMail": detail.biz_mail,
        "address": detail.address,
    }


def login_result_dict(result: LoginResult) -> dict[str, Any]:
    """getLoginCode's answer ("loginCode、corpList和userId"); ``qywx login`` prints the same.

    A privateinfo login adds ``userDetail`` — unmasked here, for the application; the
    CLI masks it unless asked not to.
    """
    doc = {
        "loginCode": result.login_code,
        "corpList": _corp_list(result.corp_list),
        "userId": result.user_id,
        "corpId": result.corp_id,
        "loginType": result.login_type,
        "expiresIn": result.expires_in,
        "element": f"{_INSTANCE_PREFIX}{result.instance}",
    }
    if result.user_detail is not None:
        doc["userDetail"] = user_detail_dict(result.user_detail)
    return doc


def login_config_dict(cfg: LoginConfig) -> dict[str, Any]:
    """getLoginConfig's answer ("包含suiteId的配置信息"); ``qywx login-config`` prints the same."""
    return {
        "suiteId": cfg.suite_id,
        "corpId": cfg.corp_id,
        "agentId": cfg.agent_id,
        "corpName": cfg.corp_name,
        "authorized": cfg.authorized,
        "isActive": cfg.is_active,
        "title": cfg.title,
        "element": f"{_INSTANCE_PREFIX}{cfg.instance}",
        "authType": ELEMENT_TYPE,
        "loginTypes": list(cfg.login_types),
    }


def _flask() -> Any:
    """The flask module when the caller runs inside a Flask request, else None.

    Flask is not imported here: only an application that already imported it can be
    inside a request context.
    """
    flask = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return None
    return flask


def _flask_request_body(flask: Any) -> bytes | NotifyResponse:
    """The raw body of the current Flask request, refused past the notify route's cap."""
    length = flask.request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        return NotifyResponse(
            413,
            f"request body larger than {MAX_BODY_BYTES} bytes".encode(),
            "rejected: too-large",
        )
    data: bytes = flask.request.get_data(cache=True)
    return data


def flask_response(flask: Any, response: NotifyResponse) -> FlaskResponse:
    """``response`` as the running Flask app's own response class ("返回Flask Response对象").

    The status, body and headers are the notify endpoint's, byte for byte: WeCom reads
    the bare plaintext or ``success``.
    """
    reply: FlaskResponse = flask.current_app.response_class(
        response.body, status=response.status, headers=response.headers
    )
    return reply


def _locate(path: Path) -> tuple[Path, Path | None, bool]:
    """(project root, auths folder, whether $QYWX_AUTHS applies) for a path given to App.

    A folder holding ``qywx.toml`` is a project root whose file names the auths folder
    (None here: ``load_settings`` reads it), as it does for the CLI run in that folder.
    A project root with neither ``qywx.toml`` nor ``auths/`` (a checkout run with
    ``QYWX_AUTHS=sample_auths``) finds its folder as the CLI does there: from
    ``$QYWX_AUTHS``, else ``./auths``; its code folders are not instances.
    """
    if not path.is_dir():
        raise ConfigError(f"no project or auths folder at {path}")
    if (path / CONFIG_FILE).is_file():
        return path, None, False
    if (path / "auths").is_dir():
        return path, path / "auths", False
    if _holds_instances(path):
        return path.parent, path, False
    return path, None, True


def _holds_instances(path: Path) -> bool:
    """Whether ``path`` is an auths/ folder: named so, or holding an instance folder."""
    if path.name == "auths":
        return True
    try:
        return any(child.is_dir() and (child / "e.json").is_file() for child in path.iterdir())
    except OSError:
        return False


class App:
    """An application's view of its ``auths/`` elements, over one database.

    ``background`` runs callback handlers on worker threads started by the first
    ``notify`` (WeCom wants its reply within 1 s, §3.8, so API calls must not hold it);
    ``background=False`` handles them before ``notify`` returns. ``transport`` and
    ``now`` are seams for tests and offline runs (e.g. an in-process FakeWeCom).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        db: str | os.PathLike[str] | None = None,
        api_base: str | None = None,
        env: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        background: bool = True,
        now: Callable[[], float] = time.time,
    ) -> None:
        root, auths_dir, env_auths = _locate(Path(path))
        source = os.environ if env is None else env
        if not env_auths:  # the path given names the project: $QYWX_AUTHS does not move it
            source = {k: v for k, v in source.items() if k != "QYWX_AUTHS"}
        settings = load_settings(
            auths=auths_dir, db=os.fspath(db) if db is not None else None, env=source, cwd=root
        )
        if api_base is not None:
            settings = replace(settings, api_base=api_base.rstrip("/"))
        self.settings: Settings = settings
        self._env = os.environ if env is None else env
        self._transport = transport
        self._background = background
        self._now = now
        self._lock = threading.RLock()
        self._callbacks: CallbackService | None = None
        self._logins: LoginService | None = None
        self._provider: ProviderService | None = None
        self._started = False
        self._elements: dict[str, QywxProxyInstance | QywxProxyAuthService] = {}

    def __repr__(self) -> str:
        from qywx_cli.core.store import display_target

        db = display_target(self.settings.db_path)
        return f"App(auths={str(self.settings.auths_dir)!r}, db={db!r})"

    # -- elements -----------------------------------------------------------------------

    def element_names(self) -> list[str]:
        """Every element getElement knows: one per instance folder, then the service."""
        auths = self.settings.auths_dir
        folders = instance_dirs(auths) if auths.is_dir() else []
        return [f"{_INSTANCE_PREFIX}{p.name}" for p in folders] + [SERVICE_ELEMENT]

    def getElement(self, name: str) -> Any:
        """``auths.<Instance>`` or the service element; anything else lists what exists."""
        with self._lock:
            found = self._elements.get(name)
            if found is not None:
                return found
            element: QywxProxyInstance | QywxProxyAuthService
            if name == SERVICE_ELEMENT:
                element = QywxProxyAuthService(self)
            else:
                folder = name.removeprefix(_INSTANCE_PREFIX)
                if (
                    not name.startswith(_INSTANCE_PREFIX)
                    or "." in folder
                    or not (self.settings.auths_dir / folder).is_dir()
                ):
                    auths = self.settings.auths_dir
                    missing = (
                        ""
                        if auths.is_dir()
                        else f" (no auths folder at {auths}: pass App('path/to/auths') "
                        "or set QYWX_AUTHS)"
                    )
                    raise RecordNotFound(
                        f"no element {name!r}{missing}; available: "
                        f"{', '.join(self.element_names())}"
                    )
                # find_instance gives the validation reason when the folder is broken.
                element = QywxProxyInstance(
                    self, find_instance(folder, self.settings.auths_dir, self._env)
                )
            self._elements[name] = element
            return element

    # -- shared machinery (created on first use) -----------------------------------------

    @property
    def callbacks(self) -> CallbackService:
        """The callback service over this app's database (created on first use)."""
        with self._lock:
            if self._callbacks is None:
                store = open_store(
                    self.settings.db_path, now=self._now, keys=self.settings.secret_keys
                )
                try:
                    client = WeComClient(
                        store,
                        base_url=self.settings.api_base,
                        transport=self._transport,
                        now=self._now,
                    )
                except BaseException:
                    store.close()
                    raise
                self._callbacks = CallbackService(
                    self.settings,
                    store=store,
                    client=client,
                    instances=load_instances(self.settings.auths_dir, self._env),
                    now=self._now,
                    background=self._background,
                )
            return self._callbacks

    @property
    def logins(self) -> LoginService:
        with self._lock:
            if self._logins is None:
                service = self.callbacks
                self._logins = LoginService(service.store, service.client, now=self._now)
            return self._logins

    @property
    def provider(self) -> ProviderService:
        """Links, app status and JS-SDK configs over the same store and client."""
        with self._lock:
            if self._provider is None:
                service = self.callbacks
                self._provider = ProviderService(
                    service.store, service.client, self.settings, now=self._now
                )
            return self._provider

    def notify_service(self) -> CallbackService:
        """The callback service with its workers running (started once, on first use).

        What an embedded notify endpoint (``qywx_cli.integrations``) answers through.
        """
        with self._lock:
            service = self.callbacks
            if self._background and not self._started:
                service.start()
                self._started = True
            return service

    def drain(self) -> None:
        """Wait until every callback accepted so far has been handled."""
        with self._lock:
            service = self._callbacks
        if service is not None:
            service.drain()

    def close(self) -> None:
        """Finish queued callbacks and close the database and HTTP client."""
        with self._lock:
            service, self._callbacks, self._logins = self._callbacks, None, None
            self._provider = None
            self._started = False
            self._elements.clear()
        if service is not None:
            service.drain()
            service.close()

    def __enter__(self) -> App:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class QywxProxyInstance:
    """``auths.<Name>``: one login instance element (qywx-proxy-login.md "方法", "属性")."""

    def __init__(self, app: App, instance: AuthInstance) -> None:
        self._app = app
        self.instance = instance

    def __repr__(self) -> str:
        return f"QywxProxyInstance({self.instance.element_name!r})"

    @property
    def name(self) -> str:
        return self.instance.element_name

    @property
    def title(self) -> str:
        return self.instance.title

    @property
    def authType(self) -> str:
        return ELEMENT_TYPE

    @property
    def authModelElemName(self) -> str:
        return AUTH_MODEL_ELEMENT

    @property
    def authConfig(self) -> dict[str, str]:
        """The business file's authConfig with "敏感信息已脱敏": only suiteId in clear."""
        inst = self.instance
        return {
            "suiteId": inst.suite_id,
            "suiteSecret": mask(inst.suite_secret),
            "encodingAESKey": mask(inst.encoding_aes_key),
            "token": mask(inst.token),
        }

    def getLoginConfig(self) -> dict[str, Any]:
        """What a login page needs: suiteId, the corp and its agentId (§4.1, §4.2)."""
        return login_config_dict(self._app.logins.login_config(self.instance))

    def getLoginCode(
        self, corpId: str, code: str, loginType: str = "workbench", scope: str = "base"
    ) -> dict[str, Any]:
        """Exchange WeCom's login ``code`` for a one-time loginCode (see :mod:`.login`).

        ``scope="privateinfo"`` (a code from a snsapi_privateinfo link) also returns the
        member's ``userDetail`` (mobile, email, avatar …, doc 96443).
        """
        return login_result_dict(
            self._app.logins.login(self.instance, corpId, code, loginType, scope=scope)
        )


class QywxProxyAuthService:
    """``auths.loginTypes.QywxProxyType.services.QywxProxyAuthService``: the Type's service."""

    def __init__(self, app: App) -> None:
        self._app = app

    def __repr__(self) -> str:
        return f"QywxProxyAuthService({self._app!r})"

    def loginByWorkbench(
        self,
        corpId: str,
        code: str,
        platform: str = "app",
        scope: str = "base",
    ) -> dict[str, Any]:
        """Workbench (免登) login for whichever active instance the corp authorized.

        ``token`` is the one-time loginCode: the application redeems it once
        (:meth:`redeemLoginCode`) within ``expiresIn`` seconds to open its own session.
        ``scope="privateinfo"`` adds the member's ``userDetail`` (doc 96443).
        """
        platform = check_platform(platform)
        logins = self._app.logins
        instance = logins.route(corpId, self._app.callbacks.instances.values())
        result = logins.login(instance, corpId, code, "workbench", scope=scope)
        detail = (
            {"userDetail": user_detail_dict(result.user_detail)}
            if result.user_detail is not None
            else {}
        )
        return {
            **detail,
            "token": result.login_code,
            "tokenType": "loginCode",
            "expiresIn": result.expires_in,
            "userId": result.user_id,
            "corpId": result.corp_id,
            "corpList": _corp_list(result.corp_list),
            "platform": platform,
            "element": f"{_INSTANCE_PREFIX}{result.instance}",
            "authType": ELEMENT_TYPE,
        }

    def redeemLoginCode(self, loginCode: str) -> dict[str, Any]:
        """Spend a loginCode once; LoginError when unknown, expired or already used."""
        used = self._app.logins.redeem(loginCode)
        return {
            "userId": used.user_id,
            "corpId": used.corp_id,
            "element": f"{_INSTANCE_PREFIX}{used.instance}",
        }

    def notify(
        self,
        nonce: str | None,
        msg_signature: str | None,
        timestamp: str | None,
        echostr: str | None = None,
        body: bytes | str | None = None,
    ) -> NotifyResponse | FlaskResponse:
        """Answer a request from WeCom: the GET handshake with ``echostr``, else a POST ``body``.

        Never raises for a bad request: the response carries the status and a one-line
        reason. Called inside a Flask request, as the element doc's example does, it is
        a Flask Response ("返回Flask Response对象") and, without ``body``, the request's
        own body is used; anywhere else it is a :class:`NotifyResponse`, itself a WSGI
        app that any framework can return.
        """
        flask = _flask()
        if body is None and echostr is None and flask is not None:
            got = _flask_request_body(flask)
            if isinstance(got, NotifyResponse):
                return flask_response(flask, got)
            body = got
        response = self._app.notify_service().notify(
            msg_signature=msg_signature,
            timestamp=timestamp,
            nonce=nonce,
            echostr=echostr,
            body=body,
        )
        return response if flask is None else flask_response(flask, response)

    def getJsapiConfig(
        self,
        corpId: str,
        url: str,
        agent: bool = False,
        jsApiList: list[str] | None = None,
    ) -> dict[str, Any]:
        """The object a page passes to ``wx.config`` — or, with ``agent``, ``wx.agentConfig``
        (corpid, agentid, timestamp, nonceStr, signature) — signed for ``url`` with the
        corp's cached jsapi / agent_config ticket (doc 96909)."""
        instance = self._app.logins.route(corpId, self._app.callbacks.instances.values())
        config = self._app.provider.jsapi_config(corpId, url, agent=agent, instance=instance)
        return config.as_dict(jsApiList)

    def setCode(self, corpId: str, code: str) -> None:
        """Give an authorized corp an org code; a code another corp holds is a ConflictError."""
        self._app.logins.set_org_code(corpId, code)

    def getLoginConfigByCode(self, code: str) -> dict[str, Any]:
        """The corpId and agentId a QR login page needs for an org code (§4.2)."""
        return self._org_config(self._app.logins.login_config_by_code(code))

    def getLoginConfig(self, code: str) -> dict[str, Any]:
        """The element doc's example spelling of :meth:`getLoginConfigByCode`."""
        return self.getLoginConfigByCode(code)

    def retryCallBack(self, recordId: int) -> dict[str, Any]:
        """Re-run a recorded callback's handler; RecordNotFound for an unknown id.

        A processed record is left alone (``ran`` is false and ``reason`` says why).
        """
        outcome = self._app.callbacks.retry(int(recordId))
        rec = outcome.record
        return {
            "recordId": rec.id,
            "status": rec.status,
            "attempts": rec.attempts,
            "lastError": rec.last_error,
            "ran": outcome.ran,
            "reason": outcome.reason,
        }

    @staticmethod
    def _org_config(info: OrgCodeInfo) -> dict[str, Any]:
        return {
            "corpId": info.corp_id,
            "agentId": info.agent_id,
            "corpName": info.corp_name,
            "suiteId": info.suite_id,
            "code": info.code,
        }
