"""Engine guard: the only container-engine calls Moodle's tunnel may make on a hub.

Moodle's mod_lticontainer reaches a hub's engine through an SSH forward to a Unix
socket (``/var/lib/ltiforward/engine.sock``). This program listens there (systemd
socket activation, or ``--listen``) and passes to the engine's API socket exactly the
calls mod_lticontainer 1.6.3 makes (docker CLI, or podman-remote's libpod API):

- the ping and version calls every client makes first,
- list images, list volumes, list containers,
- create a volume named ``lms_(vol|sub|prs)_...`` with the local driver and no driver
  options (the JSON body is read and checked, then sent on re-encoded),
- remove such a volume,
- stop a container, only if the engine says its name is one of this hub's notebook
  containers (``<prefix>-...``, as ltihub's spawner names them).

Everything else gets HTTP 403 with ``{"message": "refused by the platform's engine
guard: ..."}``, which the docker CLI prints as is. Refusals are logged with the method
and the path (never the query string nor the body). Connection upgrades (attach, exec,
BuildKit sessions) are refused whatever the path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, UnixConnector, web
from yarl import URL

LOG = logging.getLogger("ltihub.engine_guard")

REFUSED = "refused by the platform's engine guard"
# The one body the guard reads (volume create) is a few hundred bytes.
DEFAULT_MAX_BODY = 64 * 1024
# Volumes Moodle may create and remove: mod_lticontainer's task and submission volumes
# and the personal ones (lms_{vol,sub,prs}_<name>_<courseid>_<moodlehost>); the rest of
# the name as the engine itself allows it.
LMS_VOLUME_RE = re.compile(r"lms_(?:vol|sub|prs)_[A-Za-z0-9_.-]{0,200}")
# Docker API version (/v1.41) and Podman's libpod API (/v5.0.0/libpod) prefixes.
_PREFIX = r"(?P<prefix>(?:/v[0-9]{1,2}(?:\.[0-9]{1,3}){0,2})?(?:/libpod)?)"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
_FULL_ID_RE = re.compile(r"[0-9a-f]{64}")
# Request headers passed on to the engine; the rest (Host, Connection, Upgrade, ...) stay.
_REQUEST_HEADERS = ("Accept", "Content-Type", "User-Agent")
# Response headers that describe this hop only.
_HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
    )
)


_STARTED = web.RequestKey("ltihub.engine_guard.started", bool)  # the response has begun


class Refused(Exception):
    """A call the guard does not pass on; the text says what and why."""


@dataclass(frozen=True)
class Call:
    """One request, as the checks see it."""

    method: str
    path: str
    match: re.Match[str]
    body: bytes


@dataclass(frozen=True)
class Forward:
    """What to send to the engine: path (without query) and body."""

    path: str
    body: bytes = b""
    audit: str = ""  # logged at INFO when set (the calls that change something)


Check = Callable[["Guard", Call], Awaitable[Forward]]


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    path: re.Pattern[str]
    what: str
    check: Check | None = None
    takes_body: bool = False


def _rule(
    methods: str, tail: str, what: str, check: Check | None = None, *, body: bool = False
) -> Rule:
    return Rule(frozenset(methods.split()), re.compile(_PREFIX + tail), what, check, body)


# ---- checks of the calls that change something ------------------------------------------


def _string_map(value: object) -> bool:
    return value is None or (
        isinstance(value, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )


def _empty(value: object) -> bool:
    return value is None or value == {}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Refused("the volume create body repeats a key")
    return dict(pairs)


# Each key a volume create body may carry (Docker's and Podman's names), and its check.
_VOLUME_CREATE_KEYS: dict[str, tuple[Callable[[object], bool], str]] = {
    "Name": (lambda v: isinstance(v, str), "must be a string"),
    "Driver": (lambda v: v in (None, "", "local"), "must be the local driver"),
    "DriverOpts": (_empty, "driver options are not allowed (they can bind host paths)"),
    "Options": (_empty, "driver options are not allowed (they can bind host paths)"),
    "Labels": (_string_map, "must map strings to strings"),
    "Label": (_string_map, "must map strings to strings"),
    "IgnoreIfExists": (lambda v: v is None or isinstance(v, bool), "must be true or false"),
    "UID": (lambda v: v is None, "is not allowed"),
    "GID": (lambda v: v is None, "is not allowed"),
}


async def _check_volume_create(guard: Guard, call: Call) -> Forward:
    try:
        data = json.loads(call.body.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused("the volume create body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise Refused("the volume create body is not a JSON object")
    for key, value in data.items():
        if key not in _VOLUME_CREATE_KEYS:
            raise Refused(f"volume create: field {_shown(key)} is not allowed")
        ok, why = _VOLUME_CREATE_KEYS[key]
        if not ok(value):
            raise Refused(f"volume create: {key} {why}")
    name = data.get("Name")
    if not isinstance(name, str) or not LMS_VOLUME_RE.fullmatch(name):
        raise Refused(
            f"only volumes named lms_vol_..., lms_sub_... or lms_prs_... may be created, "
            f"not {_shown(name or '(no name)')}"
        )
    body = json.dumps(data, separators=(",", ":")).encode()
    return Forward(call.path, body, audit=f"create volume {name}")


async def _check_volume_remove(guard: Guard, call: Call) -> Forward:
    name = call.match["name"]
    if not LMS_VOLUME_RE.fullmatch(name):
        raise Refused(
            f"only volumes named lms_vol_..., lms_sub_... or lms_prs_... may be removed, "
            f"not {_shown(name)}"
        )
    return Forward(call.path, audit=f"remove volume {name}")


async def _check_container_stop(guard: Guard, call: Call) -> Forward:
    wanted = call.match["name"]
    status, info = await guard.inspect_container(wanted)
    if status == 404:
        raise Refused(f"no such container: {_shown(wanted)}")
    if status != 200 or not isinstance(info, dict):
        raise Refused(f"the engine could not inspect container {_shown(wanted)} ({status})")
    name = str(info.get("Name") or "").lstrip("/")
    full_id = str(info.get("Id") or "")
    if not guard.notebook_name.fullmatch(name) or not _FULL_ID_RE.fullmatch(full_id):
        raise Refused(
            f"container {_shown(name or wanted)} is not one of this hub's notebook "
            f"containers ({guard.container_prefix}-...)"
        )
    # Stop by the full id just inspected, so a rename in between cannot swap containers.
    path = f"{call.match['prefix']}/containers/{full_id}/stop"
    return Forward(path, audit=f"stop container {name}")


RULES: tuple[Rule, ...] = (
    _rule("GET HEAD", r"/_ping", "ping"),
    _rule("GET", r"/version", "engine version"),
    _rule("GET", r"/images/json", "list images"),
    _rule("GET", r"/volumes(?:/json)?", "list volumes"),
    _rule("POST", r"/volumes/create", "create a volume", _check_volume_create, body=True),
    _rule("DELETE", rf"/volumes/(?P<name>{_NAME})", "remove a volume", _check_volume_remove),
    _rule("GET", r"/containers/json", "list containers"),
    _rule(
        "POST", rf"/containers/(?P<name>{_NAME})/stop", "stop a container", _check_container_stop
    ),
)


def _shown(text: object, limit: int = 120) -> str:
    """A value fit for a log line or a message: quoted, printable, bounded."""
    shown = "".join(c if c.isprintable() else "?" for c in str(text))
    if len(shown) > limit:
        shown = shown[:limit] + "..."
    return repr(shown)


def refusal(reason: str) -> web.Response:
    # Exactly "application/json" (no charset): only then does the docker CLI print just
    # the message instead of the raw body.
    body = json.dumps({"message": f"{REFUSED}: {reason}"}).encode()
    return web.Response(status=403, body=body, content_type="application/json")


class Guard:
    """The aiohttp application state: where the engine is and what a notebook is."""

    def __init__(
        self,
        engine_socket: str,
        container_prefix: str = "jupyterhub",
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.engine_socket = engine_socket
        self.container_prefix = container_prefix
        self.notebook_name = re.compile(re.escape(container_prefix) + r"-[A-Za-z0-9_.-]+")
        self.max_body = max_body
        self._session: ClientSession | None = None

    @property
    def session(self) -> ClientSession:
        if self._session is None:
            self._session = ClientSession(
                connector=UnixConnector(path=self.engine_socket),
                timeout=ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
            )
        return self._session

    async def close(self, _app: web.Application | None = None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def app(self) -> web.Application:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", self.handle)
        application.on_cleanup.append(self.close)
        return application

    async def inspect_container(self, name: str) -> tuple[int, Any]:
        url = URL.build(scheme="http", host="docker", path=f"/containers/{name}/json")
        async with self.session.get(url) as resp:
            if resp.status != 200:
                return resp.status, None
            try:
                return 200, await resp.json(content_type=None)
            except ValueError:
                return 502, None

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body:
            raise Refused(f"the request body is larger than {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self.max_body:
                raise Refused(f"the request body is larger than {self.max_body} bytes")
            chunks.append(chunk)

    async def decide(self, request: web.Request) -> Forward:
        """The call to make on the engine for ``request``, or Refused."""
        method, path = request.method, request.path
        if "upgrade" in request.headers.get("Connection", "").lower() or (
            "Upgrade" in request.headers
        ):
            raise Refused("connection upgrades (attach, exec, build sessions) are not allowed")
        on_path = [(rule, m) for rule in RULES if (m := rule.path.fullmatch(path)) is not None]
        for rule, match in on_path:
            if method not in rule.methods:
                continue
            body = await self._read_body(request)
            if body and not rule.takes_body:
                raise Refused(f"{rule.what} takes no request body")
            if rule.check is None:
                return Forward(path)
            return await rule.check(self, Call(method, path, match, body))
        if on_path:
            allowed = " or ".join(f"{' '.join(sorted(r.methods))} ({r.what})" for r, _ in on_path)
            raise Refused(f"{method} is not allowed here, only {allowed}")
        raise Refused(
            "Moodle may only list images, volumes and containers, create and remove lms_ "
            "volumes and stop notebook containers"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            forward = await self.decide(request)
        except Refused as exc:
            LOG.warning("refused %s %s: %s", request.method, _shown(request.path), exc)
            return refusal(str(exc))
        except ClientError as exc:
            return self.engine_unreachable(request, exc)
        if forward.audit:
            LOG.info("allowed %s", forward.audit)
        try:
            return await self.relay(request, forward)
        except ClientError as exc:
            if request.get(_STARTED):  # mid-stream: drop the connection, the client sees it
                raise
            return self.engine_unreachable(request, exc)

    def engine_unreachable(self, request: web.Request, exc: Exception) -> web.Response:
        LOG.error(
            "engine %s failed for %s %s: %s",
            self.engine_socket,
            request.method,
            _shown(request.path),
            type(exc).__name__,
        )
        body = json.dumps({"message": "engine guard: the container engine did not answer"})
        return web.Response(status=502, body=body.encode(), content_type="application/json")

    async def relay(self, request: web.Request, forward: Forward) -> web.StreamResponse:
        url = URL.build(
            scheme="http",
            host="docker",
            path=forward.path,
            query_string=request.rel_url.raw_query_string,
            encoded=True,
        )
        headers = {h: request.headers[h] for h in _REQUEST_HEADERS if h in request.headers}
        async with self.session.request(
            request.method,
            url,
            headers=headers,
            data=forward.body if forward.body else None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_HEADERS:
                    response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            elif request.method != "HEAD":
                response.enable_chunked_encoding()
            await response.prepare(request)
            request[_STARTED] = True
            if request.method != "HEAD":
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await response.write(chunk)
            await response.write_eof()
            return response


# ---- running it --------------------------------------------------------------------------


def activated_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=3)


async def serve(guard: Guard, listen: str | None) -> None:
    runner = web.AppRunner(guard.app(), access_log=None, handle_signals=False)
    await runner.setup()
    sock = activated_socket()
    if sock is None and not listen:
        await runner.cleanup()
        raise SystemExit("engine guard: no socket from systemd and no --listen path")
    site = web.SockSite(runner, sock) if sock is not None else web.UnixSite(runner, str(listen))
    old_umask = os.umask(0o177)  # a socket made here (--listen) is its owner's alone
    try:
        await site.start()
    finally:
        os.umask(old_umask)
    LOG.info(
        "engine guard up: engine %s, notebook containers %s-...",
        guard.engine_socket,
        guard.container_prefix,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ltihub-engine-guard",
        description="Pass to the container engine only the calls Moodle's mod_lticontainer makes.",
    )
    parser.add_argument("--engine", default="/var/run/docker.sock", help="engine API socket")
    parser.add_argument(
        "--listen", help="Unix socket to listen on (not needed under systemd socket activation)"
    )
    parser.add_argument(
        "--container-prefix", default="jupyterhub", help="notebook container name prefix"
    )
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY, help="bytes")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", args.container_prefix):
        parser.error("--container-prefix must be a container name start")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    guard = Guard(args.engine, args.container_prefix, args.max_body)
    asyncio.run(serve(guard, args.listen))


if __name__ == "__main__":
    main()
