"""What an operator checks on a hub: signed LTI launches start the right containers,
bad launches start nothing, and a hub restart leaves the users' servers running.

The tests run in file order: the student and teacher servers started first are reused
by the later tests (refusals must not add containers; the restart must keep them).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from typing import Any

import pytest
import yaml
from hubtest import CA, HUB, VENV, Hub, byte_size, env_of


def _first_hub() -> str:
    """The first host of group jupyterhub in molecule's inventory (hubt-hub1, or hub1 of
    the full site in the default scenario, which runs this file too)."""
    with open(os.environ["MOLECULE_INVENTORY_FILE"]) as handle:
        inventory = yaml.safe_load(handle)
    return str(next(iter(inventory["jupyterhub"]["hosts"])))


testinfra_hosts = [f"ansible://{_first_hub()}"]


@pytest.fixture(scope="module")
def hub(host: Any) -> Hub:
    return Hub(host)

GIB = 1024**3
MIB = 1024**2
HOST = "moodle.example.test"
STUDENT, STUDENT_ID = "stud1", "101"
TEACHER, TEACHER_ID = "teach1", "102"
COMMON = [
    "--custom", "lms_sessioninfo=3,7",
    "--custom", "lms_course=Data Science 1",
    "--custom", "lms_ltiname=Week 1",
    "--custom", "lms_users=*",
    "--custom", f"lms_teachers={TEACHER}",
    "--custom", "lms_vol_data=Data",
    "--custom", "lms_vol_keys=-Solutions",
    "--custom", "lms_sub_hw=Submit",
    "--custom", "lms_prs_notes=Notes",
    "--custom", "lms_options=opt1",
]


def cpus(info: dict[str, Any]) -> float:
    """The container's CPU limit, however Docker was told (quota/period or NanoCpus)."""
    host = info["HostConfig"]
    if host.get("NanoCpus"):
        return float(host["NanoCpus"]) / 1e9
    return float(host["CpuQuota"]) / float(host["CpuPeriod"])


# The notebook server's process (PID 1 may be `timeout` when NB_ACTLIMIT is set).
SERVER_STATUS = (
    "for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = jupyterhub-sing ] && "
    "grep -E '^(Uid|Gid|CapEff):' $p/status; done; true"
)


def vol(kind: str, name: str) -> str:
    return f"lms_{kind}_{name}_2_{HOST}"


# ---- the hub itself ---------------------------------------------------------------------
@pytest.mark.parametrize("unit", ["docker", "jupyterhub", "jupyterhub-proxy"])
def test_units_running(host: Any, unit: str) -> None:
    service = host.service(unit)
    assert service.is_running and service.is_enabled


@pytest.mark.parametrize(
    "path", ["/etc/jupyterhub/jupyterhub_config.py", "/etc/jupyterhub/jupyterhub.env",
             "/etc/jupyterhub/proxy.env", "/var/lib/jupyterhub/jupyterhub_cookie_secret"]
)
def test_secret_files_root_only(host: Any, path: str) -> None:
    f = host.file(path)
    assert f.user == "root" and f.mode == 0o600


def test_units_are_sandboxed(host: Any) -> None:
    for unit in ("jupyterhub", "jupyterhub-proxy"):
        props = host.check_output(
            f"systemctl show {unit} -p NoNewPrivileges -p ProtectSystem -p PrivateTmp"
        )
        assert "NoNewPrivileges=yes" in props and "ProtectSystem=strict" in props
        assert "PrivateTmp=yes" in props
    assert host.check_output("systemctl show jupyterhub-proxy -p User") == "User=jupyterhub-proxy"


def test_hub_settings_from_the_protocol(host: Any) -> None:
    config = host.file("/etc/jupyterhub/jupyterhub_config.py").content_string
    for line in (
        'c.LTI11Authenticator.username_key = "ext_user_username"',
        'c.LTI11Authenticator.uri_scheme = "https"',
        "c.Authenticator.enable_auth_state = True",
        "c.Authenticator.allow_all = True",
        'c.JupyterHub.spawner_class = "ltihub.spawner.LTIContainerSpawner"',
        "c.JupyterHub.cleanup_servers = False",
        '"cookie_options": {"samesite": "None", "secure": True}',
    ):
        assert line in config


def test_hub_versions_match_the_image(host: Any, hub: Hub) -> None:
    hub_version = host.check_output("/opt/jupyterhub/bin/jupyterhub --version").strip()
    image_version = host.check_output(
        f"docker run --rm --entrypoint /opt/conda/bin/python3 {hub.cfg['image']} "
        "-c 'import jupyterhub; print(jupyterhub.__version__)'"
    ).strip()
    assert hub_version == image_version == "5.5.4"
    labels = host.check_output(
        f"docker image inspect -f '{{{{json .Config.Labels}}}}' {hub.cfg['image']}"
    )
    assert "org.mjp.recipe" in labels


def test_daemon_pool_avoids_the_outer_bridge(host: Any) -> None:
    docker0 = host.check_output("ip -4 -o addr show docker0")
    assert "10.213." in docker0, docker0


def test_moodle_service_token_lists_users(hub: Hub) -> None:
    status, users = hub.api("/users")
    assert status == 200 and isinstance(users, list)


# Signed launches that log a class in without starting servers (the redirect to the spawn
# page is not followed), then the module's own call: one GET /hub/api/users, no pagination.
_BIG_CLASS = f"""
import json, os, sys, requests
from ltihub.launch import build_launch_params, sign_launch
prefix, n = sys.argv[1], int(sys.argv[2])
s = requests.Session(); s.verify = "{CA}"
codes = {{}}
for i in range(n):
    user = "%s%03d" % (prefix, i)
    params = build_launch_params(username=user, user_id=str(90000 + i), teacher=False,
        course_id="9", course_title="Big class", resource_link_id="9",
        moodle_url="https://moodle.example.test", custom={{"lms_sessioninfo": "9,9"}})
    form = sign_launch("{HUB}/hub/lti/launch", os.environ["K"], os.environ["S"], params)
    r = s.post("{HUB}/hub/lti/launch", data=form, allow_redirects=False, timeout=60)
    codes[r.status_code] = codes.get(r.status_code, 0) + 1
    s.cookies.clear()
listed = s.get("{HUB}/hub/api/users", timeout=120,
               headers={{"Authorization": "token " + os.environ["T"]}}).json()
print(json.dumps({{"codes": codes, "listed": [u["name"] for u in listed]}}))
"""

_DELETE_USERS = f"""
import os, sys, requests
s = requests.Session(); s.verify = "{CA}"
s.headers["Authorization"] = "token " + os.environ["T"]
for name in sys.argv[1:]:
    s.delete("{HUB}/hub/api/users/" + name, timeout=60)
"""


def test_a_class_of_250_is_listed_whole(host: Any, hub: Hub) -> None:
    """mod_lticontainer's user page lists a hub's users in one unpaginated call."""
    size, prefix = 250, "bigclass"
    env = (
        f"K={shlex.quote(hub.cfg['key'])} S={shlex.quote(hub.cfg['secret'])} "
        f"T={shlex.quote(hub.cfg['service_token'])}"
    )
    names = [f"{prefix}{i:03d}" for i in range(size)]
    hub.wait_api()  # an earlier test may have just restarted the hub
    try:
        out = host.check_output(
            f"{env} {VENV}/bin/python - {prefix} {size} <<'EOF'\n{_BIG_CLASS}\nEOF"
        )
        result = json.loads(out)
        assert result["codes"] == {"302": size}, f"not every launch logged in: {result['codes']}"
        listed = set(result["listed"])
        missing = [n for n in names if n not in listed]
        assert not missing, (
            f"GET /hub/api/users listed {len(listed)} users; {len(missing)} of the class are "
            f"missing (first: {missing[:3]})"
        )
    finally:
        host.run(f"{env} {VENV}/bin/python - {' '.join(names)} <<'EOF'\n{_DELETE_USERS}\nEOF")


# ---- a student's launch -------------------------------------------------------------------
def test_student_launch_starts_a_shaped_container(hub: Hub) -> None:
    report = hub.launch(
        STUDENT, "--user-id", STUDENT_ID, *COMMON,
        "--custom", "lms_image=jupyterhub/lab : 4.6.6",
        "--custom", "lms_memlimit=536,870,912",
        "--custom", "lms_cpulimit=0.5",
        "--custom", "lms_actlimit=7200",
        "--custom", "lms_defurl=/tree",
    )
    assert report["result"] == "ok", report
    name = hub.container_of(STUDENT)
    assert name.startswith(f"jupyterhub-2-7-{HOST}-")
    info = hub.inspect(name)
    assert info["Config"]["Image"] == "jupyterhub/lab:4.6.6"
    assert info["HostConfig"]["Memory"] == 512 * MIB
    assert cpus(info) == 0.5
    assert info["HostConfig"]["Privileged"] is False
    assert "no-new-privileges:true" in (info["HostConfig"]["SecurityOpt"] or [])
    env = env_of(info)
    home = f"/home/others/{STUDENT}"
    expected = {
        "NB_USER": STUDENT, "NB_UID": str(30000 + int(STUDENT_ID)), "NB_GID": "30000",
        "NB_GROUP": "others", "NB_DIR": home, "NB_WRKDIR": f"{home}/jupyter/works",
        "NB_TEACHER": "", "NB_UMASK": "0027", "NB_ACTLIMIT": "7200", "NB_OPTION": "opt1",
        "NB_HOSTNAME": HOST, "LTI_CTR_ID": "3", "LTI_ID": "7", "LTI_COURSE": "Data Science 1",
        "LTI_NAME": "Week 1", "GRANT_SUDO": "no", "NB_THRGID": "7000", "NB_THRGROUP": "TEACHER",
        "NB_VOLUMES": f".volumes/{vol('vol', 'data')}:Data",
        "NB_SUBMITS": f".volumes/{vol('sub', 'hw')}:Submit",
        "NB_PRSNALS": f".volumes/{vol('prs', 'notes')}:Notes",
        "TZ": "Europe/Berlin",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/tree"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[home]["Type"] == "bind" and mounts[home]["Source"] == home
    works = f"{home}/jupyter/works/.volumes"
    assert mounts[f"{works}/{vol('vol', 'data')}"]["Name"] == vol("vol", "data")
    assert mounts[f"{works}/{vol('sub', 'hw')}"]["Name"] == vol("sub", "hw")
    # the teachers-only volume is not even mounted for a student
    assert f"{works}/{vol('vol', 'keys')}" not in mounts


def test_student_container_runs_as_the_user(hub: Hub) -> None:
    name = hub.container_of(STUDENT)
    uid = str(30000 + int(STUDENT_ID))
    status = hub.exec(name, SERVER_STATUS)
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
    assert "Gid:\t30000\t30000\t30000\t30000" in status
    assert "CapEff:\t0000000000000000" in status
    works = f"/home/others/{STUDENT}/jupyter/works"
    assert hub.exec(name, f"readlink {works}/Data") == f".volumes/{vol('vol', 'data')}"
    assert hub.exec(name, f"readlink {works}/Submit") == f".volumes/{vol('sub', 'hw')}"
    assert hub.exec(name, f"readlink {works}/Notes") == f".volumes/{vol('prs', 'notes')}"
    assert hub.exec(name, f"stat -c %a:%g {works}/.volumes/{vol('sub', 'hw')}") == "3777:7000"
    assert hub.exec(name, f"test -e {works}/Solutions || echo absent") == "absent"
    assert hub.exec(name, "test -e /etc/sudoers.d/mjp-notebook-user || echo absent") == "absent"


def test_student_home_on_the_hub(host: Any) -> None:
    home = host.file(f"/home/others/{STUDENT}")
    assert home.is_directory and home.uid == 30000 + int(STUDENT_ID) and home.gid == 30000


def test_jupyterlab_api_answers_through_the_proxy(hub: Hub) -> None:
    out = hub.lab_status(STUDENT, STUDENT_ID)
    assert out["launch"] == "ok", out
    assert out["lab_status"] == 200, out
    assert out["api_status"] == 200, out
    assert "started" in out["api"] and "last_activity" in out["api"]
    assert "frame-ancestors 'self' https://moodle1" in out["csp"]


# ---- a teacher's launch ---------------------------------------------------------------------
def test_teacher_launch(hub: Hub) -> None:
    report = hub.launch(
        TEACHER, "--user-id", TEACHER_ID, "--teacher", *COMMON,
        "--custom", "lms_memlimit=1073741824",
        "--custom", "lms_cpulimit=1",
    )
    assert report["result"] == "ok", report
    name = hub.container_of(TEACHER)
    info = hub.inspect(name)
    assert info["HostConfig"]["Memory"] == GIB
    assert cpus(info) == 1.0
    assert info["HostConfig"]["Privileged"] is False
    env = env_of(info)
    assert env["NB_TEACHER"] == TEACHER
    assert env["NB_UMASK"] == "0033"
    assert env["GRANT_SUDO"] == "no"
    assert f".volumes/{vol('vol', 'keys')}:-Solutions" in env["NB_VOLUMES"].split()
    works = f"/home/others/{TEACHER}/jupyter/works"
    mounts = {m["Destination"] for m in info["Mounts"]}
    assert f"{works}/.volumes/{vol('vol', 'keys')}" in mounts
    assert hub.exec(name, f"readlink {works}/Solutions") == f".volumes/{vol('vol', 'keys')}"
    groups = hub.exec(name, f"id -Gn {TEACHER}").split()
    assert "TEACHER" in groups
    # the same named volumes as the student's: shared course data
    student_mounts = {m.get("Name") for m in hub.inspect(hub.container_of(STUDENT))["Mounts"]}
    assert vol("sub", "hw") in student_mounts & {m.get("Name") for m in info["Mounts"]}


# ---- the block-programming image (JupyterLab-Broccoli, role notebook_images) -------------------
BROCCOLI = "jupyterhub/broccoli:0.4.7"
BLOCK_USER, BLOCK_USER_ID = "block1", "131"
BLOCK_EXTENSIONS = ("jupyterlab-broccoli-extension", "jupyterlab-broccoli-turtle")

# Logs in with a signed launch that names the image, then loads JupyterLab as a browser does:
# the page's configuration lists the prebuilt extensions the browser loads, and each one's
# entry script must be served through the proxy.
_LAB_EXTENSIONS = f"""
import json, os, re, sys, requests
from ltihub.launch import build_launch_params, run_launch, sign_launch
user, image = sys.argv[1], sys.argv[3]
s = requests.Session(); s.verify = "{CA}"
params = build_launch_params(username=user, user_id=sys.argv[2], teacher=False, course_id="2",
    course_title="T", resource_link_id="1", moodle_url="https://moodle.example.test",
    custom={{"lms_sessioninfo": "3,7", "lms_image": image}})
form = sign_launch("{HUB}/hub/lti/launch", os.environ["K"], os.environ["S"], params)
report = run_launch(s, url="{HUB}/hub/lti/launch", hub="{HUB}", form=form, timeout=180,
                    poll_interval=1)
out = {{"launch": report.result, "extensions": {{}}}}
lab = s.get("{HUB}/user/" + user + "/lab", timeout=60)
out["lab_status"] = lab.status_code
found = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                  lab.text, re.S)
config = json.loads(found.group(1)) if found else {{}}
for ext in config.get("federated_extensions", []):
    entry = s.get("{HUB}" + config["fullLabextensionsUrl"] + "/" + ext["name"] + "/" + ext["load"],
                  timeout=60)
    out["extensions"][ext["name"]] = entry.status_code
print(json.dumps(out))
"""


def _stop_and_delete_user(hub: Hub, user: str) -> None:
    """As mod_lticontainer's user page: stop the server (its container goes with it), then
    delete the user (refused with 400 while the server is still stopping)."""
    hub.api(f"/users/{user}/server", method="DELETE")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, _ = hub.api(f"/users/{user}", method="DELETE")
        if status in (204, 404):
            return
        time.sleep(2)


def test_block_programming_image_reaches_jupyterlab_with_broccoli(host: Any, hub: Hub) -> None:
    # what mod_lticontainer lists for the teacher: the hub's images whose name has "jupyterhub"
    listed = host.check_output("docker images --format '{{.Repository}}:{{.Tag}}'").split()
    assert BROCCOLI in listed and "jupyterhub" in BROCCOLI.split(":")[0], listed
    try:
        report = hub.launch(
            BLOCK_USER, "--user-id", BLOCK_USER_ID, "--open",
            "--custom", "lms_sessioninfo=3,7",
            "--custom", f"lms_image={BROCCOLI.replace(':', ' : ')}",  # as Moodle's form writes it
        )
        assert report["result"] == "ok", report
        assert report["page_title"] == "JupyterLab", report
        name = hub.container_of(BLOCK_USER)
        assert hub.inspect(name)["Config"]["Image"] == BROCCOLI
        # installed and enabled in the user's container ...
        listing = re.sub(
            r"\x1b\[[0-9;]*m", "", hub.exec(name, "/opt/conda/bin/jupyter labextension list 2>&1")
        )
        for ext in BLOCK_EXTENSIONS:
            assert re.search(rf"^\s+{re.escape(ext)} v0\.4\.7 enabled\b", listing, re.M), listing
        # ... the turtle blocks' generated code finds its module ...
        hub.exec(name, "/opt/conda/bin/python3 -c 'from jbturtle import *'")
        # ... and the user's JupyterLab hands both extensions to the browser
        env = f"K={shlex.quote(hub.cfg['key'])} S={shlex.quote(hub.cfg['secret'])}"
        out = json.loads(host.check_output(
            f"{env} {VENV}/bin/python - {BLOCK_USER} {BLOCK_USER_ID} {shlex.quote(BROCCOLI)} "
            f"<<'EOF'\n{_LAB_EXTENSIONS}\nEOF"
        ))
        assert out["launch"] == "ok" and out["lab_status"] == 200, out
        for ext in BLOCK_EXTENSIONS:
            assert out["extensions"].get(ext) == 200, out
    finally:
        _stop_and_delete_user(hub, BLOCK_USER)
    assert not [n for n in hub.containers() if n.endswith("-" + BLOCK_USER)]


# ---- launches that must be refused ----------------------------------------------------------
def _refused_without_new_container(
    hub: Hub, report: dict[str, Any], before: dict[str, str]
) -> None:
    assert report["result"] == "refused", report
    assert report["rc"] == 1
    time.sleep(2)
    assert hub.containers() == before


def test_bad_signature_is_refused(hub: Hub) -> None:
    before = hub.containers()
    report = hub.launch("mallory1", secret="0" * 64)
    _refused_without_new_container(hub, report, before)
    assert report["http_status"] == 401


def test_wrong_key_is_refused(hub: Hub) -> None:
    before = hub.containers()
    report = hub.launch("mallory2", key="notaconsumerkey")
    _refused_without_new_container(hub, report, before)
    assert report["http_status"] == 401


def test_old_timestamp_is_refused(hub: Hub) -> None:
    before = hub.containers()
    report = hub.launch("mallory3", "--timestamp", str(int(time.time()) - 3600))
    _refused_without_new_container(hub, report, before)
    assert report["http_status"] == 401


def test_reused_nonce_is_refused(hub: Hub) -> None:
    stamp = str(int(time.time()))
    first = hub.launch(STUDENT, "--user-id", STUDENT_ID, "--nonce", "n0nce42", "--timestamp", stamp)
    assert first["result"] == "ok", first  # the running server: nothing new starts
    before = hub.containers()
    again = hub.launch(STUDENT, "--user-id", STUDENT_ID, "--nonce", "n0nce42", "--timestamp", stamp)
    _refused_without_new_container(hub, again, before)
    assert again["http_status"] == 401


def test_image_not_on_the_hub_is_refused(hub: Hub) -> None:
    before = hub.containers()
    report = hub.launch("mallory4", "--custom", "lms_image=evil/miner:latest")
    _refused_without_new_container(hub, report, before)
    assert report["http_status"] == 403
    assert "evil/miner:latest" in report["message"] and "not on this" in report["message"]


def test_over_limit_memory(hub: Hub) -> None:
    before = hub.containers()
    report = hub.launch("bigmem", "--custom", "lms_memlimit=8,589,934,592")
    if hub.cfg["over_limit"] == "refuse":
        _refused_without_new_container(hub, report, before)
        assert report["http_status"] == 403
        assert "8 GiB of memory" in report["message"] and "at most" in report["message"]
    else:
        assert report["result"] == "ok", report
        info = hub.inspect(hub.container_of("bigmem"))
        assert info["HostConfig"]["Memory"] == byte_size(hub.cfg["max_mem"])


# ---- restart ----------------------------------------------------------------------------
def test_hub_restart_keeps_user_servers(host: Any, hub: Hub) -> None:
    before = {n: hub.inspect(n)["State"]["StartedAt"] for n in hub.containers()}
    assert any(n.endswith("-" + STUDENT) for n in before)
    host.check_output("systemctl restart jupyterhub")
    hub.wait_api()
    after = {n: hub.inspect(n)["State"]["StartedAt"] for n in hub.containers()}
    assert after == before
    out = hub.lab_status(STUDENT, STUDENT_ID)  # the hub sees the server ready again
    assert out["launch"] == "ok" and out["api_status"] == 200, out
    assert set(hub.containers()) == set(before)


def test_secrets_not_in_the_journal(host: Any, hub: Hub) -> None:
    journal = host.check_output("journalctl --no-pager -o cat")
    for name in ("secret", "service_token"):
        assert hub.cfg[name] not in journal
