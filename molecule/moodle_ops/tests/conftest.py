"""Helpers shared by the Moodle operations tests (blue-green upgrades, backups).

The tests run the operator's playbooks themselves, against molecule's inventory, and look
at the result on the host as an operator would: the front page through the proxy, the
stand-in's content listing, the database, the local fact.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SUFFIX = os.environ.get("MJP_INSTANCE_SUFFIX", "")
HOST = f"ops-moodle1{SUFFIX}"
PUBLIC = f"https://{HOST}"
WEB_USER = "www-data"
STANDIN_DIR = REPO / ".cache" / "moodle-standin"


@dataclass
class PlaybookRun:
    """What an operator sees of a playbook run: exit code, output, and the recap."""

    rc: int
    output: str

    @property
    def changed(self) -> int:
        """Sum of changed= over the hosts of the PLAY RECAP."""
        total = 0
        recap = self.output.split("PLAY RECAP", 1)[-1]
        for word in recap.split():
            if word.startswith("changed="):
                total += int(word.split("=", 1)[1])
        return total


def run_playbook(name: str, **extra_vars: Any) -> PlaybookRun:
    """ansible-playbook playbooks/<name> against molecule's inventory, as an operator would."""
    env = dict(os.environ)
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
    if ephemeral and Path(ephemeral, "ansible.cfg").is_file():
        env["ANSIBLE_CONFIG"] = str(Path(ephemeral, "ansible.cfg"))
    env["ANSIBLE_ROLES_PATH"] = str(REPO / "roles")
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    argv = ["ansible-playbook", "-i", inventory, str(REPO / "playbooks" / name)]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    proc = subprocess.run(  # noqa: S603 - our own playbooks, argument list
        argv, env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    output = proc.stdout + proc.stderr
    print(output[-6000:])  # shown by pytest when a test fails
    return PlaybookRun(proc.returncode, output)


def fact(host: Any) -> dict[str, Any]:
    """The Moodle host's local fact (/etc/ansible/facts.d/moodle.fact)."""
    return dict(json.loads(host.file("/etc/ansible/facts.d/moodle.fact").content_string))


def colour_dirroot(host: Any, colour: str | None = None) -> str:
    """The web root of a colour (the active one by default)."""
    data = fact(host)
    entry = data["colours"][colour or data["active_colour"]]
    return str(entry["release_dir"]) + ("/public" if entry["public_layout"] else "")


def standin(host: Any, args: str, colour: str | None = None) -> Any:
    """Run the stand-in's content script (standin_content.php) as the web user."""
    script = colour_dirroot(host, colour) + "/admin/cli/standin_content.php"
    return host.run(f"runuser -u {WEB_USER} -- php {shlex.quote(script)} {args}")


def content(host: Any, colour: str | None = None) -> dict[str, Any]:
    """Rows, files and versions of a colour, as the stand-in lists them."""
    result = standin(host, "--list", colour)
    assert result.rc == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def front_page(host: Any) -> tuple[int, str]:
    """Status and body of the public front page, fetched through the proxy on the host."""
    result = host.run(f"curl -sk --max-time 20 -o /tmp/front.html -w '%{{http_code}}' {PUBLIC}/")
    body = host.file("/tmp/front.html").content_string if result.rc == 0 else ""
    return int(result.stdout or 0), body


def db(host: Any, sql: str) -> str:
    """One query as root over the local socket; tab-separated output."""
    result = host.run(f"mariadb -N -B -e {shlex.quote(sql)}")
    assert result.rc == 0, result.stderr
    return str(result.stdout.strip())


@pytest.fixture(scope="session")
def standin_archives() -> Path:
    """The stand-in archives built by the scenario's prepare step."""
    assert (STANDIN_DIR / "standin-moodle-v2.tgz").is_file(), "run the scenario's prepare first"
    return STANDIN_DIR
