"""Launches exactly as real Moodle + mod_lticontainer 1.6.3 produce them, on a real hub.

The same parameter sets as tests/unit/test_launch_contract.py. ltihub-launch splits and
names each ``--custom`` line as mod_lti does (multibyte names mangled per byte, the
name/value split at the wrong place), so ``lms_sub_レポート1_close=1893452400`` arrives as
``custom_lms_sub_____________1_close_1893452`` = ``00``, as from a real Moodle.

Each test uses its own user and stops that user's server at the end.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hubtest import Hub, byte_size, env_of


def _first_hub() -> str:
    with open(os.environ["MOLECULE_INVENTORY_FILE"]) as handle:
        inventory = yaml.safe_load(handle)
    return str(next(iter(inventory["jupyterhub"]["hosts"])))


testinfra_hosts = [f"ansible://{_first_hub()}"]
HOST = "moodle.example.test"
IMAGE = "jupyterhub/lab:4.6.6"
MODULE_LINES = [  # what lticontainer_join_custom_params always writes
    "--custom", "lms_users=*",
    "--custom", "lms_teachers=ctrteach",
    "--custom", "lms_defurl=",
    "--custom", "lms_sessioninfo=3,7",
    "--custom", "lms_iframe=1",
]


@pytest.fixture(scope="module")
def hub(host: Any) -> Hub:
    return Hub(host)


@pytest.fixture
def stop_after(hub: Hub) -> Iterator[list[str]]:
    users: list[str] = []
    yield users
    for user in users:
        hub.api(f"/users/{user}/server", method="DELETE")


def vol(kind: str, name: str) -> str:
    return f"lms_{kind}_{name}_2_{HOST}"


def cpus(info: dict[str, Any]) -> float:
    host = info["HostConfig"]
    if host.get("NanoCpus"):
        return float(host["NanoCpus"]) / 1e9
    return float(host["CpuQuota"]) / float(host["CpuPeriod"])


def test_japanese_folders_with_close_date(hub: Hub, host: Any, stop_after: list[str]) -> None:
    """Issue 12: this activity was refused for every student and teacher."""
    user = "ctrstud1"
    stop_after.append(user)
    report = hub.launch(
        user, *MODULE_LINES,
        "--custom", "lms_vol_=課題",
        "--custom", "lms_sub_1=レポート1",
        "--custom", "lms_sub_レポート1_close=1893452400",
        "--custom", "lms_vol_data=第1回/データ",
    )
    assert report["result"] == "ok", report
    info = hub.inspect(hub.container_of(user))
    names = {m.get("Name") for m in info["Mounts"]}
    assert {vol("vol", ""), vol("sub", "1"), vol("vol", "data")} <= names
    env = env_of(info)
    assert f".volumes/{vol('vol', '')}:課題" in env["NB_VOLUMES"].split()
    assert f".volumes/{vol('vol', 'data')}:第1回データ" in env["NB_VOLUMES"].split()
    assert env["NB_SUBMITS"] == f".volumes/{vol('sub', '1')}:レポート1"
    works = f"/home/others/{user}/jupyter/works"
    name = hub.container_of(user)
    assert hub.exec(name, f"readlink {works}/課題") == f".volumes/{vol('vol', '')}"
    log = host.check_output("journalctl -u jupyterhub --no-pager -o cat -n 400")
    assert "lms_sub_____________1_close_1893452" in log  # ignored, and said so


def test_no_limit_zero_gives_the_hub_maximum(hub: Hub, stop_after: list[str]) -> None:
    user = "ctrstud2"
    stop_after.append(user)
    report = hub.launch(
        user, *MODULE_LINES,
        "--custom", f"lms_image={IMAGE.replace(':', ' : ')}",
        "--custom", "lms_cpulimit=0.0",
        "--custom", "lms_memlimit=0",
    )
    assert report["result"] == "ok", report
    info = hub.inspect(hub.container_of(user))
    assert info["HostConfig"]["Memory"] == byte_size(hub.cfg["max_mem"])
    assert cpus(info) == hub.cfg["max_cpu"]
    env = env_of(info)
    assert env["NB_ACTLIMIT"] == "6000"  # the hub's default activity time limit


def test_image_by_id_and_upper_case(hub: Hub, host: Any, stop_after: list[str]) -> None:
    full_id = host.check_output(f"docker image inspect --format '{{{{.Id}}}}' {IMAGE}")
    assert full_id.startswith("sha256:")
    user = "ctrstud3"
    stop_after.append(user)
    report = hub.launch(user, *MODULE_LINES, "--custom", f"lms_image={full_id[7:19]}")
    assert report["result"] == "ok", report
    assert hub.inspect(hub.container_of(user))["Image"] == full_id
    user = "ctrstud4"
    stop_after.append(user)
    report = hub.launch(user, *MODULE_LINES, "--custom", "lms_image=JupyterHub/Lab : 4.6.6")
    assert report["result"] == "ok", report
    assert hub.inspect(hub.container_of(user))["Image"] == full_id


def test_image_not_present_is_refused_and_not_pulled(hub: Hub, host: Any) -> None:
    images = host.check_output("docker images -q --no-trunc | sort")
    before = hub.containers()
    report = hub.launch("ctrstud5", *MODULE_LINES, "--custom", "lms_image=jupyterhub/absent : 1")
    assert report["result"] == "refused" and report["http_status"] == 403, report
    assert "'jupyterhub/absent:1', which is not on this JupyterHub" in report["message"]
    time.sleep(2)
    assert hub.containers() == before
    assert host.check_output("docker images -q --no-trunc | sort") == images


def test_only_dots_left_is_refused_with_a_sentence(hub: Hub) -> None:
    before = hub.containers()
    report = hub.launch("ctrstud6", *MODULE_LINES, "--custom", "lms_vol_data=../")
    assert report["result"] == "refused" and report["http_status"] == 403, report
    assert "folder name" in report["message"] and report["message"].endswith(".")
    assert hub.containers() == before
    assert shlex.quote(report["message"])  # one printable sentence
