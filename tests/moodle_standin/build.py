#!/usr/bin/env python3
"""Build the Moodle TEST STAND-IN archives (this is not Moodle, see README.md).

Usage: python3 tests/moodle_standin/build.py OUTDIR

Writes, shaped like Moodle release archives (one top-level ``moodle/`` folder):

* standin-moodle-v1.tgz          4.5-like release, branch 405 (src/ as it is)
* standin-moodle-v2.tgz          newer 4.5.x whose upgrade changes the schema
* standin-moodle-v2-broken.tgz   newer 4.5.x whose upgrade step fails half way
* standin-moodle-v3-public.tgz   5.1-like release with the public/ layout
* mod_lticontainer-standin.tgz   a fake activity plugin (top-level ``lticontainer/``)

and OUTDIR/SHA256SUMS. The archives are byte-for-byte reproducible: sorted entries,
one fixed mtime, root ownership, fixed modes, and a gzip header without name or time.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Every entry of every archive gets this mtime (2024-10-07 00:00:00 UTC).
FIXED_MTIME = 1728259200

# Files that stay at the code root (next to config.php) in the 5.1 layout.
ROOT_FILES_51 = ("config-dist.php", "STANDIN-NOT-MOODLE.txt")

IGNORED_NAMES = {"__pycache__", ".DS_Store"}
IGNORED_SUFFIXES = (".pyc", ".swp", "~", ".orig", ".rej")


@dataclass(frozen=True)
class Variant:
    """One stand-in Moodle release: src/ plus overlay folders."""

    archive: str
    overlays: tuple[str, ...] = ()
    public_layout: bool = False
    root_overlay: str | None = None


VARIANTS: tuple[Variant, ...] = (
    Variant("standin-moodle-v1.tgz"),
    Variant("standin-moodle-v2.tgz", overlays=("variants/v2",)),
    Variant("standin-moodle-v2-broken.tgz", overlays=("variants/v2-broken",)),
    Variant(
        "standin-moodle-v3-public.tgz",
        overlays=("variants/v3-public/public",),
        public_layout=True,
        root_overlay="variants/v3-public/root",
    ),
)

PLUGIN_ARCHIVE = "mod_lticontainer-standin.tgz"
PLUGIN_DIR = "plugins/lticontainer"


def collect(base: Path) -> dict[str, bytes]:
    """Return {posix path relative to base: content} for the files under base."""
    if not base.is_dir():
        raise FileNotFoundError(f"missing folder: {base}")
    files: dict[str, bytes] = {}
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        if any(part in IGNORED_NAMES for part in rel.parts) or path.name.endswith(IGNORED_SUFFIXES):
            continue
        if path.is_file():
            files[rel.as_posix()] = path.read_bytes()
    return files


def variant_tree(variant: Variant) -> dict[str, bytes]:
    """Return the archive members {path: content} of one stand-in release."""
    code = collect(HERE / "src")
    for overlay in variant.overlays:
        code.update(collect(HERE / overlay))
    if not variant.public_layout:
        tree = code
    else:
        tree = {}
        for rel, data in code.items():
            tree[rel if rel in ROOT_FILES_51 else f"public/{rel}"] = data
        tree["public/STANDIN-NOT-MOODLE.txt"] = code["STANDIN-NOT-MOODLE.txt"]
        if variant.root_overlay:
            tree.update(collect(HERE / variant.root_overlay))
    return {f"moodle/{rel}": data for rel, data in tree.items()}


def plugin_tree() -> dict[str, bytes]:
    return {f"lticontainer/{rel}": data for rel, data in collect(HERE / PLUGIN_DIR).items()}


def _tarinfo(name: str, is_dir: bool, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if is_dir:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = size
    return info


def tgz_bytes(members: dict[str, bytes]) -> bytes:
    """Return a reproducible .tgz holding the members and all their parent folders."""
    folders: set[str] = set()
    for name in members:
        parts = name.split("/")[:-1]
        folders.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(folders | set(members)):
            if name in members:
                data = members[name]
                tar.addfile(_tarinfo(name, False, len(data)), io.BytesIO(data))
            else:
                tar.addfile(_tarinfo(name, True))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build(outdir: Path) -> dict[str, str]:
    """Write every archive and SHA256SUMS into outdir; return {archive: sha256}."""
    outdir.mkdir(parents=True, exist_ok=True)
    archives: dict[str, bytes] = {v.archive: tgz_bytes(variant_tree(v)) for v in VARIANTS}
    archives[PLUGIN_ARCHIVE] = tgz_bytes(plugin_tree())
    sums: dict[str, str] = {}
    for name, data in archives.items():
        write_atomically(outdir / name, data)
        sums[name] = hashlib.sha256(data).hexdigest()
    listing = "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))
    write_atomically(outdir / "SHA256SUMS", listing.encode())
    return sums


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the Moodle test stand-in archives (not Moodle)."
    )
    parser.add_argument(
        "outdir", type=Path, help="folder to write the .tgz files and SHA256SUMS into"
    )
    args = parser.parse_args(argv)
    for name, digest in sorted(build(args.outdir).items()):
        print(f"{digest}  {args.outdir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
