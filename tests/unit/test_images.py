"""resolve_image against a fake engine: present images start, absent ones are refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ltihub.errors import LaunchRefused
from ltihub.images import resolve_image
from ltihub.policy import HubPolicy

LAB_ID = "sha256:" + "ab" * 32
LOOSE_ID = "sha256:" + "ef" * 32
IMAGES: list[dict[str, Any]] = [
    {"Id": LAB_ID, "RepoTags": ["jupyterhub/lab:4.6.6"]},
    {"Id": LOOSE_ID, "RepoTags": ["<none>:<none>"]},
    {"Id": "sha256:" + "12" * 32, "RepoTags": ["Course/Lab:V1"]},
]


class NotFound(Exception):
    status_code = 404


class Engine:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error

    async def __call__(self, method: str, *args: Any) -> Any:
        self.calls.append(method)
        if self.error is not None:
            raise self.error
        if method == "images":
            return IMAGES
        assert method == "inspect_image", method
        ref = args[0]
        for info in IMAGES:
            if ref in info["RepoTags"] or info["Id"] == ref or info["Id"][7:].startswith(ref):
                return info
        raise NotFound(ref)


def resolve(image: str, **policy: Any) -> str:
    return asyncio.run(resolve_image(Engine(), image, HubPolicy(**policy)))


def test_names_and_ids_resolve_to_what_docker_starts() -> None:
    assert resolve("jupyterhub/lab:4.6.6") == "jupyterhub/lab:4.6.6"
    assert resolve("course/lab:v1") == "Course/Lab:V1"
    assert resolve("abababababab") == LAB_ID
    assert resolve(LOOSE_ID) == LOOSE_ID


def test_absent_image_refused_without_pull() -> None:
    engine = Engine()
    with pytest.raises(LaunchRefused, match="which is not on this JupyterHub"):
        asyncio.run(resolve_image(engine, "jupyterhub/lab:5", HubPolicy()))
    assert set(engine.calls) == {"inspect_image", "images"}


def test_patterns_only_hub() -> None:
    strict = {"any_present_image": False, "allowed_images": ("jupyterhub/*",)}
    assert resolve("abababababab", **strict) == LAB_ID  # its tag matches
    with pytest.raises(LaunchRefused, match="does not offer"):
        resolve(LOOSE_ID, **strict)  # untagged: no name to match
    with pytest.raises(LaunchRefused, match="does not offer"):
        resolve("course/lab:v1", **strict)


def test_engine_errors_are_not_turned_into_refusals() -> None:
    with pytest.raises(ConnectionError):
        asyncio.run(resolve_image(Engine(ConnectionError("down")), "x:1", HubPolicy()))
