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


async def hanging_moodle(release: asyncio.Event) -> tuple[TestServer, LaunchInfo]:
    """A Moodle whose write_nblogs calls wait until ``release`` is set, and a launch of it."""

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="null")

    app = web.Application()
    app.router.add_post("/webservice/rest/server.php", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, LaunchInfo("1", "2", str(server.make_url("/")).rstrip("/"), "", TOKEN)


def test_submit_returns_at_once_while_moodle_hangs() -> None:
    release = asyncio.Event()

    async def main() -> None:
        server, launch = await hanging_moodle(release)
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


# ---- order per session, parallel sessions --------------------------------------------


def record(session: str, n: int) -> dict[str, str]:
    """The n-th record of a session: requests and replies alternate, as a notebook makes them."""
    host = "client" if n % 2 else "server"
    return {"host": host, "session": session, "message": f"{session}/{n}"}


@dataclass
class RecordingMoodle:
    """Logs when each post arrives and when its answer leaves; answers client records late.

    The first post of each session waits until the first posts of all ``sessions`` are in
    (proof they are posted at the same time); a test with no parallelism gives up waiting
    after ``barrier_timeout`` and notes it.
    """

    sessions: set[str]
    statuses: dict[str, list[int]] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    barrier_missed: bool = False
    barrier_timeout: float = 5.0
    _first_seen: set[str] = field(default_factory=set)
    _all_in: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = str(form["nb_logs[0][session]"])
        message = str(form["nb_logs[0][message]"])
        self.events.append(("arrive", session, message))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if session in self.sessions and session not in self._first_seen:
                self._first_seen.add(session)
                if self._first_seen == self.sessions:
                    self._all_in.set()
                try:
                    await asyncio.wait_for(self._all_in.wait(), self.barrier_timeout)
                except TimeoutError:
                    self.barrier_missed = True
            if form["nb_logs[0][host]"] == "client":
                await asyncio.sleep(0.02)  # the reply's record would overtake this one
            queued = self.statuses.get(message, [])
            status = queued.pop(0) if queued else 200
        finally:
            self.in_flight -= 1
        self.events.append(("answer", session, message))
        return web.Response(status=status, text="null")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/moodle/webservice/rest/server.php", self.handle)
        return app

    def of(self, session: str) -> list[tuple[str, str]]:
        return [(kind, message) for kind, s, message in self.events if s == session]


def sessions_on_distinct_lanes(sink: MoodleSink, launch: LaunchInfo, count: int) -> list[str]:
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        name = f"session-{n}"
        found.setdefault(sink.lane_of(launch, record(name, 0)), name)
        n += 1
    return list(found.values())


def test_records_of_a_session_arrive_in_order_while_sessions_go_in_parallel() -> None:
    async def main() -> None:
        sink = MoodleSink(SinkSettings(workers=4), no_sleep)
        moodle = RecordingMoodle(sessions=set())
        server = TestServer(moodle.app(), host="127.0.0.1")
        await server.start_server()
        try:
            launch = launch_for(server)  # lanes depend on the endpoint: pick sessions now
            sessions = sessions_on_distinct_lanes(sink, launch, 3)
            moodle.sessions = set(sessions)
            await sink.start()
            for n in range(12):  # interleaved, as several notebooks produce them
                for session in sessions:
                    assert sink.submit(launch, record(session, n))
            await sink.drain()
            await sink.close()
        finally:
            await server.close()
        assert sink.stats.sent == 36
        assert not moodle.barrier_missed, "sessions were not posted in parallel"
        assert moodle.most_in_flight >= 2
        for session in sessions:
            expected = [
                step
                for n in range(12)
                for step in (("arrive", f"{session}/{n}"), ("answer", f"{session}/{n}"))
            ]
            # each record arrives only after the previous one of its session was answered
            assert moodle.of(session) == expected

    run(main())


def test_a_retried_or_given_up_record_keeps_its_place() -> None:
    async def main() -> None:
        moodle = RecordingMoodle(sessions=set(), barrier_timeout=0)
        server = TestServer(moodle.app(), host="127.0.0.1")
        await server.start_server()
        try:
            launch = launch_for(server)
            sink = MoodleSink(SinkSettings(workers=2, max_attempts=2), no_sleep)
            moodle.statuses = {"s/1": [503], "s/2": [503, 500]}  # 1 retried, 2 given up
            await sink.start()
            for n in range(4):
                sink.submit(launch, record("s", n))
            await sink.drain()
            await sink.close()
        finally:
            await server.close()
        assert (sink.stats.sent, sink.stats.retried, sink.stats.dropped_gave_up) == (3, 2, 1)
        arrivals = [message for kind, message in moodle.of("s") if kind == "arrive"]
        assert arrivals == ["s/0", "s/1", "s/1", "s/2", "s/2", "s/3"]

    run(main())


def test_the_bound_counts_the_records_waiting_in_all_lanes() -> None:
    moodle = FakeMoodle()

    async def body(server: TestServer) -> None:
        launch = launch_for(server)
        sink = MoodleSink(SinkSettings(workers=4, queue_size=3), no_sleep)
        sessions = sessions_on_distinct_lanes(sink, launch, 4)
        # not started yet: nothing is taken off the lanes
        results = [sink.submit(launch, record(s, 0)) for s in sessions + sessions]
        assert results == [True, True, True] + [False] * 5
        assert sink.pending() == 3
        assert sink.stats.dropped_queue_full == 5
        await sink.start()
        await sink.drain()
        await sink.close()
        assert sink.stats.sent == 3 and sink.pending() == 0

    run(with_moodle(moodle, body))
    assert len(moodle.calls) == 3


def test_drops_held_back_by_the_rate_limit_are_reported_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def main() -> None:
        server, launch = await hanging_moodle(release)
        sink = MoodleSink(SinkSettings(workers=1, queue_size=1, warn_interval=0.2, timeout=30))
        await sink.start()
        sink.submit(launch, record("s", 0))
        await asyncio.sleep(0.05)  # the worker took it and waits for Moodle
        assert sink.submit(launch, record("s", 1))
        assert not sink.submit(launch, record("s", 2))  # warned at once
        assert not sink.submit(launch, record("s", 3))  # held back by the rate limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while "dropped: 2" not in ours(caplog) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert "dropped: 2 " in ours(caplog)  # reported with no further drop, before close
        release.set()
        await sink.close()
        await server.close()

    with caplog.at_level(logging.WARNING):
        run(main())
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ltihub")]
    assert "dropped: 1 " in messages[0]
    assert any("dropped: 2 " in m for m in messages[1:]), messages
