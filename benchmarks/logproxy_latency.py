#!/usr/bin/env python3
"""Added latency of the learning-log proxy per kernel websocket message, and its memory.

A benchmark, not a test: it prints figures and never judges them. Everything runs on
loopback, in separate processes: a fake kernel (aiohttp websocket speaking JupyterLab
4's v1 protocol, answering each ``execute_request`` with an ``execute_reply``); a fake
Moodle that accepts the records; the log proxy twice, recording on (the user bound by a
launch, so each request and reply is decoded and posted) and off; and this client. The client
sends requests at a fixed rate and measures each request -> reply round trip, once
straight to the kernel and once through the proxy.

    .venv/bin/python benchmarks/logproxy_latency.py [--seconds 3] [--connections 200]

Bounded: at most ``--seconds`` per rate and direction, and about a minute in total.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from ltihub.logproxy import Config, build_proxy  # noqa: E402
from ltihub.logproxy_wire import V1_PROTOCOL, decode_frame, encode_v1  # noqa: E402

KERNEL = "/user/bench/api/kernels/k1/channels"
RATES = (100, 500)


# ---- fake kernel + fake Moodle (process 1) --------------------------------------------
async def _kernel(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=(V1_PROTOCOL,), max_msg_size=0)
    await ws.prepare(request)
    async for message in ws:
        if message.type is not aiohttp.WSMsgType.BINARY:
            continue
        frame = decode_frame(message.data, V1_PROTOCOL)
        header = {
            "msg_id": "r",
            "msg_type": "execute_reply",
            "session": "k",
            "username": "u",
            "date": "2026-01-01T00:00:00Z",
        }
        await ws.send_bytes(encode_v1("shell", header, frame.header(), {}, {"status": "ok"}))
    return ws


async def _launch(_request: web.Request) -> web.Response:
    response = web.Response(status=302, headers={"Location": "/hub/spawn"})
    response.set_cookie("jupyterhub-hub-login", "x")
    return response


async def _moodle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="null")


def _serve_upstream(ports: Any) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_get(KERNEL, _kernel)
        app.router.add_post("/hub/lti/launch", _launch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _serve_moodle(ports: Any) -> None:
    async def main() -> None:
        app = web.Application()
        app.router.add_post("/webservice/rest/server.php", _moodle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


# ---- the proxy (process 2) ------------------------------------------------------------
def _serve_proxy(upstream_port: int, record: bool, ports: Any) -> None:
    async def main() -> None:
        proxy = build_proxy(Config(upstream_url=f"http://127.0.0.1:{upstream_port}", record=record))
        runner = web.AppRunner(proxy.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---- the client -------------------------------------------------------------------------
async def measure(url: str, rate: int, seconds: float) -> list[float]:
    """Round trips (ms) of ``rate`` execute_requests per second for ``seconds``."""
    count = int(rate * seconds)
    sent: dict[str, float] = {}
    rtts: list[float] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=(V1_PROTOCOL,), max_msg_size=0) as ws,
    ):

        async def receive() -> None:
            while len(rtts) < count:
                data = await ws.receive_bytes(timeout=10)
                now = time.perf_counter()
                parent = decode_frame(data, V1_PROTOCOL).parent_header()
                rtts.append((now - sent.pop(parent["msg_id"])) * 1000)

        receiver = asyncio.create_task(receive())
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            msg_id = f"m{i}"
            header = {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "session": "s",
                "username": "bench",
                "date": "2026-01-01T00:00:00Z",
            }
            frame = encode_v1(
                "shell",
                header,
                {},
                {"cellId": f"c{i % 20}", "tags": []},
                {"code": "x = 1", "silent": False},
            )
            sent[msg_id] = time.perf_counter()
            await ws.send_bytes(frame)
        await asyncio.wait_for(receiver, timeout=30)
    return rtts


async def hold_connections(url: str, count: int, proxy_pid: int) -> float:
    """KiB of proxy RSS per open (idle) kernel websocket."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        warm = await session.ws_connect(url, protocols=(V1_PROTOCOL,))
        await warm.close()
        await asyncio.sleep(0.3)
        before = _rss_kib(proxy_pid)
        sockets = [await session.ws_connect(url, protocols=(V1_PROTOCOL,)) for _ in range(count)]
        await asyncio.sleep(0.5)
        after = _rss_kib(proxy_pid)
        for ws in sockets:
            await ws.close()
    return (after - before) / count


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def client(
    upstream_port: int, proxy_port: int, plain_port: int, proxy_pid: int, args: Any
) -> None:
    moodle_port = args.moodle_port
    direct = f"http://127.0.0.1:{upstream_port}{KERNEL}?session_id=s"
    proxied = f"http://127.0.0.1:{proxy_port}{KERNEL}?session_id=s"
    plain = f"http://127.0.0.1:{plain_port}{KERNEL}?session_id=s"
    async with aiohttp.ClientSession() as session:
        form = {
            "ext_user_username": "bench",
            "custom_lms_sessioninfo": "1,2",
            "custom_lms_serverurl": f"http://127.0.0.1:{moodle_port}",
            "custom_lms_serverpath": "",
            "custom_lms_rpctoken": "bench-token",
        }
        async with session.post(
            f"http://127.0.0.1:{proxy_port}/hub/lti/launch", data=form, allow_redirects=False
        ) as response:
            assert response.status == 302
    await measure(direct, 100, 0.5)  # warm both paths
    await measure(proxied, 100, 0.5)
    await measure(plain, 100, 0.5)
    print(
        f"{'msg/s':>6} {'path':>22} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'added p50':>10} {'added p99':>10}"
    )
    for rate in RATES:
        base = await measure(direct, rate, args.seconds)
        runs = [
            ("direct to kernel", base),
            ("proxy, recording off", await measure(plain, rate, args.seconds)),
            ("proxy, recording on", await measure(proxied, rate, args.seconds)),
        ]
        for name, values in runs:
            added = (
                f"{pct(values, 0.5) - pct(base, 0.5):>10.3f} "
                f"{pct(values, 0.99) - pct(base, 0.99):>10.3f}"
                if values is not base
                else f"{'-':>10} {'-':>10}"
            )
            print(
                f"{rate:>6} {name:>22} {len(values):>6} {pct(values, 0.5):>8.3f} "
                f"{pct(values, 0.99):>8.3f} {added}"
            )
    per_conn = await hold_connections(proxied, args.connections, proxy_pid)
    print(
        f"proxy memory per open kernel websocket: {per_conn:.1f} KiB "
        f"({args.connections} idle connections, RSS delta)"
    )
    print(
        f"proxy RSS now: {_rss_kib(proxy_pid) / 1024:.1f} MiB; mean direct RTT "
        f"{statistics.mean(base):.3f} ms at {RATES[-1]} msg/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per rate and path (max 10)")
    parser.add_argument("--connections", type=int, default=200, help="for memory (max 1000)")
    args = parser.parse_args()
    args.seconds = min(args.seconds, 10.0)
    args.connections = min(args.connections, 1000)
    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    upstream = context.Process(target=_serve_upstream, args=(ports,), daemon=True)
    upstream.start()
    upstream_port = ports.get(timeout=30)
    moodle = context.Process(target=_serve_moodle, args=(ports,), daemon=True)
    moodle.start()
    args.moodle_port = ports.get(timeout=30)
    proxy = context.Process(target=_serve_proxy, args=(upstream_port, True, ports), daemon=True)
    proxy.start()
    proxy_port = ports.get(timeout=30)
    plain = context.Process(target=_serve_proxy, args=(upstream_port, False, ports), daemon=True)
    plain.start()
    plain_port = ports.get(timeout=30)
    assert proxy.pid is not None
    print(
        f"loopback; cpus {os.cpu_count()}; python {sys.version.split()[0]}; "
        f"aiohttp {aiohttp.__version__}; load average {os.getloadavg()[0]:.2f}"
    )
    try:
        asyncio.run(
            asyncio.wait_for(client(upstream_port, proxy_port, plain_port, proxy.pid, args), 120)
        )
        print(
            f"load average at the end {os.getloadavg()[0]:.2f} (figures on a busy machine "
            "are dominated by scheduling)"
        )
    finally:
        for process in (plain, proxy, moodle, upstream):
            process.terminate()
            process.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
