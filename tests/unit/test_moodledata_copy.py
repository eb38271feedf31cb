"""The blue-green moodledata copy (roles/moodle_bluegreen/files/mjp_moodledata_copy.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles/moodle_bluegreen/files/mjp_moodledata_copy.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mjp_moodledata_copy", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


copier = _load()
HASH = "ab12" + "0" * 36


def _moodledata(root: Path) -> Path:
    """A small moodledata: file pool, caches, sessions, maintenance file, settings, a symlink."""
    (root / "filedir/ab/12").mkdir(parents=True)
    (root / "filedir/ab/12" / HASH).write_bytes(b"pool content")
    (root / "trashdir/cd/34").mkdir(parents=True)
    (root / "trashdir/cd/34/cd34").write_bytes(b"deleted file")
    for name in ("cache", "localcache", "sessions", "temp"):
        (root / name).mkdir()
        (root / name / "junk").write_text("disposable")
    (root / "climaintenance.html").write_text("<h1>maintenance</h1>")
    (root / "muc").mkdir()
    (root / "muc/config.php").write_text("<?php // cache config")
    os.chmod(root / "muc/config.php", 0o640)
    os.utime(root / "muc/config.php", (1_700_000_000, 1_700_000_000))
    (root / "lang").mkdir()
    (root / "lang/link").symlink_to("../muc/config.php")
    os.chmod(root, 0o2770)  # noqa: S103 -- moodledata's own mode, in a temporary folder
    return root


def test_pool_files_are_hard_linked_and_the_rest_copied(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"

    stats = copier.copy_moodledata(str(src), str(dest))

    pool = dest / "filedir/ab/12" / HASH
    assert pool.read_bytes() == b"pool content"
    assert pool.stat().st_ino == (src / "filedir/ab/12" / HASH).stat().st_ino
    assert (dest / "trashdir/cd/34/cd34").stat().st_ino == (
        src / "trashdir/cd/34/cd34"
    ).stat().st_ino
    settings = dest / "muc/config.php"
    assert settings.read_text() == "<?php // cache config"
    assert settings.stat().st_ino != (src / "muc/config.php").stat().st_ino
    assert oct(settings.stat().st_mode & 0o777) == "0o640"
    assert settings.stat().st_mtime == 1_700_000_000
    assert os.readlink(dest / "lang/link") == "../muc/config.php"
    assert oct(dest.stat().st_mode & 0o7777) == "0o2770"
    assert stats.linked == 2
    assert stats.skipped == 5


def test_disposable_state_and_the_freeze_are_left_behind(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"

    copier.copy_moodledata(str(src), str(dest))

    for name in ("cache", "localcache", "sessions", "temp", "climaintenance.html"):
        assert not (dest / name).exists(), name
    assert (src / "climaintenance.html").exists(), "the source must stay frozen"


def test_a_write_in_one_colour_does_not_reach_the_other(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"
    copier.copy_moodledata(str(src), str(dest))

    (dest / "muc/config.php").write_text("changed in green")
    (dest / "filedir/ab/12" / HASH).unlink()  # Moodle deletes pool files, never rewrites them

    assert (src / "muc/config.php").read_text() == "<?php // cache config"
    assert (src / "filedir/ab/12" / HASH).read_bytes() == b"pool content"


def test_the_old_idle_data_is_replaced_not_merged(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"
    dest.mkdir()
    (dest / "stale-from-last-time").write_text("old")

    copier.copy_moodledata(str(src), str(dest))

    assert not (dest / "stale-from-last-time").exists()
    assert not (tmp_path / "green.partial").exists()
    assert not (tmp_path / "green.old").exists()


def test_plain_method_copies_everything(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"

    stats = copier.copy_moodledata(str(src), str(dest), method="plain")

    pool = dest / "filedir/ab/12" / HASH
    assert pool.stat().st_ino != (src / "filedir/ab/12" / HASH).stat().st_ino
    assert stats.linked == 0
    assert stats.copied + stats.reflinked >= 4


@pytest.mark.parametrize("dest_name", ["blue", "blue/inner"])
def test_overlapping_trees_are_refused(tmp_path: Path, dest_name: str) -> None:
    src = _moodledata(tmp_path / "blue")
    with pytest.raises(ValueError, match="overlap"):
        copier.copy_moodledata(str(src), str(tmp_path / dest_name))
    assert (src / "filedir/ab/12" / HASH).exists()


def test_cli_reports_json_and_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _moodledata(tmp_path / "blue")

    assert copier.main([str(src), str(tmp_path / "green")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["linked"] == 2
    assert "seconds" in report

    assert copier.main([str(tmp_path / "missing"), str(tmp_path / "x")]) == 1
    assert "moodledata copy failed" in capsys.readouterr().err
