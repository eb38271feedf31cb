"""Records the arguments of every process on the Moodle test host (scenarios moodle, moodle_ops).

prepare.yml starts it (as a transient systemd unit) before converge; test_moodle.py reads
the record and checks that no secret was ever in a process's arguments -- what any local
user can read in /proc/<pid>/cmdline -- above all while admin/cli/install_database.php ran.
It scans /proc every 10 ms until SIGTERM (converge.yml's last play sends it: the verifier's
own commands, which log in with the admin password, are not the converge's) or MAX_SECONDS,
and writes its record as it ends. The record (root's, mode 0600) lives on the throw-away
test host only.

Usage: argv_sampler.py RECORD.json [MAX_SECONDS]
"""

import json
import os
import signal
import sys
import time

INSTALL = "admin/cli/install_database.php"


def scan():
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                raw = cmdline.read()
        except OSError:
            continue  # gone meanwhile
        if raw:
            found.add(tuple(raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")))
    return found


def save(path, record):
    partial = path + ".partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(record, out)
    os.replace(partial, path)


def main():
    path = sys.argv[1]
    max_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0
    start = time.monotonic()
    seen = set()
    install_seen = False
    record = {"finished": False, "install_seen": False, "scans": 0, "cmdlines": []}
    last_save = 0.0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while True:
        now = time.monotonic()
        found = scan()
        record["scans"] += 1
        installing = any(INSTALL in arg for cmd in found for arg in cmd)
        install_seen = install_seen or installing
        new = found - seen
        seen |= new
        done = bool(stop) or now - start > max_seconds
        if new or done or now - last_save > 5:
            record.update(
                install_seen=install_seen, finished=done, cmdlines=sorted(list(c) for c in seen)
            )
            save(path, record)
            last_save = now
        if done:
            return
        time.sleep(0.01)


if __name__ == "__main__":
    main()
