"""Per-hub policy: what a Moodle activity may ask of this hub."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Literal

from .validate import DEFAULT_URLS

OverLimit = Literal["clamp", "refuse"]
MIN_CPU = 0.01  # Docker's smallest CPU quota (1 ms per 100 ms period)
MIN_MEM = 6 * 1024 * 1024  # Docker refuses memory limits below 6 MiB

_UMASK_RE = re.compile(r"0?[0-7]{3}")
_DIR_PART_RE = re.compile(r"[A-Za-z0-9_.-]+")
_GROUP_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")

# What the image's start script (mjp-start.sh, ltihub.nbstart root) needs as root before
# it drops to the user: useradd/groupmod write /etc/passwd and friends and reach into
# homes of other uids (DAC_OVERRIDE); it chowns the work tree and the volumes (CHOWN),
# chmods files and set-group-id directories it does not own (FOWNER, FSETID); setpriv
# switches uid/gid/groups (SETUID, SETGID) and empties the bounding set (SETPCAP);
# timeout, running as root, kills the user's server at the activity time limit (KILL).
# The user's process has none of them (setpriv to a non-root uid clears them; for users
# without sudo the bounding set is emptied too).
START_CAPABILITIES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETPCAP",
    "SETUID",
)
# sudo (teachers with GRANT_SUDO=yes only) writes an audit record and fails without it.
SUDO_CAPABILITIES: tuple[str, ...] = ("AUDIT_WRITE",)
# An operator may add back at most the rest of the engine's default set, never NET_RAW
# (raw sockets: spoofing, sniffing on the bridge) and nothing beyond the default set.
ALLOWED_CAPABILITIES = frozenset(
    START_CAPABILITIES + SUDO_CAPABILITIES + ("MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SYS_CHROOT")
)
MIN_PIDS = 64  # a JupyterLab server with one kernel already runs a few dozen threads


def capability_name(name: str) -> str:
    """``cap_chown`` / ``CAP_CHOWN`` / ``chown`` -> ``CHOWN`` (Docker's spelling)."""
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


@dataclass(frozen=True)
class HubPolicy:
    """Limits and defaults of one hub.  Invalid settings raise ValueError."""

    allowed_images: tuple[str, ...] = ()
    default_image: str = ""
    # True: any image present on the hub's engine may be asked for (what mod_lticontainer
    # offers the teacher); False: only the default image and names matching allowed_images.
    # Either way an image that is not present is refused, never pulled.
    any_present_image: bool = True
    default_cpu: float | None = None
    max_cpu: float | None = None
    default_mem: int | None = None
    max_mem: int | None = None
    default_actlimit: int = 0
    max_actlimit: int | None = None
    over_limit: OverLimit = "clamp"
    default_url: str = "/lab"
    home_root: str = "/home"
    projects_dir: str = "jupyter"
    works_dir: str = "works"
    volumes_dir: str = ".volumes"
    default_group: str = "others"
    default_gid: int = 30000
    teacher_group: str = "TEACHER"
    teacher_gid: int = 7000
    base_uid: int = 30000
    min_uid: int = 1000
    min_gid: int = 100
    allow_teacher_sudo: bool = False
    default_umask: str = "0027"
    teacher_umask: str = "0033"
    conda_dir: str = "/opt/conda"
    timezone: str = "UTC"
    fallback_lms_host: str = "localhost"
    container_prefix: str = "jupyterhub"
    # Confinement of every notebook container (see container_confinement).
    pids_limit: int = 512
    capabilities: tuple[str, ...] = START_CAPABILITIES

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.over_limit not in ("clamp", "refuse"):
            problems.append("over_limit must be 'clamp' or 'refuse'")
        if self.default_url not in DEFAULT_URLS:
            problems.append("default_url must be /lab or /tree")
        if not posixpath.isabs(self.home_root) or ".." in self.home_root.split("/"):
            problems.append("home_root must be an absolute path without '..'")
        for name in ("projects_dir", "works_dir", "volumes_dir"):
            value = getattr(self, name)
            if not _DIR_PART_RE.fullmatch(value) or value in (".", ".."):
                problems.append(f"{name} must be one plain directory name")
        for name in ("default_group", "teacher_group"):
            if not _GROUP_RE.fullmatch(getattr(self, name)):
                problems.append(f"{name} is not a valid group name")
        for name in ("default_umask", "teacher_umask"):
            if not _UMASK_RE.fullmatch(getattr(self, name)):
                problems.append(f"{name} must be an octal umask such as 0027")
        for name in ("default_gid", "teacher_gid", "base_uid", "min_uid", "min_gid"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be positive")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", self.container_prefix):
            problems.append("container_prefix must be a valid container name start")
        for name in ("max_cpu", "max_mem", "max_actlimit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{name} must be positive or None")
        if self.default_actlimit < 0:
            problems.append("default_actlimit must not be negative")
        pairs = (
            ("default_cpu", "max_cpu"),
            ("default_mem", "max_mem"),
            ("default_actlimit", "max_actlimit"),
        )
        for low, high in pairs:
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                problems.append(f"{low} must not exceed {high}")
        if self.pids_limit < MIN_PIDS:
            problems.append(f"pids_limit must be at least {MIN_PIDS}")
        for cap in self.capabilities:
            if capability_name(cap) not in ALLOWED_CAPABILITIES:
                problems.append(
                    f"capability {cap!r} is not allowed (choose from "
                    f"{', '.join(sorted(ALLOWED_CAPABILITIES))})"
                )
        if problems:
            raise ValueError("invalid hub policy: " + "; ".join(problems))

    def container_confinement(self, grant_sudo: bool) -> dict[str, Any]:
        """Docker host-config settings that confine one notebook container.

        Every capability is dropped and only those of ``capabilities`` (plus what sudo
        needs, for a user who gets sudo) are added back; the number of processes and
        threads is capped by ``pids_limit`` (a fork bomb stays inside its container).
        """
        caps = {capability_name(c) for c in self.capabilities}
        if grant_sudo:
            caps.update(SUDO_CAPABILITIES)
        return {"cap_drop": ["ALL"], "cap_add": sorted(caps), "pids_limit": self.pids_limit}
