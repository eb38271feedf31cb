"""The environment the LTI-container spawner gives a notebook container, as the image reads it.

Runs INSIDE the notebook image (copied there by the notebook_images role together with
nbstart, nbnotice and nbsubmit): standard library only, no import of the hub-side modules.

``NB_VOLUMES``, ``NB_SUBMITS`` and ``NB_PRSNALS`` hold space-separated
``<VOLUME_DIR>/<volume>:<AccessName>`` entries; an AccessName that starts with ``-`` is
linked for teachers only.  ``NB_SUBMIT_CLOSE`` (optional) holds the submission close
times: space-separated ``<volume>:<unix time>`` entries (``<volume>`` with or without
the ``<VOLUME_DIR>/`` prefix), or one bare unix time that applies to every submission
volume.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_VOLUME_RE = re.compile(r"lms_(vol|sub|prs)_[a-z0-9]*_[A-Za-z0-9_.-]+")
_KIND = {"vol": "task", "sub": "submit", "prs": "personal"}
_FORBIDDEN_IN_NAME = re.compile(r"[/\x00-\x1f\x7f\s]")


@dataclass(frozen=True)
class Entry:
    """One ``<VOLUME_DIR>/<volume>:<AccessName>`` entry."""

    target: str  # relative link target, "<VOLUME_DIR>/<volume>"
    access: str  # the AccessName as sent, leading "-" = teachers only

    @property
    def volume(self) -> str:
        return self.target.rsplit("/", 1)[-1]

    @property
    def kind(self) -> str:
        """task, submit or personal."""
        return _KIND[self.volume.split("_", 2)[1]]

    @property
    def link_name(self) -> str:
        return self.access[1:] if self.access.startswith("-") else self.access

    @property
    def teachers_only(self) -> bool:
        return self.access.startswith("-")


def valid_link_name(name: str, volume_dir: str) -> bool:
    """A name we may create directly under works/ (Japanese letters are fine)."""
    return (
        bool(name)
        and name not in (".", "..", volume_dir)
        and not _FORBIDDEN_IN_NAME.search(name)
        and not name.startswith("-")
    )


def parse_entries(
    text: str, volume_dir: str, kind: str, problems: list[str] | None = None
) -> list[Entry]:
    """The valid entries of one NB_* variable; what is skipped is described in ``problems``."""
    result: list[Entry] = []
    for raw in text.split():
        target, sep, access = raw.partition(":")
        prefix, slash, volume = target.partition("/")
        entry = Entry(target=target, access=access)
        if (
            not sep
            or not slash
            or prefix != volume_dir
            or not _VOLUME_RE.fullmatch(volume)
            or ".." in volume
            or entry.kind != kind
            or not valid_link_name(entry.link_name, volume_dir)
        ):
            if problems is not None:
                problems.append(f"skipping volume entry '{raw}'")
            continue
        result.append(entry)
    return result


def parse_close_times(text: str) -> dict[str, int]:
    """``NB_SUBMIT_CLOSE`` -> {volume name or "*": unix time}; bad parts are ignored."""
    closes: dict[str, int] = {}
    for raw in text.split():
        key, sep, value = raw.rpartition(":")
        if not sep:
            key, value = "*", raw
        key = key.rsplit("/", 1)[-1] or "*"
        if value.isdigit() and int(value) > 0:
            closes[key] = int(value)
    return closes


def close_time(closes: Mapping[str, int], volume: str) -> int | None:
    return closes.get(volume, closes.get("*"))


def is_teacher(env: Mapping[str, str]) -> bool:
    teacher = env.get("NB_TEACHER", "")
    return bool(teacher) and teacher == env.get("NB_USER", "")


@dataclass(frozen=True)
class NotebookEnv:
    """The parts of the container environment the image's tools use."""

    user: str
    work_dir: str
    volume_dir: str
    teacher: bool
    teacher_gid: int
    volumes: tuple[Entry, ...]
    submits: tuple[Entry, ...]
    personals: tuple[Entry, ...]
    close_times: Mapping[str, int]
    problems: tuple[str, ...]

    @property
    def all_entries(self) -> Iterable[Entry]:
        return (*self.volumes, *self.submits, *self.personals)

    def linked(self) -> list[Entry]:
        """The entries this user gets a link for (teachers-only names skipped for students)."""
        return [e for e in self.all_entries if self.teacher or not e.teachers_only]


def read_env(env: Mapping[str, str]) -> NotebookEnv:
    """Read the NB_* variables (defaults as in the protocol)."""
    user = env.get("NB_USER", "")
    group = env.get("NB_GROUP", "others")
    home = env.get("NB_DIR") or f"/home/{group}/{user}"
    work_dir = env.get("NB_WRKDIR") or (
        f"{home}/{env.get('PRJCT_DIR', 'jupyter')}/{env.get('WORK_DIR', 'works')}"
    )
    volume_dir = env.get("VOLUME_DIR") or ".volumes"
    gid_text = env.get("NB_THRGID", "7000")
    problems: list[str] = []
    return NotebookEnv(
        user=user,
        work_dir=work_dir,
        volume_dir=volume_dir,
        teacher=is_teacher(env),
        teacher_gid=int(gid_text) if gid_text.isdigit() else 7000,
        volumes=tuple(parse_entries(env.get("NB_VOLUMES", ""), volume_dir, "task", problems)),
        submits=tuple(parse_entries(env.get("NB_SUBMITS", ""), volume_dir, "submit", problems)),
        personals=tuple(parse_entries(env.get("NB_PRSNALS", ""), volume_dir, "personal", problems)),
        close_times=parse_close_times(env.get("NB_SUBMIT_CLOSE", "")),
        problems=tuple(problems),
    )
