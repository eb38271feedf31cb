"""The learning-log proxy end to end: a notebook launched through LTI from "Moodle" with the
web-service token, cells run over the kernel websocket as JupyterLab runs them, and the
records land in mod_lticontainer's tables through Moodle's REST web service; a wrong token
is refused by Moodle and records nothing; with Moodle unreachable for the proxy the
notebook keeps working and the proxy reports the dropped records, and records again once
Moodle is back.

Needs jupyterhub_logproxy_enabled on the hubs (demo inventory) and the moodle_webservice
role in site.yml. The launches run ON hub1 (ltihub's launch helpers, aiohttp for the
websocket), the checks of the tables on moodle1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
import uuid
from typing import Any

import pytest

testinfra_hosts = ["ansible://hub1"]

VENV = "/opt/jupyterhub"
MOODLE = "https://moodle1"
MOODLE_CA = "/etc/ltihub/logproxy-moodle-ca.pem"
REST = "/webservice/rest/server.php?wsfunction=mod_lticontainer_write_nblogs&wstoken="
PROXY_ACCOUNT = "ltihub-logproxy"
# A table of its own, deleted afterwards (the hub's firewall table stays untouched): the
# proxy's account gets a TCP reset for anything it sends to port 443, which only its
# posts to Moodle do (browsers' connections come in, and CHP is on another port).
OUTAGE_TABLE = "mjp_logproxy_outage_test"
OUTAGE = (
    f"nft add table inet {OUTAGE_TABLE} && "
    f"nft add chain inet {OUTAGE_TABLE} out "
    "'{ type filter hook output priority 0; policy accept; }' && "
    f"nft add rule inet {OUTAGE_TABLE} out meta skuid {PROXY_ACCOUNT} tcp dport 443 "
    "reject with tcp reset"
)

# Launch like Moodle (signed, with the activity's custom parameters), open a kernel and
# its websocket like JupyterLab (JSON text frames), run one cell that works and one that
# raises; print the kernel session id, the request ids and the reply statuses.
_RUN_CELLS = r"""
import asyncio, json, os, ssl, sys, uuid
from datetime import datetime, timezone
import aiohttp, requests
from ltihub.launch import build_launch_params, run_launch
from ltihub.oauth1 import sign_launch

HUB, CA = "https://localhost", "/etc/jupyterhub/tls/hub.crt"
user, user_id, token = sys.argv[1], sys.argv[2], os.environ["T"]
s = requests.Session(); s.verify = CA
params = build_launch_params(username=user, user_id=user_id, teacher=False, course_id="2",
    course_title="T", resource_link_id="1", moodle_url="https://moodle1",
    custom={"lms_sessioninfo": "3,7", "lms_serverurl": "https://moodle1:443",  # as the module
            "lms_serverpath": "", "lms_rpctoken": token})
form = sign_launch(HUB + "/hub/lti/launch", os.environ["K"], os.environ["S"], params)
report = run_launch(s, url=HUB + "/hub/lti/launch", hub=HUB, form=form, timeout=180,
                    poll_interval=1)
base = HUB + "/user/" + user
s.get(base + "/lab", timeout=60)
# The hub and the user's server each set an _xsrf cookie (paths /hub/ and /user/<name>/).
xsrfs = [c for c in s.cookies if c.name == "_xsrf"]
xsrf = next((c.value for c in xsrfs if (c.path or "").startswith("/user/" + user)),
            xsrfs[0].value if xsrfs else "")
kernel = s.post(base + "/api/kernels", json={"name": "python3"},
                headers={"X-XSRFToken": xsrf}, timeout=120).json()
session = uuid.uuid4().hex

async def run():
    ctx = ssl.create_default_context(cafile=CA)
    cookie = "; ".join(f"{c.name}={c.value}" for c in s.cookies)
    url = (f"wss://localhost/user/{user}/api/kernels/{kernel['id']}/channels"
           f"?session_id={session}")
    replies = {}
    async with aiohttp.ClientSession() as client:
        async with client.ws_connect(url, ssl=ctx, headers={"Cookie": cookie, "X-XSRFToken": xsrf},
                                     max_msg_size=0) as ws:
            for n, (cell, code) in enumerate((("cell-ok", "1 + 1"), ("cell-err", "1 / 0")), 1):
                msg_id = uuid.uuid4().hex
                replies[msg_id] = None
                await ws.send_str(json.dumps({
                    "header": {"msg_id": msg_id, "msg_type": "execute_request",
                               "session": session, "username": user, "version": "5.3",
                               "date": datetime.now(timezone.utc).isoformat()},
                    "parent_header": {}, "channel": "shell", "buffers": [],
                    "metadata": {"cellId": cell,
                                 "tags": ["filename: logtest.ipynb", f"codenum: {n}"]},
                    "content": {"code": code, "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": False,
                                "stop_on_error": False},
                }))
            while None in replies.values():
                msg = await asyncio.wait_for(ws.receive(), 120)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                parent = data.get("parent_header", {}).get("msg_id")
                if data.get("msg_type") == "execute_reply" and parent in replies:
                    replies[parent] = data["content"]["status"]
    return replies

replies = asyncio.run(run())
print(json.dumps({"launch": report.result, "session": session, "replies": replies}))
"""


def _moodle(host: Any) -> Any:
    return host.get_host("ansible://moodle1", ansible_inventory=host.backend.ansible_inventory)


def _webservice_token(host: Any) -> str:
    inventory = host.backend.ansible_inventory
    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)
    with open(os.path.join(base, "secrets", "moodle-webservice-token")) as handle:
        return handle.read().split()[0]


def _hub_credentials(host: Any) -> tuple[str, str]:
    out = host.check_output(
        f"{VENV}/bin/python - <<'EOF'\n"
        "import json\nfrom traitlets.config.loader import PyFileConfigLoader\n"
        "cfg = PyFileConfigLoader('jupyterhub_config.py', path='/etc/jupyterhub').load_config()\n"
        "print(json.dumps(next(iter(cfg.LTI11Authenticator.consumers.items()))))\nEOF"
    )
    key, secret = json.loads(out)
    return key, secret


def _run_cells(host: Any, user: str, user_id: str, token: str) -> dict[str, Any]:
    key, secret = _hub_credentials(host)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in (("K", key), ("S", secret), ("T", token)))
    result = host.run(
        f"{env} {VENV}/bin/python - {shlex.quote(user)} {user_id} <<'EOF'\n{_RUN_CELLS}\nEOF"
    )
    assert result.rc == 0, result.stderr[-2000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["launch"] == "ok", report
    return report


def _rows(moodle: Any, sql: str) -> list[list[str]]:
    fact = json.loads(moodle.file("/etc/ansible/facts.d/moodle.fact").content_string)
    db = fact["colours"][fact["active_colour"]]["db_name"]
    result = moodle.run(f"mariadb -N -B {db} -e {shlex.quote(sql)}")
    assert result.rc == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def _wait_rows(moodle: Any, sql: str, count: int, seconds: int = 60) -> list[list[str]]:
    deadline = time.monotonic() + seconds
    rows = _rows(moodle, sql)
    while len(rows) < count and time.monotonic() < deadline:
        time.sleep(2)
        rows = _rows(moodle, sql)
    return rows


@pytest.fixture(scope="module")
def token(host: Any) -> str:
    return _webservice_token(host)


def test_the_proxy_owns_the_public_port(host: Any) -> None:
    assert host.service("ltihub-logproxy").is_running
    assert host.service("ltihub-logproxy").is_enabled
    unit = host.file("/etc/systemd/system/jupyterhub-proxy.service").content_string
    assert "--ip=127.0.0.1" in unit and "--no-x-forward" in unit
    proxy = host.process.filter(user="ltihub-logproxy")
    assert proxy, "the learning-log proxy does not run as its own account"
    config = host.file("/etc/ltihub/logproxy.toml")
    assert config.user == "root" and config.mode == 0o644
    assert "token" not in config.content_string.replace("tokens", "")


def test_cells_are_recorded_in_moodle(host: Any, token: str) -> None:
    report = _run_cells(host, "logstud1", "301", token)
    session = report["session"]
    replies = report["replies"]
    assert sorted(replies.values()) == ["error", "ok"], replies

    moodle = _moodle(host)
    sessions = _wait_rows(
        moodle,
        "SELECT session, inst_id, lti_id FROM mdl_lticontainer_session "
        f"WHERE session = '{session}'",
        1,
    )
    assert sessions == [[session, "3", "7"]]
    clients = _wait_rows(
        moodle,
        "SELECT message, cell_id, filename FROM mdl_lticontainer_client_data "
        f"WHERE session = '{session}' ORDER BY message",
        2,
    )
    assert sorted(row[0] for row in clients) == sorted(replies)
    assert sorted(row[1] for row in clients) == ["cell-err", "cell-ok"]
    assert {row[2] for row in clients} == {"logtest.ipynb"}
    servers = _wait_rows(
        moodle,
        f"SELECT message, status FROM mdl_lticontainer_server_data WHERE session = '{session}'",
        2,
    )
    assert len(servers) == 2
    for message, status in servers:
        # Records of one session are posted in order, so no reply is stored before its
        # request (Moodle would mark its status "/nc").
        assert status == replies[message], (message, status)
    tags = _rows(
        moodle,
        "SELECT codenum FROM mdl_lticontainer_tags "
        "WHERE filename = 'logtest.ipynb' ORDER BY codenum",
    )
    assert tags == [["1"], ["2"]]


def test_a_wrong_token_is_refused_and_records_nothing(host: Any) -> None:
    wrong = uuid.uuid4().hex
    direct = host.run(
        f"curl -s --cacert {MOODLE_CA} -d 'nb_logs[0][host]=ltictr' "
        f"-d 'nb_logs[0][lti_id]=7' -d 'nb_logs[0][session]=forged' '{MOODLE}{REST}{wrong}'"
    )
    assert direct.rc == 0, direct.stderr
    assert "<ERRORCODE>invalidtoken</ERRORCODE>" in direct.stdout

    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    report = _run_cells(host, "logstud2", "302", wrong)
    assert sorted(report["replies"].values()) == ["error", "ok"], "the notebook must keep working"
    # the proxy reports in the background: wait until Moodle has answered it (the refusal
    # is logged), then nothing may have been recorded
    deadline = time.monotonic() + 30
    while "refused a learning-log record" not in (journal := _journal_since(host, since)):
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "refused a learning-log record" in journal
    assert wrong not in journal, "the token leaked into the proxy's log"
    moodle = _moodle(host)
    for table in ("lticontainer_session", "lticontainer_client_data", "lticontainer_server_data"):
        assert (
            _rows(moodle, f"SELECT id FROM mdl_{table} WHERE session = '{report['session']}'") == []
        )
    assert _rows(moodle, "SELECT id FROM mdl_lticontainer_session WHERE session = 'forged'") == []


def _curl_moodle(host: Any, as_proxy: bool) -> Any:
    runas = f"runuser -u {PROXY_ACCOUNT} -- " if as_proxy else ""
    return host.run(
        f"{runas}curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 "
        f"--cacert {MOODLE_CA} {MOODLE}/login/index.php"
    )


def _journal_since(host: Any, since: str) -> str:
    return str(host.check_output(f"journalctl -u ltihub-logproxy --since '{since}' --no-pager"))


def test_moodle_unreachable_the_notebook_keeps_working(host: Any, token: str) -> None:
    drops = re.compile(
        r"learning-log records dropped: \d+ \(queue full \d+, Moodle unreachable (\d+)\)"
    )
    host.run(f"nft delete table inet {OUTAGE_TABLE}")  # left over by an interrupted run
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.check_output(OUTAGE)
    try:
        cut = _curl_moodle(host, as_proxy=True)
        assert cut.rc == 7, ("the outage rule does not stop the proxy's account", cut.stderr)
        up = _curl_moodle(host, as_proxy=False)  # Moodle itself is up
        assert up.rc == 0 and up.stdout != "000", up.stderr

        report = _run_cells(host, "logstud1", "301", token)
        assert sorted(report["replies"].values()) == ["error", "ok"], "the notebook must work"

        # Retries with back-off (about 8-15 s per record with the defaults), then dropped,
        # warned at once or, after an earlier warning, within the minute.
        deadline = time.monotonic() + 150
        journal = _journal_since(host, since)
        while not drops.search(journal) and time.monotonic() < deadline:
            time.sleep(5)
            journal = _journal_since(host, since)
    finally:
        host.run(f"nft delete table inet {OUTAGE_TABLE}")
    match = drops.search(journal)
    assert match, journal[-3000:]
    assert int(match.group(1)) >= 1
    assert token not in journal, "the token leaked into the proxy's log"
    assert OUTAGE_TABLE not in host.check_output("nft list tables")

    # Moodle reachable again: the proxy records the next session without a restart.
    back = _curl_moodle(host, as_proxy=True)
    assert back.rc == 0 and back.stdout != "000", back.stderr
    again = _run_cells(host, "logstud1", "301", token)
    rows = _wait_rows(
        _moodle(host),
        "SELECT message, status FROM mdl_lticontainer_server_data "
        f"WHERE session = '{again['session']}'",
        2,
        seconds=150,
    )
    assert sorted(status for _, status in rows) == sorted(again["replies"].values())
