"""What a teacher and a student see inside their containers (the notebook image's start
script, issue 12 items 2, 3 and 6): volume permissions as the reference start.sh makes
them, personal volumes seeded from the task volume, stale links removed, the Jnotice
time and memory warnings, and the students' `submit` tool.

Runs after test_hub.py (file order) with users of its own, so it does not disturb the
containers that file counts. The tests run in file order: the teacher's container
prepares the task volume the student's container then checks.
"""

from __future__ import annotations

import os
import shlex
import time
from typing import Any

import pytest
import yaml
from hubtest import Hub, env_of


def _first_hub() -> str:
    """The first host of group jupyterhub in molecule's inventory (as in test_hub.py)."""
    with open(os.environ["MOLECULE_INVENTORY_FILE"]) as handle:
        inventory = yaml.safe_load(handle)
    return str(next(iter(inventory["jupyterhub"]["hosts"])))


testinfra_hosts = [f"ansible://{_first_hub()}"]

HOST = "moodle.example.test"
TEACHER, TEACHER_ID = "nbteach", "201"
STUDENT, STUDENT_ID = "nbstud", "202"
LIMITED, LIMITED_ID = "nbtime", "203"
MEMORY, MEMORY_ID = "nbmem", "204"
MIB = 1024**2
LIMIT_SECONDS = 60  # the time limit of LIMITED's activity (launched first, stopped-checked last)
LIMITED_RUN: dict[str, str | int] = {}  # its container (name, id) and start, from the first test
# When LIMITED's container died, written by a `docker events` started with it: the engine
# keeps a bounded number of recent events, and the tests in between can push it out.
LIMITED_DIED = "/root/mjp-limited-died.txt"
COMMON = [
    "--custom",
    "lms_sessioninfo=3,8",
    "--custom",
    "lms_users=*",
    "--custom",
    f"lms_teachers={TEACHER}",
    "--custom",
    "lms_vol_nbdata=Data",
    "--custom",
    "lms_sub_nbhw=Submit",
    "--custom",
    "lms_prs_nbdata=Notes",
]


def vol(kind: str, name: str) -> str:
    return f"lms_{kind}_{name}_2_{HOST}"


def works(user: str) -> str:
    return f"/home/others/{user}/jupyter/works"


def uid(user_id: str) -> int:
    return 30000 + int(user_id)


def as_user(hub: Hub, user: str, user_id: str, cmd: str) -> str:
    """Run ``cmd`` in the user's container as the user (what a terminal in JupyterLab does)."""
    drop = f"setpriv --reuid={uid(user_id)} --regid=30000 --init-groups"
    env = f"env HOME=/home/others/{user} USER={user}"
    return hub.exec(
        hub.container_of(user), f"cd /home/others/{user} && {drop} {env} sh -c {shlex.quote(cmd)}"
    )


def wait_for(check: Any, seconds: int = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(2)


@pytest.fixture(scope="module")
def hub(host: Any) -> Hub:
    return Hub(host)


def test_time_warning_shows_before_the_limit(hub: Hub) -> None:
    # First in the file: the limit runs out while the tests below run, so the last test
    # waits for what is left of it, not for all of it.
    report = hub.launch(
        LIMITED, "--user-id", LIMITED_ID, *COMMON, "--custom", f"lms_actlimit={LIMIT_SECONDS}"
    )
    assert report["result"] == "ok", report
    name = hub.container_of(LIMITED)
    LIMITED_RUN.update(
        name=name,
        id=hub.host.check_output(f"docker inspect -f '{{{{.Id}}}}' {name}"),
        started=int(hub.host.check_output(
            f"date -d \"$(docker inspect -f '{{{{.State.StartedAt}}}}' {name})\" +%s"
        )),
    )
    watch = hub.host.run(
        f"docker events --since {LIMITED_RUN['started']} --until $(( $(date +%s) + "
        f"{LIMIT_SECONDS + 600} )) --filter container={LIMITED_RUN['id']} --filter event=die "
        f"--format '{{{{.Time}}}}' > {LIMITED_DIED} 2>&1 &"
    )
    assert watch.rc == 0, watch.stderr
    sticky = f"/home/others/{LIMITED}/.jnotice.sticky.txt"
    text = wait_for(lambda: hub.host.run(f"docker exec {name} cat {sticky}").stdout.strip(), 40)
    assert "stops at" in text and "Save your work" in text
    assert name in hub.containers()  # the warning came while the server still ran


def test_teacher_writes_into_the_task_volume(hub: Hub) -> None:
    report = hub.launch(TEACHER, "--user-id", TEACHER_ID, "--teacher", *COMMON)
    assert report["result"] == "ok", report
    data = f"{works(TEACHER)}/Data"
    as_user(
        hub, TEACHER, TEACHER_ID, f"mkdir -p {data}/week1 && echo hello > {data}/week1/task.txt"
    )
    # something root left behind, not writable for teachers: the next start fixes it
    name = hub.container_of(TEACHER)
    hub.exec(name, f"mkdir -p {data}/byroot && chmod 0700 {data}/byroot")
    assert hub.exec(name, f"stat -c %g {data}/week1/task.txt") == "7000"  # set-group-id dir


def test_student_start_prepares_the_volumes(host: Any, hub: Hub) -> None:
    # a link left by an earlier activity, in the home on the hub before the launch
    home = f"/home/others/{STUDENT}"
    host.check_output(
        f"install -d -o {uid(STUDENT_ID)} -g 30000 -m 0700 {home} {home}/jupyter {works(STUDENT)}"
        f" && ln -sfn .volumes/{vol('vol', 'gone')} {works(STUDENT)}/Old"
    )
    report = hub.launch(STUDENT, "--user-id", STUDENT_ID, *COMMON)
    assert report["result"] == "ok", report
    name = hub.container_of(STUDENT)
    volumes = f"{works(STUDENT)}/.volumes"
    task = f"{volumes}/{vol('vol', 'nbdata')}"
    assert hub.exec(name, f"stat -c %a:%g {task}") == "2775:7000"
    assert hub.exec(name, f"stat -c %a:%g {task}/byroot") == "2770:7000"
    assert hub.exec(name, f"stat -c %a:%g {task}/week1").startswith("27")
    sub = f"{volumes}/{vol('sub', 'nbhw')}"
    assert hub.exec(name, f"stat -c %a:%g {sub}") == "3777:7000"
    assert hub.exec(name, f"stat -c %a:%g {sub}/.ipynb_checkpoints") == "3777:7000"
    # the personal volume got the teacher's file; the student owns the copy
    notes = f"{works(STUDENT)}/Notes"
    assert hub.exec(name, f"cat {notes}/week1/task.txt") == "hello"
    assert hub.exec(name, f"stat -c %u {notes}/week1/task.txt") == str(uid(STUDENT_ID))
    assert hub.exec(name, f"test -e {works(STUDENT)}/Old || echo gone") == "gone"
    # a student reads the task volume but cannot write to it
    out = as_user(
        hub,
        STUDENT,
        STUDENT_ID,
        f"cat {works(STUDENT)}/Data/week1/task.txt; "
        f"touch {works(STUDENT)}/Data/x 2>/dev/null || echo refused",
    )
    assert out.splitlines() == ["hello", "refused"]


def test_submit_hands_a_file_in(hub: Hub) -> None:
    out = as_user(
        hub, STUDENT, STUDENT_ID, "echo 'my answer' > answer.ipynb && submit answer.ipynb"
    )
    assert "Submitted answer.ipynb as Submit/nbstud_answer.ipynb" in out
    name = hub.container_of(STUDENT)
    sub = f"{works(STUDENT)}/.volumes/{vol('sub', 'nbhw')}"
    assert (
        hub.exec(name, f"stat -c %a:%g:%u {sub}/nbstud_answer.ipynb")
        == f"640:7000:{uid(STUDENT_ID)}"
    )
    assert "submitted" in hub.exec(name, f"cat /home/others/{STUDENT}/.submit.log")
    # the teacher reads it from the same volume in their own container
    teacher = hub.container_of(TEACHER)
    got = as_user(hub, TEACHER, TEACHER_ID, f"cat {works(TEACHER)}/Submit/nbstud_answer.ipynb")
    assert got == "my answer", teacher


def test_submit_refused_after_the_close_time(hub: Hub) -> None:
    name = hub.container_of(STUDENT)
    cmd = (
        f"docker exec -e NB_SUBMIT_CLOSE={vol('sub', 'nbhw')}:1 -u {uid(STUDENT_ID)}:30000 "
        f"-w /home/others/{STUDENT} {name} submit answer.ipynb"
    )
    result = hub.host.run(cmd)
    assert result.rc == 1
    assert "closed at" in result.stderr


def test_spawner_passes_the_close_time(hub: Hub) -> None:
    close = int(time.time()) + 86400
    report = hub.launch(
        "nbclose", "--user-id", "205", *COMMON, "--custom", f"lms_sub_nbhw_close={close}"
    )
    assert report["result"] == "ok", report
    env = env_of(hub.inspect(hub.container_of("nbclose")))
    assert env.get("NB_SUBMIT_CLOSE") == f"{vol('sub', 'nbhw')}:{close}"
    # the other students' containers, launched without a close time, do not get one
    assert "NB_SUBMIT_CLOSE" not in env_of(hub.inspect(hub.container_of(STUDENT)))


def test_jnotice_is_installed(hub: Hub) -> None:
    out = hub.exec(hub.container_of(STUDENT), "jupyter labextension list 2>&1")
    assert "jnotice" in out and "enabled" in out
    # The minimal image has no ps: read the processes' command lines from /proc.
    args = hub.exec(
        hub.container_of(STUDENT),
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < \"$f\"; echo; done",
    )
    assert "ltihub.nbnotice" in args


def test_memory_warning_near_the_limit(hub: Hub) -> None:
    report = hub.launch(
        MEMORY, "--user-id", MEMORY_ID, *COMMON, "--custom", "lms_memlimit=536870912"
    )
    assert report["result"] == "ok", report
    name = hub.container_of(MEMORY)
    used, limit = map(
        int,
        hub.exec(
            name,
            (
                "python3 -I -c 'from ltihub.nbnotice import read_memory; m = read_memory(); "
                "print(m.used, m.limit)'"
            ),
        ).split(),
    )
    assert limit == 512 * MIB
    grab = max(0, int(limit * 0.94) - used)
    hub.host.check_output(
        f"docker exec -d -u {uid(MEMORY_ID)}:30000 {name} python3 -c "
        f"\"import time; b = b'x' * {grab}; time.sleep(60)\""
    )
    sticky = f"/home/others/{MEMORY}/.jnotice.sticky.txt"
    text = wait_for(lambda: hub.host.run(f"docker exec {name} cat {sticky}").stdout.strip(), 40)
    assert "of its memory" in text and "512 MiB" in text


def test_the_server_stops_at_its_time_limit(hub: Hub) -> None:
    """LIMITED's server (launched first with a 60 s limit) ends at the limit, not before.

    The image's start script stops the server at NB_ACTLIMIT; the hub notices on its next
    poll and reports no server for the user.
    """
    assert LIMITED_RUN, "the first test of this file did not start the time-limited server"
    name, started = str(LIMITED_RUN["name"]), int(LIMITED_RUN["started"])
    gone = wait_for(lambda: name not in hub.containers(), LIMIT_SECONDS + 120)
    assert gone, f"{name} still runs long after its {LIMIT_SECONDS} s limit"
    # when it stopped: the engine's event, which outlives the container
    died = wait_for(lambda: hub.host.check_output(f"cat {LIMITED_DIED}").split(), 20)
    assert died, f"the engine recorded no end of {name}"
    ran = int(died[0]) - started
    assert ran >= LIMIT_SECONDS - 5, f"stopped after {ran} s, before its limit"

    def no_server() -> bool:
        status, user = hub.api(f"/users/{LIMITED}")
        return status == 200 and not user.get("server") and not user.get("servers")

    assert wait_for(no_server, 60), "the hub still shows a server for the user"
