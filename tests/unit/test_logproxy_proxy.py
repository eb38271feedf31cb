"""End to end on loopback: browser -> log proxy -> fake CHP/hub/kernel, records -> fake Moodle."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ltihub.logproxy import Config, build_proxy
from ltihub.logproxy_proxy import LogProxy
from ltihub.logproxy_records import LaunchInfo, Record
from ltihub.logproxy_sink import MoodleSink, SinkSettings
from ltihub.logproxy_wire import V1_PROTOCOL, decode_frame, encode_v1

TOKEN = "c0ffeec0ffeec0ffeec0ffeec0ffee00"  # noqa: S105 - test value
KERNEL = "/user/alice/api/kernels/k1/channels"
ZIPPED = gzip.compress(b"hello " * 100)


@dataclass
class Upstream:
    """Stands in for configurable-http-proxy and everything behind it."""

    seen_headers: list[dict[str, str]] = field(default_factory=list)
    seen_bodies: list[bytes] = field(default_factory=list)
    frames: list[str | bytes] = field(default_factory=list)

    async def launch(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("oauth_signature") != "good":
            return web.Response(status=403, text="signature")
        response = web.Response(status=302, headers={"Location": "/hub/spawn"})
        response.set_cookie("jupyterhub-hub-login", "x", secure=True, httponly=True)
        return response

    async def echo(self, request: web.Request) -> web.Response:
        self.seen_headers.append(dict(request.headers))
        self.seen_bodies.append(await request.read())
        response = web.Response(body=ZIPPED, headers={"Content-Encoding": "gzip", "X-Up": "1"})
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def kernel(self, request: web.Request) -> web.WebSocketResponse:
        self.seen_headers.append(dict(request.headers))
        ws = web.WebSocketResponse(protocols=(V1_PROTOCOL,), max_msg_size=0)
        await ws.prepare(request)
        protocol = ws.ws_protocol or ""
        async for message in ws:
            data: str | bytes = message.data
            self.frames.append(data)
            try:
                frame = decode_frame(data, protocol)
                is_request = frame.msg_type() == "execute_request"
            except ValueError:
                is_request = False
            if not is_request:
                await (ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data))
                continue
            header = {
                "msg_id": "r-" + frame.header()["msg_id"],
                "msg_type": "execute_reply",
                "session": "kernel-session",
                "username": "alice",
                "date": "2026-05-01T10:00:01Z",
            }
            status = "error" if "raise" in frame.content()["code"] else "ok"
            if protocol == V1_PROTOCOL:
                await ws.send_bytes(
                    encode_v1("shell", header, frame.header(), {}, {"status": status})
                )
            else:
                await ws.send_str(
                    json.dumps(
                        {
                            "channel": "shell",
                            "header": header,
                            "parent_header": frame.header(),
                            "metadata": {},
                            "content": {"status": status},
                        }
                    )
                )
        return ws

    async def forbidden(self, request: web.Request) -> web.Response:
        return web.Response(status=403, text="no")

    async def terminal(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo:" + message.data)
        return ws

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hub/lti/launch", self.launch)
        app.router.add_get(KERNEL, self.kernel)
        app.router.add_get("/user/bob/api/kernels/k1/channels", self.forbidden)
        app.router.add_get("/user/alice/terminals/websocket/1", self.terminal)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app


@dataclass
class Moodle:
    records: list[dict[str, str]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.tokens.append(request.query["wstoken"])
        form = await request.post()
        self.records.append({k[len("nb_logs[0][") : -1]: str(v) for k, v in form.items()})
        return web.Response(text="null")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webservice/rest/server.php", self.handle)
        return app


@dataclass
class Bed:
    proxy: LogProxy
    url: Callable[[str], str]
    moodle_url: str
    upstream: Upstream
    moodle: Moodle
    session: aiohttp.ClientSession


@asynccontextmanager
async def bed(**config: Any) -> AsyncIterator[Bed]:
    upstream, moodle = Upstream(), Moodle()
    up_server = TestServer(upstream.app(), host="127.0.0.1")
    moodle_server = TestServer(moodle.app(), host="127.0.0.1")
    await up_server.start_server()
    await moodle_server.start_server()
    config.setdefault("upstream_url", str(up_server.make_url("")).rstrip("/"))
    sink = config.pop("sink", None)
    proxy = build_proxy(Config(**config))
    if sink is not None:  # the same proxy, with a sink the test controls
        proxy = LogProxy(proxy.settings, proxy.registry, sink)
    proxy_server = TestServer(proxy.app, host="127.0.0.1")
    await proxy_server.start_server()
    session = aiohttp.ClientSession(auto_decompress=False)
    try:
        yield Bed(
            proxy,
            lambda p: str(proxy_server.make_url(p)),
            str(moodle_server.make_url("")).rstrip("/"),
            upstream,
            moodle,
            session,
        )
    finally:
        await session.close()
        await proxy_server.close()
        await up_server.close()
        await moodle_server.close()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())  # type: ignore[arg-type]


async def post_launch(
    session: aiohttp.ClientSession,
    url: str,
    moodle_url: str,
    signature: str = "good",
    user: str = "Alice",
) -> int:
    """POST a launch as Moodle's form makes the browser do it; the hub's status."""
    form = {
        "ext_user_username": user,
        "oauth_signature": signature,
        "custom_lms_sessioninfo": "7,12",
        "custom_lms_serverurl": moodle_url,
        "custom_lms_serverpath": "",
        "custom_lms_rpctoken": TOKEN,
    }
    async with session.post(url, data=form, allow_redirects=False) as response:
        return response.status


async def do_launch(
    b: Bed, signature: str = "good", user: str = "Alice", moodle_url: str = ""
) -> int:
    return await post_launch(
        b.session, b.url("/hub/lti/launch"), moodle_url or b.moodle_url, signature, user
    )


def execute_request(msg_id: str, code: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "session": "sess-1",
            "username": "alice",
            "date": "2026-05-01T10:00:00Z",
        },
        "parent_header": {},
        "metadata": {"cellId": "cell-" + msg_id, "tags": ["codenum: 1"]},
        "content": {"code": code},
    }


def test_kernel_traffic_v1_is_relayed_unchanged_and_recorded() -> None:
    async def test() -> None:
        async with bed() as b:
            assert await do_launch(b) == 302
            async with b.session.ws_connect(
                b.url(KERNEL + "?session_id=sess-1"), protocols=(V1_PROTOCOL, "other")
            ) as ws:
                assert ws.protocol == V1_PROTOCOL  # the upstream's choice, passed through
                sent, replies = [], []
                for msg_id, code in (("m1", "1+1"), ("m2", "raise ValueError")):
                    m = execute_request(msg_id, code)
                    frame = encode_v1("shell", m["header"], {}, m["metadata"], m["content"])
                    sent.append(frame)
                    await ws.send_bytes(frame)
                    replies.append(await ws.receive_bytes(timeout=5))
                await ws.send_bytes(encode_v1("control", {"msg_type": "x"}, {}, {}, {}))
                assert (await ws.receive_bytes(timeout=5))[:8]
            assert b.upstream.frames[:2] == sent  # byte for byte
            assert [decode_frame(r, V1_PROTOCOL).content()["status"] for r in replies] == [
                "ok",
                "error",
            ]
            assert b.proxy.sink is not None
            await asyncio.sleep(0.05)
            await b.proxy.sink.drain()
        records = b.moodle.records
        assert set(b.moodle.tokens) == {TOKEN}
        assert [r["host"] for r in records].count("ltictr") == 1
        assert {"host": "ltictr", "inst_id": "7", "lti_id": "12", "session": "sess-1"} in records
        clients = [r for r in records if r["host"] == "client"]
        servers = [r for r in records if r["host"] == "server"]
        assert sorted(r["message"] for r in clients) == ["m1", "m2"]
        assert clients[0]["tags"] == '["codenum: 1"]'
        assert sorted((r["message"], r["status"], r["session"]) for r in servers) == [
            ("m1", "ok", "sess-1"),
            ("m2", "error", "sess-1"),
        ]

    run(test)


def test_json_text_frames_without_subprotocol() -> None:
    async def test() -> None:
        async with bed() as b:
            await do_launch(b)
            async with b.session.ws_connect(b.url(KERNEL + "?session_id=sess-1")) as ws:
                assert ws.protocol is None
                text = json.dumps(execute_request("m1", "print(1)"))
                await ws.send_str(text)
                reply = json.loads(await ws.receive_str(timeout=5))
                assert reply["parent_header"]["msg_id"] == "m1"
                big = json.dumps({"header": {"msg_type": "comm_msg"}, "pad": "x" * 200_000})
                await ws.send_str(big)  # 64-bit length frame, echoed
                assert await ws.receive_str(timeout=5) == big
                await ws.send_bytes(b"\x00execute_request")  # not a message: relayed, counted
                assert await ws.receive_bytes(timeout=5) == b"\x00execute_request"
            assert b.upstream.frames[0] == text
            await asyncio.sleep(0.05)
            assert b.proxy.sink is not None
            await b.proxy.sink.drain()
        assert sorted(r["host"] for r in b.moodle.records) == ["client", "ltictr", "server"]
        assert b.proxy.stats.decode_errors == 1

    run(test)


def test_no_records_without_an_accepted_launch() -> None:
    async def test() -> None:
        async with bed() as b:
            assert await do_launch(b, signature="forged") == 403
            assert len(b.proxy.registry) == 0
            async with b.session.ws_connect(b.url(KERNEL + "?session_id=s")) as ws:
                await ws.send_str(json.dumps(execute_request("m1", "1")))
                await ws.receive_str(timeout=5)
            await asyncio.sleep(0.05)
        assert b.moodle.records == []
        assert b.proxy.stats.kernel_sockets == 1 and b.proxy.stats.observed_sockets == 0

    run(test)


def test_recording_off_is_a_plain_proxy() -> None:
    async def test() -> None:
        async with bed(record=False) as b:
            await do_launch(b)
            async with b.session.ws_connect(b.url(KERNEL + "?session_id=s")) as ws:
                await ws.send_str(json.dumps(execute_request("m1", "1")))
                await ws.receive_str(timeout=5)
            await asyncio.sleep(0.05)
            assert b.proxy.sink is None and len(b.proxy.registry) == 0
        assert b.moodle.records == []

    run(test)


def test_other_traffic_passes_untouched() -> None:
    async def test() -> None:
        async with bed(x_forwarded=False) as b:
            await do_launch(b)
            async with b.session.put(
                b.url("/user/alice/api/contents/a%20b.txt?x=1&y=%2F"),
                data=b"\x00body\xff" * 1000,
                headers={
                    "X-Custom": "v",
                    "Content-Type": "application/x-thing",
                    "Cookie": "jupyterhub-session-id=abc",
                },
            ) as response:
                assert response.status == 200
                assert await response.read() == ZIPPED  # still gzip-encoded
                assert response.headers["Content-Encoding"] == "gzip"
                assert response.headers["X-Up"] == "1"
                assert len(response.headers.getall("Set-Cookie")) == 2
            async with b.session.get(
                b.url("/hub/api"), headers={"Connection": "X-Drop", "X-Drop": "1"}
            ) as response:
                await response.read()
            async with b.session.ws_connect(b.url("/user/alice/terminals/websocket/1")) as ws:
                await ws.send_str("ls")
                assert await ws.receive_str(timeout=5) == "echo:ls"
            await asyncio.sleep(0.05)
        put_headers, get_headers = b.upstream.seen_headers[0], b.upstream.seen_headers[1]
        assert b.upstream.seen_bodies[0] == b"\x00body\xff" * 1000
        assert put_headers["X-Custom"] == "v"
        assert put_headers["Content-Type"] == "application/x-thing"
        assert put_headers["Cookie"] == "jupyterhub-session-id=abc"
        assert put_headers["Host"].startswith("127.0.0.1:")
        assert "X-Drop" not in get_headers  # named in Connection: hop-by-hop
        assert b.moodle.records == []

    run(test)


def test_forwarded_headers_are_set_by_the_edge() -> None:
    async def test() -> None:
        async with bed() as b:
            response = await b.session.get(b.url("/hub/"), headers={"X-Forwarded-For": "6.6.6.6"})
            response.release()
        headers = b.upstream.seen_headers[0]
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        assert headers["X-Forwarded-Proto"] == "http"

    run(test)


def test_subprotocol_not_offered_by_upstream_is_not_invented() -> None:
    async def test() -> None:
        async with bed() as b:
            async with b.session.ws_connect(b.url(KERNEL), protocols=("foo",)) as ws:
                assert ws.protocol is None
            async with b.session.ws_connect(
                b.url("/user/alice/terminals/websocket/1"), protocols=(V1_PROTOCOL,)
            ) as ws:
                assert ws.protocol is None

    run(test)


def test_upstream_handshake_refusal_and_absence() -> None:
    async def test() -> None:
        async with bed() as b:
            # The single-user server refuses the upgrade: the browser gets its status.
            response = await b.session.get(
                b.url("/user/bob/api/kernels/k1/channels"),
                headers={
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                },
            )
            response.release()
            assert response.status == 403
        async with bed(upstream_url="http://127.0.0.1:9") as b:
            response = await b.session.get(b.url("/hub/"))
            response.release()
            assert response.status == 502

    run(test)


# ---- Moodle unreachable: the notebook keeps working, the proxy reports the drops ---------


def closed_ports(count: int) -> list[int]:
    """Distinct loopback ports nobody listens on (connections to them are refused)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class WatchedSink(MoodleSink):
    """The real sink, noting the records in the order the proxy hands them over."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[Record] = []
        self.most_waiting = 0

    def submit(self, launch: LaunchInfo, record: Record) -> bool:
        self.handed.append(record)
        accepted = super().submit(launch, record)
        self.most_waiting = max(self.most_waiting, self.pending())
        return accepted


async def run_cells(
    ws: aiohttp.ClientWebSocketResponse, count: int
) -> tuple[list[bytes], list[bytes]]:
    sent, replies = [], []
    for n in range(count):
        m = execute_request(f"m{n}", "raise ValueError" if n % 2 else "1+1")
        frame = encode_v1("shell", m["header"], {}, m["metadata"], m["content"])
        sent.append(frame)
        await ws.send_bytes(frame)
        replies.append(await ws.receive_bytes(timeout=5))
    return sent, replies


def test_moodle_unreachable_the_notebook_keeps_working(caplog: pytest.LogCaptureFixture) -> None:
    [moodle_port] = closed_ports(1)
    moodle = f"http://127.0.0.1:{moodle_port}"
    back_off = asyncio.Event()  # retries wait until the cells ran: the queue must fill up

    async def held(_seconds: float) -> None:
        await back_off.wait()

    async def test() -> None:
        sink = WatchedSink(SinkSettings(queue_size=5, workers=2, max_attempts=3), held)
        async with bed(sink=sink) as b:
            assert await do_launch(b, moodle_url=moodle) == 302
            async with b.session.ws_connect(
                b.url(KERNEL + "?session_id=sess-1"), protocols=(V1_PROTOCOL,)
            ) as ws:
                sent, replies = await run_cells(ws, 20)
                # Moodle is down and the sink full: still every frame went through unchanged
                assert b.upstream.frames == sent
                statuses = [decode_frame(r, V1_PROTOCOL).content()["status"] for r in replies]
                assert statuses == ["ok", "error"] * 10
                parents = [decode_frame(r, V1_PROTOCOL).parent_header()["msg_id"] for r in replies]
                assert parents == [f"m{n}" for n in range(20)]
                assert sink.pending() == 5  # bounded: the rest was dropped, not kept
                back_off.set()
                await sink.drain()
            hosts = [r["host"] for r in sink.handed]
            assert hosts == ["ltictr"] + ["client", "server"] * 20  # request before reply
            assert sink.most_waiting == 5
            assert sink.stats.sent == 0
            assert sink.stats.dropped_queue_full > 0 and sink.stats.dropped_gave_up > 0
            assert sink.stats.dropped == len(sink.handed) == sum(b.proxy.stats.records.values())

    with caplog.at_level(logging.DEBUG):
        run(test)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("ltihub")]
    assert any("learning-log records dropped: " in m for m in ours), ours
    assert any(f"dropped: {2 * 20 + 1} " in m for m in ours), ours  # the count, at close
    everything = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert TOKEN not in everything


def test_the_real_program_relays_and_reports_drops_when_moodle_is_down(tmp_path: Path) -> None:
    """``python -m ltihub.logproxy`` as the service runs it, Moodle's port closed."""
    moodle_port, port = closed_ports(2)  # Moodle's stays closed; the proxy listens on port
    moodle = f"http://127.0.0.1:{moodle_port}"

    async def test() -> None:
        upstream = Upstream()
        up_server = TestServer(upstream.app(), host="127.0.0.1")
        await up_server.start_server()
        config = tmp_path / "logproxy.toml"
        config.write_text(
            f'listen_host = "127.0.0.1"\nlisten_port = {port}\n'
            f'upstream_url = "{str(up_server.make_url("")).rstrip("/")}"\n'
            "max_attempts = 2\nbackoff_initial = 0.05\nbackoff_max = 0.1\n"
            "queue_size = 8\nworkers = 2\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LTIHUB_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ltihub.logproxy",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stderr is not None
        log_lines: list[str] = []

        async def wait_for_line(text: str) -> None:
            assert proc.stderr is not None
            while not any(text in line for line in log_lines):
                line = await asyncio.wait_for(proc.stderr.readline(), 20)
                assert line, "the proxy exited:\n" + "".join(log_lines)
                log_lines.append(line.decode())

        try:
            await wait_for_line("learning-log proxy on 127.0.0.1")
            async with aiohttp.ClientSession() as session:
                proxy = f"http://127.0.0.1:{port}"
                assert await post_launch(session, proxy + "/hub/lti/launch", moodle) == 302
                await wait_for_line("launch of alice bound to Moodle")
                async with session.ws_connect(
                    proxy + KERNEL + "?session_id=sess-1", protocols=(V1_PROTOCOL,)
                ) as ws:
                    sent, replies = await run_cells(ws, 4)
                    assert upstream.frames == sent
                    statuses = [decode_frame(r, V1_PROTOCOL).content()["status"] for r in replies]
                    assert statuses == ["ok", "error"] * 2
                    await wait_for_line("learning-log records dropped: ")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(proc.stderr.read(), 20)
            log_lines.append(rest.decode())
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            await up_server.close()
        output = "".join(log_lines)
        # on stopping it reports the totals: all 9 records (1 ltictr, 4+4) dropped
        assert "learning-log records dropped: 9 " in output, output
        assert TOKEN not in output

    run(test)
