#!/usr/bin/env python3
"""Backups of a larger site: the old full-tar format against restic, side by side.

A benchmark, not a test: it prints a table and never judges it. It needs a Moodle test
host converged by the moodle_ops scenario (the stand-in live, the moodle_backup role
applied, restic installed):

    .venv/bin/molecule converge -s moodle_ops
    .venv/bin/python benchmarks/backup_restic.py [--files 20000] [--db-mb 300] [--days 7]

On the host it grows the live colour into a stand-in of a real site: --files pool files in
moodledata's filedir/ (random content, 10-90 KiB, about 1 GB for 20 000) and a padding
table of --db-mb MiB in the colour's database. Then for each of --days days it changes
about 1 % (new pool files, new and updated database rows) and takes one backup with each
tool, with that day's date (--now):

- old: the tar tool this repository used before restic (roles/moodle_backup/files/
  mjp_moodle_backup.py, taken from git history), into /srv/bench-backup/old;
- restic: today's glue (src/ltihub/backup.py) into the repository
  /srv/bench-backup/restic.

It prints the time of each backup, the size of both stores after the last day, and the
time to restore the newest backup's moodledata and database with each tool. Everything it
creates is removed at the end (the padding table, the extra pool files, both stores,
the restored copies) unless --keep.
"""

# SQL here names the test host's own databases, read from its own local fact.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OLD_PATH = "roles/moodle_backup/files/mjp_moodle_backup.py"
NEW_SOURCE = REPO / "src/ltihub/backup.py"
BENCH = "/srv/bench-backup"
OLD_TOOL = f"{BENCH}/old_tool.py"
NEW_TOOL = f"{BENCH}/new_tool.py"
PASSWORD = f"{BENCH}/restic-password"
MIB = 1024 * 1024

# Adds n pool files named by their SHA-1 (as Moodle's file pool does); prints bytes added.
ADD_FILES = r"""
import hashlib, os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
made = 0
for i in range(n):
    data = rng.randbytes(rng.randint(10 * 1024, 90 * 1024))
    h = hashlib.sha1(data).hexdigest()
    d = os.path.join(root, 'filedir', h[:2], h[2:4])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, h), 'wb') as f:
        f.write(data)
    with open(os.path.join(root, 'bench-added.txt'), 'a') as f:
        f.write(os.path.join(d, h) + '\n')
    made += len(data)
print(made)
"""


def sh(container: str, command: str, check: bool = True) -> str:
    proc = subprocess.run(  # noqa: S603 - the test host, argument list
        ["docker", "exec", container, "bash", "-c", command],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"on {container}: {command[:120]}\n{proc.stderr.strip()}")
    return proc.stdout


def timed(container: str, command: str) -> float:
    start = time.monotonic()
    sh(container, command)
    return time.monotonic() - start


def old_tool_source() -> bytes:
    """The pre-restic tool from git history (the last commit that still had it)."""
    rev = subprocess.run(  # noqa: S603
        ["git", "rev-list", "-n", "1", "HEAD", "--", OLD_PATH],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    for candidate in (rev, f"{rev}^"):
        proc = subprocess.run(  # noqa: S603
            ["git", "show", f"{candidate}:{OLD_PATH}"],  # noqa: S607
            cwd=REPO,
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0:
            return proc.stdout
    raise SystemExit(f"{OLD_PATH} is not in this repository's history")


def install(container: str, path: str, source: bytes) -> None:
    subprocess.run(  # noqa: S603
        ["docker", "exec", "-i", container, "bash", "-c", f"cat > {path} && chmod 0700 {path}"],  # noqa: S607
        input=source,
        check=True,
    )


def settings(container: str) -> dict[str, Any]:
    return dict(json.loads(sh(container, "cat /etc/mjp/moodle-backup.json")))


def write_json(container: str, path: str, data: dict[str, Any]) -> None:
    text = json.dumps(data)
    sh(container, f"install -m 0600 /dev/null {path} && printf %s {shlex.quote(text)} > {path}")


def grow_database(container: str, db: str, mib: int) -> None:
    """A padding table of random 1 KiB rows (MariaDB's sequence engine makes the rows)."""
    sh(
        container,
        f"mariadb {db} -e 'CREATE TABLE IF NOT EXISTS mdl_bench_pad "
        "(id INT AUTO_INCREMENT PRIMARY KEY, body VARBINARY(1024)) ENGINE=InnoDB'",
    )
    for _ in range(mib):  # 1 MiB per statement
        sh(
            container,
            f"mariadb {db} -e 'INSERT INTO mdl_bench_pad (body) "
            "SELECT RANDOM_BYTES(1024) FROM seq_1_to_1024'",
        )


def change_database(container: str, db: str, mib: int) -> None:
    """About 1 %: as many new rows as updated old ones."""
    rows = max(1, mib * 1024 // 200)
    sh(
        container,
        f"mariadb {db} -e 'INSERT INTO mdl_bench_pad (body) SELECT RANDOM_BYTES(1024) "
        f"FROM seq_1_to_{rows}; UPDATE mdl_bench_pad SET body = RANDOM_BYTES(1024) "
        f"ORDER BY RAND() LIMIT {rows}'",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--container", default="ops-moodle1")
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--db-mb", type=int, default=300)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="leave the stores and data")
    args = parser.parse_args()
    host = args.container

    fact = json.loads(sh(host, "cat /etc/ansible/facts.d/moodle.fact"))
    live = fact["colours"][fact["active_colour"]]
    dataroot, db = live["dataroot"], live["db_name"]
    current = settings(host)

    sh(host, f"rm -rf {BENCH} && install -d -m 0700 {BENCH} {BENCH}/old")
    install(host, OLD_TOOL, old_tool_source())
    install(host, NEW_TOOL, NEW_SOURCE.read_bytes())
    sh(
        host,
        f"install -m 0600 /dev/null {PASSWORD} && head -c 32 /dev/urandom | base64 > {PASSWORD}",
    )
    old_cfg = {
        "backup_dir": f"{BENCH}/old",
        "fact_file": "/etc/ansible/facts.d/moodle.fact",
        "db_engine": current.get("db_engine", "mariadb"),
        "db_socket": current.get("db_socket", ""),
        "moodledata_exclude": current["moodledata_exclude"],
        "keep_daily": 7,
        "keep_weekly": 4,
        "encryption": "none",
        "reserve_mb": 0,
        "compress_level": 6,
    }
    new_cfg = {
        **current,
        "repositories": [{"name": "bench", "url": f"{BENCH}/restic"}],
        "password_file": PASSWORD,
        "facts_dir": f"{BENCH}/facts",
        "cache_dir": f"{BENCH}/cache",
        "reserve_mb": 0,
    }
    write_json(host, f"{BENCH}/old.json", old_cfg)
    write_json(host, f"{BENCH}/new.json", new_cfg)
    sh(host, f"python3 {NEW_TOOL} --config {BENCH}/new.json init")

    print(f"Growing {dataroot} by {args.files} pool files and {db} by {args.db_mb} MiB ...")
    added = int(sh(host, f"python3 -c {shlex.quote(ADD_FILES)} {dataroot} {args.files} 1"))
    sh(host, f"chown -R www-data:www-data {dataroot}/filedir")
    grow_database(host, db, args.db_mb)

    rows: list[tuple[str, float, float]] = []
    try:
        for day in range(1, args.days + 1):
            if day > 1:
                sh(
                    host,
                    f"python3 -c {shlex.quote(ADD_FILES)} {dataroot} {args.files // 100} {day}",
                )
                change_database(host, db, args.db_mb)
            now = f"2025-03-{day:02d}T02:30:00Z"
            old = timed(host, f"python3 {OLD_TOOL} --config {BENCH}/old.json backup --now {now}")
            new = timed(host, f"python3 {NEW_TOOL} --config {BENCH}/new.json backup --now {now}")
            rows.append((f"backup day {day}", old, new))
            print(f"  day {day}: old {old:7.1f} s   restic {new:7.1f} s", flush=True)

        old_size = int(sh(host, f"du -sb {BENCH}/old").split()[0])
        new_size = int(sh(host, f"du -sb {BENCH}/restic").split()[0])
        restore = f"{BENCH}/restored"
        old_restore = timed(
            host,
            f"python3 {OLD_TOOL} --config {BENCH}/old.json restore-files latest --part moodledata "
            f"--dest {restore}-old && python3 {OLD_TOOL} --config {BENCH}/old.json restore-db "
            "latest --database bench_restore_old --owner moodle",
        )
        new_restore = timed(
            host,
            f"python3 {NEW_TOOL} --config {BENCH}/new.json restore-files latest --part moodledata "
            f"--dest {restore}-new && python3 {NEW_TOOL} --config {BENCH}/new.json restore-db "
            "latest --database bench_restore_new --owner moodle",
        )
    finally:
        if not args.keep:
            sh(
                host,
                f"xargs -a {dataroot}/bench-added.txt rm -f; rm -f {dataroot}/bench-added.txt",
                check=False,
            )
            sh(host, f"mariadb {db} -e 'DROP TABLE IF EXISTS mdl_bench_pad'", check=False)
            sh(
                host,
                "mariadb -e 'DROP DATABASE IF EXISTS bench_restore_old; "
                "DROP DATABASE IF EXISTS bench_restore_new'",
                check=False,
            )
            sh(host, f"rm -rf {BENCH}", check=False)

    print(
        f"\nSite: {args.files} pool files ({added / MIB:.0f} MiB) + {args.db_mb} MiB database; "
        f"{args.days} daily backups, about 1 % new files and rows between them.\n"
    )
    print(f"| {'what':28s} | {'old tar format':>15s} | {'restic':>15s} |")
    print(f"|{'-' * 30}|{'-' * 17}|{'-' * 17}|")
    for what, old, new in rows:
        print(f"| {what:28s} | {old:13.1f} s | {new:13.1f} s |")
    sizes = f"{old_size / MIB:11.0f} MiB | {new_size / MIB:11.0f} MiB"
    print(f"| {'store size after the last':28s} | {sizes} |")
    print(f"| {'restore (moodledata + db)':28s} | {old_restore:13.1f} s | {new_restore:13.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
