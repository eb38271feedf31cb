"""PHP-FPM's status page, read for the drain of the freeze: which requests that began before
maintenance went on are still running.

The pool answers its status page on a socket of its own (``pm.status_listen``, set by the php
role), which no web server proxies to: the full status lists every running request's URI,
query string included (session keys). ``cgi-fcgi`` (libfcgi's client) sends the one FastCGI
request; its output is the page with CGI headers.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import Any

from .host import Cmd, Runner, argv

STATUS_PATH = "/fpm-status"


@dataclass(frozen=True)
class Busy:
    """A worker running a request: since how long (seconds) and which script (no URI)."""

    pid: int
    seconds: float
    script: str


def status_cmd(socket: str, client: str = "cgi-fcgi") -> Cmd:
    """The FastCGI request for the full status in JSON, in the environment (not argv)."""
    return Cmd(
        argv(client, "-bind", "-connect", socket),
        env={"SCRIPT_NAME": STATUS_PATH, "SCRIPT_FILENAME": STATUS_PATH,
             "REQUEST_METHOD": "GET", "QUERY_STRING": "json&full"},
        timeout=5.0,
    )


class StatusUnreadable(Exception):
    """The status page could not be read or understood (a sentence)."""


def parse_status(output: str) -> list[Busy]:
    """The running requests of a ``json&full`` status page (CGI headers first)."""
    head, sep, body = output.replace("\r\n", "\n").partition("\n\n")
    if not sep:
        raise StatusUnreadable("no status page in the answer")
    status_line = next((h for h in head.split("\n") if h.lower().startswith("status:")), "")
    if status_line and not status_line.split(":", 1)[1].strip().startswith("200"):
        raise StatusUnreadable(f"the pool answered {status_line.split(':', 1)[1].strip()} "
                               "(is pm.status_path the same?)")
    try:
        page: Any = json.loads(body)
    except json.JSONDecodeError as error:
        raise StatusUnreadable(f"the status page is not JSON: {error}") from error
    processes = page.get("processes") if isinstance(page, dict) else None
    if not isinstance(processes, list):
        raise StatusUnreadable("the status page lists no processes (not the full status?)")
    busy = []
    for p in processes:
        if not isinstance(p, dict) or p.get("state") != "Running":
            continue
        try:
            seconds = float(p.get("request duration", 0)) / 1e6  # microseconds
            pid = int(p.get("pid", 0))
        except (TypeError, ValueError) as error:
            raise StatusUnreadable(f"a process entry is malformed: {error}") from error
        busy.append(Busy(pid, seconds, str(p.get("script", "-"))))
    return busy


def read_status(runner: Runner, socket: str) -> list[Busy]:
    """The running requests, read from the pool's status socket; StatusUnreadable when
    cgi-fcgi is missing, hangs or fails, or the answer is not the full status."""
    try:
        result = runner.run(status_cmd(socket), check=False)
    except (OSError, subprocess.TimeoutExpired) as error:  # no cgi-fcgi, a hang
        raise StatusUnreadable(str(error)) from error
    if result.rc != 0:
        raise StatusUnreadable(f"cgi-fcgi exited {result.rc}: {result.stderr.strip()[-200:]}")
    return parse_status(result.stdout)


# A request counts as begun before the freeze when it has run at least this much less than
# the time since: the status page and the clock are read a moment apart.
MARGIN = 0.05


def begun_before(busy: list[Busy], frozen_for: float) -> list[Busy]:
    """The requests of ``busy`` that began before the freeze, ``frozen_for`` seconds ago."""
    return [b for b in busy if b.seconds >= frozen_for - MARGIN]
