"""The notebook image's start-up: mjp-start.sh (with fake system commands), the volume
set-up of ltihub.nbstart, the Jnotice warnings of ltihub.nbnotice and the students'
submit tool (ltihub.nbsubmit), all in temporary directories with a fake environment,
fake cgroup files and a fake clock."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltihub import nbenv, nbnotice, nbstart, nbsubmit

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles/notebook_images/files/mjp-start.sh"
BASH = shutil.which("bash") or "/bin/bash"
TEACHER_GID = 7000
VOL = "lms_vol_data_2_moodle.example.test"
SUB = "lms_sub_hw_2_moodle.example.test"
PRS = "lms_prs_data_2_moodle.example.test"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing groups needs root")


def env_for(work: Path, **extra: str) -> dict[str, str]:
    env = {
        "NB_USER": "alice",
        "NB_DIR": str(work.parent.parent),
        "NB_WRKDIR": str(work),
        "VOLUME_DIR": ".volumes",
        "NB_THRGID": str(TEACHER_GID),
        "NB_VOLUMES": f".volumes/{VOL}:Data",
        "NB_SUBMITS": f".volumes/{SUB}:Submit",
        "NB_PRSNALS": f".volumes/{PRS}:Notes",
    }
    env.update(extra)
    return env


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "home/jupyter/works"
    (path / ".volumes" / VOL / "week1").mkdir(parents=True)
    (path / ".volumes" / SUB).mkdir(parents=True)
    return path


# ---- the environment --------------------------------------------------------------------
def test_entries_keep_japanese_access_names_and_empty_volume_names() -> None:
    problems: list[str] = []
    entries = nbenv.parse_entries(
        ".volumes/lms_vol__2_moodle:課題 .volumes/lms_vol_a_2_m:-Keys", ".volumes", "task", problems
    )
    assert [(e.volume, e.link_name, e.teachers_only) for e in entries] == [
        ("lms_vol__2_moodle", "課題", False),
        ("lms_vol_a_2_m", "Keys", True),
    ]
    assert problems == []


@pytest.mark.parametrize(
    "raw",
    [
        "../lms_vol_a_2_m:Data",  # outside the volume directory
        ".volumes/lms_vol_a_2_m:..",
        ".volumes/lms_vol_a_2_m:.volumes",
        ".volumes/lms_vol_a_2_m:",
        ".volumes/lms_sub_a_2_m:Data",  # a submission volume in NB_VOLUMES
        ".volumes/etc:Data",
        ".volumes/lms_vol_a_2_m/../x:Data",
    ],
)
def test_dangerous_entries_are_skipped(raw: str) -> None:
    problems: list[str] = []
    assert nbenv.parse_entries(raw, ".volumes", "task", problems) == []
    assert problems == [f"skipping volume entry '{raw}'"]


def test_close_times() -> None:
    closes = nbenv.parse_close_times(f".volumes/{SUB}:1900000000 other:5 bad:x 1800000000")
    assert nbenv.close_time(closes, SUB) == 1900000000
    assert nbenv.close_time(closes, "other") == 5
    assert nbenv.close_time(closes, "unknown") == 1800000000
    assert nbenv.close_time(nbenv.parse_close_times(""), SUB) is None


# ---- root side: task and submission volumes ---------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@root_only
def test_task_volume_made_teacher_writable_recursively(work: Path) -> None:
    vol = work / ".volumes" / VOL
    (vol / "week1" / "task.ipynb").write_text("{}")
    (vol / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(vol / "run.sh", 0o700)
    os.chmod(vol / "week1" / "task.ipynb", 0o600)
    os.chmod(vol / "week1", 0o700)
    outside = work.parent / "outside.txt"
    outside.write_text("x")
    os.chmod(outside, 0o600)
    os.symlink(outside, vol / "link")
    failures = nbstart.setup_root(
        nbenv.read_env(env_for(work)), mounts={str(vol), str(work / ".volumes" / SUB)}
    )
    assert failures == 0
    for path in (vol, vol / "week1", vol / "week1" / "task.ipynb", vol / "run.sh"):
        assert path.stat().st_gid == TEACHER_GID, path
    assert _mode(vol) & 0o2775 == 0o2775
    assert _mode(vol / "week1") == 0o2770
    assert _mode(vol / "week1" / "task.ipynb") == 0o660
    assert _mode(vol / "run.sh") == 0o770
    # the link was neither followed nor changed
    assert outside.stat().st_gid != TEACHER_GID or os.getegid() == TEACHER_GID
    assert _mode(outside) == 0o600


@root_only
def test_submission_volume_and_its_checkpoints_are_3777(work: Path) -> None:
    sub = work / ".volumes" / SUB
    (sub / ".ipynb_checkpoints").write_text("a student's file in the way")
    nbstart.setup_root(nbenv.read_env(env_for(work)), mounts={str(sub)})
    assert _mode(sub) == 0o3777 and sub.stat().st_gid == TEACHER_GID
    checkpoints = sub / ".ipynb_checkpoints"
    assert checkpoints.is_dir() and not checkpoints.is_symlink()
    assert _mode(checkpoints) == 0o3777 and checkpoints.stat().st_gid == TEACHER_GID


def test_volumes_that_are_not_mount_points_are_left_alone(work: Path) -> None:
    vol = work / ".volumes" / VOL
    os.chmod(vol, 0o700)
    logged: list[str] = []
    nbstart.setup_root(nbenv.read_env(env_for(work)), mounts=set(), log=logged.append)
    assert _mode(vol) == 0o700
    assert f"{VOL} is not mounted here; left alone" in logged


def test_a_link_on_the_way_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    with pytest.raises(OSError):
        nbstart.open_dir_nofollow(str(tmp_path / "link"))
    fd = nbstart.open_dir_nofollow(str(real))
    os.close(fd)


def test_mountinfo_is_parsed(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "36 35 98:0 / /home/others/alice/jupyter/works/.volumes/lms_vol_a_2_m rw - ext4 x rw\n"
        "37 35 98:0 / /mnt/with\\040space rw - ext4 x rw\n"
    )
    assert nbstart.mount_points(str(info)) == {
        "/home/others/alice/jupyter/works/.volumes/lms_vol_a_2_m",
        "/mnt/with space",
    }


# ---- user side: personal volumes and links ----------------------------------------------
def test_personal_volume_refreshed_without_overwriting(work: Path) -> None:
    seed = work / ".volumes" / VOL
    (seed / "week1" / "task.ipynb").write_text("teacher v1")
    (seed / ".ipynb_checkpoints").mkdir()
    (seed / ".ipynb_checkpoints" / "x.ipynb").write_text("teacher's checkpoint")
    env = nbenv.read_env(env_for(work))
    nbstart.setup_user(env, log=lambda m: None)
    personal = work / ".volumes" / PRS
    assert (personal / "week1" / "task.ipynb").read_text() == "teacher v1"
    assert not (personal / ".ipynb_checkpoints").exists()
    # the student edits; the teacher updates the task and adds a file later
    (personal / "week1" / "task.ipynb").write_text("my answer")
    (seed / "week1" / "task.ipynb").write_text("teacher v2")
    (seed / "week2.ipynb").write_text("new")
    nbstart.setup_user(env, log=lambda m: None)
    assert (personal / "week1" / "task.ipynb").read_text() == "my answer"
    assert (personal / "week2.ipynb").read_text() == "new"


def test_links_made_and_stale_ones_removed(work: Path) -> None:
    os.symlink(".volumes/lms_vol_old_2_moodle.example.test", work / "Old")
    os.symlink("/elsewhere", work / "mine")  # the user's own link: kept
    (work / "Keys").mkdir()  # a real directory in the way: kept
    env = nbenv.read_env(
        env_for(work, NB_VOLUMES=f".volumes/{VOL}:Data .volumes/lms_vol_k_2_m:-Keys")
    )
    logged: list[str] = []
    nbstart.setup_user(env, log=logged.append)
    assert os.readlink(work / "Data") == f".volumes/{VOL}"
    assert os.readlink(work / "Submit") == f".volumes/{SUB}"
    assert os.readlink(work / "Notes") == f".volumes/{PRS}"
    assert not os.path.lexists(work / "Old")
    assert os.readlink(work / "mine") == "/elsewhere"
    assert (work / "Keys").is_dir() and not (work / "Keys").is_symlink()
    assert any("removed the stale link Old" in m for m in logged)


def test_teachers_only_link_is_removed_for_a_student(work: Path) -> None:
    entries = f".volumes/{VOL}:Data .volumes/lms_vol_k_2_m:-Keys"
    teacher = env_for(work, NB_USER="tom", NB_TEACHER="tom", NB_VOLUMES=entries)
    nbstart.setup_user(nbenv.read_env(teacher), log=lambda m: None)
    assert os.readlink(work / "Keys") == ".volumes/lms_vol_k_2_m"
    nbstart.setup_user(nbenv.read_env(env_for(work, NB_VOLUMES=entries)), log=lambda m: None)
    assert not os.path.lexists(work / "Keys")


# ---- the warnings -----------------------------------------------------------------------
def write_cgroup_v2(root: Path, current: int, limit: str, inactive: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "memory.current").write_text(f"{current}\n")
    (root / "memory.max").write_text(f"{limit}\n")
    (root / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\nactive_file 3\n")


def test_memory_from_cgroup_v2(tmp_path: Path) -> None:
    write_cgroup_v2(tmp_path, 900 * nbnotice.MIB, str(1000 * nbnotice.MIB), 100 * nbnotice.MIB)
    memory = nbnotice.read_memory(tmp_path)
    assert memory == nbnotice.Memory(used=800 * nbnotice.MIB, limit=1000 * nbnotice.MIB)
    assert memory.percent == 80.0
    write_cgroup_v2(tmp_path, 5, "max")
    assert nbnotice.read_memory(tmp_path) == nbnotice.Memory(used=5, limit=None)


def test_memory_from_cgroup_v1(tmp_path: Path) -> None:
    v1 = tmp_path / "memory"
    v1.mkdir()
    (v1 / "memory.usage_in_bytes").write_text("600\n")
    (v1 / "memory.limit_in_bytes").write_text("1000\n")
    (v1 / "memory.stat").write_text("cache 10\ntotal_inactive_file 100\n")
    assert nbnotice.read_memory(tmp_path) == nbnotice.Memory(used=500, limit=1000)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert nbnotice.read_memory(tmp_path) == nbnotice.Memory(used=500, limit=None)
    assert nbnotice.read_memory(tmp_path / "none") is None


def test_time_warning_before_the_limit() -> None:
    config = nbnotice.NoticeConfig(time_warning_before=300, time_message="$minutes left")
    watcher = nbnotice.Watcher(config, actlimit=3600, started=1000.0)
    assert watcher.check(1000.0 + 3600 - 301, None) == ""
    assert watcher.check(1000.0 + 3600 - 299, None) == "5 left"
    # rendered once: the box does not pop up again every minute
    assert watcher.check(1000.0 + 3600 - 100, None) == "5 left"


def test_short_limit_warns_at_once() -> None:
    watcher = nbnotice.Watcher(nbnotice.NoticeConfig(), actlimit=90, started=0.0)
    assert "in about 2 minutes" in watcher.check(1.0, None)


def test_memory_warning_comes_and_goes() -> None:
    config = nbnotice.NoticeConfig(memory_message="$percent% ($used_mib/$limit_mib MiB)")
    watcher = nbnotice.Watcher(config, actlimit=0, started=0.0)
    mib = nbnotice.MIB
    assert watcher.check(0, nbnotice.Memory(used=850 * mib, limit=1000 * mib)) == ""
    high = nbnotice.Memory(used=950 * mib, limit=1000 * mib)
    assert watcher.check(0, high) == "95% (950/1000 MiB)"
    assert watcher.check(0, nbnotice.Memory(used=850 * mib, limit=1000 * mib)) != ""  # hysteresis
    assert watcher.check(0, nbnotice.Memory(used=700 * mib, limit=1000 * mib)) == ""
    assert watcher.check(0, nbnotice.Memory(used=700 * mib, limit=None)) == ""


def test_config_from_the_role_file(tmp_path: Path) -> None:
    path = tmp_path / "notice.json"
    path.write_text(
        '{"time_message": "Noch $minutes Minuten", "time_warning_before": 600,'
        ' "memory_warning_percent": 75, "sticky_file": "../etc/passwd", "check_seconds": "x"}'
    )
    config = nbnotice.load_config(path)
    assert config.time_message == "Noch $minutes Minuten"
    assert config.time_warning_before == 600
    assert config.memory_warning_percent == 75.0
    assert config.sticky_file == ".jnotice.sticky.txt"  # no path outside the home
    assert config.check_seconds == 10.0
    assert nbnotice.load_config(tmp_path / "missing.json") == nbnotice.NoticeConfig()


def test_watcher_writes_and_removes_the_notice_file(tmp_path: Path) -> None:
    sticky = tmp_path / ".jnotice.sticky.txt"
    sticky.write_text("left over from the last session")
    clock = iter([100.0, 200.0, 400.0])
    seen: list[str | None] = []
    rounds = iter([True, True, True, False])

    def alive() -> bool:
        seen.append(sticky.read_text().strip() if sticky.exists() else None)
        return next(rounds)

    config = nbnotice.NoticeConfig(time_warning_before=300, time_message="$minutes min left")
    nbnotice.run(
        config,
        home=tmp_path,
        actlimit=500,
        started=0.0,
        alive=alive,
        clock=lambda: next(clock),
        sleep=lambda s: None,
        memory=lambda: None,
        log=lambda m: None,
    )
    # before the first check the old file is still there; 100 s in: nothing to say (old
    # file removed); 200 s in: 300 s left -> the warning; at the end the file is gone
    assert seen == ["left over from the last session", None, "5 min left", "5 min left"]
    assert not sticky.exists()


def test_watcher_without_limits_stops_at_once(tmp_path: Path) -> None:
    logged: list[str] = []
    nbnotice.run(
        nbnotice.NoticeConfig(),
        home=tmp_path,
        actlimit=0,
        started=0.0,
        alive=lambda: pytest.fail("must not loop"),
        memory=lambda: nbnotice.Memory(used=1, limit=None),
        log=logged.append,
    )
    assert logged == ["no time limit and no memory limit: nothing to watch"]


def test_process_alive() -> None:
    assert nbnotice.process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    child.wait()
    assert not nbnotice.process_alive(child.pid)


# ---- submit -------------------------------------------------------------------------------
@pytest.fixture
def student(work: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    sub = work / ".volumes" / SUB
    if os.geteuid() == 0:
        os.chown(sub, -1, TEACHER_GID)
    os.chmod(sub, 0o3777)  # noqa: S103 - what the start script makes of it
    yield env_for(work, NB_SUBMIT_CLOSE=f"{SUB}:2000")


def test_submit_copies_as_user_file(student: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "report.ipynb"
    source.write_text("answer")
    assert nbsubmit.main([str(source)], env=student, clock=lambda: 1000.0) == 0
    dest = Path(student["NB_WRKDIR"]) / ".volumes" / SUB / "alice_report.ipynb"
    assert dest.read_text() == "answer"
    assert _mode(dest) == 0o640
    if os.geteuid() == 0:  # the set-group-id volume gave it the teachers' group
        assert dest.stat().st_gid == TEACHER_GID
    source.write_text("better answer")  # a second submit replaces the first
    assert nbsubmit.main([str(source)], env=student, clock=lambda: 1500.0) == 0
    assert dest.read_text() == "better answer"
    log = (Path(student["NB_DIR"]) / ".submit.log").read_text().splitlines()
    assert len(log) == 2 and all("submitted" in line and str(dest) in line for line in log)
    assert [p.name for p in dest.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_submit_refused_after_the_close_time(
    student: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "late.ipynb"
    source.write_text("late")
    assert nbsubmit.main([str(source)], env=student, clock=lambda: 2001.0) == 1
    assert not (Path(student["NB_WRKDIR"]) / ".volumes" / SUB / "alice_late.ipynb").exists()
    assert "closed at" in capsys.readouterr().err
    log = (Path(student["NB_DIR"]) / ".submit.log").read_text()
    assert "refused" in log and "closed at" in log
    # a teacher may still put files there
    teacher = dict(student, NB_USER="tom", NB_TEACHER="tom")
    assert nbsubmit.main([str(source)], env=teacher, clock=lambda: 2001.0) == 0


def test_submit_needs_a_folder_and_a_file(student: dict[str, str], tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("x")
    none = dict(student, NB_SUBMITS="")
    with pytest.raises(nbsubmit.SubmitError, match="no submission folder"):
        nbsubmit.submit(source, nbenv.read_env(none))
    two = dict(student, NB_SUBMITS=f".volumes/{SUB}:Submit .volumes/lms_sub_b_2_m:Other")
    with pytest.raises(nbsubmit.SubmitError, match="several submission folders"):
        nbsubmit.submit(source, nbenv.read_env(two))
    dest, size, _ = nbsubmit.submit(source, nbenv.read_env(two), folder="Submit", now=1.0)
    assert dest.name == "alice_a.py" and size == 1
    with pytest.raises(nbsubmit.SubmitError, match="is not a file"):
        nbsubmit.submit(tmp_path, nbenv.read_env(student), now=1.0)


# ---- mjp-start.sh with fake system commands -----------------------------------------------
FAKE = """#!/bin/bash
name=$(basename "$0")
echo "$name $*" >> "$FAKE_LOG"
case $name in
  id) echo 0 ;;
  getent) exit 2 ;;
  setpriv|timeout)
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
      [ "$name" = timeout ] && [[ $1 =~ ^[0-9]+$ ]] && { shift; break; }
      shift
    done
    [ "${1:-}" = -- ] && shift
    exec "$@" ;;
esac
exit 0
"""


@pytest.fixture
def fake_system(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    conda = tmp_path / "conda"
    (conda / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    fake = bin_dir / "fake"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    for name in (
        "id",
        "getent",
        "groupadd",
        "groupmod",
        "useradd",
        "usermod",
        "setpriv",
        "timeout",
        "chown",
        "chgrp",
        "jupyterhub-singleuser",
    ):
        os.symlink(fake, bin_dir / name)
    os.symlink(fake, conda / "bin" / "python3")
    home = tmp_path / "home" / "others" / "alice"
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "CONDA_DIR": str(conda),
        "NB_USER": "alice",
        "NB_UID": "30101",
        "NB_GID": "30000",
        "NB_GROUP": "others",
        "NB_DIR": str(home),
        "NB_ACTLIMIT": "600",
        "NB_VOLUMES": f".volumes/{VOL}:Data",
        "GRANT_SUDO": "no",
    }


def _calls(env: dict[str, str], wait_for: str = "") -> list[str]:
    log = Path(env["FAKE_LOG"])
    deadline = time.monotonic() + 10
    while wait_for and time.monotonic() < deadline:
        if log.exists() and wait_for in log.read_text():
            break
        time.sleep(0.05)
    return log.read_text().splitlines() if log.exists() else []


def test_start_script_sets_up_then_starts_watcher_and_server(fake_system: dict[str, str]) -> None:
    result = subprocess.run(  # noqa: S603
        [BASH, str(SCRIPT), "--port=8888"],
        env=fake_system,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    calls = _calls(fake_system, wait_for="ltihub.nbnotice")
    python = [c for c in calls if c.startswith("python3 ")]
    assert python[0] == "python3 -I -m ltihub.nbstart root"
    assert python[1] == "python3 -I -m ltihub.nbstart user"
    notice = next(c for c in python if "nbnotice" in c)
    assert notice.startswith("python3 -I -m ltihub.nbnotice --parent ")
    assert "--started " in notice
    # the user step, the watcher and the server run with privileges dropped
    drops = [c for c in calls if c.startswith("setpriv ")]
    assert any(c.endswith("python3 -I -m ltihub.nbstart user") for c in drops)
    assert any("--bounding-set=-all" in c and "ltihub.nbnotice" in c for c in drops)
    assert any(
        "--bounding-set=-all" in c and c.endswith("jupyterhub-singleuser --port=8888")
        for c in drops
    )
    assert any(c.startswith("timeout --kill-after=30 600 setpriv") for c in calls)
    assert "jupyterhub-singleuser --port=8888" in calls
    work = Path(fake_system["NB_DIR"]) / "jupyter" / "works" / ".volumes"
    assert work.is_dir()


@pytest.mark.parametrize(
    ("var", "value"),
    [("NB_USER", "../root"), ("NB_UID", "0"), ("NB_ACTLIMIT", "1;reboot"), ("NB_DIR", "rel/x")],
)
def test_start_script_refuses_bad_values(fake_system: dict[str, str], var: str, value: str) -> None:
    env = dict(fake_system, **{var: value})
    result = subprocess.run(  # noqa: S603
        [BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "mjp-start:" in result.stderr
    assert not any(c.startswith(("useradd", "jupyterhub-singleuser")) for c in _calls(env))
