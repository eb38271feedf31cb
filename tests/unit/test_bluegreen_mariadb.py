"""The MariaDB pre-copy and binary-log replay of the blue-green program against a real,
private MariaDB server (its own data directory and socket under tmp_path, no network),
through the real subprocess runner: the command lines work with this release's
mariadb-dump, mariadb-binlog and client. Skipped when mariadbd is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltihub.upgrade.config import Config, parse_config
from ltihub.upgrade.host import SubprocessRunner
from ltihub.upgrade.steps import Ctx, copy_db, precopy_db

MARIADBD = shutil.which("mariadbd") or (
    "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else "")
CLIENT = shutil.which("mariadb") or ""
INSTALL_DB = shutil.which("mariadb-install-db") or ""
pytestmark = pytest.mark.skipif(
    not (MARIADBD and CLIENT and INSTALL_DB and shutil.which("mariadb-binlog")),
    reason="MariaDB server not installed")


class Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cnf = root / "client.cnf"

    def sql(self, query: str) -> str:
        out = subprocess.run(  # noqa: S603 - our own test server, argument list
            [CLIENT, f"--defaults-extra-file={self.cnf}", "-N", "-B", "-e", query],
            capture_output=True, text=True, check=True)
        return out.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("mariadb")
    data, sock = root / "data", root / "sock"
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run(  # noqa: S603
        [INSTALL_DB, "--no-defaults", f"--datadir={data}", *user,
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        capture_output=True, check=True)
    (root / "server.cnf").write_text(
        f"[mysqld]\ndatadir={data}\nsocket={sock}\nskip-networking\npid-file={root}/pid\n"
        "log_bin=mariadb-bin\nbinlog_format=ROW\nserver_id=1\n"
        "character-set-server=utf8mb4\ncollation-server=utf8mb4_unicode_ci\n")
    (root / "client.cnf").write_text(f"[client]\nsocket={sock}\n")
    proc = subprocess.Popen(  # noqa: S603
        [MARIADBD, f"--defaults-file={root / 'server.cnf'}", *user],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = Server(root)
    try:
        for _ in range(100):
            if sock.exists():
                try:
                    srv.sql("SELECT 1")
                    break
                except subprocess.CalledProcessError:
                    pass
            time.sleep(0.1)
        else:
            pytest.skip("the private MariaDB server did not start")
        yield srv
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def config(tmp_path: Path, srv: Server) -> Config:
    return parse_config({
        "state_dir": str(tmp_path / "state"), "fact_file": str(tmp_path / "moodle.fact"),
        "engine": "mariadb", "web_user": "www-data", "php": "php",
        "php_fpm_service": "php-fpm", "wwwroot": "https://moodle.test",
        "colours": {c: {"db_name": f"moodle_{c}", "dataroot": str(tmp_path / c),
                        "code_link": str(tmp_path / f"code-{c}"), "backend_port": p}
                    for c, p in (("blue", 8081), ("green", 8082))},
        "upstream_dir": "/nonexistent", "upstream_link": "/nonexistent/link",
        "proxies": [], "copy_tool": ["true"],
        "mariadb": {"defaults_extra_file": str(srv.cnf)},
    })


def table(srv: Server, db: str) -> list[str]:
    assert db in ("moodle_blue", "moodle_green")
    return srv.sql(f"SELECT id, v, HEX(b) FROM {db}.mdl_log ORDER BY id").splitlines()  # noqa: S608



def live_blue(tmp_path: Path, server: Server) -> tuple[Ctx, list[str]]:
    """The program's context on a site whose live colour is blue; the notes it logs."""
    notes: list[str] = []
    ctx = Ctx(config=config(tmp_path, server), runner=SubprocessRunner(),
              http=None,  # type: ignore[arg-type]
              plan={"live": "blue", "idle": "green", "fact": {}}, data={}, attempts={},
              log=notes.append)
    return ctx, notes

def test_precopy_then_replay_brings_every_change_and_nothing_else(
        tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # The database role's [client] group holds default-character-set, which mariadb-binlog
    # does not know: every client reads ~/.my.cnf as it reads the system's option files.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".my.cnf").write_text("[client]\ndefault-character-set = utf8mb4\n")
    monkeypatch.setenv("HOME", str(home))
    server.sql(
        "DROP DATABASE IF EXISTS moodle_blue; DROP DATABASE IF EXISTS moodle_green;"
        "DROP DATABASE IF EXISTS other_site;"
        "CREATE DATABASE moodle_blue; CREATE DATABASE moodle_green; CREATE DATABASE other_site;"
        "CREATE TABLE moodle_blue.mdl_log (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
        " v VARCHAR(50), b LONGBLOB) ENGINE=InnoDB;"
        "CREATE TABLE other_site.t (id INT PRIMARY KEY);"
        "INSERT INTO moodle_blue.mdl_log (v) VALUES ('before 1'), ('before 2'), ('gone')")
    ctx, notes = live_blue(tmp_path, server)
    pre = precopy_db(ctx)
    assert pre["mode"] == "binlog", pre
    assert pre["file"].startswith("mariadb-bin.") and pre["pos"] > 0
    assert table(server, "moodle_green") == table(server, "moodle_blue")

    # The site goes on serving: inserts, an update, a delete, binary data, another database.
    server.sql(
        "INSERT INTO moodle_blue.mdl_log (v, b) VALUES ('during', 0x00FF27225C0A);"
        "UPDATE moodle_blue.mdl_log SET v = 'before 2, edited' WHERE v = 'before 2';"
        "DELETE FROM moodle_blue.mdl_log WHERE v = 'gone';"
        "INSERT INTO other_site.t VALUES (1)")
    ctx.data["precopy_db"] = pre
    ctx.attempts["copy_db"] = 1
    out = copy_db(ctx)

    assert out["mode"] == "binlog", (out, notes)
    assert out["events"] == 3 and notes == []
    assert table(server, "moodle_green") == table(server, "moodle_blue")
    assert "during" in "\n".join(table(server, "moodle_green"))
    assert server.sql("SELECT COUNT(*) FROM other_site.t") == "1"  # not applied twice
    # The replay did not go into the binary log itself (--disable-log-bin).
    again = precopy_db(ctx)  # a fresh pre-copy: the idle copy matches the live one
    assert again["mode"] == "binlog"
    assert table(server, "moodle_green") == table(server, "moodle_blue")


def test_expired_coordinates_copy_whole(tmp_path: Path, server: Server) -> None:
    server.sql("DROP DATABASE IF EXISTS moodle_blue; DROP DATABASE IF EXISTS moodle_green;"
               "CREATE DATABASE moodle_blue; CREATE DATABASE moodle_green;"
               "CREATE TABLE moodle_blue.mdl_log (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
               " v VARCHAR(50), b LONGBLOB); INSERT INTO moodle_blue.mdl_log (v) VALUES ('a')")
    ctx, notes = live_blue(tmp_path, server)
    pre = precopy_db(ctx)
    server.sql("INSERT INTO moodle_blue.mdl_log (v) VALUES ('after the pre-copy');"
               "FLUSH BINARY LOGS")
    current = server.sql("SHOW MASTER STATUS").split("\t")[0]
    # The server keeps a file until its InnoDB checkpoint passed it: purge until it is gone.
    for _ in range(100):
        server.sql(f"PURGE BINARY LOGS TO '{current}'")
        if pre["file"] not in server.sql("SHOW BINARY LOGS"):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"{pre['file']} could not be purged")
    ctx.data["precopy_db"] = pre
    out = copy_db(ctx)
    assert out["mode"] == "full" and "is gone" in out["why"]
    assert len(notes) == 1 and "copied whole at the freeze" in notes[0]
    assert table(server, "moodle_green") == table(server, "moodle_blue")
