"""Bad Moodle settings are refused by the moodle role's checks before anything changes.

Runs the role's `validate` entry point (what site.yml's Moodle play runs first, as a
pre-task) with ansible-playbook on localhost in check mode, nothing else.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from ansible_local import ANSIBLE_PLAYBOOK, run_playbook

REPO = Path(__file__).resolve().parents[2]

GOOD: dict[str, object] = {
    "moodle_version": "4.5.1",
    "moodle_wwwroot": "https://moodle.example.edu",
    "moodle_admin_email": "admin@example.edu",
    "moodle_php_version": "8.2",
}


def run_validate(tmp_path: Path, **overrides: object) -> subprocess.CompletedProcess[str]:
    archive = tmp_path / "moodle-4.5.1.tgz"
    archive.write_bytes(b"not really an archive; validate only checks it exists")
    settings = {
        **GOOD,
        "moodle_source": "local",
        "moodle_archive_local": str(archive),
        "mjp_secrets_dir": str(tmp_path / "secrets"),
        **overrides,
    }
    playbook = tmp_path / "validate.yml"
    playbook.write_text(
        "- hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - ansible.builtin.include_role:\n"
        "        name: moodle\n"
        "        tasks_from: validate\n"
    )
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(settings))
    return run_playbook(playbook, "--check", "-e", f"@{extra}", cwd=tmp_path)


pytestmark = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not installed"
)


def test_good_settings_pass(tmp_path: Path) -> None:
    result = run_validate(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "changed=0" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"moodle_version": "4.5.x"}, "moodle_version must be the Moodle release you deploy"),
        ({"moodle_version": "latest"}, "moodle_version must be the Moodle release you deploy"),
        ({"moodle_wwwroot": ""}, "moodle_wwwroot must be the public URL of the site"),
        ({"moodle_wwwroot": "https://moodle.example.edu/"}, "without a trailing slash"),
        (
            {"moodle_version": "4.2", "moodle_php_version": "8.3"},
            "Moodle 4.2 runs on PHP 8.0 to 8.2, but this host gets PHP 8.3",
        ),
        (
            {"moodle_version": "5.1", "moodle_php_version": "8.1"},
            "Moodle 5.1 runs on PHP 8.2 to 8.4, but this host gets PHP 8.1",
        ),
        ({"moodle_version": "3.9"}, "Moodle 3.9 (moodle_version 3.9) is not a release"),
        ({"moodle_source": "ftp"}, "moodle_source"),
        ({"moodle_archive_local": "/nonexistent/moodle.tgz"}, "does not exist on the controller"),
        ({"moodle_admin_email": "not-an-address"}, "Need a valid moodle_admin_email"),
        (
            {"moodle_plugins": [{"component": "lticontainer", "source": "local",
                                 "archive_local": "/x.tgz"}]},
            "needs a component like mod_lticontainer",
        ),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    result = run_validate(tmp_path, **overrides)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output
    assert message in output, output
    assert "changed=0" in output
