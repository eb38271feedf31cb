"""roles/moodle_lti_tools/files/lti_tools.php against an installed stand-in site.

Runs where PHP and a MariaDB server are at hand (like the other stand-in tests); the
molecule scenarios run it on the Moodle host through the role.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import test_standin
from test_standin import Site, installed_v1

# The stand-in's fixtures, shared with this module.
archives = test_standin.archives
dbserver = test_standin.dbserver
site = test_standin.site

SCRIPT = Path(__file__).resolve().parents[2] / "roles/moodle_lti_tools/files/lti_tools.php"
HUB1 = {"hub": "hub1", "url": "https://hub1/hub/lti/launch", "key": "k" * 32, "secret": "s" * 64}
HUB2 = {"hub": "hub2", "url": "https://hub2/hub/lti/launch", "key": "q" * 32, "secret": "t" * 64}


def _register(code: Path, tools: list[dict[str, str]]) -> dict[str, object]:
    wanted = {"prefix": "JupyterHub", "launchcontainer": 4, "tools": tools}
    proc = subprocess.run(  # noqa: S603
        ["php", str(SCRIPT), f"--config={code / 'config.php'}"],  # noqa: S607
        input=json.dumps(wanted), capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "s" * 64 not in proc.stdout + proc.stderr, "the secret leaked into the output"
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def _types(site: Site, code: Path) -> dict[str, dict[str, str]]:
    body = """
require_once($CFG->dirroot . '/mod/lti/locallib.php');
$out = [];
foreach ($DB->get_records('lti_types') as $t) {
    $out[$t->name] = ['baseurl' => $t->baseurl, 'state' => $t->state,
        'coursevisible' => $t->coursevisible] + lti_get_type_config($t->id);
}
echo json_encode($out);
"""
    result = site.php_code(code, body)
    assert result.code == 0, result
    types: dict[str, dict[str, str]] = json.loads(result.out)
    return types


def test_one_tool_per_hub_idempotent_and_disabled_when_gone(site: Site) -> None:
    code = installed_v1(site)

    first = _register(code, [HUB1, HUB2])
    assert first["changed"] is True
    types = _types(site, code)
    assert types["JupyterHub hub1"]["baseurl"] == HUB1["url"]
    assert types["JupyterHub hub1"]["resourcekey"] == HUB1["key"]
    assert types["JupyterHub hub1"]["password"] == HUB1["secret"]
    assert types["JupyterHub hub1"]["sendname"] == "1"
    assert str(types["JupyterHub hub2"]["state"]) == "1"
    assert str(types["JupyterHub hub2"]["coursevisible"]) == "2"

    assert _register(code, [HUB1, HUB2])["changed"] is False

    rotated = dict(HUB1, secret="r" * 64)
    assert _register(code, [rotated, HUB2])["changed"] is True
    assert _types(site, code)["JupyterHub hub1"]["password"] == "r" * 64

    gone = _register(code, [rotated])
    assert gone["changed"] is True
    types = _types(site, code)
    assert str(types["JupyterHub hub2"]["state"]) == "2", "hub2's tool is not disabled"
    assert str(types["JupyterHub hub2"]["coursevisible"]) == "0"
    assert len(types) == 2, "a tool was deleted"
    assert _register(code, [rotated])["changed"] is False

    back = _register(code, [rotated, HUB2])
    assert back["changed"] is True
    assert str(_types(site, code)["JupyterHub hub2"]["state"]) == "1"
