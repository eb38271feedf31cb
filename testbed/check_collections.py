#!/usr/bin/env python3
"""Make sure the collections pinned in requirements.yml are there.

The pinned PyPI ``ansible`` package bundles them, so normally nothing happens.
Only a missing or different collection is installed from Galaxy; where Galaxy is
unreachable this reports what differs and carries on if every collection exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent


def installed_collections() -> dict[str, str]:
    out = subprocess.run(  # noqa: S603
        [str(BIN / "ansible-galaxy"), "collection", "list", "--format", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    found: dict[str, str] = {}
    for path_entries in json.loads(out).values():
        for name, info in path_entries.items():
            found.setdefault(name, info.get("version", "*"))
    return found


def main(requirements: str) -> int:
    wanted = {c["name"]: str(c.get("version", "*"))
              for c in yaml.safe_load(Path(requirements).read_text())["collections"]}
    have = installed_collections()
    missing = sorted(n for n in wanted if n not in have)
    differ = sorted(n for n in wanted if n in have and wanted[n] not in ("*", have[n]))
    if not missing and not differ:
        return 0
    result = subprocess.run(  # noqa: S603
        [str(BIN / "ansible-galaxy"), "collection", "install", "-r", requirements], check=False
    )
    if result.returncode == 0:
        return 0
    for name in differ:
        print(f"warning: {name} {have[name]} is installed, requirements.yml pins {wanted[name]}")
    if missing:
        print(f"error: missing collections {', '.join(missing)} and Galaxy is unreachable",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements.yml"))
