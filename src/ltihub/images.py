"""Which image a launch really starts: the activity's choice checked against the engine.

mod_lticontainer offers the teacher the images present on the hub's engine (``docker
images``) and sends the choice lower-cased as ``repo : tag``, or the image ID for an
untagged image.  :func:`resolve_image` finds that image on the engine and returns the
reference to start.  An image that is not present is refused: nothing is ever pulled
for an activity.

The engine is reached through an async ``docker(method, *args)`` callable, as
DockerSpawner's ``docker`` method is (docker-py's ``APIClient`` methods run in a
thread), so this module holds no client of its own and is tested with a fake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from . import validate as v
from .policy import HubPolicy

DockerCall = Callable[..., Awaitable[Any]]


def _is_not_found(exc: BaseException) -> bool:
    """docker-py's NotFound/ImageNotFound (HTTP 404), without importing docker here."""
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status == 404 or type(exc).__name__ in ("NotFound", "ImageNotFound")


def _repo_tags(info: Mapping[str, Any]) -> tuple[str, ...]:
    tags = info.get("RepoTags") or ()
    return tuple(str(tag) for tag in tags if isinstance(tag, str) and "<none>" not in tag)


async def _inspect(docker: DockerCall, reference: str) -> Mapping[str, Any] | None:
    try:
        info = await docker("inspect_image", reference)
    except Exception as exc:
        if _is_not_found(exc):
            return None
        raise
    return info if isinstance(info, Mapping) else None


def _case_insensitive_tag(image: str, listing: Sequence[Mapping[str, Any]]) -> str | None:
    """The engine's own spelling of ``image`` (the module lower-cases ``Repo:Tag``)."""
    wanted = {image} if v.image_has_tag(image) else {image, image + ":latest"}
    found = sorted({tag for info in listing for tag in _repo_tags(info) if tag.lower() in wanted})
    return found[0] if len(found) == 1 else None


async def resolve_image(docker: DockerCall, image: str, policy: HubPolicy) -> str:
    """The reference to start for the activity's ``image`` (already normalised).

    Raises :class:`~ltihub.errors.LaunchRefused` when the image is not on the engine,
    or when the hub offers only its configured images (``any_present_image`` off) and
    none of the image's names is the default or matches ``allowed_images``.  Engine
    errors other than "not found" propagate (the spawn fails as any engine error does).
    """
    info = await _inspect(docker, image)
    reference = image
    if info is None and not v.is_image_id(image):
        listing = await docker("images")
        exact = _case_insensitive_tag(image, listing if isinstance(listing, list) else [])
        if exact is not None:
            info = await _inspect(docker, exact)
            reference = exact
    if info is None:
        raise v.image_not_present(image)

    is_id = v.is_image_id(image) and not any(
        tag == image or tag.startswith(image + ":") for tag in _repo_tags(info)
    )
    names = _repo_tags(info) if is_id else (reference,)
    if not policy.any_present_image and not v.image_matches(
        names, policy.allowed_images, policy.default_image
    ):
        raise v.image_not_offered(image)
    if is_id:
        image_id = info.get("Id")
        return str(image_id) if isinstance(image_id, str) and image_id else image
    return reference
