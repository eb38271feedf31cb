"""Tests of the Moodle TEST STAND-IN (tests/moodle_standin, not Moodle).

The build tests need only Python. The others run the stand-in's PHP against a real
MariaDB/MySQL server and skip cleanly when ``php`` (with pdo_mysql) or a server is
missing. The server is reached with the ``mysql``/``mariadb`` client as an admin user:
root over the local socket unless STANDIN_DB_ADMIN_USER / STANDIN_DB_ADMIN_PASSWORD /
STANDIN_DB_HOST / STANDIN_DB_PORT say otherwise.
"""

# ruff: noqa: S603, S607, S310, S105, S106, S108

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
UNKNOWN_OPTION = "Unrecognised options:\n  --foo\nPlease use --help option.\n\n"


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("standin_build", HERE / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["standin_build"] = module
    spec.loader.exec_module(module)
    return module


build = _load_build()


# --------------------------------------------------------------------- build only


def test_build_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    first = build.build(tmp_path / "a")
    second = build.build(tmp_path / "b")
    assert first == second
    for name in first:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    sums = (tmp_path / "a" / "SHA256SUMS").read_text()
    for name, digest in first.items():
        assert hashlib.sha256((tmp_path / "a" / name).read_bytes()).hexdigest() == digest
        assert f"{digest}  {name}" in sums


def test_archives_are_shaped_like_moodle_releases(tmp_path: Path) -> None:
    build.build(tmp_path)
    expected = {
        "standin-moodle-v1.tgz",
        "standin-moodle-v2.tgz",
        "standin-moodle-v2-broken.tgz",
        "standin-moodle-v3-public.tgz",
        "mod_lticontainer-standin.tgz",
    }
    assert expected <= {p.name for p in tmp_path.iterdir()}
    for name in expected - {"mod_lticontainer-standin.tgz"}:
        with tarfile.open(tmp_path / name) as tar:
            members = tar.getmembers()
            assert {m.name.split("/")[0] for m in members} == {"moodle"}
            assert {m.mtime for m in members} == {build.FIXED_MTIME}
            assert all(m.uid == 0 and m.gid == 0 for m in members)
            names = {m.name for m in members}
            assert "moodle/config.php" not in names
            assert "moodle/public/config.php" in names or "moodle/admin/cli/upgrade.php" in names
    with tarfile.open(tmp_path / "mod_lticontainer-standin.tgz") as tar:
        names = set(tar.getnames())
        assert {n.split("/")[0] for n in names} == {"lticontainer"}
        version = tar.extractfile("lticontainer/version.php")
        assert version is not None
        text = version.read().decode()
        assert "$plugin->component = 'mod_lticontainer';" in text


def test_v1_and_v3_versions_and_layout(tmp_path: Path) -> None:
    build.build(tmp_path)
    with tarfile.open(tmp_path / "standin-moodle-v1.tgz") as tar:
        member = tar.extractfile("moodle/version.php")
        assert member is not None
        v1 = member.read().decode()
    assert "$version  = 2024100700.00;" in v1
    assert "$release  = '4.5 (Build: 20241007)';" in v1
    assert "$branch   = '405';" in v1
    with tarfile.open(tmp_path / "standin-moodle-v3-public.tgz") as tar:
        names = set(tar.getnames())
        member = tar.extractfile("moodle/public/version.php")
        assert member is not None
        v3 = member.read().decode()
    assert "$branch   = '501';" in v3
    for path in (
        "moodle/public/index.php",
        "moodle/public/login/index.php",
        "moodle/public/admin/cli/upgrade.php",
        "moodle/public/mod/lti/locallib.php",
        "moodle/public/lib/setup.php",
        "moodle/lib/setup.php",
        "moodle/public/config.php",
        "moodle/config-dist.php",
    ):
        assert path in names, path
    assert "moodle/version.php" not in names
    assert "moodle/admin/cli/upgrade.php" not in names


# ----------------------------------------------------------- PHP + database tests


def _php_ok(driver: str) -> str | None:
    if not shutil.which("php"):
        return "php is not installed"
    mods = subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.split()
    if driver not in mods:
        return f"php has no {driver}"
    return None


@dataclass
class DbServer:
    """An admin connection to a real database server, through its command line client."""

    dbtype: str  # 'mariadb' or 'pgsql', as in config.php
    command: list[str]
    host: str
    port: str

    def sql(self, statement: str, database: str | None = None) -> list[list[str]]:
        if self.dbtype == "pgsql":
            cmd = [*self.command, "-X", "-A", "-t", "-F", "\t", "-c", statement]
            cmd += ["-d", database or "postgres"]
        else:
            cmd = [*self.command, "-N", "-B", "-e", statement] + ([database] if database else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return [line.split("\t") for line in out.splitlines()]

    def create(self, name: str, password: str) -> None:
        """A database and a user of the same name that owns it."""
        if self.dbtype == "pgsql":
            self.sql(f"CREATE USER {name} WITH PASSWORD '{password}'")
            self.sql(f"CREATE DATABASE {name} OWNER {name} ENCODING 'UTF8' TEMPLATE template0")
            return
        self.sql(f"CREATE DATABASE {name} DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        for host in ("localhost", "%"):
            self.sql(f"CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}'")
            self.sql(f"GRANT ALL ON {name}.* TO '{name}'@'{host}'")

    def drop(self, name: str) -> None:
        if self.dbtype == "pgsql":
            self.sql(f"DROP DATABASE IF EXISTS {name}")
            self.sql(f"DROP USER IF EXISTS {name}")
            return
        self.sql(f"DROP DATABASE IF EXISTS {name}")
        for host in ("localhost", "%"):
            self.sql(f"DROP USER IF EXISTS '{name}'@'{host}'")


@pytest.fixture(scope="session")
def dbserver() -> DbServer:
    reason = _php_ok("pdo_mysql")
    if reason:
        pytest.skip(reason)
    client = shutil.which("mariadb") or shutil.which("mysql")
    if not client:
        pytest.skip("no mariadb/mysql client")
    command = [client, "--user=" + os.environ.get("STANDIN_DB_ADMIN_USER", "root")]
    if os.environ.get("STANDIN_DB_ADMIN_PASSWORD"):
        command.append("--password=" + os.environ["STANDIN_DB_ADMIN_PASSWORD"])
    host = os.environ.get("STANDIN_DB_HOST", "localhost")
    port = os.environ.get("STANDIN_DB_PORT", "")
    if host != "localhost":
        command += ["--host=" + host] + (["--port=" + port] if port else [])
    server = DbServer("mariadb", command, host, port)
    try:
        server.sql("SELECT 1")
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("no MariaDB/MySQL server reachable (start one, e.g. `service mariadb start`)")
    return server


@pytest.fixture(scope="session")
def pgserver() -> DbServer:
    """PostgreSQL is optional: as root, psql runs as the postgres user; else libpq's
    PGHOST/PGUSER/PGPASSWORD environment applies."""
    reason = _php_ok("pdo_pgsql")
    if reason:
        pytest.skip(reason)
    psql = shutil.which("psql")
    if not psql:
        pytest.skip("no psql client")
    runuser = shutil.which("runuser")
    command = [psql]
    if os.geteuid() == 0 and runuser and "PGUSER" not in os.environ:
        command = [runuser, "-u", "postgres", "--", psql]
    server = DbServer("pgsql", command, os.environ.get("STANDIN_PG_HOST", "127.0.0.1"), "")
    try:
        server.sql("SELECT 1")
    except (subprocess.CalledProcessError, OSError):
        pytest.skip("no PostgreSQL server reachable")
    return server


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("archives")
    build.build(out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class Site:
    """One unpacked stand-in with its own database and dataroot."""

    base: Path
    archives: Path
    db: DbServer
    dbname: str
    dbuser: str
    dbpass: str
    port: int = field(default_factory=_free_port)
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def dataroot(self) -> Path:
        return self.base / "moodledata"

    @property
    def wwwroot(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def unpack(self, archive: str, name: str) -> Path:
        target = self.base / name
        target.mkdir(parents=True)
        with tarfile.open(self.archives / archive) as tar:
            tar.extractall(target, filter="data")
        return target / "moodle"

    def code_dir(self, code: Path) -> Path:
        """Where admin/cli, mod/ and index.php are (public/ from 5.1 on)."""
        return code / "public" if (code / "public").is_dir() else code

    def write_config(self, code: Path) -> None:
        self.dataroot.mkdir(exist_ok=True)
        socket_opt = ""
        host = self.db.host
        (code / "config.php").write_text(f"""<?php  // Moodle configuration file
unset($CFG);
global $CFG;
$CFG = new stdClass();
$CFG->dbtype    = '{self.db.dbtype}';
$CFG->dblibrary = 'native';
$CFG->dbhost    = '{host}';
$CFG->dbname    = '{self.dbname}';
$CFG->dbuser    = '{self.dbuser}';
$CFG->dbpass    = '{self.dbpass}';
$CFG->prefix    = 'mdl_';
$CFG->dboptions = ['dbpersist' => false, 'dbport' => '{self.db.port}', 'dbsocket' => '{socket_opt}',
    'dbcollation' => 'utf8mb4_unicode_ci'];
$CFG->wwwroot   = '{self.wwwroot}';
$CFG->dataroot  = '{self.dataroot}';
$CFG->admin     = 'admin';
$CFG->directorypermissions = 02770;
require_once(__DIR__ . '/lib/setup.php');
""")

    def php(self, code: Path, script: str, *args: str, stdin: str | None = None) -> Result:
        path = self.code_dir(code) / script
        proc = subprocess.run(
            ["php", str(path), *args],
            capture_output=True,
            text=True,
            input=stdin if stdin is not None else "",
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def php_code(self, code: Path, body: str) -> Result:
        script = self.base / f"snippet_{secrets.token_hex(4)}.php"
        config = code / "config.php"
        script.write_text(f"<?php\ndefine('CLI_SCRIPT', true);\nrequire('{config}');\n{body}\n")
        proc = subprocess.run(["php", str(script)], capture_output=True, text=True, timeout=60)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def install(self, code: Path, *extra: str) -> Result:
        return self.php(
            code,
            "admin/cli/install_database.php",
            "--agree-license",
            "--adminpass=Secret-pw1",
            "--adminemail=admin@example.org",
            "--fullname=Stand-in Test Site",
            "--shortname=sits",
            *extra,
        )

    def content(self, code: Path) -> dict[str, object]:
        result = self.php(code, "admin/cli/standin_content.php", "--list")
        assert result.code == 0, result
        data: dict[str, object] = json.loads(result.out)
        return data

    def serve(self, docroot: Path) -> None:
        self.stop()
        proc = subprocess.Popen(
            ["php", "-S", f"127.0.0.1:{self.port}", "-t", str(docroot)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.servers.append(proc)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("php -S did not start")

    def stop(self) -> None:
        for proc in self.servers:
            proc.terminate()
            proc.wait(timeout=10)
        self.servers.clear()

    def http(
        self,
        path: str,
        data: dict[str, str] | None = None,
        cookies: dict[str, str] | None = None,
        host: str | None = None,
    ) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = {"Host": host or f"127.0.0.1:{self.port}"}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        body = None
        if data is not None:
            body = urllib.parse.urlencode(data)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request("POST" if data is not None else "GET", path, body=body, headers=headers)
        resp = conn.getresponse()
        jar: dict[str, str] = {}
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                jar[key] = rest.split(";", 1)[0]
        result = Response(
            resp.status,
            {k.lower(): v for k, v in resp.getheaders()},
            resp.read().decode(errors="replace"),
            jar,
        )
        conn.close()
        return result


def _site(server: DbServer, archives: Path, tmp_path: Path) -> Iterator[Site]:
    name, password = f"standin_{secrets.token_hex(4)}", secrets.token_hex(8)
    server.create(name, password)
    s = Site(tmp_path, archives, server, name, name, password)
    yield s
    s.stop()
    server.drop(name)


@pytest.fixture
def site(dbserver: DbServer, archives: Path, tmp_path: Path) -> Iterator[Site]:
    yield from _site(dbserver, archives, tmp_path)


@pytest.fixture
def pgsite(pgserver: DbServer, archives: Path, tmp_path: Path) -> Iterator[Site]:
    yield from _site(pgserver, archives, tmp_path)


def installed_v1(site: Site) -> Path:
    code = site.unpack("standin-moodle-v1.tgz", "v1")
    site.write_config(code)
    result = site.install(code)
    assert result.code == 0, result
    assert "Installation completed successfully." in result.out
    return code


def next_release(site: Site, old: Path, archive: str, name: str) -> Path:
    """New code in a fresh folder with the old config.php copied in (Moodle's upgrade rule)."""
    code = site.unpack(archive, name)
    shutil.copy(old / "config.php", code / "config.php")
    return code


def test_install_and_front_page(site: Site) -> None:
    code = installed_v1(site)
    assert site.db.sql("SELECT value FROM mdl_config WHERE name = 'release'", site.dbname) == [
        ["4.5 (Build: 20241007)"]
    ]
    admin = site.db.sql("SELECT username, email, password FROM mdl_user WHERE id = 2", site.dbname)[
        0
    ]
    assert admin[:2] == ["admin", "admin@example.org"]
    assert admin[2].startswith("$2y$")
    assert site.db.sql("SELECT fullname, shortname FROM mdl_course WHERE id = 1", site.dbname) == [
        ["Stand-in Test Site", "sits"]
    ]
    assert site.db.sql(
        "SELECT value FROM mdl_config_plugins WHERE plugin = 'mod_lti' AND name = 'version'",
        site.dbname,
    ) == [["2024100700"]]

    site.serve(code)
    page = site.http("/")
    assert page.status == 200
    assert "Stand-in Test Site" in page.body
    assert "4.5 (Build: 20241007)" in page.body
    assert "You are not logged in." in page.body
    assert "MoodleSession" in page.cookies
    assert (site.dataroot / "sessions" / f"sess_{page.cookies['MoodleSession']}").is_file()

    wrong = site.http("/", host="other.example.org")
    assert wrong.status == 303
    assert wrong.headers["location"] == site.wwwroot


def test_install_refusals(site: Site) -> None:
    code = site.unpack("standin-moodle-v1.tgz", "v1")
    missing = site.install(code)
    assert missing.code == 1
    assert missing.err == "config.php does not exist, can not continue\n"
    site.write_config(code)
    nolicense = site.php(code, "admin/cli/install_database.php", "--adminpass=x")
    assert nolicense.code == 1
    assert "You have to agree to the license." in nolicense.err
    nopass = site.php(code, "admin/cli/install_database.php", "--agree-license")
    assert nopass.code == 1
    assert "You have to specify admin password." in nopass.err
    assert site.install(code).code == 0
    again = site.install(code)
    assert again.code == 1
    assert again.err == "Database tables already present, cli installation can not continue.\n\n"


def test_unknown_options_fail_like_moodle(site: Site) -> None:
    code = installed_v1(site)
    for script in (
        "install_database.php",
        "upgrade.php",
        "maintenance.php",
        "cron.php",
        "adhoc_task.php",
        "standin_content.php",
    ):
        result = site.php(code, f"admin/cli/{script}", "--foo")
        assert (result.code, result.err) == (1, UNKNOWN_OPTION), script
    # Moodle's purge_caches.php uses exit code 2 here.
    purge = site.php(code, "admin/cli/purge_caches.php", "--foo")
    assert (purge.code, purge.err) == (2, UNKNOWN_OPTION)
    bare = site.php(code, "admin/cli/upgrade.php", "foo", "-x=1")
    assert bare.code == 1
    assert bare.err == "Unrecognised options:\n  foo\n  -x=1\nPlease use --help option.\n\n"
    helptext = site.php(code, "admin/cli/upgrade.php", "-h")
    assert helptext.code == 0
    assert "--is-pending" in helptext.out


def test_login(site: Site) -> None:
    code = installed_v1(site)
    site.serve(code)
    form = site.http("/login/index.php")
    token = form.body.split('name="logintoken" value="')[1].split('"')[0]
    cookies = form.cookies
    ok = site.http(
        "/login/index.php",
        {"username": "admin", "password": "Secret-pw1", "logintoken": token},
        cookies,
    )
    assert ok.status == 303
    assert ok.headers["location"] == site.wwwroot + "/"
    assert ok.cookies["MoodleSession"] != cookies["MoodleSession"]
    front = site.http("/", cookies=ok.cookies)
    assert "You are logged in as admin" in front.body

    form = site.http("/login/index.php")
    token = form.body.split('name="logintoken" value="')[1].split('"')[0]
    bad = site.http(
        "/login/index.php",
        {"username": "admin", "password": "nope", "logintoken": token},
        form.cookies,
    )
    assert bad.status == 200
    assert "Invalid login, please try again" in bad.body
    notoken = site.http("/login/index.php", {"username": "admin", "password": "Secret-pw1"})
    assert "Invalid login" in notoken.body


def test_upgrade_v1_to_v2_keeps_data_and_changes_schema(site: Site, tmp_path: Path) -> None:
    v1 = installed_v1(site)
    upload = tmp_path / "notes.txt"
    upload.write_text("file content that must survive\n")
    assert (
        site.php(
            v1, "admin/cli/standin_content.php", "--add-row=before upgrade", f"--add-file={upload}"
        ).code
        == 0
    )
    before = site.content(v1)

    v2 = next_release(site, v1, "standin-moodle-v2.tgz", "v2")
    pending = site.php(v2, "admin/cli/upgrade.php", "--is-pending")
    assert (pending.code, pending.err) == (2, "An upgrade is pending\n\n")

    site.serve(v2)
    redirect = site.http("/")
    assert redirect.status == 303
    assert redirect.headers["location"] == site.wwwroot + "/admin/index.php"
    site.stop()

    upgrade = site.php(v2, "admin/cli/upgrade.php", "--non-interactive")
    assert upgrade.code == 0, upgrade
    assert (
        "Command line upgrade from 4.5 (Build: 20241007) (2024100700)"
        " to 4.5.1 (Build: 20241209) (2024100701) completed successfully."
    ) in upgrade.out

    done = site.php(v2, "admin/cli/upgrade.php", "--is-pending")
    assert done.code == 0
    assert done.err == (
        "No upgrade needed for the installed version 4.5.1 (Build: 20241209) (2024100701)."
        " Thanks for coming anyway!\n\n"
    )
    after = site.content(v2)
    assert after["version"] == "2024100701"
    assert after["files"] == before["files"]
    files = after["files"]
    assert isinstance(files, list) and files and all(f["intact"] for f in files)
    rows = after["rows"]
    assert isinstance(rows, list)
    assert rows[0]["content"] == "before upgrade"
    assert rows[0]["textlength"] == str(len("before upgrade"))

    downgrade = site.php(v1, "admin/cli/upgrade.php", "--non-interactive")
    assert downgrade.code == 1
    assert (
        downgrade.err
        == "Error: The code you are using is older than the version recorded in the database.\n\n"
    )


def test_broken_upgrade_fails_half_way(site: Site) -> None:
    v1 = installed_v1(site)
    assert site.php(v1, "admin/cli/standin_content.php", "--add-row=precious").code == 0
    broken = next_release(site, v1, "standin-moodle-v2-broken.tgz", "v2broken")
    result = site.php(broken, "admin/cli/upgrade.php", "--non-interactive")
    assert result.code == 1
    assert (
        "!!! Unknown error upgrading core to version 2024100702, can not continue. !!!"
        in result.out
    )
    # The database is left between versions with half a change applied, which is why a
    # deployment must upgrade a copy and keep the live database untouched.
    assert site.db.sql("SELECT value FROM mdl_config WHERE name = 'version'", site.dbname) == [
        ["2024100701"]
    ]
    assert site.db.sql("SELECT content FROM mdl_standin_data", site.dbname) == [
        ["BROKEN UPGRADE: precious"]
    ]
    assert site.db.sql(
        "SELECT COUNT(*) FROM mdl_config WHERE name = 'upgraderunning'", site.dbname
    ) == [["1"]]


def test_maintenance_mode(site: Site) -> None:
    code = installed_v1(site)
    site.serve(code)
    assert site.http("/").status == 200
    on = site.php(code, "admin/cli/maintenance.php", "--enable")
    assert on.code == 0
    assert "Your site is currently in CLI maintenance mode, no web access is allowed." in on.out
    assert (site.dataroot / "climaintenance.html").is_file()
    page = site.http("/")
    assert page.status == 503
    assert page.headers["retry-after"] == "300"
    assert "The site is undergoing maintenance" in page.body
    assert site.http("/login/index.php").status == 503
    # CLI scripts still run; cron refuses like Moodle's cron runner.
    assert site.php(code, "admin/cli/standin_content.php", "--list").code == 0
    cron = site.php(code, "admin/cli/cron.php")
    assert (cron.code, cron.out) == (1, "CLI maintenance mode active, cron execution suspended.\n")
    status = site.php(code, "admin/cli/maintenance.php")
    assert "Status: enabled" in status.out
    off = site.php(code, "admin/cli/maintenance.php", "--disable")
    assert off.code == 0
    assert not (site.dataroot / "climaintenance.html").exists()
    assert site.http("/").status == 200
    later = site.php(code, "admin/cli/maintenance.php", "--enablelater=10")
    assert later.code == 0
    assert "CLI maintenance mode will be enabled on" in later.out


def test_cron_and_purge_caches(site: Site) -> None:
    code = installed_v1(site)
    cron = site.php(code, "admin/cli/cron.php")
    assert cron.code == 0, cron
    assert "Cron run completed correctly" in cron.out
    assert site.db.sql("SELECT COUNT(*) FROM mdl_config WHERE name = 'lastcron'", site.dbname) == [
        ["1"]
    ]
    assert (site.dataroot / "standin_cron.log").read_text().count("cron run") == 1
    assert site.php(code, "admin/cli/cron.php", "--disable").code == 0
    disabled = site.php(code, "admin/cli/cron.php")
    assert (disabled.code, disabled.out) == (1, "Cron is disabled. Use --force to override.\n")
    assert site.php(code, "admin/cli/cron.php", "--force").code == 0
    assert site.php(code, "admin/cli/cron.php", "-e").code == 0
    assert site.php(code, "admin/cli/adhoc_task.php", "--execute").code == 0

    for folder in ("cache", "localcache"):
        (site.dataroot / folder / "sub").mkdir(parents=True, exist_ok=True)
        (site.dataroot / folder / "sub" / "x.cache").write_text("x")
    assert site.php(code, "admin/cli/purge_caches.php").code == 0
    assert list((site.dataroot / "cache").iterdir()) == []
    assert list((site.dataroot / "localcache").iterdir()) == []


def test_plugin_install_and_requirements(site: Site) -> None:
    v1 = installed_v1(site)
    with tarfile.open(site.archives / "mod_lticontainer-standin.tgz") as tar:
        tar.extractall(v1 / "mod", filter="data")
    assert site.php(v1, "admin/cli/upgrade.php", "--is-pending").code == 2
    assert site.php(v1, "admin/cli/cron.php").code == 1  # "Moodle upgrade pending ..."
    upgrade = site.php(v1, "admin/cli/upgrade.php", "--non-interactive")
    assert upgrade.code == 0, upgrade
    assert "-->mod_lticontainer" in upgrade.out
    assert site.content(v1)["plugins"] == {
        "mod_lti": "2024100700",
        "mod_lticontainer": "2025052600",
    }
    assert site.db.sql("SHOW TABLES LIKE 'mdl_lticontainer'", site.dbname) == [["mdl_lticontainer"]]
    assert site.php(v1, "admin/cli/upgrade.php", "--is-pending").code == 0

    version = v1 / "mod" / "lticontainer" / "version.php"
    version.write_text(version.read_text().replace("2022112800", "2099010100"))
    version.write_text(version.read_text().replace("2025052600", "2025052601"))
    failed = site.php(v1, "admin/cli/upgrade.php", "--non-interactive")
    assert failed.code == 1
    assert "Dependencies check failed for mod_lticontainer" in failed.err


def test_lti_tool_type_api(site: Site) -> None:
    code = installed_v1(site)
    result = site.php_code(
        code,
        """
require_once($CFG->dirroot . '/mod/lti/locallib.php');
\\core\\session\\manager::set_user(get_admin());
$type = new stdClass();
$type->state = LTI_TOOL_STATE_CONFIGURED;
$type->coursevisible = LTI_COURSEVISIBLE_ACTIVITYCHOOSER;
$config = new stdClass();
$config->lti_typename = 'JupyterHub A';
$config->lti_toolurl = 'https://hub-a.example.org/hub/lti/launch';
$config->lti_resourcekey = 'key-a';
$config->lti_password = 'secret-a';
$config->lti_sendname = LTI_SETTING_ALWAYS;
$config->lti_sendemailaddr = LTI_SETTING_ALWAYS;
$config->lti_coursevisible = LTI_COURSEVISIBLE_ACTIVITYCHOOSER;
$config->lti_launchcontainer = LTI_LAUNCH_CONTAINER_WINDOW;
$id = lti_add_type($type, $config);
$update = (object)['id' => $id, 'state' => LTI_TOOL_STATE_CONFIGURED];
lti_update_type($update, (object)['lti_typename' => 'JupyterHub A2', 'lti_password' => 'secret-b']);
$bydomain = lti_get_tools_by_domain('hub-a.example.org', LTI_TOOL_STATE_CONFIGURED);
echo json_encode(['id' => $id, 'types' => array_values(lti_get_lti_types()),
    'config' => lti_get_type_config($id), 'bydomain' => count($bydomain)]);
""",
    )
    assert result.code == 0, result
    data = json.loads(result.out)
    (tool,) = data["types"]
    assert tool["name"] == "JupyterHub A2"
    assert tool["baseurl"] == "https://hub-a.example.org/hub/lti/launch"
    assert tool["tooldomain"] == "hub-a.example.org"
    assert (tool["state"], tool["coursevisible"], tool["course"], tool["createdby"]) == (
        "1",
        "2",
        "1",
        "2",
    )
    assert tool["ltiversion"] == "LTI-1p0"
    config = data["config"]
    assert config["resourcekey"] == "key-a"
    assert config["password"] == "secret-b"
    assert (config["sendname"], config["sendemailaddr"], config["launchcontainer"]) == (
        "1",
        "1",
        "4",
    )
    assert config["coursevisible"] == "2"
    assert config["toolurl"] == tool["baseurl"]
    assert config["servicesalt"]
    assert "typename" not in config
    assert data["bydomain"] == 1
    names = {
        row[0]
        for row in site.db.sql(
            f"SELECT name FROM mdl_lti_types_config WHERE typeid = {int(data['id'])}",  # noqa: S608
            site.dbname,
        )
    }
    assert {
        "resourcekey",
        "password",
        "sendname",
        "coursevisible",
        "launchcontainer",
        "forcessl",
    } <= names


def test_v3_public_layout(site: Site) -> None:
    v1 = installed_v1(site)
    assert site.php(v1, "admin/cli/standin_content.php", "--add-row=from 4.5").code == 0
    v3 = next_release(site, v1, "standin-moodle-v3-public.tgz", "v3")
    assert (v3 / "config.php").is_file() and not (
        v3 / "public" / "admin" / "cli" / "config.php"
    ).exists()
    assert site.php(v3, "admin/cli/upgrade.php", "--is-pending").code == 2
    upgrade = site.php(v3, "admin/cli/upgrade.php", "--non-interactive")
    assert upgrade.code == 0, upgrade
    content = site.content(v3)
    assert (content["version"], content["branch"]) == ("2025100600", "501")
    rows = content["rows"]
    assert (
        isinstance(rows, list) and rows[0]["content"] == "from 4.5" and rows[0]["textlength"] == "8"
    )
    assert site.db.sql("SHOW TABLES LIKE 'mdl_standin_notes'", site.dbname) == [
        ["mdl_standin_notes"]
    ]

    root = site.php_code(v3, "echo $CFG->dirroot, '|', $CFG->root ?? '', '|', $CFG->libdir;")
    assert root.out == f"{v3}/public|{v3}|{v3}/public/lib"

    site.serve(v3 / "public")
    page = site.http("/")
    assert page.status == 200
    assert "5.1 (Build: 20251006)" in page.body
    site.serve(v3)
    assert site.http("/").status == 500


def test_v3_fresh_install(site: Site) -> None:
    v3 = site.unpack("standin-moodle-v3-public.tgz", "v3")
    missing = site.install(v3)
    assert (missing.code, missing.err) == (1, "config.php does not exist, can not continue\n")
    site.write_config(v3)
    result = site.install(v3)
    assert result.code == 0, result
    assert site.content(v3)["plugins"] == {"mod_lti": "2025100600"}
    assert site.php(v3, "admin/cli/upgrade.php", "--is-pending").code == 0


def test_postgresql(pgsite: Site) -> None:
    """The same contract on PostgreSQL: install, content, upgrade, LTI API, failed step."""
    v1 = installed_v1(pgsite)
    assert pgsite.php(v1, "admin/cli/standin_content.php", "--add-row=on postgres").code == 0
    v2 = next_release(pgsite, v1, "standin-moodle-v2.tgz", "v2")
    assert pgsite.php(v2, "admin/cli/upgrade.php", "--is-pending").code == 2
    assert pgsite.php(v2, "admin/cli/upgrade.php", "--non-interactive").code == 0
    rows = pgsite.content(v2)["rows"]
    assert isinstance(rows, list) and rows[0]["textlength"] == "11"
    lti = pgsite.php_code(
        v2,
        """require_once($CFG->dirroot . '/mod/lti/locallib.php');
\\core\\session\\manager::set_user(get_admin());
$config = (object)['lti_typename' => 'Hub', 'lti_toolurl' => 'https://hub.example.org/hub/lti/launch',
    'lti_resourcekey' => 'k', 'lti_password' => 's'];
$id = lti_add_type((object)['state' => LTI_TOOL_STATE_CONFIGURED], $config);
echo $id, ' ', json_encode(lti_get_type_config($id));""",
    )
    assert lti.code == 0, lti
    assert lti.out.startswith("1 ")
    assert json.loads(lti.out[2:])["resourcekey"] == "k"
    broken = next_release(pgsite, v2, "standin-moodle-v2-broken.tgz", "broken")
    failed = pgsite.php(broken, "admin/cli/upgrade.php", "--non-interactive")
    assert failed.code == 1
    assert "!!! Unknown error upgrading core to version 2024100702" in failed.out


def test_error_paths(site: Site) -> None:
    code = site.unpack("standin-moodle-v1.tgz", "v1")
    site.write_config(code)
    # Database reachable but empty.
    empty = site.php(code, "admin/cli/upgrade.php", "--non-interactive")
    assert (empty.code, empty.err) == (
        1,
        "Config table does not contain version, can not continue, sorry.\n\n",
    )
    site.serve(code)
    notinstalled = site.http("/")
    assert notinstalled.status == 303
    assert notinstalled.headers["location"] == site.wwwroot + "/admin/index.php"
    assert "not installed yet" in site.http("/admin/index.php").body

    assert site.install(code).code == 0
    assert site.php(code, "admin/cli/maintenance.php", "--enableold").code == 0
    assert site.http("/").status == 503
    assert site.php(code, "admin/cli/maintenance.php", "--disable").code == 0
    assert site.http("/").status == 200

    # Wrong database password: Moodle's early error, exit 1 on the CLI, 503 on the web.
    config = code / "config.php"
    config.write_text(config.read_text().replace(site.dbpass, "wrong-password"))
    cli = site.php(code, "admin/cli/upgrade.php", "--is-pending")
    assert cli.code == 1
    assert cli.out.startswith("!!! <p>Error: Database connection failed</p>")
    web = site.http("/")
    assert web.status == 503
    assert "Database connection failed" in web.body


def test_v3_cli_without_root_config_exits_zero(site: Site) -> None:
    """Moodle 5.1's public/config.php only loads <root>/config.php and sends a web
    redirect to install.php when it is missing: a CLI script then prints nothing and
    exits 0 -- a deployment must check for <root>/config.php itself."""
    v3 = site.unpack("standin-moodle-v3-public.tgz", "v3")
    result = site.php(v3, "admin/cli/upgrade.php", "--is-pending")
    assert (result.code, result.out, result.err) == (0, "", "")


def test_sslproxy(site: Site) -> None:
    code = installed_v1(site)
    config = code / "config.php"
    https = config.read_text().replace("'http://127.0.0.1", "'https://127.0.0.1")
    config.write_text(https)
    site.serve(code)
    plain = site.http("/")
    assert plain.status == 303
    assert plain.headers["location"] == f"https://127.0.0.1:{site.port}"
    config.write_text(https.replace("require_once", "$CFG->sslproxy = true;\nrequire_once"))
    proxied = site.http("/")
    assert proxied.status == 200
    assert "Stand-in Test Site" in proxied.body
