"""Backups and restores of the Moodle site (role moodle_backup, playbooks/moodle_backup.yml
and moodle_restore.yml), against the TEST STAND-IN for Moodle (not Moodle).

The tests run in file order and share the host: each leaves the live site working and
serving (test_bluegreen.py runs after this file). Times of the backup and restore of the
test site are printed (pytest -s), never asserted.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import Any

import pytest
from conftest import HOST, content, db, fact, front_page, run_playbook, standin

testinfra_hosts = [f"ansible://{HOST}"]

CMD = "/usr/local/sbin/mjp-moodle-backup"
CONFIG = "/etc/mjp/moodle-backup.json"
BACKUPS = "/srv/moodle-backups/site"
TIMES: dict[str, float] = {}


def _backup_name(output: str) -> str:
    match = re.search(r"Backup (\d{8}T\d{6}Z-\w+) in ", output)
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
    """A copy of the host's backup settings with some changed (its own backup_dir)."""
    settings = json.loads(host.file(CONFIG).content_string)
    settings.update(changes)
    text = json.dumps(settings)
    write = f"install -m 0600 /dev/null {path} && printf %s {shlex.quote(text)} > {path}"
    assert host.run(write).rc == 0


def _cli(host: Any, args: str, config: str = CONFIG) -> Any:
    return host.run(f"{CMD} --config {config} {args}")


def test_scheduled_backup_is_set_up(host: Any) -> None:
    timer = host.service("mjp-moodle-backup.timer")
    assert timer.is_enabled and timer.is_running
    unit = host.file("/etc/systemd/system/mjp-moodle-backup.timer").content_string
    assert "OnCalendar=*-*-* 02:30:00" in unit
    assert host.file(CONFIG).mode == 0o600 and host.file(CONFIG).user == "root"
    assert host.file("/srv/moodle-backups").mode == 0o700
    assert host.file(BACKUPS).mode == 0o700


def test_backup_then_restore_in_place_brings_back_every_row_and_file(host: Any) -> None:
    _add_content(host, "inplace")
    before = content(host)
    assert len(before["rows"]) >= 3 and len(before["files"]) >= 2

    start = time.monotonic()
    run = run_playbook("moodle_backup.yml")
    TIMES["backup (playbook)"] = time.monotonic() - start
    assert run.rc == 0
    name = _backup_name(run.output)
    manifest = json.loads(host.file(f"{BACKUPS}/{name}/manifest.json").content_string)
    TIMES["backup (script alone)"] = manifest["seconds"]
    assert manifest["colour"] == fact(host)["active_colour"]
    assert manifest["moodle"]["release"] == before["release"]
    assert float(manifest["moodle"]["version"]) == float(before["version"])
    data = manifest["archives"]["moodledata.tar.gz"]["members"]
    assert all(
        f"filedir/{f['contenthash'][:2]}/{f['contenthash'][2:4]}/{f['contenthash']}" in data
        for f in before["files"]
    )
    assert not any(m.split("/")[0] in ("cache", "localcache", "sessions", "temp") for m in data)
    assert "config.php" in manifest["archives"]["code.tar.gz"]["members"]
    # root only: the backup holds the database and config.php
    assert host.file(f"{BACKUPS}/{name}").mode == 0o700
    for member in ["manifest.json", *manifest["archives"]]:
        assert host.file(f"{BACKUPS}/{name}/{member}").mode == 0o600

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
    assert not host.file(_pool_path(host, before["files"][0]["contenthash"]) + ".partial").exists


def test_damaged_backup_is_refused_and_the_site_left_as_it_was(host: Any) -> None:
    result = _cli(host, "backup --no-prune")
    assert result.rc == 0, result.stderr
    name = json.loads(result.stdout)["backup"]
    assert standin(host, "--add-row=written-after-the-backup").rc == 0
    before = content(host)

    archive = f"{BACKUPS}/{name}/moodledata.tar.gz"
    flip = (
        "import sys; p = sys.argv[1]; b = bytearray(open(p, 'rb').read()); "
        "b[len(b) // 2] ^= 1; open(p, 'wb').write(b)"
    )
    assert host.run(f"python3 -c {shlex.quote(flip)} {archive}").rc == 0

    verify = _cli(host, f"verify {name}")
    assert verify.rc == 2
    assert "damaged" in verify.stderr and "moodledata.tar.gz: sha256" in verify.stderr

    run = run_playbook(
        "moodle_restore.yml", moodle_restore_backup=name, moodle_restore_overwrite_live=True
    )
    assert run.rc != 0
    assert "Refusing to restore" in run.output and "is damaged" in run.output
    assert "The site was not touched." in run.output
    assert content(host) == before
    assert front_page(host)[0] == 200
    assert host.run(f"rm -rf {BACKUPS}/{name}").rc == 0


def test_retention_keeps_what_the_policy_says(host: Any) -> None:
    config = "/root/retention-test.json"
    _test_config(
        host, config, backup_dir="/srv/moodle-backups/retention-test", keep_daily=3, keep_weekly=2
    )
    # one backup a day at 02:30 UTC from Wed 2025-01-01 to Thu 2025-01-16, two on the last day
    stamps = [f"2025-01-{day:02d}T02:30:00Z" for day in range(1, 17)] + ["2025-01-16T14:00:00Z"]
    try:
        for stamp in stamps:
            result = _cli(host, f"backup --now {stamp}", config)
            assert result.rc == 0, result.stderr
        listing = json.loads(_cli(host, "list", config).stdout)
        kept = [b["name"] for b in listing["backups"]]
        # daily: the newest of Jan 16, 15, 14; weekly: ISO week 3 (Jan 16) and week 2 (Sun Jan 12)
        assert kept == [
            "20250116T140000Z-blue",
            "20250115T023000Z-blue",
            "20250114T023000Z-blue",
            "20250112T023000Z-blue",
        ]
        dry = json.loads(_cli(host, "prune --dry-run", config).stdout)
        assert dry["pruned"] == []
    finally:
        host.run(f"rm -rf /srv/moodle-backups/retention-test {config}")


def test_timer_run_produces_a_valid_backup(host: Any) -> None:
    before = {b["name"] for b in json.loads(_cli(host, "list").stdout)["backups"]}
    start = time.monotonic()
    result = host.run("systemctl start mjp-moodle-backup.service")
    TIMES["backup (systemd service)"] = time.monotonic() - start
    journal = "journalctl -u mjp-moodle-backup.service -n 30 --no-pager"
    assert result.rc == 0, host.run(journal).stdout
    state = host.run("systemctl show -p Result --value mjp-moodle-backup.service").stdout
    assert state.strip() == "success"
    names = [b["name"] for b in json.loads(_cli(host, "list").stdout)["backups"]]
    new = [n for n in names if n not in before]
    assert len(new) == 1
    verify = _cli(host, f"verify --deep {new[0]}")
    assert verify.rc == 0, verify.stderr
    assert json.loads(verify.stdout)["ok"] is True


def test_encrypted_backup_is_unreadable_without_the_passphrase(host: Any) -> None:
    config = "/root/encrypted-test.json"
    passfile = "/root/encrypted-test.passphrase"
    make = f"install -m 0600 /dev/null {passfile} && head -c 24 /dev/urandom | base64 > {passfile}"
    assert host.run(make).rc == 0
    _test_config(
        host,
        config,
        backup_dir="/srv/moodle-backups/encrypted-test",
        encryption="gpg",
        passphrase_file=passfile,
    )
    try:
        result = _cli(host, "backup", config)
        assert result.rc == 0, result.stderr
        name = json.loads(result.stdout)["backup"]
        files = host.run(f"ls /srv/moodle-backups/encrypted-test/{name}").stdout.split()
        assert sorted(files) == [
            "code.tar.gz.gpg",
            "db.sql.gz.gpg",
            "manifest.json",
            "moodledata.tar.gz.gpg",
        ]
        verify = _cli(host, f"verify --deep {name}", config)
        assert verify.rc == 0, verify.stderr
        restored = "/root/encrypted-test-code"
        result = _cli(host, f"restore-files {name} --part code --dest {restored}", config)
        assert result.rc == 0, result.stderr
        assert host.file(f"{restored}/config.php").exists
        assert host.run(f"echo wrong > {passfile}").rc == 0
        assert _cli(host, f"verify --deep {name}", config).rc == 2
    finally:
        restored = "/root/encrypted-test-code"
        host.run(f"rm -rf /srv/moodle-backups/encrypted-test {config} {passfile} {restored}")


def test_backup_refused_when_the_disk_is_too_full(host: Any) -> None:
    config = "/root/full-test.json"
    _test_config(host, config, backup_dir="/srv/moodle-backups/full-test", reserve_mb=10**9)
    try:
        result = _cli(host, "backup", config)
        assert result.rc == 2
        assert "not enough free space" in result.stderr and "Nothing was written" in result.stderr
        assert host.run("ls -A /srv/moodle-backups/full-test | grep -v '^.lock$'").stdout == ""
    finally:
        host.run(f"rm -rf /srv/moodle-backups/full-test {config}")


def test_remote_copy_over_ssh(host: Any) -> None:
    """The host itself plays the remote backup server (sshd on 127.0.0.1, root's key)."""
    install = "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server"
    assert host.run(install).rc == 0
    assert host.run("systemctl start ssh").rc == 0
    key = "/etc/mjp/moodle-backup-ssh/id_ed25519"
    comment = f"mjp-moodle-backup@{HOST}"  # as the role names it
    setup = (
        f"install -d -m 0700 /etc/mjp/moodle-backup-ssh /root/.ssh && "
        f"{{ test -f {key} || ssh-keygen -q -t ed25519 -N '' -C {comment} -f {key}; }} && "
        f"cat {key}.pub >> /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys"
    )
    assert host.run(setup).rc == 0
    host_key = " ".join(host.file("/etc/ssh/ssh_host_ed25519_key.pub").content_string.split()[:2])
    assert host.run(f"cp -p {CONFIG} {CONFIG}.saved").rc == 0
    try:
        run = run_playbook(
            "moodle_backup.yml",
            moodle_backup_remote_destination="root@127.0.0.1:/srv/remote-copy",
            moodle_backup_remote_host_key=host_key,
        )
        assert run.rc == 0
        name = _backup_name(run.output)
        assert "Copied to root@127.0.0.1:/srv/remote-copy." in run.output
        local = set(host.run(f"ls -A {BACKUPS}").stdout.split()) - {".lock"}
        remote = set(host.run("ls -A /srv/remote-copy").stdout.split())
        assert name in remote and remote == local  # the retention is mirrored
        remote_config = "/root/remote-test.json"
        _test_config(host, remote_config, backup_dir="/srv/remote-copy")
        verify = _cli(host, f"verify --deep {name}", remote_config)
        assert verify.rc == 0, verify.stderr

        # A host that does not show the pinned key gets nothing.
        other = "ssh-keygen -q -t ed25519 -N '' -f /root/other-key"
        assert host.run(f"rm -f /root/other-key* && {other}").rc == 0
        wrong = "127.0.0.1 " + host.file("/root/other-key.pub").content_string
        assert host.run(f"printf %s {shlex.quote(wrong)} > /root/wrong_known_hosts").rc == 0
        settings = json.loads(host.file(CONFIG).content_string)
        _test_config(
            host,
            remote_config,
            remote={**settings["remote"], "known_hosts": "/root/wrong_known_hosts"},
        )
        result = _cli(host, "backup --no-prune", remote_config)
        assert result.rc == 1
        assert "but the copy to root@127.0.0.1:/srv/remote-copy failed" in result.stderr
        assert "Host key verification failed" in result.stderr
        assert json.loads(_cli(host, "list").stdout)["backups"][0]["name"] not in set(
            host.run("ls -A /srv/remote-copy").stdout.split()
        )
    finally:
        host.run(f"mv {CONFIG}.saved {CONFIG}")
        host.run("rm -rf /srv/remote-copy /root/remote-test.json /root/other-key*")
        host.run("rm -f /root/wrong_known_hosts")
        host.run("systemctl stop ssh")


def test_restore_to_the_idle_colour(host: Any) -> None:
    live = fact(host)["active_colour"]
    idle = "green" if live == "blue" else "blue"
    _add_content(host, "idle")
    before = content(host)
    assert run_playbook("moodle_backup.yml").rc == 0

    start = time.monotonic()
    run = run_playbook(
        "moodle_restore.yml", moodle_restore_backup="latest", moodle_restore_to="idle"
    )
    TIMES["restore to the idle colour (playbook)"] = time.monotonic() - start
    assert run.rc == 0
    restored = fact(host)["colours"][idle]
    assert restored["db_name"] != fact(host)["colours"][live]["db_name"]
    assert restored["release_dir"].endswith("-restore-" + _backup_name_of_latest(host))
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


def _backup_name_of_latest(host: Any) -> str:
    return str(json.loads(_cli(host, "list").stdout)["backups"][0]["name"])


def test_print_times(host: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """The measured times, shown in molecule's output (not a pass/fail check)."""
    size = json.loads(_cli(host, "list").stdout)["backups"][0]["total_size"]
    with capsys.disabled():
        print(f"\nBackup and restore of the test site ({size / 1024:.0f} KiB of archives):")
        for what, seconds in TIMES.items():
            print(f"  {what:45s} {seconds:6.1f} s")
