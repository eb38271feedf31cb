"""Volume set-up of the notebook container's start script (mjp-start.sh).

Runs INSIDE the notebook image, standard library only, in two steps:

``python3 -I -m ltihub.nbstart root``  (as root, before the script drops to the user)
    Task volumes: group TEACHER, group-writable and set-group-id directories, recursively,
    on every start (teachers may write what students read).  Submission volumes: mode
    3777, group TEACHER, with ``.ipynb_checkpoints`` made 3777 up front (else the first
    student owns it and everybody else's checkpoints fail).  Only paths that are mount
    points are touched, reached without following any symbolic link, and the trees are
    walked through directory descriptors: the user's home cannot redirect root.

``python3 -I -m ltihub.nbstart user``  (as the user)
    Personal volumes (directories in the home) are made and refreshed from the task
    volume of the same name on every start without overwriting the user's files; every
    volume is linked under works/ by its AccessName; links under works/ into the volume
    directory that this launch did not ask for are removed.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

from .nbenv import Entry, NotebookEnv, read_env

TASK_DIR_BITS = 0o2070  # g+rwx and set-group-id on every directory of a task volume
TASK_TOP_BITS = 0o2775  # the volume itself: students of the activity read it
SUBMIT_MODE = 0o3777  # set-group-id, sticky, everybody writes
CHECKPOINTS = ".ipynb_checkpoints"

Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"mjp-start: {message}", file=sys.stderr, flush=True)


# ---- root side --------------------------------------------------------------------------
def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    """Mount points of this mount namespace (octal escapes decoded)."""
    points: set[str] = set()
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 4:
                    points.add(_unescape(fields[4]))
    except OSError:
        pass
    return points


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        chunk = text[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and all(c in "01234567" for c in chunk[1:]):
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def open_dir_nofollow(path: str) -> int:
    """Open an absolute directory path one component at a time, never following a link."""
    if not path.startswith("/"):
        raise ValueError(f"not an absolute path: {path}")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for part in [p for p in path.split("/") if p]:
            if part in (".", ".."):
                raise ValueError(f"'{part}' in {path}")
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _ensure(fd: int, gid: int, add: int, log: Log, what: str) -> bool:
    """Give an open file group ``gid`` and add the mode bits ``add``; True if changed."""
    st = os.fstat(fd)
    changed = False
    if st.st_gid != gid:
        os.fchown(fd, -1, gid)
        changed = True
    mode = stat.S_IMODE(st.st_mode)
    if mode | add != mode or changed:  # chown may drop set-group-id: set it again
        os.fchmod(fd, mode | add)
        changed = True
    return changed


def _file_bits(mode: int) -> int:
    """g+rw, and g+x when the owner may execute it (chmod g+rwX)."""
    return 0o060 | (0o010 if mode & 0o100 else 0)


def fix_task_tree(top_fd: int, gid: int, log: Log = _log) -> int:
    """Recursively: group ``gid``, dirs g+rwxs, files g+rw(X). Returns how many changed.

    Walks with directory descriptors and opens every entry with O_NOFOLLOW, so links in
    the volume are neither followed nor changed.
    """
    changed = int(_ensure(top_fd, gid, TASK_TOP_BITS, log, "."))
    for _root, dirs, files, dir_fd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
        for name in dirs:
            changed += _fix_entry(dir_fd, name, gid, log, directory=True)
        for name in files:
            changed += _fix_entry(dir_fd, name, gid, log, directory=False)
    return changed


def _fix_entry(dir_fd: int, name: str, gid: int, log: Log, *, directory: bool) -> int:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if directory and not stat.S_ISDIR(st.st_mode):
            return 0
        if not directory and not stat.S_ISREG(st.st_mode):
            return 0  # links, fifos, devices: left alone
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        if directory:
            flags |= os.O_DIRECTORY
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        log(f"task volume: cannot open {name}: {exc.strerror}")
        return 0
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return 0  # replaced while we looked
        add = TASK_DIR_BITS if directory else _file_bits(now.st_mode)
        return int(_ensure(fd, gid, add, log, name))
    except OSError as exc:
        log(f"task volume: cannot change {name}: {exc.strerror}")
        return 0
    finally:
        os.close(fd)


def prepare_submit_dir(top_fd: int, gid: int, log: Log = _log) -> None:
    """The volume 3777 group ``gid``; ``.ipynb_checkpoints`` in it a 3777 directory too."""
    os.fchown(top_fd, -1, gid)
    os.fchmod(top_fd, SUBMIT_MODE)
    try:
        st: os.stat_result | None = os.stat(CHECKPOINTS, dir_fd=top_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        log(f"submission volume: replacing the non-directory {CHECKPOINTS}")
        os.unlink(CHECKPOINTS, dir_fd=top_fd)
        st = None
    if st is None:
        os.mkdir(CHECKPOINTS, 0o700, dir_fd=top_fd)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(CHECKPOINTS, flags, dir_fd=top_fd)
    try:
        os.fchown(fd, -1, gid)
        os.fchmod(fd, SUBMIT_MODE)
    finally:
        os.close(fd)


def setup_root(nbenv: NotebookEnv, mounts: Collection[str] | None = None, log: Log = _log) -> int:
    """The root step. Returns the number of volumes that could not be prepared."""
    mounts = mount_points() if mounts is None else mounts
    failures = 0
    for entry, prepare in [(e, "task") for e in nbenv.volumes] + [
        (e, "submit") for e in nbenv.submits
    ]:
        path = os.path.realpath(os.path.join(nbenv.work_dir, entry.target))
        if path not in mounts:
            log(f"{entry.volume} is not mounted here; left alone")
            continue
        try:
            fd = open_dir_nofollow(path)
        except (OSError, ValueError) as exc:
            log(f"cannot open {entry.volume}: {exc}")
            failures += 1
            continue
        try:
            if prepare == "task":
                count = fix_task_tree(fd, nbenv.teacher_gid, log)
                log(f"task volume {entry.volume}: {count} entries made teacher-writable")
            else:
                prepare_submit_dir(fd, nbenv.teacher_gid, log)
        except OSError as exc:
            log(f"cannot prepare {entry.volume}: {exc}")
            failures += 1
        finally:
            os.close(fd)
    return failures


# ---- user side --------------------------------------------------------------------------
def refresh_from(seed: Path, dest: Path, log: Log = _log) -> int:
    """Copy what is missing in ``dest`` from ``seed`` (like ``cp -R --no-clobber``).

    Files the user has are never overwritten; links are copied as links; checkpoints of
    the seed are skipped. Returns the number of files and links copied.
    """
    copied = 0
    for root, dirs, files in os.walk(seed):
        dirs[:] = [d for d in dirs if d != CHECKPOINTS]
        rel = Path(root).relative_to(seed)
        target_dir = dest / rel
        kept: list[str] = []
        for name in dirs:
            src, dst = Path(root, name), target_dir / name
            if src.is_symlink():
                files.append(name)  # copied as a link below, not descended into
                continue
            if not os.path.lexists(dst):
                dst.mkdir()
            if dst.is_dir() and not dst.is_symlink():
                kept.append(name)
        dirs[:] = kept
        for name in files:
            src, dst = Path(root, name), target_dir / name
            if os.path.lexists(dst):
                continue
            try:
                if src.is_symlink():
                    os.symlink(os.readlink(src), dst)
                elif src.is_file():
                    shutil.copyfile(src, dst, follow_symlinks=False)
                    os.chmod(dst, stat.S_IMODE(src.stat().st_mode) & ~_umask() & 0o777)
                else:
                    continue
            except OSError as exc:
                log(f"could not copy {rel / name}: {exc.strerror}")
                continue
            copied += 1
    return copied


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def personal_seed(entry: Entry) -> str:
    """``<dir>/lms_prs_<name>_...`` -> ``<dir>/lms_vol_<name>_...``."""
    head, _, volume = entry.target.rpartition("/")
    return f"{head}/lms_vol_{volume[len('lms_prs_') :]}"


def link_volumes(work: Path, entries: Iterable[Entry], log: Log = _log) -> set[str]:
    """Link each entry under works/ by its AccessName. Returns the link names made."""
    made: set[str] = set()
    for entry in entries:
        link = work / entry.link_name
        if os.path.lexists(link) and not link.is_symlink():
            log(f"not replacing {link}: it is not a link")
            continue
        if link.is_symlink() and os.readlink(link) == entry.target:
            made.add(entry.link_name)
            continue
        tmp = work / f".{entry.link_name}.mjp-link"
        if os.path.lexists(tmp):
            tmp.unlink()
        os.symlink(entry.target, tmp)
        os.replace(tmp, link)
        made.add(entry.link_name)
    return made


def remove_stale_links(work: Path, volume_dir: str, keep: Collection[str], log: Log = _log) -> int:
    """Remove links under works/ into ``volume_dir`` that this launch did not make."""
    removed = 0
    for link in work.iterdir():
        if not link.is_symlink() or link.name in keep:
            continue
        target = os.readlink(link)
        if target.startswith(f"{volume_dir}/") or target.startswith(f"./{volume_dir}/"):
            link.unlink()
            log(f"removed the stale link {link.name} -> {target}")
            removed += 1
    return removed


def setup_user(nbenv: NotebookEnv, log: Log = _log) -> None:
    work = Path(nbenv.work_dir)
    for entry in nbenv.personals:
        path = work / entry.target
        if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
            log(f"personal volume {entry.volume}: {path} is not a directory; skipped")
            continue
        path.mkdir(parents=True, exist_ok=True)
        seed = work / personal_seed(entry)
        if seed.is_dir():
            count = refresh_from(seed, path, log)
            if count:
                log(f"personal volume {entry.volume}: {count} new files from the task volume")
    wanted = [e for e in nbenv.linked() if e.kind != "personal" or (work / e.target).is_dir()]
    made = link_volumes(work, wanted, log)
    remove_stale_links(work, nbenv.volume_dir, made, log)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    nbenv = read_env(os.environ if env is None else env)
    for problem in nbenv.problems:
        _log(problem)
    if args == ["root"]:
        return 1 if setup_root(nbenv) else 0
    if args == ["user"]:
        setup_user(nbenv)
        return 0
    _log("usage: python3 -m ltihub.nbstart root|user")
    return 2


if __name__ == "__main__":
    sys.exit(main())
