"""Turn an LTI launch (as stored in auth_state) plus a hub policy into a SpawnPlan.

Pure Python: no JupyterHub import, no I/O except through the injected
:class:`~ltihub.accounts.AccountLookup`.  Everything Moodle sends is validated;
a launch that cannot be honoured raises :class:`~ltihub.errors.LaunchRefused`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from . import validate as v
from .accounts import AccountLookup, SystemAccounts
from .errors import LaunchRefused
from .policy import MIN_CPU, MIN_MEM, HubPolicy

__all__ = ["HubPolicy", "LaunchRefused", "SpawnPlan", "Volume", "build_plan"]

VolumeKind = Literal["task", "submit", "personal"]
_KIND_PREFIXES: tuple[tuple[str, VolumeKind], ...] = (
    ("lms_vol_", "task"),
    ("lms_sub_", "submit"),
    ("lms_prs_", "personal"),
)
_CONTAINER_UNSAFE_RE = re.compile(r"[^a-zA-Z0-9_.-]")
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Volume:
    """One task/submit/personal volume the user gets."""

    kind: VolumeKind
    name: str  # Moodle's volume name, [a-z0-9]+
    volume: str  # lms_<kind>_<name>_<courseid>_<moodlehost>
    access_name: str  # link name inside works/, leading '-' = teachers only
    teachers_only: bool
    link_target: str  # <volumes_dir>/<volume>, relative to the work dir
    mount_path: str  # absolute path in the container
    close_time: int | None = None  # submission volumes: Unix time they close (lms_sub_*_close)

    @property
    def env_entry(self) -> str:
        return f"{self.link_target}:{self.access_name}"

    @property
    def close_entry(self) -> str | None:
        """``<volume>:<unix time>`` for NB_SUBMIT_CLOSE, or None without a close time."""
        return None if self.close_time is None else f"{self.volume}:{self.close_time}"

    @property
    def is_docker_volume(self) -> bool:
        """Task and submit volumes are Docker named volumes; personal ones live in home."""
        return self.kind != "personal"


@dataclass(frozen=True)
class SpawnPlan:
    """Everything the spawner applies for one launch.  Immutable."""

    username: str
    uid: int
    gid: int
    group: str
    is_teacher: bool
    grant_sudo: bool
    lms_user_id: int | None
    course_id: str
    lticontainer_id: str
    lti_id: str
    lms_host: str
    image: str
    image_from_activity: bool
    cpu_limit: float | None
    mem_limit: int | None
    cpu_guarantee: float | None
    mem_guarantee: int | None
    actlimit: int
    default_url: str
    home_dir: str
    work_dir: str
    iframe: bool
    volumes: tuple[Volume, ...]
    environment: Mapping[str, str]
    notes: tuple[str, ...] = field(default=())
    ignored: tuple[str, ...] = field(default=())  # custom keys that could not be parsed
    container_prefix: str = "jupyterhub"

    @property
    def mounts(self) -> Mapping[str, str]:
        """Docker named volume -> container path."""
        return MappingProxyType(
            {vol.volume: vol.mount_path for vol in self.volumes if vol.is_docker_volume}
        )

    @property
    def container_name_parts(self) -> tuple[str, str, str, str, str]:
        """(prefix, course id, lti id, moodle host, username), each container-safe."""
        return (
            _container_safe(self.container_prefix),
            _container_safe(self.course_id),
            _container_safe(self.lti_id),
            _container_safe(self.lms_host),
            _container_safe(self.username),
        )

    def container_name(self, rand: str) -> str:
        """``<prefix>-<courseid>-<ltiid>-<moodlehost>-<rand>-<username>``."""
        prefix, course, lti, host, user = self.container_name_parts
        return f"{prefix}-{course}-{lti}-{host}-{_container_safe(rand)}-{user}"


def _container_safe(part: str) -> str:
    return _CONTAINER_UNSAFE_RE.sub("-", part)


def _text(value: object) -> str:
    """auth_state values are strings; be lenient about lists/bytes/numbers."""
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    return ""


def _fmt_cpu(x: float) -> str:
    return f"{x:g} CPU" + ("" if x == 1 else "s")


def _fmt_mem(x: float) -> str:
    size = float(x)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.4g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _fmt_secs(x: float) -> str:
    return f"{int(x)} seconds"


def _bounded(
    key: str,
    requested: N | None,
    default: N | None,
    maximum: N | None,
    policy: HubPolicy,
    what: str,
    fmt: Callable[[N], str],
    notes: list[str],
) -> N | None:
    """Apply the default, 'zero = no limit' and the hub maximum (clamp or refuse).

    ``key`` names the custom parameter, ``what`` is a phrase template such as
    ``"{} of memory"`` for the messages.

    Returns the value, or None for unlimited.  ``0`` is "no limit" upstream; here it
    gets the hub maximum (one student must not starve a shared hub).  That and a
    clamp are recorded in ``notes``.
    """
    value = default if requested is None else requested
    if value is None or value == 0:
        if requested == 0:
            limit = "no maximum" if maximum is None else f"the hub maximum {fmt(maximum)}"
            notes.append(f"{key}=0 (no limit upstream) -> {limit}")
        return maximum
    if maximum is not None and value > maximum:
        if policy.over_limit == "refuse":
            raise LaunchRefused(
                f"This activity asks for {what.format(fmt(value))}, but this JupyterHub "
                f"allows at most {what.format(fmt(maximum))}. " + v.ASK_TEACHER
            )
        notes.append(f"{what.format(fmt(value))} clamped to {fmt(maximum)}")
        return maximum
    return value


class _Launch:
    """Read access to the launch dict with the lms_ custom fields split out."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self.fields = {str(k): _text(val) for k, val in data.items()}
        self.custom = {
            k[len("custom_") :]: val for k, val in self.fields.items() if k.startswith("custom_")
        }

    def get(self, key: str) -> str:
        return self.fields.get(key, "")

    def lms(self, name: str) -> str:
        return self.custom.get(name, "")


def _lms_host(launch: _Launch, policy: HubPolicy) -> str:
    for key, what in (
        ("lis_outcome_service_url", "outcome service URL"),
        ("custom_lms_serverurl", "server URL"),
    ):
        raw = launch.get(key).strip()
        if not raw:
            continue
        try:
            host = urlsplit(raw).hostname
        except ValueError:
            host = None
        if not host:
            raise LaunchRefused(
                f"The Moodle {what} sent with this launch is not valid. " + v.ASK_TEACHER
            )
        return v.check_hostname(host, what)
    return policy.fallback_lms_host


def _identity(
    launch: _Launch, username: str, policy: HubPolicy, accounts: AccountLookup
) -> tuple[int, int, str, int | None]:
    """(uid, gid, group name, Moodle user id) following the protocol's fallbacks."""
    lms_user_id = v.parse_int(launch.get("user_id"), "user id")
    ext_uid = v.parse_int(launch.get("ext_user_userid"), "user number (ext_user_userid)")
    ext_gid = v.parse_int(launch.get("ext_user_groupid"), "group number (ext_user_groupid)")
    ext_group = launch.get("ext_user_groupname").strip()

    host = accounts.user_ids(username)
    if host is not None:
        uid, host_gid = host
        gid: int | None = host_gid
    else:
        gid = None
        if ext_uid is not None:
            uid = ext_uid
        elif lms_user_id is not None:
            uid = policy.base_uid + lms_user_id
        else:
            raise LaunchRefused(
                "This launch does not say which Moodle user you are. "
                "Please start JupyterLab again from the Moodle activity."
            )
    if gid is None:
        if ext_gid is not None:
            gid = ext_gid
        else:
            default_gid = accounts.group_id(policy.default_group)
            gid = policy.default_gid if default_gid is None else default_gid

    if uid < policy.min_uid or uid == 65534 or uid >= 2**31:
        raise LaunchRefused(
            f"The account '{username}' is reserved on this JupyterHub and cannot start a "
            "server. Please ask your Moodle administrator."
        )
    if gid < policy.min_gid or gid == 65534 or gid >= 2**31:
        raise LaunchRefused(
            f"The group of the account '{username}' is reserved on this JupyterHub. "
            "Please ask your Moodle administrator."
        )

    group = accounts.group_name(gid)
    if group is None:
        group = ext_group or policy.default_group
    return uid, gid, v.check_group_name(group), lms_user_id


def kind_tag(kind: VolumeKind) -> str:
    return {"task": "vol", "submit": "sub", "personal": "prs"}[kind]


def _may_mount(
    username: str, own_users: frozenset[str], lms_users: frozenset[str], is_teacher: bool
) -> bool:
    """The protocol's volume rule."""
    if own_users:
        return "*" in own_users or username in own_users
    return "*" in lms_users or username in lms_users or is_teacher


def _volumes(
    launch: _Launch,
    *,
    username: str,
    is_teacher: bool,
    course_id: str,
    lms_host: str,
    work_dir: str,
    policy: HubPolicy,
    now: float,
    notes: list[str],
    ignored: list[str],
) -> tuple[Volume, ...]:
    lms_users = v.split_names(launch.lms("lms_users"))
    closes: dict[str, int] = {}
    specs: list[tuple[VolumeKind, str, str]] = []
    for key in sorted(launch.custom):
        for prefix, kind in _KIND_PREFIXES:
            if not key.startswith(prefix):
                continue
            parsed = v.parse_volume_key(key[len(prefix) :], submit=kind == "submit")
            if parsed is None:
                ignored.append(key)
                break
            name, is_close = parsed
            if is_close:
                close = v.parse_int(launch.custom[key], "submission close time")
                if close:  # empty or 0 = no close time
                    closes[name] = close
            else:
                specs.append((kind, name, launch.custom[key]))
            break

    result: list[Volume] = []
    for kind, name, value in specs:
        access_raw, _, users_raw = value.partition(":")
        access, teachers_only = v.sanitise_access_name(access_raw)
        if access != access_raw.strip():
            notes.append(f"folder name of {kind_tag(kind)} volume '{name}' cleaned to {access!r}")
        if not _may_mount(username, v.split_names(users_raw), lms_users, is_teacher):
            continue
        if teachers_only and not is_teacher:
            continue  # the start script would not link it; do not expose it either
        if kind == "submit" and not is_teacher and name in closes and now > closes[name]:
            notes.append(f"submission volume {name} closed at {closes[name]}")
            continue
        volume = f"lms_{kind_tag(kind)}_{name}_{course_id}_{lms_host}"
        link_target = f"{policy.volumes_dir}/{volume}"
        result.append(
            Volume(
                kind=kind,
                name=name,
                volume=volume,
                access_name=access,
                teachers_only=teachers_only,
                link_target=link_target,
                mount_path=f"{work_dir}/{link_target}",
                close_time=closes.get(name) if kind == "submit" else None,
            )
        )
    return tuple(result)


def build_plan(
    launch_data: Mapping[str, object],
    policy: HubPolicy,
    *,
    username: str | None = None,
    now: float | None = None,
    accounts: AccountLookup | None = None,
) -> SpawnPlan:
    """Validate a launch and compute what to start.

    ``username`` is the hub's user name (defaults to ``ext_user_username``),
    ``now`` the Unix time used for submission close times, ``accounts`` the host
    account look-up (defaults to the real passwd/group databases).
    """
    launch = _Launch(launch_data)
    now = time.time() if now is None else now
    accounts = SystemAccounts() if accounts is None else accounts
    notes: list[str] = []

    name = username if username is not None else launch.get("ext_user_username").lower()
    name = v.check_username(name.strip())
    lms_host = _lms_host(launch, policy)
    course_id = str(v.parse_int(launch.get("context_id"), "course id") or 0)
    ctr_id, lti_id = v.parse_session_info(launch.lms("lms_sessioninfo"))
    uid, gid, group, lms_user_id = _identity(launch, name, policy, accounts)
    teachers = v.split_names(launch.lms("lms_teachers")) - {"*"}
    is_teacher = name in teachers
    grant_sudo = is_teacher and policy.allow_teacher_sudo

    image_raw = v.normalise_image(launch.lms("lms_image"))
    if image_raw:
        image = v.check_image_reference(image_raw)
        if (
            not policy.any_present_image
            and not v.is_image_id(image)
            and not v.image_matches((image,), policy.allowed_images, policy.default_image)
        ):
            raise v.image_not_offered(image)
    elif policy.default_image:
        image = policy.default_image
    else:
        raise LaunchRefused(
            "This activity does not name an image and this JupyterHub has no default image. "
            + v.ASK_TEACHER
        )

    cpu_req = v.parse_cpu(launch.lms("lms_cpulimit"), "CPU limit")
    if cpu_req and cpu_req < MIN_CPU:
        raise LaunchRefused(
            f"The CPU limit of this activity is below {MIN_CPU} CPUs. " + v.ASK_TEACHER
        )
    cpu_limit = _bounded(
        "lms_cpulimit", cpu_req, policy.default_cpu, policy.max_cpu, policy, "{}", _fmt_cpu, notes
    )
    mem_req = v.parse_bytes(launch.lms("lms_memlimit"), "memory limit")
    if mem_req and mem_req < MIN_MEM:
        raise LaunchRefused(
            f"The memory limit of this activity is below {_fmt_mem(MIN_MEM)}. " + v.ASK_TEACHER
        )
    mem_limit = _bounded(
        "lms_memlimit",
        mem_req,
        policy.default_mem,
        policy.max_mem,
        policy,
        "{} of memory",
        _fmt_mem,
        notes,
    )

    # Guarantees: 0 or missing = none; never above the hub maximum or the limit.
    cpu_g = v.parse_cpu(launch.lms("lms_cpugrnt"), "CPU guarantee")
    cpu_guarantee = (
        _bounded(
            "lms_cpugrnt", cpu_g, None, policy.max_cpu, policy, "{} guaranteed", _fmt_cpu, notes
        )
        if cpu_g
        else None
    )
    mem_g = v.parse_bytes(launch.lms("lms_memgrnt"), "memory guarantee")
    mem_guarantee = (
        _bounded(
            "lms_memgrnt",
            mem_g,
            None,
            policy.max_mem,
            policy,
            "{} of guaranteed memory",
            _fmt_mem,
            notes,
        )
        if mem_g
        else None
    )
    if cpu_guarantee is not None and cpu_limit is not None:
        cpu_guarantee = min(cpu_guarantee, cpu_limit)
    if mem_guarantee is not None and mem_limit is not None:
        mem_guarantee = min(mem_guarantee, mem_limit)

    act_req = v.parse_int(launch.lms("lms_actlimit"), "time limit")
    actlimit = _bounded(
        "lms_actlimit",
        act_req,
        policy.default_actlimit,
        policy.max_actlimit,
        policy,
        "a running time of {}",
        _fmt_secs,
        notes,
    )

    default_url, replaced = v.check_defurl(launch.lms("lms_defurl"), policy.default_url)
    if replaced:
        notes.append(f"lms_defurl {v.shown(launch.lms('lms_defurl'))} unknown -> {default_url}")
    options, cleaned = v.clean_options(launch.lms("lms_options"))
    if cleaned:
        notes.append(f"lms_options cleaned to {options!r}")
    ignored: list[str] = []
    home_dir = f"{policy.home_root.rstrip('/')}/{group}/{name}"
    work_dir = f"{home_dir}/{policy.projects_dir}/{policy.works_dir}"
    volumes = _volumes(
        launch,
        username=name,
        is_teacher=is_teacher,
        course_id=course_id,
        lms_host=lms_host,
        work_dir=work_dir,
        policy=policy,
        now=now,
        notes=notes,
        ignored=ignored,
    )

    def entries(kind: VolumeKind) -> str:
        return " ".join(vol.env_entry for vol in volumes if vol.kind == kind)

    env = {
        "NB_UID": str(uid),
        "NB_USER": name,
        "NB_GID": str(gid),
        "NB_GROUP": group,
        "NB_DIR": home_dir,
        "NB_WRKDIR": work_dir,
        "NB_ACTLIMIT": str(actlimit or 0),
        "NB_THRGID": str(policy.teacher_gid),
        "NB_THRGROUP": policy.teacher_group,
        "NB_OPTION": options,
        "NB_HOSTNAME": lms_host,
        "NB_TEACHER": name if is_teacher else "",
        "NB_UMASK": policy.teacher_umask if is_teacher else policy.default_umask,
        "NB_VOLUMES": entries("task"),
        "NB_SUBMITS": entries("submit"),
        "NB_PRSNALS": entries("personal"),
        "LTI_CTR_ID": ctr_id,
        "LTI_ID": lti_id,
        "LTI_COURSE": v.clean_text(launch.lms("lms_course")),
        "LTI_NAME": v.clean_text(launch.lms("lms_ltiname")),
        "PRJCT_DIR": policy.projects_dir,
        "WORK_DIR": policy.works_dir,
        "VOLUME_DIR": policy.volumes_dir,
        "GRANT_SUDO": "yes" if grant_sudo else "no",
        "CONDA_DIR": policy.conda_dir,
        "TZ": policy.timezone,
    }
    # Read by the image's submit tool (ltihub.nbenv); only set when a folder has a close time.
    close_entries = [entry for vol in volumes if (entry := vol.close_entry) is not None]
    if close_entries:
        env["NB_SUBMIT_CLOSE"] = " ".join(close_entries)
    return SpawnPlan(
        username=name,
        uid=uid,
        gid=gid,
        group=group,
        is_teacher=is_teacher,
        grant_sudo=grant_sudo,
        lms_user_id=lms_user_id,
        course_id=course_id,
        lticontainer_id=ctr_id,
        lti_id=lti_id,
        lms_host=lms_host,
        image=image,
        image_from_activity=bool(image_raw),
        cpu_limit=cpu_limit,
        mem_limit=mem_limit,
        cpu_guarantee=cpu_guarantee,
        mem_guarantee=mem_guarantee,
        actlimit=actlimit or 0,
        default_url=default_url,
        home_dir=home_dir,
        work_dir=work_dir,
        iframe=launch.lms("lms_iframe").strip() == "1",
        volumes=volumes,
        environment=MappingProxyType(env),
        notes=tuple(notes),
        ignored=tuple(v.shown(key, 80) for key in ignored),
        container_prefix=policy.container_prefix,
    )
