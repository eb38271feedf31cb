"""The blue-green state machine against a fake Moodle host (files in tmp_path, a fake
database server with a binary log, fake nginx and HTTP): kills at every step boundary,
full disks, the discard-writes guard, a proxy that does not serve the new colour."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from ltihub.upgrade import proxyagent
from ltihub.upgrade.config import COLOUR_NAMES as COLOURS
from ltihub.upgrade.config import Config, Proxy, parse_config
from ltihub.upgrade.engine import Engine, OperationFailed, Refused
from ltihub.upgrade.host import Cmd, CommandFailed, Result
from ltihub.upgrade.journal import JOURNAL, Journal, lock_is_held, locked, parse_records
from ltihub.upgrade.status import status
from ltihub.upgrade.steps import UPGRADE


class Killed(BaseException):  # noqa: N818 - what SIGKILL looks like to the tests
    """Stands for SIGKILL: nothing after it runs, no except/finally of the program sees it
    as an error (BaseException), the lock's fd is closed like the kernel would."""


@dataclass
class FakeDB:
    rows: list[int] = field(default_factory=list)  # timecreated of each row
    release: str = ""


@dataclass
class FakeHost:
    root: Path
    now: float = 1_800_000_000.0
    dbs: dict[str, FakeDB] = field(default_factory=dict)
    binlog: list[tuple[int, str, int]] = field(default_factory=list)  # (pos, db, row)
    timers: dict[str, bool] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # the program's lines for the operator
    disk_full_data: str = ""  # the copy stage that finds the disk full
    disk_full_db: bool = False
    fail_upgrade: bool = False
    still_pending: bool = False  # upgrade.php --is-pending says a plugin is left
    nginx_broken: bool = False
    proxy_serves_old: bool = False
    remote_nginx_broken: bool = False  # the remote proxy's nginx -t fails on green
    remote_log: list[str] = field(default_factory=list)  # requests its agent received
    reloads: int = 0
    synced: int = 0  # moodledata syncs that found the pre-copy
    # is-active checks during which the live cron still runs once asked to stop
    cron_busy: int = 0
    fail_cron: bool = False
    remote_down: bool = False  # the remote proxy's ssh cannot be reached
    cron_stop_asked: bool = False
    kill_in: str = ""  # a command that is killed half-way (its effect done in part)
    # mariadb-binlog's --database filters on the rewritten name (a version unlike 10.11)
    filter_after_rewrite: bool = False
    binlog_purged: bool = False  # the pre-copy's binary log expired before the freeze
    log_bin: str = "1\tROW"  # @@log_bin, @@binlog_format
    # PHP-FPM's requests: (began, ends, script); its status page lists those running
    requests: list[tuple[float, float, str]] = field(default_factory=list)
    fpm_status: str = "ok"  # ok | down (cgi-fcgi fails) | 404 (no status path)
    status_reads: int = 0

    # ------------------------------------------------------------------ layout helpers
    def path(self, *parts: str) -> str:
        return str(self.root.joinpath(*parts))

    def dataroot(self, colour: str) -> str:
        return self.path("data", colour)

    def code_link(self, colour: str) -> str:
        return self.path("code", colour)

    def db(self, colour: str) -> str:
        return f"moodle_{colour}"

    def release_of(self, colour: str) -> str:
        return os.path.basename(os.readlink(self.code_link(colour)))

    def served(self) -> str:
        return os.path.basename(os.readlink(self.path("nginx", "moodle-upstream.conf")))[:-5]

    def remote_served(self) -> str:
        return os.path.basename(os.readlink(self.path("rnginx", "moodle-upstream.conf")))[:-5]

    def maintenance(self, colour: str) -> bool:
        return os.path.exists(os.path.join(self.dataroot(colour), "climaintenance.html"))

    def write(self, colour: str) -> int:
        """A user writes one row (and one pool file) on a colour."""
        assert not self.maintenance(colour), "a frozen colour takes no writes"
        self.now += 1
        row = int(self.now)
        self.dbs[self.db(colour)].rows.append(row)
        pos = 100 + len(self.binlog)
        self.binlog.append((pos, self.db(colour), row))
        pool = Path(self.dataroot(colour), "filedir", f"{row:x}")
        pool.parent.mkdir(parents=True, exist_ok=True)
        pool.write_text(str(row))
        os.utime(pool, (row, row))
        return row

    def clock(self) -> float:
        self.now += 0.5
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    # ------------------------------------------------------------------ runner
    def _maybe_die(self, line: str) -> None:
        if self.kill_in and self.kill_in in line:
            self.kill_in = ""
            raise Killed(line)

    def run(self, cmd: Cmd, *, check: bool = True) -> Result:
        if self.kill_in == "copy_tool" and cmd.argv[0] == "python3":
            os.makedirs(cmd.argv[4] + ".partial/filedir", exist_ok=True)  # half a copy
        self._maybe_die(" ".join(cmd.argv) + " copy_tool" * (cmd.argv[0] == "python3"))
        result = self._run(list(cmd.argv))
        self.log.append(" ".join(cmd.argv))
        if check and result.rc != 0:
            raise CommandFailed(cmd, result)
        return result

    def _colour_of(self, script: str) -> str:
        for colour in ("blue", "green"):
            if script.startswith(self.code_link(colour) + "/"):
                return colour
        raise AssertionError(script)

    def _fpm_status(self) -> Result:
        self.status_reads += 1
        if self.fpm_status == "missing":
            raise FileNotFoundError(2, "No such file or directory", "cgi-fcgi")
        if self.fpm_status == "down":
            return Result(111, "", "Could not connect to unix:/run/php-fpm-moodle-status.sock")
        if self.fpm_status == "404":
            return Result(0, "Status: 404 Not Found\r\nContent-type: text/html\r\n\r\n"
                             "File not found.\n")
        procs = [{"pid": 100 + i, "state": "Running", "request duration": int((self.now - b) * 1e6),
                  "request uri": "/x.php?sesskey=s", "script": script}
                 for i, (b, e, script) in enumerate(self.requests) if b <= self.now < e]
        procs.append({"pid": 99, "state": "Idle", "request duration": 0, "script": "-"})
        page = {"pool": "moodle", "active processes": len(procs) - 1, "processes": procs}
        return Result(0, "Content-Type: application/json\r\n\r\n" + json.dumps(page))

    def _run(self, a: list[str]) -> Result:
        if a[0] == "cgi-fcgi":
            return self._fpm_status()
        if a[0] == "systemctl":
            verb, unit = a[1], a[-1]
            if verb == "is-active":
                if unit.startswith("moodle-cron-") and self.cron_busy > 0:
                    self.cron_busy -= 1 if self.cron_stop_asked else 0
                    return Result(3, "activating\n")  # a oneshot unit while it runs
                return Result(3, "inactive\n")
            if verb in ("stop", "disable"):
                self.timers[unit] = False
            if verb in ("start", "enable"):
                self.timers[unit] = True
            if verb == "reload":
                self.reloads += 1
            return Result(0)
        if a[0] == "runuser":
            script, args = a[5], a[6:]
            colour = self._colour_of(script)
            name = os.path.basename(script)
            maint = os.path.join(self.dataroot(colour), "climaintenance.html")
            if name == "cron.php" and "--stop" in args:
                self.cron_stop_asked = True
            elif name == "cron.php" and self.fail_cron:
                return Result(1, "", "Default exception handler: task broke")
            elif name == "maintenance.php":
                if "--enable" in args:
                    Path(maint).write_text("maintenance")
                elif os.path.exists(maint):
                    os.unlink(maint)
            elif name == "upgrade.php" and "--non-interactive" in args:
                if self.fail_upgrade:
                    return Result(1, "", "Error: upgrade broke")
                self.dbs[self.db(colour)].release = self.release_of(colour)
            elif name == "upgrade.php":
                return Result(0 if self.dbs[self.db(colour)].release ==
                              self.release_of(colour) and not self.still_pending else 2)
            return Result(0)
        if a[0] == "mariadb":
            return self._sql(a[a.index("-e") + 1], a[-1] if a[-1].startswith("moodle_") else "")
        if a[0] == "ssh":
            return self._remote_agent(a)
        if a[0] == "nginx":
            broken = self.nginx_broken and self.served() == "green"
            return Result(1, "", "nginx: [emerg] green.conf") if broken else Result(0)
        if a[0] == "python3":
            assert a[1:3] == ["-m", "ltihub.upgrade.datacopy"]
            return self._copy(a[3], a[4], a[a.index("--stage") + 1])
        raise AssertionError(f"unexpected command {a}")

    def _remote_agent(self, a: list[str]) -> Result:
        """ssh to the remote proxy: its key's forced command is the proxy agent, which gets
        the request in SSH_ORIGINAL_COMMAND (the one argument after the prefix)."""
        assert a[:-1] == list(REMOTE_PREFIX), a
        if self.remote_down:
            return Result(255, "", "ssh: connect to host 10.0.0.9 port 22: No route to host")
        self.remote_log.append(a[-1])

        def run(argv: Sequence[str]) -> int:
            if list(argv) == ["nginx", "-t"]:
                return int(self.remote_nginx_broken and self.remote_served() == "green")
            assert list(argv) == ["systemctl", "reload", "nginx"], argv
            return 0

        agent_args = ["--upstream-dir", self.path("rnginx/up"),
                      "--link", self.path("rnginx", "moodle-upstream.conf")]
        rc = proxyagent.main(agent_args, {"SSH_ORIGINAL_COMMAND": a[-1]}, run)
        return Result(rc, "", "" if rc == 0 else f"proxyagent: exit {rc}")

    def _sql(self, q: str, db: str) -> Result:
        if q.startswith("DROP DATABASE"):
            name = re.findall(r"CREATE DATABASE `(\w+)`", q)[0]
            self.dbs[name] = FakeDB()
            return Result(0)
        if q.startswith("SELECT @@log_bin"):
            return Result(0, f"{self.log_bin}\t{self.path('mysql', 'binlog')}\n")
        if q == "FLUSH BINARY LOGS":
            return Result(0)
        if q == "SHOW MASTER STATUS":
            return Result(0, f"binlog.000001\t{100 + len(self.binlog)}\t\t\n")
        if q == "SHOW BINARY LOGS":
            return Result(0, "binlog.000002\t9999\n" if self.binlog_purged
                          else "binlog.000001\t9999\n")
        if "name = 'release'" in q:
            return Result(0, self.dbs[db].release + "\n")
        if "column_name = 'id'" in q:
            return Result(0, "mdl_log\n")
        if "MAX(`id`)" in q:
            name = re.findall(r"FROM `(\w+)`", q)[0]
            return Result(0, f"mdl_log\t{max(self.dbs[name].rows, default=0)}\n")
        if "information_schema" in q:
            if db not in self.dbs or not self.dbs[db].rows:
                return Result(0, "")
            return Result(0, "mdl_log\ttimecreated\n")
        if "COUNT(*)" in q:
            since = int(re.findall(r">= (\d+)", q)[0])
            n = sum(1 for r in self.dbs[db].rows if r >= since)
            return Result(0, f"mdl_log\t{n}\n")
        raise AssertionError(q)

    def _copy(self, src: str, dest: str, stage: str) -> Result:
        """The moodledata copy's contract: precopy builds DEST.partial while the site serves,
        sync makes it equal to SRC (frozen) and renames it to DEST."""
        partial = dest + ".partial"
        if self.disk_full_data == stage:
            os.makedirs(os.path.join(partial, "half"), exist_ok=True)
            return Result(1, "", "moodledata copy failed: [Errno 28] No space left on device")
        if stage == "sync" and os.path.isdir(partial):
            self.synced += 1  # catching up on the pre-copy (as a fake: copying again)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(src, partial, ignore=shutil.ignore_patterns("climaintenance.html"))
        if stage == "sync":  # the old idle tree goes aside; the program removes it later
            shutil.rmtree(dest + ".old", ignore_errors=True)
            if os.path.exists(dest):
                os.rename(dest, dest + ".old")
            os.rename(partial, dest)
        return Result(0, json.dumps({"stage": stage, "linked": 1, "copied": 0, "seconds": 0.1}))

    def pipe(self, producer: Cmd, consumer: Cmd, *,
             tap: Callable[[bytes], bool] | None = None) -> Result:
        p, c = list(producer.argv), list(consumer.argv)
        self.log.append(" ".join(p) + " | " + " ".join(c))
        if self.kill_in and self.kill_in in self.log[-1] and c[-1] in self.dbs:
            self.dbs[c[-1]].rows.append(-1)  # a half-applied load or replay
        self._maybe_die(self.log[-1])
        if p[0] == "mariadb-dump":
            src = self.dbs[p[-1]]
            if c[0] == "gzip":
                Path(consumer.stdout_file).write_text(json.dumps(src.rows))
                return Result(0)
            dest = self.dbs[c[-1]]
            if tap is not None:
                tap(b"-- CHANGE MASTER TO MASTER_LOG_FILE='binlog.000001', "
                    + f"MASTER_LOG_POS={100 + len(self.binlog)};\n".encode())
            if self.disk_full_db:
                dest.rows = src.rows[:1]
                raise CommandFailed(Cmd(tuple(c)), Result(1, "", "ERROR 3 (HY000): Errcode: 28"))
            dest.rows, dest.release = list(src.rows), src.release
            return Result(0)
        if p[0] == "mariadb-binlog":
            assert all(os.path.isfile(f) for f in p if f.startswith("/")), p
            start = int(next(x for x in p if x.startswith("--start-position=")).split("=")[1])
            stop = int(next(x for x in p if x.startswith("--stop-position=")).split("=")[1])
            events = [(db, row) for pos, db, row in self.binlog if start <= pos < stop]
            out = []
            if "--disable-log-bin" not in p:  # a scan: the whole log, read and thrown away
                assert c == ["cat"] and consumer.stdout_file == os.devnull
                out = [db for db, _row in events]
            else:
                wanted = next(x for x in p if x.startswith("--database=")).split("=")[1]
                frm, to = next(x for x in p if x.startswith("--rewrite-db=")).split("=")[1] \
                    .split("->")
                for db, row in events:
                    name = to if db == frm else db
                    if (name if self.filter_after_rewrite else db) == wanted:
                        self.dbs[name].rows.append(row)
                        out.append(name)
            text = "".join(f"#261129 server id 1 end_log_pos 9 \tTable_map: `{db}`.`mdl_log` "
                           "mapped to number 18\nBINLOG '...'\n" for db in out).encode()
            if tap is not None:
                for i in range(0, len(text), 7):  # lines split across chunks
                    tap(text[i:i + 7])
            return Result(0)
        raise AssertionError(p)

    # ------------------------------------------------------------------ http
    def get(self, url: str, *, headers: Mapping[str, str], address: str = "",
            timeout: float = 30) -> tuple[int, Mapping[str, str], str]:
        if url.startswith("http://127.0.0.1:"):
            colour = "blue" if ":8081/" in url else "green"
        elif address == REMOTE_ADDRESS:
            colour = self.remote_served()
        else:
            colour = self.served()
            if self.proxy_serves_old:
                colour = "blue" if colour == "green" else "green"
        code = 503 if self.maintenance(colour) else 200
        return code, {"x-mjp-colour": colour}, f"<title>{colour}</title>"


def make_host(tmp_path: Path) -> tuple[FakeHost, Config]:
    host = FakeHost(tmp_path)
    for d in ("data/blue/filedir", "data/green", "code", "rel/v1", "rel/v2", "nginx/up",
              "facts", "mysql"):
        os.makedirs(host.path(d), exist_ok=True)
    Path(host.path("mysql", "binlog.000001")).write_bytes(b"\xfebin")
    os.symlink(host.path("rel/v1"), host.code_link("blue"))
    os.symlink(host.path("rel/v1"), host.code_link("green"))
    for c in ("blue", "green"):
        Path(host.path("nginx/up", f"{c}.conf")).write_text(c)
    os.symlink(host.path("nginx/up/blue.conf"), host.path("nginx", "moodle-upstream.conf"))
    host.dbs = {"moodle_blue": FakeDB(release="v1"), "moodle_green": FakeDB()}
    host.timers = {"moodle-cron-blue.timer": True, "moodle-cron-green.timer": False}
    colour_fact = {
        "blue": {"backend_port": 8081, "release": "1", "release_id": "v1",
                 "release_dir": host.path("rel/v1"), "code_version": "1",
                 "public_layout": False, "db_name": "moodle_blue",
                 "dataroot": host.dataroot("blue")},
    }
    fact = {"active_colour": "blue", "active_backend_port": 8081, "colours": colour_fact,
            "wwwroot": "https://moodle.test"}
    Path(host.path("facts/moodle.fact")).write_text(json.dumps(fact))
    config = parse_config({
        "state_dir": host.path("state"),
        "fact_file": host.path("facts/moodle.fact"),
        "engine": "mariadb", "web_user": "www-data", "php": "/usr/bin/php",
        "php_fpm_service": "php8.2-fpm", "wwwroot": "https://moodle.test",
        "colours": {c: {"db_name": f"moodle_{c}", "dataroot": host.dataroot(c),
                        "code_link": host.code_link(c), "backend_port": p}
                    for c, p in (("blue", 8081), ("green", 8082))},
        "upstream_dir": host.path("nginx/up"),
        "upstream_link": host.path("nginx", "moodle-upstream.conf"),
        "proxies": [{"name": "local"}],
        "copy_tool": ["python3", "-m", "ltihub.upgrade.datacopy"],
        "backup_dir": host.path("backups"),
        "fpm_status_socket": "/run/php-fpm-moodle-status.sock",
        "target": {"release": "2", "release_id": "v2", "release_dir": host.path("rel/v2"),
                   "code_version": "2", "public_layout": False, "code_release": "v2"},
    })
    return host, config


REMOTE_PREFIX = ("ssh", "-i", "/root/.ssh/key", "-o", "BatchMode=yes", "root@192.0.2.7")
REMOTE_ADDRESS = "192.0.2.7:443"


def add_remote_proxy(host: FakeHost, config: Config, *, colours: Sequence[str] = COLOURS
                     ) -> Config:
    """A second proxy on another host (its nginx folders under rnginx/), reached through
    the ssh prefix whose key runs the proxy agent."""
    os.makedirs(host.path("rnginx/up"))
    for c in colours:
        Path(host.path("rnginx/up", f"{c}.conf")).write_text(c)
    os.symlink(host.path("rnginx/up/blue.conf"), host.path("rnginx", "moodle-upstream.conf"))
    remote = Proxy(name="proxy2", prefix=REMOTE_PREFIX, address=REMOTE_ADDRESS)
    return replace(config, proxies=(*config.proxies, remote))


def engine(host: FakeHost, config: Config, kill_at: str = "") -> Engine:
    def boundary(label: str) -> None:
        if label == kill_at:
            raise Killed(label)

    return Engine(config, host, host, sleep=host.sleep, clock=host.clock, boundary=boundary,
                  log=host.notes.append)


def assert_serves(host: FakeHost, colour: str, release: str, before: list[int]) -> None:
    assert host.served() == colour
    assert not host.maintenance(colour)
    assert host.release_of(colour) == release
    assert host.dbs[f"moodle_{colour}"].release == release
    # every row and pool file written before the freeze is on the colour that serves
    assert set(before) <= set(host.dbs[f"moodle_{colour}"].rows)
    pool = set(os.listdir(os.path.join(host.dataroot(colour), "filedir")))
    assert {f"{r:x}" for r in before} <= pool
    assert host.timers[f"moodle-cron-{colour}.timer"] is True


def assert_closed(config: Config) -> None:
    state = Path(config.state_dir)
    assert not (state / JOURNAL).exists()
    assert not lock_is_held(state)
    assert status(config)["open_operation"] is None


# ----------------------------------------------------------------------------- upgrade


def test_upgrade_switches_and_records_the_window(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue") for _ in range(3)]
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done" and result["live"] == "green"
    assert_serves(host, "green", "v2", before)
    assert host.maintenance("blue") and host.timers["moodle-cron-blue.timer"] is False
    assert result["maintenance_seconds"] > 0
    assert set(result["step_seconds"]) == {s.name for s in UPGRADE.steps}
    fact = json.loads(Path(config.fact_file).read_text())
    assert fact["active_colour"] == "green" and fact["frozen"] == "blue"
    assert fact["last_upgrade"]["maintenance_seconds"] == round(result["maintenance_seconds"], 1)
    assert fact["colours"]["green"]["release_id"] == "v2"
    assert_closed(config)
    history = list(Path(config.state_dir, "history").glob("*.jsonl"))
    assert len(history) == 1
    events = [json.loads(x)["event"] for x in history[0].read_text().splitlines()]
    assert events[0] == "begin" and events[-1] == "end"
    assert events.count("step_start") == events.count("step_done") == len(UPGRADE.steps)
    assert oct(os.stat(config.state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(history[0]).st_mode & 0o777) == "0o600"


def test_upgrade_copies_before_the_freeze_and_replays_the_rest(tmp_path: Path) -> None:
    """Rows written between the pre-copy and the freeze arrive through the binary log; the
    copy runs while the site serves, only the flush and the replay inside the window."""
    host, config = make_host(tmp_path)
    early = host.write("blue")
    late: list[int] = []

    def boundary(label: str) -> None:
        if label == "before:freeze":  # the site still serves after the pre-copy
            late.extend(host.write("blue") for _ in range(3))

    eng = Engine(config, host, host, sleep=host.sleep, clock=host.clock, boundary=boundary,
                 log=host.notes.append)
    result = eng.upgrade()
    assert result["outcome"] == "done"
    assert sorted(host.dbs["moodle_green"].rows) == sorted([early, *late])
    assert result["db_copy"]["mode"] == "binlog" and result["db_copy"]["events"] == 3
    assert host.notes == []  # no fallback
    # moodledata: pre-copied while it served, caught up at the freeze (the late pool files)
    assert host.synced == 1
    assert not os.path.exists(host.dataroot("green") + ".old")  # removed after the switch
    for row in (early, *late):
        assert Path(host.dataroot("green"), "filedir", f"{row:x}").read_text() == str(row)

    # The journal: pre-copy done (with its coordinates) before the freeze starts.
    history = next(Path(config.state_dir, "history").glob("*.jsonl")).read_text()
    records = [json.loads(x) for x in history.splitlines()]
    order = [(r["event"], r.get("step")) for r in records if r["event"].startswith("step")]
    assert order.index(("step_done", "precopy_db")) < order.index(("step_start", "freeze"))
    assert order.index(("step_done", "precopy_data")) < order.index(("step_start", "freeze"))
    assert order.index(("step_done", "freeze")) < order.index(("step_start", "copy_db"))
    pre = next(r["data"] for r in records
               if r["event"] == "step_done" and r["step"] == "precopy_db")
    assert (pre["mode"], pre["file"], pre["pos"]) == ("binlog", "binlog.000001", 101)
    assert pre["binlog_dir"] == host.path("mysql")

    # The commands: dump before maintenance, flush/scan/replay after it.
    log = host.log
    dump = next(i for i, x in enumerate(log) if "--master-data=2" in x)
    frozen = next(i for i, x in enumerate(log) if "maintenance.php --enable" in x)
    flush = log.index(next(x for x in log if x.endswith("FLUSH BINARY LOGS")))
    binlogs = [i for i, x in enumerate(log) if x.startswith("mariadb-binlog")]
    assert dump < frozen < flush < binlogs[0]
    assert "--single-transaction" in log[dump] and "sql_log_bin=0" in log[dump]
    scan, replayed = (log[i] for i in binlogs)
    binlog_file = host.path("mysql", "binlog.000001")
    assert scan == ("mariadb-binlog --no-defaults --start-position=101 --stop-position=104 "
                    f"{binlog_file} | cat")
    assert replayed == (
        "mariadb-binlog --no-defaults --disable-log-bin --database=moodle_blue "
        "--rewrite-db=moodle_blue->moodle_green --start-position=101 --stop-position=104 "
        f"{binlog_file} | mariadb --binary-mode moodle_green")
    assert not any("mariadb-dump" in x for x in log[frozen:])  # no full copy in the window


def test_second_upgrade_does_nothing(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    engine(host, config).upgrade()
    out = engine(host, config).upgrade()
    assert out["changed"] is False


UPGRADE_BOUNDARIES = [f"{w}:{s.name}" for s in UPGRADE.steps
                      for w in ("before", "start", "ran", "after")]


@pytest.mark.parametrize("kill_at", UPGRADE_BOUNDARIES)
def test_kill_at_any_boundary_heals_by_rerunning(tmp_path: Path, kill_at: str) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue") for _ in range(2)]
    with pytest.raises(Killed):
        engine(host, config, kill_at).upgrade()
    state = status(config)
    assert not state["running"]  # the dead process holds no lock
    if kill_at != "before:keep_writes":
        assert state["interrupted"] and state["open_operation"]["op"] == "upgrade"
        passed = any(kill_at == f"{w}:{s}"
                     for s in ("health", "switch", "record", "cron", "drop_old_data")
                     for w in ("before", "start", "ran", "after")) or kill_at == "after:upgrade_php"
        assert state["open_operation"]["next"] == ("finish" if passed else "undo")
        assert state["colours"]["green"]["role"] == "target of an interrupted upgrade"
    result = engine(host, config).upgrade()  # the same playbook, again
    assert result["outcome"] == "done"
    assert_serves(host, "green", "v2", before)
    assert host.maintenance("blue")
    assert_closed(config)


@pytest.mark.parametrize("kill_in", ["--master-data", "mariadb-binlog", "--disable-log-bin",
                                     "FLUSH BINARY LOGS", "copy_tool", "--stage sync",
                                     "upgrade.php --non-interactive",
                                     "cron.php", "reload nginx", "enable --now"])
def test_kill_inside_a_step_heals(tmp_path: Path, kill_in: str) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue") for _ in range(2)]
    host.kill_in = kill_in
    with pytest.raises(Killed):
        engine(host, config).upgrade()
    assert not host.kill_in  # it did die there
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done"
    assert_serves(host, "green", "v2", before)
    assert -1 not in host.dbs["moodle_green"].rows  # no half-applied copy survived
    rows = host.dbs["moodle_green"].rows
    assert len(rows) == len(set(rows))  # nothing applied twice
    assert not os.path.exists(host.dataroot("green") + ".partial")
    assert_closed(config)


@pytest.mark.parametrize("kill_at", ["start:copy_db", "ran:upgrade_php", "after:switch"])
def test_resume_alone_finishes_or_undoes(tmp_path: Path, kill_at: str) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    with pytest.raises(Killed):
        engine(host, config, kill_at).upgrade()
    out = engine(host, config).resume()
    if kill_at == "after:switch":
        assert out["outcome"] == "done"
        assert_serves(host, "green", "v2", before)
    else:
        assert out["outcome"] == "undone"
        assert_serves(host, "blue", "v1", before)
        assert host.dbs["moodle_green"].rows == []
        assert os.listdir(host.dataroot("green")) == []
        assert os.readlink(host.code_link("green")) == host.path("rel/v1")
    assert_closed(config)


def test_kill_while_undoing_is_carried_on(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.fail_upgrade = True
    with pytest.raises(Killed):
        engine(host, config, "undo:freeze").upgrade()
    assert status(config)["open_operation"]["undoing"] is True
    host.fail_upgrade = False
    out = engine(host, config).upgrade()
    assert out["outcome"] == "done" and out["recovered_first"]["outcome"] == "undone"
    assert_serves(host, "green", "v2", before)


def test_lock_refuses_a_second_operation(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    with locked(Path(config.state_dir)):
        assert lock_is_held(Path(config.state_dir))
        with pytest.raises(Exception, match="another blue-green operation is running"):
            engine(host, config).upgrade()
    assert not lock_is_held(Path(config.state_dir))


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize("stage", ["precopy", "sync"])
def test_full_disk_during_moodledata_copy(tmp_path: Path, stage: str) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.disk_full_data = stage
    with pytest.raises(OperationFailed, match="disk filled up while copying the moodledata"):
        engine(host, config).upgrade()
    assert_serves(host, "blue", "v1", before)
    assert not os.path.exists(host.dataroot("green") + ".partial")
    assert os.listdir(host.dataroot("green")) == []
    assert host.dbs["moodle_green"].rows == []
    assert_closed(config)
    last = status(config)["last_operation"]
    assert last["outcome"] == "undone"
    # the pre-copy runs while the site serves: no maintenance window at all
    assert (last["maintenance_seconds"] is None) == (stage == "precopy")


def test_full_disk_during_database_copy(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.disk_full_db = True
    with pytest.raises(OperationFailed, match="disk filled up while copying the database"):
        engine(host, config).upgrade()
    assert_serves(host, "blue", "v1", before)
    assert host.dbs["moodle_green"].rows == []
    assert_closed(config)


def test_failed_upgrade_php_gives_the_live_colour_back(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.fail_upgrade = True
    with pytest.raises(OperationFailed, match="upgrade.php failed.*colour blue serves"):
        engine(host, config).upgrade()
    assert_serves(host, "blue", "v1", before)
    host.write("blue")  # writable again


def test_proxy_not_serving_the_new_colour_is_switched_back(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.proxy_serves_old = True
    with pytest.raises(OperationFailed, match="does not serve colour green"):
        engine(host, config).upgrade()
    host.proxy_serves_old = False
    assert_serves(host, "blue", "v1", before)
    assert json.loads(Path(config.fact_file).read_text())["active_colour"] == "blue"


def test_nginx_check_failing_leaves_the_old_colour(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    host.nginx_broken = True
    with pytest.raises(OperationFailed, match="nginx"):
        engine(host, config).upgrade()
    assert host.served() == "blue" and not host.maintenance("blue")


# ------------------------------------------------------------------ a remote proxy


def test_a_remote_proxy_gets_only_the_agent_requests_and_switches(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    config = add_remote_proxy(host, config)
    before = [host.write("blue")]
    assert engine(host, config).upgrade()["outcome"] == "done"
    assert_serves(host, "green", "v2", before)
    assert host.remote_served() == "green"
    # reached before the freeze (the connection the window reuses), then switched
    assert host.remote_log == ["show", "point green", "test", "reload"]
    shown = host.log.index(" ".join((*REMOTE_PREFIX, "show")))
    frozen = next(i for i, x in enumerate(host.log) if "maintenance.php --enable" in x)
    assert shown < frozen
    # the order over all proxies: every link, then every check, then every reload
    order = [x for x in host.log[frozen:]
             if x.startswith(("ssh", "nginx", "systemctl reload nginx"))]
    assert order == [" ".join((*REMOTE_PREFIX, "point green")), "nginx -t",
                     " ".join((*REMOTE_PREFIX, "test")), "systemctl reload nginx",
                     " ".join((*REMOTE_PREFIX, "reload"))]
    assert engine(host, config).rollback()["outcome"] == "done"
    assert host.served() == host.remote_served() == "blue"
    assert host.remote_log[4:] == ["show", "point blue", "test", "reload"]


def test_a_failing_check_on_the_remote_proxy_puts_every_proxy_back(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    config = add_remote_proxy(host, config)
    host.remote_nginx_broken = True
    with pytest.raises(OperationFailed, match="proxies could not switch"):
        engine(host, config).upgrade()
    assert host.served() == host.remote_served() == "blue"
    assert not host.maintenance("blue")
    assert host.remote_log[-3:] == ["point blue", "test", "reload"]


def test_an_unreachable_remote_proxy_stops_the_upgrade_before_the_freeze(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    config = add_remote_proxy(host, config)
    before = [host.write("blue")]
    host.remote_down = True
    with pytest.raises(OperationFailed):
        engine(host, config).upgrade()
    assert not any("maintenance.php --enable" in x for x in host.log)  # never frozen
    assert_serves(host, "blue", "v1", before)
    assert_closed(config)


def test_a_remote_proxy_without_the_colour_file_refuses_and_all_go_back(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    config = add_remote_proxy(host, config, colours=["blue"])
    with pytest.raises(OperationFailed, match="proxies could not switch"):
        engine(host, config).upgrade()
    assert host.served() == host.remote_served() == "blue"
    assert not host.maintenance("blue")


def test_a_remote_proxy_that_does_not_serve_the_new_colour_puts_all_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, config = make_host(tmp_path)
    config = add_remote_proxy(host, config)
    monkeypatch.setattr(FakeHost, "remote_served", lambda self: "blue")  # a stale worker
    with pytest.raises(OperationFailed, match="through proxy proxy2 does not serve colour green"):
        engine(host, config).upgrade()
    assert host.served() == "blue"
    assert os.readlink(host.path("rnginx", "moodle-upstream.conf")).endswith("blue.conf")


# ------------------------------------------------------------------ rollback, writes


def upgraded_then_rolled_back(tmp_path: Path) -> tuple[FakeHost, Config, int]:
    host, config = make_host(tmp_path)
    host.write("blue")
    engine(host, config).upgrade()
    host.now += 60
    written = host.write("green")  # a user writes on v2 after the switch
    out = engine(host, config).rollback()
    assert out["outcome"] == "done"
    assert out["written_since_switch"]["rows"] == 1
    assert out["written_since_switch"]["files"] == 1
    return host, config, written


def test_rollback_serves_the_frozen_colour_and_counts_writes(tmp_path: Path) -> None:
    host, config, _ = upgraded_then_rolled_back(tmp_path)
    assert host.served() == "blue" and not host.maintenance("blue")
    assert host.maintenance("green")
    assert host.timers["moodle-cron-blue.timer"] and not host.timers["moodle-cron-green.timer"]
    fact = json.loads(Path(config.fact_file).read_text())
    assert fact["last_rollback"]["rows_written_since_switch"] == 1
    # counted after the switch, outside the window (the colour left stays frozen)
    assert journal_records(config, "step_start", "count_writes")[-1]["at"] >= (
        journal_records(config, "step_done", "switch")[-1]["at"])
    assert engine(host, config).rollback()["changed"] is False
    assert_closed(config)


@pytest.mark.parametrize("kill_at", ["after:freeze", "ran:open_back", "start:switch",
                                     "after:switch", "start:count_writes", "ran:record"])
def test_rollback_kill_heals(tmp_path: Path, kill_at: str) -> None:
    host, config = make_host(tmp_path)
    host.write("blue")
    engine(host, config).upgrade()
    with pytest.raises(Killed):
        engine(host, config, kill_at).rollback()
    out = engine(host, config).rollback()
    assert out["outcome"] == "done" and host.served() == "blue"
    assert not host.maintenance("blue") and host.maintenance("green")
    assert_closed(config)


def test_upgrade_after_rollback_refuses_to_overwrite_writes(tmp_path: Path) -> None:
    host, config, written = upgraded_then_rolled_back(tmp_path)
    with pytest.raises(Refused, match="1 rows and 1 files written after the switch"):
        engine(host, config).upgrade()
    assert written in host.dbs["moodle_green"].rows  # untouched
    assert not Path(config.state_dir, JOURNAL).exists()


def test_the_check_before_preparing_refuses_the_same_and_changes_nothing(
        tmp_path: Path) -> None:
    """What the role asks before it prepares the target: the same refusal as the upgrade's,
    with nothing written (no journal, no command but the counting)."""
    host, config, written = upgraded_then_rolled_back(tmp_path)
    log_before = len(host.log)
    with pytest.raises(Refused, match="1 rows and 1 files written after the switch"):
        engine(host, config).check_upgrade()
    told = engine(host, replace(config, discard_writes=True)).check_upgrade()
    assert told["changed"] is False and told["left_behind"]["rows"] == 1
    assert not Path(config.state_dir, JOURNAL).exists()
    assert all("maintenance" not in x and "systemctl" not in x for x in host.log[log_before:])
    assert written in host.dbs["moodle_green"].rows


def test_the_check_finds_nothing_before_any_rollback(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    host.write("blue")
    assert engine(host, config).check_upgrade() == {"changed": False, "left_behind": {}}
    engine(host, config).upgrade()
    assert engine(host, config).check_upgrade()["left_behind"] == {}


def test_upgrade_after_rollback_dumps_the_writes_when_told(tmp_path: Path) -> None:
    host, config, written = upgraded_then_rolled_back(tmp_path)
    told = Config(**{**config.__dict__, "discard_writes": True})
    out = engine(host, told).upgrade()
    assert out["outcome"] == "done"
    kept = out["kept_writes"]
    assert written in json.loads(Path(kept["dump"]).read_text())
    assert f"{written:x}" in os.listdir(os.path.join(kept["moodledata"], "filedir"))
    assert oct(os.stat(config.backup_dir).st_mode & 0o777) == "0o700"
    assert host.served() == "green"
    # moodle_status.yml says where the left-behind writes went
    fact = json.loads(Path(config.fact_file).read_text())
    assert fact["last_upgrade"]["kept_writes"]["dump"] == kept["dump"]


def test_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write("begin", op="upgrade", id="x", plan={})
    with open(tmp_path / JOURNAL, "a") as handle:
        handle.write('{"event": "step_st')
    j.write("step_start", step="freeze")
    assert [r["event"] for r in j.read()] == ["begin", "step_start"]
    assert j.is_open()


def test_config_must_be_private(tmp_path: Path) -> None:
    from ltihub.upgrade.config import ConfigError, load_config

    p = tmp_path / "c.json"
    p.write_text("{}")
    os.chmod(p, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_config(p)
    os.chmod(p, 0o600)
    with pytest.raises(ConfigError, match="colours"):
        load_config(p)


def test_status_when_nothing_ran(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    out: dict[str, Any] = status(config)
    assert out["live"] == "blue" and out["open_operation"] is None and not out["running"]


def test_incomplete_replay_falls_back_to_a_full_copy(tmp_path: Path) -> None:
    """If the binary log replay misses rows, the frozen database is copied whole."""
    host, config = make_host(tmp_path)
    early = host.write("blue")
    late: list[int] = []

    def boundary(label: str) -> None:
        if label == "before:freeze":
            late.append(host.write("blue"))
            host.binlog.clear()  # as if the filter dropped every event

    eng = Engine(config, host, host, sleep=host.sleep, clock=host.clock, boundary=boundary,
                 log=host.notes.append)
    assert eng.upgrade()["outcome"] == "done"
    assert sorted(host.dbs["moodle_green"].rows) == sorted([early, *late])
    history = next(Path(config.state_dir, "history").glob("*.jsonl")).read_text()
    assert "binary log replay incomplete" in history


# ------------------------------------------------------------- switch, proxies, test hook


def with_green_deployed(tmp_path: Path) -> tuple[FakeHost, Config, int]:
    """Blue live with a row; green prepared outside the program (as a restore does)."""
    host, config = make_host(tmp_path)
    written = host.write("blue")
    fact = json.loads(Path(config.fact_file).read_text())
    fact["colours"]["green"] = {**fact["colours"]["blue"], "backend_port": 8082,
                                "db_name": "moodle_green", "dataroot": host.dataroot("green")}
    Path(config.fact_file).write_text(json.dumps(fact))
    return host, config, written


def test_switch_makes_a_prepared_colour_live_and_freezes_the_other(tmp_path: Path) -> None:
    host, config, _ = with_green_deployed(tmp_path)
    out = engine(host, config).switch("green", "restore")
    assert out["outcome"] == "done" and host.served() == "green"
    fact = json.loads(Path(config.fact_file).read_text())
    assert fact["active_colour"] == "green" and fact["frozen"] == "blue"
    assert fact["last_switch"]["reason"] == "restore"
    assert host.maintenance("blue") and not host.maintenance("green")
    assert host.timers["moodle-cron-green.timer"] and not host.timers["moodle-cron-blue.timer"]
    assert engine(host, config).switch("green", "restore")["changed"] is False
    assert_closed(config)


@pytest.mark.parametrize("kill_at", ["after:freeze", "start:switch", "after:switch"])
def test_switch_kill_heals_by_rerunning(tmp_path: Path, kill_at: str) -> None:
    host, config, _ = with_green_deployed(tmp_path)
    with pytest.raises(Killed):
        engine(host, config, kill_at).switch("green", "restore")
    out = engine(host, config).switch("green", "restore")
    assert host.served() == "green" and not host.maintenance("green")
    assert json.loads(Path(config.fact_file).read_text())["active_colour"] == "green"
    assert out.get("outcome") == "done" or out["changed"] is False
    assert_closed(config)


def test_switch_refuses_a_colour_that_is_not_deployed(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    with pytest.raises(Refused, match="not deployed"):
        engine(host, config).switch("green", "restore")
    assert host.served() == "blue" and not host.maintenance("blue")


def test_proxy_check_without_colour_header_relies_on_the_frozen_colour(
    tmp_path: Path,
) -> None:
    """Backends that do not name their colour: the old colour is frozen (503), so only the
    new colour can answer below 400 through the proxy."""
    import dataclasses

    host, config = make_host(tmp_path)
    config = dataclasses.replace(config, colour_header="")
    host.write("blue")
    host.proxy_serves_old = True
    with pytest.raises(OperationFailed, match="does not serve colour green"):
        engine(host, config).upgrade()
    assert host.served() == "blue" and not host.maintenance("blue")
    host.proxy_serves_old = False
    assert engine(host, config).upgrade()["outcome"] == "done"
    assert host.served() == "green"


def test_the_kill_test_hook_does_nothing_unless_set() -> None:
    from ltihub.upgrade.__main__ import TEST_KILL_AT, kill_hook

    kill_hook({})("after:copy_db")  # returns: no hook
    kill_hook({TEST_KILL_AT: "after:copy_db"})("after:freeze")  # another boundary


def test_the_kill_test_hook_sigkills_the_program_at_its_boundary() -> None:
    import signal
    import subprocess
    import sys

    code = ("from ltihub.upgrade.__main__ import kill_hook; h = kill_hook(); "
            "h('after:freeze'); print('alive', flush=True); h('after:copy_db'); print('not')")
    env = {**os.environ, "LTIHUB_UPGRADE_TEST_KILL_AT": "after:copy_db"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,  # noqa: S603
                          text=True, check=False)
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout == "alive\n"


# ------------------------------------------------- the database pre-copy and its fallbacks


def upgrade_with_late_writes(host: FakeHost, config: Config,
                             before_freeze: Callable[[], None] | None = None,
                             ) -> tuple[dict[str, Any], list[int]]:
    """An upgrade during which users write before the pre-copy and between it and the
    freeze; returns the result and every row written before the freeze."""
    written = [host.write("blue")]

    def boundary(label: str) -> None:
        if label == "before:freeze":
            written.extend(host.write("blue") for _ in range(2))
            if before_freeze:
                before_freeze()

    eng = Engine(config, host, host, sleep=host.sleep, clock=host.clock, boundary=boundary,
                 log=host.notes.append)
    return eng.upgrade(), written


def test_expired_binary_log_falls_back_to_a_full_copy_and_says_so(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)

    def purge() -> None:
        host.binlog_purged = True

    result, written = upgrade_with_late_writes(host, config, purge)
    assert result["outcome"] == "done"
    assert sorted(host.dbs["moodle_green"].rows) == sorted(written)
    assert result["db_copy"]["mode"] == "full"
    assert "binlog.000001 of the pre-copy is gone" in result["db_copy"]["why"]
    assert len(host.notes) == 1 and host.notes[0].startswith("ltihub.upgrade: binary log")
    assert "copied whole at the freeze" in host.notes[0]
    assert not any(x.startswith("mariadb-binlog") for x in host.log)
    fact = json.loads(Path(config.fact_file).read_text())
    assert fact["last_upgrade"]["db_copy_mode"] == "full"
    assert "gone" in fact["last_upgrade"]["db_copy_why"]


@pytest.mark.parametrize("log_bin", ["0\tROW", "1\tMIXED", "1\tSTATEMENT"])
def test_without_a_row_binary_log_the_copy_is_made_at_the_freeze(
        tmp_path: Path, log_bin: str) -> None:
    host, config = make_host(tmp_path)
    host.log_bin = log_bin
    result, written = upgrade_with_late_writes(host, config)
    assert result["outcome"] == "done"
    assert sorted(host.dbs["moodle_green"].rows) == sorted(written)
    assert result["db_copy"]["mode"] == "full"
    assert "no binary log in ROW format" in result["db_copy"]["why"]
    assert any("database_mariadb_binlog" in n for n in host.notes)
    frozen = next(i for i, x in enumerate(host.log) if "maintenance.php --enable" in x)
    dumps = [i for i, x in enumerate(host.log) if x.startswith("mariadb-dump")]
    assert dumps and min(dumps) > frozen  # the only copy is inside the window
    assert not any("--master-data" in x or x.startswith("mariadb-binlog") for x in host.log)


def test_precopy_can_be_switched_off(tmp_path: Path) -> None:
    import dataclasses

    host, config = make_host(tmp_path)
    config = dataclasses.replace(
        config, mariadb=dataclasses.replace(config.mariadb, precopy="full"))
    result, written = upgrade_with_late_writes(host, config)
    assert sorted(host.dbs["moodle_green"].rows) == sorted(written)
    assert result["db_copy"]["mode"] == "full" and "pre-copy off" in result["db_copy"]["why"]
    assert not any(x.startswith("SELECT @@log_bin") or "@@log_bin" in x for x in host.log)


def test_a_binlog_tool_filtering_on_the_rewritten_name_is_detected(tmp_path: Path) -> None:
    """A mariadb-binlog whose --database filters after --rewrite-db applies nothing with the
    live name: counted, and applied again with the idle name (nothing applied twice)."""
    host, config = make_host(tmp_path)
    host.filter_after_rewrite = True
    result, written = upgrade_with_late_writes(host, config)
    assert result["db_copy"]["mode"] == "binlog" and result["db_copy"]["events"] == 2
    rows = host.dbs["moodle_green"].rows
    assert sorted(rows) == sorted(written) and len(rows) == len(set(rows))
    replays = [x for x in host.log if "--disable-log-bin" in x]
    assert ["--database=moodle_blue" in replays[0], "--database=moodle_green" in replays[1]] \
        == [True, True]


def test_a_partly_applied_replay_is_replaced_by_a_full_copy(tmp_path: Path) -> None:
    """Fewer table maps arrive than the binary log holds (some filtered out): the idle
    database is emptied and copied whole from the frozen live one."""
    host, config = make_host(tmp_path)
    real_pipe = host.pipe

    def pipe(producer: Cmd, consumer: Cmd, *,
             tap: Callable[[bytes], bool] | None = None) -> Result:
        if tap is not None and "--disable-log-bin" not in producer.argv \
                and producer.argv[0] == "mariadb-binlog":
            # the scan sees one more table map of the live database than the replay applies
            tap(b"\tTable_map: `moodle_blue`.`mdl_extra` mapped to number 19\n")
        return real_pipe(producer, consumer, tap=tap)

    host.pipe = pipe  # type: ignore[method-assign]
    result, written = upgrade_with_late_writes(host, config)
    assert result["outcome"] == "done"
    assert result["db_copy"]["mode"] == "full"
    assert "applied 2 of the 3 table maps" in result["db_copy"]["why"]
    assert sorted(host.dbs["moodle_green"].rows) == sorted(written)
    assert len([x for x in host.log if "--disable-log-bin" in x]) == 1  # not tried again


def test_a_second_attempt_of_the_replay_copies_whole(tmp_path: Path) -> None:
    """Should copy_db ever start twice in one operation, it never replays twice."""
    from ltihub.upgrade.steps import Ctx, copy_db

    host, config = make_host(tmp_path)
    host.write("blue")
    plan = {"live": "blue", "idle": "green", "fact": {}}
    pre = {"mode": "binlog", "file": "binlog.000001", "pos": 100,
           "binlog_dir": host.path("mysql")}
    ctx = Ctx(config=config, runner=host, http=host, plan=plan, data={"precopy_db": pre},
              attempts={"copy_db": 2}, sleep=host.sleep, clock=host.clock,
              log=host.notes.append)
    out = copy_db(ctx)
    assert out["mode"] == "full" and "interrupted" in out["why"]
    assert not any(x.startswith("mariadb-binlog") for x in host.log)
    assert host.dbs["moodle_green"].rows == host.dbs["moodle_blue"].rows


def test_postgresql_keeps_the_template_copy_at_the_freeze(tmp_path: Path) -> None:
    import dataclasses

    from ltihub.upgrade.steps import Ctx, precopy_db

    host, config = make_host(tmp_path)
    config = dataclasses.replace(config, engine="postgresql")
    ctx = Ctx(config=config, runner=host, http=host, plan={"live": "blue", "idle": "green"},
              data={}, attempts={}, log=host.notes.append)
    assert precopy_db(ctx)["mode"] == "full"
    assert host.log == [] and host.notes == []


def test_a_failing_binlog_reader_falls_back_to_a_full_copy(tmp_path: Path) -> None:
    """mariadb-binlog ending in error (e.g. an option it does not know in my.cnf) has applied
    nothing trustworthy: the frozen database is copied whole, with a line saying why."""
    host, config = make_host(tmp_path)
    real_pipe = host.pipe

    def pipe(producer: Cmd, consumer: Cmd, *,
             tap: Callable[[bytes], bool] | None = None) -> Result:
        if producer.argv[0] == "mariadb-binlog":
            host.log.append(" ".join(producer.argv))
            raise CommandFailed(producer, Result(7, "", "mariadb-binlog: unknown variable "
                                                        "'default-character-set=utf8mb4'"))
        return real_pipe(producer, consumer, tap=tap)

    host.pipe = pipe  # type: ignore[method-assign]
    result, written = upgrade_with_late_writes(host, config)
    assert result["outcome"] == "done"
    assert sorted(host.dbs["moodle_green"].rows) == sorted(written)
    assert result["db_copy"]["mode"] == "full"
    assert "unknown variable" in result["db_copy"]["why"]
    assert host.notes and "copied whole at the freeze" in host.notes[0]


def test_the_freeze_stops_a_running_cron_and_waits_for_it(tmp_path: Path) -> None:
    """A oneshot cron unit is 'activating' while it runs (is-active exits 3 as for an
    inactive one): the freeze asks Moodle's cron to stop after its task and waits."""
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.cron_busy = 3
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done"
    assert host.cron_stop_asked and host.cron_busy == 0
    stop = next(i for i, x in enumerate(host.log) if x.endswith("cron.php --stop"))
    frozen = next(i for i, x in enumerate(host.log) if "maintenance.php --enable" in x)
    assert stop < frozen
    assert_serves(host, "green", "v2", before)


def test_the_freeze_gives_up_on_a_cron_that_never_ends(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.cron_busy = 10**6
    with pytest.raises(OperationFailed, match="cron of colour blue still runs"):
        engine(host, config).upgrade()
    assert_serves(host, "blue", "v1", before)
    assert_closed(config)


def test_the_first_cron_runs_after_the_switch_and_a_failure_only_warns(tmp_path: Path) -> None:
    """Not in the window: the first cron after an upgrade works through every task that fell
    due. A failing run leaves the new release live and says so."""
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.fail_cron = True
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done"
    assert result["cron_check"]["check"] == "failed"
    assert "task broke" in result["cron_check"]["error"]
    assert any("first cron run of colour green failed" in n for n in host.notes)
    assert_serves(host, "green", "v2", before)
    log = host.log
    reload = max(i for i, x in enumerate(log) if x.endswith("reload nginx"))
    run = next(i for i, x in enumerate(log) if "cron.php" in x and "--stop" not in x)
    assert run > reload  # after the switch
    assert host.timers["moodle-cron-green.timer"]


# ---------------------------------------------------------------------- the drain
SCRIPT = "/srv/moodle/blue/course/restore.php"


def journal_records(config: Config, event: str, step: str) -> list[dict[str, Any]]:
    """Records of the last operation's journal (closed: under history/)."""
    last = sorted(Path(config.state_dir, "history").glob("*.jsonl"))[-1]
    return [r for r in parse_records(last.read_text())
            if r.get("event") == event and r.get("step") == step]


def freeze_data(config: Config) -> dict[str, Any]:
    """What the journal recorded for the last freeze step."""
    return dict(journal_records(config, "step_done", "freeze")[-1]["data"])


def test_the_drain_ends_as_soon_as_no_request_from_before_the_freeze_runs(
        tmp_path: Path) -> None:
    """A request that began before maintenance went on is waited for; one that began after
    it (it sees the maintenance page) and idle workers are not. No fixed wait."""
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    ends: list[float] = []

    def boundary(label: str) -> None:
        if label == "before:freeze":  # maintenance goes on a few clock ticks from now
            ends.append(host.now + 6.0)
            host.requests[:] = [(host.now - 0.5, ends[0], SCRIPT),
                                (host.now + 4.0, host.now + 10**6, "/srv/x/late.php")]

    eng = Engine(config, host, host, sleep=host.sleep, clock=host.clock, boundary=boundary,
                 log=host.notes.append)
    result = eng.upgrade()
    assert result["outcome"] == "done"
    drain = result["drain"]
    assert drain["how"] == "fpm-status" and drain["waited_for"] == 1
    assert "still_running" not in drain and host.notes == []
    frozen_at = freeze_data(config)["frozen_at"]
    assert frozen_at < ends[0] - 2.0 - 1.0  # the late request began well after the freeze
    assert frozen_at + drain["seconds"] >= ends[0]  # not before the request ended
    assert drain["seconds"] < config.drain_seconds  # and not the whole ceiling
    assert host.status_reads > 2  # it polled
    assert_serves(host, "green", "v2", before)


def test_no_request_running_means_no_drain_at_all(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    result = engine(host, config).upgrade()
    assert result["drain"]["waited_for"] == 0
    assert result["drain"]["seconds"] <= 0.5  # one status read (the fake clock's tick)
    assert host.status_reads == 1


def test_a_request_that_outlasts_the_ceiling_is_named_and_the_upgrade_goes_on(
        tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.requests = [(host.now - 1, host.now + 10**6, SCRIPT)]
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done"
    drain = result["drain"]
    assert drain["still_running"] == 1 and SCRIPT in drain["warning"]
    assert config.drain_seconds <= drain["seconds"] < config.drain_seconds + 1
    assert "sesskey" not in json.dumps(drain)  # scripts only, never a request's URI
    assert any("not in the copy" in n for n in host.notes)
    assert_serves(host, "green", "v2", before)


@pytest.mark.parametrize("answer", ["down", "404", "missing"])
def test_an_unreadable_status_page_means_the_whole_drain_time(
        tmp_path: Path, answer: str) -> None:
    host, config = make_host(tmp_path)
    host.fpm_status = answer
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done"
    drain = result["drain"]
    assert drain["how"] == "fixed" and drain["seconds"] == config.drain_seconds
    assert {"down": "exited 111", "404": "404", "missing": "No such file"}[answer] in drain["why"]
    frozen_at = freeze_data(config)["frozen_at"]
    copy_started = journal_records(config, "step_start", "copy_db")[-1]
    assert copy_started["at"] >= frozen_at + config.drain_seconds


def test_without_a_status_socket_the_drain_is_the_configured_time(tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    config = replace(config, fpm_status_socket="", drain_seconds=3.0)
    result = engine(host, config).upgrade()
    assert result["drain"]["how"] == "fixed" and result["drain"]["seconds"] == 3.0
    assert host.status_reads == 0


# ---------------------------------------------------------------------- the health check
def test_the_health_check_loads_the_page_and_checks_pending_upgrades_side_by_side(
        tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    result = engine(host, config).upgrade()
    assert result["outcome"] == "done"
    health = journal_records(config, "step_done", "health")[-1]["data"]
    assert health["attempts"] == 1
    assert {"page_seconds", "pending_seconds", "seconds_together"} <= set(health)
    assert any("upgrade.php --is-pending" in x for x in host.log)
    assert_serves(host, "green", "v2", before)


def test_an_upgrade_still_pending_after_upgrade_php_gives_the_live_colour_back(
        tmp_path: Path) -> None:
    host, config = make_host(tmp_path)
    before = [host.write("blue")]
    host.still_pending = True
    with pytest.raises(OperationFailed, match="still has an upgrade pending"):
        engine(host, config).upgrade()
    assert_serves(host, "blue", "v1", before)
    assert_closed(config)


def test_the_window_ends_when_the_proxies_reloaded_onto_the_new_colour(tmp_path: Path) -> None:
    """What users see: the maintenance page until the proxies reloaded; the check through
    every proxy comes after (switched_at) and is not counted."""
    host, config = make_host(tmp_path)
    config = add_remote_proxy(host, config)
    result = engine(host, config).upgrade()
    switch = journal_records(config, "step_done", "switch")[-1]["data"]
    frozen_at = freeze_data(config)["frozen_at"]
    assert frozen_at < switch["served_at"] < switch["switched_at"]
    assert result["maintenance_seconds"] == round(switch["served_at"] - frozen_at, 2)
    fact = json.loads(Path(config.fact_file).read_text())
    assert fact["last_upgrade"]["maintenance_seconds"] == round(
        switch["served_at"] - frozen_at, 1)
