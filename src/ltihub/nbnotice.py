"""Time and memory warnings in JupyterLab through the Jnotice extension.

Runs INSIDE the notebook image as the notebook user, started by mjp-start.sh next to
the server (standard library only).  Jnotice (PyPI ``jnotice``) polls the text file
``.jnotice.sticky.txt`` in the server's root directory (here the user's home) and shows
its text in a box that stays until the file is gone or empty; a change of the text
shows the box again.  This watcher owns that file:

- ``time_warning_before`` seconds before the activity's time limit (``NB_ACTLIMIT``,
  counted from the container's start) it writes the time message;
- while the container's memory use (cgroup v2 or v1, page cache that can be dropped
  not counted) is at or above ``memory_warning_percent`` of its limit it adds the
  memory message (cleared again below ``memory_clear_percent``);
- it removes the file when nothing is to be said, at its start (a file left by an
  earlier session) and when it stops; it stops when the server's process is gone.

The hub stops the server at the limit; this only warns.  The texts, thresholds and the
file name come from a JSON file the notebook_images role writes into the image
(``/usr/local/etc/mjp/notice.json``); placeholders in ``string.Template`` syntax:
``$minutes`` (minutes left, rounded up) and ``$end`` (clock time of the limit, HH:MM,
in the container's TZ) in the time message; ``$percent``, ``$used_mib`` and
``$limit_mib`` in the memory message.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import string
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import FrameType

CONFIG_FILE = "/usr/local/etc/mjp/notice.json"
CGROUP_ROOT = "/sys/fs/cgroup"
UNLIMITED_V1 = 2**60  # cgroup v1 reports "no limit" as a number near 2**63
MIB = 1024 * 1024


@dataclass(frozen=True)
class NoticeConfig:
    sticky_file: str = ".jnotice.sticky.txt"
    time_warning_before: int = 300
    time_message: str = (
        "This JupyterLab server stops at $end (in about $minutes minutes), when the "
        "activity's time limit is reached. Save your work now."
    )
    memory_warning_percent: float = 90.0
    memory_clear_percent: float = 80.0
    memory_message: str = (
        "Your server uses $percent% of its memory ($used_mib of $limit_mib MiB). "
        "Free memory (restart kernels you do not need) or it may stop your programs."
    )
    check_seconds: float = 10.0


def load_config(path: str | os.PathLike[str] = CONFIG_FILE) -> NoticeConfig:
    """Read the JSON settings; missing keys keep their defaults, bad ones are ignored."""
    config = NoticeConfig()
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return config
    if not isinstance(data, dict):
        return config
    changes: dict[str, object] = {}
    for field in fields(NoticeConfig):
        value = data.get(field.name)
        default = getattr(config, field.name)
        if isinstance(default, str) and isinstance(value, str) and value.strip():
            changes[field.name] = value
        elif (
            isinstance(default, int | float)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value >= 0
        ):
            changes[field.name] = type(default)(value)
    config = replace(config, **changes)  # type: ignore[arg-type]
    if "/" in config.sticky_file or config.sticky_file in ("", ".", ".."):
        config = replace(config, sticky_file=NoticeConfig.sticky_file)
    return config


# ---- memory --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Memory:
    used: int
    limit: int | None  # None: no limit

    @property
    def percent(self) -> float | None:
        return None if not self.limit else 100.0 * self.used / self.limit


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def read_memory(root: str | os.PathLike[str] = CGROUP_ROOT) -> Memory | None:
    """The container's memory use and limit from cgroup v2, else v1; None if neither."""
    base = Path(root)
    if (base / "memory.current").exists():  # cgroup v2
        used = _read_int(base / "memory.current")
        if used is None:
            return None
        try:
            raw_limit = (base / "memory.max").read_text().strip()
        except OSError:
            raw_limit = "max"
        limit = int(raw_limit) if raw_limit.isdigit() else None
        inactive = _stat_value(base / "memory.stat", "inactive_file")
        return Memory(used=max(0, used - inactive) if inactive <= used else used, limit=limit)
    v1 = base / "memory"
    used = _read_int(v1 / "memory.usage_in_bytes")
    if used is None:
        return None
    limit_v1 = _read_int(v1 / "memory.limit_in_bytes")
    inactive = _stat_value(v1 / "memory.stat", "total_inactive_file")
    return Memory(
        used=used - inactive if inactive <= used else used,
        limit=None if limit_v1 is None or limit_v1 >= UNLIMITED_V1 else limit_v1,
    )


# ---- the warnings --------------------------------------------------------------------------
def _render(template: str, values: Mapping[str, object]) -> str:
    return string.Template(template).safe_substitute({k: str(v) for k, v in values.items()})


class Watcher:
    """Decides the text of the notice file from the clock and the memory use."""

    def __init__(self, config: NoticeConfig, *, actlimit: int, started: float) -> None:
        self.config = config
        self.deadline = started + actlimit if actlimit > 0 else None
        self.time_text = ""
        self.memory_text = ""

    def check(self, now: float, memory: Memory | None) -> str:
        """The text the notice file should hold now ("" = no file)."""
        cfg = self.config
        if self.deadline is not None and not self.time_text:
            left = self.deadline - now
            if left <= cfg.time_warning_before:
                end = time.strftime("%H:%M", time.localtime(self.deadline))
                self.time_text = _render(
                    cfg.time_message, {"minutes": max(0, math.ceil(left / 60)), "end": end}
                )
        percent = memory.percent if memory is not None else None
        if percent is not None and memory is not None and memory.limit:
            if percent >= cfg.memory_warning_percent and not self.memory_text:
                self.memory_text = _render(
                    cfg.memory_message,
                    {
                        "percent": int(percent),
                        "used_mib": memory.used // MIB,
                        "limit_mib": memory.limit // MIB,
                    },
                )
            elif percent < min(cfg.memory_clear_percent, cfg.memory_warning_percent):
                self.memory_text = ""
        return " ".join(t for t in (self.time_text, self.memory_text) if t)


def write_notice(path: Path, text: str) -> None:
    """Replace the notice file atomically with ``text``; remove it when text is empty."""
    if not text:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run(
    config: NoticeConfig,
    *,
    home: Path,
    actlimit: int,
    started: float,
    alive: Callable[[], bool],
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    memory: Callable[[], Memory | None] = read_memory,
    log: Callable[[str], None] | None = None,
) -> None:
    """Watch until ``alive()`` turns false; keep ``home/<sticky_file>`` up to date."""
    say = log or (lambda m: print(f"mjp-notice: {m}", file=sys.stderr, flush=True))
    path = home / config.sticky_file
    watcher = Watcher(config, actlimit=actlimit, started=started)
    first = memory()
    if watcher.deadline is None and (first is None or first.limit is None):
        say("no time limit and no memory limit: nothing to watch")
        write_notice(path, "")
        return
    say(
        f"watching: time limit {actlimit or 'none'} s, memory limit "
        f"{first.limit // MIB if first and first.limit else 'none'} MiB"
    )
    shown = None
    try:
        while alive():
            text = watcher.check(clock(), memory())
            if text != shown:
                try:
                    write_notice(path, text)
                    if text:
                        say(f"notice: {text}")
                    shown = text
                except OSError as exc:
                    say(f"cannot write {path}: {exc.strerror}")
            sleep(config.check_seconds)
    finally:
        with contextlib.suppress(OSError):
            write_notice(path, "")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="mjp-notice", description=__doc__.split("\n")[0])
    parser.add_argument("--parent", type=int, required=True, help="stop when this pid is gone")
    parser.add_argument("--started", type=float, help="unix time the container started")
    parser.add_argument("--config", default=CONFIG_FILE)
    args = parser.parse_args(argv)
    actlimit_text = env.get("NB_ACTLIMIT", "0")
    actlimit = int(actlimit_text) if actlimit_text.isdigit() else 0
    home = Path(env.get("NB_DIR") or env.get("HOME") or ".")
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    run(
        load_config(args.config),
        home=home,
        actlimit=actlimit,
        started=args.started if args.started is not None else time.time(),
        alive=lambda: process_alive(args.parent),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
