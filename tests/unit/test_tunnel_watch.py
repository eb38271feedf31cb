"""The tunnel watcher ends a forward whose socket file vanished, so systemd restarts it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

WATCH = Path(__file__).resolve().parents[2] / "src" / "ltihub" / "tunnel_watch.py"

# Stands in for `ssh -N -L SOCK:...`: binds the socket after a moment, then waits forever
# (like ssh, it never binds again if the file is deleted).
FAKE_SSH = """
import socket, sys, time
time.sleep(0.3)
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("bound", flush=True)
while True:
    time.sleep(60)
"""


@pytest.fixture
def sock() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="tw", dir="/tmp")
    yield f"{folder}/tunnel.sock"
    shutil.rmtree(folder, ignore_errors=True)


def start(sock: str, *command: str) -> subprocess.Popen[str]:
    """The watcher the way the unit runs it (own file, isolated Python, no package)."""
    cmd = command or (sys.executable, "-c", FAKE_SSH, sock)
    return subprocess.Popen(  # noqa: S603 (this checkout's script, test commands)
        [sys.executable, "-I", str(WATCH), "--interval", "0.2", "--socket", sock, "--", *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_socket(sock: str) -> None:
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        assert time.monotonic() < deadline, "the fake ssh never bound its socket"
        time.sleep(0.05)


def child_pids(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_deleted_socket_ends_the_forward(sock: str) -> None:
    watcher = start(sock)
    wait_for_socket(sock)
    [forward] = child_pids(watcher.pid)
    os.unlink(sock)  # what mod_lticontainer's fallback does
    assert watcher.wait(timeout=10) == 75
    assert "was removed or replaced" in watcher.stderr.read()  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.kill(forward, 0)  # the old forward is gone too


def test_replaced_socket_ends_the_forward(sock: str) -> None:
    watcher = start(sock)
    wait_for_socket(sock)
    os.unlink(sock)
    Path(sock).write_text("not a socket")  # something else took the path
    assert watcher.wait(timeout=10) == 75


def test_killed_forward_ends_the_watcher(sock: str) -> None:
    watcher = start(sock)
    wait_for_socket(sock)
    [forward] = child_pids(watcher.pid)
    os.kill(forward, signal.SIGKILL)
    assert watcher.wait(timeout=10) != 0
    assert "exited with status" in watcher.stderr.read()  # type: ignore[union-attr]


def test_failing_forward_passes_its_status(sock: str) -> None:
    # ssh that cannot reach the hub exits 255 before binding anything.
    watcher = start(sock, sys.executable, "-c", "import sys; sys.exit(255)")
    assert watcher.wait(timeout=10) == 255


def test_healthy_forward_keeps_running(sock: str) -> None:
    watcher = start(sock)
    wait_for_socket(sock)
    time.sleep(1.5)  # several checks
    assert watcher.poll() is None
    watcher.terminate()  # systemd stopping the unit
    assert watcher.wait(timeout=10) == 0


def test_deleted_at_once_after_binding_still_counts(sock: str) -> None:
    # Deleted before the watcher's first look: it sees ssh listening on a missing file.
    watcher = start(sock)
    wait_for_socket(sock)
    os.unlink(sock)
    assert watcher.wait(timeout=10) == 75


def test_stale_socket_of_an_earlier_run_is_not_taken_for_the_new_one(sock: str) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)  # left over, as after a crash
    try:
        watcher = start(sock)
        time.sleep(0.1)
        wait_for_socket(sock)
        time.sleep(1.5)
        assert watcher.poll() is None, watcher.stderr.read()  # type: ignore[union-attr]
        watcher.terminate()
        assert watcher.wait(timeout=10) == 0
    finally:
        stale.close()
