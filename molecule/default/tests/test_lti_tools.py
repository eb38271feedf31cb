"""Each hub is an LTI 1.1 external tool in Moodle, registered through Moodle's own API."""

from __future__ import annotations

import json
import shlex

testinfra_hosts = ["ansible://moodle"]


def _db_name(host) -> str:
    fact = json.loads(host.file("/etc/ansible/facts.d/moodle.fact").content_string)
    return str(fact["colours"][fact["active_colour"]]["db_name"])


def _tools(host) -> dict[str, dict[str, str]]:
    db = _db_name(host)
    sql = (
        f"SELECT t.name, t.baseurl, t.state, t.coursevisible, c.name, c.value "
        f"FROM {db}.mdl_lti_types t LEFT JOIN {db}.mdl_lti_types_config c ON c.typeid = t.id"
    )
    result = host.run(f"mariadb -N -B -e {shlex.quote(sql)}")
    assert result.rc == 0, result.stderr
    tools: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        name, baseurl, state, visible, key, value = line.split("\t")
        tools.setdefault(name, {"baseurl": baseurl, "state": state, "coursevisible": visible})
        tools[name][key] = value
    return tools


def test_one_tool_per_hub_with_url_and_key(host, controller_secret):
    tools = _tools(host)
    hubs = sorted(host.ansible.get_variables()["groups"]["jupyterhub"])
    for hub in hubs:
        tool = tools[f"JupyterHub {hub}"]
        assert tool["baseurl"] == f"https://{hub}/hub/lti/launch"
        assert tool["resourcekey"] == controller_secret(hub, "lti_consumer_key.txt")
        assert tool["state"] == "1", "the tool is not configured (active)"
        assert tool["coursevisible"] == "2", "the tool is not in the activity chooser"
        assert tool["sendname"] == "1", "Moodle does not share the launcher's name"
        assert tool["mjphub"] == hub
    assert len([name for name in tools if name.startswith("JupyterHub ")]) == len(hubs)


def test_registration_script_is_not_writable_by_the_web_user(host):
    script = host.file("/usr/local/lib/mjp/lti_tools.php")
    assert script.user == "root"
    assert script.mode & 0o022 == 0
