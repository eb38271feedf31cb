"""The reverse proxy in front of configurable-http-proxy: pass through, and listen in.

Every request and websocket is relayed to the upstream (CHP) as it came: method, raw
path and query, headers (less the hop-by-hop ones), body streamed both ways, encoded
bodies left encoded, no cookies kept, no redirect followed. Two places are looked at:

- the LTI launch POST (``<base>hub/lti/launch``): once the hub accepted it (it answered
  below 400 and set its login cookie, so the OAuth signature was good), the launch's
  log settings are bound to the hub user it logged in;
- kernel websockets (``<base>user/<name>[/<server>]/api/kernels/<id>/channels``) of a
  user with such a binding: frames are decoded to emit the ``ltictr``/``client``/
  ``server`` records. A kernel's frame is relayed first, then looked at; a browser's
  ``execute_request`` is looked at just before it is relayed (a header parse, no I/O), so
  its ``client`` record is always queued before the reply's ``server`` record can be.
  A frame that does not decode is still relayed unchanged, only counted.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .logproxy_records import (
    LaunchInfo,
    LaunchRegistry,
    LaunchRejected,
    client_record,
    hub_user_name,
    launch_from_form,
    ltictr_record,
    server_record,
)
from .logproxy_sink import MoodleSink
from .logproxy_wire import WireError, could_be, decode_frame

log = logging.getLogger("ltihub.logproxy")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Handshake headers the websocket libraries make anew on each hop.
WS_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
_SENDABLE_CLOSE = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
LAUNCH_BODY_LIMIT = 1024 * 1024


@dataclass
class ProxySettings:
    upstream_url: str = "http://127.0.0.1:8000"
    hub_base_url: str = "/"
    username_key: str = "ext_user_username"
    login_cookie: str = "jupyterhub-hub-login"
    # Set X-Forwarded-For/-Proto/-Host (the proxy is the edge) instead of passing them on.
    x_forwarded: bool = True
    # False: a plain proxy, nothing recorded, nothing sent to Moodle.
    record: bool = True
    allowed_moodle_urls: tuple[str, ...] = ()
    max_ws_message: int = 0  # bytes; 0 = no limit (like configurable-http-proxy)
    connect_timeout: float = 10.0


@dataclass
class ProxyStats:
    launches_bound: int = 0
    launches_refused: int = 0
    kernel_sockets: int = 0
    observed_sockets: int = 0
    decode_errors: int = 0
    records: dict[str, int] = field(default_factory=dict)


def _close_code(code: int | None) -> int:
    if code in _SENDABLE_CLOSE:
        assert code is not None
        return code
    return 1011 if code == 1006 else 1000


class ChannelObserver:
    """Turns the messages of one kernel websocket into learning-log records."""

    def __init__(
        self,
        launch: LaunchInfo,
        protocol: str,
        submit: Callable[[LaunchInfo, dict[str, str]], Any],
        stats: ProxyStats,
    ) -> None:
        self.launch = launch
        self.protocol = protocol
        self._submit = submit
        self._stats = stats

    def _emit(self, record: dict[str, str] | None) -> None:
        if record is None:
            return
        host = record["host"]
        self._stats.records[host] = self._stats.records.get(host, 0) + 1
        self._submit(self.launch, record)

    def opened(self, session: str) -> None:
        self._emit(ltictr_record(self.launch, session))

    def from_client(self, data: str | bytes) -> None:
        if not could_be(data, "execute_request"):
            return
        try:
            self._emit(client_record(decode_frame(data, self.protocol)))
        except (WireError, ValueError) as exc:
            self._stats.decode_errors += 1
            log.debug("undecodable browser frame: %s", exc)

    def from_kernel(self, data: str | bytes) -> None:
        if not could_be(data, "execute_reply"):
            return
        try:
            self._emit(server_record(decode_frame(data, self.protocol)))
        except (WireError, ValueError) as exc:
            self._stats.decode_errors += 1
            log.debug("undecodable kernel frame: %s", exc)


class LogProxy:
    """The aiohttp application: one catch-all handler for HTTP and websockets."""

    def __init__(
        self,
        settings: ProxySettings,
        registry: LaunchRegistry,
        sink: MoodleSink | None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.sink = sink
        self.stats = ProxyStats()
        self._upstream = settings.upstream_url.rstrip("/")
        base = "/" + settings.hub_base_url.strip("/")
        base = base if base == "/" else base + "/"
        self._launch_path = base + "hub/lti/launch"
        self._kernel_path = re.compile(
            "^" + re.escape(base) + r"user/(?P<user>[^/]+)/(?:[^/]+/)?api/kernels/[^/]+/channels/?$"
        )
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=LAUNCH_BODY_LIMIT)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_startup.append(self._start)
        self.app.on_cleanup.append(self._stop)

    async def _start(self, _app: web.Application) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout),
            connector=aiohttp.TCPConnector(limit=0),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        if self.sink is not None:
            await self.sink.start()

    async def _stop(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
        if self.sink is not None:
            await self.sink.close()

    # ---- request plumbing ------------------------------------------------------------
    def _upstream_url(self, request: web.BaseRequest) -> URL:
        # aiohttp's ws_connect takes http(s) URLs as well.
        return URL(self._upstream + request.raw_path, encoded=True)

    def _request_headers(self, request: web.BaseRequest, drop: frozenset[str]) -> CIMultiDict[str]:
        named = {
            token.strip().lower()
            for value in request.headers.getall("Connection", [])
            for token in value.split(",")
        }
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in named or lower in drop:
                continue
            if self.settings.x_forwarded and lower.startswith("x-forwarded-"):
                continue
            headers.add(name, value)
        if self.settings.x_forwarded:
            if request.remote:
                headers["X-Forwarded-For"] = request.remote
            headers["X-Forwarded-Proto"] = "https" if request.secure else "http"
            if request.host:
                headers["X-Forwarded-Host"] = request.host
        return headers

    @staticmethod
    def _response_headers(headers: CIMultiDictProxy[str]) -> CIMultiDict[str]:
        named = {
            token.strip().lower()
            for value in headers.getall("Connection", [])
            for token in value.split(",")
        }
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in headers.items():
            lower = name.lower()
            if lower not in HOP_BY_HOP and lower not in named:
                out.add(name, value)
        return out

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        return await self._http(request)

    # ---- plain HTTP ----------------------------------------------------------------
    async def _http(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = self._request_headers(request, frozenset())
        form: dict[str, str] | None = None
        data: Any = request.content if request.body_exists else None
        if self.settings.record and request.method == "POST" and request.path == self._launch_path:
            body = await request.read()
            data = body
            if request.content_type == "application/x-www-form-urlencoded":
                form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            upstream = await self._session.request(
                request.method,
                self._upstream_url(request),
                headers=headers,
                data=data,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("upstream unreachable for %s %s: %s", request.method, request.path, exc)
            return web.Response(status=502, text="Bad gateway: the hub's proxy does not answer.\n")
        async with upstream:
            if form is not None:
                self._bind_launch(form, upstream)
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=self._response_headers(upstream.headers),
            )
            await response.prepare(request)
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            await response.write_eof()
            return response

    def _bind_launch(self, form: dict[str, str], upstream: aiohttp.ClientResponse) -> None:
        """Remember the launch for its user if the hub accepted it."""
        if upstream.status >= 400 or self.settings.login_cookie not in upstream.cookies:
            return
        user = hub_user_name(form, self.settings.username_key)
        if not user:
            return
        try:
            launch = launch_from_form(form, self.settings.allowed_moodle_urls)
        except LaunchRejected as exc:
            self.stats.launches_refused += 1
            log.warning("launch of %s: no learning log: %s", user, exc)
            launch = None
        self.registry.remember(user, launch)
        if launch is not None:
            self.stats.launches_bound += 1
            log.info(
                "launch of %s bound to Moodle %s (activity %s, LTI %s)",
                user,
                launch.endpoint(),
                launch.inst_id,
                launch.lti_id,
            )

    # ---- websockets ----------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        offered = [
            token.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", [])
            for token in value.split(",")
            if token.strip()
        ]
        headers = self._request_headers(request, WS_HANDSHAKE)
        try:
            upstream = await self._session.ws_connect(
                self._upstream_url(request),
                headers=headers,
                protocols=offered,
                autoping=True,
                max_msg_size=self.settings.max_ws_message,
                compress=0,
            )
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text=f"{exc.message}\n")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("upstream websocket unreachable for %s: %s", request.path, exc)
            return web.Response(status=502, text="Bad gateway: the hub's proxy does not answer.\n")
        chosen = upstream.protocol
        downstream = web.WebSocketResponse(
            protocols=(chosen,) if chosen else (),
            autoping=True,
            max_msg_size=self.settings.max_ws_message,
        )
        try:
            await downstream.prepare(request)
        except Exception:
            await upstream.close()
            raise
        observer = self._observer(request, chosen or "")
        await self._relay(downstream, upstream, observer)
        return downstream

    def _observer(self, request: web.Request, protocol: str) -> ChannelObserver | None:
        match = self._kernel_path.match(request.path)
        if match is None:
            return None
        self.stats.kernel_sockets += 1
        if not self.settings.record or self.sink is None:
            return None
        launch = self.registry.lookup(match["user"].lower())
        if launch is None:
            return None
        self.stats.observed_sockets += 1
        observer = ChannelObserver(launch, protocol, self.sink.submit, self.stats)
        session = request.query.get("session_id", "")
        if session:
            observer.opened(session)
        return observer

    async def _relay(
        self,
        downstream: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse,
        observer: ChannelObserver | None,
    ) -> None:
        async def pump(
            source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
            sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
            observe: Callable[[str | bytes], None] | None,
            observe_first: bool,
        ) -> None:
            async for message in source:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break  # ERROR: the library already failed the connection
                if observe is not None and observe_first:
                    observe(message.data)
                if message.type is WSMsgType.TEXT:
                    await sink.send_str(message.data)
                else:
                    await sink.send_bytes(message.data)
                if observe is not None and not observe_first:
                    observe(message.data)
            await sink.close(code=_close_code(source.close_code))

        # Browser frames are observed before they go on: the request's record is queued
        # before the kernel can have answered it (records keep their order per session).
        to_kernel = asyncio.create_task(
            pump(downstream, upstream, observer.from_client if observer else None, True)
        )
        to_browser = asyncio.create_task(
            pump(upstream, downstream, observer.from_kernel if observer else None, False)
        )
        tasks = {to_kernel, to_browser}
        try:
            # One side closed: its pump closed the other side, so the second pump ends too.
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if pending:
                await asyncio.wait(pending, timeout=self.settings.connect_timeout)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.debug("websocket relay ended: %r", result)
            await upstream.close()
            await downstream.close()
