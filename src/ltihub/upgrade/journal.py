"""The journal of one operation and the lock that keeps operations apart.

The journal is ``<state_dir>/journal.jsonl``: one JSON object per line, each written and
fsync'd before the program goes on. It is *open* while it has no ``end`` record; a closed
journal is moved to ``<state_dir>/history/``. The state directory is root-only (0700).

The lock is ``flock(LOCK_EX)`` on ``<state_dir>/lock``, held by the running process for its
whole life: the kernel drops it when the process dies, so a lock left by a killed run does
not exist. Other tools (site.yml, restores, the backup timer) take the same flock, and must
also refuse while a journal is open (an interrupted operation, see ``status``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"
LOCK = "lock"
HISTORY = "history"



def parse_records(text: str) -> list[dict[str, Any]]:
    """The records of a journal's text, one JSON object a line; a torn last line (a kill
    in the middle of a write) and anything not an object are passed over."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out

class Busy(Exception):
    """Another blue-green operation holds the lock."""


def ensure_state_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    (path / HISTORY).mkdir(mode=0o700, exist_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Hold the blue-green lock, or raise Busy at once."""
    ensure_state_dir(state_dir)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise Busy(
                    f"another blue-green operation is running (it holds {state_dir / LOCK})"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing drops the flock


def lock_is_held(state_dir: Path) -> bool:
    """Whether a living process holds the lock (tries it without waiting)."""
    path = state_dir / LOCK
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass
class StepState:
    name: str
    started: int = 0  # how many times it started
    done: bool = False
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    undone: bool = False
    error: str = ""


@dataclass
class Replay:
    """What a journal says, read back."""

    op: str = ""
    op_id: str = ""
    started_at: float = 0.0
    plan: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, StepState] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    undoing: bool = False
    ended: bool = False
    outcome: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str) -> StepState:
        if name not in self.steps:
            self.steps[name] = StepState(name)
            self.order.append(name)
        return self.steps[name]


def replay(records: list[dict[str, Any]]) -> Replay:
    r = Replay(records=records)
    for rec in records:
        ev = rec.get("event")
        if ev == "begin":
            r.op, r.op_id = str(rec["op"]), str(rec["id"])
            r.started_at = float(rec["at"])
            r.plan = dict(rec.get("plan", {}))
        elif ev == "step_start":
            r.step(rec["step"]).started += 1
        elif ev == "step_done":
            s = r.step(rec["step"])
            s.done, s.seconds, s.error = True, float(rec.get("seconds", 0.0)), ""
            s.data.update(rec.get("data", {}))
        elif ev == "step_failed":
            r.step(rec["step"]).error = str(rec.get("error", ""))
        elif ev == "undo_begin":
            r.undoing = True
        elif ev == "undo_done":
            r.step(rec["step"]).undone = True
        elif ev == "end":
            r.ended, r.outcome = True, str(rec.get("outcome", ""))
            r.result = dict(rec.get("result", {}))
    return r


class Journal:
    """Append-only, fsync'd JSON lines in the state directory."""

    def __init__(self, state_dir: Path, clock: Any = time.time) -> None:
        self.dir = state_dir
        self.path = state_dir / JOURNAL
        self.clock = clock

    def read(self) -> list[dict[str, Any]]:
        """Every complete record; a line torn by a crash (the last one) is ignored."""
        if not self.path.exists():
            return []
        return parse_records(self.path.read_text(encoding="utf-8"))

    def is_open(self) -> bool:
        recs = self.read()
        return bool(recs) and not replay(recs).ended

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        rec = {"event": event, "at": round(self.clock(), 3), **fields}
        line = json.dumps(rec, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # A torn last line from a crash: start on a fresh line.
            if os.fstat(fd).st_size and not self._ends_with_newline():
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if event == "begin":
            _fsync_dir(self.dir)
        return rec

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def archive(self) -> Path | None:
        """Move a closed journal into history/ (named by its start time and operation)."""
        recs = self.read()
        if not recs:
            return None
        r = replay(recs)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(r.started_at or self.clock()))
        dest = self.dir / HISTORY / f"{stamp}-{r.op or 'unknown'}-{r.op_id[:8]}.jsonl"
        os.replace(self.path, dest)
        _fsync_dir(self.dir)
        return dest

    def last_archived(self) -> Replay | None:
        files = sorted((self.dir / HISTORY).glob("*.jsonl"))
        if not files:
            return None
        recs = [json.loads(x) for x in files[-1].read_text().splitlines() if x.strip()]
        return replay(recs)
