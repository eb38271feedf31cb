#!/usr/bin/env python3
"""Blue-green upgrade figures for larger sites: copy times and the maintenance window.

A benchmark, not a test: it prints tables and never judges them. It needs a Moodle test
host converged by the moodle_ops scenario (stand-in v1 live), or a copy of it:

    .venv/bin/molecule converge -s moodle_ops
    .venv/bin/python benchmarks/bluegreen_copy.py --sizes 1000 10000 100000 \
        --window --db-mb 1024 4096 --window-files 100000

Copy table: for each moodledata size N of --sizes (pool files of 1-16 KiB in filedir/,
plus 200 small files elsewhere, built in /srv/bench on the host) the moodledata copy with
hard links for the pool (--method link, what the upgrade does) against a plain copy of
every byte (--method plain). The host's filesystem decides whether the rest of moodledata
gets reflinks (XFS, Btrfs) or copies; the table says which happened. `--sizes` with no
value skips it. Without --window it also times the database copy
(mariadb-dump --single-transaction | mariadb) of the live database padded to each --db-mb.

Window table (--window): the live moodledata gets --window-files pool files (once), then
for each --db-mb the live database is padded to that size (table mdl_standin_bench, written
with sql_log_bin=0: the padding is in the pre-copy's snapshot, not in the binary log
stretch replayed at the freeze) and a real playbooks/moodle_upgrade.yml (v1 -> v2 stand-in)
runs, timed whole; its window and parts come from the host's fact (last_upgrade) and the
program's closed journal (history/*-upgrade-*.jsonl); then moodle_rollback.yml, timed, and
its window from the fact (last_rollback).
"""

# SQL here names the test host's own databases, read from its own local fact.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ltihub.upgrade.journal import parse_records

REPO = Path(__file__).resolve().parents[1]
# The moodledata copy of the blue-green program, as the moodle_bluegreen role installs it.
TOOL = "PYTHONPATH=/usr/local/lib/mjp/python python3 -m ltihub.upgrade.datacopy"
STATE_DIR = "/var/lib/mjp-moodle/bluegreen"
PAD_BATCH_ROWS = 16384  # 64 MiB of 4 KiB rows per INSERT: a small transaction each

# Builds a synthetic moodledata on the host: N pool files named by their SHA-1
# (argv: root, N, and a seed, N by default; other seeds give other files).
MAKE_DATA = r"""
import hashlib, os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else n)
made = 0
for i in range(n):
    data = rng.randbytes(rng.randint(1024, 16384))
    h = hashlib.sha1(data).hexdigest()
    d = os.path.join(root, 'filedir', h[:2], h[2:4])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, h), 'wb') as f:
        f.write(data)
    made += len(data)
for i in range(200):
    d = os.path.join(root, 'lang' if i % 2 else 'muc', str(i % 10))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f'f{i}.php'), 'w') as f:
        f.write('<?php // small settings file\n' * 20)
print(made)
"""


def sh(container: str, command: str, check: bool = True) -> str:
    """Run a shell command on the test host; return its stdout."""
    proc = subprocess.run(  # noqa: S603 -- our own test container
        ["docker", "exec", container, "bash", "-c", command],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{command!r} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def timed(container: str, command: str) -> float:
    started = time.monotonic()
    sh(container, command)
    return time.monotonic() - started


def fact(container: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sh(container, "cat /etc/ansible/facts.d/moodle.fact"))
    return data


def playbook(inventory: str, name: str, **extra: Any) -> tuple[int, str, float]:
    """Run a playbook against the scenario's inventory; return exit code, output, seconds."""
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"))
    cfg = Path(inventory).parent.parent / "ansible.cfg"
    if cfg.is_file():
        env["ANSIBLE_CONFIG"] = str(cfg)
    beside = Path(sys.executable).parent / "ansible-playbook"
    command = str(beside) if beside.is_file() else "ansible-playbook"
    argv = [command, "-i", inventory, str(REPO / "playbooks" / name)]
    if extra:
        argv += ["-e", json.dumps(extra)]
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "PLAY RECAP" not in output:
        print(f"{name} did not run through:\n{output[-3000:]}", file=sys.stderr)
        return proc.returncode or 1, output, seconds
    return 0, output, seconds


def find_inventory(container: str) -> str:
    """The newest molecule inventory that names the container."""
    found = sorted(
        Path.home().glob(".ansible/tmp/molecule.*.*/inventory/ansible_inventory.yml"),
        key=lambda p: p.stat().st_mtime,
    )
    for path in reversed(found):
        if f"{container}:" in path.read_text():
            return str(path)
    raise SystemExit(f"no molecule inventory names {container}: pass --inventory")


def pad_database(container: str, db: str, mib: int) -> None:
    """Grow table mdl_standin_bench of the live database to about mib MiB, in batches.

    Written with sql_log_bin=0: one INSERT of GBs would be one transaction (its binary log
    cache spills to the host's tmpdir) and the log would hold the padding a second time."""
    rows = max(1, mib * 1024 // 4)  # 4 KiB rows
    setup = (
        f"CREATE TABLE IF NOT EXISTS `{db}`.mdl_standin_bench (id INT AUTO_INCREMENT PRIMARY KEY,"
        " pad LONGTEXT) ENGINE=InnoDB;"
        f" TRUNCATE `{db}`.mdl_standin_bench;"
    )
    batches = []
    for start in range(0, rows, PAD_BATCH_ROWS):
        count = min(PAD_BATCH_ROWS, rows - start)
        batches.append(
            f"INSERT INTO `{db}`.mdl_standin_bench (pad) SELECT REPEAT(MD5(RAND()), 128)"
            f" FROM seq_1_to_{count};"
        )
    sql = "SET SESSION sql_log_bin=0; " + setup + " ".join(batches)
    sh(container, f"mariadb {db} <<'EOF'\n{sql}\nEOF")


def db_mib(container: str, db: str) -> float:
    """The database's size on disk (statistics refreshed: InnoDB updates them lazily)."""
    sh(container, f"mariadb -N -e 'ANALYZE TABLE `{db}`.mdl_standin_bench' >/dev/null", check=False)
    return float(
        sh(
            container,
            'mariadb -N -e "SELECT ROUND(SUM(data_length+index_length)/1048576,1) FROM'
            f" information_schema.tables WHERE table_schema='{db}'\"",
        ).strip()
    )


def copy_figures(container: str, n: int) -> dict[str, Any]:
    sh(container, "rm -rf /srv/bench && mkdir -p /srv/bench/src")
    sh(container, f"cat > /srv/bench/make.py <<'EOF'\n{MAKE_DATA}\nEOF")
    made = int(sh(container, f"python3 /srv/bench/make.py /srv/bench/src {n}"))
    link = json.loads(sh(container, f"{TOOL} /srv/bench/src /srv/bench/link"))
    plain = json.loads(
        sh(container, f"{TOOL} /srv/bench/src /srv/bench/plain --method plain")
    )
    sh(container, "rm -rf /srv/bench")
    return {"pool_mib": made / 1048576, "link": link, "plain": plain}


def fill_pool(container: str, dataroot: str, files: int) -> int:
    """Add pool files to the live moodledata until it holds at least `files`; return count."""
    count = f"find {shlex.quote(dataroot)}/filedir -type f 2>/dev/null | wc -l"
    have = int(sh(container, count).strip() or 0)
    if have < files:
        sh(container, f"cat > /tmp/make.py <<'EOF'\n{MAKE_DATA}\nEOF")
        sh(
            container,
            f"runuser -u www-data -- python3 /tmp/make.py {shlex.quote(dataroot)} "
            f"{files - have} {1_000_003 + have}",
        )
        have = int(sh(container, count).strip() or 0)
    return have


def last_journal(container: str, op: str) -> list[dict[str, Any]]:
    """The records of the newest closed journal of operation op."""
    text = sh(
        container,
        f"f=$(ls -1 {STATE_DIR}/history/*-{op}-*.jsonl 2>/dev/null | sort | tail -n 1); "
        '[ -n "$f" ] && cat "$f" || true',
    )
    return parse_records(text)


def step_times(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per step: start and done times (the last run of it), seconds and recorded data."""
    steps: dict[str, dict[str, Any]] = {}
    for rec in records:
        name = rec.get("step")
        if not name:
            continue
        step = steps.setdefault(str(name), {})
        if rec.get("event") == "step_start":
            step["start"] = float(rec["at"])
        elif rec.get("event") == "step_done":
            step["done"] = float(rec["at"])
            step["seconds"] = float(rec.get("seconds", 0.0))
            step["data"] = dict(rec.get("data", {}))
    return steps


def window_run(container: str, inventory: str, archive: Path, mib: int) -> dict[str, Any]:
    """Pad the live database to mib MiB, upgrade v1 -> v2, read the window, roll back."""
    live = fact(container)
    colour = live["active_colour"]
    idle = "green" if colour == "blue" else "blue"
    db = live["colours"][colour]["db_name"]
    idle_db = live.get("colours", {}).get(idle, {}).get("db_name")
    if idle_db:
        # The idle colour holds an earlier run's copy (and its padding): the upgrade dumps
        # what was written there since (discard_writes); leave it small.
        sh(container, f"mariadb -e 'DROP TABLE IF EXISTS `{idle_db}`.mdl_standin_bench'",
           check=False)
    started = time.monotonic()
    pad_database(container, db, mib)
    result: dict[str, Any] = {"pad_s": time.monotonic() - started, "db_mib": db_mib(container, db)}
    # The idle colour's old moodledata: renamed aside by the catch-up and removed after the
    # switch (step drop_old_data, outside the window), unless the upgrade sets it aside first
    # (writes kept after a rollback).
    idle_root = live.get("colours", {}).get(idle, {}).get("dataroot")
    result["idle_old_files"] = (
        int(sh(container, f"find {shlex.quote(idle_root)} -type f 2>/dev/null | wc -l").strip())
        if idle_root
        else 0
    )
    before = live.get("last_upgrade", {}).get("at")
    rc, output, seconds = playbook(
        inventory,
        "moodle_upgrade.yml",
        moodle_version="4.5.1",
        moodle_archive_local=str(archive),
        moodle_bluegreen_discard_writes=True,
    )
    up = fact(container).get("last_upgrade", {})
    result["ok"] = rc == 0 and up.get("at") != before
    result["playbook_s"] = seconds
    result["fact"] = up
    records = last_journal(container, "upgrade")
    result["steps"] = step_times(records)
    ends = [rec for rec in records if rec.get("event") == "end"]
    result["set_aside"] = bool(ends and ends[-1].get("result", {}).get("kept_writes"))
    result["why_lines"] = [x for x in output.splitlines() if "copied whole" in x][:3]
    if not result["ok"]:
        return result
    before_rb = fact(container).get("last_rollback", {}).get("at")
    rc, _, seconds = playbook(inventory, "moodle_rollback.yml")
    rb = fact(container).get("last_rollback", {})
    result["rollback_ok"] = rc == 0 and rb.get("at") != before_rb
    result["rollback_s"] = seconds
    result["rollback_window"] = rb.get("maintenance_seconds")
    return result


def fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def window_row(files: int, r: dict[str, Any]) -> str:
    up, steps = r["fact"], r["steps"]
    if not r["ok"]:
        return f"| {r['db_mib']:.0f} | {files} | {r['playbook_s']:.0f} | failed |"

    def sec(name: str) -> float | None:
        value = steps.get(name, {}).get("seconds")
        return None if value is None else float(value)

    frozen_at = steps.get("freeze", {}).get("data", {}).get("frozen_at")
    switch_data = steps.get("switch", {}).get("data", {})
    # The window ends when the proxies reloaded onto the new colour (served_at); the check
    # through them follows (switched_at). Older journals have only switched_at.
    switched_at = switch_data.get("served_at", switch_data.get("switched_at"))
    if frozen_at is not None and switched_at is not None:
        window: float = float(switched_at) - float(frozen_at)
    else:
        window = float(up.get("maintenance_seconds", 0))
    # In the window: the freeze from maintenance on (the drain), the switch up to its time.
    freeze_in = (steps["freeze"]["done"] - float(frozen_at)) if frozen_at is not None else None
    switch_in = (
        float(switched_at) - steps["switch"]["start"] if switched_at is not None else None
    )
    drain = steps.get("freeze", {}).get("data", {}).get("drain") or up.get("drain") or {}
    drained = (
        f"{fmt(drain.get('seconds'), 2)} ({drain.get('how', '?')}, "
        f"{drain.get('waited_for', '-')} waited for)"
        if drain
        else "-"
    )
    dc = up.get("data_copy", {})
    counts = "/".join(str(dc.get(k, "?")) for k in ("kept", "linked", "copied", "removed"))
    upgrade_s = float(up.get("upgrade_seconds", 0))
    rest = None if sec("upgrade_php") is None else (sec("upgrade_php") or 0) - upgrade_s
    rollback = (
        f"{r['rollback_s']:.0f} | {fmt(r['rollback_window'])}"
        if r.get("rollback_ok")
        else "failed | -"
    )
    return (
        f"| {r['db_mib']:.0f} | {files} | {r['playbook_s']:.0f} | {window:.1f} "
        f"| {fmt(sec('precopy_db'))} | {fmt(sec('precopy_data'))} | {fmt(freeze_in)} | {drained} "
        f"| {up.get('db_copy_mode', '?')} {fmt(sec('copy_db'))} "
        f"| {fmt(sec('copy_data'))} ({counts}) | {upgrade_s:.1f} (+{fmt(rest)}) "
        f"| {fmt(sec('health'))} | {fmt(switch_in)} | {window - upgrade_s:.1f} "
        f"| {fmt(sec('drop_old_data'))} | {rollback} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--container", default="ops-moodle1" + os.environ.get("MJP_INSTANCE_SUFFIX", "")
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument(
        "--db-mb", type=int, nargs="+", default=[256], help="pad the live database to these"
    )
    parser.add_argument("--window", action="store_true", help="run upgrade + rollback")
    parser.add_argument("--window-files", type=int, default=100000, help="live pool files")
    parser.add_argument("--inventory", default=None, help="default: molecule's, found")
    parser.add_argument("--standin-dir", default=str(REPO / ".cache/moodle-standin"))
    args = parser.parse_args()
    if args.inventory is None and args.window:
        args.inventory = find_inventory(args.container)

    live = fact(args.container)
    live_colour = live["active_colour"]
    live_db = live["colours"][live_colour]["db_name"]

    db_lines = []
    if not args.window:
        for mib in args.db_mb:
            pad_database(args.container, live_db, mib)
            copy_s = timed(
                args.container,
                "mariadb -e 'DROP DATABASE IF EXISTS bench_copy; CREATE DATABASE bench_copy'"
                f" && mariadb-dump --single-transaction --quick --hex-blob {live_db}"
                " | mariadb bench_copy && mariadb -e 'DROP DATABASE bench_copy'",
            )
            size = db_mib(args.container, live_db)
            db_lines.append(f"Database {size} MiB: dump | restore copy {copy_s:.1f} s")

    rows = [(n, copy_figures(args.container, n)) for n in sorted(args.sizes)]

    for line in db_lines:
        print(f"\n{line}")
    if rows:
        print(
            "\n| pool files | pool MiB | link copy s | linked | reflinked | copied "
            "| plain copy s | plain MiB copied |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, f in rows:
            link, plain = f["link"], f["plain"]
            print(
                f"| {n} | {f['pool_mib']:.0f} | {link['seconds']:.2f} | {link['linked']} "
                f"| {link['reflinked']} | {link['copied']} | {plain['seconds']:.2f} "
                f"| {plain['bytes_copied'] / 1048576:.0f} |"
            )
    if not args.window:
        return 0

    dataroot = live["colours"][live_colour]["dataroot"]
    files = fill_pool(args.container, dataroot, args.window_files)
    archive = Path(args.standin_dir) / "standin-moodle-v2.tgz"
    print(
        "\n| DB MiB | pool files | upgrade playbook s | window s | DB pre-copy s (live) "
        "| data pre-copy s (live) | freeze s | drain s (how, requests) | DB catch-up s "
        "| data catch-up s "
        "(kept/linked/copied/removed) | upgrade.php s (+step) | health s "
        "| switch s | window - upgrade.php s | old data removed after, s "
        "| rollback playbook s | rollback window s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    windows = []
    for mib in args.db_mb:  # a row as soon as it is measured: the big sizes take long
        windows.append(window_run(args.container, args.inventory, archive, mib))
        print(window_row(files, windows[-1]), flush=True)
    for r in windows:
        why = r["fact"].get("db_copy_why") if r["ok"] else ""
        extra = f"; why: {why}" if why else ""
        fate = ("set aside (writes kept)" if r.get("set_aside")
                else "removed after the switch")
        print(
            f"\n{r['db_mib']:.0f} MiB: padding {r['pad_s']:.0f} s; idle colour's old "
            f"moodledata {r['idle_old_files']} files, {fate}{extra}"
            + "".join(f"\n  {line.strip()}" for line in r["why_lines"])
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
