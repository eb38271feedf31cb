#!/usr/bin/python
"""Ansible module: compare the secrets a role is about to use with the fingerprints this
host keeps, record missing fingerprints, and refuse (refused=true, msg) when a value
changed and its rotation was not accepted. The logic is ltihub.secret_fingerprint
(src/ltihub/secret_fingerprint.py, linked here as module_utils). The values arrive in the
module's arguments (never in a process's argv) and are marked no_log."""

from __future__ import annotations

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.mjp_secret_fingerprint import (
    DEFAULT_DIRECTORY,
    Secret,
    guard,
    refusal_message,
)

DOCUMENTATION = r"""
module: mjp_secret_guard
short_description: Stop before a generated secret changes unnoticed
description:
  - Keeps one fingerprint (salted PBKDF2-HMAC-SHA256, file mode 0600) per secret in
    O(directory). A missing fingerprint is recorded; a value that differs from its
    fingerprint is refused unless its name (or C(all)) is in O(accept_rotation).
  - Never fails for a mismatch: returns C(refused) and C(msg), so a task with no_log can
    register the result and a following task can show the message.
options:
  directory:
    description: Folder of the fingerprint files.
    type: path
    default: /etc/mjp/secret-fingerprints
  secrets:
    description: The secrets to check.
    type: list
    elements: dict
    required: true
    suboptions:
      name: {description: Fingerprint file name., type: str, required: true}
      value: {description: The secret., type: str, required: true}
      file: {description: Controller file it comes from (for the message)., type: str, default: ""}
  accept_rotation:
    description: Names whose new value is accepted (fingerprint renewed); C(all) for all.
    type: list
    elements: str
    default: []
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "directory": {"type": "path", "default": DEFAULT_DIRECTORY},
            "secrets": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "value": {"type": "str", "required": True, "no_log": True},
                    "file": {"type": "str", "default": ""},
                },
            },
            "accept_rotation": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    directory = module.params["directory"]
    try:
        items = [Secret(s["name"], s["value"], s["file"] or "") for s in module.params["secrets"]]
        result = guard(
            Path(directory),
            items,
            frozenset(module.params["accept_rotation"]),
            write=not module.check_mode,
        )
    except (ValueError, OSError) as exc:
        # Shown by the role's next task (this one runs with no_log): names and paths only.
        module.exit_json(changed=False, refused=True, msg=f"secrets guard: {exc}")
    module.exit_json(
        changed=result.changed,
        refused=result.refused,
        recorded=result.recorded,
        unchanged=result.unchanged,
        rotated=result.rotated,
        skipped=result.skipped,
        mismatched=[m.name for m in result.mismatched],
        msg=refusal_message(result.mismatched, directory) if result.refused else "ok",
    )


if __name__ == "__main__":
    main()
