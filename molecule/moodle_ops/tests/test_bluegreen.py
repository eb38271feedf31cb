"""Blue-green upgrades and rollback, as an operator runs them (playbooks/moodle_upgrade.yml,
moodle_rollback.yml, moodle_status.yml), against the TEST STAND-IN for Moodle v1 -> v2.

The tests run in file order and build on each other: upgrade under load, the same upgrade
again, site.yml after the switch, rollback, the same rollback again, a failing upgrade, then
the blue-green program (ltihub.upgrade on the host) SIGKILLed in the middle of an upgrade
and of a rollback (its test hook, moodle_bluegreen_test_kill_at) and the same playbook run
again, which must heal.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from conftest import (
    HOST,
    PUBLIC,
    content,
    db,
    fact,
    front_page,
    run_playbook,
    standin,
)

testinfra_hosts = [f"ansible://{HOST}"]

V1 = "4.5 (Build: 20241007)"
V2 = "4.5.1 (Build: 20241209)"
STATE = "/var/lib/mjp-moodle/bluegreen"
JOURNAL = f"{STATE}/journal.jsonl"
# The blue-green program's own read-only view of its journal and lock (what
# playbooks/moodle_status.yml puts into words), asked on the host without a playbook run.
PROGRAM_STATUS = ("env PYTHONPATH=/usr/local/lib/mjp/python /usr/bin/python3 -m ltihub.upgrade "
                  f"status --config {STATE}/config.json")

# Runs on the Moodle host under systemd-run: two clients fetch the public front page through
# the proxy, each on a new connection, until /tmp/loadgen.stop appears. One JSON line per
# request: time, HTTP status (0 = connection error), and what the page was.
LOADGEN = r"""
import json, ssl, sys, threading, time, urllib.error, urllib.request
url, out = sys.argv[1], sys.argv[2]
ctx = ssl._create_unverified_context()
lock = threading.Lock()
def kind(status, body):
    m = __import__('re').search(r'Moodle ([0-9.]+ \(Build: [0-9]+\))', body)
    # Moodle's own page (its string 'sitemaintenance'), not Apache's or nginx's 503, whose
    # text also speaks of "maintenance downtime".
    if status == 503 and 'undergoing maintenance' in body:
        return 'maintenance'
    return m.group(1) if m else 'other'
def client():
    import os
    with open(out, 'a') as log:
        while not os.path.exists('/tmp/loadgen.stop'):
            t = time.time()
            try:
                r = urllib.request.urlopen(url, context=ctx, timeout=30)
                status, body = r.status, r.read().decode('utf-8', 'replace')
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read().decode('utf-8', 'replace')
            except Exception as e:
                status, body = 0, repr(e)
            rec = {'t': t, 'status': status, 'page': kind(status, body) if status else body[:200]}
            with lock:
                log.write(json.dumps(rec) + '\n'); log.flush()
            time.sleep(0.05)
threads = [threading.Thread(target=client) for _ in range(2)]
[th.start() for th in threads]; [th.join() for th in threads]
"""


def _start_load(host: Any) -> None:
    host.run("rm -f /tmp/loadgen.stop /tmp/load.jsonl")
    host.run(f"printf '%s' {shlex.quote(LOADGEN)} > /tmp/loadgen.py")
    command = f"python3 /tmp/loadgen.py {PUBLIC}/ /tmp/load.jsonl"
    started = host.run(f"systemd-run --unit=mjp-loadgen --collect {command}")
    assert started.rc == 0, started.stderr


def _stop_load(host: Any) -> list[dict[str, Any]]:
    host.run("touch /tmp/loadgen.stop")
    host.run("for i in $(seq 60); do systemctl is-active -q mjp-loadgen || break; sleep 1; done")
    lines = host.file("/tmp/load.jsonl").content_string.splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# Runs on the Moodle host under systemd-run: inserts one row every 50 ms straight into the
# live colour's database (as Moodle's users would through the site), stamped with the
# server's time, until the colour's maintenance file appears (the freeze; like a request
# that began before it, a last insert may land in the drain time) or /tmp/writer.stop.
WRITER = r"""
while [ ! -e /tmp/writer.stop ] && [ ! -e "$2/climaintenance.html" ]; do
  mariadb -e "INSERT INTO $1.mdl_mjp_probe (t) VALUES (UNIX_TIMESTAMP(NOW(6)))" || exit 1
  sleep 0.05
done
"""


def _start_writer(host: Any, database: str, dataroot: str) -> None:
    """A probe table, ~32 MB of filler (so the pre-copy takes seconds while rows keep
    coming) and the writer."""
    db(host, f"DROP TABLE IF EXISTS {database}.mdl_mjp_probe, {database}.mdl_mjp_filler;"
             f"CREATE TABLE {database}.mdl_mjp_probe (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
             " t DECIMAL(17,6) NOT NULL) ENGINE=InnoDB;"
             f"CREATE TABLE {database}.mdl_mjp_filler (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
             " pad VARCHAR(1000)) ENGINE=InnoDB;"
             f"INSERT INTO {database}.mdl_mjp_filler (pad) VALUES (REPEAT('x', 1000))")
    db(host, ";".join([f"INSERT INTO {database}.mdl_mjp_filler (pad) "
                       f"SELECT pad FROM {database}.mdl_mjp_filler"] * 15))  # 2^15 rows
    host.run("rm -f /tmp/writer.stop")
    host.run(f"printf '%s' {shlex.quote(WRITER)} > /tmp/writer.sh")
    started = host.run(f"systemd-run --unit=mjp-writer --collect bash /tmp/writer.sh {database} "
                   f"{shlex.quote(dataroot)}")
    assert started.rc == 0, started.stderr


def _stop_writer(host: Any) -> None:
    host.run("touch /tmp/writer.stop")
    host.run("for i in $(seq 30); do systemctl is-active -q mjp-writer || break; sleep 0.5; done")


def _journal_times(host: Any) -> dict[str, float]:
    """When the last closed journal's pre-copy ended and its freeze began (frozen_at)."""
    name = host.run(f"ls {STATE}/history | tail -1").stdout.strip()
    records = [json.loads(x) for x in
               host.file(f"{STATE}/history/{name}").content_string.splitlines()]
    done = {r["step"]: r for r in records if r["event"] == "step_done"}
    return {"precopied": float(done["precopy_db"]["at"]),
            "snapshot": float(done["precopy_db"]["data"].get("snapshot_at", 0)),
            "frozen": float(done["freeze"]["data"]["frozen_at"])}


def _maintenance_window(records: list[dict[str, Any]]) -> float:
    times = [r["t"] for r in records if r["page"] == "maintenance"]
    return round(max(times) - min(times), 1) if times else 0.0


def _upgrade(archives: Any, archive: str, version: str, **extra: Any) -> Any:
    return run_playbook(
        "moodle_upgrade.yml",
        moodle_version=version,
        moodle_archive_local=str(archives / archive),
        **extra,
    )


def _program_status(host: Any) -> dict[str, Any]:
    result = host.run(PROGRAM_STATUS)
    assert result.rc == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def _interrupted(host: Any, op: str, rerun_will: str) -> dict[str, Any]:
    """The program's view after a kill: an interrupted ``op`` (no process holds the lock)
    whose re-run will ``rerun_will`` ("undo" or "finish") it; its open operation."""
    state = _program_status(host)
    operation = state["open_operation"]
    assert state["interrupted"] and not state["running"], state
    assert operation["op"] == op and operation["next"] == rerun_will, operation
    assert state["rerun_will"].startswith(f"{rerun_will} the {op}"), state["rerun_will"]
    return dict(operation)


def _history(host: Any) -> list[dict[str, Any]]:
    """The last record (the end) of every closed journal of the program, oldest first."""
    ends = []
    for name in sorted(host.run(f"ls {STATE}/history").stdout.split()):
        lines = host.file(f"{STATE}/history/{name}").content_string.splitlines()
        ends.append(json.loads(lines[-1]))
    return ends


@pytest.fixture(scope="module")
def site_content(host: Any) -> dict[str, Any]:
    """Rows and pool files created on v1 before any upgrade."""
    for text in ("first row", "second row", "third row"):
        assert standin(host, f"--add-row={shlex.quote(text)}").rc == 0
    for name, data in (("notes.txt", "lecture notes"), ("data.csv", "a,b\n1,2\n")):
        host.run(f"printf '%s' {shlex.quote(data)} > /tmp/{name} && chmod 644 /tmp/{name}")
        added = standin(host, f"--add-file=/tmp/{name}")
        assert added.rc == 0, added.stdout + added.stderr
    listing = content(host)
    assert listing["release"] == V1
    return listing


def test_status_names_the_live_colour_before_any_switch(host: Any) -> None:
    run = run_playbook("moodle_status.yml")
    assert run.rc == 0
    data = fact(host)
    assert f"Active colour: {data['active_colour']}" in run.output
    if "last_switch" not in data:  # a fresh site (not when verify runs again)
        assert "never (first deployment)" in run.output
    assert run.changed == 0


def test_upgrade_under_load_serves_v2_with_every_row_and_file(
    host: Any, standin_archives: Any, site_content: dict[str, Any]
) -> None:
    before = fact(host)
    live, idle = before["active_colour"], ({"blue", "green"} - {before["active_colour"]}).pop()

    live_db, idle_db = before["colours"][live]["db_name"], f"moodle_{idle}"
    _start_writer(host, live_db, before["colours"][live]["dataroot"])
    _start_load(host)
    try:
        run = _upgrade(standin_archives, "standin-moodle-v2.tgz", "4.5.1")
    finally:
        records = _stop_load(host)
        _stop_writer(host)

    assert run.rc == 0, run.output[-3000:]
    after = fact(host)
    assert after["active_colour"] == idle
    assert after["frozen"] == live
    assert after["last_switch"]["reason"] == "upgrade"
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V2}" in body
    listing = content(host)
    assert listing["release"] == V2
    assert [r["content"] for r in listing["rows"]] == [r["content"] for r in site_content["rows"]]
    assert [f["contenthash"] for f in listing["files"]] == [
        f["contenthash"] for f in site_content["files"]
    ]
    assert all(f["ondisk"] and f["intact"] for f in listing["files"])

    errors = [r for r in records if r["status"] not in (200, 503)]
    bad_503 = [r for r in records if r["status"] == 503 and r["page"] != "maintenance"]
    pages = sorted({r["page"] for r in records if r["status"] == 200})
    window = _maintenance_window(records)
    print(
        f"\nload during the upgrade: {len(records)} requests, pages {pages}, "
        f"{sum(r['page'] == 'maintenance' for r in records)} maintenance responses "
        f"over {window} s; "
        f"playbook's maintenance window {after['last_upgrade']['maintenance_seconds']} s, "
        f"database copy {after['last_upgrade']['db_copy_seconds']} s, "
        f"moodledata copy {after['last_upgrade']['data_copy']}, "
        f"drain {after['last_upgrade']['drain']}"
    )
    # The drain waited for the requests that began before the freeze, read from PHP-FPM.
    assert after["last_upgrade"]["drain"]["how"] == "fpm-status", after["last_upgrade"]
    assert "still_running" not in after["last_upgrade"]["drain"]
    # Rows the writer committed before the freeze, including those after the pre-copy's
    # snapshot (they can only have come through the binary log), are all on the new colour.
    times = _journal_times(host)
    written = [float(t) for t in db(host, f"SELECT t FROM {live_db}.mdl_mjp_probe").split()]
    arrived = {float(t) for t in db(host, f"SELECT t FROM {idle_db}.mdl_mjp_probe").split()}
    before_freeze = [t for t in written if t < times["frozen"]]
    after_precopy = [t for t in before_freeze if t > times["precopied"]]
    print(f"pre-copy {after['last_upgrade'].get('db_precopy_seconds')} s "
          f"({after['last_upgrade'].get('db_copy_mode')} at the freeze); writer rows: "
          f"{len(before_freeze)} before the freeze, {len(after_precopy)} of them after the "
          "pre-copy")
    assert after["last_upgrade"]["db_copy_mode"] == "binlog", after["last_upgrade"]
    assert after_precopy, "no row was written between the pre-copy and the freeze"
    assert set(before_freeze) <= arrived, sorted(set(before_freeze) - arrived)[:5]
    db(host, f"DROP TABLE {live_db}.mdl_mjp_filler, {idle_db}.mdl_mjp_filler")
    assert not errors, f"connection errors or unexpected statuses: {errors[:5]}"
    assert not bad_503, f"503 that is not the maintenance page: {bad_503[:3]}"
    assert records[-1]["page"] == V2
    assert V1 in pages, "the load generator never saw v1 before the freeze"


def test_the_old_colour_stays_frozen_as_the_rollback_point(host: Any) -> None:
    data = fact(host)
    frozen = data["frozen"]
    assert host.file(f"{data['colours'][frozen]['dataroot']}/climaintenance.html").exists
    assert not host.service(f"moodle-cron-{frozen}.timer").is_running
    assert host.service(f"moodle-cron-{data['active_colour']}.timer").is_running
    link = host.file("/etc/nginx/conf.d/moodle-upstream.conf")
    assert (
        link.is_symlink
        and link.linked_to == f"/etc/nginx/moodle-upstreams/{data['active_colour']}.conf"
    )
    # The pool files are shared by hard link, the rest is the colour's own.
    live_root, frozen_root = (
        data["colours"][data["active_colour"]]["dataroot"],
        data["colours"][frozen]["dataroot"],
    )
    pool = host.run(f"cd {live_root}/filedir && find . -type f | head -1").stdout.strip()
    assert pool, "no pool file found"
    inode = host.run(
        f"stat -c %i {live_root}/filedir/{pool} {frozen_root}/filedir/{pool}"
    ).stdout.split()
    assert inode[0] == inode[1]


def test_the_same_upgrade_again_changes_nothing(host: Any, standin_archives: Any) -> None:
    run = _upgrade(standin_archives, "standin-moodle-v2.tgz", "4.5.1")
    assert run.rc == 0
    assert "nothing to do" in run.output
    assert run.changed == 0


def test_the_moodle_playbook_after_the_switch_changes_nothing(
    host: Any, standin_archives: Any
) -> None:
    """Operators re-run site.yml with the new release in the inventory: it must agree."""
    # Without the switch this run would upgrade the live colour in place: do not.
    data = fact(host)
    assert data["colours"][data["active_colour"]]["release"] == "4.5.1", "needs the upgrade"
    run = run_playbook(
        "moodle.yml",
        moodle_version="4.5.1",
        moodle_archive_local=str(standin_archives / "standin-moodle-v2.tgz"),
    )
    assert run.rc == 0
    assert run.changed == 0, re.findall(r"changed: \[.*", run.output)


def test_rollback_serves_v1_with_its_data_and_reports_what_stays_behind(
    host: Any, site_content: dict[str, Any]
) -> None:
    assert fact(host).get("last_switch", {}).get("reason") == "upgrade", "needs the upgrade"
    assert standin(host, "--add-row='written on v2 after the switch'").rc == 0
    upgraded = fact(host)["active_colour"]

    run = run_playbook("moodle_rollback.yml")

    assert run.rc == 0, run.output[-3000:]
    data = fact(host)
    assert data["active_colour"] != upgraded
    assert data["last_switch"]["reason"] == "rollback"
    assert data["last_rollback"]["rows_written_since_switch"] >= 1
    assert "WARNING" in run.output and "NOT on the site now" in run.output
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V1}" in body
    listing = content(host)
    assert [r["content"] for r in listing["rows"]] == [r["content"] for r in site_content["rows"]]
    assert all(f["intact"] for f in listing["files"])
    # What was written on v2 is kept there, frozen.
    kept = content(host, colour=upgraded)
    assert "written on v2 after the switch" in [r["content"] for r in kept["rows"]]
    assert host.file(f"{data['colours'][upgraded]['dataroot']}/climaintenance.html").exists

    status_run = run_playbook("moodle_status.yml")
    assert f"Active colour: {data['active_colour']} (since rollback" in status_run.output


def test_a_second_rollback_changes_nothing(host: Any) -> None:
    run = run_playbook("moodle_rollback.yml")
    assert run.rc == 0
    assert "nothing to roll back" in run.output
    assert run.changed == 0


def test_an_upgrade_refuses_to_overwrite_writes_left_behind_by_the_rollback(
    host: Any, standin_archives: Any
) -> None:
    """The idle colour keeps what was written on it after its switch: not overwritten
    unless told (moodle_bluegreen_discard_writes), and then dumped first."""
    before = fact(host)
    assert before["last_switch"]["reason"] == "rollback", "needs the rollback"
    run = _upgrade(standin_archives, "standin-moodle-v2-broken.tgz", "4.5.2")
    assert run.rc != 0
    assert "moodle_bluegreen_discard_writes" in run.output
    assert "Nothing was changed" in run.output
    # Refused before the target was fetched or prepared: the run changed nothing at all.
    assert "Stop before anything is prepared" in run.output
    assert run.changed == 0, run.output[-3000:]
    assert fact(host) == before
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V1}" in body


def test_a_failing_upgrade_leaves_v1_live_writable_and_whole(
    host: Any, standin_archives: Any, site_content: dict[str, Any]
) -> None:
    before = fact(host)
    live = before["active_colour"]

    run = _upgrade(standin_archives, "standin-moodle-v2-broken.tgz", "4.5.2",
                   moodle_bluegreen_discard_writes=True)

    assert run.rc != 0
    assert "Nothing was switched" in run.output
    assert "upgrade.php" in run.output
    after = fact(host)
    assert after["active_colour"] == live
    assert after["colours"][live] == before["colours"][live]
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V1}" in body
    assert not host.file(f"{after['colours'][live]['dataroot']}/climaintenance.html").exists
    assert host.service(f"moodle-cron-{live}.timer").is_running
    assert not host.file(JOURNAL).exists, "the program's journal is still open"
    assert _history(host)[-1]["outcome"] == "undone"
    # What the rollback left on the idle colour was dumped before being overwritten.
    assert host.run("ls /srv/moodle-backups/*-writes-*.sql.gz").rc == 0
    assert standin(host, "--add-row='still writable'").rc == 0
    rows = [r["content"] for r in content(host)["rows"]]
    assert rows == [r["content"] for r in site_content["rows"]] + ["still writable"]


def test_a_refused_target_changes_nothing(host: Any, standin_archives: Any) -> None:
    """Going back to an older release is refused by the pre-checks, before any freeze."""
    before = fact(host)
    run = run_playbook(
        "moodle_upgrade.yml",
        moodle_version="4.4",
        moodle_archive_local=str(standin_archives / "standin-moodle-v1.tgz"),
    )
    assert run.rc != 0
    assert "Nothing was changed" in run.output or "nothing was changed" in run.output
    assert fact(host) == before


# ----------------------------------------------------------------- kills of the program


# Where the chain below kills the program, in order: each re-run first heals the run before
# (undoes it from the journal, or finishes it past the point of no return) and is then killed
# at the next boundary. "start:<step>" is right after the journal records the step as begun,
# which is what a kill in the middle of that step leaves behind.
KILL_CHAIN = ["after:freeze", "start:copy_db", "start:upgrade_php", "after:switch"]
# After which kills the operator's status playbook (moodle_status.yml) runs too, to check its
# words for an interrupted upgrade: one kill before upgrade.php's end (a re-run undoes), and
# the one after the switch (a re-run finishes). After every kill the program's own status
# (the same reading of the journal, without a playbook run) says what a re-run will do, and
# after the first the status playbook shows the upgrade as running while a process holds
# the lock (_other_tools_refuse_while_a_process_holds_the_lock).
STATUS_PLAYBOOK_AFTER = {"start:copy_db", "after:switch"}


def test_an_upgrade_killed_at_each_step_in_turn_heals_on_every_rerun(
    host: Any, standin_archives: Any
) -> None:
    """SIGKILL of the host-side program after the freeze, during the database copy, during
    upgrade.php and after the proxies switched but before the record, one run after the
    other: the site stays frozen and locked out of other tools while a process holds the
    lock; each re-run of the same playbook heals the run before from the journal, and the
    last one finishes the upgrade with every row and pool file of before the freeze."""
    live = fact(host)["active_colour"]
    rows = [r["content"] for r in content(host)["rows"]]
    files = [f["contenthash"] for f in content(host)["files"]]

    for number, kill_at in enumerate(KILL_CHAIN):
        run = _upgrade(standin_archives, "standin-moodle-v2.tgz", "4.5.1",
                       moodle_bluegreen_discard_writes=True,
                       moodle_bluegreen_test_kill_at=kill_at)
        assert run.rc != 0 and "killed by signal 9" in run.output, (kill_at, run.output[-3000:])
        if number:
            assert "from its journal" in run.output, kill_at  # the run before was healed
        assert host.file(JOURNAL).exists
        if kill_at != "after:switch":
            assert front_page(host)[0] == 503, kill_at  # frozen: the maintenance page
        will = "finish" if kill_at == "after:switch" else "undo"
        operation = _interrupted(host, "upgrade", will)
        if kill_at.startswith("start:"):  # killed in the middle of that step
            assert operation["interrupted_in"] == [kill_at.split(":", 1)[1]], operation
        if kill_at in STATUS_PLAYBOOK_AFTER:
            status_run = run_playbook("moodle_status.yml")
            assert status_run.rc == 0 and status_run.changed == 0
            assert "Interrupted: upgrade" in status_run.output
            assert f"will {will} the upgrade" in status_run.output, kill_at
        if number == 0:
            _other_tools_refuse_while_a_process_holds_the_lock(host)

    run = _upgrade(standin_archives, "standin-moodle-v2.tgz", "4.5.1",
                   moodle_bluegreen_discard_writes=True)

    assert run.rc == 0, run.output[-3000:]
    assert "was finished from its journal" in run.output
    after = fact(host)
    assert after["active_colour"] != live and after["frozen"] == live
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V2}" in body
    listing = content(host)
    assert listing["release"] == V2
    assert [r["content"] for r in listing["rows"]] == rows
    assert [f["contenthash"] for f in listing["files"]] == files
    assert all(f["ondisk"] and f["intact"] for f in listing["files"])
    assert not host.file(JOURNAL).exists
    assert [h["outcome"] for h in _history(host)[-len(KILL_CHAIN):]] == (
        ["undone"] * (len(KILL_CHAIN) - 1) + ["done"])
    assert host.service(f"moodle-cron-{after['active_colour']}.timer").is_running
    assert not host.service(f"moodle-cron-{live}.timer").is_running


def _other_tools_refuse_while_a_process_holds_the_lock(host: Any) -> None:
    holder = host.run(f"systemd-run --unit=mjp-lockholder --collect "
                      f"flock -x {STATE}/lock sleep 600")
    assert holder.rc == 0, holder.stderr
    try:
        host.run("for i in $(seq 20); do systemctl is-active -q mjp-lockholder && break; "
                 "sleep 0.5; done; sleep 1")
        assert "Running now: upgrade" in run_playbook("moodle_status.yml").output
        refused = run_playbook("moodle.yml")
        assert refused.rc != 0 and "is running on" in refused.output
        backup = host.run("systemctl start mjp-moodle-backup.service")
        assert backup.rc != 0
        log = host.run("journalctl -u mjp-moodle-backup.service -n 20 --no-pager").stdout
        assert "no backup now" in log
    finally:
        host.run("systemctl stop mjp-lockholder")
    assert host.file(JOURNAL).exists, "a refusing tool changed the journal"


def test_a_rollback_killed_after_the_switch_is_finished_by_the_next_run(host: Any) -> None:
    """SIGKILL after the proxies switched back (past the point of no return): the same
    playbook again finishes the rollback (record, cron) from the journal."""
    before = fact(host)
    assert before["last_switch"]["reason"] == "upgrade", "needs the upgrade"
    upgraded, back = before["active_colour"], before["frozen"]
    rows = [r["content"] for r in content(host, colour=back)["rows"]]

    run = run_playbook("moodle_rollback.yml", moodle_bluegreen_test_kill_at="after:switch")

    assert run.rc != 0 and "killed by signal 9" in run.output
    assert fact(host)["active_colour"] == upgraded  # not recorded yet
    # Past its point of no return (the switch): the program's status says a re-run finishes
    # it (moodle_status.yml words this as after the upgrade killed after its switch, above).
    assert "switch" in _interrupted(host, "rollback", "finish")["steps_done"]

    run = run_playbook("moodle_rollback.yml")

    assert run.rc == 0, run.output[-3000:]
    assert "was finished from its journal" in run.output
    after = fact(host)
    assert after["active_colour"] == back and after["last_switch"]["reason"] == "rollback"
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V1}" in body
    assert [r["content"] for r in content(host)["rows"]] == rows
    assert not host.file(JOURNAL).exists
    assert host.service(f"moodle-cron-{back}.timer").is_running
    assert not host.service(f"moodle-cron-{upgraded}.timer").is_running


def test_an_upgrade_killed_after_upgrade_php_is_finished_by_the_next_run(
    host: Any, standin_archives: Any
) -> None:
    """SIGKILL right after upgrade.php (its point of no return): the same playbook again
    checks, switches and records from the journal, without running upgrade.php again."""
    live = fact(host)["active_colour"]
    rows = [r["content"] for r in content(host)["rows"]]

    run = _upgrade(standin_archives, "standin-moodle-v2.tgz", "4.5.1",
                   moodle_bluegreen_discard_writes=True,
                   moodle_bluegreen_test_kill_at="after:upgrade_php")
    assert run.rc != 0 and "killed by signal 9" in run.output
    # Past its point of no return, not switched yet: a re-run finishes (the program's status;
    # moodle_status.yml's words for it are checked in the kill chain above).
    operation = _interrupted(host, "upgrade", "finish")
    assert "upgrade_php" in operation["steps_done"] and "switch" not in operation["steps_done"]
    assert fact(host)["active_colour"] == live

    run = _upgrade(standin_archives, "standin-moodle-v2.tgz", "4.5.1",
                   moodle_bluegreen_discard_writes=True)

    assert run.rc == 0, run.output[-3000:]
    assert "was finished from its journal" in run.output
    assert "nothing to do" in run.output
    after = fact(host)
    assert after["active_colour"] != live and after["last_switch"]["reason"] == "upgrade"
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V2}" in body
    assert [r["content"] for r in content(host)["rows"]] == rows
    assert not host.file(JOURNAL).exists
    journal = host.file(f"{STATE}/history/" + host.run(
        f"ls {STATE}/history | tail -1").stdout.strip()).content_string
    assert journal.count('"step": "upgrade_php"') == 2  # started and done once
