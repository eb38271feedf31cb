"""The backup script of the moodle_backup role: retention, manifest, damaged archives.

roles/moodle_backup/files/mjp_moodle_backup.py is a stand-alone script (installed on the
Moodle host), so it is imported by path. Archives are written and read for real with the
script's own tar/gzip code into a temporary directory; no database is involved.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles/moodle_backup/files/mjp_moodle_backup.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mjp_moodle_backup", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["mjp_moodle_backup"] = module
    spec.loader.exec_module(module)
    return module


mb: Any = _load()
UTC = dt.timezone.utc  # noqa: UP017 - the script runs on Python 3.9 too


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def names(*times: str, colour: str = "blue") -> list[str]:
    return [str(mb.backup_name(at(t), colour)) for t in times]


# ---- names and retention ------------------------------------------------------------------


def test_backup_names_are_utc_and_sort_by_time() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    name = mb.backup_name(dt.datetime(2025, 3, 1, 2, 30, tzinfo=berlin), "green")
    assert name == "20250301T013000Z-green"
    assert mb.parse_name(name) == at("2025-03-01T01:30:00")
    assert mb.parse_name("20250301T013000Z-green.partial") is None
    assert mb.parse_name("lost+found") is None


def test_keep_daily_keeps_newest_of_each_recent_day() -> None:
    # two backups a day for five days (newest 2025-01-10)
    all_names = names(*(f"2025-01-{d:02d}T{h:02d}:00:00" for d in range(6, 11) for h in (2, 14)))
    keep = mb.select_keep(all_names, 3, 0)
    assert keep == set(names("2025-01-10T14:00:00", "2025-01-09T14:00:00", "2025-01-08T14:00:00"))


def test_keep_weekly_reaches_back_by_iso_week() -> None:
    # one backup a day for 4 weeks: 2025-01-06 is a Monday (ISO week 2)
    days = [at("2025-01-06T02:00:00") + dt.timedelta(days=i) for i in range(28)]
    all_names = [mb.backup_name(d, "blue") for d in days]
    keep = mb.select_keep(all_names, 2, 3)
    # daily: 02-02 and 02-01; weekly: newest of weeks 5 (02-02, a Sunday), 4 (01-26), 3 (01-19)
    assert keep == set(
        names(
            "2025-02-02T02:00:00",
            "2025-02-01T02:00:00",
            "2025-01-26T02:00:00",
            "2025-01-19T02:00:00",
        )
    )


def test_retention_never_deletes_the_newest_or_foreign_dirs() -> None:
    keep = mb.select_keep([*names("2025-01-01T00:00:00", "2024-12-01T00:00:00"), "notes"], 0, 0)
    assert keep == set(names("2025-01-01T00:00:00"))
    assert mb.select_keep([], 7, 4) == set()


def test_prune_deletes_what_the_policy_drops(tmp_path: Path) -> None:
    cfg = mb.Config(backup_dir=tmp_path, keep_daily=2, keep_weekly=1)
    for name in names("2025-01-01T02:00:00", "2025-01-02T02:00:00", "2025-01-03T02:00:00"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / "20250104T020000Z-blue").mkdir()  # no manifest: not complete, not counted
    (tmp_path / "20250104T020000Z-blue.partial").mkdir()  # left over by a crash
    assert mb.prune(cfg) == names("2025-01-01T02:00:00")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["20250102T020000Z-blue", "20250103T020000Z-blue", "20250104T020000Z-blue"]


def test_now_option_parses_iso_times() -> None:
    assert mb.parse_now("2025-01-02T03:04:05Z") == at("2025-01-02T03:04:05")
    assert mb.parse_now("2025-01-02T04:04:05+01:00") == at("2025-01-02T03:04:05")
    with pytest.raises(mb.BackupError, match="not an ISO 8601 time"):
        mb.parse_now("yesterday")


# ---- archives, manifest, damage -------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    data = tmp_path / "moodledata"
    (data / "filedir" / "ab" / "cd").mkdir(parents=True)
    (data / "filedir" / "ab" / "cd" / "abcd1234").write_bytes(b"a file in the pool\n" * 100)
    (data / "muc").mkdir()
    (data / "muc" / "config.php").write_text("<?php // cache config\n")
    for skip in ("cache", "localcache", "sessions", "temp", "trashdir"):
        (data / skip).mkdir()
        (data / skip / "junk").write_text("disposable")
    (data / "climaintenance.html").write_text("maintenance")
    os.chmod(data / "filedir", 0o2770)  # noqa: S103 - moodledata mode
    return data


EXCLUDE = ["cache", "localcache", "sessions", "temp", "trashdir", "climaintenance.html"]


def make_backup(tmp_path: Path, site: Path, encryption: str = "none") -> tuple[Any, Path]:
    """A backup dir with the moodledata archive and a manifest, as cmd_backup writes it."""
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    cfg = mb.Config(
        backup_dir=tmp_path / "backups",
        encryption=encryption,
        passphrase_file=str(passphrase),
        moodledata_exclude=EXCLUDE,
    )
    name = "20250101T020000Z-blue"
    backup = cfg.backup_dir / name
    backup.mkdir(parents=True)
    ext = ".gpg" if encryption == "gpg" else ""
    with mb.gpg_home() as home:
        info = mb.write_tar(cfg, home, site, EXCLUDE, backup / f"moodledata.tar.gz{ext}")
    archives = {
        f"moodledata.tar.gz{ext}": mb.archive_entry(
            backup / f"moodledata.tar.gz{ext}", "moodledata", **info
        )
    }
    site_info = {"colour": "blue", "moodle": {"version": "2024100700.00", "release": "4.5"}}
    manifest = mb.build_manifest(
        name, at("2025-01-01T02:00:00"), site_info, archives, encryption, 1.5
    )
    (backup / "manifest.json").write_text(json.dumps(manifest))
    return cfg, backup


def test_manifest_lists_every_member_with_sha256(tmp_path: Path, site: Path) -> None:
    _, backup = make_backup(tmp_path, site)
    manifest = mb.read_manifest(backup)
    entry = manifest["archives"]["moodledata.tar.gz"]
    assert manifest["colour"] == "blue"
    assert manifest["moodle"]["release"] == "4.5"
    assert set(entry["members"]) == {"filedir/ab/cd/abcd1234", "muc/config.php"}
    assert entry["members"]["muc/config.php"] == mb.sha256_file(site / "muc" / "config.php")
    assert entry["size"] == (backup / "moodledata.tar.gz").stat().st_size
    assert manifest["total_size"] == entry["size"]
    assert mb.check_archives(backup, manifest) == []


def test_flipped_byte_is_refused(tmp_path: Path, site: Path) -> None:
    cfg, backup = make_backup(tmp_path, site)
    archive = backup / "moodledata.tar.gz"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    problems = mb.check_archives(backup, mb.read_manifest(backup))
    assert len(problems) == 1 and "sha256" in problems[0]
    args = argparse.Namespace(name=backup.name, deep=False)
    with pytest.raises(mb.Refused, match="is damaged"):
        mb.cmd_verify(cfg, args)


def test_truncated_or_missing_archive_is_refused(tmp_path: Path, site: Path) -> None:
    _, backup = make_backup(tmp_path, site)
    archive = backup / "moodledata.tar.gz"
    archive.write_bytes(archive.read_bytes()[:100])
    assert "size 100 bytes" in mb.check_archives(backup, mb.read_manifest(backup))[0]
    archive.unlink()
    assert mb.check_archives(backup, mb.read_manifest(backup)) == ["moodledata.tar.gz: missing"]


def test_missing_or_garbled_manifest_is_refused(tmp_path: Path, site: Path) -> None:
    _, backup = make_backup(tmp_path, site)
    (backup / "manifest.json").write_text("{not json")
    with pytest.raises(mb.Refused, match="damaged"):
        mb.read_manifest(backup)
    (backup / "manifest.json").unlink()
    with pytest.raises(mb.Refused, match="no manifest.json"):
        mb.read_manifest(backup)


def test_deep_verify_finds_a_member_the_manifest_does_not_vouch_for(
    tmp_path: Path, site: Path
) -> None:
    cfg, backup = make_backup(tmp_path, site)
    manifest = mb.read_manifest(backup)
    assert mb.deep_check(cfg, backup, manifest) == []
    manifest["archives"]["moodledata.tar.gz"]["members"]["muc/config.php"] = "0" * 64
    assert "1 member(s) differ" in " ".join(mb.deep_check(cfg, backup, manifest))


def test_restore_files_gives_back_the_tree_without_the_disposable_parts(
    tmp_path: Path, site: Path
) -> None:
    cfg, backup = make_backup(tmp_path, site)
    dest = tmp_path / "restored"
    args = argparse.Namespace(
        name="latest", part="moodledata", dest=str(dest), owner="", mode="2770"
    )
    result = mb.cmd_restore_files(cfg, args)
    assert result["files"] == 2
    assert (dest / "filedir/ab/cd/abcd1234").read_bytes() == b"a file in the pool\n" * 100
    assert not (dest / "cache").exists() and not (dest / "climaintenance.html").exists()
    assert (dest / "filedir").stat().st_mode & 0o7777 == 0o2770
    assert dest.stat().st_mode & 0o7777 == 0o2770
    with pytest.raises(mb.Refused, match="not empty"):
        mb.cmd_restore_files(cfg, args)


def test_restore_files_refuses_a_damaged_archive_before_touching_anything(
    tmp_path: Path, site: Path
) -> None:
    cfg, backup = make_backup(tmp_path, site)
    archive = backup / "moodledata.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    dest = tmp_path / "restored"
    args = argparse.Namespace(
        name=backup.name, part="moodledata", dest=str(dest), owner="", mode=""
    )
    with pytest.raises(mb.Refused, match="damaged, refusing"):
        mb.cmd_restore_files(cfg, args)
    assert not dest.exists() and not (tmp_path / "restored.partial").exists()


@pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")
def test_encrypted_archive_round_trip(tmp_path: Path, site: Path) -> None:
    cfg, backup = make_backup(tmp_path, site, encryption="gpg")
    raw = (backup / "moodledata.tar.gz.gpg").read_bytes()
    assert b"a file in the pool" not in raw
    assert mb.deep_check(cfg, backup, mb.read_manifest(backup)) == []
    dest = tmp_path / "restored"
    args = argparse.Namespace(
        name=backup.name, part="moodledata", dest=str(dest), owner="", mode=""
    )
    mb.cmd_restore_files(cfg, args)
    assert (dest / "muc/config.php").read_text() == "<?php // cache config\n"
    Path(cfg.passphrase_file).write_text("wrong\n")
    assert "unreadable" in " ".join(mb.deep_check(cfg, backup, mb.read_manifest(backup)))


def test_free_space_check_refuses_clearly(tmp_path: Path) -> None:
    with pytest.raises(mb.Refused, match="not enough free space .* Nothing was written"):
        mb.check_free_space(tmp_path, {"database": 2**60, "moodledata": 0}, 0)
    mb.check_free_space(tmp_path, {"database": 1}, 0)


def test_unsafe_member_names() -> None:
    assert mb.safe_member_name("filedir/ab/cd/x")
    assert not mb.safe_member_name("/etc/passwd")
    assert not mb.safe_member_name("../x")
    assert not mb.safe_member_name("a/../../x")


def test_remote_copy_uses_the_key_and_the_pinned_host_key_only(tmp_path: Path) -> None:
    remote = mb.Remote(
        destination="backup@store.example.edu:/srv/backups/moodle",
        port=2222,
        ssh_key="/etc/mjp/moodle-backup-ssh/id_ed25519",
        known_hosts="/etc/mjp/moodle-backup-ssh/known_hosts",
    )
    argv = mb.rsync_argv(mb.Config(backup_dir=tmp_path, remote=remote))
    ssh = argv[argv.index("-e") + 1]
    assert "StrictHostKeyChecking=yes" in ssh and "BatchMode=yes" in ssh
    assert "-i /etc/mjp/moodle-backup-ssh/id_ed25519" in ssh and "-p 2222" in ssh
    assert "UserKnownHostsFile=/etc/mjp/moodle-backup-ssh/known_hosts" in ssh
    assert "--delete-after" in argv and "--exclude=*.partial" in argv
    assert argv[-2:] == [f"{tmp_path}/", "backup@store.example.edu:/srv/backups/moodle/"]
