# The hub extras (jupyterhub, dockerspawner, tornado, traitlets) are absent from the
# dev venv, where mypy then sees them as missing and our ignores as unused.
# mypy: disable-error-code="import-not-found,import-untyped,unused-ignore"
"""LTIContainerSpawner: a DockerSpawner that starts what a Moodle activity asks for.

Thin on purpose: :func:`ltihub.params.build_plan` validates the launch and decides
everything; this class only reads the hub policy from traitlets config, applies
the plan to DockerSpawner's attributes, and turns a refusal into an HTTP 403
whose message JupyterHub shows to the student.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import secrets
import string
import time
from collections.abc import Callable, Mapping
from typing import Any

from dockerspawner import DockerSpawner
from jupyterhub.traitlets import ByteSpecification
from tornado import web
from traitlets import Bool, Enum, Float, Integer, List, Unicode

from .accounts import AccountLookup, StaticAccounts, SystemAccounts
from .errors import LaunchRefused
from .images import resolve_image
from .params import SpawnPlan, build_plan
from .policy import START_CAPABILITIES, HubPolicy

_RAND_ALPHABET = string.ascii_lowercase + string.digits
_NOT_FROM_MOODLE = (
    "This JupyterHub starts servers only from a Moodle activity. "
    "Please open the activity in Moodle again."
)
# Seconds after NB_ACTLIMIT before the hub stops a server itself (the image's start script
# stops it at the limit, with 30 s for the kill; this also covers images without it).
ACTLIMIT_GRACE = 60
_MISCONFIGURED = (
    "This JupyterHub is not configured correctly, so no server can be started. "
    "Please tell your teacher."
)


def refused_error(message: str, username: str = "?") -> web.HTTPError:
    """An HTTP 403 whose ``jupyterhub_message`` JupyterHub shows on its pages.

    JupyterHub's error page, spawn page and spawn-pending progress stream all
    display ``exc.jupyterhub_message`` when it is set.
    """
    error = web.HTTPError(403, "LTI launch refused for %s: %s", username, message)
    error.jupyterhub_message = message  # type: ignore[attr-defined]
    return error


def _merged(base: Any, overrides: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """Apply ``overrides`` to a DockerSpawner dict trait that may be a (async) callable."""
    if not callable(base):
        return overrides(dict(base or {}))

    async def evaluate(spawner: Any) -> dict[str, Any]:
        value = base(spawner)
        if inspect.isawaitable(value):
            value = await value
        return overrides(dict(value or {}))

    return evaluate


class LTIContainerSpawner(DockerSpawner):  # type: ignore[misc]
    """Spawn one container per launch, configured by the mod_lticontainer custom fields."""

    allowed_image_patterns = List(
        Unicode(),
        help="fnmatch patterns of images an activity may ask for when any_present_image "
        "is off (the configured DockerSpawner.image is always allowed).",
    ).tag(config=True)
    any_present_image = Bool(
        True,
        help="An activity may ask for any image present on the engine (what "
        "mod_lticontainer offers the teacher). Off: only the default image and "
        "allowed_image_patterns. An image not present is refused either way, never pulled.",
    ).tag(config=True)
    max_cpu = Float(None, allow_none=True, help="Most CPUs an activity may get.").tag(config=True)
    max_mem = ByteSpecification(
        None, allow_none=True, help="Most memory (bytes, or 512M/4G) an activity may get."
    ).tag(config=True)
    default_actlimit = Integer(
        6000, help="NB_ACTLIMIT (seconds) when the activity sets none; 0 = no limit."
    ).tag(config=True)
    max_actlimit = Integer(None, allow_none=True, help="Longest NB_ACTLIMIT allowed.").tag(
        config=True
    )
    over_limit = Enum(
        ["clamp", "refuse"],
        "clamp",
        help="What to do when an activity asks for more than a maximum.",
    ).tag(config=True)
    allow_teacher_sudo = Bool(False, help="Give teachers GRANT_SUDO=yes.").tag(config=True)
    no_new_privileges = Bool(
        True, help="Run containers without sudo rights with no-new-privileges."
    ).tag(config=True)
    pids_limit = Integer(
        512, help="Most processes and threads in one notebook container (fork bombs)."
    ).tag(config=True)
    capabilities = List(
        Unicode(),
        default_value=list(START_CAPABILITIES),
        help="Capabilities a notebook container keeps (all others are dropped); what the "
        "image's start script needs as root before it drops to the user. Never NET_RAW.",
    ).tag(config=True)
    run_as_root = Bool(
        True, help="Start the container as root so its start script can set the user up."
    ).tag(config=True)
    start_page = Enum(["/lab", "/tree"], "/lab", help="Default URL when not set.").tag(config=True)
    home_root = Unicode("/home", help="Homes are <home_root>/<group>/<user>.").tag(config=True)
    default_group = Unicode("others").tag(config=True)
    default_gid = Integer(30000).tag(config=True)
    teacher_group = Unicode("TEACHER").tag(config=True)
    teacher_gid = Integer(7000).tag(config=True)
    base_uid = Integer(30000, help="uid = base_uid + Moodle user id as last resort.").tag(
        config=True
    )
    min_uid = Integer(1000, help="Refuse accounts below this uid.").tag(config=True)
    min_gid = Integer(100, help="Refuse groups below this gid.").tag(config=True)
    default_umask = Unicode("0027").tag(config=True)
    teacher_umask = Unicode("0033").tag(config=True)
    conda_dir = Unicode("/opt/conda").tag(config=True)
    timezone = Unicode("UTC", help="TZ in the container.").tag(config=True)
    fallback_lms_host = Unicode("localhost").tag(config=True)
    container_prefix = Unicode("jupyterhub").tag(config=True)
    use_host_accounts = Bool(
        True, help="Look uid/gid up in the hub host's passwd/group first."
    ).tag(config=True)
    create_home = Bool(True, help="Create missing home directories on the host.").tag(config=True)

    remove = Bool(True, help="Remove the container when it stops (one container per launch).").tag(
        config=True
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Configured values, kept before each launch overwrites the live traits.
        self._base_image: str = self.image
        self._base_cpu: float | None = self.cpu_limit or None
        self._base_mem: int | None = self.mem_limit or None
        self._base_volumes: dict[str, Any] = dict(self.volumes)
        self._base_host_config: Any = self.extra_host_config
        self._base_create_kwargs: Any = self.extra_create_kwargs
        self.lti_plan: SpawnPlan | None = None
        self.lti_deadline: float | None = None  # Unix time the time limit ends (+ grace)

    # -- policy and plan ------------------------------------------------------------

    def hub_policy(self) -> HubPolicy:
        return HubPolicy(
            allowed_images=tuple(self.allowed_image_patterns),
            default_image=self._base_image,
            any_present_image=self.any_present_image,
            default_cpu=self._base_cpu,
            max_cpu=self.max_cpu,
            default_mem=self._base_mem,
            max_mem=self.max_mem,
            default_actlimit=self.default_actlimit,
            max_actlimit=self.max_actlimit,
            over_limit="refuse" if self.over_limit == "refuse" else "clamp",
            default_url=self.start_page,
            home_root=self.home_root,
            default_group=self.default_group,
            default_gid=self.default_gid,
            teacher_group=self.teacher_group,
            teacher_gid=self.teacher_gid,
            base_uid=self.base_uid,
            min_uid=self.min_uid,
            min_gid=self.min_gid,
            allow_teacher_sudo=self.allow_teacher_sudo,
            default_umask=self.default_umask,
            teacher_umask=self.teacher_umask,
            conda_dir=self.conda_dir,
            timezone=self.timezone,
            fallback_lms_host=self.fallback_lms_host,
            container_prefix=self.container_prefix,
            pids_limit=self.pids_limit,
            capabilities=tuple(self.capabilities),
        )

    def accounts(self) -> AccountLookup:
        return SystemAccounts() if self.use_host_accounts else StaticAccounts()

    def plan_launch(self, auth_state: Mapping[str, Any] | None) -> SpawnPlan:
        """Build the plan, or raise the HTTP 403 the student will see."""
        name = str(self.user.name)
        if not auth_state:
            self.log.error("No LTI auth_state for %s (is enable_auth_state on?)", name)
            raise refused_error(_NOT_FROM_MOODLE, name)
        try:
            policy = self.hub_policy()
        except ValueError as exc:
            self.log.error("LTIContainerSpawner configuration: %s", exc)
            error = web.HTTPError(500, "LTIContainerSpawner configuration: %s", str(exc))
            error.jupyterhub_message = _MISCONFIGURED  # type: ignore[attr-defined]
            raise error from None
        try:
            return build_plan(auth_state, policy, username=name, accounts=self.accounts())
        except LaunchRefused as exc:
            self.log.warning("Refused LTI launch for %s: %s", name, exc)
            raise refused_error(str(exc), name) from None

    async def checked_plan(self, auth_state: Mapping[str, Any] | None) -> SpawnPlan:
        """The plan, with the activity's image looked up on the engine (never pulled)."""
        plan = self.plan_launch(auth_state)
        if not plan.image_from_activity:
            return plan
        name = str(self.user.name)
        try:
            image = await resolve_image(self.docker, plan.image, self.hub_policy())
        except LaunchRefused as exc:
            self.log.warning("Refused LTI launch for %s: %s", name, exc)
            raise refused_error(str(exc), name) from None
        return dataclasses.replace(plan, image=image)

    async def run_auth_state_hook(self, auth_state: Any) -> None:
        """Validate the launch as soon as JupyterHub hands us the auth state.

        JupyterHub calls this from the /hub/spawn page before any spawn starts,
        so a refusal is shown there as a 403 page with our message (and it does
        not count as a failed spawn).
        """
        await super().run_auth_state_hook(auth_state)
        self.lti_plan = await self.checked_plan(auth_state)

    # -- applying the plan ----------------------------------------------------------

    def _host_overrides(self, plan: SpawnPlan) -> Callable[[dict[str, Any]], dict[str, Any]]:
        confinement = self.hub_policy().container_confinement(plan.grant_sudo)

        def apply(config: dict[str, Any]) -> dict[str, Any]:
            config["privileged"] = False
            config.update(confinement)  # over anything configured: the platform's boundary
            if plan.mem_guarantee:
                config["mem_reservation"] = plan.mem_guarantee
            if plan.cpu_guarantee:
                config["cpu_shares"] = max(2, int(plan.cpu_guarantee * 1024))
            if self.no_new_privileges and not plan.grant_sudo:
                opts = [str(o) for o in config.get("security_opt") or []]
                if "no-new-privileges:true" not in opts:
                    opts.append("no-new-privileges:true")
                config["security_opt"] = opts
            return config

        return apply

    def _create_overrides(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.run_as_root:
            config["user"] = "root"
        return config

    def apply_plan(self, plan: SpawnPlan, rand: str | None = None) -> None:
        """Set image, limits, environment, volumes and container name from ``plan``."""
        self.lti_plan = plan
        self.image = plan.image
        self.cpu_limit = plan.cpu_limit
        self.mem_limit = plan.mem_limit
        self.cpu_guarantee = plan.cpu_guarantee
        self.mem_guarantee = plan.mem_guarantee
        self.default_url = plan.default_url
        self.notebook_dir = plan.home_dir
        volumes = dict(self._base_volumes)
        volumes[plan.home_dir] = {"bind": plan.home_dir, "mode": "rw"}
        for name, path in plan.mounts.items():
            volumes[name] = {"bind": path, "mode": "rw"}
        self.volumes = volumes
        self.extra_host_config = _merged(self._base_host_config, self._host_overrides(plan))
        self.extra_create_kwargs = _merged(self._base_create_kwargs, self._create_overrides)
        if rand is None:
            rand = "".join(secrets.choice(_RAND_ALPHABET) for _ in range(8))
        self.object_name = plan.container_name(rand)  # after image: its observer renames

    def ensure_home(self, plan: SpawnPlan) -> None:
        """Create the home tree on the host so Docker does not create it root-owned."""
        if not self.create_home:
            return
        group_dir = os.path.dirname(plan.home_dir)
        work_parent = os.path.dirname(plan.work_dir)
        steps = [
            (group_dir, 0o755, 0, plan.gid),
            (plan.home_dir, 0o700, plan.uid, plan.gid),
            (work_parent, 0o700, plan.uid, plan.gid),
            (plan.work_dir, 0o700, plan.uid, plan.gid),
        ]
        try:
            for path, mode, uid, gid in steps:
                if os.path.isdir(path):
                    continue
                os.mkdir(path, mode)
                if os.geteuid() == 0:
                    os.chown(path, uid, gid)
        except OSError as exc:
            self.log.warning("Could not prepare %s: %s", plan.home_dir, exc)

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        if self.lti_plan is not None:
            env.update(self.lti_plan.environment)
        return env

    def spawn_log_line(self, plan: SpawnPlan) -> str:
        """One line per launch: what was started, and every adjustment made to the request."""

        def limit(value: float | None) -> str:
            if value is None:
                return "none"
            return str(value) if isinstance(value, int) else f"{value:g}"

        return (
            f"LTI launch for {plan.username}: image={plan.image} cpu={limit(plan.cpu_limit)} "
            f"mem={limit(plan.mem_limit)} actlimit={plan.actlimit or 'none'} "
            f"volumes={[vol.volume for vol in plan.volumes]} teacher={plan.is_teacher} "
            f"notes={list(plan.notes)} ignored_keys=[{', '.join(plan.ignored)}]"
        )

    async def start(self) -> Any:
        auth_state = await self.user.get_auth_state()
        plan = await self.checked_plan(auth_state)  # fresh: close times use 'now'
        self.apply_plan(plan)
        self.ensure_home(plan)
        for key in plan.ignored:
            self.log.warning(
                "LTI launch for %s: ignored the custom parameter %s (its name cannot be "
                "parsed; mod_lti mangles names with multibyte characters)",
                plan.username,
                key,
            )
        self.log.info("%s", self.spawn_log_line(plan))
        self.lti_deadline = time.time() + plan.actlimit + ACTLIMIT_GRACE if plan.actlimit else None
        return await super().start()

    # -- the time limit, enforced by the hub too -----------------------------------

    async def poll(self) -> int | None:
        """Report the server as stopped once its time limit (plus grace) is over.

        JupyterHub then stops it (and removes the container) as for any server that
        ended; the image's start script normally ends it at the limit already.
        """
        status: int | None = await super().poll()
        if status is None and self.lti_deadline is not None and time.time() > self.lti_deadline:
            self.log.warning(
                "Server %s passed its activity time limit: the hub stops it", self.object_name
            )
            return 0
        return status

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self.lti_deadline is not None:
            state["lti_deadline"] = self.lti_deadline
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        deadline = state.get("lti_deadline")
        self.lti_deadline = float(deadline) if isinstance(deadline, int | float) else None

    def clear_state(self) -> None:
        super().clear_state()
        self.lti_deadline = None
