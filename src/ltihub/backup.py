#!/usr/bin/python3
"""Backups of the Moodle site in restic repositories: the glue around restic.

restic does the storage (encrypted, deduplicated snapshots), retention (forget/prune),
integrity checks (check) and remote repositories (SFTP, REST server, S3). What is left
here is what a restic user would still write for Moodle:

- find the active colour, its database, moodledata and release directory (the moodle
  role's local fact ``/etc/ansible/facts.d/moodle.fact``);
- stream a consistent database dump into ``restic backup --stdin`` (no copy of the dump on
  disk), then back up moodledata (without its disposable parts), the code with config.php
  and add-ons, and a small JSON of the facts a restore needs. restic cannot mix stdin and
  files in one snapshot, so one *backup* is two snapshots with the same time and the tag
  ``mjp-backup:<name>``: ``part:database`` and ``part:files``;
- refuse to start when the disk of a local repository could fill up;
- read a backup back whole before anything of the site is touched (a damaged repository
  is refused), and put the parts where the restore playbook wants them.

The moodle_backup role copies this one file to the Moodle host as
``/usr/local/lib/mjp/mjp_moodle_backup.py`` (command ``mjp-moodle-backup``); it runs as
root from the systemd units and the backup/restore playbooks, with its settings in
``/etc/mjp/moodle-backup.json``. Standard library only, Python 3.9+ (Rocky 9).

The repository password is read by restic itself from ``RESTIC_PASSWORD_FILE``; the
repository address and any credentials come from the environment (a root-only env file
per repository), never from a command line.

Exit codes: 0 done, 1 error (the message says why), 2 refused: a damaged backup or
repository, not enough disk space, or an unsafe request; nothing was changed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

NAME_RE = re.compile(r"^(?P<stamp>\d{8}T\d{6}Z)-(?P<colour>[A-Za-z0-9_]+)$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
DB_IDENT_RE = re.compile(r"^[A-Za-z0-9_]{1,63}$")
TAG_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._+-]")
SUBSET_RE = re.compile(r"^(\d{1,3}(\.\d+)?%|\d+/\d+|\d+[KMGT]?)$")
FACTS_NAME = "backup-facts.json"
TAG = "mjp"
PARTS = ("database", "files")
CHUNK = 1024 * 1024
MIB = 1024 * 1024
EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2
# restic backup: 3 = snapshot saved, but some source files could not be read
RESTIC_INCOMPLETE = 3
UTC = dt.timezone.utc  # noqa: UP017 - runs on Python 3.9 too (Rocky 9)


class BackupError(Exception):
    """An error the operator must act on; the message says what and what to do."""

    exit_code = EXIT_ERROR


class Refused(BackupError):
    """A damaged backup or repository, or an unsafe request: nothing was changed."""

    exit_code = EXIT_REFUSED


@dataclass
class Repository:
    """One restic repository: its address, and an optional root-only env file.

    ``url`` is what restic's RESTIC_REPOSITORY takes (a path, ``sftp:user@host:/path``,
    ``rest:https://...``, ``s3:https://...``); an env file may override it (a REST URL
    with credentials) and add credentials (AWS_ACCESS_KEY_ID, ...).
    """

    name: str
    url: str
    env_file: str = ""
    sftp_command: str = ""

    @property
    def is_local(self) -> bool:
        return self.url.startswith("/")


@dataclass
class Config:
    repositories: list[Repository]
    password_file: str
    fact_file: Path = Path("/etc/ansible/facts.d/moodle.fact")
    facts_dir: Path = Path("/var/lib/mjp/moodle-backup")
    cache_dir: str = "/var/cache/mjp/restic"
    host: str = ""
    db_engine: str = "mariadb"
    db_socket: str = ""
    moodledata_exclude: list[str] = field(default_factory=list)
    keep_daily: int = 7
    keep_weekly: int = 4
    check_subset: str = "5%"
    reserve_mb: int = 1024
    restic: str = "restic"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        data = dict(data)
        try:
            repos = [Repository(**r) for r in data.pop("repositories")]
            cfg = cls(repositories=repos, **data)
        except (KeyError, TypeError) as exc:
            raise BackupError(f"bad settings: {exc}") from exc
        cfg.fact_file = Path(cfg.fact_file)
        cfg.facts_dir = Path(cfg.facts_dir)
        cfg.host = cfg.host or socket.gethostname()
        if not cfg.repositories:
            raise BackupError("bad settings: no repository")
        if len({r.name for r in cfg.repositories}) != len(cfg.repositories):
            raise BackupError("bad settings: two repositories with one name")
        if cfg.db_engine not in ("mariadb", "postgresql"):
            raise BackupError(f"db_engine must be mariadb or postgresql, not {cfg.db_engine!r}")
        if not cfg.facts_dir.is_absolute():
            raise BackupError("facts_dir must be an absolute path")
        if not SUBSET_RE.match(cfg.check_subset):
            raise BackupError(f"check_subset {cfg.check_subset!r}: use 5%, 1/7 or 500M")
        return cfg

    @classmethod
    def load(cls, path: Path) -> Config:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BackupError(f"cannot read the settings {path}: {exc}") from exc
        return cls.from_dict(data)

    def repository(self, name: str | None) -> Repository:
        if not name:
            return self.repositories[0]
        for repo in self.repositories:
            if repo.name == name:
                return repo
        known = ", ".join(r.name for r in self.repositories)
        raise BackupError(f"no repository {name!r} (configured: {known})")


# ---- names and times (pure) --------------------------------------------------------------


def backup_name(when: dt.datetime, colour: str) -> str:
    """The name of a backup: UTC time stamp and colour, sortable by time."""
    return f"{when.astimezone(UTC).strftime(STAMP_FORMAT)}-{colour}"


def parse_now(value: str | None) -> dt.datetime:
    """--now (ISO 8601, for tests and imports) or the current time, timezone-aware."""
    if not value:
        return dt.datetime.now(UTC)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BackupError(f"--now: not an ISO 8601 time: {value!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def restic_time(when: dt.datetime) -> str:
    """restic backup --time takes the host's local time, without a zone."""
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def tag_value(text: str) -> str:
    """A string restic accepts inside one tag (no commas, no spaces)."""
    return TAG_UNSAFE_RE.sub("_", text.strip())[:64] or "unknown"


def snapshot_tags(name: str, site: Mapping[str, Any], part: str) -> list[str]:
    release = site["moodle"].get("deployed_as") or site["moodle"].get("release", "")
    return [
        TAG,
        f"mjp-backup:{name}",
        f"part:{part}",
        f"colour:{site['colour']}",
        f"release:{tag_value(str(release))}",
    ]


def dump_filename(db_name: str, engine: str) -> str:
    """The name the database dump has inside its snapshot."""
    return f"{db_name}.sql" if engine == "mariadb" else f"{db_name}.dump"


# ---- restic command lines and environment (pure) ------------------------------------------


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines of a root-only env file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    if not path:
        return env
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BackupError(f"cannot read the repository env file {path}: {exc}") from exc
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.match(r"^[A-Z_][A-Z0-9_]*$", key.strip()):
            raise BackupError(f"{path}: not a KEY=VALUE line")
        env[key.strip()] = value.strip()
    return env


def restic_env(
    cfg: Config, repo: Repository, base: Mapping[str, str], source: Repository | None = None
) -> dict[str, str]:
    """The environment of a restic run: repository, password file, cache, credentials."""
    env = {k: v for k, v in base.items() if not k.startswith(("RESTIC_", "AWS_"))}
    env.update(
        RESTIC_REPOSITORY=repo.url,
        RESTIC_PASSWORD_FILE=cfg.password_file,
        RESTIC_CACHE_DIR=cfg.cache_dir,
    )
    if source is not None:
        source_env = read_env_file(source.env_file)
        env["RESTIC_FROM_REPOSITORY"] = source_env.pop("RESTIC_REPOSITORY", source.url)
        env["RESTIC_FROM_PASSWORD_FILE"] = cfg.password_file
        env.update(source_env)
    env.update(read_env_file(repo.env_file))
    return env


def restic_argv(cfg: Config, repo: Repository, *args: str) -> list[str]:
    """restic with the repository's options; never a secret in it."""
    argv = [cfg.restic]
    if repo.sftp_command:
        argv += ["-o", f"sftp.command={repo.sftp_command}"]
    return [*argv, *args]


def db_dump_argv(cfg: Config, db_name: str) -> list[str]:
    """A consistent dump without locking the site; no password (root's socket, postgres)."""
    if not DB_IDENT_RE.match(db_name):
        raise BackupError(f"not a database name: {db_name!r}")
    if cfg.db_engine == "mariadb":
        return [
            "mariadb-dump",
            "--user=root",
            *([f"--socket={cfg.db_socket}"] if cfg.db_socket else []),
            "--single-transaction",
            "--routines",
            "--triggers",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            db_name,
        ]
    return as_postgres(["pg_dump", "-Fc", db_name])


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


def mariadb_client(cfg: Config, *args: str) -> list[str]:
    socket_arg = [f"--socket={cfg.db_socket}"] if cfg.db_socket else []
    return ["mariadb", "--user=root", *socket_arg, *args]


def db_backup_args(cfg: Config, name: str, site: Mapping[str, Any], when: dt.datetime) -> list[str]:
    """restic backup of the dump from stdin (the arguments after ``restic``)."""
    args = ["backup", "--json", "--stdin"]
    args += ["--stdin-filename", dump_filename(site["db_name"], cfg.db_engine)]
    return args + common_backup_args(cfg, name, site, when, "database")


def files_backup_args(
    cfg: Config, name: str, site: Mapping[str, Any], when: dt.datetime
) -> list[str]:
    """restic backup of the facts, moodledata (without the excluded names) and the code."""
    args = ["backup", "--json", *common_backup_args(cfg, name, site, when, "files")]
    for excluded in moodledata_excludes(cfg, site["dataroot"]):
        args += ["--exclude", excluded]
    return [*args, str(cfg.facts_dir), site["dataroot"], site["release_dir"]]


def common_backup_args(
    cfg: Config, name: str, site: Mapping[str, Any], when: dt.datetime, part: str
) -> list[str]:
    args = ["--host", cfg.host, "--time", restic_time(when)]
    for tag in snapshot_tags(name, site, part):
        args += ["--tag", tag]
    return args


def moodledata_excludes(cfg: Config, dataroot: str) -> list[str]:
    """Absolute restic exclude patterns: only the top-level names of moodledata."""
    root = dataroot.rstrip("/")
    return [f"{root}/{glob_escape(n)}" for n in cfg.moodledata_exclude]


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", name)


def forget_args(cfg: Config, part: str, prune: bool, dry_run: bool) -> list[str]:
    """Retention of one part: its own groups, so each backup keeps both its snapshots."""
    args = ["forget", "--json", "--tag", f"{TAG},part:{part}", "--group-by", "host"]
    if cfg.keep_daily > 0:
        args += ["--keep-daily", str(cfg.keep_daily)]
    if cfg.keep_weekly > 0:
        args += ["--keep-weekly", str(cfg.keep_weekly)]
    if prune:
        args.append("--prune")
    if dry_run:
        args.append("--dry-run")
    return args


def check_args(subset: str) -> list[str]:
    if not SUBSET_RE.match(subset):
        raise BackupError(f"read-data subset {subset!r}: use 5%, 1/7 or 500M")
    return ["check", f"--read-data-subset={subset}"]


# ---- facts and listings (pure) -------------------------------------------------------------


def build_facts(
    name: str,
    when: dt.datetime,
    site: Mapping[str, Any],
    dump: Mapping[str, Any],
    sizes: Mapping[str, int],
    cfg: Config,
) -> dict[str, Any]:
    """The facts a restore needs, stored inside the files snapshot."""
    return {
        "format": 2,
        "name": name,
        "created": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": cfg.host,
        "colour": site["colour"],
        "moodle": dict(site["moodle"]),
        "db_engine": cfg.db_engine,
        "db_name": site["db_name"],
        "dump": {"file": dump["file"], "bytes": dump["bytes"], "sha256": dump["sha256"]},
        "dataroot": site["dataroot"],
        "release_dir": site["release_dir"],
        "public_layout": bool(site["public_layout"]),
        "moodledata_exclude": list(cfg.moodledata_exclude),
        "sizes": dict(sizes),
    }


def tag_of(snapshot: Mapping[str, Any], prefix: str) -> str:
    for tag in snapshot.get("tags") or []:
        if tag.startswith(prefix + ":"):
            return str(tag.split(":", 1)[1])
    return ""


def group_backups(snapshots: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Complete backups (both parts present), newest first, from ``restic snapshots --json``."""
    found: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        name = tag_of(snap, "mjp-backup")
        part = tag_of(snap, "part")
        if not NAME_RE.match(name) or part not in PARTS:
            continue
        entry = found.setdefault(
            name,
            {
                "name": name,
                "time": snap.get("time", ""),
                "colour": tag_of(snap, "colour"),
                "release": tag_of(snap, "release"),
                "snapshots": {},
            },
        )
        entry["snapshots"][part] = str(snap.get("id", ""))
    complete = [b for b in found.values() if set(b["snapshots"]) == set(PARTS)]
    return sorted(complete, key=lambda b: str(b["name"]), reverse=True)


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of restic's --json output (one per line; other lines skipped)."""
    items: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                items.append(json.loads(line))
    return items


def summary_of(stdout: str) -> dict[str, Any]:
    for item in reversed(json_lines(stdout)):
        if item.get("message_type") == "summary":
            return dict(item)
    raise BackupError("restic backup printed no summary (no snapshot id)")


def forgotten(stdout: str) -> list[str]:
    """Backup names whose snapshots a ``restic forget --json`` run removed."""
    try:
        groups = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else []
    except ValueError:
        groups = []
    names = set()
    for group in groups or []:
        for snap in group.get("remove") or []:
            name = tag_of(snap, "mjp-backup")
            if name:
                names.add(name)
    return sorted(names, reverse=True)


def last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:])


# ---- running restic -------------------------------------------------------------------------


class Restic:
    """Runs restic against one repository of the settings."""

    def __init__(self, cfg: Config, repo: Repository) -> None:
        self.cfg = cfg
        self.repo = repo

    def env(self, source: Repository | None = None) -> dict[str, str]:
        return restic_env(self.cfg, self.repo, os.environ, source)

    def argv(self, *args: str) -> list[str]:
        return restic_argv(self.cfg, self.repo, *args)

    def run(
        self, *args: str, ok: Sequence[int] = (0,), source: Repository | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(  # noqa: S603 - argument list, no shell
                self.argv(*args),
                env=self.env(source),
                capture_output=True,
                text=True,
                check=False,
            )
        except FileNotFoundError as exc:
            raise BackupError(f"{self.cfg.restic} is not installed (the role installs it)") from exc
        if proc.returncode not in ok:
            raise BackupError(
                f"restic {args[0]} on repository {self.repo.name} exited {proc.returncode}: "
                f"{last_lines(proc.stderr)}"
            )
        return proc

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(  # noqa: S603 - argument list, no shell
                self.argv(*args), env=self.env(), **kwargs
            )
        except FileNotFoundError as exc:
            raise BackupError(f"{self.cfg.restic} is not installed (the role installs it)") from exc

    def snapshots(self) -> list[dict[str, Any]]:
        proc = self.run("snapshots", "--json", "--tag", TAG)
        data = json.loads(proc.stdout or "[]")
        return list(data or [])

    def backups(self) -> list[dict[str, Any]]:
        return group_backups(self.snapshots())


def output(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise BackupError(f"{' '.join(argv[:3])} failed: {last_lines(proc.stderr)}")
    return proc.stdout


# ---- the site ---------------------------------------------------------------------------------


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
    try:
        version_php = (dirroot / "version.php").read_text(errors="replace")
    except OSError as exc:
        raise BackupError(f"cannot read the code's version.php: {exc}") from exc
    version = re.search(r"\$version\s*=\s*([0-9]+(?:\.[0-9]+)?)", version_php)
    release = re.search(r"\$release\s*=\s*'([^']*)'", version_php)
    return {
        "colour": colour,
        "moodle": {
            "version": version.group(1) if version else "",
            "release": release.group(1) if release else "",
            "deployed_as": str(entry.get("release", "")),
        },
        "db_name": entry["db_name"],
        "dataroot": str(entry["dataroot"]).rstrip("/"),
        "release_dir": str(entry["release_dir"]).rstrip("/"),
        "public_layout": bool(entry.get("public_layout")),
    }


def db_size(cfg: Config, db_name: str) -> int:
    if cfg.db_engine == "mariadb":
        # db_name matched ^[A-Za-z0-9_]+$ (read_site)
        sizes = "SELECT COALESCE(SUM(data_length + index_length), 0)"
        sql = f"{sizes} FROM information_schema.tables WHERE table_schema = '{db_name}'"  # noqa: S608
        return int(float(output(mariadb_client(cfg, "-N", "-B", "-e", sql)).strip() or 0))
    sql = f"SELECT pg_database_size('{db_name}')"
    return int(output(as_postgres(["psql", "-X", "-At", "-c", sql])).strip())


def tree_size(root: Path, exclude: Sequence[str] = ()) -> int:
    """Bytes of the regular files below root, without the top-level names in exclude."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in exclude]
            filenames = [f for f in filenames if f not in exclude]
        for name in filenames:
            with contextlib.suppress(OSError):
                stat = os.lstat(os.path.join(dirpath, name))
                total += stat.st_size
    return total


def existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(target: Path, need: Mapping[str, int], reserve: int) -> None:
    """Refuse to start a backup that could fill the disk (estimate: uncompressed sizes)."""
    stat = os.statvfs(existing_parent(target))
    free = stat.f_bavail * stat.f_frsize
    total = sum(need.values()) + reserve
    if free < total:
        parts = ", ".join(f"{k} {v // MIB} MiB" for k, v in need.items())
        raise Refused(
            f"not enough free space in {target}: a backup needs up to {total // MIB} MiB "
            f"({parts}, reserve {reserve // MIB} MiB) but {free // MIB} MiB are free. "
            "Free some space, keep fewer backups (moodle_backup_keep_daily/weekly) or "
            "put the repository on a larger disk. Nothing was written."
        )


@contextlib.contextmanager
def locked(cfg: Config) -> Iterator[None]:
    cfg.facts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with (cfg.facts_dir / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BackupError("another backup, check or restore is running") from exc
        yield


# ---- backup ----------------------------------------------------------------------------------


def stream_dump(dump_argv: list[str], restic: Restic, args: list[str]) -> dict[str, Any]:
    """Pipe the dump through a sha256 into ``restic backup --stdin``; no copy on disk.

    restic only saves the snapshot when its stdin ends, so a failed dump ends restic
    first (no snapshot of half a dump). restic's and the dump's messages go to small
    temporary files (never the dump itself), so no pipe can fill up and stall the run.
    """
    digest = hashlib.sha256()
    count = 0
    with contextlib.ExitStack() as stack:  # (no parenthesised with: Python 3.9)
        dump_err, out, err = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(3))
        try:
            dump = subprocess.Popen(  # noqa: S603 - argument list, no shell
                dump_argv, stdout=subprocess.PIPE, stderr=dump_err
            )
        except FileNotFoundError as exc:
            raise BackupError(f"{dump_argv[0]} is not installed: {exc}") from exc
        store = restic.popen(*args, stdin=subprocess.PIPE, stdout=out, stderr=err)
        assert dump.stdout is not None and store.stdin is not None
        broken = False
        try:
            for chunk in iter(lambda: dump.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
                digest.update(chunk)
                count += len(chunk)
                store.stdin.write(chunk)
        except BrokenPipeError:
            broken = True
        dump.stdout.close()
        if broken or dump.wait() != 0:
            dump.kill()
            dump.wait()
            if not broken:
                store.terminate()  # before its stdin ends: no snapshot of half a dump
            with contextlib.suppress(BrokenPipeError):
                store.stdin.close()
            store.wait()
        else:
            store.stdin.close()
            store.wait()
        out.seek(0)
        err.seek(0)
        dump_err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        dump_stderr = dump_err.read().decode(errors="replace")
    if broken:
        raise BackupError(
            f"restic backup of the database dump exited {store.returncode}: {last_lines(stderr)}"
        )
    if dump.returncode != 0:
        raise BackupError(
            f"the database dump failed ({dump_argv[0]} {dump.returncode}): "
            f"{last_lines(dump_stderr)}"
        )
    if store.returncode != 0:
        raise BackupError(
            f"restic backup of the database dump exited {store.returncode}: {last_lines(stderr)}"
        )
    summary = summary_of(stdout)
    return {"bytes": count, "sha256": digest.hexdigest(), "snapshot": summary["snapshot_id"]}


def write_facts(cfg: Config, facts: Mapping[str, Any]) -> Path:
    cfg.facts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = cfg.facts_dir / FACTS_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def cmd_backup(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    when = parse_now(args.now)
    start = time.monotonic()
    primary = cfg.repositories[0]
    with locked(cfg):
        site = read_site(cfg, args.colour)
        name = backup_name(when, site["colour"])
        sizes = {
            "database": db_size(cfg, site["db_name"]),
            "moodledata": tree_size(Path(site["dataroot"]), cfg.moodledata_exclude),
            "code": tree_size(Path(site["release_dir"])),
        }
        for repo in cfg.repositories:
            if repo.is_local:
                check_free_space(Path(repo.url), sizes, cfg.reserve_mb * MIB)
        restic = Restic(cfg, primary)
        if any(b["name"] == name for b in restic.backups()):
            raise BackupError(f"a backup {name} exists already")
        # The database first: every file it refers to is then already in filedir/ (Moodle
        # never rewrites a pool file), so the pair is consistent while the site stays up.
        dump = stream_dump(
            db_dump_argv(cfg, site["db_name"]), restic, db_backup_args(cfg, name, site, when)
        )
        dump["file"] = dump_filename(site["db_name"], cfg.db_engine)
        write_facts(cfg, build_facts(name, when, site, dump, sizes, cfg))
        try:
            proc = restic.run(*files_backup_args(cfg, name, site, when), ok=(0, RESTIC_INCOMPLETE))
        except BackupError:
            # half a backup is no backup: drop the database part again
            with contextlib.suppress(BackupError):
                restic.run("forget", dump["snapshot"])
            raise
        files = summary_of(proc.stdout)
        warnings = []
        if proc.returncode == RESTIC_INCOMPLETE:
            warnings.append(
                "some files could not be read (vanished while the backup ran?): "
                + last_lines(proc.stderr)
            )
        copied = []
        for repo in cfg.repositories[1:]:
            Restic(cfg, repo).run("copy", "--tag", f"mjp-backup:{name}", source=primary)
            copied.append(repo.name)
        pruned: dict[str, list[str]] = {}
        if not args.no_prune:
            for repo in cfg.repositories:
                pruned[repo.name] = apply_retention(cfg, repo, dry_run=False)
    for warning in warnings:
        print(f"mjp-moodle-backup backup: warning: {warning}", file=sys.stderr)
    return {
        "backup": name,
        "repository": primary.name,
        "snapshots": {"database": dump["snapshot"], "files": files["snapshot_id"]},
        "dump_bytes": dump["bytes"],
        "added_bytes": int(files.get("data_added", 0)),
        "total_size": int(files.get("total_bytes_processed", 0)) + int(dump["bytes"]),
        "seconds": round(time.monotonic() - start, 2),
        "copied_to": copied,
        "pruned": sorted({n for names in pruned.values() for n in names}, reverse=True),
        "warnings": warnings,
    }


def apply_retention(cfg: Config, repo: Repository, dry_run: bool) -> list[str]:
    restic = Restic(cfg, repo)
    removed: set[str] = set()
    for index, part in enumerate(PARTS):
        last = index == len(PARTS) - 1
        proc = restic.run(*forget_args(cfg, part, prune=last and not dry_run, dry_run=dry_run))
        # with --prune, restic prints prune's text after forget's JSON: take the JSON line
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
        removed.update(forgotten(lines[0] if lines else ""))
    return sorted(removed, reverse=True)


# ---- reading a backup back -------------------------------------------------------------------


def resolve(cfg: Config, repo: Repository, name: str) -> dict[str, Any]:
    backups = Restic(cfg, repo).backups()
    if name == "latest":
        if not backups:
            raise BackupError(f"no complete backup in repository {repo.name}")
        return backups[0]
    if not NAME_RE.match(name):
        raise BackupError(f"{name!r} is not a backup name like 20250101T023000Z-blue (or latest)")
    for backup in backups:
        if backup["name"] == name:
            return backup
    raise BackupError(f"no complete backup {name} in repository {repo.name}")


def read_facts(cfg: Config, repo: Repository, backup: Mapping[str, Any]) -> dict[str, Any]:
    snap = backup["snapshots"]["files"]
    path = f"{cfg.facts_dir}/{FACTS_NAME}"
    try:
        proc = Restic(cfg, repo).run("dump", snap, path)
        facts = json.loads(proc.stdout)
    except (BackupError, ValueError) as exc:
        raise Refused(
            f"backup {backup['name']} is damaged: its facts cannot be read ({exc}); "
            "refusing it, nothing was changed"
        ) from exc
    if not isinstance(facts, dict) or facts.get("name") != backup["name"]:
        raise Refused(f"backup {backup['name']} is damaged: its facts name another backup")
    return facts


def read_dump(
    cfg: Config,
    repo: Repository,
    backup: Mapping[str, Any],
    facts: Mapping[str, Any],
    sink: IO[bytes] | None = None,
) -> None:
    """Read the dump out of the repository (into sink); Refused unless whole and unaltered."""
    restic = Restic(cfg, repo)
    proc = restic.popen(
        "dump",
        backup["snapshots"]["database"],
        "/" + facts["dump"]["file"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    digest = hashlib.sha256()
    count = 0
    for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):  # type: ignore[union-attr]
        digest.update(chunk)
        count += len(chunk)
        if sink is not None:
            try:
                sink.write(chunk)
            except BrokenPipeError as exc:
                proc.kill()
                proc.wait()
                raise BackupError("the database client stopped reading the dump") from exc
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    if proc.returncode != 0:
        raise Refused(
            f"backup {backup['name']} is damaged: restic cannot read its database dump "
            f"({last_lines(err)}); refusing it, nothing was changed"
        )
    if count != facts["dump"]["bytes"] or digest.hexdigest() != facts["dump"]["sha256"]:
        raise Refused(
            f"backup {backup['name']} is damaged: its database dump has {count} bytes / sha256 "
            f"{digest.hexdigest()}, the facts say {facts['dump']['bytes']} / "
            f"{facts['dump']['sha256']}; refusing it, nothing was changed"
        )


def cmd_verify(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    repo = cfg.repository(args.repository)
    backup = resolve(cfg, repo, args.name)
    facts = read_facts(cfg, repo, backup)
    read_dump(cfg, repo, backup, facts)
    return {
        "backup": backup["name"],
        "repository": repo.name,
        "ok": True,
        "snapshots": backup["snapshots"],
        "facts": facts,
    }


def cmd_list(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    repo = cfg.repository(args.repository)
    return {"repository": repo.name, "backups": Restic(cfg, repo).backups()}


def cmd_prune(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    repo = cfg.repository(args.repository)
    with locked(cfg):
        removed = apply_retention(cfg, repo, dry_run=args.dry_run)
    return {"repository": repo.name, "pruned": removed, "dry_run": bool(args.dry_run)}


def cmd_check(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """restic check with a read-data subset on every repository; Refused when damaged."""
    subset = args.read_data_subset or cfg.check_subset
    results: dict[str, str] = {}
    damaged: list[str] = []
    names = [args.repository] if args.repository else [r.name for r in cfg.repositories]
    with locked(cfg):
        for name in names:
            repo = cfg.repository(name)
            try:
                Restic(cfg, repo).run(*check_args(subset))
                results[repo.name] = "ok"
            except BackupError as exc:
                results[repo.name] = str(exc)
                damaged.append(str(exc))
    if damaged:
        raise Refused("repository check failed: " + "; ".join(damaged))
    return {"checked": results, "read_data_subset": subset}


def cmd_init(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Create the repositories that do not exist yet (restic init); idempotent."""
    created = []
    for repo in cfg.repositories:
        restic = Restic(cfg, repo)
        probe = restic.run("cat", "config", ok=range(256))
        if probe.returncode == 0:
            continue
        if repo.is_local:
            Path(repo.url).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        restic.run("init")
        created.append(repo.name)
    return {"created": created, "changed": bool(created)}


def cmd_restore_files(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Restore code or moodledata into a new directory, read back whole first (--verify)."""
    repo = cfg.repository(args.repository)
    backup = resolve(cfg, repo, args.name)
    facts = read_facts(cfg, repo, backup)
    source = facts["release_dir"] if args.part == "code" else facts["dataroot"]
    dest = Path(args.dest)
    if dest.exists() and any(dest.iterdir()):
        raise Refused(f"{dest} exists and is not empty: restore-files only fills a new directory")
    stage = dest.with_name(dest.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(mode=0o700, parents=True)
    try:
        proc = Restic(cfg, repo).run(
            "restore",
            backup["snapshots"]["files"],
            "--target",
            str(stage),
            "--include",
            source,
            "--verify",
            ok=range(256),
        )
        restored = stage / source.lstrip("/")
        if proc.returncode != 0 or not restored.is_dir():
            raise Refused(
                f"backup {backup['name']} is damaged: restic cannot restore its {args.part} "
                f"({last_lines(proc.stderr) or 'nothing restored'}); refusing it, nothing was "
                "changed"
            )
        if args.owner:
            user, _, group = str(args.owner).partition(":")
            if user:
                shutil.chown(restored, user=user)
            if group:
                shutil.chown(restored, group=group)
        if args.mode:
            os.chmod(restored, int(args.mode, 8))
        if dest.exists():
            dest.rmdir()
        restored.rename(dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    files = sum(len(f) for _, _, f in os.walk(dest))
    return {"backup": backup["name"], "part": args.part, "dest": str(dest), "files": files}


def cmd_restore_db(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Load the dump into a database (dropped and re-created) after reading it back whole."""
    repo = cfg.repository(args.repository)
    backup = resolve(cfg, repo, args.name)
    facts = read_facts(cfg, repo, backup)
    if facts.get("db_engine") != cfg.db_engine:
        raise Refused(
            f"backup {backup['name']} is a {facts.get('db_engine')} dump; "
            f"this host runs {cfg.db_engine}"
        )
    for ident in (args.database, args.owner):
        if not DB_IDENT_RE.match(ident):
            raise BackupError(f"not a database or user name: {ident!r}")
    # Read it through once before the database is dropped: a damaged one is refused here.
    read_dump(cfg, repo, backup, facts)
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
        load = mariadb_client(cfg, "--default-character-set=utf8mb4", args.database)
    else:
        output(as_postgres(["dropdb", "--if-exists", args.database]))
        output(
            as_postgres(
                ["createdb", "-O", args.owner, "-E", "UTF8", "-T", "template0", args.database]
            )
        )
        load = as_postgres(
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
    loader = subprocess.Popen(  # noqa: S603 - argument list, no shell
        load, stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert loader.stdin is not None and loader.stderr is not None
    try:
        read_dump(cfg, repo, backup, facts, sink=loader.stdin)
    finally:
        loader.stdin.close()
        err = loader.stderr.read().decode(errors="replace")
        loader.wait()
    if loader.returncode != 0:
        raise BackupError(f"loading the dump into {args.database} failed: {last_lines(err)}")
    return {"backup": backup["name"], "database": args.database}


# ---- command line --------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    main.add_argument("--config", default="/etc/mjp/moodle-backup.json", type=Path)
    sub = main.add_subparsers(dest="command", required=True)
    backup = sub.add_parser("backup", help="back up the active colour, copy, apply retention")
    backup.add_argument("--colour", help="back up this colour instead of the active one")
    backup.add_argument("--now", help="time of the backup (ISO 8601; for tests and imports)")
    backup.add_argument("--no-prune", action="store_true")
    for name, text in (
        ("list", "complete backups, newest first"),
        ("verify", "read a backup's facts and database dump back whole"),
        ("prune", "apply the retention policy (restic forget --prune)"),
        ("check", "restic check with a read-data subset on every repository"),
        ("restore-files", "restore moodledata or code into a new directory"),
        ("restore-db", "load the dump into a database (dropped first)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--repository", default="", help="repository name (default: the first)")
        if name in ("verify", "restore-files", "restore-db"):
            cmd.add_argument("name", help="backup name or latest")
        if name == "prune":
            cmd.add_argument("--dry-run", action="store_true")
        if name == "check":
            cmd.add_argument("--read-data-subset", default="", help="e.g. 5%%, 1/7, 100%%")
        if name == "restore-files":
            cmd.add_argument("--part", choices=["moodledata", "code"], required=True)
            cmd.add_argument("--dest", required=True)
            cmd.add_argument("--owner", default="", help="user:group of the top directory")
            cmd.add_argument("--mode", default="", help="octal mode of the top directory")
        if name == "restore-db":
            cmd.add_argument("--database", required=True)
            cmd.add_argument("--owner", required=True, help="the database user of Moodle")
    sub.add_parser("init", help="create the repositories that do not exist yet")
    return main


COMMANDS = {
    "backup": cmd_backup,
    "list": cmd_list,
    "verify": cmd_verify,
    "prune": cmd_prune,
    "check": cmd_check,
    "init": cmd_init,
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
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
