"""The hub roles install exactly the versions this package is tested against."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _defaults(role: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    assert isinstance(data, dict)
    return data


def _hub_extra() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(project["project"]["optional-dependencies"]["hub"])


def _pinned_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {d for d in project["project"]["dependencies"] if "==" in d}


def test_hub_venv_pins_equal_the_hub_extra() -> None:
    pins = set(_defaults("jupyterhub")["jupyterhub_pip_packages"])
    assert _hub_extra() <= pins, "roles/jupyterhub pins differ from pyproject's hub extra"
    known = _hub_extra() | _pinned_dependencies()
    extra = {p for p in pins - known if not p.startswith("setuptools==")}
    assert not extra, f"hub venv packages missing from pyproject's hub extra: {extra}"


def test_hub_venv_has_ltihubs_pinned_dependencies() -> None:
    """The log proxy and the engine guard run from the hub venv: aiohttp at ltihub's pin."""
    pins = set(_defaults("jupyterhub")["jupyterhub_pip_packages"])
    assert _pinned_dependencies() <= pins


def test_notebook_image_runs_the_hubs_jupyterhub() -> None:
    hub = next(p for p in _hub_extra() if p.startswith("jupyterhub=="))
    image = _defaults("notebook_images")["notebook_images_jupyterhub_version"]
    assert hub == f"jupyterhub=={image}"


def test_default_image_is_the_built_one() -> None:
    images = _defaults("notebook_images")
    built = f"{images['notebook_images_name']}:{images['notebook_images_tag']}"
    assert _defaults("jupyterhub")["jupyterhub_default_image"] == built
    assert "jupyterhub" in images["notebook_images_name"]
