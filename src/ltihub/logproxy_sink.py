"""Deliver learning-log records to Moodle without ever holding up notebook traffic.

:meth:`MoodleSink.submit` only puts the record on a bounded queue (never waits); a few
worker tasks post from it, retrying with exponential back-off. When the queue is full
or a record ran out of attempts it is dropped and counted, with a warning at most once
a minute. The token travels in the URL's query only, and no log line of this module
shows a URL with a query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from .logproxy_records import LaunchInfo, Record, rest_body

log = logging.getLogger("ltihub.logproxy")

_ERRORCODE = re.compile(
    rb"<ERRORCODE>([a-z0-9_]{1,64})</ERRORCODE>|\"errorcode\":\"([a-z0-9_]{1,64})\""
)


@dataclass
class SinkSettings:
    queue_size: int = 10_000
    workers: int = 2
    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    timeout: float = 10.0
    verify_tls: bool = True
    ca_file: str | None = None
    warn_interval: float = 60.0


@dataclass
class SinkStats:
    queued: int = 0
    sent: int = 0
    retried: int = 0
    rejected: int = 0  # Moodle answered but refused (bad token, 4xx): not retried
    dropped_queue_full: int = 0
    dropped_gave_up: int = 0
    last_error: str = ""
    by_host: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return self.dropped_queue_full + self.dropped_gave_up


class _Retry(Exception):
    """A failure worth another attempt (no answer, 5xx, 429)."""


def make_ssl_context(settings: SinkSettings) -> ssl.SSLContext | bool:
    """Verification on by default; ``ca_file`` for a self-signed or internal-CA Moodle."""
    if not settings.verify_tls:
        return False
    return ssl.create_default_context(cafile=settings.ca_file or None)


def session_key(launch: LaunchInfo, record: Record) -> bytes:
    """What decides a record's lane: the Moodle it goes to and its notebook session.

    ``ltictr`` records carry the websocket's ``session_id``, ``client`` records the
    request's ``header.session`` and ``server`` records the request's session from the
    reply's ``parent_header``; JupyterLab uses one value for all three.
    """
    return f"{launch.endpoint()}\n{record.get('session', '')}".encode("utf-8", "replace")


class MoodleSink:
    """Bounded lanes + one worker each posting ``mod_lticontainer_write_nblogs`` calls."""

    def __init__(
        self,
        settings: SinkSettings | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings or SinkSettings()
        self.stats = SinkStats()
        # One unbounded queue per worker; ``_waiting`` (records queued, not yet taken by
        # their worker) is held under ``queue_size`` by submit().
        self._lanes: list[asyncio.Queue[tuple[LaunchInfo, Record]]] = [
            asyncio.Queue() for _ in range(max(1, self.settings.workers))
        ]
        self._waiting = 0
        self._sleep = sleep
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._last_warning = float("-inf")
        self._last_refusal_warning = float("-inf")
        self._warned_drops = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=make_ssl_context(self.settings), limit=32)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._workers = [
            asyncio.create_task(self._work(lane), name=f"logproxy-sink-{i}")
            for i, lane in enumerate(self._lanes)
        ]
        self._workers.append(asyncio.create_task(self._report(), name="logproxy-sink-report"))

    async def close(self, flush_timeout: float = 5.0) -> None:
        """Give queued records ``flush_timeout`` seconds to go out, then stop."""
        if self._workers and flush_timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), flush_timeout)
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.stats.dropped or self.stats.rejected:
            self._warn(force=True)

    def lane_of(self, launch: LaunchInfo, record: Record) -> int:
        """The worker whose lane takes ``record`` (the same for one session)."""
        return zlib.crc32(session_key(launch, record)) % len(self._lanes)

    def submit(self, launch: LaunchInfo, record: Record) -> bool:
        """Queue one record; False (and counted) when the queue is full. Never blocks."""
        if self._waiting >= self.settings.queue_size:
            self.stats.dropped_queue_full += 1
            self._warn()
            return False
        self._lanes[self.lane_of(launch, record)].put_nowait((launch, record))
        self._waiting += 1
        self.stats.queued += 1
        return True

    def pending(self) -> int:
        """Records queued and not yet taken by a worker (at most ``queue_size``)."""
        return self._waiting

    async def drain(self) -> None:
        """Wait until every queued record was sent, refused or dropped (for tests)."""
        await asyncio.gather(*(lane.join() for lane in self._lanes))

    def _warn(self, force: bool = False) -> None:
        now = time.monotonic()
        dropped = self.stats.dropped
        if not force and (
            dropped == self._warned_drops or now - self._last_warning < self.settings.warn_interval
        ):
            return
        self._last_warning = now
        self._warned_drops = dropped
        log.warning(
            "learning-log records dropped: %d (queue full %d, Moodle unreachable %d), "
            "refused by Moodle %d, sent %d; last error: %s",
            dropped,
            self.stats.dropped_queue_full,
            self.stats.dropped_gave_up,
            self.stats.rejected,
            self.stats.sent,
            self.stats.last_error or "-",
        )

    def _backoff(self, attempt: int) -> float:
        base = min(self.settings.backoff_max, self.settings.backoff_initial * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret

    async def _report(self) -> None:
        """Warn about drops that came while warnings were held back by the rate limit."""
        while True:
            due = self._last_warning + self.settings.warn_interval - time.monotonic()
            await asyncio.sleep(due + 0.01 if due > 0 else max(1.0, self.settings.warn_interval))
            if self.stats.dropped != self._warned_drops:
                self._warn()

    async def _work(self, lane: asyncio.Queue[tuple[LaunchInfo, Record]]) -> None:
        while True:
            launch, record = await lane.get()
            self._waiting -= 1
            try:
                # One record at a time, retries included: the next record of the same
                # session is posted only once this one was answered or given up.
                await self._deliver(launch, record)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let a worker die
                self.stats.last_error = type(exc).__name__
                log.exception("learning-log worker error")
            finally:
                lane.task_done()

    async def _deliver(self, launch: LaunchInfo, record: Record) -> None:
        attempts = max(1, self.settings.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                await self._post(launch, record)
            except _Retry as exc:
                self.stats.last_error = f"{launch.endpoint()}: {exc}"
                if attempt == attempts:
                    break
                self.stats.retried += 1
                await self._sleep(self._backoff(attempt))
                continue
            return
        self.stats.dropped_gave_up += 1
        self._warn()

    async def _post(self, launch: LaunchInfo, record: Record) -> None:
        assert self._session is not None, "MoodleSink.start() not called"
        body = rest_body(record)
        try:
            async with self._session.post(
                launch.rest_url(),
                data=body.encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                allow_redirects=False,
            ) as response:
                payload = await response.content.read(64 * 1024)
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Exception texts of aiohttp name host and port, never the query.
            raise _Retry(type(exc).__name__) from None
        if status >= 500 or status == 429:
            raise _Retry(f"HTTP {status}")
        if status >= 300:
            self._refused(launch, f"HTTP {status}")
            return
        match = _ERRORCODE.search(payload)
        if match:
            code = (match.group(1) or match.group(2)).decode("ascii")
            self._refused(launch, f"Moodle error {code}")
            return
        self.stats.sent += 1
        host = record.get("host", "")
        self.stats.by_host[host] = self.stats.by_host.get(host, 0) + 1

    def _refused(self, launch: LaunchInfo, why: str) -> None:
        self.stats.rejected += 1
        self.stats.last_error = f"{launch.endpoint()}: {why}"
        now = time.monotonic()
        if now - self._last_refusal_warning >= self.settings.warn_interval:
            self._last_refusal_warning = now
            log.warning(
                "Moodle %s refused a learning-log record (%s); refused so far: %d "
                "(check the activity's RPC token and the web service)",
                launch.endpoint(),
                why,
                self.stats.rejected,
            )
