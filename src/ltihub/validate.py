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
_VOLUME_NAME_RE = re.compile(r"[a-z0-9]+")
_USERNAME_RE = re.compile(r"[a-z0-9_][a-z0-9_.@-]{0,63}")
_GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOST_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST_RE = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")
_IMAGE_RE = re.compile(r"[a-z0-9][A-Za-z0-9._/:@-]{0,254}")
_OPTION_RE = re.compile(r"[A-Za-z0-9_.,-]{0,100}")
_SESSION_RE = re.compile(r"\s*(\d+)\s*,\s*(\d+)\s*")
ACCESS_NAME_MAX = 100
DEFAULT_URLS = ("/lab", "/tree")


def _shown(value: str, limit: int = 60) -> str:
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
            f"The {what} of this activity, {_shown(value)}, is not a number of CPUs. " + ASK_TEACHER
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
            f"The {what} of this activity, {_shown(value)}, is not a number of bytes. "
            + ASK_TEACHER
        )
    return int(value.replace(",", ""))


def parse_int(value: str, what: str) -> int | None:
    """A non-negative whole number; None when not given."""
    value = value.strip()
    if not value:
        return None
    if not _INT_RE.fullmatch(value) or len(value) > 18:
        raise LaunchRefused(
            f"The {what} sent by Moodle, {_shown(value)}, is not a whole number. " + ASK_TEACHER
        )
    return int(value)


def parse_session_info(value: str) -> tuple[str, str]:
    """``<lticontainer instance id>,<lti id>``; ('0', '0') when not given."""
    if not value.strip():
        return "0", "0"
    match = _SESSION_RE.fullmatch(value)
    if not match:
        raise LaunchRefused(
            f"The session information sent by Moodle, {_shown(value)}, is not two numbers. "
            + ASK_TEACHER
        )
    return str(int(match.group(1))), str(int(match.group(2)))


def check_username(name: str) -> str:
    if not _USERNAME_RE.fullmatch(name) or ".." in name:
        raise LaunchRefused(
            f"The user name {_shown(name)} cannot be used for a JupyterLab server here: "
            "only lower-case letters, digits and . _ - @ are allowed. "
            "Please ask your Moodle administrator."
        )
    return name


def check_group_name(name: str) -> str:
    if not _GROUP_RE.fullmatch(name) or ".." in name:
        raise LaunchRefused(
            f"The group name {_shown(name)} cannot be used for a home directory. "
            "Please ask your Moodle administrator."
        )
    return name


def check_hostname(name: str, what: str) -> str:
    name = name.lower()
    if len(name) > 253 or not _HOST_RE.fullmatch(name):
        raise LaunchRefused(f"The Moodle address in the {what} is not usable here. " + ASK_TEACHER)
    return name


def check_volume_name(name: str) -> str:
    if not _VOLUME_NAME_RE.fullmatch(name) or len(name) > 64:
        raise LaunchRefused(
            f"The volume name {_shown(name)} in this activity is not valid: "
            "only lower-case letters and digits are allowed. " + ASK_TEACHER
        )
    return name


def check_access_name(name: str) -> tuple[str, bool]:
    """Validate an AccessName; return it and whether it is for teachers only.

    Allowed: letters and digits (any script), ``_``, ``.`` and ``-``; the first
    character after an optional leading ``-`` (teachers only) must be a letter,
    a digit or ``_``; no ``..``; at most 100 characters.
    """
    teachers_only = name.startswith("-")
    body = name[1:] if teachers_only else name
    ok = (
        0 < len(name) <= ACCESS_NAME_MAX
        and bool(body)
        and (body[0].isalnum() or body[0] == "_")
        and all(ch.isalnum() or ch in "_.-" for ch in body)
        and ".." not in body
    )
    if not ok:
        raise LaunchRefused(
            f"The folder name {_shown(name)} in this activity is not allowed: use letters, "
            "digits, '_', '.' and '-' only (a leading '-' marks a teachers-only folder). "
            + ASK_TEACHER
        )
    return name, teachers_only


def check_defurl(value: str, default: str) -> str:
    value = value.strip()
    if not value:
        return default
    if value not in DEFAULT_URLS:
        raise LaunchRefused(
            f"The start page {_shown(value)} of this activity is not supported: "
            "use /lab or /tree. " + ASK_TEACHER
        )
    return value


def check_options(value: str) -> str:
    value = value.strip()
    if not _OPTION_RE.fullmatch(value):
        raise LaunchRefused(
            f"The options {_shown(value)} of this activity contain characters that are "
            "not allowed. " + ASK_TEACHER
        )
    return value


def clean_text(value: str, limit: int = 200) -> str:
    """Free text (course and activity names) made safe for an environment variable."""
    text = "".join(ch for ch in value if ch.isprintable() and ch != "\\")
    return text.strip()[:limit]


def split_names(value: str) -> frozenset[str]:
    """A comma/space separated list of Moodle user names (``*`` kept as is)."""
    return frozenset(part.lower() for part in re.split(r"[\s,]+", value) if part)


def normalise_image(value: str) -> str:
    """``repo : tag`` as Moodle's form writes it -> ``repo:tag``."""
    return "".join(value.split())


def image_has_tag(image: str) -> bool:
    last = image.rsplit("/", 1)[-1]
    return ":" in last or "@" in image


def check_image(image: str, patterns: tuple[str, ...], default: str) -> str:
    """Accept ``image`` only if it is the hub's default or matches an allowlist pattern."""
    if not _IMAGE_RE.fullmatch(image) or ".." in image:
        raise LaunchRefused(
            f"The image name {_shown(image)} in this activity is not valid. " + ASK_TEACHER
        )
    candidates = [image]
    if not image_has_tag(image):
        candidates.append(image + ":latest")
    if default and default in candidates:
        return image
    for pattern in patterns:
        if any(fnmatchcase(candidate, pattern) for candidate in candidates):
            return image
    raise LaunchRefused(
        f"This activity asks for the image {_shown(image)}, which this JupyterHub does "
        "not offer. " + ASK_TEACHER
    )
