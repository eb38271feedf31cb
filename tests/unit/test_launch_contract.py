"""Contract: launches exactly as real Moodle 4.x + mod_lticontainer 1.6.3 produce them.

Each case is the activity's custom-parameter text as mod_lticontainer stores it
(``instructorcustomparameters``: its own sanitising already applied, CRLF lines), turned
into launch fields the way mod_lti does (``ltihub.launch``: its byte/character split
bug and per-byte name mangling included), then planned.  The same cases run as real
launches on a hub in molecule/hub/tests/test_hub_contract.py.
"""

from __future__ import annotations

import pytest
from conftest import GIB, NOW, PlanFactory

from ltihub.launch import build_launch_params, moodle_custom_name, parse_custom_text
from ltihub.params import SpawnPlan

HOST = "moodle.example.test"
CLOSE_PAST = str(int(NOW) - 3600)


def moodle_text(*lines: str) -> str:
    """The module's standard lines first (lticontainer_join_custom_params), then ours."""
    standard = [
        "lms_users=*",
        "lms_teachers=tom",
        "lms_image=",
        "lms_cpulimit=",
        "lms_memlimit=",
        "lms_defurl=",
        "lms_userid=",
        "lms_grpid=",
        "lms_grpname=",
        "lms_sessioninfo=3,7",
        "lms_iframe=1",
    ]
    return "\r\n".join([*standard, *lines])


def launch_of(text: str, username: str = "alice", teacher: bool = False) -> dict[str, str]:
    """The auth_state ltiauthenticator keeps for this launch (form fields, no oauth_*)."""
    custom = parse_custom_text(text)
    custom.update(
        {
            "lms_course": "データサイエンス 1",
            "lms_ltiname": "第1回",
            "lms_serverurl": f"https://{HOST}:443",
            "lms_serverpath": "",
            "lms_rpctoken": "",
        }
    )
    return build_launch_params(
        username=username,
        user_id="42",
        teacher=teacher,
        course_id="12",
        course_title="データサイエンス 1",
        resource_link_id="5",
        moodle_url=f"https://{HOST}",
        custom=custom,
    )


def plan_of(make_plan: PlanFactory, *lines: str, user: str = "alice") -> SpawnPlan:
    return make_plan(launch_of(moodle_text(*lines), user, teacher=user == "tom"), username=user)


def test_mod_lti_mangles_a_multibyte_close_key_as_in_real_moodle() -> None:
    launch = launch_of(moodle_text("lms_sub_レポート1_close=1893452400"))
    assert launch["custom_lms_sub_____________1_close_1893452"] == "00"
    assert moodle_custom_name("lms_vol_") == "custom_lms_vol_"


def test_japanese_submission_folder_with_close_date(make_plan: PlanFactory) -> None:
    """Issue 12: refused for everybody before; the mangled close key is ignored now."""
    plan = plan_of(
        make_plan,
        "lms_vol_=課題",
        "lms_sub_1=レポート1",
        "lms_sub_レポート1_close=1893452400",
    )
    assert plan.mounts == {
        f"lms_vol__12_{HOST}": f"/home/others/alice/jupyter/works/.volumes/lms_vol__12_{HOST}",
        f"lms_sub_1_12_{HOST}": f"/home/others/alice/jupyter/works/.volumes/lms_sub_1_12_{HOST}",
    }
    assert plan.environment["NB_VOLUMES"] == f".volumes/lms_vol__12_{HOST}:課題"
    assert plan.environment["NB_SUBMITS"] == f".volumes/lms_sub_1_12_{HOST}:レポート1"
    assert plan.ignored == ("'lms_sub_____________1_close_1893452'",)
    assert plan.environment["LTI_COURSE"] == "データサイエンス 1"
    assert plan.environment["LTI_NAME"] == "第1回"


def test_ascii_close_key_still_closes(make_plan: PlanFactory) -> None:
    lines = ("lms_sub_report=Report", f"lms_sub_report_close={CLOSE_PAST}")
    assert plan_of(make_plan, *lines).environment["NB_SUBMITS"] == ""
    assert plan_of(make_plan, *lines, user="tom").environment["NB_SUBMITS"].endswith(":Report")


def test_access_names_as_the_module_leaves_them(make_plan: PlanFactory) -> None:
    """The module strips *;: $!"'&+=|\\<>?^%~`(){}[] and line breaks; we also strip /."""
    plan = plan_of(
        make_plan,
        "lms_vol_data=第1回/データ",
        "lms_vol_keys=-解答",
        "lms_prs_data=自分用.v2",
        "lms_sub_x=提出-#1",
    )
    env = plan.environment
    assert env["NB_VOLUMES"] == f".volumes/lms_vol_data_12_{HOST}:第1回データ"
    assert env["NB_PRSNALS"] == f".volumes/lms_prs_data_12_{HOST}:自分用.v2"
    assert env["NB_SUBMITS"] == f".volumes/lms_sub_x_12_{HOST}:提出-#1"
    teacher = plan_of(make_plan, "lms_vol_keys=-解答", user="tom")
    assert teacher.environment["NB_VOLUMES"] == f".volumes/lms_vol_keys_12_{HOST}:-解答"


def test_volume_with_own_user_list(make_plan: PlanFactory) -> None:
    lines = ("lms_vol_data=Data:alice, bob",)
    assert plan_of(make_plan, *lines).mounts
    assert not plan_of(make_plan, *lines, user="carol").mounts


@pytest.mark.parametrize(
    ("cpu", "mem", "cpus", "memory"),
    [
        ("0.0", "0", 2.0, 4 * GIB),  # "no limit" in the module -> this hub's maximum
        ("0.5", "1,073,741,824", 0.5, GIB),
        ("1", "209,715,200", 1.0, 209715200),
        ("10", "17,179,869,184", 2.0, 4 * GIB),  # above the hub maximum: clamped
        ("", "", 2.0, 4 * GIB),  # "default": the hub default (none set here: maximum)
    ],
)
def test_limits_as_the_module_writes_them(
    make_plan: PlanFactory, cpu: str, mem: str, cpus: float, memory: int
) -> None:
    plan = plan_of(make_plan, f"lms_cpulimit={cpu}", f"lms_memlimit={mem}")
    assert (plan.cpu_limit, plan.mem_limit) == (cpus, memory)
    if cpu == "0.0":
        assert "lms_cpulimit=0 (no limit upstream) -> the hub maximum 2 CPUs" in plan.notes
        assert "lms_memlimit=0 (no limit upstream) -> the hub maximum 4 GiB" in plan.notes


@pytest.mark.parametrize(
    ("image", "planned"),
    [
        ("jupyterhub/lab : 4.6.6", "jupyterhub/lab:4.6.6"),
        ("jupyterhub/lab:4.6.6", "jupyterhub/lab:4.6.6"),
        (
            "registry.example.test:5000/jupyterhub-ds : v2",
            "registry.example.test:5000/jupyterhub-ds:v2",
        ),
        ("0123456789ab", "0123456789ab"),  # an untagged image: the module sends its ID
        ("sha256:" + "0f" * 32, "sha256:" + "0f" * 32),
        ("JupyterHub/Lab : Latest", "jupyterhub/lab:latest"),
    ],
)
def test_images_as_the_module_sends_them(make_plan: PlanFactory, image: str, planned: str) -> None:
    plan = plan_of(make_plan, f"lms_image={image}")
    assert plan.image == planned and plan.image_from_activity


def test_default_everything(make_plan: PlanFactory) -> None:
    """An activity saved with every setting on "default"."""
    plan = plan_of(make_plan)
    assert plan.image == "jupyterhub/base:latest" and not plan.image_from_activity
    assert plan.default_url == "/lab"
    assert plan.actlimit == 3600  # the hub default (conftest policy)
    assert plan.iframe
    assert (plan.lticontainer_id, plan.lti_id) == ("3", "7")
    assert plan.notes == () and plan.ignored == ()


def test_notebook_start_page_and_time_limit(make_plan: PlanFactory) -> None:
    plan = plan_of(make_plan, "lms_defurl=/tree", "lms_actlimit=600")
    assert plan.default_url == "/tree"
    assert plan.environment["NB_ACTLIMIT"] == "600"
