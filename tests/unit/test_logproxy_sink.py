"""Delivery to a fake Moodle on loopback: body, retries with back-off, drops, refusals."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ltihub.logproxy_records import LaunchInfo, ltictr_record
from ltihub.logproxy_sink import MoodleSink, SinkSettings

TOKEN = "feedfacefeedfacefeedfacefeedface"  # noqa: S105 - test value


@dataclass
class FakeMoodle:
    """Answers write_nblogs calls; ``statuses`` are used up first, then 200."""

    statuses: list[int] = field(default_factory=list)
    body: str = "null"
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.calls.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "form": dict(form),
                "type": request.content_type,
            }
        )
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text=self.body)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/moodle/webservice/rest/server.php", self.handle)
        return app


def ours(caplog: pytest.LogCaptureFixture) -> str:
    """Our log lines (the fake Moodle's own access log shows its URLs, as Moodle's does)."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ltihub"))


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def launch_for(server: TestServer) -> LaunchInfo:
    return LaunchInfo("3", "4", str(server.make_url("/")).rstrip("/"), "/moodle", TOKEN)


async def with_moodle(moodle: FakeMoodle, body: Callable[[TestServer], Awaitable[None]]) -> None:
    server = TestServer(moodle.app(), host="127.0.0.1")
    await server.start_server()
    try:
        await body(server)
    finally:
        await server.close()


def test_one_post_per_record_with_the_documented_body() -> None:
    moodle = FakeMoodle()

    async def body(server: TestServer) -> None:
        sink = MoodleSink(SinkSettings(workers=1))
        await sink.start()
        assert sink.submit(launch_for(server), ltictr_record(launch_for(server), "s1"))
        await sink.drain()
        await sink.close()
        assert sink.stats.sent == 1

    run(with_moodle(moodle, body))
    [call] = moodle.calls
    assert call["query"] == {"wsfunction": "mod_lticontainer_write_nblogs", "wstoken": TOKEN}
    assert call["type"] == "application/x-www-form-urlencoded"
    assert call["form"] == {
        "nb_logs[0][host]": "ltictr",
        "nb_logs[0][inst_id]": "3",
        "nb_logs[0][lti_id]": "4",
        "nb_logs[0][session]": "s1",
    }


def test_server_errors_are_retried_with_backoff() -> None:
    moodle = FakeMoodle(statuses=[503, 500])
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def body(server: TestServer) -> None:
        sink = MoodleSink(SinkSettings(workers=1, backoff_initial=1.0, max_attempts=5), sleep)
        await sink.start()
        sink.submit(launch_for(server), ltictr_record(launch_for(server), "s1"))
        await sink.drain()
        await sink.close()
        assert (sink.stats.sent, sink.stats.retried, sink.stats.dropped) == (1, 2, 0)

    run(with_moodle(moodle, body))
    assert len(moodle.calls) == 3
    assert len(delays) == 2
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0


def test_refusal_by_moodle_is_not_retried_and_token_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    moodle = FakeMoodle(
        body='<EXCEPTION class="moodle_exception"><ERRORCODE>invalidtoken</ERRORCODE>'
        "<MESSAGE>Invalid token - token not found</MESSAGE></EXCEPTION>"
    )

    async def body(server: TestServer) -> None:
        sink = MoodleSink(SinkSettings(workers=1), no_sleep)
        await sink.start()
        sink.submit(launch_for(server), ltictr_record(launch_for(server), "s1"))
        await sink.drain()
        await sink.close()
        assert (sink.stats.sent, sink.stats.rejected, sink.stats.retried) == (0, 1, 0)

    with caplog.at_level(logging.DEBUG):
        run(with_moodle(moodle, body))
    assert len(moodle.calls) == 1
    assert "invalidtoken" in ours(caplog)
    assert TOKEN not in ours(caplog)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_moodle_down_drops_with_a_counted_warning(caplog: pytest.LogCaptureFixture) -> None:
    launch = LaunchInfo("3", "4", f"http://127.0.0.1:{_closed_port()}", "", TOKEN)

    async def main() -> None:
        sink = MoodleSink(SinkSettings(workers=1, max_attempts=3, queue_size=2), no_sleep)
        await sink.start()
        results = [sink.submit(launch, ltictr_record(launch, f"s{i}")) for i in range(5)]
        assert results == [True, True, False, False, False]  # bounded queue, never waits
        await sink.drain()
        await sink.close()
        assert sink.stats.dropped_queue_full == 3
        assert sink.stats.dropped_gave_up == 2
        assert sink.stats.retried == 4
        assert sink.stats.sent == 0

    with caplog.at_level(logging.DEBUG):
        run(main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "dropped: 5" in warnings[-1].getMessage()
    assert TOKEN not in ours(caplog)


def test_submit_returns_at_once_while_moodle_hangs() -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="null")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/webservice/rest/server.php", slow)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        launch = LaunchInfo("1", "2", str(server.make_url("/")).rstrip("/"), "", TOKEN)
        sink = MoodleSink(SinkSettings(workers=1, timeout=30))
        await sink.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(100):
            sink.submit(launch, ltictr_record(launch, f"s{i}"))
        assert loop.time() - started < 1.0
        await asyncio.sleep(0.05)
        assert sink.pending() >= 98  # one or two in flight, the rest waiting
        release.set()
        await sink.drain()
        await sink.close()
        await server.close()
        assert sink.stats.sent == 100

    run(main())
