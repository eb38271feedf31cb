"""The steps of an upgrade and of a rollback: each idempotent, each with its undo.

A step gets the context (configuration, host access, the plan fixed when the operation began
and what earlier steps recorded) and returns the data to journal. Re-running a step after a
crash at any point inside it must be safe; ``undo`` must be safe to run whether the step
finished, stopped half-way or never started.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import fpm
from .config import Config, Proxy
from .db import (
    BinlogPos,
    MariaDBCommands,
    PositionTap,
    PostgresCommands,
    TableMapCounter,
    count_rows,
    id_tables_sql,
    ident,
    max_ids_sql,
    rows,
)
from .host import Cmd, CommandFailed, Http, Result, Runner, argv
from .proxyagent import atomic_symlink


class StepFailed(Exception):
    """A step could not do its work (a sentence for the operator)."""


def to_stderr(line: str) -> None:
    """Where the program's lines for the operator go unless a caller says otherwise."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Ctx:
    config: Config
    runner: Runner
    http: Http
    plan: dict[str, Any]
    data: dict[str, dict[str, Any]]  # step name -> what it recorded
    attempts: dict[str, int]  # step name -> how many times it has started
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    log: Callable[[str], None] = to_stderr

    @property
    def live(self) -> str:
        return str(self.plan["live"])

    @property
    def idle(self) -> str:
        return str(self.plan["idle"])

    def entry(self, colour: str) -> dict[str, Any]:
        """The fact's record of a colour as it was when the operation began."""
        return dict(self.plan["fact"].get("colours", {}).get(colour, {}))

    def mariadb(self) -> MariaDBCommands:
        return MariaDBCommands(self.config)

    def pg(self) -> PostgresCommands:
        return PostgresCommands(self.config)

    def sql(self, query: str, db: str = "") -> Cmd:
        if self.config.engine == "mariadb":
            return self.mariadb().sql(query, db)
        return self.pg().sql(query, db)


StepFn = Callable[[Ctx], dict[str, Any]]
UndoFn = Callable[[Ctx], None]


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFn
    undo: UndoFn | None = None
    in_window: bool = False


@dataclass(frozen=True)
class Operation:
    name: str
    steps: tuple[Step, ...]
    # Once this step is done a resumed run goes forward; before it, it undoes.
    point_of_no_return: str
    # Once this step is done nothing is undone any more (the proxies serve the new colour).
    committed_after: str = "switch"
    names: tuple[str, ...] = field(default=())

    def index(self, name: str) -> int:
        return [s.name for s in self.steps].index(name)


# ---------------------------------------------------------------------------------- helpers


def php_cli(ctx: Ctx, entry_dir: str, public: bool, script: str, *args: str) -> Cmd:
    dirroot = entry_dir + ("/public" if public else "")
    return Cmd(argv("runuser", "-u", ctx.config.web_user, "--", ctx.config.php,
                    f"{dirroot}/admin/cli/{script}", args))


def colour_cli(ctx: Ctx, colour: str, script: str, *args: str) -> Cmd:
    """A CLI script of a colour through its code link (its current release)."""
    if colour == ctx.idle and ctx.plan.get("target"):
        public = bool(ctx.plan["target"]["public_layout"])
    else:
        public = bool(ctx.entry(colour).get("public_layout", False))
    return php_cli(ctx, ctx.config.colours[colour].code_link, public, script, *args)


def systemctl(*args: str) -> Cmd:
    return Cmd(argv("systemctl", args))


def timer(colour: str) -> str:
    return f"moodle-cron-{colour}.timer"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: UP017


def files_newer(dataroot: str, since: float) -> int:
    count = 0
    for base, _dirs, files in os.walk(os.path.join(dataroot, "filedir")):
        for name in files:
            try:
                if os.lstat(os.path.join(base, name)).st_mtime >= since:
                    count += 1
            except FileNotFoundError:
                continue
    return count


def count_writes(ctx: Ctx, colour: str, since: int) -> dict[str, Any]:
    """Rows and pool files written on ``colour`` at or after ``since`` (epoch seconds)."""
    c = ctx.config
    by_table = count_rows(ctx.runner, c.engine, ctx.sql, c.colours[colour].db_name,
                          c.db_prefix, since)
    return {"rows": sum(by_table.values()), "by_table": by_table,
            "files": files_newer(c.colours[colour].dataroot, since)}


def recreate_empty_db(ctx: Ctx, colour: str) -> None:
    db = ctx.config.colours[colour].db_name
    cmd = ctx.mariadb().recreate(db) if ctx.config.engine == "mariadb" else ctx.pg().recreate(db)
    ctx.runner.run(cmd)


def _space_message(error: CommandFailed, what: str, ctx: Ctx) -> StepFailed:
    if error.no_space:
        return StepFailed(
            f"the disk filled up while copying the {what} to colour {ctx.idle}: the partial "
            f"copy is removed and colour {ctx.live} serves again. Free some space and re-run. "
            f"({error})"
        )
    return StepFailed(f"copying the {what} to colour {ctx.idle} failed: {error}")


# ------------------------------------------------------------------------- upgrade steps


def keep_writes(ctx: Ctx) -> dict[str, Any]:
    """Before overwriting an idle colour that holds writes: dump its database, set its
    moodledata aside (a rename). Idempotent: finished parts are not redone."""
    kept = ctx.plan.get("keep_writes")
    if not kept:
        return {}
    c = ctx.config
    stamp = str(kept["stamp"])
    colour = c.colours[ctx.idle]
    os.makedirs(c.backup_dir, mode=0o700, exist_ok=True)
    dump = os.path.join(c.backup_dir, f"{colour.db_name}-writes-{stamp}.sql.gz")
    if not os.path.exists(dump):
        partial = dump + ".partial"
        producer = (ctx.mariadb().dump(colour.db_name, with_position=False)
                    if c.engine == "mariadb" else ctx.pg().dump(colour.db_name))
        ctx.runner.pipe(producer, Cmd(("gzip", "-c"), stdout_file=partial))
        os.replace(partial, dump)
    aside = f"{colour.dataroot}.writes-{stamp}"
    if os.path.exists(colour.dataroot) and not os.path.exists(aside):
        os.rename(colour.dataroot, aside)
    return {"dump": dump, "moodledata": aside}


def code_link(ctx: Ctx) -> dict[str, Any]:
    link = ctx.config.colours[ctx.idle].code_link
    target = str(ctx.plan["target"]["release_dir"])
    previous = ctx.data.get("code_link", {}).get("previous") or str(
        ctx.entry(ctx.idle).get("release_dir", "")
    )
    if os.path.islink(link) and os.readlink(link) != target:
        previous = os.readlink(link)
    atomic_symlink(target, link)
    ctx.runner.run(systemctl("reload", ctx.config.php_fpm_service))
    return {"previous": previous}


def undo_code_link(ctx: Ctx) -> None:
    previous = ctx.data.get("code_link", {}).get("previous") or ctx.entry(ctx.idle).get(
        "release_dir", ""
    )
    link = ctx.config.colours[ctx.idle].code_link
    if previous and (not os.path.islink(link) or os.readlink(link) != previous):
        atomic_symlink(str(previous), link)
        ctx.runner.run(systemctl("reload", ctx.config.php_fpm_service))


def note(ctx: Ctx, message: str) -> str:
    """A line for the operator on stderr (the role shows the step data, the journal keeps
    it); returns the message for the step's data."""
    ctx.log(f"ltihub.upgrade: {message}")
    return message


def precopy_db(ctx: Ctx) -> dict[str, Any]:
    """MariaDB with a ROW binary log: copy the live database while it serves, noting the
    binary log coordinates of the copy. Otherwise nothing (the copy happens at the freeze).

    Re-running it is safe: the idle database is emptied and loaded again from a new
    snapshot with new coordinates (the journal keeps the last ones)."""
    c = ctx.config
    if c.engine != "mariadb":
        return {"mode": "full", "why": "PostgreSQL: the frozen database is the template "
                                       "of the copy at the freeze"}
    if c.mariadb.precopy != "binlog":
        return {"mode": "full", "why": note(
            ctx, "MariaDB pre-copy off (moodle_bluegreen_db_precopy: full): the database is "
                 "copied whole at the freeze")}
    m = ctx.mariadb()
    settings = rows(ctx.runner.run(m.binlog_settings()).stdout)
    if not settings or len(settings[0]) < 3 or settings[0][0] != "1" \
            or settings[0][1].upper() != "ROW":
        got = "/".join(settings[0][:2]) if settings else "?"
        return {"mode": "full", "why": note(
            ctx, f"MariaDB has no binary log in ROW format (log_bin/binlog_format: {got}; "
                 "the database role's database_mariadb_binlog enables it): the database is "
                 "copied whole at the freeze")}
    basename = settings[0][2]
    live, idle = c.colours[ctx.live].db_name, c.colours[ctx.idle].db_name
    ctx.runner.run(m.recreate(idle))
    tap = PositionTap()
    snapshot_at = ctx.clock()
    try:
        ctx.runner.pipe(m.dump(live, with_position=True), m.load(idle), tap=tap)
    except CommandFailed as error:
        raise _space_message(error, "database", ctx) from error
    if tap.found is None:
        return {"mode": "full", "why": note(
            ctx, "the database dump carried no binary log position (--master-data): the "
                 "database is copied whole at the freeze")}
    return {"mode": "binlog", "binlog_dir": os.path.dirname(basename),
            "file": tap.found.file, "pos": tap.found.pos, "snapshot_at": snapshot_at,
            "seconds": round(ctx.clock() - snapshot_at, 2)}


def undo_db(ctx: Ctx) -> None:
    recreate_empty_db(ctx, ctx.idle)


def freeze(ctx: Ctx) -> dict[str, Any]:
    return freeze_colour(ctx, ctx.live)


# A oneshot unit (the cron) is "activating" while it runs: is-active then exits 3 like an
# inactive unit, so the state word is read, not the exit code.
RUNNING_STATES = frozenset({"active", "activating", "deactivating", "reloading", "refreshing"})


def unit_running(ctx: Ctx, unit: str) -> bool:
    out = ctx.runner.run(systemctl("is-active", unit), check=False).stdout
    return out.strip() in RUNNING_STATES


def reach_remote_proxies(ctx: Ctx) -> None:
    """Before the freeze: ask each remote proxy's agent what it serves. A proxy that cannot
    be reached stops the operation while the site still serves, and the ssh connection it
    opens (ControlPersist) is the one the window's requests reuse."""
    for proxy in ctx.config.proxies:
        if proxy.prefix:
            _proxy_run(ctx, proxy, "show")


def freeze_colour(ctx: Ctx, colour: str) -> dict[str, Any]:
    c = ctx.config
    reach_remote_proxies(ctx)
    ctx.runner.run(systemctl("stop", timer(colour)))
    deadline = ctx.clock() + c.cron_wait_seconds
    service = f"moodle-cron-{colour}.service"
    if unit_running(ctx, service):
        # Moodle's own graceful stop: running cron processes (which keep polling for tasks
        # for minutes) exit after their current task. Older releases lack it: then wait.
        ctx.runner.run(colour_cli(ctx, colour, "cron.php", "--stop"), check=False)
    while unit_running(ctx, service):
        if ctx.clock() >= deadline:
            raise StepFailed(f"cron of colour {colour} still runs after {c.cron_wait_seconds} s")
        ctx.sleep(1.0)
    ctx.runner.run(colour_cli(ctx, colour, "maintenance.php", "--enable"))
    frozen_at = ctx.clock()
    return {"frozen_at": frozen_at, "colour": colour, "drain": drain(ctx, frozen_at)}


DRAIN_POLL = 0.05


def drain(ctx: Ctx, frozen_at: float) -> dict[str, Any]:
    """Wait until no request that began before the freeze still runs (PHP-FPM's status
    page), at most drain_seconds; without a readable status page, drain_seconds."""
    c = ctx.config
    if c.drain_seconds <= 0:
        return {"how": "off", "seconds": 0}
    deadline = frozen_at + c.drain_seconds
    first: int | None = None
    while True:
        why = ""
        if not c.fpm_status_socket:
            why = "no PHP-FPM status socket configured"
        else:
            try:
                running = fpm.read_status(ctx.runner, c.fpm_status_socket)
            except fpm.StatusUnreadable as error:
                why = f"PHP-FPM status page unreadable ({error})"
        if why:
            ctx.sleep(max(0.0, deadline - ctx.clock()))
            return {"how": "fixed", "seconds": c.drain_seconds,
                    "why": note(ctx, f"{why}: waited the whole drain_seconds")}
        now = ctx.clock()
        before = fpm.begun_before(running, now - frozen_at)
        if first is None:
            first = len(before)
        if not before:
            return {"how": "fpm-status", "waited_for": first,
                    "seconds": round(now - frozen_at, 2)}
        if now >= deadline:
            scripts = sorted({b.script for b in before})
            return {"how": "fpm-status", "waited_for": first, "still_running": len(before),
                    "seconds": round(now - frozen_at, 2), "warning": note(
                        ctx, f"{len(before)} request(s) begun before the freeze still ran after "
                             f"{c.drain_seconds:g} s ({', '.join(scripts)}): what they write "
                             "from now on is not in the copy")}
        ctx.sleep(DRAIN_POLL)


def unfreeze_colour(ctx: Ctx, colour: str) -> None:
    ctx.runner.run(colour_cli(ctx, colour, "maintenance.php", "--disable"))
    if ctx.config.cron_enabled:
        ctx.runner.run(systemctl("start", timer(colour)))


def undo_freeze(ctx: Ctx) -> None:
    unfreeze_colour(ctx, ctx.live)


def _full_copy(ctx: Ctx, live: str, idle: str) -> None:
    m = ctx.mariadb()
    ctx.runner.run(m.recreate(idle))
    ctx.runner.pipe(m.dump(live, with_position=False), m.load(idle))


def _binlog_files(ctx: Ctx, start: BinlogPos, stop: BinlogPos, binlog_dir: str) -> list[str]:
    """The binary log files from ``start`` to ``stop``; raises ReplayImpossible when the
    server no longer has them (expired or purged)."""
    names = [r[0] for r in rows(ctx.runner.run(ctx.mariadb().binary_logs()).stdout)]
    if start.file not in names:
        raise ReplayImpossible(f"binary log {start.file} of the pre-copy is gone (expired or "
                               "purged: binlog_expire_logs_seconds shorter than the time "
                               "since the pre-copy?)")
    if stop.file not in names:
        raise ReplayImpossible(f"binary log {stop.file} is not listed by the server")
    files = names[names.index(start.file): names.index(stop.file) + 1]
    paths = [os.path.join(binlog_dir, f) for f in files]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ReplayImpossible(f"binary log file {missing[0]} is missing on disk")
    return paths


class ReplayImpossible(Exception):
    """The binary log cannot bring the pre-copy up to date (a sentence; full copy instead)."""


def replay_binlog(ctx: Ctx, live: str, idle: str, pre: dict[str, Any]) -> dict[str, Any]:
    """Apply the binary log since the pre-copy to the idle database; raises ReplayImpossible
    (nothing applied, or the idle database to be copied again) when it cannot. A full disk
    is not one of those: it stops the step (the operation is undone)."""
    try:
        return _replay_binlog(ctx, live, idle, pre)
    except CommandFailed as error:
        if error.no_space:
            raise
        raise ReplayImpossible(f"reading or applying the binary log failed: {error}") from error


def _replay_binlog(ctx: Ctx, live: str, idle: str, pre: dict[str, Any]) -> dict[str, Any]:
    m = ctx.mariadb()
    ctx.runner.run(m.flush_binary_logs())
    status = rows(ctx.runner.run(m.master_status()).stdout)
    if not status or len(status[0]) < 2:
        raise ReplayImpossible("the server reports no binary log (SHOW MASTER STATUS)")
    stop = BinlogPos(status[0][0], int(status[0][1]))
    start = BinlogPos(str(pre["file"]), int(pre["pos"]))
    paths = _binlog_files(ctx, start, stop, str(pre["binlog_dir"]))
    # What must arrive: every table map of the live database in that stretch of the log.
    expected = TableMapCounter(live)
    ctx.runner.pipe(*m.scan(start, stop, paths), tap=expected)
    want = expected.finish()
    applied = 0
    for filter_db in (live, idle):
        got = TableMapCounter(idle)
        ctx.runner.pipe(*m.replay(live, idle, start, stop, paths, filter_db=filter_db),
                        tap=got)
        applied = got.finish()
        if applied == want:
            return {"from": f"{start.file}:{start.pos}", "to": f"{stop.file}:{stop.pos}",
                    "events": applied, "filter": "live" if filter_db == live else "idle"}
        if applied:  # some applied, some not: the idle copy cannot be trusted
            break
        # Nothing passed this filter: this mariadb-binlog filters on the other name.
    raise ReplayImpossible(f"the replay applied {applied} of the {want} table maps of "
                           f"{live} in the binary log")


def copy_db(ctx: Ctx) -> dict[str, Any]:
    """At the freeze: bring the idle database up to the frozen live one.

    MariaDB after a pre-copy: replay the binary log since its coordinates. A replay cannot
    be repeated (its events would apply twice), so a second attempt of this step in the
    same operation copies the whole (frozen) database instead; a replay that cannot be done
    (binary log gone or incomplete) does the same, with a line saying why. In practice a
    kill inside this step never comes back here: the re-run undoes the operation (its point
    of no return is upgrade.php), dropping the idle copy, and starts anew from a pre-copy.
    """
    c = ctx.config
    live, idle = c.colours[ctx.live].db_name, c.colours[ctx.idle].db_name
    started = ctx.clock()

    def done(mode: str, **extra: Any) -> dict[str, Any]:
        return {"mode": mode, **extra, "seconds": round(ctx.clock() - started, 2)}

    try:
        if c.engine == "postgresql":
            ctx.runner.run(ctx.pg().copy_template(live, idle))
            return done("template")
        pre = ctx.data.get("precopy_db", {})
        why = str(pre.get("why", "no pre-copy"))
        if pre.get("mode") == "binlog":
            if ctx.attempts.get("copy_db", 1) > 1:
                why = note(ctx, "an earlier replay of the binary log was interrupted (it "
                                "cannot be applied twice): the database is copied whole")
            else:
                try:
                    replayed = replay_binlog(ctx, live, idle, pre)
                except ReplayImpossible as error:
                    why = note(ctx, f"{error}: the database is copied whole at the freeze")
                else:
                    mismatch = replay_mismatch(ctx, live, idle)
                    if not mismatch:
                        return done("binlog", **replayed)
                    why = note(ctx, f"binary log replay incomplete ({mismatch}): the "
                                    "database is copied whole at the freeze")
        _full_copy(ctx, live, idle)
        return done("full", why=why)
    except CommandFailed as error:
        raise _space_message(error, "database", ctx) from error


def replay_mismatch(ctx: Ctx, live: str, idle: str) -> str:
    """Compare MAX(id) of every table of both databases; '' when they agree."""
    tables = [r[0] for r in rows(ctx.runner.run(
        ctx.sql(id_tables_sql(live, ctx.config.db_prefix))).stdout)]
    if not tables:
        return ""
    a = {r[0]: r[1] for r in rows(ctx.runner.run(ctx.sql(max_ids_sql(live, tables))).stdout)}
    b = {r[0]: r[1] for r in rows(ctx.runner.run(ctx.sql(max_ids_sql(idle, tables))).stdout)}
    diff = [f"{t}: {a.get(t)} != {b.get(t)}" for t in sorted(a) if a.get(t) != b.get(t)]
    return "; ".join(diff[:5])


def _copy_stage(ctx: Ctx, stage: str) -> dict[str, Any]:
    """One stage of the moodledata copy (ltihub.upgrade.datacopy, a process of its own)."""
    c = ctx.config
    src, dest = c.colours[ctx.live].dataroot, c.colours[ctx.idle].dataroot
    try:
        out = ctx.runner.run(Cmd(argv(c.copy_tool, src, dest, "--method", c.copy_method,
                                      "--stage", stage)))
    except CommandFailed as error:
        raise _space_message(error, "moodledata", ctx) from error
    try:
        stats = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        stats = {}
    return {"stats": stats if isinstance(stats, dict) else {}}


def precopy_data(ctx: Ctx) -> dict[str, Any]:
    """While the site serves: the idle colour's moodledata built beside its old tree (pool
    hard-linked, the rest copied), so the window only catches up on what changed since."""
    return _copy_stage(ctx, "precopy")


def undo_precopy_data(ctx: Ctx) -> None:
    """Drop the pre-copy; the idle colour's tree itself was not touched yet."""
    partial = ctx.config.colours[ctx.idle].dataroot + ".partial"
    if os.path.lexists(partial):
        shutil.rmtree(partial)


def copy_data(ctx: Ctx) -> dict[str, Any]:
    """At the freeze: the pre-copy brought up to date with the frozen live moodledata and
    renamed into place (a whole copy if there is no pre-copy)."""
    return _copy_stage(ctx, "sync")


def undo_copy_data(ctx: Ctx) -> None:
    """Drop the idle copy (complete or partial); leave an empty dataroot like the live one's."""
    c = ctx.config
    dest = c.colours[ctx.idle].dataroot
    for path in (dest + ".partial", dest + ".old", dest):
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=False)
    live = os.stat(c.colours[ctx.live].dataroot)
    os.mkdir(dest)
    os.chown(dest, live.st_uid, live.st_gid)
    os.chmod(dest, live.st_mode & 0o7777)


def upgrade_php(ctx: Ctx) -> dict[str, Any]:
    started = ctx.clock()
    try:
        ctx.runner.run(colour_cli(ctx, ctx.idle, "upgrade.php", "--non-interactive"))
    except CommandFailed as error:
        raise StepFailed(f"upgrade.php failed on colour {ctx.idle}: {error}") from error
    # No purge_caches.php after it: upgrade.php purges every cache itself and then builds
    # the theme's, which a purge would throw away (a slower first page, a longer window).
    return {"seconds": round(ctx.clock() - started, 2)}


def health(ctx: Ctx) -> dict[str, Any]:
    """The upgraded colour answers its front page through its own backend, its database
    names the target release, and no upgrade is pending. The pending check (a PHP CLI run,
    seconds on a real site) runs beside the first page load (which rebuilds the caches
    upgrade.php purged): both are inside the window."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        pending_job = pool.submit(_timed, ctx.runner.run,
                                  colour_cli(ctx, ctx.idle, "upgrade.php", "--is-pending"),
                                  check=False)
        page = _health_page(ctx)
        pending, pending_seconds = pending_job.result()
    c = ctx.config
    expected = str(ctx.plan["target"].get("code_release", ""))
    if expected:
        out = ctx.runner.run(ctx.sql(
            f"SELECT value FROM {ident(c.db_prefix)}config WHERE name = 'release'",  # noqa: S608
            c.colours[ctx.idle].db_name))
        got = out.stdout.strip()
        if got != expected:
            raise StepFailed(
                f"the database of colour {ctx.idle} says release '{got}', the code '{expected}'")
    if pending.rc != 0:
        raise StepFailed(f"colour {ctx.idle} still has an upgrade pending (exit {pending.rc})")
    return {**page, "pending_seconds": round(pending_seconds, 2),
            "seconds_together": round(time.monotonic() - started, 2)}


def _timed(fn: Callable[..., Result], *args: Any, **kwargs: Any) -> tuple[Result, float]:
    started = time.monotonic()
    return fn(*args, **kwargs), time.monotonic() - started


def _health_page(ctx: Ctx) -> dict[str, Any]:
    """GET / of the idle colour's backend until 200 (health_retries, health_delay apart)."""
    c = ctx.config
    port = c.colours[ctx.idle].backend_port
    scheme, _, host = c.wwwroot.partition("://")
    last = ""
    started = time.monotonic()
    for attempt in range(max(1, c.health_retries)):
        try:
            status, _h, body = ctx.http.get(
                f"http://127.0.0.1:{port}/", headers={"Host": host.split("/")[0],
                                                     "X-Forwarded-Proto": scheme})
            if status == 200:
                return {"page_seconds": round(time.monotonic() - started, 2),
                        "attempts": attempt + 1}
            last = f"HTTP {status}: {' '.join(body.split())[:200]}"
        except OSError as error:
            last = str(error)
        if attempt + 1 < c.health_retries:
            ctx.sleep(c.health_delay)
    raise StepFailed(f"the backend of colour {ctx.idle} (port {port}) answered {last}")


# ---------------------------------------------------------------------------- proxies


def _proxy_run(ctx: Ctx, proxy: Proxy, *args: str) -> None:
    """Run on ``proxy``: here for the local proxy, else one request of the proxy agent
    (ltihub.upgrade.proxyagent, the forced command of the key ``proxy.prefix`` logs in with:
    ``point <colour>``, ``test``, ``reload``), sent as the command after the prefix."""
    if proxy.prefix:
        ctx.runner.run(Cmd(argv(proxy.prefix, " ".join(args))))
    else:
        ctx.runner.run(Cmd(tuple(args)))


def _point_proxy(ctx: Ctx, proxy: Proxy, colour: str) -> None:
    c = ctx.config
    if proxy.prefix:
        _proxy_run(ctx, proxy, "point", colour)
    else:
        atomic_symlink(f"{c.upstream_dir}/{colour}.conf", c.upstream_link)


def _test_proxy(ctx: Ctx, proxy: Proxy) -> None:
    _proxy_run(ctx, proxy, *(("test",) if proxy.prefix else ("nginx", "-t")))


def _reload_proxy(ctx: Ctx, proxy: Proxy) -> None:
    _proxy_run(ctx, proxy, *(("reload",) if proxy.prefix else ("systemctl", "reload", "nginx")))


PROXY_POLL_SECONDS = 0.2


def _verify_proxy(ctx: Ctx, proxy: Proxy, colour: str) -> None:
    """The public URL through ``proxy`` serves ``colour``. Polled briefly (the window is
    open): a graceful reload hands over to the new workers a moment after it returns."""
    c = ctx.config
    last = ""
    deadline = ctx.clock() + max(1, c.health_retries) * c.health_delay
    while True:
        try:
            status, headers, _body = ctx.http.get(c.wwwroot + "/", headers={},
                                                  address=proxy.address)
            served = headers.get(c.colour_header.lower(), "") if c.colour_header else ""
            # Without the colour header: the colour left behind is frozen (the maintenance
            # 503), so any other answer below 400 comes from the colour switched to.
            if (served == colour and status < 500) or (not served and status < 400):
                return
            last = f"HTTP {status} from colour '{served or '?'}'"
        except OSError as error:
            last = str(error)
        if ctx.clock() >= deadline:
            break
        ctx.sleep(PROXY_POLL_SECONDS)
    raise StepFailed(f"{c.wwwroot}/ through proxy {proxy.name} does not serve colour "
                     f"{colour}: {last}")


def point_proxies(ctx: Ctx, colour: str, *, verify: bool) -> float:
    """Point every proxy at ``colour``, test and reload them; returns when the last reload
    returned (the proxies serve ``colour`` from then on), before the check through them."""
    for proxy in ctx.config.proxies:
        _point_proxy(ctx, proxy, colour)
    for proxy in ctx.config.proxies:
        _test_proxy(ctx, proxy)
    for proxy in ctx.config.proxies:
        _reload_proxy(ctx, proxy)
    served_at = ctx.clock()
    if verify:
        for proxy in ctx.config.proxies:
            _verify_proxy(ctx, proxy, colour)
    return served_at


def switch_to(ctx: Ctx, to: str, back: str) -> dict[str, Any]:
    """The maintenance window ends at ``served_at`` (the proxies reloaded onto ``to``, what
    users see); ``switched_at`` is after the check that every proxy serves it."""
    try:
        served_at = point_proxies(ctx, to, verify=True)
    except (CommandFailed, StepFailed, OSError) as error:
        try:
            point_proxies(ctx, back, verify=False)
        except (CommandFailed, OSError) as again:
            raise StepFailed(f"the proxies could not switch to colour {to} ({error}) nor back "
                             f"to colour {back} ({again})") from error
        raise StepFailed(f"the proxies could not switch to colour {to}: {error}; they serve "
                         f"colour {back} again") from error
    return {"served_at": served_at, "switched_at": ctx.clock()}


def window_end(switch_data: dict[str, Any]) -> float:
    """When users stopped seeing the maintenance page (journals from before ``served_at``
    have only ``switched_at``)."""
    return float(switch_data.get("served_at", switch_data["switched_at"]))


def switch(ctx: Ctx) -> dict[str, Any]:
    return switch_to(ctx, ctx.idle, ctx.live)


def undo_switch(ctx: Ctx) -> None:
    point_proxies(ctx, ctx.live, verify=False)


# ------------------------------------------------------------------------ record, cron


def write_fact(path: str, fact: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".mjp-new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, (json.dumps(fact, indent=4, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o644)
    os.replace(tmp, p)


def read_fact(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def maintenance_seconds(ctx: Ctx) -> float:
    return round(window_end(ctx.data["switch"]) - float(ctx.data["freeze"]["frozen_at"]), 1)


def _switch_fields(ctx: Ctx, fact: dict[str, Any], to: str, frm: str,
                   reason: str) -> dict[str, Any]:
    at = float(ctx.data["switch"]["switched_at"])
    switched_in = dict(fact.get("switched_in", {}))
    switched_in[to] = iso(at)
    fact.update({
        "active_colour": to,
        "active_backend_port": ctx.config.colours[to].backend_port,
        "frozen": frm,
        "switched_in": switched_in,
        "last_switch": {"at": iso(at), "epoch": int(at), "from": frm, "to": to,
                        "reason": reason},
    })
    return fact


def record_upgrade(ctx: Ctx) -> dict[str, Any]:
    c = ctx.config
    fact = read_fact(c.fact_file) or dict(ctx.plan["fact"])
    t = ctx.plan["target"]
    colours = dict(fact.get("colours", {}))
    colours[ctx.idle] = {
        "backend_port": c.colours[ctx.idle].backend_port,
        "release": t["release"], "release_id": t["release_id"],
        "release_dir": t["release_dir"], "code_version": t["code_version"],
        "public_layout": t["public_layout"], "db_name": c.colours[ctx.idle].db_name,
        "dataroot": c.colours[ctx.idle].dataroot,
    }
    fact["colours"] = colours
    _switch_fields(ctx, fact, ctx.idle, ctx.live, "upgrade")
    fact["last_upgrade"] = {
        "at": iso(float(ctx.data["switch"]["switched_at"])),
        "from_release": ctx.entry(ctx.live).get("release_id", ""),
        "to_release": t["release_id"],
        "maintenance_seconds": maintenance_seconds(ctx),
        "db_copy_seconds": ctx.data.get("copy_db", {}).get("seconds", 0),
        "db_copy_mode": ctx.data.get("copy_db", {}).get("mode", ""),
        "db_copy_why": ctx.data.get("copy_db", {}).get("why", ""),
        "db_precopy_seconds": ctx.data.get("precopy_db", {}).get("seconds", 0),
        "data_precopy": ctx.data.get("precopy_data", {}).get("stats", {}),
        "data_copy": ctx.data.get("copy_data", {}).get("stats", {}),
        "upgrade_seconds": ctx.data.get("upgrade_php", {}).get("seconds", 0),
        "drain": ctx.data.get("freeze", {}).get("drain", {}),
        # what a rollback had left on this colour, dumped before it was replaced
        "kept_writes": {k: v for k, v in ctx.data.get("keep_writes", {}).items()
                        if k in ("dump", "moodledata", "rows", "files")},
    }
    write_fact(c.fact_file, fact)
    return {}


def cron_on(ctx: Ctx, to: str, frm: str) -> dict[str, Any]:
    ctx.runner.run(systemctl("disable", "--now", timer(frm)))
    if ctx.config.cron_enabled:
        ctx.runner.run(systemctl("enable", "--now", timer(to)))
    return {}


def cron(ctx: Ctx) -> dict[str, Any]:
    """Cron on the new colour only, then one cron run checked. After the switch, not in the
    window: a first run after an upgrade works through every task that fell due (half a
    minute on a real site), and a failing task is for the operator to judge, not a reason to
    drop what users wrote since the switch; the result says so (and the playbook warns)."""
    c = ctx.config
    cron_on(ctx, ctx.idle, ctx.live)
    if not c.check_cron:
        return {"check": "off"}
    args = ("--keep-alive=0",) if c.cron_keep_alive_zero else ()
    started = ctx.clock()
    run = ctx.runner.run(colour_cli(ctx, ctx.idle, "cron.php", *args), check=False)
    seconds = round(ctx.clock() - started, 2)
    if run.rc == 0:
        return {"check": "ok", "seconds": seconds}
    tail = " ".join((run.stderr or run.stdout or "").split())[-300:]
    return {"check": "failed", "seconds": seconds, "error": note(
        ctx, f"the first cron run of colour {ctx.idle} failed (exit {run.rc}): {tail}")}


def drop_old_data(ctx: Ctx) -> dict[str, Any]:
    """After the switch: remove the idle colour's previous moodledata, which the catch-up
    renamed aside (removing 100 000 pool links takes half a minute: not in the window)."""
    old = ctx.config.colours[ctx.idle].dataroot + ".old"
    started = ctx.clock()
    if os.path.lexists(old):
        shutil.rmtree(old)
    return {"seconds": round(ctx.clock() - started, 2)}


UPGRADE = Operation(
    name="upgrade",
    steps=(
        Step("keep_writes", keep_writes),
        Step("code_link", code_link, undo_code_link),
        Step("precopy_db", precopy_db, undo_db),
        Step("precopy_data", precopy_data, undo_precopy_data),
        Step("freeze", freeze, undo_freeze, in_window=True),
        Step("copy_db", copy_db, undo_db, in_window=True),
        Step("copy_data", copy_data, undo_copy_data, in_window=True),
        Step("upgrade_php", upgrade_php, None, in_window=True),
        Step("health", health, None, in_window=True),
        Step("switch", switch, undo_switch, in_window=True),
        Step("record", record_upgrade),
        Step("cron", cron),
        Step("drop_old_data", drop_old_data),
    ),
    point_of_no_return="upgrade_php",
)


# ------------------------------------------------------------------------ rollback steps
# In a rollback the plan's "live" is the colour being left and "idle" the rollback point.


def rb_count(ctx: Ctx) -> dict[str, Any]:
    return count_writes(ctx, ctx.live, int(ctx.plan["since"]))


def rb_open_back(ctx: Ctx) -> dict[str, Any]:
    ctx.runner.run(colour_cli(ctx, ctx.idle, "maintenance.php", "--disable"))
    return {}


def rb_undo_open_back(ctx: Ctx) -> None:
    ctx.runner.run(colour_cli(ctx, ctx.idle, "maintenance.php", "--enable"))


def record_rollback(ctx: Ctx) -> dict[str, Any]:
    c = ctx.config
    fact = read_fact(c.fact_file) or dict(ctx.plan["fact"])
    _switch_fields(ctx, fact, ctx.idle, ctx.live, "rollback")
    counts = ctx.data.get("count_writes", {})
    fact["last_rollback"] = {
        "at": iso(float(ctx.data["switch"]["switched_at"])),
        "left_on": ctx.live,
        "since_epoch": int(ctx.plan["since"]),
        "rows_written_since_switch": int(counts.get("rows", 0)),
        "rows_by_table": counts.get("by_table", {}),
        "files_added_since_switch": int(counts.get("files", 0)),
        "maintenance_seconds": maintenance_seconds(ctx),
    }
    write_fact(c.fact_file, fact)
    return {}


ROLLBACK = Operation(
    name="rollback",
    steps=(
        Step("freeze", freeze, undo_freeze, in_window=True),
        Step("open_back", rb_open_back, rb_undo_open_back, in_window=True),
        Step("switch", switch, undo_switch, in_window=True),
        # After the switch, outside the window: the colour left stays frozen, so its count
        # is the same then (it reads every table with a time column and the file pool:
        # seconds that grow with the site).
        Step("count_writes", rb_count),
        Step("record", record_rollback),
        Step("cron", cron),
    ),
    point_of_no_return="switch",
)

# ------------------------------------------------------------------------ switch steps
# A switch to a colour prepared outside the program (a restore into the idle colour): the
# plan's "idle" is that colour, "reason" what the fact records.


def record_switch(ctx: Ctx) -> dict[str, Any]:
    c = ctx.config
    fact = read_fact(c.fact_file) or dict(ctx.plan["fact"])
    _switch_fields(ctx, fact, ctx.idle, ctx.live, str(ctx.plan.get("reason") or "switch"))
    write_fact(c.fact_file, fact)
    return {}


SWITCH = Operation(
    name="switch",
    steps=(
        Step("freeze", freeze, undo_freeze, in_window=True),
        Step("switch", switch, undo_switch, in_window=True),
        Step("record", record_switch),
        Step("cron", cron),
    ),
    point_of_no_return="switch",
)

OPERATIONS = {op.name: op for op in (UPGRADE, ROLLBACK, SWITCH)}
