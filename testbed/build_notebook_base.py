#!/usr/bin/env python3
"""Make the root file system of the notebook images' local base once on this machine.

Role notebook_images with ``notebook_images_local_base: true`` (the test bed has no
registry) bases the notebook image on a minimal Debian with Python. Instead of each hub
running debootstrap, the test bed makes that root file system once here, as
``.cache/notebook-base/<suite>-<hash>.tar.gz``, named with the role's own hash of its
suite and package list (``notebook_images_local_base_hash``); the hubs copy and import it
(``notebook_images_local_base_archive_dir`` in inventories/demo). The archive is written
whole or not at all, and rebuilt only when the role's package list changes.

Usage: build_notebook_base.py [--force]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from build_image import _read_apt_config, _run, mirror_for_suite

REPO = Path(__file__).resolve().parents[1]
ROLE_DEFAULTS = REPO / "roles" / "notebook_images" / "defaults" / "main.yml"
CACHE_DIR = REPO / ".cache" / "notebook-base"


def recipe(defaults_text: str) -> tuple[str, list[str]]:
    """The suite and package list of the local base, from the role's defaults."""
    data = yaml.safe_load(defaults_text)
    suite = str(data["notebook_images_local_base_suite"])
    packages = [str(p) for p in data["notebook_images_local_base_packages"]]
    return suite, packages


def base_hash(suite: str, packages: list[str]) -> str:
    """The role's ``notebook_images_local_base_hash``: sha1 of ``suite:sorted,packages``.

    Jinja's ``sort`` ignores case by default, hence the key.
    """
    text = suite + ":" + ",".join(sorted(packages, key=str.lower))
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - an identity, as in the role


def archive_path(suite: str, packages: list[str], folder: Path) -> Path:
    return folder / f"{suite}-{base_hash(suite, packages)[:12]}.tar.gz"


def build(force: bool) -> int:
    suite, packages = recipe(ROLE_DEFAULTS.read_text())
    target = archive_path(suite, packages, CACHE_DIR)
    if target.exists() and not force:
        print(f"{target.relative_to(REPO)} is up to date (cached)")
        return 0
    mirror = os.environ.get("MJP_APT_MIRROR") or mirror_for_suite(_read_apt_config(), suite)
    if not mirror:
        sys.exit(f"no apt mirror for {suite} found; set MJP_APT_MIRROR to the archive URI")
    if shutil.which("debootstrap") is None:
        sys.exit("debootstrap is missing: run testbed/bootstrap.sh first")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mjp-nbbase-", dir=CACHE_DIR) as tmp:
        root = Path(tmp) / "root"
        _run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                suite, str(root), mirror,
            ],
            stdout=subprocess.DEVNULL,
        )
        _run(["chroot", str(root), "apt-get", "clean"])
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        for cache in (root / "var/cache/apt").glob("*.bin"):
            cache.unlink()
        partial = Path(tmp) / target.name
        _run(["tar", "-C", str(root), "--use-compress-program=gzip -1", "-cf", str(partial), "."])
        os.replace(partial, target)  # whole or absent, never half written
    for stale in CACHE_DIR.glob("*.tar.gz"):
        if stale != target:
            stale.unlink()
    print(f"built {target.relative_to(REPO)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        return build(args.force)
    except subprocess.CalledProcessError as err:
        print(f"build_notebook_base: {err.cmd[0]} failed with exit code {err.returncode}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
