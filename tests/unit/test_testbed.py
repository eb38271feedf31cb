"""The test bed's image builder: which mirror it picks and when it rebuilds."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed"))

import build_image  # noqa: E402
import build_notebook_base  # noqa: E402

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


def test_trixie_mirror_is_derived_from_the_bookworm_entry() -> None:
    texts = [("debian.sources", DEB822)]
    assert build_image.mirror_from_apt_config(texts, "trixie") is None
    assert build_image.mirror_for_suite(texts, "trixie") == "http://mirror.invalid/debian"


def test_a_named_suite_keeps_its_own_uri() -> None:
    texts = [
        ("debian.sources", DEB822),
        ("trixie.list", "deb http://other.invalid/debian trixie main\n"),
    ]
    assert build_image.mirror_for_suite(texts, "trixie") == "http://other.invalid/debian"
    assert build_image.mirror_for_suite(texts, "bookworm") == "http://mirror.invalid/debian"


def test_no_derived_mirror_for_security_only_or_non_debian_sources() -> None:
    security_only = [
        ("s.list", "deb http://mirror.invalid/debian-security bookworm-security main\n"),
    ]
    assert build_image.mirror_for_suite(security_only, "trixie") is None
    ubuntu = [("u.sources", "Types: deb\nURIs: http://x.invalid/ubuntu\nSuites: noble\n")]
    assert build_image.mirror_for_suite(ubuntu, "trixie") is None
    assert build_image.mirror_for_suite([("debian.sources", DEB822)], "noble") is None


def test_debian13_recipe_matches_debian12() -> None:
    images = Path(__file__).resolve().parents[2] / "testbed" / "images"
    for name in ("packages", "setup.sh"):
        assert (images / "debian13" / name).read_text() == (images / "debian12" / name).read_text()
    assert (images / "debian13" / "suite").read_text().strip() == "trixie"
    texts = [("debian.sources", DEB822)]
    assert build_image.mirror_for_suite(texts, (images / "debian13" / "suite").read_text().strip())


def test_notebook_base_archive_is_named_by_the_roles_own_hash() -> None:
    """The test bed's prebuilt base is found only if both compute the same hash."""
    import jinja2
    import yaml

    repo = Path(__file__).resolve().parents[2]
    role = repo / "roles" / "notebook_images"
    suite, packages = build_notebook_base.recipe((role / "defaults" / "main.yml").read_text())
    assert suite and "python3" in packages
    expression = yaml.safe_load((role / "vars" / "main.yml").read_text())[
        "notebook_images_local_base_hash"
    ]
    env = jinja2.Environment(autoescape=False)  # noqa: S701 - not HTML
    env.filters["hash"] = lambda text, algorithm: hashlib.new(algorithm, text.encode()).hexdigest()
    role_hash = env.from_string(expression).render(
        notebook_images_local_base_suite=suite,
        notebook_images_local_base_packages=list(reversed(packages)),
    ).strip()
    assert build_notebook_base.base_hash(suite, packages) == role_hash
    archive = build_notebook_base.archive_path(suite, packages, Path("/cache"))
    assert archive == Path(f"/cache/{suite}-{role_hash[:12]}.tar.gz")


def test_notebook_base_hash_changes_with_the_package_list() -> None:
    one = build_notebook_base.base_hash("bookworm", ["python3", "sudo"])
    assert build_notebook_base.base_hash("bookworm", ["sudo", "python3"]) == one
    assert build_notebook_base.base_hash("bookworm", ["python3"]) != one
    assert build_notebook_base.base_hash("trixie", ["python3", "sudo"]) != one
