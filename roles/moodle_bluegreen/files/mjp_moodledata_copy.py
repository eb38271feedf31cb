#!/usr/bin/env python3
"""Copy one colour's moodledata to the other colour's, fast and without sharing state.

Installed by the moodle_bluegreen role as /usr/local/lib/mjp/mjp_moodledata_copy.py and run
as root while the live colour is frozen (maintenance mode):

    mjp_moodledata_copy.py SRC DEST [--method link|plain] [--skip NAME ...] [--link-dir NAME ...]

- `filedir/` (and `trashdir/`) hold files named by the SHA-1 of their content that Moodle
  never rewrites in place (it writes a new file and renames it), so they are HARD-LINKED:
  instant whatever their size, no extra space, and a later delete in one colour does not
  touch the other.
- Everything else is cloned with a reflink where the filesystem has them (XFS, Btrfs) and
  copied otherwise; owners, modes and times are kept.
- Disposable state is skipped: cache/, localcache/, sessions/, temp/ and the maintenance
  file climaintenance.html (the copy must not inherit the freeze of the live colour).
- DEST is removed first (it is the idle colour's old data) and rebuilt under DEST.partial,
  then renamed, so DEST is either the old tree or a complete copy, never half of one.
- `--method plain` copies every file (for the benchmark's comparison).

Prints one JSON object: counts of linked, reflinked, copied and skipped entries, bytes
copied and seconds taken. Exit code 1 with a message on stderr when the copy fails.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import shutil
import stat
import sys
import time
from dataclasses import asdict, dataclass

# ioctl FICLONE (linux/fs.h): make the destination share the source's extents.
FICLONE = 0x40049409
DEFAULT_SKIP = ("cache", "localcache", "sessions", "temp", "climaintenance.html")
DEFAULT_LINK_DIRS = ("filedir", "trashdir")
# Errors that mean "this filesystem cannot clone/link here": fall back to copying.
FALLBACK_ERRNOS = {errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EPERM}


@dataclass
class Stats:
    """What a copy did."""

    linked: int = 0
    reflinked: int = 0
    copied: int = 0
    skipped: int = 0
    directories: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0


class Copier:
    """Copies one tree; remembers whether the filesystem can clone, to stop trying if not."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.can_reflink = method == "link"
        self.stats = Stats()

    def clone_or_copy(self, src: str, dest: str, st: os.stat_result) -> None:
        """Reflink src to dest where possible, else copy its bytes; keep owner, mode, times."""
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            if self.can_reflink:
                try:
                    fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                except OSError as error:
                    if error.errno not in FALLBACK_ERRNOS:
                        raise
                    self.can_reflink = False
                else:
                    self.stats.reflinked += 1
                    self._keep_metadata(dest, st)
                    return
            shutil.copyfileobj(fin, fout, 1024 * 1024)
        self.stats.copied += 1
        self.stats.bytes_copied += st.st_size
        self._keep_metadata(dest, st)

    def link(self, src: str, dest: str, st: os.stat_result) -> None:
        """Hard-link a content-addressed file; copy when the two trees are on two filesystems."""
        try:
            os.link(src, dest, follow_symlinks=False)
        except OSError as error:
            if error.errno not in FALLBACK_ERRNOS:
                raise
            self.clone_or_copy(src, dest, st)
        else:
            self.stats.linked += 1

    @staticmethod
    def _keep_metadata(dest: str, st: os.stat_result) -> None:
        os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
        os.chmod(dest, stat.S_IMODE(st.st_mode))
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))

    def copy_tree(self, src: str, dest: str, skip: set[str], link_dirs: set[str]) -> None:
        """Copy src (a moodledata root) to dest, which must not exist yet."""
        self._copy_dir(src, dest, top=True, linking=False, skip=skip, link_dirs=link_dirs)

    def _copy_dir(
        self, src: str, dest: str, *, top: bool, linking: bool, skip: set[str], link_dirs: set[str]
    ) -> None:
        st = os.lstat(src)
        os.mkdir(dest, 0o700)
        self.stats.directories += 1
        with os.scandir(src) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if top and entry.name in skip:
                    self.stats.skipped += 1
                    continue
                target = os.path.join(dest, entry.name)
                entry_st = entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    link_below = linking or (
                        top and entry.name in link_dirs and self.method == "link"
                    )
                    self._copy_dir(
                        entry.path,
                        target,
                        top=False,
                        linking=link_below,
                        skip=skip,
                        link_dirs=link_dirs,
                    )
                elif entry.is_symlink():
                    os.symlink(os.readlink(entry.path), target)
                    os.chown(target, entry_st.st_uid, entry_st.st_gid, follow_symlinks=False)
                    self.stats.copied += 1
                elif entry.is_file(follow_symlinks=False):
                    if linking:
                        self.link(entry.path, target, entry_st)
                    else:
                        self.clone_or_copy(entry.path, target, entry_st)
                else:  # sockets, fifos: nothing Moodle keeps in moodledata
                    self.stats.skipped += 1
        self._keep_metadata(dest, st)


def copy_moodledata(
    src: str,
    dest: str,
    method: str = "link",
    skip: tuple[str, ...] = DEFAULT_SKIP,
    link_dirs: tuple[str, ...] = DEFAULT_LINK_DIRS,
) -> Stats:
    """Replace dest with a copy of src (see the module docstring); return what was done."""
    if method not in ("link", "plain"):
        raise ValueError(f"unknown method {method!r}: use link or plain")
    src = os.path.abspath(src)
    dest = os.path.abspath(dest)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"source moodledata {src} is not a directory")
    if dest == src or dest.startswith(src + os.sep) or src.startswith(dest + os.sep):
        raise ValueError(f"source {src} and destination {dest} overlap")
    started = time.monotonic()
    partial = dest + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    copier = Copier(method)
    copier.copy_tree(src, partial, set(skip), set(link_dirs))
    if os.path.lexists(dest):
        old = dest + ".old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
        os.rename(partial, dest)
        shutil.rmtree(old)
    else:
        os.rename(partial, dest)
    copier.stats.seconds = round(time.monotonic() - started, 3)
    return copier.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("src")
    parser.add_argument("dest")
    parser.add_argument("--method", choices=["link", "plain"], default="link")
    parser.add_argument("--skip", action="append", help="top-level entry to leave out (repeat)")
    parser.add_argument(
        "--link-dir", action="append", help="top-level content-addressed dir (repeat)"
    )
    args = parser.parse_args(argv)
    try:
        stats = copy_moodledata(
            args.src,
            args.dest,
            method=args.method,
            skip=tuple(args.skip) if args.skip else DEFAULT_SKIP,
            link_dirs=tuple(args.link_dir) if args.link_dir else DEFAULT_LINK_DIRS,
        )
    except (OSError, ValueError) as error:
        print(f"moodledata copy failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
