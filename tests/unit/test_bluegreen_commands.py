"""Commands the blue-green program builds (MariaDB binary-log replay, PostgreSQL template
copy), the real subprocess runner on harmless local commands, and the CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ltihub.upgrade.__main__ import main
from ltihub.upgrade.config import parse_config
from ltihub.upgrade.db import (
    BinlogPos,
    MariaDBCommands,
    PositionTap,
    PostgresCommands,
    TableMapCounter,
    count_writes_sql,
    ident,
)
from ltihub.upgrade.host import Cmd, CommandFailed, Result, SubprocessRunner


def config_dict(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "state_dir": str(tmp_path / "state"), "fact_file": str(tmp_path / "moodle.fact"),
        "engine": "mariadb", "web_user": "www-data", "php": "/usr/bin/php",
        "php_fpm_service": "php8.2-fpm", "wwwroot": "https://moodle.test/",
        "colours": {c: {"db_name": f"moodle_{c}", "dataroot": str(tmp_path / c),
                        "code_link": f"/srv/moodle/{c}", "backend_port": p}
                    for c, p in (("blue", 8081), ("green", 8082))},
        "upstream_dir": "/etc/nginx/moodle-upstreams",
        "upstream_link": "/etc/nginx/conf.d/moodle-upstream.conf",
        "proxies": [{"name": "moodle1"}], "copy_tool": ["python3", "/x.py"],
        **extra,
    }


def test_binlog_replay_rewrites_the_database_and_keeps_the_password_out_of_argv(
        tmp_path: Path) -> None:
    cfg = parse_config(config_dict(
        tmp_path, mariadb={"defaults_extra_file": "/etc/mjp/bluegreen.cnf"}))
    m = MariaDBCommands(cfg)
    producer, consumer = m.replay("moodle_blue", "moodle_green", BinlogPos("b.000007", 4711),
                                  BinlogPos("b.000008", 120),
                                  ["/var/lib/mysql/b.000007", "/var/lib/mysql/b.000008"])
    assert producer.argv == (
        "mariadb-binlog", "--no-defaults", "--disable-log-bin", "--database=moodle_blue",
        "--rewrite-db=moodle_blue->moodle_green", "--start-position=4711",
        "--stop-position=120", "/var/lib/mysql/b.000007", "/var/lib/mysql/b.000008")
    assert consumer.argv == ("mariadb", "--defaults-extra-file=/etc/mjp/bluegreen.cnf",
                             "--binary-mode", "moodle_green")
    dump = m.dump("moodle_blue", with_position=True)
    assert dump.argv[1] == "--defaults-extra-file=/etc/mjp/bluegreen.cnf"  # must come first
    assert "--master-data=2" in dump.argv and "--single-transaction" in dump.argv
    load = m.load("moodle_green")
    assert "--init-command=SET sql_log_bin=0" in load.argv
    for cmd in (producer, consumer, dump, load, m.recreate("moodle_green")):
        assert not any("password" in a.lower() or a.startswith("-p") for a in cmd.argv)


def test_flush_scan_and_replay_on_the_other_name(tmp_path: Path) -> None:
    m = MariaDBCommands(parse_config(config_dict(
        tmp_path, mariadb={"defaults_extra_file": "/etc/mjp/bluegreen.cnf",
                           "binlog": "/usr/bin/mariadb-binlog"})))
    assert m.flush_binary_logs().argv == (
        "mariadb", "--defaults-extra-file=/etc/mjp/bluegreen.cnf", "--batch",
        "--skip-column-names", "-e", "FLUSH BINARY LOGS")
    start, stop = BinlogPos("b.000007", 4711), BinlogPos("b.000008", 120)
    scan, sink = m.scan(start, stop, ["/d/b.000007", "/d/b.000008"])
    assert scan.argv == ("/usr/bin/mariadb-binlog", "--no-defaults", "--start-position=4711",
                         "--stop-position=120", "/d/b.000007", "/d/b.000008")
    assert sink.argv == ("cat",) and sink.stdout_file == os.devnull
    producer, _ = m.replay("moodle_blue", "moodle_green", start, stop, ["/d/b.000007"],
                           filter_db="moodle_green")
    assert "--database=moodle_green" in producer.argv
    assert "--rewrite-db=moodle_blue->moodle_green" in producer.argv
    with pytest.raises(ValueError):
        m.replay("moodle_blue", "moodle_green", start, stop, [], filter_db="x; DROP")


def test_table_map_counter_counts_one_database_across_chunks() -> None:
    text = (b"#261129 13:58:46 server id 1  end_log_pos 1268 CRC32 0x6609ac2e \tTable_map: "
            b"`moodle_green`.`mdl_x` mapped to number 18\nBINLOG '\nTable_map: `moodle_gr'\n"
            b"# at 1\n#2611 \tTable_map: `moodle_greenish`.`t` mapped to number 19\n"
            b"#2611 \tTable_map: `moodle_green`.`mdl_y` mapped to number 20")
    for size in (1, 5, 64, len(text)):
        counter = TableMapCounter("moodle_green")
        for i in range(0, len(text), size):
            assert counter(text[i:i + size]) is True  # it watches the whole stream
        assert counter.finish() == 2


def test_position_tap_reads_the_dump_header() -> None:
    tap = PositionTap()
    assert tap(b"-- MariaDB dump 10.19\n--\n-- CHANGE MASTER TO MASTER_LOG_") is True
    assert tap(b"FILE='mariadb-bin.000003', MASTER_LOG_POS=328;\nCREATE TABLE") is False
    assert tap.found == BinlogPos("mariadb-bin.000003", 328)


def test_postgresql_copies_with_a_template_as_postgres_with_a_passfile(tmp_path: Path) -> None:
    cfg = parse_config(config_dict(tmp_path, engine="postgresql",
                                   postgresql={"passfile": "/etc/mjp/pgpass", "owner": "moodle"}))
    cmd = PostgresCommands(cfg).copy_template("moodle_blue", "moodle_green")
    assert cmd.argv[:4] == ("runuser", "-u", "postgres", "--")
    assert 'CREATE DATABASE "moodle_green" TEMPLATE "moodle_blue" OWNER "moodle"' in cmd.argv
    assert cmd.env == {"PGPASSFILE": "/etc/mjp/pgpass"}


def test_identifiers_are_checked() -> None:
    with pytest.raises(ValueError):
        ident("moodle`; DROP DATABASE x; --")
    sql = count_writes_sql("mariadb", "moodle_blue", "mdl_",
                           {"mdl_log": ["timecreated"], "mdl_user": ["timemodified",
                                                                     "timecreated"]}, 1700)
    assert sql == ("SELECT 'mdl_log', COUNT(*) FROM `mdl_log` WHERE `timecreated` >= 1700 "
                   "UNION ALL SELECT 'mdl_user', COUNT(*) FROM `mdl_user` WHERE "
                   "`timecreated` >= 1700 OR `timemodified` >= 1700")


def test_subprocess_runner_pipes_and_taps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[bytes] = []

    def tap(chunk: bytes) -> bool:
        seen.append(chunk)
        return False

    runner = SubprocessRunner()
    runner.pipe(Cmd((sys.executable, "-c", "print('hello ' * 3)")),
                Cmd(("cat",), stdout_file=str(out)), tap=tap)
    assert out.read_text() == "hello hello hello \n"
    assert seen and seen[0].startswith(b"hello")
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    with pytest.raises(CommandFailed, match="exit 3"):
        runner.pipe(Cmd((sys.executable, "-c", "import sys; sys.exit(3)")), Cmd(("cat",)))
    result = runner.run(Cmd((sys.executable, "-c", "print('x')")))
    assert result.stdout == "x\n"


def test_no_space_is_recognised() -> None:
    err = CommandFailed("cp", Result(1, "", "cp: error writing 'x': No space left on device"))
    assert err.no_space
    assert not CommandFailed("cp", Result(1, "", "permission denied")).no_space


def test_cli_status_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bluegreen.json"
    fact = {"active_colour": "blue", "colours": {"blue": {"release_id": "v1"}}}
    (tmp_path / "moodle.fact").write_text(json.dumps(fact))
    path.write_text(json.dumps(config_dict(tmp_path)))
    os.chmod(path, 0o600)
    assert main(["status", "--config", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["live"] == "blue" and out["interrupted"] is False
    assert out["colours"]["green"]["role"] == "idle"
    path.write_text("{}")
    assert main(["upgrade", "--config", str(path)]) == 3
    assert "colours" in json.loads(capsys.readouterr().out)["error"]
