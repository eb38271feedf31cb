#!/usr/bin/python3
"""Backups of the Moodle site: database, moodledata and code, with a checksummed manifest.

Installed by the moodle_backup role as /usr/local/lib/mjp/mjp_moodle_backup.py and run as
root by the systemd timer (mjp-moodle-backup.service) and by playbooks/moodle_backup.yml
and moodle_restore.yml. Settings come from a JSON file written by the role
(/etc/mjp/moodle-backup.json). Python standard library only.

Subcommands:
  backup          take a backup of the active colour (database, moodledata, code), then prune
                  and sync to the remote host if one is configured
  verify NAME     check the archives against the manifest (--deep: every member file too)
  list            the complete backups as JSON, newest first
  prune           delete the backups the retention policy no longer keeps
  restore-files   extract moodledata or code of a backup into a new directory
  restore-db      load the database dump of a backup into a database (dropped and re-created)

Exit codes: 0 done, 1 usage or environment error, 2 the backup is damaged or refused.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import grp
import gzip
import hashlib
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

FORMAT = 1
NAME_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<colour>[A-Za-z0-9_]+)$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DB_IDENT_RE = re.compile(r"^[A-Za-z0-9_]{1,63}$")
CHUNK = 1024 * 1024
MIB = 1024 * 1024


class BackupError(Exception):
    """An error the operator must act on; the message says what and what to do."""

    exit_code = 1


class Refused(BackupError):
    """A damaged backup or an unsafe request: nothing was changed."""

    exit_code = 2


@dataclass
class Remote:
    destination: str = ""  # user@host:/path
    port: int = 22
    ssh_key: str = ""
    known_hosts: str = ""
    delete: bool = True


@dataclass
class Config:
    backup_dir: Path
    fact_file: Path = Path("/etc/ansible/facts.d/moodle.fact")
    db_engine: str = "mariadb"
    db_socket: str = ""
    moodledata_exclude: list[str] = field(default_factory=list)
    keep_daily: int = 7
    keep_weekly: int = 4
    encryption: str = "none"
    passphrase_file: str = ""
    reserve_mb: int = 1024
    compress_level: int = 6
    remote: Remote = field(default_factory=Remote)

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BackupError(f"cannot read the settings {path}: {exc}") from exc
        remote = Remote(**data.pop("remote", {}))
        cfg = cls(backup_dir=Path(data.pop("backup_dir")), remote=remote, **data)
        cfg.fact_file = Path(cfg.fact_file)
        if cfg.db_engine not in ("mariadb", "postgresql"):
            raise BackupError(f"db_engine must be mariadb or postgresql, not {cfg.db_engine!r}")
        if cfg.encryption not in ("none", "gpg"):
            raise BackupError(f"encryption must be none or gpg, not {cfg.encryption!r}")
        return cfg


# ---- names, dates and retention (pure) --------------------------------------------------


def backup_name(when: dt.datetime, colour: str) -> str:
    """The directory name of a backup: UTC time stamp and colour, sortable by time."""
    return f"{when.astimezone(dt.timezone.utc).strftime(STAMP_FORMAT)}-{colour}"


def parse_name(name: str) -> dt.datetime | None:
    """The UTC time of a backup directory name, or None for anything else."""
    match = NAME_RE.match(name)
    if not match:
        return None
    stamp = dt.datetime.strptime(match.group("stamp"), STAMP_FORMAT)
    return stamp.replace(tzinfo=dt.timezone.utc)


def select_keep(names: Sequence[str], keep_daily: int, keep_weekly: int) -> set[str]:
    """The backups a "keep N daily, M weekly" policy keeps.

    Newest first, a backup is kept as a daily one when it is the newest of its UTC day and
    fewer than keep_daily days are kept so far; the same for ISO weeks and keep_weekly. One
    backup may count as both. The newest backup is always kept, so a policy cannot delete
    everything. Names that are not backup names are never selected (nor deleted).
    """
    dated = sorted(((t, n) for n in names if (t := parse_name(n)) is not None), reverse=True)
    keep: set[str] = set()
    days: list[dt.date] = []
    weeks: list[tuple[int, int]] = []
    for when, name in dated:
        day = when.date()
        week = tuple(when.isocalendar())[:2]
        if day not in days and len(days) < keep_daily:
            days.append(day)
            keep.add(name)
        if week not in weeks and len(weeks) < keep_weekly:
            weeks.append((week[0], week[1]))
            keep.add(name)
    if dated:
        keep.add(dated[0][1])
    return keep


def parse_now(value: str | None) -> dt.datetime:
    """--now (ISO 8601, for tests and imports) or the current time, in UTC."""
    if not value:
        return dt.datetime.now(dt.timezone.utc)
    text = value.replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise BackupError(f"--now: not an ISO 8601 time: {value!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


# ---- checksums and the manifest (pure apart from reading files) --------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_entry(path: Path, kind: str, **extra: Any) -> dict[str, Any]:
    """The manifest entry of one archive file of a backup: size, sha256, what it holds."""
    return {"kind": kind, "size": path.stat().st_size, "sha256": sha256_file(path), **extra}


def build_manifest(
    name: str,
    created: dt.datetime,
    site: dict[str, Any],
    archives: dict[str, dict[str, Any]],
    encryption: str,
    seconds: float,
) -> dict[str, Any]:
    """The manifest of a backup (written last, as manifest.json)."""
    return {
        "format": FORMAT,
        "name": name,
        "created": created.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.getfqdn(),
        **site,
        "encryption": encryption,
        "archives": archives,
        "total_size": sum(int(a["size"]) for a in archives.values()),
        "seconds": round(seconds, 2),
    }


def read_manifest(backup: Path) -> dict[str, Any]:
    path = backup / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise Refused(f"{backup} has no manifest.json: not a complete backup; refusing it") from exc
    except (OSError, ValueError) as exc:
        raise Refused(f"{path} is damaged ({exc}); refusing the backup") from exc
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("archives"), dict)
    ):
        raise Refused(f"{path} is not a manifest of format {FORMAT}; refusing the backup")
    return data


def check_archives(backup: Path, manifest: dict[str, Any], only: str | None = None) -> list[str]:
    """Problems of the archive files against the manifest (size and sha256); [] when sound."""
    problems: list[str] = []
    for name, entry in sorted(manifest["archives"].items()):
        if only is not None and entry.get("kind") != only:
            continue
        if "/" in name or name.startswith("."):
            problems.append(f"{name}: not a file name a backup can have")
            continue
        path = backup / name
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != entry.get("size"):
            problems.append(f"{name}: size {size} bytes, the manifest says {entry.get('size')}")
            continue
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            problems.append(f"{name}: sha256 {digest}, the manifest says {entry.get('sha256')}")
    return problems


def require_sound(backup: Path, manifest: dict[str, Any], only: str | None = None) -> None:
    problems = check_archives(backup, manifest, only)
    if problems:
        raise Refused(
            f"backup {backup.name} is damaged, refusing to use it (nothing was changed): "
            + "; ".join(problems)
        )


def safe_member_name(name: str) -> bool:
    """True for a relative archive path that stays inside the extraction directory."""
    parts = Path(name).parts
    return bool(parts) and not name.startswith("/") and ".." not in parts


# ---- running tools without secrets on command lines -------------------------------------


def gpg_base(passphrase_file: str, home: str) -> list[str]:
    return [
        "gpg",
        "--batch",
        "--quiet",
        "--no-tty",
        "--homedir",
        home,
        "--pinentry-mode",
        "loopback",
        "--passphrase-file",
        passphrase_file,
    ]


@contextlib.contextmanager
def gpg_home() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="mjp-gpg-") as home:
        os.chmod(home, 0o700)
        yield home


def run_pipeline(
    commands: list[list[str]], stdout: IO[bytes] | None, stdin: IO[bytes] | None = None
) -> None:
    """Run commands piped into each other; fail with the stderr of the first that failed."""
    procs: list[subprocess.Popen[bytes]] = []
    previous: IO[bytes] | None = stdin
    for index, argv in enumerate(commands):
        last = index == len(commands) - 1
        proc = subprocess.Popen(  # noqa: S603 - fixed argument lists, no shell
            argv, stdin=previous, stdout=stdout if last else subprocess.PIPE, stderr=subprocess.PIPE
        )
        if procs and procs[-1].stdout is not None:
            procs[-1].stdout.close()  # the next process owns the pipe now
        previous = proc.stdout
        procs.append(proc)
    wait_all(procs)


def wait_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait for a pipeline; fail with the stderr of each process that failed."""
    errors = []
    for proc in procs:
        err = proc.stderr.read() if proc.stderr is not None else b""
        proc.wait()
        if proc.returncode != 0:
            name = Path(str(proc.args[0] if isinstance(proc.args, list) else proc.args)).name
            errors.append(
                f"{name} exited {proc.returncode}: {err.decode(errors='replace').strip()}"
            )
    if errors:
        raise BackupError("; ".join(errors))


def output(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise BackupError(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")
    return proc.stdout


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


# ---- the site -----------------------------------------------------------------------------


def read_site(cfg: Config, colour: str | None) -> dict[str, Any]:
    """What the moodle role recorded of the colour to back up (the active one by default)."""
    try:
        fact = json.loads(cfg.fact_file.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read {cfg.fact_file} (is Moodle deployed here?): {exc}") from exc
    colour = colour or fact.get("active_colour")
    entry = fact.get("colours", {}).get(colour)
    if not entry:
        raise BackupError(f"{cfg.fact_file} records no colour {colour!r}")
    if not DB_IDENT_RE.match(str(entry.get("db_name", ""))):
        raise BackupError(f"{cfg.fact_file}: bad db_name for colour {colour}")
    dirroot = Path(entry["release_dir"]) / ("public" if entry.get("public_layout") else "")
    version_php = (dirroot / "version.php").read_text(errors="replace")
    version = re.search(r"\$version\s*=\s*([0-9]+(?:\.[0-9]+)?)", version_php)
    release = re.search(r"\$release\s*=\s*'([^']*)'", version_php)
    return {
        "colour": colour,
        "moodle": {
            "version": version.group(1) if version else "",
            "release": release.group(1) if release else "",
            "deployed_as": str(entry.get("release", "")),
        },
        "db_engine": cfg.db_engine,
        "db_name": entry["db_name"],
        "dataroot": entry["dataroot"],
        "release_dir": entry["release_dir"],
        "public_layout": bool(entry.get("public_layout")),
    }


def db_size(cfg: Config, db_name: str) -> int:
    if cfg.db_engine == "mariadb":
        # db_name matched ^[A-Za-z0-9_]+$ (read_site)
        table_sizes = "SUM(data_length + index_length)"
        sql = f"SELECT COALESCE({table_sizes}, 0) FROM information_schema.tables WHERE table_schema = '{db_name}'"  # noqa: S608, E501
        return int(float(output(mariadb_client(cfg, "-N", "-B", "-e", sql)).strip() or 0))
    sql = f"SELECT pg_database_size('{db_name}')"
    return int(output(as_postgres(["psql", "-X", "-At", "-c", sql])).strip())


def mariadb_client(cfg: Config, *args: str) -> list[str]:
    socket_arg = [f"--socket={cfg.db_socket}"] if cfg.db_socket else []
    return ["mariadb", "--user=root", *socket_arg, *args]


def tree_size(root: Path, exclude: Sequence[str] = ()) -> int:
    total = 0
    for path in walk(root, exclude):
        with contextlib.suppress(OSError):
            stat = path.lstat()
            total += stat.st_size if not path.is_symlink() else 0
    return total


def walk(root: Path, exclude: Sequence[str] = ()) -> Iterator[Path]:
    """Every path below root in sorted order, without the top-level names in exclude."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root:
            dirnames[:] = [d for d in dirnames if d not in exclude]
            filenames = [f for f in filenames if f not in exclude]
        dirnames.sort()
        for name in sorted(dirnames):
            yield here / name
        for name in sorted(filenames):
            yield here / name


def check_free_space(target: Path, need: dict[str, int], reserve: int) -> None:
    """Refuse to start a backup that could fill the disk (estimate: uncompressed sizes)."""
    stat = os.statvfs(target)
    free = stat.f_bavail * stat.f_frsize
    total = sum(need.values()) + reserve
    if free < total:
        parts = ", ".join(f"{k} {v // MIB} MiB" for k, v in need.items())
        raise Refused(
            f"not enough free space in {target}: a backup needs up to {total // MIB} MiB "
            f"({parts}, reserve {reserve // MIB} MiB) but {free // MIB} MiB are free. "
            "Free some space, keep fewer backups (moodle_backup_keep_daily/weekly) or "
            "put moodle_backup_local_dir on a larger disk. Nothing was written."
        )


# ---- writing archives -------------------------------------------------------------------


class HashingReader:
    """A file wrapper that hashes what tarfile reads from it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data


def sink_commands(cfg: Config, home: str, compress: bool) -> list[list[str]]:
    commands: list[list[str]] = []
    if compress:
        commands.append(["gzip", "-c", f"-{cfg.compress_level}", "-n"])
    if cfg.encryption == "gpg":
        commands.append(
            [
                *gpg_base(cfg.passphrase_file, home),
                "--symmetric",
                "--cipher-algo",
                "AES256",
                "--compress-algo",
                "none",
                "--output",
                "-",
            ]
        )
    return commands or [["cat"]]


def write_tar(
    cfg: Config, home: str, root: Path, exclude: Sequence[str], dest: Path
) -> dict[str, Any]:
    """tar of root (without the excluded top-level names) -> gzip -> [gpg] -> dest.

    Returns the member checksums (regular files: sha256), counts and bytes.
    """
    members: dict[str, str] = {}
    raw_bytes = 0
    with dest.open("wb") as out:
        commands = sink_commands(cfg, home, compress=True)
        procs: list[subprocess.Popen[bytes]] = []
        previous: IO[bytes] | int = subprocess.PIPE
        for index, argv in enumerate(commands):
            last = index == len(commands) - 1
            proc = subprocess.Popen(  # noqa: S603
                argv,
                stdin=previous,
                stdout=out if last else subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            if procs and procs[-1].stdout is not None:
                procs[-1].stdout.close()
            previous = proc.stdout if proc.stdout is not None else subprocess.PIPE
            procs.append(proc)
        first_in = procs[0].stdin
        assert first_in is not None
        try:
            with tarfile.open(fileobj=first_in, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in walk(root, exclude):
                    rel = path.relative_to(root).as_posix()
                    try:
                        info = tar.gettarinfo(str(path), arcname=rel)
                    except FileNotFoundError:
                        continue  # gone since the walk (a temp file): not part of the site
                    if info.isreg():
                        try:
                            handle = path.open("rb")
                        except FileNotFoundError:
                            continue
                        with handle:
                            reader = HashingReader(handle)
                            tar.addfile(info, reader)
                        members[rel] = reader.digest.hexdigest()
                        raw_bytes += info.size
                    elif info.isdir() or info.issym():
                        tar.addfile(info)
                    # sockets, fifos and devices have no place in moodledata or code
        finally:
            first_in.close()
        wait_all(procs)
    return {"members": members, "files": len(members), "bytes": raw_bytes}


def dump_database(cfg: Config, home: str, db_name: str, dest: Path) -> None:
    if cfg.db_engine == "mariadb":
        # One consistent snapshot of the InnoDB tables, without locking the site.
        dump = mariadb_client(
            cfg,
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            db_name,
        )
        dump[0] = "mariadb-dump"
        commands = [dump, *sink_commands(cfg, home, compress=True)]
    else:
        commands = [
            as_postgres(["pg_dump", "-Fc", db_name]),
            *sink_commands(cfg, home, compress=False),
        ]
    if commands[-1] == ["cat"]:
        commands.pop()
    with dest.open("wb") as out:
        run_pipeline(commands, out)


# ---- locking, listing, pruning ----------------------------------------------------------


@contextlib.contextmanager
def locked(cfg: Config) -> Iterator[None]:
    cfg.backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (cfg.backup_dir / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BackupError(
                f"another backup, prune or restore is running on {cfg.backup_dir}"
            ) from exc
        yield


def complete_backups(cfg: Config) -> list[str]:
    """Names of the complete backups (a manifest.json), newest first."""
    if not cfg.backup_dir.is_dir():
        return []
    names = [
        p.name
        for p in cfg.backup_dir.iterdir()
        if p.is_dir() and parse_name(p.name) and (p / "manifest.json").is_file()
    ]
    return sorted(names, reverse=True)


def resolve(cfg: Config, name: str) -> Path:
    if name == "latest":
        names = complete_backups(cfg)
        if not names:
            raise BackupError(f"no complete backup in {cfg.backup_dir}")
        name = names[0]
    if not parse_name(name):
        raise BackupError(f"{name!r} is not a backup name like 20250101T023000Z-blue (or latest)")
    path = cfg.backup_dir / name
    if not path.is_dir():
        raise BackupError(f"no backup {name} in {cfg.backup_dir}")
    return path


def prune(cfg: Config, dry_run: bool = False) -> list[str]:
    names = complete_backups(cfg)
    keep = select_keep(names, cfg.keep_daily, cfg.keep_weekly)
    doomed = [n for n in names if n not in keep]
    if not dry_run:
        for name in doomed:
            shutil.rmtree(cfg.backup_dir / name)
        # Left-overs of interrupted runs (we hold the lock, so none is running).
        for partial in cfg.backup_dir.glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
    return doomed


def rsync_argv(cfg: Config) -> list[str]:
    """rsync of the backup directory to the remote host: key auth only, pinned host key."""
    remote = cfg.remote
    ssh = ["ssh", "-p", str(remote.port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    if remote.ssh_key:
        ssh += ["-i", remote.ssh_key, "-o", "IdentitiesOnly=yes"]
    if remote.known_hosts:
        ssh += ["-o", f"UserKnownHostsFile={remote.known_hosts}"]
    argv = ["rsync", "-a", "--partial-dir=.rsync-partial", "--exclude=*.partial"]
    argv += ["--exclude=.lock", "-e", " ".join(ssh)]
    if remote.delete:
        argv.append("--delete-after")
    return [*argv, f"{cfg.backup_dir}/", remote.destination.rstrip("/") + "/"]


def sync_remote(cfg: Config, name: str) -> None:
    proc = subprocess.run(rsync_argv(cfg), capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise BackupError(
            f"backup {name} is complete in {cfg.backup_dir}, but the copy to "
            f"{cfg.remote.destination} failed (rsync exit {proc.returncode}): {proc.stderr.strip()}"
        )


# ---- subcommands --------------------------------------------------------------------------


def cmd_backup(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    now = parse_now(args.now)
    with locked(cfg):
        start = time.monotonic()
        site = read_site(cfg, args.colour)
        name = backup_name(now, site["colour"])
        final = cfg.backup_dir / name
        if final.exists():
            raise BackupError(f"{final} exists already")
        dataroot, code = Path(site["dataroot"]), Path(site["release_dir"])
        need = {
            "database": db_size(cfg, site["db_name"]),
            "moodledata": tree_size(dataroot, cfg.moodledata_exclude),
            "code": tree_size(code),
        }
        check_free_space(cfg.backup_dir, need, cfg.reserve_mb * MIB)
        if cfg.encryption == "gpg" and not Path(cfg.passphrase_file).is_file():
            raise BackupError(
                f"encryption is on but the passphrase file {cfg.passphrase_file} is missing"
            )
        work = cfg.backup_dir / f"{name}.partial"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        ext = ".gpg" if cfg.encryption == "gpg" else ""
        db_file = ("db.sql.gz" if cfg.db_engine == "mariadb" else "db.dump") + ext
        try:
            with gpg_home() as home:
                # The database first: every file it references is then already in filedir/
                # (Moodle never rewrites a pool file), so the pair is consistent.
                dump_database(cfg, home, site["db_name"], work / db_file)
                data_info = write_tar(
                    cfg, home, dataroot, cfg.moodledata_exclude, work / f"moodledata.tar.gz{ext}"
                )
                code_info = write_tar(cfg, home, code, (), work / f"code.tar.gz{ext}")
            archives = {
                db_file: archive_entry(work / db_file, "database"),
                f"moodledata.tar.gz{ext}": archive_entry(
                    work / f"moodledata.tar.gz{ext}", "moodledata", **data_info
                ),
                f"code.tar.gz{ext}": archive_entry(work / f"code.tar.gz{ext}", "code", **code_info),
            }
            manifest = build_manifest(
                name, now, site, archives, cfg.encryption, time.monotonic() - start
            )
            (work / "manifest.json").write_text(
                json.dumps(manifest, indent=1, sort_keys=True) + "\n"
            )
            for path in work.iterdir():
                path.chmod(0o600)
            work.rename(final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        pruned = [] if args.no_prune else prune(cfg)
    if cfg.remote.destination and not args.no_sync:
        sync_remote(cfg, name)
    return {
        "backup": name,
        "path": str(final),
        "seconds": manifest["seconds"],
        "total_size": manifest["total_size"],
        "pruned": pruned,
        "synced": bool(cfg.remote.destination and not args.no_sync),
    }


def deep_check(cfg: Config, backup: Path, manifest: dict[str, Any]) -> list[str]:
    """Read every archive through: each member's sha256 against the manifest."""
    problems: list[str] = []
    with gpg_home() as home:
        for name, entry in sorted(manifest["archives"].items()):
            try:
                with open_plain(cfg, home, backup / name, manifest) as stream:
                    if entry["kind"] == "database":
                        reader = (
                            gzip.GzipFile(fileobj=stream)
                            if name.endswith((".gz", ".gz.gpg"))
                            else stream
                        )
                        while reader.read(CHUNK):
                            pass
                        continue
                    seen: dict[str, str] = {}
                    with tarfile.open(fileobj=stream, mode="r|gz") as tar:
                        for member in tar:
                            if member.isreg():
                                handle = tar.extractfile(member)
                                assert handle is not None
                                digest = hashlib.sha256()
                                for chunk in iter(lambda h=handle: h.read(CHUNK), b""):  # type: ignore[misc]
                                    digest.update(chunk)
                                seen[member.name] = digest.hexdigest()
                    expected: dict[str, str] = entry.get("members", {})
                    bad = sorted(k for k in {*seen, *expected} if seen.get(k) != expected.get(k))
                    if bad:
                        problems.append(f"{name}: {len(bad)} member(s) differ, e.g. {bad[0]}")
            except (BackupError, OSError, EOFError, tarfile.TarError, gzip.BadGzipFile) as exc:
                problems.append(f"{name}: unreadable ({exc})")
    return problems


@contextlib.contextmanager
def open_plain(cfg: Config, home: str, path: Path, manifest: dict[str, Any]) -> Iterator[IO[bytes]]:
    """The archive's bytes, decrypted when the backup is encrypted (a stream)."""
    if manifest.get("encryption") != "gpg":
        with path.open("rb") as handle:
            yield handle
        return
    if not Path(cfg.passphrase_file).is_file():
        raise BackupError(
            f"the backup is encrypted; the passphrase file {cfg.passphrase_file} is missing"
        )
    proc = subprocess.Popen(  # noqa: S603
        [*gpg_base(cfg.passphrase_file, home), "--decrypt", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        yield proc.stdout
        proc.stdout.read()
    finally:
        _, err = proc.communicate()
    if proc.returncode != 0:
        raise BackupError(
            f"gpg could not decrypt {path.name}: {err.decode(errors='replace').strip()}"
        )


def cmd_verify(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    backup = resolve(cfg, args.name)
    manifest = read_manifest(backup)
    problems = check_archives(backup, manifest)
    if not problems and args.deep:
        problems = deep_check(cfg, backup, manifest)
    if problems:
        raise Refused(f"backup {backup.name} is damaged: " + "; ".join(problems))
    return {
        "backup": backup.name,
        "ok": True,
        "deep": bool(args.deep),
        "archives": sorted(manifest["archives"]),
        "moodle": manifest.get("moodle"),
        "colour": manifest.get("colour"),
    }


def cmd_list(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    items = []
    for name in complete_backups(cfg):
        try:
            manifest = read_manifest(cfg.backup_dir / name)
        except Refused as exc:
            items.append({"name": name, "error": str(exc)})
            continue
        items.append(
            {
                key: manifest.get(key, "")
                for key in (
                    "name",
                    "created",
                    "colour",
                    "moodle",
                    "db_engine",
                    "encryption",
                    "total_size",
                    "seconds",
                )
            }
        )
    return {"backup_dir": str(cfg.backup_dir), "backups": items}


def cmd_prune(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    with locked(cfg):
        doomed = prune(cfg, dry_run=args.dry_run)
    return {"pruned": doomed, "dry_run": bool(args.dry_run), "kept": complete_backups(cfg)}


def extract(cfg: Config, backup: Path, manifest: dict[str, Any], name: str, dest: Path) -> int:
    """Extract one tar archive into dest, checking every file's sha256 while writing it."""
    expected: dict[str, str] = manifest["archives"][name].get("members", {})
    dirs: list[tarfile.TarInfo] = []
    count = 0
    with (
        gpg_home() as home,
        open_plain(cfg, home, backup / name, manifest) as stream,
        tarfile.open(fileobj=stream, mode="r|gz") as tar,
    ):
        for member in tar:
            if not safe_member_name(member.name):
                raise Refused(f"{name}: unsafe member name {member.name!r}")
            target = dest / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                dirs.append(member)
            elif member.issym():
                link = Path(member.linkname)
                if link.is_absolute() or ".." in link.parts:
                    raise Refused(f"{name}: link {member.name} points outside the tree")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, target)
                os.lchown(target, *owner_ids(member))
            elif member.isreg():
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = tar.extractfile(member)
                assert handle is not None
                digest = hashlib.sha256()
                with target.open("wb") as out:
                    for chunk in iter(lambda h=handle: h.read(CHUNK), b""):  # type: ignore[misc]
                        digest.update(chunk)
                        out.write(chunk)
                if expected.get(member.name) != digest.hexdigest():
                    raise Refused(
                        f"{name}: {member.name} does not match its sha256 in the manifest"
                    )
                apply_attrs(target, member)
                count += 1
            else:
                raise Refused(f"{name}: unexpected member type of {member.name}")
    if count != len(expected):
        raise Refused(f"{name}: {count} files extracted, the manifest lists {len(expected)}")
    for member in reversed(dirs):  # deepest first, so setgid/modes do not block writes
        apply_attrs(dest / member.name, member)
    return count


def owner_ids(member: tarfile.TarInfo) -> tuple[int, int]:
    """Owner by name when this host knows it (the uid may differ from the backed-up host)."""
    try:
        uid = pwd.getpwnam(member.uname).pw_uid if member.uname else member.uid
    except KeyError:
        uid = member.uid
    try:
        gid = grp.getgrnam(member.gname).gr_gid if member.gname else member.gid
    except KeyError:
        gid = member.gid
    return uid, gid


def apply_attrs(path: Path, member: tarfile.TarInfo) -> None:
    os.chown(path, *owner_ids(member))
    os.chmod(path, member.mode)
    os.utime(path, (member.mtime, member.mtime))


def cmd_restore_files(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    backup = resolve(cfg, args.name)
    manifest = read_manifest(backup)
    names = [n for n, e in manifest["archives"].items() if e.get("kind") == args.part]
    if len(names) != 1:
        raise Refused(f"backup {backup.name} has no {args.part} archive")
    require_sound(backup, manifest, only=args.part)
    dest = Path(args.dest)
    if dest.exists() and any(dest.iterdir()):
        raise Refused(f"{dest} exists and is not empty: restore-files only fills a new directory")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(mode=0o700, parents=True)
    try:
        count = extract(cfg, backup, manifest, names[0], partial)
        if args.owner:
            user, _, group = args.owner.partition(":")
            if user:
                shutil.chown(partial, user=user)
            if group:
                shutil.chown(partial, group=group)
        os.chmod(partial, int(args.mode or "0755", 8))
        if dest.exists():
            dest.rmdir()
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {"backup": backup.name, "part": args.part, "dest": str(dest), "files": count}


def cmd_restore_db(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    backup = resolve(cfg, args.name)
    manifest = read_manifest(backup)
    names = [n for n, e in manifest["archives"].items() if e.get("kind") == "database"]
    if len(names) != 1:
        raise Refused(f"backup {backup.name} has no database archive")
    if manifest.get("db_engine") != cfg.db_engine:
        raise Refused(
            f"backup {backup.name} is a {manifest.get('db_engine')} dump; "
            f"this host runs {cfg.db_engine}"
        )
    for ident in (args.database, args.owner):
        if not DB_IDENT_RE.match(ident):
            raise BackupError(f"not a database or user name: {ident!r}")
    require_sound(backup, manifest, only="database")
    path = backup / names[0]
    with gpg_home() as home:
        if cfg.db_engine == "mariadb":
            output(
                mariadb_client(
                    cfg,
                    "-e",
                    f"DROP DATABASE IF EXISTS `{args.database}`; "
                    f"CREATE DATABASE `{args.database}` CHARACTER SET utf8mb4 "
                    "COLLATE utf8mb4_unicode_ci",
                )
            )
            # The dump has the tables only (no CREATE DATABASE / USE): it loads into any name.
            commands: list[list[str]] = []
            if manifest.get("encryption") == "gpg":
                commands.append([*gpg_base(cfg.passphrase_file, home), "--decrypt", str(path)])
                commands.append(["gzip", "-dc"])
            else:
                commands.append(["gzip", "-dc", str(path)])
            commands.append(mariadb_client(cfg, "--default-character-set=utf8mb4", args.database))
            run_pipeline(commands, None)
        else:
            output(as_postgres(["dropdb", "--if-exists", args.database]))
            output(
                as_postgres(
                    ["createdb", "-O", args.owner, "-E", "UTF8", "-T", "template0", args.database]
                )
            )
            restore = as_postgres(
                [
                    "pg_restore",
                    "--no-owner",
                    "--no-privileges",
                    f"--role={args.owner}",
                    "--exit-on-error",
                    "-d",
                    args.database,
                ]
            )
            if manifest.get("encryption") == "gpg":
                run_pipeline(
                    [[*gpg_base(cfg.passphrase_file, home), "--decrypt", str(path)], restore], None
                )
            else:
                with path.open("rb") as handle:
                    run_pipeline([restore], None, stdin=handle)
    return {"backup": backup.name, "database": args.database}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    main.add_argument("--config", default="/etc/mjp/moodle-backup.json", type=Path)
    sub = main.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="take a backup of the active colour")
    backup.add_argument("--colour", help="back up this colour instead of the active one")
    backup.add_argument("--now", help="time of the backup (ISO 8601; for tests and imports)")
    backup.add_argument("--no-prune", action="store_true")
    backup.add_argument("--no-sync", action="store_true")
    verify = sub.add_parser("verify", help="check a backup against its manifest")
    verify.add_argument("name", help="backup name or latest")
    verify.add_argument("--deep", action="store_true", help="also read every member file")
    sub.add_parser("list", help="complete backups, newest first")
    prune_cmd = sub.add_parser("prune", help="apply the retention policy")
    prune_cmd.add_argument("--dry-run", action="store_true")
    files = sub.add_parser("restore-files", help="extract moodledata or code into a new directory")
    files.add_argument("name", help="backup name or latest")
    files.add_argument("--part", choices=["moodledata", "code"], required=True)
    files.add_argument("--dest", required=True)
    files.add_argument("--owner", default="", help="user:group of the top directory")
    files.add_argument("--mode", default="", help="octal mode of the top directory")
    dbr = sub.add_parser("restore-db", help="load the dump into a database (dropped first)")
    dbr.add_argument("name", help="backup name or latest")
    dbr.add_argument("--database", required=True)
    dbr.add_argument("--owner", required=True, help="the database user of Moodle")
    return main


COMMANDS = {
    "backup": cmd_backup,
    "verify": cmd_verify,
    "list": cmd_list,
    "prune": cmd_prune,
    "restore-files": cmd_restore_files,
    "restore-db": cmd_restore_db,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.umask(0o077)
    try:
        cfg = Config.load(args.config)
        result = COMMANDS[args.command](cfg, args)
    except BackupError as exc:
        print(f"mjp-moodle-backup {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
