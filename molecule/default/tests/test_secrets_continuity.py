"""Secrets continuity (issue 13 item 5): a run that would use a newly generated secret on
a host that already uses another one stops with a clear message, and changes nothing.

As an operator who lost a file of the controller's secrets folder would see it: the file
is moved aside on the controller, the roles' own guard (the `secrets` task file each role
runs first) is run with ansible-playbook --check against the deployed host, the run
must stop naming the secret and both ways out; with the rotation accepted it passes; the
file is put back afterwards whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub" / "tests"))
from hubtest import run_play  # noqa: E402

testinfra_hosts = ["ansible://moodle"]

FINGERPRINTS = "/etc/mjp/secret-fingerprints"

PLAYBOOK = """\
- name: Run only a role's secrets guard
  hosts: "{{ target }}"
  gather_facts: false
  tasks:
    - name: The guard, as the role runs it
      ansible.builtin.include_role:
        name: "{{ guarded_role }}"
        tasks_from: secrets
"""


def _inventory() -> str:
    return os.environ["MOLECULE_INVENTORY_FILE"]


def _secrets_dir() -> Path:
    inventory = _inventory()
    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)
    return Path(base) / "secrets"


def run_guard(
    tmp_path: Path, target: str, role: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return run_play(
        tmp_path, PLAYBOOK, "--check", "-e", f"target={target}", "-e", f"guarded_role={role}",
        *extra, molecule_config=False, timeout=300,
    )


def _hub(host: Any) -> str:
    return str(sorted(host.ansible.get_variables()["groups"]["jupyterhub"])[0])


def _moodle(host: Any) -> str:
    return str(host.ansible.get_variables()["inventory_hostname"])


CASES = [
    # (controller file under secrets/, role, fingerprint name, host: "hub" or "moodle")
    ("{hub}/moodle_api_token.txt", "jupyterhub", "jupyterhub-moodle-api-token", "hub"),
    ("{hub}/lti_consumer_secret.txt", "jupyterhub", "jupyterhub-lti-consumers", "hub"),
    ("moodle-db-password", "moodle", "moodle-db-password", "moodle"),
    ("moodle-backup-restic-password", "moodle_backup", "moodle-backup-restic-password", "moodle"),
]


@pytest.mark.parametrize("case", CASES, ids=[case[2] for case in CASES])
def test_a_lost_secret_stops_the_run(host: Any, tmp_path: Path, case: tuple[str, ...]) -> None:
    relative, role, name, kind = case
    target = _hub(host) if kind == "hub" else _moodle(host)
    path = _secrets_dir() / relative.format(hub=_hub(host))
    original = path.read_text()
    aside = path.with_name("." + path.name + ".moved-by-test")
    os.replace(path, aside)
    try:
        stopped = run_guard(tmp_path, target, role)
        output = stopped.stdout + stopped.stderr
        assert stopped.returncode != 0, output
        # the run generated a new value, and that is what the guard refused
        assert path.exists() and path.read_text() != original
        assert name in output and str(path.parent) in output and path.name in output
        assert "restore the secrets folder" in output
        assert f"mjp_secrets_accept_rotation={name}" in output
        assert original.strip() not in output and path.read_text().strip() not in output

        # the operator accepts the rotation (check mode: nothing is written)
        accepted = run_guard(tmp_path, target, role, "-e", f"mjp_secrets_accept_rotation={name}")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    finally:
        os.replace(aside, path)
    assert path.read_text() == original

    # the old value back: the guard is quiet again
    restored = run_guard(tmp_path, target, role)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "changed=0" in restored.stdout


def test_fingerprints_are_root_only_and_hold_no_secret(host: Any) -> None:
    hub = host.get_host(f"ansible://{_hub(host)}", ansible_inventory=host.backend.ansible_inventory)
    for on, name, relative in (
        (hub, "jupyterhub-moodle-api-token", f"{_hub(host)}/moodle_api_token.txt"),
        (host, "moodle-db-password", "moodle-db-password"),
    ):
        folder = on.file(FINGERPRINTS)
        assert folder.is_directory and folder.user == "root" and folder.mode == 0o700
        fingerprint = on.file(f"{FINGERPRINTS}/{name}")
        assert fingerprint.user == "root" and fingerprint.mode == 0o600
        secret = (_secrets_dir() / relative).read_text().strip()
        assert secret and secret not in fingerprint.content_string
