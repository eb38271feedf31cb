"""Backups and restores of the Moodle site in restic repositories (role moodle_backup,
playbooks/moodle_backup.yml and moodle_restore.yml), against the TEST STAND-IN for Moodle
(not Moodle).

The tests run in file order and share the host: each leaves the live site working and
serving (test_bluegreen.py runs after this file). A second host, ops-backup1, plays the
remote SFTP backup server. Times of the backup and restore of the test site are printed
(pytest -s), never asserted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from typing import Any

import pytest
import testinfra
from conftest import HOST, SUFFIX, content, db, fact, front_page, run_playbook, standin

testinfra_hosts = [f"ansible://{HOST}"]

CMD = "/usr/local/sbin/mjp-moodle-backup"
CONFIG = "/etc/mjp/moodle-backup.json"
PASSWORD_FILE = "/etc/mjp/moodle-backup.restic-password"  # noqa: S105 - a path
REPO = "/srv/moodle-backups/restic"
BACKUP_HOST = f"ops-backup1{SUFFIX}"
SSH_KEY = "/etc/mjp/moodle-backup-ssh/id_ed25519"
TIMES: dict[str, float] = {}


def _backup_name(output: str) -> str:
    match = re.search(r"Backup (\d{8}T\d{6}Z-\w+) in repository ", output)
    assert match, "the backup playbook did not name its backup"
    return match.group(1)


def _add_content(host: Any, tag: str) -> None:
    for i in range(3):
        result = standin(host, f"--add-row={tag}-row-{i}")
        assert result.rc == 0, result.stdout + result.stderr
    for i in range(2):
        path = f"/tmp/{tag}-file-{i}.bin"
        assert host.run(f"head -c {20000 + i} /dev/urandom > {path}").rc == 0
        result = standin(host, f"--add-file={path}")
        assert result.rc == 0, result.stdout + result.stderr


def _pool_path(host: Any, contenthash: str) -> str:
    dataroot = fact(host)["colours"][fact(host)["active_colour"]]["dataroot"]
    return f"{dataroot}/filedir/{contenthash[:2]}/{contenthash[2:4]}/{contenthash}"


def _test_config(host: Any, path: str, **changes: Any) -> None:
    """A copy of the host's backup settings with some changed (e.g. its own repository)."""
    settings = json.loads(host.file(CONFIG).content_string)
    settings.update(changes)
    text = json.dumps(settings)
    write = f"install -m 0600 /dev/null {path} && printf %s {shlex.quote(text)} > {path}"
    assert host.run(write).rc == 0


def _local_repo(host: Any, path: str, config: str, **changes: Any) -> None:
    _test_config(host, config, repositories=[{"name": "local", "url": path}], **changes)
    result = _cli(host, "init", config)
    assert result.rc == 0, result.stderr


def _cli(host: Any, args: str, config: str = CONFIG) -> Any:
    return host.run(f"{CMD} --config {config} {args}")


def _restic(host: Any, args: str, repo: str = REPO, password: str = PASSWORD_FILE) -> Any:
    """Plain restic as the README tells an operator to run it."""
    env = f"RESTIC_REPOSITORY={repo} RESTIC_PASSWORD_FILE={password}"
    return host.run(f"env {env} restic {args}")


def _backups(host: Any, config: str = CONFIG, repository: str = "") -> list[dict[str, Any]]:
    extra = f" --repository {repository}" if repository else ""
    result = _cli(host, "list" + extra, config)
    assert result.rc == 0, result.stderr
    return list(json.loads(result.stdout)["backups"])


# The test-bed image ships no package lists: fetch them first.
SSH_INSTALL = ("apt-get update -qq && "
               "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server")
INSTALL_UNIT = "mjp-test-sshd-install"


@pytest.fixture(scope="module", autouse=True)
def _backup_server_install() -> Any:
    """ops-backup1, with openssh-server being installed in the background from the start of
    this file (mostly waiting on the network) until the remote repository test needs it."""
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    server = testinfra.get_host(f"ansible://{BACKUP_HOST}", ansible_inventory=inventory)
    server.run(f"systemd-run --unit={INSTALL_UNIT} --collect bash -c {shlex.quote(SSH_INSTALL)}")
    return server


def test_scheduled_backup_and_check_are_set_up(host: Any) -> None:
    for timer in ("mjp-moodle-backup.timer", "mjp-moodle-backup-check.timer"):
        assert host.service(timer).is_enabled and host.service(timer).is_running
    unit = host.file("/etc/systemd/system/mjp-moodle-backup.timer").content_string
    assert "OnCalendar=*-*-* 02:30:00" in unit
    check = host.file("/etc/systemd/system/mjp-moodle-backup-check.service").content_string
    assert " check" in check
    for path in (CONFIG, PASSWORD_FILE):
        assert host.file(path).mode == 0o600 and host.file(path).user == "root"
    assert host.file("/srv/moodle-backups").mode == 0o700
    password = host.file(PASSWORD_FILE).content_string.strip()
    assert len(password) >= 40 and password not in host.file(CONFIG).content_string
    assert _restic(host, "cat config").rc == 0  # the repository exists and opens


def test_backup_then_restore_in_place_brings_back_every_row_and_file(host: Any) -> None:
    _add_content(host, "inplace")
    before = content(host)
    assert len(before["rows"]) >= 3 and len(before["files"]) >= 2

    start = time.monotonic()
    run = run_playbook("moodle_backup.yml")
    TIMES["backup (playbook)"] = time.monotonic() - start
    assert run.rc == 0
    name = _backup_name(run.output)
    verify = _cli(host, f"verify {name}")
    assert verify.rc == 0, verify.stderr
    facts = json.loads(verify.stdout)["facts"]
    assert facts["colour"] == fact(host)["active_colour"]
    assert facts["moodle"]["release"] == before["release"]
    assert float(facts["moodle"]["version"]) == float(before["version"])
    assert facts["db_engine"] == "mariadb"

    # One backup = two snapshots tagged with its name, colour and release.
    snaps = json.loads(_restic(host, f"snapshots --json --tag mjp-backup:{name}").stdout)
    assert sorted(t for s in snaps for t in s["tags"] if t.startswith("part:")) == [
        "part:database",
        "part:files",
    ]
    assert all(f"colour:{facts['colour']}" in s["tags"] for s in snaps)
    files_snap = next(s["id"] for s in snaps if "part:files" in s["tags"])
    listing = _restic(host, f"ls --json {files_snap}").stdout.splitlines()
    nodes = [json.loads(line) for line in listing if line.startswith("{")]
    paths = {node["path"] for node in nodes if "path" in node}  # the first line is the snapshot
    dataroot = facts["dataroot"]
    for file in before["files"]:
        h = file["contenthash"]
        assert f"{dataroot}/filedir/{h[:2]}/{h[2:4]}/{h}" in paths
    for excluded in ("cache", "localcache", "sessions", "temp"):
        assert not any(p.startswith(f"{dataroot}/{excluded}/") for p in paths)
    assert f"{facts['release_dir']}/config.php" in paths

    # Wreck the site: a table dropped, pool files deleted.
    db_name = fact(host)["colours"][fact(host)["active_colour"]]["db_name"]
    db(host, f"DROP TABLE {db_name}.mdl_standin_data")
    for file in before["files"]:
        assert host.run(f"rm -f {_pool_path(host, file['contenthash'])}").rc == 0
    assert standin(host, "--list").rc != 0

    # The live colour is not overwritten unless the operator says so.
    refused = run_playbook("moodle_restore.yml", moodle_restore_backup=name)
    assert refused.rc != 0
    assert (
        "Refusing to restore" in refused.output
        and "moodle_restore_overwrite_live" in refused.output
    )
    assert standin(host, "--list").rc != 0, "a refused restore changed the site"

    start = time.monotonic()
    run = run_playbook(
        "moodle_restore.yml", moodle_restore_backup=name, moodle_restore_overwrite_live=True
    )
    TIMES["restore in place (playbook)"] = time.monotonic() - start
    assert run.rc == 0

    after = content(host)
    assert after["rows"] == before["rows"]
    assert after["files"] == before["files"]
    assert all(f["ondisk"] and f["intact"] for f in after["files"])
    status, body = front_page(host)
    assert status == 200 and "You are not logged in." in body


CORRUPT = """
import os, shutil, sys
saved = sys.argv[1]
os.makedirs(saved, exist_ok=True)
for path in sys.argv[2:]:
    shutil.copy2(path, os.path.join(saved, os.path.basename(path)))
    mode = os.stat(path).st_mode
    os.chmod(path, 0o600)
    data = bytearray(open(path, 'rb').read())
    for offset in range(0, len(data), 256):
        data[offset] ^= 1
    open(path, 'wb').write(bytes(data))
    os.chmod(path, mode)
"""


def test_damaged_repository_is_refused_and_the_site_left_as_it_was(host: Any) -> None:
    assert host.run("touch /root/before-damaged-backup && sleep 1").rc == 0
    _add_content(host, "damaged")
    result = _cli(host, "backup --no-prune")
    assert result.rc == 0, result.stderr
    name = json.loads(result.stdout)["backup"]
    assert standin(host, "--add-row=written-after-the-backup").rc == 0
    before = content(host)

    # Corrupt the pack files this backup wrote (its new data), keeping the originals.
    packs = host.run(f"find {REPO}/data -type f -newer /root/before-damaged-backup").stdout.split()
    assert packs, "the backup wrote no pack file"
    saved = "/root/saved-packs"
    corrupt = f"python3 -c {shlex.quote(CORRUPT)} {saved} " + " ".join(packs)
    assert host.run(corrupt).rc == 0
    try:
        verify = _cli(host, f"verify {name}")
        assert verify.rc == 2
        assert "is damaged" in verify.stderr

        run = run_playbook(
            "moodle_restore.yml", moodle_restore_backup=name, moodle_restore_overwrite_live=True
        )
        assert run.rc != 0
        assert "Refusing to restore" in run.output and "is damaged" in run.output
        assert "The site was not touched." in run.output
        assert content(host) == before
        assert front_page(host)[0] == 200

        # restic's own check finds it too, and the check unit fails, saying why.
        check = _cli(host, "check --read-data-subset 100%")
        assert check.rc == 2 and "repository check failed" in check.stderr
        started = host.run("systemctl start mjp-moodle-backup-check.service")
        assert started.rc != 0
        result = host.run("systemctl show -p Result --value mjp-moodle-backup-check.service")
        assert result.stdout.strip() != "success"
        journal = host.run("journalctl -u mjp-moodle-backup-check.service -n 20 --no-pager")
        assert "repository check failed" in journal.stdout
    finally:
        for pack in packs:
            host.run(f"cp -p {saved}/{os.path.basename(pack)} {pack}")
        host.run(f"rm -rf {saved} /root/before-damaged-backup")
        host.run("systemctl reset-failed mjp-moodle-backup-check.service")
    assert _cli(host, "check --read-data-subset 100%").rc == 0


def test_retention_keeps_what_the_policy_says(host: Any) -> None:
    config = "/root/retention-test.json"
    repo = "/srv/moodle-backups/retention-test"
    _local_repo(host, repo, config, keep_daily=3, keep_weekly=2)
    # backups at 02:30 UTC on days of three ISO weeks (Wed 2025-01-01 to Thu 2025-01-16), two
    # on the last day: several days in week 2 show that only the newest of a week stays
    # (the days of tests/unit/test_moodle_backup.py's retention test)
    days = (1, 5, 8, 10, 12, 13, 14, 15, 16)
    stamps = [f"2025-01-{day:02d}T02:30:00Z" for day in days] + ["2025-01-16T14:00:00Z"]
    try:
        for stamp in stamps:
            result = _cli(host, f"backup --no-prune --now {stamp}", config)
            assert result.rc == 0, result.stderr
        assert len(_backups(host, config)) == len(stamps)
        # daily: the newest of Jan 16, 15, 14; weekly: ISO week 3 (Jan 16) and week 2 (Sun Jan 12)
        kept = [
            "20250116T140000Z-blue",
            "20250115T023000Z-blue",
            "20250114T023000Z-blue",
            "20250112T023000Z-blue",
        ]
        dry = _cli(host, "prune --dry-run", config)
        assert dry.rc == 0, dry.stderr
        colour = fact(host)["active_colour"]
        kept = [k.replace("-blue", f"-{colour}") for k in kept]
        all_names = {b["name"] for b in _backups(host, config)}
        assert sorted(json.loads(dry.stdout)["pruned"]) == sorted(all_names - set(kept))
        result = _cli(host, "prune", config)
        assert result.rc == 0, result.stderr
        assert [b["name"] for b in _backups(host, config)] == kept
        snapshots = json.loads(_restic(host, "snapshots --json", repo=repo).stdout)
        assert len(snapshots) == 2 * len(kept)
        assert json.loads(_cli(host, "prune --dry-run", config).stdout)["pruned"] == []
    finally:
        host.run(f"rm -rf {repo} {config}")


def test_timer_run_produces_a_valid_backup(host: Any) -> None:
    before = {b["name"] for b in _backups(host)}
    start = time.monotonic()
    result = host.run("systemctl start mjp-moodle-backup.service")
    TIMES["backup (systemd service)"] = time.monotonic() - start
    journal = "journalctl -u mjp-moodle-backup.service -n 30 --no-pager"
    assert result.rc == 0, host.run(journal).stdout
    state = host.run("systemctl show -p Result --value mjp-moodle-backup.service").stdout
    assert state.strip() == "success"
    new = [b["name"] for b in _backups(host) if b["name"] not in before]
    assert len(new) == 1
    verify = _cli(host, f"verify {new[0]}")
    assert verify.rc == 0, verify.stderr
    assert json.loads(verify.stdout)["ok"] is True
    assert host.run("systemctl start mjp-moodle-backup-check.service").rc == 0


def test_a_failed_backup_fails_the_unit_and_says_why(host: Any) -> None:
    assert host.run(f"mv {PASSWORD_FILE} {PASSWORD_FILE}.saved").rc == 0
    try:
        assert host.run("systemctl start mjp-moodle-backup.service").rc != 0
        state = host.run("systemctl show -p Result --value mjp-moodle-backup.service").stdout
        assert state.strip() != "success"
        journal = host.run("journalctl -u mjp-moodle-backup.service -n 20 --no-pager").stdout
        assert "mjp-moodle-backup backup:" in journal
    finally:
        host.run(f"mv {PASSWORD_FILE}.saved {PASSWORD_FILE}")
        host.run("systemctl reset-failed mjp-moodle-backup.service")


def test_repository_is_encrypted(host: Any) -> None:
    row = "secret-row-that-must-not-show"
    assert standin(host, f"--add-row={row}").rc == 0
    result = _cli(host, "backup --no-prune")
    assert result.rc == 0, result.stderr
    assert host.run(f"grep -rl {row} {REPO}").stdout == ""
    wrong = "/root/wrong-restic-password"
    assert host.run(f"install -m 0600 /dev/null {wrong} && echo wrong > {wrong}").rc == 0
    try:
        assert _restic(host, "snapshots", password=wrong).rc != 0
    finally:
        host.run(f"rm -f {wrong}")


def test_backup_refused_when_the_disk_is_too_full(host: Any) -> None:
    config = "/root/full-test.json"
    repo = "/srv/moodle-backups/full-test"
    _local_repo(host, repo, config, reserve_mb=10**9)
    try:
        result = _cli(host, "backup", config)
        assert result.rc == 2
        assert "not enough free space" in result.stderr and "Nothing was written" in result.stderr
        assert json.loads(_restic(host, "snapshots --json", repo=repo).stdout) == []
    finally:
        host.run(f"rm -rf {repo} {config}")


@pytest.fixture
def backup_server(_backup_server_install: Any) -> Any:
    """ops-backup1: sshd with a backup user that owns /srv/restic."""
    server = _backup_server_install
    # Wait for the install begun at the module's start; if it failed, install now (and say why).
    server.run(f"for i in $(seq 600); do systemctl is-active -q {INSTALL_UNIT} || break; "
               "sleep 1; done")
    if server.run("dpkg-query -W -f '${Status}' openssh-server").stdout != (
            "install ok installed"):
        installed = server.run(f"bash -c {shlex.quote(SSH_INSTALL)}")
        assert installed.rc == 0, installed.stdout + installed.stderr
    assert server.run("systemctl start ssh").rc == 0
    setup = (
        "id resticbk || useradd -m -s /bin/sh resticbk; "
        "install -d -o resticbk -g resticbk -m 0700 /srv/restic /home/resticbk/.ssh"
    )
    assert server.run(setup).rc == 0
    return server


def test_remote_repository_over_sftp(host: Any, backup_server: Any) -> None:
    comment = f"mjp-moodle-backup@{HOST}"  # as the role names it
    keygen = (
        "install -d -m 0700 /etc/mjp/moodle-backup-ssh && "
        f"{{ test -f {SSH_KEY} || ssh-keygen -q -t ed25519 -N '' -C {comment} -f {SSH_KEY}; }}"
    )
    assert host.run(keygen).rc == 0
    public = host.file(f"{SSH_KEY}.pub").content_string.strip()
    authorise = (
        f"printf '%s\\n' {shlex.quote(public)} > /home/resticbk/.ssh/authorized_keys && "
        "chown resticbk: /home/resticbk/.ssh/authorized_keys && "
        "chmod 0600 /home/resticbk/.ssh/authorized_keys"
    )
    assert backup_server.run(authorise).rc == 0
    host_key = backup_server.file("/etc/ssh/ssh_host_ed25519_key.pub").content_string
    offsite = {
        "name": "offsite",
        "type": "sftp",
        "user": "resticbk",
        "host": BACKUP_HOST,
        "port": 22,
        "path": "/srv/restic/moodle",
        "host_key": " ".join(host_key.split()[:2]),
    }
    local = {"name": "local", "type": "local", "path": REPO}
    assert host.run(f"cp -p {CONFIG} {CONFIG}.saved").rc == 0
    try:
        run = run_playbook("moodle_backup.yml", moodle_backup_repositories=[local, offsite])
        assert run.rc == 0
        name = _backup_name(run.output)
        assert "Copied to offsite." in run.output
        assert backup_server.file("/srv/restic/moodle/config").exists
        assert name in [b["name"] for b in _backups(host, repository="offsite")]
        verify = _cli(host, f"verify {name} --repository offsite")
        assert verify.rc == 0, verify.stderr
        # The data on the remote host is restic's encrypted packs only.
        assert backup_server.run("grep -rl inplace-row-0 /srv/restic").stdout == ""

        # A host that does not show the pinned key gets nothing.
        settings = json.loads(host.file(CONFIG).content_string)
        other = "ssh-keygen -q -t ed25519 -N '' -f /root/other-key"
        assert host.run(f"rm -f /root/other-key* && {other}").rc == 0
        wrong = f"{BACKUP_HOST} " + host.file("/root/other-key.pub").content_string
        assert host.run(f"printf %s {shlex.quote(wrong)} > /root/wrong_known_hosts").rc == 0
        # ssh writes its own messages to a log (-E): restic may end before relaying them.
        repos = [
            {
                **r,
                "sftp_command": r["sftp_command"].replace(
                    "/etc/mjp/moodle-backup-ssh/known_hosts", "/root/wrong_known_hosts"
                ).replace("ssh ", "ssh -E /root/wrong-ssh.log ", 1),
            }
            for r in settings["repositories"]
        ]
        remote_config = "/root/remote-test.json"
        _test_config(host, remote_config, repositories=repos)
        result = _cli(host, "backup --no-prune", remote_config)
        assert result.rc == 1
        assert "restic copy on repository offsite" in result.stderr
        # ssh refused the host's key (its log says so; restic only saw the session end)
        ssh_log = host.run("cat /root/wrong-ssh.log").stdout
        assert "Host key verification failed" in ssh_log or "has changed" in ssh_log, (
            ssh_log, result.stderr)
        newest = _backups(host)[0]["name"]
        assert newest not in [b["name"] for b in _backups(host, repository="offsite")]
    finally:
        host.run(f"mv {CONFIG}.saved {CONFIG}")
        host.run("rm -f /root/remote-test.json /root/other-key* /root/wrong_known_hosts "
                 "/root/wrong-ssh.log")


def test_restore_to_the_idle_colour(host: Any) -> None:
    live = fact(host)["active_colour"]
    idle = "green" if live == "blue" else "blue"
    _add_content(host, "idle")
    before = content(host)
    # The host's backup program, as the timer runs it (moodle_backup.yml is proven above).
    result = _cli(host, "backup --no-prune")
    assert result.rc == 0, result.stderr
    name = json.loads(result.stdout)["backup"]

    start = time.monotonic()
    run = run_playbook(
        "moodle_restore.yml", moodle_restore_backup="latest", moodle_restore_to="idle"
    )
    TIMES["restore to the idle colour (playbook)"] = time.monotonic() - start
    assert run.rc == 0
    restored = fact(host)["colours"][idle]
    assert restored["db_name"] != fact(host)["colours"][live]["db_name"]
    assert restored["release_dir"].endswith("-restore-" + name)
    config_php = host.file(restored["release_dir"] + "/config.php").content_string
    assert f"/srv/moodledata/{idle}'" in config_php and restored["db_name"] in config_php
    after = content(host, idle)
    assert after["rows"] == before["rows"]
    assert after["files"] == before["files"] and all(f["intact"] for f in after["files"])
    # The restore is itself a blue-green switch: the restored colour is live, the old one
    # frozen as the rollback point.
    data = fact(host)
    assert data["active_colour"] == idle
    assert data["frozen"] == live
    assert data["last_switch"]["reason"] == "restore"
    assert front_page(host)[0] == 200
    assert content(host)["rows"] == before["rows"]


def test_print_times(host: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The measured times, shown in molecule's output (not a pass/fail check)."""
    size = host.run(f"du -sk {REPO}").stdout.split()[0]
    with capsys.disabled():
        print(f"\nBackup and restore of the test site (repository {size} KiB):")
        for what, seconds in TIMES.items():
            print(f"  {what:45s} {seconds:6.1f} s")
