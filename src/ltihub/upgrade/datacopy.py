"""Copy one colour's moodledata to the other colour's, fast and without sharing state.

Part of the blue-green program: ``ltihub.upgrade`` runs it as a process of its own, as root,
once while the site serves and once in the maintenance window:

    python3 -m ltihub.upgrade.datacopy SRC DEST [--stage precopy|sync|full] [--method link|plain]

- `filedir/` (and `trashdir/`) hold files named by the SHA-1 of their content that Moodle
  never rewrites in place (it writes a new file and renames it), so they are HARD-LINKED: no
  bytes copied, no extra space, and a later delete in one colour does not touch the other.
- Everything else is cloned with a reflink where the filesystem has them (XFS, Btrfs) and
  copied otherwise; owners, modes and times are kept.
- Disposable state is skipped: cache/, localcache/, sessions/, temp/ and the maintenance
  file climaintenance.html (the copy must not inherit the freeze of the live colour).

Stages. The copy is built under DEST.partial and only then renamed to DEST, so DEST is
either the old tree or a complete copy, never half of one.
- `precopy` (the site serves): builds DEST.partial afresh. Entries that vanish while it
  walks (Moodle renames its temporary files) are passed over: the sync catches up.
- `sync` (the site is frozen): brings DEST.partial up to date with SRC and renames it to
  DEST. The check is rsync's quick check: a pool file is kept when it is the same inode (or,
  copied across filesystems, the same size and modification time), any other file when its
  size and modification time agree; what SRC no longer has is removed. So the maintenance
  window pays for reading the directories and for what changed since the pre-copy, not for
  linking every pool file again. The idle colour's old tree is renamed to DEST.old, not
  removed (the program removes it after the switch). Without DEST.partial it copies whole.
- `full`: a whole copy and the rename at once.
`--method plain` copies every file, the pool too (for the benchmark's comparison).

Prints one JSON object: counts of linked, reflinked, copied, kept, removed and skipped
entries, bytes copied, seconds taken. Exit code 1 with a message on stderr when it fails.
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
STAGES = ("precopy", "sync", "full")
# A folder modified this recently when the pre-copy read it is read again by the sync
# (timestamps of some filesystems move in coarse ticks).
RECENT_NS = 2_000_000_000


@dataclass
class Stats:
    """What a copy did."""

    stage: str = "full"
    linked: int = 0
    reflinked: int = 0
    copied: int = 0
    kept: int = 0
    removed: int = 0
    skipped: int = 0
    vanished: int = 0
    directories: int = 0
    unchanged_dirs: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0


def _kind(entry: os.DirEntry[str]) -> str:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    if entry.is_file(follow_symlinks=False):
        return "file"
    return "other"


def _remove(path: str, kind: str) -> None:
    if kind == "dir":
        shutil.rmtree(path)
    else:
        os.unlink(path)


class Copier:
    """Copies or syncs one tree; remembers whether the filesystem can clone, to stop trying
    if not. ``live``: the source may change while it walks (the pre-copy)."""

    def __init__(self, method: str, skip: set[str], link_dirs: set[str], *,
                 live: bool = False) -> None:
        self.method = method
        self.can_reflink = method == "link"
        self.skip = skip
        self.link_dirs = link_dirs
        self.live = live
        self.stats = Stats()

    # ----------------------------------------------------------------- single entries
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

    def _put(self, entry: os.DirEntry[str], target: str, *, top: bool, linking: bool) -> None:
        """Make ``target`` a copy of ``entry`` (target does not exist)."""
        if entry.is_dir(follow_symlinks=False):
            self._copy_dir(entry.path, target, linking=self._links_below(entry.name, top,
                                                                          linking))
        elif entry.is_symlink():
            st = entry.stat(follow_symlinks=False)
            os.symlink(os.readlink(entry.path), target)
            os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
            self.stats.copied += 1
        elif entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            if linking:
                self.link(entry.path, target, st)
            else:
                self.clone_or_copy(entry.path, target, st)
        else:  # sockets, fifos: nothing Moodle keeps in moodledata
            self.stats.skipped += 1

    def _links_below(self, name: str, top: bool, linking: bool) -> bool:
        return linking or (top and name in self.link_dirs and self.method == "link")

    # ----------------------------------------------------------------- whole copy
    def copy_tree(self, src: str, dest: str) -> None:
        """Copy src (a moodledata root) to dest, which must not exist yet."""
        self._copy_dir(src, dest, linking=False, top=True)

    def _copy_dir(self, src: str, dest: str, *, linking: bool, top: bool = False) -> None:
        st = os.lstat(src)
        os.mkdir(dest, 0o700)
        self.stats.directories += 1
        with os.scandir(src) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if top and entry.name in self.skip:
                self.stats.skipped += 1
                continue
            try:
                self._put(entry, os.path.join(dest, entry.name), top=top, linking=linking)
            except FileNotFoundError:
                if not self.live:
                    raise
                self.stats.vanished += 1  # renamed away meanwhile: the sync catches up
        self._keep_metadata(dest, st)
        if self.live and time.time_ns() - st.st_mtime_ns < RECENT_NS:
            # Changed just before it was read: a change in the same clock tick would leave
            # the time as it was, so the sync must read this folder whatever its time says.
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns - 1))

    # ----------------------------------------------------------------- sync
    def sync_tree(self, src: str, dest: str) -> None:
        """Bring dest (an earlier copy of src) up to date with src."""
        self._sync_dir(src, dest, linking=False, top=True)

    @staticmethod
    def _pool_dir_unchanged(src: str, dest: str) -> bool:
        """A pool folder needs no reading when it still has the modification time the copy
        took from it (so no entry was added, removed or renamed in it since) and holds no
        folders (a link count of 2, where the filesystem counts subfolders; 1 elsewhere, and
        those are read): its files are named by their content and never rewritten."""
        st, dt = os.lstat(src), os.lstat(dest)
        return (st.st_nlink == 2 and dt.st_nlink == 2 and st.st_mtime_ns == dt.st_mtime_ns
                and (st.st_mode, st.st_uid, st.st_gid) == (dt.st_mode, dt.st_uid, dt.st_gid))

    def _same(self, s: os.DirEntry[str], d: os.DirEntry[str], linking: bool) -> bool:
        kind = _kind(s)
        if kind == "link":
            return os.readlink(s.path) == os.readlink(d.path)
        if kind != "file":
            return False
        if linking and s.inode() == d.inode():
            return True  # the hard link made by the pre-copy (readdir's inode, no stat)
        ss, ds = s.stat(follow_symlinks=False), d.stat(follow_symlinks=False)
        if (ss.st_ino, ss.st_dev) == (ds.st_ino, ds.st_dev):
            return True
        if ss.st_size != ds.st_size or ss.st_mtime_ns != ds.st_mtime_ns:
            return False
        if (ss.st_mode, ss.st_uid, ss.st_gid) != (ds.st_mode, ds.st_uid, ds.st_gid):
            self._keep_metadata(d.path, ss)
        return True

    def _sync_dir(self, src: str, dest: str, *, linking: bool, top: bool = False) -> None:
        if linking and self._pool_dir_unchanged(src, dest):
            self.stats.unchanged_dirs += 1
            return
        with os.scandir(src) as it:
            src_entries = {e.name: e for e in it}
        with os.scandir(dest) as it:
            dest_entries = {e.name: e for e in it}
        gone: set[str] = set()
        for name, old in dest_entries.items():
            new = src_entries.get(name)
            if new is None or (top and name in self.skip) or _kind(new) != _kind(old):
                _remove(old.path, _kind(old))
                self.stats.removed += 1
                gone.add(name)
        for name in sorted(src_entries):
            s = src_entries[name]
            if top and name in self.skip:
                self.stats.skipped += 1
                continue
            target = os.path.join(dest, name)
            d = None if name in gone else dest_entries.get(name)
            if d is not None:
                if _kind(s) == "dir":
                    self._sync_dir(s.path, target,
                                   linking=self._links_below(name, top, linking))
                    continue
                if self._same(s, d, linking):
                    self.stats.kept += 1
                    continue
                _remove(target, _kind(d))
                self.stats.removed += 1
            self._put(s, target, top=top, linking=linking)
        st, dt = os.lstat(src), os.lstat(dest)
        if (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns) != (
                dt.st_mode, dt.st_uid, dt.st_gid, dt.st_mtime_ns):
            self._keep_metadata(dest, st)


def _check(src: str, dest: str, method: str) -> tuple[str, str]:
    if method not in ("link", "plain"):
        raise ValueError(f"unknown method {method!r}: use link or plain")
    src = os.path.abspath(src)
    dest = os.path.abspath(dest)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"source moodledata {src} is not a directory")
    if dest == src or dest.startswith(src + os.sep) or src.startswith(dest + os.sep):
        raise ValueError(f"source {src} and destination {dest} overlap")
    return src, dest


def _swap_in(partial: str, dest: str, *, drop_old: bool) -> None:
    """DEST becomes the finished copy in one rename. The old idle tree goes to DEST.old and
    is removed at once, or (``drop_old`` false: in the maintenance window, where removing
    100 000 pool links takes half a minute) left for the caller to remove after the switch."""
    old = dest + ".old"
    if os.path.lexists(dest):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
    os.rename(partial, dest)
    if drop_old:
        shutil.rmtree(old, ignore_errors=True)


def copy_moodledata(
    src: str,
    dest: str,
    method: str = "link",
    skip: tuple[str, ...] = DEFAULT_SKIP,
    link_dirs: tuple[str, ...] = DEFAULT_LINK_DIRS,
    stage: str = "full",
) -> Stats:
    """Run one stage (see the module docstring); return what was done."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}: use {', '.join(STAGES)}")
    src, dest = _check(src, dest, method)
    started = time.monotonic()
    partial = dest + ".partial"
    copier = Copier(method, set(skip), set(link_dirs), live=stage == "precopy")
    copier.stats.stage = stage
    if stage == "precopy":
        shutil.rmtree(dest + ".old", ignore_errors=True)  # left by an earlier run
    if stage == "sync" and os.path.isdir(partial):
        copier.sync_tree(src, partial)
    else:
        shutil.rmtree(partial, ignore_errors=True)
        copier.copy_tree(src, partial)
    if stage != "precopy":
        _swap_in(partial, dest, drop_old=stage == "full")
    copier.stats.seconds = round(time.monotonic() - started, 3)
    return copier.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("src")
    parser.add_argument("dest")
    parser.add_argument("--stage", choices=STAGES, default="full")
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
            stage=args.stage,
        )
    except (OSError, ValueError) as error:
        print(f"moodledata copy failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
