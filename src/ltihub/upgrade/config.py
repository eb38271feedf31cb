"""The settings of the blue-green program: one root-only JSON file written by the role.

Everything the program runs is named here (paths of the tools, service names, the proxies),
so the role decides and the program only executes. Secrets never appear in it: the database
is reached over the local socket as root, or with a defaults-extra-file / PGPASSFILE whose
*path* is given here.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COLOUR_NAMES = ("blue", "green")


class ConfigError(Exception):
    """The configuration file is missing, unsafe or incomplete (a sentence for the operator)."""


@dataclass(frozen=True)
class Colour:
    """What the role knows about one colour (the moodle role's colour settings)."""

    name: str
    db_name: str
    dataroot: str
    code_link: str
    backend_port: int


@dataclass(frozen=True)
class Target:
    """The release an upgrade puts on the idle colour (prepared there by the role)."""

    release: str
    release_id: str
    release_dir: str
    code_version: str
    public_layout: bool
    expect_live: str = ""
    # The code's $release (version.php); the upgraded database must say the same.
    code_release: str = ""


@dataclass(frozen=True)
class Proxy:
    """One nginx front proxy. Without ``prefix`` it is on this host and switched here; with
    one (an ssh argv whose key runs ltihub.upgrade.proxyagent on the proxy host) the program
    sends the agent's requests after it: ``point <colour>``, ``test``, ``reload``."""

    name: str
    prefix: tuple[str, ...] = ()
    # Where to reach this proxy for the public check ("host:port"); empty: the URL's host.
    address: str = ""


@dataclass(frozen=True)
class MariaDB:
    client: str = "mariadb"
    dump: str = "mariadb-dump"
    binlog: str = "mariadb-binlog"
    defaults_extra_file: str = ""
    # binlog: copy before the freeze and replay the binary log at the freeze; full: copy at
    # the freeze (needs nothing of the server; the window then grows with the database).
    precopy: str = "binlog"


@dataclass(frozen=True)
class PostgreSQL:
    psql: str = "psql"
    run_as: str = "postgres"
    passfile: str = ""
    owner: str = "moodle"


@dataclass(frozen=True)
class Config:
    state_dir: str
    fact_file: str
    engine: str
    web_user: str
    php: str
    php_fpm_service: str
    db_prefix: str
    wwwroot: str
    colours: Mapping[str, Colour]
    upstream_dir: str
    upstream_link: str
    proxies: tuple[Proxy, ...]
    copy_tool: tuple[str, ...]
    copy_method: str = "link"
    target: Target | None = None
    mariadb: MariaDB = field(default_factory=MariaDB)
    postgresql: PostgreSQL = field(default_factory=PostgreSQL)
    # The longest wait after the freeze for requests that began before it; PHP-FPM's status
    # page (fpm_status_socket, read with cgi-fcgi) ends it as soon as none runs. Without the
    # page the whole time is waited.
    drain_seconds: float = 10.0
    fpm_status_socket: str = ""
    cron_wait_seconds: float = 300.0
    cron_enabled: bool = True
    check_cron: bool = True
    cron_keep_alive_zero: bool = True
    health_retries: int = 5
    health_delay: float = 3.0
    # The response header the backends set to their colour (checked through the proxies).
    colour_header: str = "X-Mjp-Colour"
    ca_file: str = ""
    backup_dir: str = "/srv/moodle-backups"
    discard_writes: bool = False

    @property
    def journal_dir(self) -> Path:
        return Path(self.state_dir)

    def other(self, colour: str) -> str:
        return next(c for c in self.colours if c != colour)


def _req(data: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ConfigError(f"{where}: '{key}' is missing")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: '{key}' must be a {kind.__name__}")
    return value


def _opt(data: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    return _req(data, key, kind, where) if key in data else default


def _argv(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(value)


def parse_config(data: Mapping[str, Any]) -> Config:
    """Build a Config from the decoded JSON, with a clear message for each mistake."""
    w = "config"
    colours: dict[str, Colour] = {}
    raw_colours = _req(data, "colours", dict, w)
    for name, entry in raw_colours.items():
        if name not in COLOUR_NAMES or not isinstance(entry, dict):
            raise ConfigError(f"config: colour '{name}' is not one of {COLOUR_NAMES}")
        cw = f"config colours.{name}"
        colours[name] = Colour(
            name=name,
            db_name=_req(entry, "db_name", str, cw),
            dataroot=_req(entry, "dataroot", str, cw),
            code_link=_req(entry, "code_link", str, cw),
            backend_port=_req(entry, "backend_port", int, cw),
        )
    if set(colours) != set(COLOUR_NAMES):
        raise ConfigError("config: both colours, blue and green, must be described")
    engine = _req(data, "engine", str, w)
    if engine not in ("mariadb", "postgresql"):
        raise ConfigError("config: 'engine' must be mariadb or postgresql")
    target = None
    if "target" in data and data["target"] is not None:
        t = _req(data, "target", dict, w)
        tw = "config target"
        target = Target(
            release=_req(t, "release", str, tw),
            release_id=_req(t, "release_id", str, tw),
            release_dir=_req(t, "release_dir", str, tw),
            code_version=_req(t, "code_version", str, tw),
            public_layout=_req(t, "public_layout", bool, tw),
            expect_live=_opt(t, "expect_live", str, "", tw),
            code_release=_opt(t, "code_release", str, "", tw),
        )
    proxies = []
    for i, p in enumerate(_req(data, "proxies", list, w)):
        pw = f"config proxies[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{pw} must be an object")
        proxies.append(
            Proxy(
                name=_req(p, "name", str, pw),
                prefix=_argv(p.get("prefix", []), f"{pw}.prefix"),
                address=_opt(p, "address", str, "", pw),
            )
        )
    m = _opt(data, "mariadb", dict, {}, w)
    mariadb = MariaDB(
        client=_opt(m, "client", str, "mariadb", "config mariadb"),
        dump=_opt(m, "dump", str, "mariadb-dump", "config mariadb"),
        binlog=_opt(m, "binlog", str, "mariadb-binlog", "config mariadb"),
        defaults_extra_file=_opt(m, "defaults_extra_file", str, "", "config mariadb"),
        precopy=_opt(m, "precopy", str, "binlog", "config mariadb"),
    )
    if mariadb.precopy not in ("binlog", "full"):
        raise ConfigError("config mariadb.precopy must be binlog or full")
    p = _opt(data, "postgresql", dict, {}, w)
    postgresql = PostgreSQL(
        psql=_opt(p, "psql", str, "psql", "config postgresql"),
        run_as=_opt(p, "run_as", str, "postgres", "config postgresql"),
        passfile=_opt(p, "passfile", str, "", "config postgresql"),
        owner=_opt(p, "owner", str, "moodle", "config postgresql"),
    )
    copy_method = _opt(data, "copy_method", str, "link", w)
    if copy_method not in ("link", "plain"):
        raise ConfigError("config: 'copy_method' must be link or plain")
    return Config(
        state_dir=_req(data, "state_dir", str, w),
        fact_file=_req(data, "fact_file", str, w),
        engine=engine,
        web_user=_req(data, "web_user", str, w),
        php=_req(data, "php", str, w),
        php_fpm_service=_req(data, "php_fpm_service", str, w),
        db_prefix=_opt(data, "db_prefix", str, "mdl_", w),
        wwwroot=_req(data, "wwwroot", str, w).rstrip("/"),
        colours=colours,
        upstream_dir=_req(data, "upstream_dir", str, w),
        upstream_link=_req(data, "upstream_link", str, w),
        proxies=tuple(proxies),
        copy_tool=_argv(_req(data, "copy_tool", list, w), "config copy_tool"),
        copy_method=copy_method,
        target=target,
        mariadb=mariadb,
        postgresql=postgresql,
        drain_seconds=_opt(data, "drain_seconds", float, 10.0, w),
        fpm_status_socket=_opt(data, "fpm_status_socket", str, "", w),
        cron_wait_seconds=_opt(data, "cron_wait_seconds", float, 300.0, w),
        cron_enabled=_opt(data, "cron_enabled", bool, True, w),
        check_cron=_opt(data, "check_cron", bool, True, w),
        cron_keep_alive_zero=_opt(data, "cron_keep_alive_zero", bool, True, w),
        health_retries=_opt(data, "health_retries", int, 5, w),
        health_delay=_opt(data, "health_delay", float, 3.0, w),
        colour_header=_opt(data, "colour_header", str, "X-Mjp-Colour", w),
        ca_file=_opt(data, "ca_file", str, "", w),
        backup_dir=_opt(data, "backup_dir", str, "/srv/moodle-backups", w),
        discard_writes=_opt(data, "discard_writes", bool, False, w),
    )


def load_config(path: str | os.PathLike[str], *, require_private: bool = True) -> Config:
    """Read the JSON file; refuse one that others could read or write (it names secrets)."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read the configuration {p}: {error.strerror}") from None
    if require_private and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{p} is readable or writable by others: make it mode 0600")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{p} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a JSON object")
    return parse_config(data)
