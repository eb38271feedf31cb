#!/usr/bin/env python3
"""Build the systemd base image of a test host, once per recipe.

The test bed cannot pull images on our build machines, so the Debian 12 and 13 images
are made with debootstrap from the mirror that this machine's own apt configuration
names (for a release it does not name, the URI of another Debian release's entry), and
imported into Docker. Where a registry is reachable, Rocky Linux 9 and
Ubuntu 24.04 images are built from the Dockerfile in their recipe folder.

The image is tagged ``mjp-testbed-<distro>:<recipe hash>`` and ``:latest``; it is
rebuilt only when a file of its recipe (or this script) changes.

Usage: build_image.py [--force] DISTRO
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "images"
IMAGE_PREFIX = "mjp-testbed-"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def recipe_hash(distro: str) -> str:
    """Hash every file of the recipe plus this script: the image's identity."""
    digest = hashlib.sha256()
    files = sorted(p for p in (RECIPES / distro).rglob("*") if p.is_file())
    for path in [*files, Path(__file__).resolve()]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if fields:
            yield fields


def mirror_from_apt_config(texts: Iterable[tuple[str, str]], suite: str) -> str | None:
    """Return the archive URI that apt uses for ``suite`` (main archive, not security).

    ``texts`` holds (file name, content) pairs: one-line ``.list`` files and
    deb822 ``.sources`` files are both understood.
    """
    for name, text in texts:
        if name.endswith(".sources"):
            for stanza in _deb822_stanzas(text):
                types = stanza.get("types", "").split()
                suites = stanza.get("suites", "").split()
                if "deb" in types and suite in suites and stanza.get("uris"):
                    return stanza["uris"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    return None


# Debian's release code names, oldest first: every one is on the same archive, so a
# machine whose apt sources name only bookworm still tells us where trixie lives.
DEBIAN_SUITES = ("buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid")


def mirror_for_suite(texts: Iterable[tuple[str, str]], suite: str) -> str | None:
    """Return the archive URI for ``suite``, derived from another Debian release if need be.

    When the apt configuration names ``suite`` itself, its URI is taken. Otherwise, for a
    Debian suite, the URI of the main archive entry of another Debian release (its plain
    code name, not -updates or -security) is used: Debian serves all releases from one
    archive. Anything else (Ubuntu, a suite apt does not know) gives None.
    """
    texts = list(texts)
    mirror = mirror_from_apt_config(texts, suite)
    if mirror or suite not in DEBIAN_SUITES:
        return mirror
    for other in DEBIAN_SUITES:
        if other != suite:
            mirror = mirror_from_apt_config(texts, other)
            if mirror:
                return mirror
    return None


def _read_apt_config() -> list[tuple[str, str]]:
    texts: list[tuple[str, str]] = []
    for source in APT_SOURCES:
        paths = sorted(source.glob("*")) if source.is_dir() else [source]
        for path in paths:
            if path.is_file() and path.suffix in {".list", ".sources"}:
                texts.append((path.name, path.read_text(errors="replace")))
    return texts


def _run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]  # noqa: S603


def image_exists(ref: str) -> bool:
    result = subprocess.run(  # noqa: S603
        ["docker", "image", "inspect", ref],  # noqa: S607
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def build_debootstrap(distro: str, ref: str) -> None:
    recipe = RECIPES / distro
    suite = (recipe / "suite").read_text().strip()
    packages = ",".join((recipe / "packages").read_text().split())
    mirror = os.environ.get("MJP_APT_MIRROR") or mirror_for_suite(_read_apt_config(), suite)
    if not mirror:
        sys.exit(
            f"no apt mirror for {suite} found in this machine's apt configuration; "
            "set MJP_APT_MIRROR to the archive URI"
        )
    if shutil.which("debootstrap") is None:
        sys.exit("debootstrap is missing: run testbed/bootstrap.sh first")
    with tempfile.TemporaryDirectory(prefix="mjp-rootfs-") as tmp:
        root = Path(tmp) / "root"
        _run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(root), mirror]
        )
        shutil.copy(recipe / "setup.sh", root / "root/mjp-setup.sh")
        _run(["chroot", str(root), "/bin/sh", "/root/mjp-setup.sh", mirror, suite])
        (root / "root/mjp-setup.sh").unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)  # noqa: S603, S607
        _run(
            [
                "docker", "import",
                "--change", 'CMD ["/lib/systemd/systemd"]',
                "--change", f"LABEL org.opencontainers.image.title={distro}-systemd-testbed",
                "-", ref,
            ],
            stdin=tar.stdout,
        )
        if tar.wait() != 0:
            sys.exit("tar of the root file system failed")


def build_dockerfile(distro: str, ref: str) -> None:
    _run(["docker", "build", "--tag", ref, str(RECIPES / distro)])


def main(argv: list[str] | None = None) -> int:
    try:
        return _build(argv)
    except subprocess.CalledProcessError as err:
        print(f"build_image: {err.cmd[0]} failed with exit code {err.returncode}", file=sys.stderr)
        return 1


def _build(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("distro", choices=sorted(p.name for p in RECIPES.iterdir() if p.is_dir()))
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)

    name = IMAGE_PREFIX + args.distro
    ref = f"{name}:{recipe_hash(args.distro)}"
    if image_exists(ref) and not args.force:
        print(f"{ref} is up to date (cached)")
    elif (RECIPES / args.distro / "Dockerfile").exists():
        build_dockerfile(args.distro, ref)
    else:
        build_debootstrap(args.distro, ref)
    _run(["docker", "tag", ref, f"{name}:latest"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
