"""Strict parsers for the values a Moodle launch carries.

Every function either returns a clean value or raises :class:`LaunchRefused`
with a sentence a student can read.  ``what`` names the setting in that sentence.
"""

from __future__ import annotations

import math
import re
from fnmatch import fnmatchcase

from .errors import LaunchRefused

ASK_TEACHER = "Please tell your teacher."

_CPU_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_BYTES_RE = re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)")
_INT_RE = re.compile(r"\d+")
_VOLUME_NAME_RE = re.compile(r"[a-z0-9]{0,128}")
_USERNAME_RE = re.compile(r"[a-z0-9_][a-z0-9_.@-]{0,63}")
_GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
# An image reference as Docker reads it (lower case: the module lower-cases it), or an ID.
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_HOST = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?"
_IMAGE_NAME_RE = re.compile(
    rf"(?:{_IMAGE_HOST}/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[a-z0-9_][a-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_IMAGE_ID_RE = re.compile(r"(?:sha256:[0-9a-f]{64}|[0-9a-f]{12,64})")
_OPTION_DROP_RE = re.compile(r"[^A-Za-z0-9_.,-]")
OPTION_MAX = 100
_SESSION_RE = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*")
ACCESS_NAME_MAX_BYTES = 255
# What mod_lticontainer strips from an AccessName, plus the '/' the reference spawner strips.
ACCESS_STRIP = frozenset("*;: $!\"'&+=|\\<>?^%~`(){}[]\n\r/")
CLOSE_SUFFIX = "_close"
DEFAULT_URLS = ("/lab", "/tree")


def shown(value: str, limit: int = 60) -> str:
    """A value quoted for a message: printable and short."""
    text = "".join(ch if ch.isprintable() else "?" for ch in value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{text}'"


def parse_cpu(value: str, what: str) -> float | None:
    """CPUs as a float; None when not given.  ``0`` means no limit."""
    value = value.strip()
    if not value:
        return None
    if not _CPU_RE.fullmatch(value):
        raise LaunchRefused(
            f"The {what} of this activity, {shown(value)}, is not a number of CPUs. " + ASK_TEACHER
        )
    cpus = float(value)
    if not math.isfinite(cpus):
        raise LaunchRefused(f"The {what} of this activity is not a usable number. " + ASK_TEACHER)
    return cpus


def parse_bytes(value: str, what: str) -> int | None:
    """Bytes as an int (commas between groups of three allowed); None when not given."""
    value = value.strip()
    if not value:
        return None
    if not _BYTES_RE.fullmatch(value):
        raise LaunchRefused(
            f"The {what} of this activity, {shown(value)}, is not a number of bytes. " + ASK_TEACHER
        )
    return int(value.replace(",", ""))


def parse_int(value: str, what: str) -> int | None:
    """A non-negative whole number; None when not given."""
    value = value.strip()
    if not value:
        return None
    if not _INT_RE.fullmatch(value) or len(value) > 18:
        raise LaunchRefused(
            f"The {what} sent by Moodle, {shown(value)}, is not a whole number. " + ASK_TEACHER
        )
    return int(value)


def parse_session_info(value: str) -> tuple[str, str]:
    """``<lticontainer instance id>,<lti id>``; ('0', '0') when not given."""
    if not value.strip():
        return "0", "0"
    match = _SESSION_RE.fullmatch(value)
    if not match:
        raise LaunchRefused(
            f"The session information sent by Moodle, {shown(value)}, is not two numbers. "
            + ASK_TEACHER
        )
    return str(int(match.group(1))), str(int(match.group(2)))


def check_username(name: str) -> str:
    if not _USERNAME_RE.fullmatch(name) or ".." in name:
        raise LaunchRefused(
            f"The user name {shown(name)} cannot be used for a JupyterLab server here: "
            "only lower-case letters, digits and . _ - @ are allowed. "
            "Please ask your Moodle administrator."
        )
    return name


def check_group_name(name: str) -> str:
    if not _GROUP_RE.fullmatch(name) or ".." in name:
        raise LaunchRefused(
            f"The group name {shown(name)} cannot be used for a home directory. "
            "Please ask your Moodle administrator."
        )
    return name


def check_hostname(name: str, what: str) -> str:
    name = name.lower()
    if len(name) > 253 or not _HOST_RE.fullmatch(name):
        raise LaunchRefused(f"The Moodle address in the {what} is not usable here. " + ASK_TEACHER)
    return name


def parse_volume_key(rest: str, *, submit: bool) -> tuple[str, bool] | None:
    """The part after ``lms_vol_``/``lms_sub_``/``lms_prs_``: (name, is close time).

    mod_lticontainer builds the name from the teacher's folder name keeping only
    ``[a-z0-9]``, so it may be empty (an all-Japanese folder name). ``None`` for a
    key that cannot be parsed: mod_lti mangles a ``_close`` key built from a raw
    multibyte folder name (``lms_sub_____________1_close_1893452``); upstream
    ignores such keys, and so do we (the caller logs them).
    """
    if submit and rest.endswith(CLOSE_SUFFIX):
        name = rest[: -len(CLOSE_SUFFIX)]
        if _VOLUME_NAME_RE.fullmatch(name):
            return name, True
        return None
    if _VOLUME_NAME_RE.fullmatch(rest):
        return rest, False
    return None


def sanitise_access_name(raw: str) -> tuple[str, bool]:
    """An AccessName cleaned as upstream does; return it and whether it is teachers-only.

    Removes what mod_lticontainer strips (``*;: $!"'&+=|\\<>?^%~`(){}[]`` and line
    breaks), the ``/`` the reference spawner strips, and every other non-printable
    character (so it is safe in NB_VOLUMES); cuts it to 255 bytes (a file name).
    A leading ``-`` marks a folder for teachers only.  Refused only when nothing
    usable is left: empty, ``.`` or ``..`` (the link would be the work folder itself
    or its parent).
    """
    name = "".join(ch for ch in raw if ch not in ACCESS_STRIP and ch.isprintable())
    while len(name.encode()) > ACCESS_NAME_MAX_BYTES:
        name = name[:-1]
    teachers_only = name.startswith("-")
    body = name[1:] if teachers_only else name
    if body in ("", ".", ".."):
        raise LaunchRefused(
            f"The folder name {shown(raw)} in this activity leaves no usable folder name "
            "once the characters that are not allowed are removed. " + ASK_TEACHER
        )
    return name, teachers_only


def check_defurl(value: str, default: str) -> tuple[str, bool]:
    """``/lab`` or ``/tree``; anything else (the module sends neither) -> the hub default.

    Returns the URL and whether the value sent was replaced.
    """
    value = value.strip()
    if value in DEFAULT_URLS:
        return value, False
    return default, bool(value)


def clean_options(value: str) -> tuple[str, bool]:
    """NB_OPTION: only ``[A-Za-z0-9_.,-]`` kept (others dropped), at most 100 characters.

    Returns the cleaned value and whether anything was dropped.
    """
    stripped = value.strip()
    cleaned = _OPTION_DROP_RE.sub("", stripped)[:OPTION_MAX]
    return cleaned, cleaned != stripped


def clean_text(value: str, limit: int = 200) -> str:
    """Free text (course and activity names) made safe for an environment variable."""
    text = "".join(ch for ch in value if ch.isprintable() and ch != "\\")
    return text.strip()[:limit]


def split_names(value: str) -> frozenset[str]:
    """A comma/space separated list of Moodle user names (``*`` kept as is)."""
    return frozenset(part.lower() for part in re.split(r"[\s,]+", value) if part)


def normalise_image(value: str) -> str:
    """``Repo : Tag`` as Moodle's form writes it -> ``repo:tag`` (no spaces, lower case)."""
    return "".join(value.split()).lower()


def is_image_id(image: str) -> bool:
    """``sha256:<64 hex>`` or a (short) hex ID as ``docker images`` shows it."""
    return bool(_IMAGE_ID_RE.fullmatch(image))


def image_has_tag(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]
    return ":" in last or "@" in image


def check_image_reference(image: str) -> str:
    """A normalised image name or ID, refused when Docker could not read it."""
    if len(image) > 255 or not (is_image_id(image) or _IMAGE_NAME_RE.fullmatch(image)):
        raise LaunchRefused(
            f"The image name {shown(image)} in this activity is not valid. " + ASK_TEACHER
        )
    return image


def image_matches(names: tuple[str, ...], patterns: tuple[str, ...], default: str) -> bool:
    """Whether any of an image's names is the hub's default or matches a pattern.

    A name without a tag also counts as ``<name>:latest``.
    """
    candidates: list[str] = []
    for name in names:
        candidates.append(name)
        if not image_has_tag(name):
            candidates.append(name + ":latest")
    if default and (default in candidates or (default + ":latest") in candidates):
        return True
    return any(fnmatchcase(c, pattern) for c in candidates for pattern in patterns)


def image_not_offered(image: str) -> LaunchRefused:
    return LaunchRefused(
        f"This activity asks for the image {shown(image)}, which this JupyterHub does "
        "not offer. " + ASK_TEACHER
    )


def image_not_present(image: str) -> LaunchRefused:
    return LaunchRefused(
        f"This activity asks for the image {shown(image)}, which is not on this "
        "JupyterHub (images are never downloaded for an activity). " + ASK_TEACHER
    )
