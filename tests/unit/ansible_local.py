"""Runs a small playbook of a unit test with this repository's roles on localhost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def run_playbook(playbook: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """ansible-playbook -i localhost, ARGS PLAYBOOK with the repository's roles and config."""
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(  # noqa: S603 - our own playbook, argument list
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", *args, str(playbook)],
        capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=180,
    )
