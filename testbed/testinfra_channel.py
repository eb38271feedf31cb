"""One long-lived command channel per test host for testinfra's ``docker`` backend.

testinfra runs every ``host.run`` (and every ``host.file``, ``host.service`` ... check) as a
new ``docker exec``: a Docker CLI process, a round trip through dockerd and containerd, and
runc's three processes, before the command itself starts. On the test bed's virtual machine
a process costs a lot: measured on this machine, 100 ``docker exec`` of ``test -e`` took
8.5 s of CPU, the same 100 commands through one kept-open ``docker exec -i`` 0.45 s, and the
scenarios' tests make thousands of such calls.

So :func:`install` replaces ``DockerBackend.run`` with a version that keeps, per container
and user, a ``docker exec -i <container> python3 -c SERVER`` open and sends it the commands.
What a test sees is what ``docker exec <container> /bin/sh -c <command>`` gives: the
container's environment and working directory, no standard input, the exit status (128 + N
for a command killed by signal N), stdout and stderr apart, and the result as soon as the
command has exited, even when it left a background process holding its output open (docker
then waits at most about 2 s for the output to close; so does the server). A channel that
died (its container restarted, its server killed) is started again for the next command;
one that dies during a command fails that command loudly, as it cannot tell what ran.

Loaded by ``molecule/conftest.py`` for every scenario's tests; nothing of it runs in
production.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import IO, Any

# Runs inside the test host with its own python3 (every test host has one: Ansible needs it).
# Kept to what Python 3.6 has. One request per line: {"cmd": base64 of the command}; one
# reply per line: [exit status, base64 stdout, base64 stderr].
SERVER = r"""
import base64, json, os, selectors, subprocess, sys, time

def run(command):
    proc = subprocess.Popen([b"/bin/sh", b"-c", command], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks = {proc.stdout: [], proc.stderr: []}
    selector = selectors.DefaultSelector()
    for stream in chunks:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    deadline = None
    while selector.get_map():
        if deadline is None and proc.poll() is not None:
            deadline = time.monotonic() + 2.0  # as docker exec: output may lag the exit
        timeout = 0.05 if deadline is None else max(0.0, deadline - time.monotonic())
        if deadline is not None and timeout == 0.0:
            break
        for key, _ in selector.select(timeout):
            data = os.read(key.fileobj.fileno(), 65536)
            if data:
                chunks[key.fileobj].append(data)
            else:
                selector.unregister(key.fileobj)
    for stream in chunks:
        stream.close()
    status = proc.wait()
    return [128 - status if status < 0 else status] + [
        base64.b64encode(b"".join(chunks[s])).decode() for s in (proc.stdout, proc.stderr)]

out = sys.stdout.buffer
out.write(b"ready\n")
out.flush()
for line in sys.stdin.buffer:
    reply = run(base64.b64decode(json.loads(line.decode())["cmd"]))
    out.write(json.dumps(reply).encode() + b"\n")
    out.flush()
"""


class ChannelError(RuntimeError):
    """The channel could not start, or died during a command."""


class Channel:
    """One server process reached through ``argv`` (``docker exec -i ... python3 -c``)."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self._errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(  # noqa: S603 - our own argument list
            [*self.argv, SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        if self._readline() != b"ready\n":
            self.proc.wait()
            message = f"{' '.join(self.argv[:-2])}: no server ({self._stderr()})"
            self.close()
            raise ChannelError(message)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, command: bytes) -> tuple[int, bytes, bytes]:
        """Run ``command`` with /bin/sh -c; raise BrokenPipeError if the server had gone."""
        assert self.proc.stdin is not None
        request = json.dumps({"cmd": base64.b64encode(command).decode()}).encode() + b"\n"
        self.proc.stdin.write(request)
        self.proc.stdin.flush()
        line = self._readline()
        if not line:
            raise ChannelError(
                f"the channel ({' '.join(self.argv[:-2])}) closed during a command, which may"
                f" or may not have run: {command!r} ({self._stderr()})")
        status, stdout, stderr = json.loads(line)
        return int(status), base64.b64decode(stdout), base64.b64decode(stderr)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._errors.close()

    def _readline(self) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline()

    def _stderr(self) -> str:
        self._errors.seek(0)
        return self._errors.read().decode("utf-8", "replace").strip()[-500:] or "no message"


class Pool:
    """Idle channels per key; a command takes one (or starts one) and gives it back.

    Two threads of a test running commands on one host at once get two channels, so they
    run side by side as two ``docker exec`` would.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, ...], list[Channel]] = {}
        self._all: list[Channel] = []

    def run(self, argv: Sequence[str], command: bytes) -> tuple[int, bytes, bytes]:
        key = tuple(argv)
        channel = self._take(key)
        try:
            try:
                result = channel.run(command)
            except BrokenPipeError:
                # The server had gone before it read the request (its container restarted,
                # say): the command did not run. Once more on a new channel.
                self._drop(channel)
                channel = self._take(key)
                result = channel.run(command)
        except ChannelError:
            self._drop(channel)
            raise
        self._give(key, channel)
        return result

    def close(self) -> None:
        with self._lock:
            channels, self._all, self._idle = self._all, [], {}
        for channel in channels:
            channel.close()

    def _take(self, key: tuple[str, ...]) -> Channel:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            while idle:
                channel = idle.pop()
                if channel.alive():
                    return channel
                self._all.remove(channel)
                channel.close()
        channel = Channel(key)
        with self._lock:
            self._all.append(channel)
        return channel

    def _drop(self, channel: Channel) -> None:
        """Forget and close a channel that failed."""
        with self._lock:
            if channel in self._all:
                self._all.remove(channel)
        channel.close()

    def _give(self, key: tuple[str, ...], channel: Channel) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(channel)


POOL = Pool()


def docker_argv(container: str, user: str | None) -> list[str]:
    """The command that opens a channel to ``container`` (as ``user`` when given)."""
    return ["docker", "exec", "-i", *(["-u", user] if user else []), container,
            "python3", "-c"]


def install() -> None:
    """Make testinfra's docker backend run its commands through :data:`POOL`."""
    from testinfra.backend import base, docker  # type: ignore[import-untyped]

    def run(self: Any, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        encoded = self.encode(self.get_command(command, *args))
        status, stdout, stderr = POOL.run(docker_argv(self.name, self.user), encoded)
        return self.result(status, encoded, stdout, stderr)

    docker.DockerBackend.run = run
    atexit.register(POOL.close)
