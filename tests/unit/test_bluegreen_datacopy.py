"""The blue-green moodledata copy (ltihub.upgrade.datacopy): whole, and pre-copy + sync."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltihub.upgrade import datacopy as copier

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


def _tree(root: Path) -> dict[str, tuple[str, str, int]]:
    """Every entry under root: kind, content (or link target) and mode."""
    out: dict[str, tuple[str, str, int]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path), 0)
        elif path.is_dir():
            out[rel] = ("dir", "", st.st_mode & 0o7777)
        else:
            out[rel] = ("file", path.read_text(), st.st_mode & 0o7777)
    return out


def _live_changes(src: Path) -> None:
    """What users and cron do between the pre-copy and the freeze."""
    new_pool = src / "filedir/ef/56"
    new_pool.mkdir(parents=True)
    (new_pool / ("ef56" + "1" * 36)).write_text("uploaded after the pre-copy")
    (src / "filedir/ab/12" / HASH).unlink()  # an orphan deleted by cron
    settings = src / "muc/config.php"
    settings.write_text("<?php // rewritten by an admin")
    os.utime(settings, (1_700_000_100, 1_700_000_100))
    (src / "lang/link").unlink()
    (src / "lang/link").symlink_to("../elsewhere")
    (src / "models").write_text("was absent")  # a new top-level file
    (src / "trashdir").rename(src / "trash-old")  # a folder gone
    (src / "trashdir").write_text("now a file")  # and a file of that name
    (src / "muc/gone.php").write_text("x")
    os.chmod(src / "muc", 0o750)  # noqa: S103 -- a mode change to carry over, in tmp


def test_precopy_leaves_the_idle_tree_and_builds_beside_it(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"
    dest.mkdir()
    (dest / "frozen-rollback-point").write_text("old")

    stats = copier.copy_moodledata(str(src), str(dest), stage="precopy")

    assert (dest / "frozen-rollback-point").read_text() == "old"
    assert (tmp_path / "green.partial/filedir/ab/12" / HASH).read_text() == "pool content"
    assert stats.linked == 2
    assert stats.stage == "precopy"


def test_sync_after_a_precopy_equals_a_whole_copy_and_relinks_nothing(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    (src / "filedir/ab/12" / ("ab12" + "2" * 36)).write_text("a second pool file")
    dest = tmp_path / "green"
    copier.copy_moodledata(str(src), str(dest), stage="precopy")
    (src / "muc/gone.php").write_text("x")
    copier.copy_moodledata(str(src), str(dest), stage="precopy")  # a re-run starts afresh
    _live_changes(src)
    (src / "muc/gone.php").unlink()

    stats = copier.copy_moodledata(str(src), str(dest), stage="sync")

    whole = tmp_path / "whole"
    copier.copy_moodledata(str(src), str(whole))
    assert _tree(dest) == _tree(whole)
    assert not (tmp_path / "green.partial").exists()
    kept = dest / "filedir/ab/12" / ("ab12" + "2" * 36)
    assert kept.stat().st_ino == (src / "filedir/ab/12" / ("ab12" + "2" * 36)).stat().st_ino
    assert stats.linked == 1  # only the pool file uploaded since the pre-copy
    assert stats.kept >= 1
    assert stats.removed >= 4  # the orphan, the old link, the old settings, trashdir
    assert (dest / "muc/config.php").read_text() == "<?php // rewritten by an admin"
    assert not (dest / "climaintenance.html").exists()
    assert oct((dest / "muc").stat().st_mode & 0o777) == "0o750"


def test_sync_without_a_precopy_copies_whole(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    dest = tmp_path / "green"

    stats = copier.copy_moodledata(str(src), str(dest), stage="sync")

    assert stats.linked == 2
    assert (dest / "filedir/ab/12" / HASH).read_bytes() == b"pool content"


def test_an_entry_vanishing_during_the_precopy_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _moodledata(tmp_path / "blue")
    real_link = copier.Copier.link

    def renamed_meanwhile(self: copier.Copier, a: str, b: str, st: os.stat_result) -> None:
        if a.endswith(HASH):
            raise FileNotFoundError(a)
        real_link(self, a, b, st)

    monkeypatch.setattr(copier.Copier, "link", renamed_meanwhile)
    stats = copier.copy_moodledata(str(src), str(tmp_path / "green"), stage="precopy")
    assert stats.vanished == 1
    assert stats.linked == 1

    with pytest.raises(FileNotFoundError):  # frozen: nothing may vanish
        copier.copy_moodledata(str(src), str(tmp_path / "green"), stage="sync")


def test_unknown_stage_is_refused(tmp_path: Path) -> None:
    src = _moodledata(tmp_path / "blue")
    with pytest.raises(ValueError, match="stage"):
        copier.copy_moodledata(str(src), str(tmp_path / "green"), stage="later")


def _old_pool(root: Path, leaves: int) -> list[Path]:
    """A pool of ``leaves`` folders with one file each, every folder last changed long ago."""
    made = []
    for i in range(leaves):
        leaf = root / "filedir" / f"{i:02x}" / "00"
        leaf.mkdir(parents=True)
        (leaf / f"{i:02x}00{'0' * 36}").write_text(f"file {i}")
        made.append(leaf)
    os.utime(root, (1_700_000_000, 1_700_000_000))
    for path in [root / "filedir", *made, *(leaf.parent for leaf in made)]:
        os.utime(path, (1_700_000_000, 1_700_000_000))
    return made


def test_sync_reads_only_the_pool_folders_changed_since_the_precopy(tmp_path: Path) -> None:
    src = tmp_path / "blue"
    leaves = _old_pool(src, 20)
    dest = tmp_path / "green"
    copier.copy_moodledata(str(src), str(dest), stage="precopy")
    (leaves[3] / ("0300" + "1" * 36)).write_text("uploaded since")  # folder time moves on
    (leaves[5] / ("0500" + "0" * 36)).unlink()

    stats = copier.copy_moodledata(str(src), str(dest), stage="sync")

    whole = tmp_path / "whole"
    copier.copy_moodledata(str(src), str(whole))
    assert _tree(dest) == _tree(whole)
    assert stats.unchanged_dirs == 18  # every leaf but the two changed ones, unread
    assert stats.linked == 1 and stats.removed == 1


def test_a_pool_folder_changed_just_before_the_precopy_is_read_again(tmp_path: Path) -> None:
    """A filesystem whose clock moves in coarse ticks may give a folder changed twice in
    one tick the same time twice: a folder that recent when copied is always read again."""
    src = tmp_path / "blue"
    leaves = _old_pool(src, 2)
    os.utime(leaves[0], None)  # changed right now
    at_copy = leaves[0].stat().st_mtime_ns
    dest = tmp_path / "green"
    copier.copy_moodledata(str(src), str(dest), stage="precopy")
    (leaves[0] / ("0000" + "2" * 36)).write_text("same tick")
    os.utime(leaves[0], ns=(at_copy, at_copy))  # the tick did not move

    stats = copier.copy_moodledata(str(src), str(dest), stage="sync")

    assert (dest / "filedir/00/00" / ("0000" + "2" * 36)).read_text() == "same tick"
    assert stats.unchanged_dirs == 1  # the other, old leaf
