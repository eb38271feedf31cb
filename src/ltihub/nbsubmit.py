"""``submit FILE``: hand a file in to the activity's submission folder.

Runs INSIDE the notebook image as the student (standard library only); installed as
``/usr/local/bin/submit``.  The file is copied into the submission volume that the
launch linked under works/ (from ``NB_SUBMITS``) as ``<user>_<file name>``, mode 0640:
the volume's set-group-id bit gives it the teachers' group, so teachers read it and
other students do not.  A second submit of the same name replaces the first.

After the folder's close time (``NB_SUBMIT_CLOSE``, see :mod:`ltihub.nbenv`) students
are refused; teachers are not (as on the hub, which stops mounting a closed submission
volume for students at their next launch).  Every submission, and every refusal, is
appended to ``~/.submit.log`` and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .nbenv import Entry, NotebookEnv, close_time, read_env

LOG_NAME = ".submit.log"
FILE_MODE = 0o640


class SubmitError(Exception):
    """A submission that cannot be made; the message is for the student."""


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(unix))


def choose_folder(nbenv: NotebookEnv, wanted: str | None) -> Entry:
    """The submission folder by its name under works/, or the only one there is."""
    folders = [e for e in nbenv.submits if nbenv.teacher or not e.teachers_only]
    if wanted is not None:
        for entry in folders:
            if wanted in (entry.link_name, entry.access):
                return entry
        names = ", ".join(e.link_name for e in folders) or "none"
        raise SubmitError(f"This activity has no submission folder '{wanted}' (it has: {names}).")
    if not folders:
        raise SubmitError("This activity has no submission folder.")
    if len(folders) > 1:
        names = ", ".join(e.link_name for e in folders)
        raise SubmitError(f"This activity has several submission folders ({names}): use --to NAME.")
    return folders[0]


def submit(
    source: Path, nbenv: NotebookEnv, *, folder: str | None = None, now: float | None = None
) -> tuple[Path, int, str]:
    """Copy ``source``; return (destination, size, sha256). Raises SubmitError."""
    entry = choose_folder(nbenv, folder)
    now = time.time() if now is None else now
    closes = close_time(nbenv.close_times, entry.volume)
    if closes is not None and now > closes and not nbenv.teacher:
        raise SubmitError(
            f"The submission folder {entry.link_name} closed at {_when(closes)}: "
            "nothing was submitted."
        )
    if not source.is_file():
        raise SubmitError(f"{source} is not a file.")
    target_dir = Path(nbenv.work_dir) / entry.target
    if not target_dir.is_dir():
        raise SubmitError(f"The submission folder {entry.link_name} is not there.")
    name = f"{nbenv.user}_{source.name}"
    dest = target_dir / name
    tmp = target_dir / f".{name}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    size = 0
    try:
        with source.open("rb") as src:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                os.fchmod(out.fileno(), FILE_MODE)
                group = os.fstat(out.fileno()).st_gid
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise SubmitError(f"Could not submit {source.name}: {exc.strerror}.") from None
    if group != nbenv.teacher_gid:
        print(
            f"submit: warning: {name} did not get the teachers' group; tell your teacher.",
            file=sys.stderr,
        )
    return dest, size, digest.hexdigest()


def _log_line(home: Path, line: str) -> None:
    try:
        with open(home / LOG_NAME, "a", encoding="utf-8") as log:
            log.write(line + "\n")
    except OSError as exc:
        print(f"submit: could not write the log: {exc.strerror}", file=sys.stderr)


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="submit",
        description="Hand FILE in to this activity's submission folder as <user>_<FILE>.",
    )
    parser.add_argument("file", type=Path, help="the file to hand in")
    parser.add_argument("--to", metavar="NAME", help="the submission folder (its name in works/)")
    args = parser.parse_args(argv)
    nbenv = read_env(env)
    home = Path(env.get("NB_DIR") or env.get("HOME") or ".")
    now = clock()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now))
    try:
        dest, size, sha = submit(args.file, nbenv, folder=args.to, now=now)
    except SubmitError as exc:
        _log_line(home, f"{stamp} refused {args.file}: {exc}")
        print(f"submit: {exc}", file=sys.stderr)
        return 1
    shown = Path(nbenv.work_dir)
    link = next(e.link_name for e in nbenv.submits if dest.parent.name == e.volume)
    _log_line(home, f"{stamp} submitted {args.file.resolve()} -> {dest} {size} bytes sha256={sha}")
    print(f"Submitted {args.file} as {link}/{dest.name} ({size} bytes) in {shown}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
