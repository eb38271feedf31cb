"""The restic glue of the moodle_backup role (ltihub.backup).

Two kinds of tests:
- command lines, environment, excludes, facts and listings, checked without running
  anything (no secret may reach a command line);
- whole backups and restores of a small fake site with the real restic binary in a
  temporary repository, with fake ``mariadb-dump`` / ``mariadb`` commands on PATH that
  print and record the "database". These skip when restic is not installed
  (``apt-get install restic``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ltihub import backup as bk

UTC = dt.UTC
RESTIC = shutil.which("restic") or "restic"
HAVE_RESTIC = shutil.which("restic") is not None
needs_restic = pytest.mark.skipif(
    not HAVE_RESTIC, reason="restic is not installed here (apt-get install restic)"
)


def settings(tmp: Path, **changes: Any) -> dict[str, Any]:
    """The glue's settings for a site under tmp, as the role writes them."""
    data: dict[str, Any] = {
        "repositories": [{"name": "local", "url": str(tmp / "repo")}],
        "password_file": str(tmp / "password"),
        "fact_file": str(tmp / "moodle.fact"),
        "facts_dir": str(tmp / "facts"),
        "cache_dir": str(tmp / "cache"),
        "host": "moodle1",
        "moodledata_exclude": ["cache", "localcache", "sessions", "temp", "trashdir"],
        "reserve_mb": 1,
    }
    data.update(changes)
    return data


def make_cfg(tmp: Path, **changes: Any) -> bk.Config:
    return bk.Config.from_dict(settings(tmp, **{"keep_daily": 7, "keep_weekly": 4, **changes}))


SITE = {
    "colour": "blue",
    "moodle": {"version": "2024100701.01", "release": "4.5.1 (Build: 1)", "deployed_as": "4.5.1"},
    "db_name": "moodle_blue",
    "dataroot": "/srv/moodledata/blue",
    "release_dir": "/srv/moodle/releases/blue-4.5.1-abc",
    "public_layout": False,
}
WHEN = dt.datetime(2025, 1, 16, 2, 30, tzinfo=UTC)


# ---- command lines and environment ------------------------------------------------------


def test_the_password_reaches_restic_only_as_a_file(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    repo = cfg.repositories[0]
    env = bk.restic_env(cfg, repo, {"PATH": "/usr/bin", "RESTIC_PASSWORD": "leaked", "HOME": "/"})
    assert env["RESTIC_PASSWORD_FILE"] == str(tmp_path / "password")
    assert env["RESTIC_REPOSITORY"] == str(tmp_path / "repo")
    assert "RESTIC_PASSWORD" not in env  # an inherited password never wins over the file
    argv = bk.restic_argv(cfg, repo, *bk.db_backup_args(cfg, "n", SITE, WHEN))
    assert not any("password" in a.lower() for a in argv)
    assert str(tmp_path / "repo") not in argv  # the address too goes by the environment


def test_credentials_come_from_the_env_file_not_argv(tmp_path: Path) -> None:
    env_file = tmp_path / "rest.env"
    env_file.write_text(
        "# REST server\nRESTIC_REPOSITORY=rest:https://u:secret@backup:8000/m/\n\n"
        "AWS_ACCESS_KEY_ID=key\n"
    )
    cfg = make_cfg(
        tmp_path,
        repositories=[
            {"name": "rest", "url": "rest:https://backup:8000/m/", "env_file": str(env_file)}
        ],
    )
    repo = cfg.repositories[0]
    env = bk.restic_env(cfg, repo, {"AWS_SECRET_ACCESS_KEY": "from-the-caller"})
    assert env["RESTIC_REPOSITORY"] == "rest:https://u:secret@backup:8000/m/"
    assert env["AWS_ACCESS_KEY_ID"] == "key"
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert not any("secret" in a for a in bk.restic_argv(cfg, repo, "snapshots"))


def test_a_bad_env_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.env").write_text("export X=1\n")
    with pytest.raises(bk.BackupError, match="KEY=VALUE"):
        bk.read_env_file(str(tmp_path / "bad.env"))
    with pytest.raises(bk.BackupError, match="cannot read"):
        bk.read_env_file(str(tmp_path / "missing.env"))


def test_copy_reads_the_source_from_the_environment(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        repositories=[
            {"name": "local", "url": "/srv/r"},
            {"name": "off", "url": "sftp:b@h:/r", "sftp_command": "ssh -p 2222 b@h -s sftp"},
        ],
    )
    local, off = cfg.repositories
    env = bk.restic_env(cfg, off, {}, source=local)
    assert env["RESTIC_FROM_REPOSITORY"] == "/srv/r"
    assert env["RESTIC_FROM_PASSWORD_FILE"] == env["RESTIC_PASSWORD_FILE"]
    assert env["RESTIC_REPOSITORY"] == "sftp:b@h:/r"
    assert bk.restic_argv(cfg, off, "copy")[:3] == [
        "restic",
        "-o",
        "sftp.command=ssh -p 2222 b@h -s sftp",
    ]


def test_the_dump_goes_in_from_stdin_with_tags_and_time(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    cfg = make_cfg(tmp_path)
    args = bk.db_backup_args(cfg, "20250116T023000Z-blue", SITE, WHEN)
    assert args[:5] == ["backup", "--json", "--stdin", "--stdin-filename", "moodle_blue.sql"]
    assert args[args.index("--time") + 1] == "2025-01-16 02:30:00"
    assert args[args.index("--host") + 1] == "moodle1"
    tags = [args[i + 1] for i, a in enumerate(args) if a == "--tag"]
    assert tags == [
        "mjp",
        "mjp-backup:20250116T023000Z-blue",
        "part:database",
        "colour:blue",
        "release:4.5.1",
    ]
    pg = make_cfg(tmp_path, db_engine="postgresql")
    assert "moodle_blue.dump" in bk.db_backup_args(pg, "n", SITE, WHEN)


def test_files_backup_excludes_only_top_level_names_of_moodledata(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, moodledata_exclude=["cache", "temp", "odd[1]"])
    args = bk.files_backup_args(cfg, "n", SITE, WHEN)
    excludes = [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
    assert excludes == [
        "/srv/moodledata/blue/cache",
        "/srv/moodledata/blue/temp",
        "/srv/moodledata/blue/odd\\[1\\]",
    ]
    assert args[-3:] == [str(tmp_path / "facts"), SITE["dataroot"], SITE["release_dir"]]
    assert "part:files" in args


def test_dump_commands_carry_no_password(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, db_socket="/run/mysqld/mysqld.sock")
    argv = bk.db_dump_argv(cfg, "moodle_blue")
    assert argv[0] == "mariadb-dump" and "--single-transaction" in argv
    assert "--user=root" in argv and not any(a.startswith("--password") for a in argv)
    pg = bk.db_dump_argv(make_cfg(tmp_path, db_engine="postgresql"), "moodle_blue")
    assert pg == ["runuser", "-u", "postgres", "--", "pg_dump", "-Fc", "moodle_blue"]
    with pytest.raises(bk.BackupError):
        bk.db_dump_argv(cfg, "moodle; DROP")


def test_retention_forgets_each_part_in_its_own_group(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, keep_daily=3, keep_weekly=0)
    assert bk.forget_args(cfg, "database", prune=False, dry_run=True) == [
        "forget",
        "--json",
        "--tag",
        "mjp,part:database",
        "--group-by",
        "host",
        "--keep-daily",
        "3",
        "--dry-run",
    ]
    assert bk.forget_args(cfg, "files", prune=True, dry_run=False)[-3:] == [
        "--keep-daily",
        "3",
        "--prune",
    ]


def test_check_reads_a_subset(tmp_path: Path) -> None:
    assert bk.check_args("5%") == ["check", "--read-data-subset=5%"]
    assert bk.check_args("1/7") == ["check", "--read-data-subset=1/7"]
    with pytest.raises(bk.BackupError):
        bk.check_args("5%; rm -rf /")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repositories": []}, "no repository"),
        ({"db_engine": "oracle"}, "db_engine"),
        ({"check_subset": "all"}, "check_subset"),
        ({"facts_dir": "relative"}, "absolute"),
        ({"surprise": 1}, "bad settings"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(bk.BackupError, match=message):
        make_cfg(tmp_path, **change)


def test_tags_hold_no_commas_or_spaces() -> None:
    assert bk.tag_value("4.5.1+ (Build: 20241213)") == "4.5.1+__Build__20241213_"
    assert bk.tag_value("") == "unknown"


# ---- facts and listings -----------------------------------------------------------------


def test_facts_hold_what_a_restore_needs(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    dump = {"file": "moodle_blue.sql", "bytes": 12, "sha256": "ab" * 32}
    facts = bk.build_facts("n", WHEN, SITE, dump, {"database": 1, "moodledata": 2}, cfg)
    assert facts["created"] == "2025-01-16T02:30:00Z"
    assert facts["moodle"]["release"] == "4.5.1 (Build: 1)"
    assert facts["colour"] == "blue" and facts["db_engine"] == "mariadb"
    assert facts["dump"] == dump and facts["sizes"]["moodledata"] == 2
    assert facts["dataroot"] == SITE["dataroot"] and facts["public_layout"] is False
    json.dumps(facts)  # plain JSON


def snap(sid: str, name: str, part: str, colour: str = "blue") -> dict[str, Any]:
    tags = ["mjp", f"mjp-backup:{name}", f"part:{part}", f"colour:{colour}", "release:4.5"]
    return {"id": sid, "time": "t", "tags": tags}


def test_a_backup_is_complete_only_with_both_parts() -> None:
    snaps = [
        snap("1", "20250101T023000Z-blue", "database"),
        snap("2", "20250101T023000Z-blue", "files"),
        snap("3", "20250102T023000Z-green", "database", "green"),  # files part missing
        snap("4", "20250103T023000Z-blue", "files"),
        snap("5", "20250103T023000Z-blue", "database"),
        {"id": "6", "tags": ["someone-else"]},
    ]
    listed = bk.group_backups(snaps)
    assert [b["name"] for b in listed] == ["20250103T023000Z-blue", "20250101T023000Z-blue"]
    assert listed[0]["snapshots"] == {"database": "5", "files": "4"}
    assert listed[0]["colour"] == "blue" and listed[0]["release"] == "4.5"


def test_forget_output_names_the_removed_backups() -> None:
    out = json.dumps(
        [
            {"keep": [snap("1", "20250103T023000Z-blue", "files")], "remove": None},
            {
                "keep": [],
                "remove": [
                    snap("2", "20250101T023000Z-blue", "files"),
                    snap("3", "20250102T023000Z-blue", "files"),
                ],
            },
        ]
    )
    assert bk.forgotten(out) == ["20250102T023000Z-blue", "20250101T023000Z-blue"]
    assert bk.forgotten("") == []


def test_free_space_check_refuses_and_says_why(tmp_path: Path) -> None:
    with pytest.raises(bk.Refused, match="not enough free space.*Nothing was written"):
        bk.check_free_space(tmp_path / "not-yet", {"database": 1 << 60}, 0)
    bk.check_free_space(tmp_path, {"database": 1}, 0)


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bk.main(["--config", str(tmp_path / "missing.json"), "list"]) == bk.EXIT_ERROR
    assert "cannot read the settings" in capsys.readouterr().err
    config = tmp_path / "settings.json"
    config.write_text(
        json.dumps(
            {
                "repositories": [{"name": "local", "url": str(tmp_path / "repo")}],
                "password_file": str(tmp_path / "pw"),
                "restic": str(tmp_path / "no-restic"),
            }
        )
    )
    assert bk.main(["--config", str(config), "list"]) == bk.EXIT_ERROR
    assert "not installed" in capsys.readouterr().err


# ---- real restic, fake site and database ------------------------------------------------

FAKE_DUMP = """#!/bin/sh
# fake mariadb-dump: the "database" is a file; FAIL_DUMP makes it die half-way
head -c 100 "$FAKE_DB"
if [ -n "$FAIL_DUMP" ]; then echo "mariadb-dump: Lost connection" >&2; exit 2; fi
tail -c +101 "$FAKE_DB"
"""
FAKE_CLIENT = """#!/bin/sh
# fake mariadb: -e statements are logged; otherwise stdin is loaded into the database
for arg in "$@"; do
  if [ "$prev" = "-e" ]; then echo "$arg" >> "$FAKE_DB.log"; echo 1234; exit 0; fi
  prev="$arg"
done
cat > "$FAKE_DB"
"""


class Site:
    """A fake Moodle site: fact file, code, moodledata and a "database" file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.release = root / "srv/moodle/releases/blue-4.5.1-abc"
        self.data = root / "srv/moodledata/blue"
        self.db = root / "db.sql"
        self.release.mkdir(parents=True)
        (self.release / "version.php").write_text(
            "<?php\n$version = 2024100701.01;\n$release = '4.5.1 (Build: 20241213)';\n"
        )
        (self.release / "config.php").write_text("<?php $CFG->dbpass = 'x';\n")
        (self.release / "mod/lticontainer").mkdir(parents=True)
        (self.release / "mod/lticontainer/version.php").write_text("<?php\n")
        for sub in ("filedir/ab/cd", "cache", "temp", "localcache", "sessions"):
            (self.data / sub).mkdir(parents=True)
        self.add_file("first")
        (self.data / "cache/junk").write_text("disposable")
        (self.data / "temp/junk").write_text("disposable")
        self.db.write_bytes(b"-- dump\n" + b"INSERT INTO t VALUES (1);\n" * 100)
        fact = {
            "active_colour": "blue",
            "colours": {
                "blue": {
                    "db_name": "moodle_blue",
                    "dataroot": str(self.data),
                    "release_dir": str(self.release),
                    "release": "4.5.1",
                    "public_layout": False,
                }
            },
        }
        (root / "moodle.fact").write_text(json.dumps(fact))
        (root / "password").write_text("correct horse battery staple\n")
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, text in (("mariadb-dump", FAKE_DUMP), ("mariadb", FAKE_CLIENT)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)

    def add_file(self, text: str) -> None:
        (self.data / "filedir/ab/cd" / f"abcd{text}").write_text(text * 1000 + os.urandom(8).hex())

    def tree(self, root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    fake = Site(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DB", str(fake.db))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield fake
    time.tzset()


def write_config(tmp: Path, **changes: Any) -> Path:
    path = tmp / "settings.json"
    path.write_text(json.dumps(settings(tmp, **changes)))
    return path


def cli(config: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run the glue as root's command line would: (exit code, JSON result, stderr)."""
    proc = subprocess.run(  # noqa: S603 - our module, argument list
        [sys.executable, "-m", "ltihub.backup", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(bk.__file__).resolve().parents[1])},
    )
    result = json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout else {}
    return proc.returncode, result, proc.stderr


def restic_out(tmp: Path, *args: str) -> str:
    """restic itself on the test repository (what an operator would type)."""
    env = {
        **os.environ,
        "RESTIC_REPOSITORY": str(tmp / "repo"),
        "RESTIC_PASSWORD_FILE": str(tmp / "password"),
        "RESTIC_CACHE_DIR": str(tmp / "cache"),
    }
    out = subprocess.run(  # noqa: S603 - argument list
        [RESTIC, *args, "--json"], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout


def restic_json(tmp: Path, *args: str) -> Any:
    return json.loads(restic_out(tmp, *args))


@needs_restic
def test_backup_and_restore_bring_back_every_file_and_the_dump(site: Site, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    rc, result, err = cli(config, "init")
    assert rc == 0, err
    assert result["created"] == ["local"]
    assert cli(config, "init")[1]["changed"] is False  # idempotent

    rc, result, err = cli(config, "backup", "--now", "2025-01-16T02:30:00Z")
    assert rc == 0, err
    assert result["backup"] == "20250116T023000Z-blue"
    assert result["dump_bytes"] == site.db.stat().st_size
    assert not list(tmp_path.rglob("moodle_blue.sql")), "the dump touched the disk"

    listing = cli(config, "list")[1]["backups"]
    assert [b["name"] for b in listing] == ["20250116T023000Z-blue"]
    assert listing[0]["colour"] == "blue" and listing[0]["release"] == "4.5.1"
    files_snap = listing[0]["snapshots"]["files"]
    stored = {n.get("path") for n in _ls(tmp_path, files_snap)}
    assert f"{site.data}/filedir/ab/cd/abcdfirst" in stored
    assert f"{site.release}/config.php" in stored
    assert f"{site.release}/mod/lticontainer/version.php" in stored
    assert not any(str(p).startswith((f"{site.data}/cache", f"{site.data}/temp")) for p in stored)

    rc, verified, err = cli(config, "verify", "latest")
    assert rc == 0, err
    facts = verified["facts"]
    assert facts["moodle"]["release"] == "4.5.1 (Build: 20241213)"
    assert facts["colour"] == "blue" and facts["db_engine"] == "mariadb"
    assert facts["dump"]["bytes"] == site.db.stat().st_size

    original_data, original_code = site.tree(site.data), site.tree(site.release)
    original_db = site.db.read_bytes()
    dest = tmp_path / "restored"
    rc, _, err = cli(config, "restore-files", "latest", "--part", "moodledata", "--dest", str(dest))
    assert rc == 0, err
    expected = {k: v for k, v in original_data.items() if not k.startswith(("cache/", "temp/"))}
    assert site.tree(dest) == expected
    code = tmp_path / "code"
    rc, _, err = cli(config, "restore-files", "latest", "--part", "code", "--dest", str(code))
    assert rc == 0, err
    assert site.tree(code) == original_code

    site.db.write_text("wrecked")
    rc, _, err = cli(config, "restore-db", "latest", "--database", "moodle_x", "--owner", "moodle")
    assert rc == 0, err
    assert site.db.read_bytes() == original_db
    assert "DROP DATABASE IF EXISTS `moodle_x`" in Path(f"{site.db}.log").read_text()


def _ls(tmp: Path, snapshot: str) -> list[dict[str, Any]]:
    out = restic_out(tmp, "ls", snapshot)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@needs_restic
def test_a_corrupted_pack_is_refused_before_anything_changes(site: Site, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert cli(config, "init")[0] == 0
    rc, _, err = cli(config, "backup")
    assert rc == 0, err
    for pack in (tmp_path / "repo/data").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            for offset in range(0, len(data), 256):  # every blob in the pack
                data[offset] ^= 1
            pack.chmod(0o600)
            pack.write_bytes(bytes(data))

    before_db = site.db.read_bytes()
    rc, _, err = cli(config, "verify", "latest")
    assert rc == bk.EXIT_REFUSED and "is damaged" in err
    rc, _, err = cli(config, "restore-db", "latest", "--database", "moodle_x", "--owner", "moodle")
    assert rc == bk.EXIT_REFUSED and "nothing was changed" in err
    assert site.db.read_bytes() == before_db
    assert "DROP" not in Path(f"{site.db}.log").read_text(), "dropped for a damaged backup"
    dest = tmp_path / "restored"
    rc, _, err = cli(config, "restore-files", "latest", "--part", "moodledata", "--dest", str(dest))
    assert rc == bk.EXIT_REFUSED
    assert not dest.exists() and not dest.with_name("restored.partial").exists()
    rc, _, err = cli(config, "check", "--read-data-subset", "100%")
    assert rc == bk.EXIT_REFUSED and "repository check failed" in err


@needs_restic
def test_retention_keeps_what_the_policy_says(site: Site, tmp_path: Path) -> None:
    config = write_config(tmp_path, keep_daily=3, keep_weekly=2)
    assert cli(config, "init")[0] == 0
    # backups at 02:30 on days of three ISO weeks (Wed 2025-01-01 to Thu 2025-01-16), two
    # on the last day: several days in week 2 show that only the newest of a week stays
    days = (1, 5, 8, 10, 12, 13, 14, 15, 16)
    stamps = [f"2025-01-{day:02d}T02:30:00Z" for day in days] + ["2025-01-16T14:00:00Z"]
    for stamp in stamps:
        site.add_file(stamp.replace(":", ""))
        rc, _, err = cli(config, "backup", "--no-prune", "--now", stamp)
        assert rc == 0, err
    assert len(cli(config, "list")[1]["backups"]) == len(stamps)
    # daily: the newest of Jan 16, 15, 14; weekly: ISO week 3 (Jan 16) and week 2 (Sun Jan 12)
    kept = [
        "20250116T140000Z-blue",
        "20250115T023000Z-blue",
        "20250114T023000Z-blue",
        "20250112T023000Z-blue",
    ]
    rc, dry, err = cli(config, "prune", "--dry-run")
    assert rc == 0, err
    assert sorted(dry["pruned"]) == sorted(set(_names(stamps)) - set(kept))
    assert len(cli(config, "list")[1]["backups"]) == len(stamps)  # a dry run removes nothing
    rc, _, err = cli(config, "prune")
    assert rc == 0, err
    assert [b["name"] for b in cli(config, "list")[1]["backups"]] == kept
    assert len(restic_json(tmp_path, "snapshots")) == 2 * len(kept)  # both parts of each
    assert cli(config, "prune", "--dry-run")[1]["pruned"] == []


def _names(stamps: list[str]) -> list[str]:
    return [bk.backup_name(bk.parse_now(s), "blue") for s in stamps]


@needs_restic
def test_a_failed_dump_leaves_no_snapshot_and_fails(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path)
    assert cli(config, "init")[0] == 0
    monkeypatch.setenv("FAIL_DUMP", "1")
    rc, _, err = cli(config, "backup")
    assert rc == bk.EXIT_ERROR
    assert "the database dump failed" in err and "Lost connection" in err
    assert restic_json(tmp_path, "snapshots") == []


@needs_restic
def test_not_enough_space_is_refused_with_nothing_written(site: Site, tmp_path: Path) -> None:
    config = write_config(tmp_path, reserve_mb=10**12)
    assert cli(config, "init")[0] == 0
    rc, _, err = cli(config, "backup")
    assert rc == bk.EXIT_REFUSED and "not enough free space" in err
    assert restic_json(tmp_path, "snapshots") == []


@needs_restic
def test_a_second_repository_gets_a_copy(site: Site, tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        repositories=[
            {"name": "local", "url": str(tmp_path / "repo")},
            {"name": "second", "url": str(tmp_path / "second")},
        ],
    )
    assert cli(config, "init")[1]["created"] == ["local", "second"]
    rc, result, err = cli(config, "backup")
    assert rc == 0, err
    assert result["copied_to"] == ["second"]
    names = [b["name"] for b in cli(config, "list", "--repository", "second")[1]["backups"]]
    assert names == [result["backup"]]
    rc, _, err = cli(config, "verify", "latest", "--repository", "second")
    assert rc == 0, err


def test_unused_argparse_namespace_shapes() -> None:
    """The parser accepts what the playbooks pass (argument names stay stable)."""
    parser = bk.parser()
    ns: argparse.Namespace = parser.parse_args(
        ["restore-files", "latest", "--part", "code", "--dest", "/x", "--repository", "local"]
    )
    assert (ns.command, ns.name, ns.part, ns.repository) == (
        "restore-files",
        "latest",
        "code",
        "local",
    )
    ns = parser.parse_args(["check", "--read-data-subset", "100%"])
    assert ns.read_data_subset == "100%"
