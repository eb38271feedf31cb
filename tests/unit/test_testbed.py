"""The test bed's image builder: which mirror it picks and when it rebuilds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed"))

import build_image  # noqa: E402

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_sources() -> None:
    texts = [("debian.sources", DEB822)]
    assert build_image.mirror_from_apt_config(texts, "bookworm") == "http://mirror.invalid/debian"
    assert (
        build_image.mirror_from_apt_config(texts, "bookworm-security")
        == "http://mirror.invalid/debian-security"
    )


def test_mirror_from_one_line_list_with_options() -> None:
    text = "# deb http://old.invalid/debian bookworm main\n" \
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian/ bookworm main\n"
    assert build_image.mirror_from_apt_config([("sources.list", text)], "bookworm") == (
        "http://mirror.invalid/debian"
    )


def test_deb_src_and_other_suites_are_not_taken() -> None:
    texts = [
        ("a.list", "deb-src http://src.invalid/debian bookworm main\n"),
        ("b.sources", "Types: deb\nURIs: http://x.invalid/ubuntu\nSuites: noble\n"),
    ]
    assert build_image.mirror_from_apt_config(texts, "bookworm") is None


def test_recipe_hash_follows_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "distro"
    recipe.mkdir()
    (recipe / "packages").write_text("python3\n")
    monkeypatch.setattr(build_image, "RECIPES", tmp_path)
    first = build_image.recipe_hash("distro")
    assert build_image.recipe_hash("distro") == first
    (recipe / "packages").write_text("python3\nsystemd\n")
    assert build_image.recipe_hash("distro") != first
