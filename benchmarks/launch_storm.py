#!/usr/bin/env python3
"""Fire N concurrent signed LTI 1.1 launches at one hub; print successes and spawn latency.

A benchmark, not a test: it prints figures and never judges them. Each launch is a
different Moodle user (``<prefix>0001`` ...), signed and posted exactly as Moodle does
(``ltihub.launch``), then followed until the user's server is ready, like a browser.

Run it where ``ltihub`` is installed, e.g. on a hub (the hub venv has it):

    LTIHUB_SECRET=... /opt/jupyterhub/bin/python launch_storm.py \
        --url https://localhost/hub/lti/launch --key KEY --ca-file /etc/jupyterhub/tls/hub.crt

Options: --n (default 20), --prefix, --timeout, --custom NAME=VALUE, --stop (stop the
servers afterwards through the hub API, needs --api-token or $LTIHUB_API_TOKEN).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import urllib3

from ltihub.launch import (
    LaunchReport,
    build_launch_params,
    hub_base_from_launch_url,
    parse_custom_pairs,
    run_launch,
    sign_launch,
)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def one_launch(
    args: argparse.Namespace, secret: str, index: int, start: threading.Event
) -> LaunchReport:
    user = f"{args.prefix}{index:04d}"
    params = build_launch_params(
        username=user,
        user_id=str(args.first_user_id + index),
        teacher=False,
        course_id=args.course_id,
        course_title="Benchmark course",
        resource_link_id="1",
        moodle_url=args.moodle_url,
        custom=parse_custom_pairs(args.custom),
    )
    session = requests.Session()
    session.verify = args.ca_file or not args.insecure
    start.wait()
    form = sign_launch(args.url, args.key, secret, params)  # fresh timestamp and nonce
    try:
        return run_launch(
            session,
            url=args.url,
            hub=hub_base_from_launch_url(args.url),
            form=form,
            timeout=args.timeout,
            poll_interval=1.0,
        )
    except requests.RequestException as exc:
        return LaunchReport(result="error", message=f"{type(exc).__name__}: {exc}", user=user)


def stop_servers(args: argparse.Namespace, users: list[str]) -> None:
    token = args.api_token or os.environ.get("LTIHUB_API_TOKEN", "")
    hub = hub_base_from_launch_url(args.url)
    headers = {"Authorization": f"token {token}"}
    for user in users:
        requests.delete(
            f"{hub}/hub/api/users/{user}/server",
            headers=headers,
            verify=args.ca_file or not args.insecure,
            timeout=60,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="launch URL, https://<hub>/hub/lti/launch")
    p.add_argument("--key", default=os.environ.get("LTIHUB_KEY"), help="consumer key")
    p.add_argument("--secret-file", help="file with the shared secret (else $LTIHUB_SECRET)")
    p.add_argument("--n", type=int, default=20, help="concurrent launches (default 20)")
    p.add_argument("--prefix", default="storm", help="user name prefix (default storm)")
    p.add_argument("--first-user-id", type=int, default=5000)
    p.add_argument("--course-id", default="2")
    p.add_argument("--moodle-url", default="https://moodle.example.test")
    p.add_argument("--custom", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--timeout", type=float, default=600.0, help="per launch (default 600 s)")
    p.add_argument("--ca-file")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--stop", action="store_true", help="stop the servers afterwards")
    p.add_argument("--api-token", help="hub API token for --stop (else $LTIHUB_API_TOKEN)")
    args = p.parse_args(argv)
    secret = (
        Path(args.secret_file).read_text(encoding="utf-8").strip()
        if args.secret_file
        else os.environ.get("LTIHUB_SECRET", "")
    )
    if not args.key or not secret:
        p.error("need --key (or $LTIHUB_KEY) and --secret-file (or $LTIHUB_SECRET)")
    if args.insecure:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    start = threading.Event()
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.n) as pool:
        futures = [pool.submit(one_launch, args, secret, i + 1, start) for i in range(args.n)]
        time.sleep(0.5)  # every worker is waiting: release them together
        start.set()
        reports = [f.result() for f in futures]
    wall = time.monotonic() - t0

    ok = [r for r in reports if r.result == "ok"]
    latencies = [r.seconds for r in ok if r.seconds is not None]
    print(f"hub:          {hub_base_from_launch_url(args.url)}")
    print(f"launches:     {args.n} concurrent")
    print(f"succeeded:    {len(ok)}/{args.n}")
    failures: dict[str, int] = {}
    for r in reports:
        if r.result != "ok":
            key = f"{r.result}: {r.message}"
            failures[key] = failures.get(key, 0) + 1
    for what, count in sorted(failures.items()):
        print(f"  failed x{count}: {what}")
    if latencies:
        print(
            "spawn latency (launch POST -> server ready), seconds: "
            f"p50 {percentile(latencies, 50):.1f}  p95 {percentile(latencies, 95):.1f}  "
            f"max {max(latencies):.1f}  mean {statistics.mean(latencies):.1f}"
        )
    print(f"wall time:    {wall:.1f} s")
    if args.stop:
        stop_servers(args, [r.user for r in reports if r.user])
        print("servers stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
