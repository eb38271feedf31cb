"""The stand-in's web-service contract and roles/moodle_webservice/files/webservice.php.

Runs where PHP (with pdo_mysql) and a MariaDB server are at hand, like the other
stand-in tests (they skip otherwise); the molecule scenarios run the script on the Moodle
host through the role and post records to it through the hubs' learning-log proxy.
"""

# ruff: noqa: S603, S607, S105, S608

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import test_standin
from test_standin import Response, Site, installed_v1

archives = test_standin.archives
dbserver = test_standin.dbserver
site = test_standin.site

SCRIPT = Path(__file__).resolve().parents[2] / "roles/moodle_webservice/files/webservice.php"
TOKEN = "0123456789abcdef0123456789abcdef"
FUNCTION = "mod_lticontainer_write_nblogs"
WANTED = {
    "token": TOKEN,
    "service": "mod_lticontainer",
    "protocol": "rest",
    "capabilities": ["webservice/rest:use", "mod/lticontainer:db_write"],
    "user": {
        "username": "mjp_learninglog",
        "firstname": "Learning log",
        "lastname": "proxy",
        "email": "",
    },
    "role": {"shortname": "mjp_learninglog", "name": "Learning-log proxy", "description": "x"},
}


def _with_plugin(site: Site) -> Path:
    code = installed_v1(site)
    with tarfile.open(site.archives / "mod_lticontainer-standin.tgz") as tar:
        tar.extractall(code / "mod", filter="data")
    upgrade = site.php(code, "admin/cli/upgrade.php", "--non-interactive")
    assert upgrade.code == 0, upgrade
    return code


def _setup(code: Path, wanted: dict[str, object] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["php", str(SCRIPT), f"--config={code / 'config.php'}"],
        input=json.dumps(wanted or WANTED),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ok(code: Path, wanted: dict[str, object] | None = None) -> dict[str, object]:
    proc = _setup(code, wanted)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr, "the token leaked into the output"
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _post(site: Site, token: str, record: dict[str, str], function: str = FUNCTION) -> Response:
    data = {f"nb_logs[0][{key}]": value for key, value in record.items()}
    return site.http(f"/webservice/rest/server.php?wsfunction={function}&wstoken={token}", data)


def _rows(site: Site, table: str, columns: str) -> list[list[str]]:
    return site.db.sql(f"SELECT {columns} FROM mdl_{table} ORDER BY id", site.dbname)


def test_setup_is_idempotent_and_limited(site: Site) -> None:
    code = _with_plugin(site)
    first = _ok(code)
    assert first["changed"] is True
    assert "token created" in first["actions"]  # type: ignore[operator]
    second = _ok(code)
    assert second == {**second, "changed": False, "actions": []}

    config = dict(
        site.db.sql(
            "SELECT name, value FROM mdl_config "
            "WHERE name IN ('enablewebservices', 'webserviceprotocols')",
            site.dbname,
        )
    )
    assert config == {"enablewebservices": "1", "webserviceprotocols": "rest"}
    user = site.db.sql(
        "SELECT id, auth, password, suspended FROM mdl_user WHERE username = 'mjp_learninglog'",
        site.dbname,
    )
    assert [row[1:] for row in user] == [["webservice", "not cached", "0"]]
    userid = user[0][0]
    caps = site.db.sql(
        "SELECT rc.capability, rc.permission FROM mdl_role_capabilities rc JOIN mdl_role r "
        "ON r.id = rc.roleid WHERE r.shortname = 'mjp_learninglog' ORDER BY rc.capability",
        site.dbname,
    )
    assert caps == [["mod/lticontainer:db_write", "1"], ["webservice/rest:use", "1"]]
    assert site.db.sql(
        f"SELECT s.shortname, s.enabled, s.restrictedusers FROM mdl_external_services s "
        f"JOIN mdl_external_services_users u ON u.externalserviceid = s.id "
        f"WHERE u.userid = {userid}",
        site.dbname,
    ) == [["mod_lticontainer", "1", "1"]]
    assert site.db.sql(
        f"SELECT token, tokentype, LENGTH(privatetoken) FROM mdl_external_tokens "
        f"WHERE userid = {userid}",
        site.dbname,
    ) == [[TOKEN, "0", "64"]]

    # A token changed on the controller replaces the old one.
    rotated = _ok(code, {**WANTED, "token": "f" * 32})
    assert rotated["changed"] is True
    assert site.db.sql(
        f"SELECT token FROM mdl_external_tokens WHERE userid = {userid}", site.dbname
    ) == [["f" * 32]]


def test_setup_needs_the_module(site: Site) -> None:
    code = installed_v1(site)
    proc = _setup(code)
    assert proc.returncode == 3
    assert "mod/lticontainer:db_write" in proc.stderr
    bad = _setup(code, {**WANTED, "token": "short"})
    assert bad.returncode == 2


def test_records_land_in_the_module_tables(site: Site) -> None:
    code = _with_plugin(site)
    _ok(code)
    site.serve(code)

    opened = _post(site, TOKEN, {"host": "ltictr", "inst_id": "3", "lti_id": "7", "session": "s-1"})
    assert opened.status == 200, opened.body
    assert opened.body == (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n<SINGLE>\n</SINGLE>\n</RESPONSE>\n'
    )
    tags = json.dumps(["filename: ex1.ipynb", "codenum: 2"])
    client = {
        "host": "client",
        "session": "s-1",
        "message": "m-1",
        "cell_id": "c-1",
        "tags": tags,
        "date": "2026-11-30T10:00:00.000000Z",
    }
    assert "<ERRORCODE>" not in _post(site, TOKEN, client).body
    reply = {
        "host": "server",
        "session": "s-1",
        "message": "m-1",
        "status": "ok",
        "username": "student1",
        "date": "2026-11-30T10:00:01.000000Z",
    }
    assert "<ERRORCODE>" not in _post(site, TOKEN, reply).body
    orphan = {**reply, "message": "m-unknown", "status": "error"}
    assert "<ERRORCODE>" not in _post(site, TOKEN, orphan).body

    assert _rows(site, "lticontainer_session", "session, course, inst_id, lti_id") == [
        ["s-1", "0", "3", "7"]
    ]
    assert _rows(
        site, "lticontainer_client_data", "session, message, cell_id, filename, updatetm"
    ) == [["s-1", "m-1", "c-1", "ex1.ipynb", "1796032800"]]
    assert _rows(site, "lticontainer_server_data", "session, message, status, username") == [
        ["s-1", "m-1", "ok", "student1"],
        ["s-1", "m-unknown", "error/nc", "student1"],
    ]
    assert _rows(site, "lticontainer_tags", "cell_id, filename, codenum") == [
        ["c-1", "ex1.ipynb", "2"]
    ]

    # The same session opened again is stored once.
    _post(site, TOKEN, {"host": "ltictr", "inst_id": "3", "lti_id": "7", "session": "s-1"})
    assert len(_rows(site, "lticontainer_session", "id")) == 1


def test_refusals(site: Site) -> None:
    code = _with_plugin(site)
    _ok(code)
    site.serve(code)
    record = {"host": "ltictr", "inst_id": "3", "lti_id": "7", "session": "s-2"}

    bad = _post(site, "0" * 32, record)
    assert bad.status == 200
    assert "<ERRORCODE>invalidtoken</ERRORCODE>" in bad.body
    json_bad = site.http(
        f"/webservice/rest/server.php?wsfunction={FUNCTION}&wstoken=x&moodlewsrestformat=json",
        {"nb_logs[0][host]": "ltictr"},
    )
    assert json.loads(json_bad.body)["errorcode"] == "invalidtoken"
    other = _post(site, TOKEN, record, function="core_user_get_users")
    assert "<ERRORCODE>" in other.body
    unknown = _post(site, TOKEN, {**record, "evil": "1"})
    assert "<ERRORCODE>invalidparameter</ERRORCODE>" in unknown.body
    assert _rows(site, "lticontainer_session", "id") == []

    # The account loses its role's capability: refused.
    site.db.sql(
        "DELETE FROM mdl_role_capabilities WHERE capability = 'webservice/rest:use'", site.dbname
    )
    assert "<ERRORCODE>accessexception</ERRORCODE>" in _post(site, TOKEN, record).body
    _ok(code)
    assert "<ERRORCODE>" not in _post(site, TOKEN, record).body

    # Not authorised on the service any more: refused.
    site.db.sql("DELETE FROM mdl_external_services_users", site.dbname)
    assert "<ERRORCODE>accessexception</ERRORCODE>" in _post(site, TOKEN, record).body
    _ok(code)

    # Web services off: 403 with an empty body, as Moodle's server.php.
    site.db.sql("UPDATE mdl_config SET value = '0' WHERE name = 'enablewebservices'", site.dbname)
    off = _post(site, TOKEN, record)
    assert (off.status, off.body) == (403, "")
    assert _ok(code)["actions"] == ["web services enabled"]
    assert _post(site, TOKEN, record).status == 200
