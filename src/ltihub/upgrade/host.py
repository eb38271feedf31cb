"""How the program touches the host: commands, pipelines and HTTP requests.

All three are behind small protocols so that the unit tests drive the whole state machine
with fakes. The real implementations never use a shell, never put a secret in argv (the
database password is in a defaults-extra-file or PGPASSFILE named by the configuration) and
keep only the tail of each command's stderr for the messages.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol

STDERR_TAIL = 2000
CHUNK = 1 << 20


@dataclass(frozen=True)
class Cmd:
    """One command: argv (no shell), extra environment, optional stdout file (mode 0600)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stdout_file: str = ""
    timeout: float | None = None

    def __str__(self) -> str:
        return " ".join(self.argv)


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str = ""
    stderr: str = ""


class CommandFailed(Exception):
    """A command ended with a non-zero status (message: what ran and its stderr's tail)."""

    def __init__(self, cmd: Cmd | str, result: Result) -> None:
        self.cmd = str(cmd)
        self.result = result
        detail = (result.stderr.strip() or result.stdout.strip())[-600:]
        super().__init__(f"`{self.cmd}` failed (exit {result.rc}): {detail}")

    @property
    def no_space(self) -> bool:
        text = self.result.stderr + self.result.stdout
        return any(
            m in text for m in ("No space left on device", "Errcode: 28", "errno: 28", "is full")
        )


class Runner(Protocol):
    """Runs commands on the Moodle host."""

    def run(self, cmd: Cmd, *, check: bool = True) -> Result: ...

    def pipe(
        self, producer: Cmd, consumer: Cmd, *, tap: Callable[[bytes], bool] | None = None
    ) -> Result:
        """producer | consumer; ``tap`` sees the stream until it returns False."""
        ...


class Http(Protocol):
    def get(
        self, url: str, *, headers: Mapping[str, str], address: str = "", timeout: float = 30
    ) -> tuple[int, Mapping[str, str], str]:
        """GET ``url`` (optionally connecting to ``address`` instead of the URL's host)."""
        ...


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - STDERR_TAIL))
    return handle.read().decode("utf-8", "replace")


def _open_private(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


class SubprocessRunner:
    """The real thing: subprocess without a shell."""

    def run(self, cmd: Cmd, *, check: bool = True) -> Result:
        out_fd = _open_private(cmd.stdout_file) if cmd.stdout_file else None
        try:
            proc = subprocess.run(  # noqa: S603 - argv from the root-only configuration
                list(cmd.argv),
                env=_env(cmd.env),
                stdout=out_fd if out_fd is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                timeout=cmd.timeout,
                check=False,
            )
        finally:
            if out_fd is not None:
                os.close(out_fd)
        result = Result(
            proc.returncode,
            (proc.stdout or b"").decode("utf-8", "replace"),
            proc.stderr.decode("utf-8", "replace")[-STDERR_TAIL:],
        )
        if check and result.rc != 0:
            raise CommandFailed(cmd, result)
        return result

    def pipe(
        self, producer: Cmd, consumer: Cmd, *, tap: Callable[[bytes], bool] | None = None
    ) -> Result:
        out_fd = _open_private(consumer.stdout_file) if consumer.stdout_file else None
        with tempfile.TemporaryFile() as err1, tempfile.TemporaryFile() as err2:
            prod = subprocess.Popen(  # noqa: S603
                list(producer.argv), env=_env(producer.env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err1,
            )
            cons = subprocess.Popen(  # noqa: S603
                list(consumer.argv), env=_env(consumer.env), stdin=subprocess.PIPE,
                stdout=out_fd if out_fd is not None else subprocess.DEVNULL, stderr=err2,
            )
            assert prod.stdout is not None and cons.stdin is not None
            tapping = tap is not None
            try:
                while chunk := prod.stdout.read(CHUNK):
                    if tapping and tap is not None:
                        tapping = tap(chunk)
                    cons.stdin.write(chunk)
            except BrokenPipeError:
                prod.kill()
            finally:
                with contextlib.suppress(BrokenPipeError):
                    cons.stdin.close()
                prod.stdout.close()
                rc1 = prod.wait()
                rc2 = cons.wait()
                if out_fd is not None:
                    os.close(out_fd)
            if rc2 != 0:
                raise CommandFailed(consumer, Result(rc2, "", _tail(err2)))
            if rc1 != 0:
                raise CommandFailed(producer, Result(rc1, "", _tail(err1)))
            return Result(0, "", _tail(err2))


class UrllibHttp:
    """GET over http/https with http.client; ``address`` overrides where to connect."""

    def __init__(self, ca_file: str = "") -> None:
        self.ca_file = ca_file

    def get(
        self, url: str, *, headers: Mapping[str, str], address: str = "", timeout: float = 30
    ) -> tuple[int, Mapping[str, str], str]:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        default_port = 443 if parts.scheme == "https" else 80
        connect_host, _, port_text = (address or f"{host}:{parts.port or default_port}").rpartition(
            ":"
        )
        port = int(port_text)
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file or None)
            if self.ca_file:
                # A pinned certificate (the proxy's self-signed one) is its own trust anchor;
                # Python 3.13's strict X.509 checks would refuse it for lacking CA extensions.
                context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
            conn = _SniHTTPSConnection(connect_host, port, sni=host, context=context,
                                       timeout=timeout)
        else:
            conn = http.client.HTTPConnection(connect_host, port, timeout=timeout)
        try:
            conn.request("GET", parts.path or "/", headers={"Host": parts.netloc, **headers})
            resp = conn.getresponse()
            body = resp.read(200_000).decode("utf-8", "replace")
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
        finally:
            conn.close()


class _SniHTTPSConnection(http.client.HTTPSConnection):
    """Connects to one address but checks the certificate of the public host name."""

    def __init__(self, host: str, port: int, *, sni: str, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._sni = sni
        self._ctx = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni)


def argv(*parts: str | Sequence[str]) -> tuple[str, ...]:
    """Flatten strings and argv fragments into one argv tuple."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        else:
            out.extend(part)
    return tuple(out)
