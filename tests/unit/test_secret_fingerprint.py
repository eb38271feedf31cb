"""Secrets continuity (issue 13 item 5): fingerprints of the generated secrets on the hosts
stop a run that would silently rotate them.

The first part tests ltihub.secret_fingerprint directly; the second runs the role
secrets_guard (its Ansible module, the linked module_utils and its task file) with
ansible-playbook on localhost, with the fingerprints in a temporary folder.
"""

# Every "secret" below is a made-up test value.
# ruff: noqa: S105, S106, S107

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_local import ANSIBLE_PLAYBOOK, run_playbook

from ltihub.secret_fingerprint import (
    ACCEPT_VARIABLE,
    Fingerprint,
    FingerprintError,
    GuardResult,
    Secret,
    guard,
    read_fingerprint,
    refusal_message,
)

REPO = Path(__file__).resolve().parents[2]
FAST = 1000  # PBKDF2 iterations in the direct tests (the module uses the real count)

DB = "moodle-db-password"
TOKEN = "jupyterhub-moodle-api-token"


def secrets(db: str = "db-secret-1", token: str = "token-secret-1") -> list[Secret]:
    return [
        Secret(DB, db, "/inv/secrets/moodle-db-password"),
        Secret(TOKEN, token, "/inv/secrets/hub1/moodle_api_token.txt"),
    ]


def run_guard(
    directory: Path, items: list[Secret], *accept: str, write: bool = True
) -> GuardResult:
    return guard(directory, items, frozenset(accept), write=write, iterations=FAST)


# ---- the fingerprint itself ---------------------------------------------------------------
def test_fingerprint_tells_the_same_value_from_another() -> None:
    fingerprint = Fingerprint.of("s3cret-value", iterations=FAST)
    assert fingerprint.matches("s3cret-value")
    assert not fingerprint.matches("s3cret-valuE")
    assert not fingerprint.matches("")


def test_fingerprint_survives_its_file_format() -> None:
    fingerprint = Fingerprint.of("s3cret-value", iterations=FAST, created="2026-01-02T03:04:05Z")
    again = Fingerprint.from_text(fingerprint.to_text())
    assert again == fingerprint
    assert again.matches("s3cret-value")


def test_fingerprint_is_salted_and_reveals_nothing_of_the_secret() -> None:
    secret = "correct-horse-battery-staple"
    first = Fingerprint.of(secret, iterations=FAST)
    second = Fingerprint.of(secret, iterations=FAST)
    assert first.salt != second.salt and first.digest != second.digest
    text = first.to_text()
    assert secret not in text
    assert base64.b64encode(secret.encode()).decode() not in text
    # not a plain hash either: the same secret unsalted gives another digest
    assert hashlib.sha256(secret.encode()).digest() != first.digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        json.dumps({"algorithm": "md5", "iterations": 1, "salt": "AA==", "digest": "AA=="}),
        json.dumps({"algorithm": "pbkdf2-sha256", "iterations": 0, "salt": "AA==",
                    "digest": base64.b64encode(bytes(32)).decode()}),
        json.dumps({"algorithm": "pbkdf2-sha256", "iterations": 5, "salt": "%%%",
                    "digest": base64.b64encode(bytes(32)).decode()}),
        json.dumps({"algorithm": "pbkdf2-sha256", "iterations": 5, "salt": "AA==",
                    "digest": "AA=="}),
    ],
)
def test_a_damaged_fingerprint_file_is_an_error(text: str) -> None:
    with pytest.raises(FingerprintError):
        Fingerprint.from_text(text)


# ---- the guard ----------------------------------------------------------------------------
def test_first_run_records_root_only_fingerprints(tmp_path: Path) -> None:
    directory = tmp_path / "fp"
    result = run_guard(directory, secrets())
    assert result.recorded == [DB, TOKEN] and result.changed and not result.refused
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name, value in ((DB, "db-secret-1"), (TOKEN, "token-secret-1")):
        path = directory / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert value not in path.read_text()
        fingerprint = read_fingerprint(path)
        assert fingerprint is not None and fingerprint.matches(value)
    assert sorted(os.listdir(directory)) == sorted([DB, TOKEN])  # no temporary files left


def test_same_values_change_nothing(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    before = {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    result = run_guard(tmp_path, secrets())
    assert result.unchanged == [DB, TOKEN]
    assert not result.changed and not result.refused
    assert {p.name: (p.read_text(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_a_new_value_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    extra = Secret("jupyterhub-cookie-secret", "cookie")  # new one in the same run
    result = run_guard(tmp_path, [*secrets(db="db-secret-NEW"), extra])
    assert result.refused and not result.changed
    assert [m.name for m in result.mismatched] == [DB]
    assert result.unchanged == [TOKEN]
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before  # not even the new one


def test_accepted_rotation_renews_the_fingerprint(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    result = run_guard(tmp_path, secrets(db="db-secret-NEW"), DB)
    assert result.rotated == [DB] and result.changed and not result.refused
    fingerprint = read_fingerprint(tmp_path / DB)
    assert fingerprint is not None and fingerprint.matches("db-secret-NEW")
    # and the next run with the new value is quiet again
    assert run_guard(tmp_path, secrets(db="db-secret-NEW")).unchanged == [DB, TOKEN]


def test_accepting_all_rotates_every_changed_secret(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    result = run_guard(tmp_path, secrets(db="new-1", token="new-2"), "all")
    assert result.rotated == [DB, TOKEN] and not result.refused


def test_accepting_another_name_does_not_accept_this_one(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    result = run_guard(tmp_path, secrets(db="new-1", token="new-2"), TOKEN)
    assert result.refused and [m.name for m in result.mismatched] == [DB]
    fingerprint = read_fingerprint(tmp_path / TOKEN)
    assert fingerprint is not None and fingerprint.matches("token-secret-1")  # not written


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "fp"
    result = run_guard(directory, secrets(), write=False)
    assert result.recorded == [DB, TOKEN] and result.changed
    assert not directory.exists()


def test_empty_values_are_skipped(tmp_path: Path) -> None:
    result = run_guard(tmp_path, [Secret("unused", "")])
    assert result.skipped == ["unused"] and not result.changed
    assert not (tmp_path / "unused").exists()


def test_a_damaged_fingerprint_stops_the_run(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    (tmp_path / DB).write_text("garbage")
    result = run_guard(tmp_path, secrets())
    assert result.refused
    assert "unreadable" in result.mismatched[0].reason
    assert run_guard(tmp_path, secrets(), DB).rotated == [DB]  # unless accepted


@pytest.mark.parametrize("name", ["../etc/passwd", "Upper", "", "a/b", ".hidden", "x" * 101])
def test_names_must_be_plain_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="secret name"):
        run_guard(tmp_path, [Secret(name, "v")])


def test_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="given twice"):
        run_guard(tmp_path, [Secret(DB, "a"), Secret(DB, "b")])


def test_refusal_names_the_secret_the_file_and_both_ways_out(tmp_path: Path) -> None:
    run_guard(tmp_path, secrets())
    result = run_guard(tmp_path, secrets(db="db-secret-NEW", token="token-NEW"))
    message = refusal_message(result.mismatched, str(tmp_path))
    assert DB in message and TOKEN in message
    assert "/inv/secrets/moodle-db-password" in message
    assert "restore the secrets folder" in message
    assert f"-e {ACCEPT_VARIABLE}={DB},{TOKEN}" in message
    for value in ("db-secret-NEW", "token-NEW", "db-secret-1", "token-secret-1"):
        assert value not in message


# ---- the role, through ansible-playbook ---------------------------------------------------
needs_ansible = pytest.mark.skipif(
    not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not installed"
)

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: secrets_guard
      vars:
        secrets_guard_secrets:
          - {name: moodle-db-password, value: "{{ db }}", file: /inv/secrets/moodle-db-password}
          - {name: jupyterhub-moodle-api-token, value: "{{ token }}"}
    - ansible.builtin.debug:
        msg: "after the guard"
"""


def run_role(
    tmp_path: Path, db: str, token: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "guard.yml"
    playbook.write_text(PLAYBOOK)
    settings = tmp_path / "vars.json"  # secrets in a file, not in this test's argv
    settings.write_text(json.dumps({
        "db": db, "token": token,
        "secrets_guard_directory": str(tmp_path / "fp"),
        "ansible_python_interpreter": sys.executable,
    }))
    return run_playbook(playbook, "-e", f"@{settings}", *extra, cwd=tmp_path)


@needs_ansible
def test_role_records_then_stays_quiet_then_stops_on_a_new_value(tmp_path: Path) -> None:
    first = run_role(tmp_path, "db-value-one", "token-value-one")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "changed=1" in first.stdout
    assert stat.S_IMODE((tmp_path / "fp" / DB).stat().st_mode) == 0o600

    again = run_role(tmp_path, "db-value-one", "token-value-one")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "changed=0" in again.stdout

    lost = run_role(tmp_path, "db-value-two", "token-value-one")
    output = lost.stdout + lost.stderr
    assert lost.returncode != 0, output
    assert "after the guard" not in output
    assert "moodle-db-password" in output and "/inv/secrets/moodle-db-password" in output
    assert f"{ACCEPT_VARIABLE}=moodle-db-password" in output
    for value in ("db-value-one", "db-value-two", "token-value-one"):
        assert value not in output

    # check mode with the rotation accepted passes and writes nothing
    checked = run_role(tmp_path, "db-value-two", "token-value-one", "--check",
                       "-e", f"{ACCEPT_VARIABLE}=moodle-db-password")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    fingerprint = read_fingerprint(tmp_path / "fp" / DB)
    assert fingerprint is not None and fingerprint.matches("db-value-one")

    rotated = run_role(tmp_path, "db-value-two", "token-value-one",
                       "-e", f"{ACCEPT_VARIABLE}=moodle-db-password")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    fingerprint = read_fingerprint(tmp_path / "fp" / DB)
    assert fingerprint is not None and fingerprint.matches("db-value-two")
