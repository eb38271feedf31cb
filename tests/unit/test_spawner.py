"""LTIContainerSpawner applies the plan to DockerSpawner; no Docker daemon is touched."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from conftest import GIB, moodle_launch

pytest.importorskip("dockerspawner")
jupyterhub_utils = pytest.importorskip("jupyterhub.utils")
jupyterhub_spawner = pytest.importorskip("jupyterhub.spawner")
web = pytest.importorskip("tornado.web")
traitlets_config = pytest.importorskip("traitlets.config")

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
    return LTIContainerSpawner(user=FakeUser(name, state), config=cfg)


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
    assert spawner.extra_host_config["cap_add"] == ["NET_ADMIN"]
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


def test_refusal_is_http_403_with_student_message() -> None:
    launch = moodle_launch(lms_image="evil/miner:latest")
    spawner = make_spawner(auth_state=launch)
    with pytest.raises(web.HTTPError) as info:
        asyncio.run(spawner.run_auth_state_hook(launch))
    assert info.value.status_code == 403
    message, _html = jupyterhub_utils.format_exception(info.value)
    assert message.startswith("This activity asks for the image 'evil/miner:latest'")
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


def test_start_builds_and_applies_without_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def fake_start(self: Any) -> tuple[str, int]:
        calls.append(self.object_name)
        return ("127.0.0.1", 8888)

    monkeypatch.setattr("dockerspawner.DockerSpawner.start", fake_start)
    spawner = make_spawner(auth_state=student_launch(lms_image="jupyterhub/r:4"))
    assert asyncio.run(spawner.start()) == ("127.0.0.1", 8888)
    assert spawner.image == "jupyterhub/r:4"
    assert calls and calls[0].startswith("jupyterhub-12-7-moodle.example.test-")
    assert calls[0].endswith("-alice")


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
