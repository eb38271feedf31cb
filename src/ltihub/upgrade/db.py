"""Database commands of both engines, built from the configuration (no secret in argv).

MariaDB copies the live database *before* the freeze and, at the freeze, replays only the
binary log written since (``mariadb-binlog --start-position ... --rewrite-db live->idle |
mariadb --binary-mode idle``). The position comes from the dump itself (``--master-data=2``
writes it as a comment consistent with the ``--single-transaction`` snapshot, taken without
a global lock since MariaDB reports the snapshot's binary log position); the load runs with
``sql_log_bin=0`` so that the copy does not land in the binary log it is later replayed
from. At the freeze the binary log is flushed (the replayed files are closed ones) and the
replay is counted: every row event's table map of the live database in the binary log must
reach the idle database (``TableMapCounter``), whatever name ``--database`` filters on in
this version of ``mariadb-binlog``. Without a binary log in ROW format the copy happens at
the freeze (``precopy: full``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .config import Config
from .host import Cmd, Runner, argv

MASTER_DATA = re.compile(rb"CHANGE MASTER TO MASTER_LOG_FILE='([^']+)',\s*MASTER_LOG_POS=(\d+)")
IDENT = re.compile(r"^[A-Za-z0-9_]+$")


def ident(name: str) -> str:
    """A database or table name we put into SQL: letters, digits and underscores only."""
    if not IDENT.match(name):
        raise ValueError(f"unsafe SQL identifier {name!r}")
    return name


@dataclass(frozen=True)
class BinlogPos:
    file: str
    pos: int


class PositionTap:
    """Watches the head of a dump for the binary log position written by --master-data=2."""

    def __init__(self) -> None:
        self.head = b""
        self.found: BinlogPos | None = None

    def __call__(self, chunk: bytes) -> bool:
        self.head += chunk
        match = MASTER_DATA.search(self.head)
        if match:
            self.found = BinlogPos(match.group(1).decode(), int(match.group(2)))
            return False
        # The header is far shorter than 1 MiB: stop looking after that.
        return len(self.head) <= 1 << 20


class TableMapCounter:
    """Counts the row events' table maps of one database in ``mariadb-binlog`` output.

    ``mariadb-binlog`` prints one comment line per table map event, e.g.
    ``#261129 13:58:46 server id 1  end_log_pos 1268 CRC32 0x6609ac2e \tTable_map:
    `moodle_green`.`mdl_x` mapped to number 18``; a line split between two chunks is joined.
    """

    def __init__(self, db: str) -> None:
        self.needle = f"Table_map: `{ident(db)}`.".encode()
        self.count = 0
        self._rest = b""

    def __call__(self, chunk: bytes) -> bool:
        data = self._rest + chunk
        cut = data.rfind(b"\n") + 1
        self.count += data[:cut].count(self.needle)
        self._rest = data[cut:][-4096:]  # a comment line is short; SQL lines may be long
        return True

    def finish(self) -> int:
        """The count, including an unterminated last line."""
        self.count += self._rest.count(self.needle)
        self._rest = b""
        return self.count


class MariaDBCommands:
    def __init__(self, config: Config) -> None:
        self.c = config.mariadb

    def _defaults(self) -> tuple[str, ...]:
        # --defaults-extra-file must be the first option of a MariaDB client.
        f = self.c.defaults_extra_file
        return (f"--defaults-extra-file={f}",) if f else ()

    def sql(self, query: str, db: str = "") -> Cmd:
        return Cmd(argv(self.c.client, self._defaults(), "--batch", "--skip-column-names",
                        "-e", query, *((ident(db),) if db else ())))

    def recreate(self, db: str) -> Cmd:
        d = ident(db)
        return self.sql(
            f"DROP DATABASE IF EXISTS `{d}`; "
            f"CREATE DATABASE `{d}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )

    def dump(self, db: str, *, with_position: bool) -> Cmd:
        return Cmd(argv(self.c.dump, self._defaults(), "--single-transaction", "--quick",
                        "--routines", "--triggers", "--hex-blob",
                        *(("--master-data=2",) if with_position else ()), ident(db)))

    def load(self, db: str) -> Cmd:
        """Load into ``db`` without writing the binary log (the replay must not see it)."""
        return Cmd(argv(self.c.client, self._defaults(), "--init-command=SET sql_log_bin=0",
                        ident(db)))

    def binlog_settings(self) -> Cmd:
        return self.sql("SELECT @@log_bin, @@binlog_format, @@log_bin_basename")

    def master_status(self) -> Cmd:
        return self.sql("SHOW MASTER STATUS")

    def binary_logs(self) -> Cmd:
        return self.sql("SHOW BINARY LOGS")

    def flush_binary_logs(self) -> Cmd:
        """Close the current binary log file (the replay then reads finished files)."""
        return self.sql("FLUSH BINARY LOGS")

    def scan(self, start: BinlogPos, stop: BinlogPos, files: list[str]) -> tuple[Cmd, Cmd]:
        """The whole binary log from ``start`` to ``stop``, unfiltered, read and thrown away
        (its table maps counted by a tap: what the replay must apply)."""
        producer = Cmd(argv(self.c.binlog, "--no-defaults", f"--start-position={start.pos}",
                            f"--stop-position={stop.pos}", files))
        return producer, Cmd(("cat",), stdout_file=os.devnull)

    def replay(self, live: str, idle: str, start: BinlogPos, stop: BinlogPos,
               files: list[str], *, filter_db: str = "") -> tuple[Cmd, Cmd]:
        """The binary log of ``live`` from ``start`` to ``stop``, applied to ``idle``.

        ``filter_db`` is the name ``--database`` filters on: the live name for
        ``mariadb-binlog`` 10.x, which filters before rewriting (the default), the idle name
        for a version that filters after rewriting.
        """
        producer = Cmd(argv(
            self.c.binlog,
            # It reads only the local files: no option file, whose [client] group may hold
            # options it does not know (default-character-set stops it).
            "--no-defaults",
            "--disable-log-bin",
            f"--database={ident(filter_db or live)}",
            f"--rewrite-db={ident(live)}->{ident(idle)}",
            f"--start-position={start.pos}",
            f"--stop-position={stop.pos}",
            files,
        ))
        consumer = Cmd(argv(self.c.client, self._defaults(), "--binary-mode", ident(idle)))
        return producer, consumer


class PostgresCommands:
    def __init__(self, config: Config) -> None:
        self.c = config.postgresql

    def _psql(self, *args: str) -> Cmd:
        env = {"PGPASSFILE": self.c.passfile} if self.c.passfile else {}
        run_as = ("runuser", "-u", self.c.run_as, "--") if self.c.run_as else ()
        return Cmd(argv(run_as, self.c.psql, "-X", "-v", "ON_ERROR_STOP=1", *args), env=env)

    def sql(self, query: str, db: str = "") -> Cmd:
        return self._psql("-At", "-F", "\t", *(("-d", ident(db)) if db else ()), "-c", query)

    def copy_template(self, live: str, idle: str) -> Cmd:
        """At the freeze: the frozen live database as template (a file-level copy)."""
        lv, iv = ident(live), ident(idle)
        return self._psql(
            "-c", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608
                  f"WHERE datname = '{lv}' AND pid <> pg_backend_pid()",
            "-c", f'DROP DATABASE IF EXISTS "{iv}"',
            "-c", f'CREATE DATABASE "{iv}" TEMPLATE "{lv}" OWNER "{ident(self.c.owner)}"',
        )

    def recreate(self, db: str) -> Cmd:
        d = ident(db)
        return self._psql("-c", f'DROP DATABASE IF EXISTS "{d}"',
                          "-c", f'CREATE DATABASE "{d}" OWNER "{ident(self.c.owner)}"')

    def dump(self, db: str) -> Cmd:
        env = {"PGPASSFILE": self.c.passfile} if self.c.passfile else {}
        run_as = ("runuser", "-u", self.c.run_as, "--") if self.c.run_as else ()
        return Cmd(argv(run_as, "pg_dump", "-Fp", ident(db)), env=env)


def rows(text: str) -> list[list[str]]:
    """Tab-separated client output as rows."""
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def count_writes_sql(engine: str, db: str, prefix: str, tables: dict[str, list[str]],
                     since: int) -> str:
    """One query: rows per table whose timecreated/timemodified is at or after ``since``."""
    q = "`" if engine == "mariadb" else '"'
    parts = []
    for table, columns in sorted(tables.items()):
        cond = " OR ".join(f"{q}{ident(c)}{q} >= {int(since)}" for c in sorted(columns))
        t = ident(table)  # identifiers checked by ident(): no injection
        parts.append(f"SELECT '{t}', COUNT(*) FROM {q}{t}{q} WHERE {cond}")  # noqa: S608
    return " UNION ALL ".join(parts)


def time_tables_sql(engine: str, db: str, prefix: str) -> str:
    schema = f"'{ident(db)}'" if engine == "mariadb" else "'public'"
    like = ident(prefix) if prefix else ""
    return (
        "SELECT table_name, column_name FROM information_schema.columns "  # noqa: S608
        f"WHERE table_schema = {schema} AND column_name IN ('timecreated', 'timemodified')"
        + (f" AND table_name LIKE '{like}%'" if like else "")
    )


def count_rows(runner: Runner, engine: str, sql_for: object, db: str, prefix: str,
               since: int) -> dict[str, int]:
    """Rows written at or after ``since`` in every table that records write times."""
    make = sql_for
    assert callable(make)
    found: dict[str, list[str]] = {}
    result = runner.run(make(time_tables_sql(engine, db, prefix), db), check=False)
    if result.rc != 0:  # no such database: nothing written there
        return {}
    for row in rows(result.stdout):
        if len(row) >= 2:
            found.setdefault(row[0], []).append(row[1])
    if not found:
        return {}
    out = runner.run(make(count_writes_sql(engine, db, prefix, found, since), db))
    return {r[0]: int(r[1]) for r in rows(out.stdout) if len(r) >= 2 and int(r[1]) > 0}


def max_ids_sql(db: str, tables: list[str]) -> str:
    """MAX(id) of each table (an index lookup each): a cheap check of a replay."""
    return " UNION ALL ".join(
        f"SELECT '{ident(t)}', COALESCE(MAX(`id`), 0) FROM `{ident(db)}`.`{ident(t)}`"  # noqa: S608
        for t in sorted(tables)
    )


def id_tables_sql(db: str, prefix: str) -> str:
    like = f" AND table_name LIKE '{ident(prefix)}%'" if prefix else ""
    return ("SELECT table_name FROM information_schema.columns "  # noqa: S608
            f"WHERE table_schema = '{ident(db)}' AND column_name = 'id'{like}")
