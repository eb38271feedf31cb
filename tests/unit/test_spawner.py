"""LTIContainerSpawner applies the plan to DockerSpawner; no Docker daemon is touched."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import GIB, moodle_launch

pytest.importorskip("dockerspawner")
jupyterhub_utils = pytest.importorskip("jupyterhub.utils")
jupyterhub_spawner = pytest.importorskip("jupyterhub.spawner")
web = pytest.importorskip("tornado.web")
traitlets_config = pytest.importorskip("traitlets.config")
docker_errors = pytest.importorskip("docker.errors")

from ltihub.spawner import LTIContainerSpawner  # noqa: E402


class FakeUser:
    def __init__(self, name: str, auth_state: Mapping[str, str] | None) -> None:
        self.name = name
        self.url = f"/user/{name}/"
        self.auth_state = auth_state

    async def get_auth_state(self) -> Mapping[str, str] | None:
        return self.auth_state


def make_spawner(
    name: str = "alice", auth_state: Mapping[str, str] | None = None, **config: Any
) -> Any:
    settings: dict[str, Any] = {
        "image": "jupyterhub/base:latest",
        "allowed_image_patterns": ["jupyterhub/*"],
        "max_cpu": 2.0,
        "max_mem": "4G",
        "use_host_accounts": False,
        "create_home": False,
    }
    settings.update(config)
    cfg = traitlets_config.Config({"LTIContainerSpawner": settings})
    state = moodle_launch(username=name) if auth_state is None else auth_state
    spawner = LTIContainerSpawner(user=FakeUser(name, state), config=cfg)
    spawner.docker = ENGINE  # never the machine's Docker daemon
    return spawner


def student_launch(**custom: str) -> dict[str, str]:
    base = {"lms_users": "*", "lms_teachers": "tom", "lms_vol_data": "Data", "lms_sub_hw": "Submit"}
    base.update(custom)
    return moodle_launch(**base)


def test_plan_applied_to_spawner_attributes() -> None:
    launch = student_launch(
        lms_image="jupyterhub/scipy : 1",
        lms_cpulimit="1",
        lms_memlimit="1,073,741,824",
        lms_cpugrnt="0.5",
        lms_memgrnt="524,288,000",
        lms_defurl="/tree",
    )
    spawner = make_spawner(auth_state=launch)
    plan = spawner.plan_launch(launch)
    spawner.apply_plan(plan, rand="r4nd0m00")
    assert spawner.image == "jupyterhub/scipy:1"
    assert spawner.cpu_limit == 1.0
    assert spawner.mem_limit == GIB
    assert spawner.cpu_guarantee == 0.5
    assert spawner.mem_guarantee == 524288000
    assert spawner.default_url == "/tree"
    assert spawner.notebook_dir == "/home/others/alice"
    assert spawner.object_name == "jupyterhub-12-7-moodle.example.test-r4nd0m00-alice"
    home = "/home/others/alice"
    works = f"{home}/jupyter/works/.volumes"
    assert spawner.volumes == {
        home: {"bind": home, "mode": "rw"},
        "lms_vol_data_12_moodle.example.test": {
            "bind": f"{works}/lms_vol_data_12_moodle.example.test",
            "mode": "rw",
        },
        "lms_sub_hw_12_moodle.example.test": {
            "bind": f"{works}/lms_sub_hw_12_moodle.example.test",
            "mode": "rw",
        },
    }
    assert spawner.extra_host_config["privileged"] is False
    assert spawner.extra_host_config["security_opt"] == ["no-new-privileges:true"]
    assert spawner.extra_host_config["mem_reservation"] == 524288000
    assert spawner.extra_create_kwargs == {"user": "root"}
    assert spawner.remove is True


def test_environment_merged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        jupyterhub_spawner.Spawner,
        "get_env",
        lambda self: {"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"},
    )
    spawner = make_spawner()
    spawner.apply_plan(spawner.plan_launch(moodle_launch()))
    env = spawner.get_env()
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/alice/"
    assert env["NB_USER"] == "alice" and env["NB_UID"] == "30042"
    assert env["GRANT_SUDO"] == "no"


def test_configured_privileged_is_overridden() -> None:
    spawner = make_spawner(
        extra_host_config={"privileged": True, "cap_add": ["NET_ADMIN"]},
        extra_create_kwargs={"hostname": "x"},
    )
    spawner.apply_plan(spawner.plan_launch(moodle_launch()))
    assert spawner.extra_host_config["privileged"] is False
    assert "NET_ADMIN" not in spawner.extra_host_config["cap_add"]  # the boundary wins
    assert spawner.extra_host_config["cap_drop"] == ["ALL"]
    assert spawner.extra_create_kwargs == {"hostname": "x", "user": "root"}


def test_callable_host_config_is_wrapped() -> None:
    async def host_config(spawner: Any) -> dict[str, Any]:
        return {"privileged": True}

    spawner = make_spawner(extra_host_config=host_config)
    spawner.apply_plan(spawner.plan_launch(moodle_launch()))
    result = asyncio.run(spawner.extra_host_config(spawner))
    assert result["privileged"] is False


def test_teacher_sudo_only_when_allowed() -> None:
    launch = moodle_launch(username="tom", lms_teachers="tom")
    spawner = make_spawner("tom", launch)
    spawner.apply_plan(spawner.plan_launch(launch))
    assert spawner.lti_plan.environment["GRANT_SUDO"] == "no"
    assert "no-new-privileges:true" in spawner.extra_host_config["security_opt"]
    allowed = make_spawner("tom", launch, allow_teacher_sudo=True)
    allowed.apply_plan(allowed.plan_launch(launch))
    assert allowed.lti_plan.environment["GRANT_SUDO"] == "yes"
    assert "security_opt" not in allowed.extra_host_config
    assert allowed.extra_host_config["privileged"] is False
    assert allowed.extra_host_config["cap_drop"] == ["ALL"]
    assert "AUDIT_WRITE" in allowed.extra_host_config["cap_add"]
    assert "AUDIT_WRITE" not in spawner.extra_host_config["cap_add"]


def test_every_container_is_confined() -> None:
    spawner = make_spawner(pids_limit=300, extra_host_config={"pids_limit": 0})
    spawner.apply_plan(spawner.plan_launch(moodle_launch()))
    config = spawner.extra_host_config
    assert config["pids_limit"] == 300
    assert config["cap_drop"] == ["ALL"]
    assert config["cap_add"] == [
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETPCAP",
        "SETUID",
    ]
    assert config["security_opt"] == ["no-new-privileges:true"]


def test_default_pids_limit_and_capabilities() -> None:
    spawner = make_spawner()
    spawner.apply_plan(spawner.plan_launch(moodle_launch()))
    assert spawner.extra_host_config["pids_limit"] == 512
    assert "NET_RAW" not in spawner.extra_host_config["cap_add"]


def test_raw_sockets_cannot_be_configured_back() -> None:
    spawner = make_spawner(capabilities=["CHOWN", "NET_RAW"])
    with pytest.raises(web.HTTPError) as info:
        spawner.plan_launch(moodle_launch())
    assert info.value.status_code == 500


def test_refusal_is_http_403_with_student_message() -> None:
    launch = moodle_launch(lms_image="evil/miner:latest")
    spawner = make_spawner(auth_state=launch)
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(spawner.run_auth_state_hook(launch))
    assert info.value.status_code == 403
    message, _html = jupyterhub_utils.format_exception(info.value)
    assert message.startswith("This activity asks for the image 'evil/miner:latest', which is not")
    assert "Traceback" not in message


def test_refusal_when_policy_refuses_over_limit() -> None:
    launch = moodle_launch(lms_cpulimit="8")
    spawner = make_spawner(auth_state=launch, over_limit="refuse")
    with pytest.raises(web.HTTPError) as info:
        spawner.plan_launch(launch)
    assert "8 CPUs" in info.value.jupyterhub_message
    clamp = make_spawner(auth_state=launch)
    assert clamp.plan_launch(launch).cpu_limit == 2.0


def test_no_auth_state_is_refused() -> None:
    spawner = make_spawner()
    with pytest.raises(web.HTTPError) as info:
        spawner.plan_launch(None)
    assert "Moodle" in info.value.jupyterhub_message


def test_bad_config_is_500_with_generic_message() -> None:
    spawner = make_spawner(default_umask="nonsense")
    with pytest.raises(web.HTTPError) as info:
        spawner.plan_launch(moodle_launch())
    assert info.value.status_code == 500
    assert "not configured correctly" in info.value.jupyterhub_message


class FakeEngine:
    """The two read-only engine calls the spawner makes, over a fixed image list."""

    def __init__(self, *images: tuple[str, list[str]]) -> None:
        self.images: list[dict[str, Any]] = [
            {"Id": image_id, "RepoTags": tags} for image_id, tags in images
        ]
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((method, args))
        if method == "images":
            return self.images
        if method == "inspect_image":
            ref = args[0]
            for info in self.images:
                tags = info["RepoTags"]
                names = set(tags) | {t.removesuffix(":latest") for t in tags}
                if ref in names or info["Id"] == ref or info["Id"][7:].startswith(ref):
                    return info
            raise docker_errors.ImageNotFound(f"No such image: {ref}")
        raise AssertionError(f"the spawner must not call {method}")


R4_ID = "sha256:" + "ab" * 32
ENGINE = FakeEngine(
    (R4_ID, ["jupyterhub/r:4"]),
    ("sha256:" + "cd" * 32, ["jupyterhub/base:latest"]),
    ("sha256:" + "ef" * 32, []),
    ("sha256:" + "12" * 32, ["Course/Lab:V1"]),
)


def test_start_builds_and_applies_without_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def fake_start(self: Any) -> tuple[str, int]:
        calls.append(self.object_name)
        return ("127.0.0.1", 8888)

    monkeypatch.setattr("dockerspawner.DockerSpawner.start", fake_start)
    spawner = make_spawner(auth_state=student_launch(lms_image="jupyterhub/r : 4"))
    assert asyncio.run(spawner.start()) == ("127.0.0.1", 8888)
    assert spawner.image == "jupyterhub/r:4"
    assert calls and calls[0].startswith("jupyterhub-12-7-moodle.example.test-")
    assert calls[0].endswith("-alice")


@pytest.mark.parametrize(
    ("asked", "started"),
    [
        ("jupyterhub/r : 4", "jupyterhub/r:4"),
        ("JupyterHub/R:4", "jupyterhub/r:4"),
        ("course/lab : v1", "Course/Lab:V1"),  # the module lower-cased the engine's tag
        ("efefefefefef", "sha256:" + "ef" * 32),  # an untagged image by its short ID
        ("sha256:" + "ab" * 32, R4_ID),
    ],
)
def test_any_image_on_the_engine(asked: str, started: str) -> None:
    launch = student_launch(lms_image=asked)
    spawner = make_spawner(auth_state=launch)
    asyncio.run(spawner.run_auth_state_hook(launch))
    assert spawner.lti_plan.image == started


def test_image_not_on_the_engine_is_refused_and_not_pulled() -> None:
    engine = FakeEngine(*[(i["Id"], i["RepoTags"]) for i in ENGINE.images])
    launch = student_launch(lms_image="jupyterhub/new : 1")
    spawner = make_spawner(auth_state=launch)
    spawner.docker = engine
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(spawner.run_auth_state_hook(launch))
    assert info.value.status_code == 403
    assert info.value.jupyterhub_message == (
        "This activity asks for the image 'jupyterhub/new:1', which is not on this JupyterHub "
        "(images are never downloaded for an activity). Please tell your teacher."
    )
    assert {method for method, _ in engine.calls} <= {"inspect_image", "images"}


def test_patterns_only_hub_checks_the_tags_of_an_id() -> None:
    tagged = student_launch(lms_image=R4_ID)
    spawner = make_spawner(auth_state=tagged, any_present_image=False)
    asyncio.run(spawner.run_auth_state_hook(tagged))  # jupyterhub/r:4 matches jupyterhub/*
    untagged = student_launch(lms_image="efefefefefef")
    spawner = make_spawner(auth_state=untagged, any_present_image=False)
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(spawner.run_auth_state_hook(untagged))
    assert "does not offer" in info.value.jupyterhub_message


def test_default_image_is_not_looked_up() -> None:
    spawner = make_spawner()
    spawner.docker = FakeEngine()
    asyncio.run(spawner.run_auth_state_hook(moodle_launch()))
    assert spawner.lti_plan.image == "jupyterhub/base:latest"
    assert spawner.docker.calls == []


def test_spawn_log_line_names_adjustments() -> None:
    launch = student_launch(
        lms_cpulimit="0.0",
        lms_memlimit="0",
        lms_sub_____________1_close_1893452="00",
    )
    spawner = make_spawner(auth_state=launch)
    line = spawner.spawn_log_line(spawner.plan_launch(launch))
    assert "cpu=2 mem=4294967296 actlimit=6000" in line
    assert "lms_cpulimit=0 (no limit upstream) -> the hub maximum 2 CPUs" in line
    assert "lms_memlimit=0 (no limit upstream) -> the hub maximum 4 GiB" in line
    assert "ignored_keys=['lms_sub_____________1_close_1893452']" in line


def test_hub_stops_a_server_past_its_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    async def running(self: Any) -> None:
        return None

    async def fake_start(self: Any) -> tuple[str, int]:
        return ("127.0.0.1", 8888)

    monkeypatch.setattr("dockerspawner.DockerSpawner.poll", running)
    monkeypatch.setattr("dockerspawner.DockerSpawner.start", fake_start)
    spawner = make_spawner(auth_state=student_launch(lms_actlimit="600"))
    asyncio.run(spawner.start())
    assert spawner.lti_deadline is not None
    assert asyncio.run(spawner.poll()) is None  # within the limit: running
    state = spawner.get_state()
    assert state["lti_deadline"] == spawner.lti_deadline
    restarted = make_spawner()  # the hub restarted: the deadline comes from the state
    restarted.load_state(state)
    monkeypatch.setattr(time, "time", lambda: state["lti_deadline"] + 1)
    assert asyncio.run(restarted.poll()) == 0
    restarted.clear_state()
    assert restarted.lti_deadline is None and asyncio.run(restarted.poll()) is None


def test_no_time_limit_no_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_start(self: Any) -> tuple[str, int]:
        return ("127.0.0.1", 8888)

    monkeypatch.setattr("dockerspawner.DockerSpawner.start", fake_start)
    spawner = make_spawner(auth_state=student_launch(lms_actlimit="0"), default_actlimit=0)
    asyncio.run(spawner.start())
    assert spawner.lti_deadline is None and "lti_deadline" not in spawner.get_state()


def test_create_object_sees_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run DockerSpawner.create_object with a fake client: what Docker would be sent."""
    monkeypatch.setattr(jupyterhub_spawner.Spawner, "get_env", lambda self: {})

    class FakeClient:
        def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
            return kwargs

    sent: dict[str, Any] = {}

    async def fake_docker(method: str, *args: Any, **kwargs: Any) -> dict[str, str]:
        sent[method] = kwargs
        return {"Id": "0123456789ab"}

    monkeypatch.setattr(LTIContainerSpawner, "_client", FakeClient())
    spawner = make_spawner(auth_state=student_launch(), cmd=["start-singleuser.sh"])
    monkeypatch.setattr(spawner, "docker", fake_docker)
    spawner.apply_plan(spawner.plan_launch(student_launch()), rand="abcdefgh")
    asyncio.run(spawner.create_object())
    created = sent["create_container"]
    host = created["host_config"]
    assert created["name"] == "jupyterhub-12-7-moodle.example.test-abcdefgh-alice"
    assert created["image"] == "jupyterhub/base:latest"
    assert created["user"] == "root"
    assert created["environment"]["NB_VOLUMES"].startswith(".volumes/lms_vol_data_12_")
    assert host["privileged"] is False
    assert host["mem_limit"] == 4 * GIB
    assert host["cpu_quota"] == 200_000
    assert host["binds"]["/home/others/alice"] == {"bind": "/home/others/alice", "mode": "rw"}
    assert "lms_sub_hw_12_moodle.example.test" in host["binds"]


def test_ensure_home_creates_tree(tmp_path: Any) -> None:
    spawner = make_spawner(home_root=str(tmp_path), create_home=True)
    plan = spawner.plan_launch(moodle_launch())
    spawner.ensure_home(plan)
    assert (tmp_path / "others" / "alice" / "jupyter" / "works").is_dir()
    assert ((tmp_path / "others" / "alice").stat().st_mode & 0o777) == 0o700
