#!/usr/bin/env python3
"""Blue-green upgrade figures for larger sites: copy times and the maintenance window.

A benchmark, not a test: it prints a table and never judges it. It needs a Moodle test host
converged by the moodle_ops scenario (stand-in v1 live):

    .venv/bin/molecule converge -s moodle_ops
    .venv/bin/python benchmarks/bluegreen_copy.py --sizes 1000 10000 100000 --db-mb 1024

For each moodledata size N (pool files of 1-16 KiB in filedir/, plus 200 small files
elsewhere) it measures, on the host:
  - moodledata copy with hard links for the pool (--method link, what the upgrade does)
    against a plain copy of every byte (--method plain);
  - the database copy (mariadb-dump --single-transaction | mariadb) of the live database
    padded to --db-mb MiB;
  - with --window: a real playbooks/moodle_upgrade.yml (v1 -> v2) on that site, whose
    maintenance window (freeze to switch) the host records, then moodle_rollback.yml.
The host's filesystem decides whether the rest of moodledata gets reflinks (XFS, Btrfs)
or copies; the table says which happened.
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

REPO = Path(__file__).resolve().parents[1]
# The moodledata copy of the blue-green program, as the moodle_bluegreen role installs it.
TOOL = "PYTHONPATH=/usr/local/lib/mjp/python python3 -m ltihub.upgrade.datacopy"

# Builds a synthetic moodledata on the host: N pool files named by their SHA-1.
MAKE_DATA = r"""
import hashlib, os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
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


def playbook(inventory: str, name: str, **extra: str) -> tuple[int, str]:
    """Run a playbook against the scenario's inventory; return its exit code and output."""
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"))
    cfg = Path(inventory).parent.parent / "ansible.cfg"
    if cfg.is_file():
        env["ANSIBLE_CONFIG"] = str(cfg)
    argv = ["ansible-playbook", "-i", inventory, str(REPO / "playbooks" / name)]
    if extra:
        argv += ["-e", json.dumps(extra)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "PLAY RECAP" not in output:
        print(f"{name} did not run through:\n{output[-3000:]}", file=sys.stderr)
        return proc.returncode or 1, output
    return 0, output


def find_inventory(container: str) -> str:
    """The newest molecule inventory that names the container."""
    found = sorted(
        Path.home().glob(".ansible/tmp/molecule.*.moodle_ops/inventory/ansible_inventory.yml"),
        key=lambda p: p.stat().st_mtime,
    )
    for path in reversed(found):
        if f"{container}:" in path.read_text():
            return str(path)
    raise SystemExit(f"no molecule inventory names {container}: pass --inventory")


def pad_database(container: str, db: str, mib: int) -> None:
    """Grow table mdl_standin_bench of the live database to about mib MiB."""
    rows = max(1, mib * 1024 // 4)  # 4 KiB rows
    sql = (
        f"CREATE TABLE IF NOT EXISTS `{db}`.mdl_standin_bench (id INT AUTO_INCREMENT PRIMARY KEY,"
        " pad LONGTEXT) ENGINE=InnoDB;"
        f" TRUNCATE `{db}`.mdl_standin_bench;"
        f" INSERT INTO `{db}`.mdl_standin_bench (pad) SELECT REPEAT(MD5(RAND()), 128)"
        f" FROM seq_1_to_{rows};"
    )
    sh(container, f"mariadb {db} -e {shlex.quote(sql)}")


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--container", default="ops-moodle1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--db-mb", type=int, default=256, help="pad the live database to this")
    parser.add_argument("--window", action="store_true", help="also run upgrade + rollback")
    parser.add_argument(
        "--inventory",
        default=str(
            Path.home() / ".cache/molecule/main/moodle_ops/inventory/ansible_inventory.yml"
        ),
    )
    parser.add_argument("--standin-dir", default=str(REPO / ".cache/moodle-standin"))
    args = parser.parse_args()
    if args.inventory is None:
        args.inventory = find_inventory(args.container)

    live = fact(args.container)
    live_colour = live["active_colour"]
    live_db = live["colours"][live_colour]["db_name"]

    pad_database(args.container, live_db, args.db_mb)
    db_mib = float(
        sh(
            args.container,
            'mariadb -N -e "SELECT ROUND(SUM(data_length+index_length)/1048576,1) FROM'
            f" information_schema.tables WHERE table_schema='{live_db}'\"",
        ).strip()
    )
    db_copy = timed(
        args.container,
        "mariadb -e 'DROP DATABASE IF EXISTS bench_copy; CREATE DATABASE bench_copy' && "
        f"mariadb-dump --single-transaction --quick --hex-blob {live_db} | mariadb bench_copy && "
        "mariadb -e 'DROP DATABASE bench_copy'",
    )

    rows = []
    in_pool = 0  # files the window runs have added to the live pool so far
    for n in sorted(args.sizes):
        figures = copy_figures(args.container, n)
        window = ""
        if args.window:
            dataroot = live["colours"][live_colour]["dataroot"]
            sh(args.container, f"cat > /tmp/make.py <<'EOF'\n{MAKE_DATA}\nEOF")
            sh(
                args.container,
                f"runuser -u www-data -- python3 /tmp/make.py {dataroot} {n - in_pool}",
            )
            in_pool = n
            standin = Path(args.standin_dir)
            before = fact(args.container).get("last_upgrade", {}).get("at")
            rc, _ = playbook(
                args.inventory,
                "moodle_upgrade.yml",
                moodle_version="4.5.1",
                moodle_archive_local=str(standin / "standin-moodle-v2.tgz"),
            )
            up = fact(args.container).get("last_upgrade", {})
            ran = rc == 0 and up.get("at") != before
            window = f"{up['maintenance_seconds']}" if ran else "failed"
            playbook(args.inventory, "moodle_rollback.yml")
        rows.append((n, figures, window))

    print(f"\nDatabase {db_mib} MiB: dump | restore copy {db_copy:.1f} s")
    print(
        "\n| pool files | pool MiB | link copy s | linked | reflinked | copied | plain copy s "
        "| plain MiB copied | maintenance window s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, f, window in rows:
        link, plain = f["link"], f["plain"]
        print(
            f"| {n} | {f['pool_mib']:.0f} | {link['seconds']:.2f} | {link['linked']} "
            f"| {link['reflinked']} | {link['copied']} | {plain['seconds']:.2f} "
            f"| {plain['bytes_copied'] / 1048576:.0f} | {window or 'not run'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
