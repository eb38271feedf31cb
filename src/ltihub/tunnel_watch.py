"""Run an SSH socket forward and end it as soon as its local socket file goes away.

``ssh -N -L /tmp/lticontainer_<hub>.sock:...`` keeps running when someone deletes its
socket file (mod_lticontainer's fallback script does ``rm -f`` on it whenever a command
prints nothing), and never binds it again. This wrapper starts the command, and once the
socket has appeared, checks every second that the same socket is still at that path. If
it is gone or replaced, it stops the command and exits non-zero, so systemd
(``Restart=always``) starts a fresh tunnel at once. It also exits when the command does.

Standard library only, Python 3.9+: the role copies this one file to the Moodle host,
where the rest of the package is not installed::

    python3 -I lticontainer-tunnel-watch --socket /tmp/x.sock -- ssh -N -L /tmp/x.sock:...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

# Exit status when the socket vanished (EX_TEMPFAIL): systemd restarts the unit.
SOCKET_LOST = 75


def socket_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the Unix socket at ``path``, or None if there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return None
    return (info.st_dev, info.st_ino)


def listens_on(pid: int, path: str) -> bool:
    """Whether process ``pid`` holds a Unix socket bound to ``path`` (even if unlinked)."""
    try:
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        with open(f"/proc/{pid}/net/unix") as table:
            next(table, None)  # Num RefCount Protocol Flags Type St Inode Path
            for line in table:
                fields = line.rstrip("\n").split(None, 7)
                if len(fields) == 8 and fields[6] in inodes and fields[7] == path:
                    return True
    except OSError:
        pass
    return False


def _log(message: str) -> None:
    print(f"lticontainer-tunnel-watch: {message}", file=sys.stderr, flush=True)


def _stop(child: subprocess.Popen[bytes], grace: float) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def watch(command: Sequence[str], socket_path: str, interval: float = 1.0) -> int:
    """Run ``command``; return its status, or SOCKET_LOST once its socket is gone."""
    # A stale socket of an earlier run would look like ours until ssh replaces it.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(socket_path)
    child = subprocess.Popen(list(command))  # noqa: S603 (the unit's own ssh command)
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child.poll() is None:
            child.terminate()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    bound: tuple[int, int] | None = None
    try:
        while True:
            try:
                status = child.wait(timeout=interval)
            except subprocess.TimeoutExpired:
                status = None
            if status is not None:
                if stopping:
                    return 0
                _log(f"{command[0]} exited with status {status}")
                return status if status > 0 else 1
            # Asked before the file is looked at: if ssh listens already, its file must be
            # there (a deletion before we first saw it counts too).
            listening = bound is None and listens_on(child.pid, socket_path)
            now = socket_identity(socket_path)
            if bound is None and now is not None:
                bound = now
            elif (bound is None and listening) or now != bound:
                _log(f"{socket_path} was removed or replaced: restarting the tunnel")
                _stop(child, grace=5.0)
                return SOCKET_LOST
    finally:
        _stop(child, grace=5.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="lticontainer-tunnel-watch",
        description="Run an SSH socket forward; end it when its socket file disappears.",
    )
    parser.add_argument("--socket", required=True, help="the local socket the command binds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    parser.add_argument("command", nargs="+", help="the forward to run (after --)")
    args = parser.parse_args(argv)
    sys.exit(watch(args.command, args.socket, args.interval))


if __name__ == "__main__":
    main()
