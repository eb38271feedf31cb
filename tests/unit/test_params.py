"""Every lticontainer protocol parameter, the odd formats, and every refusal."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import GIB, NOW, PlanFactory, moodle_launch

from ltihub import nbenv
from ltihub.accounts import StaticAccounts
from ltihub.errors import LaunchRefused
from ltihub.params import build_plan
from ltihub.policy import START_CAPABILITIES, HubPolicy
from ltihub.validate import sanitise_access_name

ENV_KEYS = [
    "NB_UID",
    "NB_USER",
    "NB_GID",
    "NB_GROUP",
    "NB_DIR",
    "NB_WRKDIR",
    "NB_ACTLIMIT",
    "NB_THRGID",
    "NB_THRGROUP",
    "NB_OPTION",
    "NB_HOSTNAME",
    "NB_TEACHER",
    "NB_UMASK",
    "NB_VOLUMES",
    "NB_SUBMITS",
    "NB_PRSNALS",
    "LTI_CTR_ID",
    "LTI_ID",
    "LTI_COURSE",
    "LTI_NAME",
    "PRJCT_DIR",
    "WORK_DIR",
    "VOLUME_DIR",
    "GRANT_SUDO",
    "CONDA_DIR",
    "TZ",
]


def refused(make_plan: PlanFactory, launch: dict[str, str], **kw: object) -> str:
    with pytest.raises(LaunchRefused) as info:
        make_plan(launch, **kw)
    message = str(info.value)
    assert message.endswith("."), message
    assert "Traceback" not in message
    assert "0123456789abcdef" not in message  # never the rpc token
    return message


# -- the whole plan ----------------------------------------------------------------


def test_student_plan_environment(make_plan: PlanFactory) -> None:
    plan = make_plan()
    env = plan.environment
    assert sorted(env) == sorted(ENV_KEYS)
    assert env["NB_USER"] == "alice"
    assert env["NB_UID"] == "30042"  # 30000 + user_id
    assert env["NB_GID"] == "30000"
    assert env["NB_GROUP"] == "others"
    assert env["NB_DIR"] == "/home/others/alice"
    assert env["NB_WRKDIR"] == "/home/others/alice/jupyter/works"
    assert env["NB_ACTLIMIT"] == "3600"
    assert env["NB_THRGID"] == "7000"
    assert env["NB_THRGROUP"] == "TEACHER"
    assert env["NB_HOSTNAME"] == "moodle.example.test"
    assert env["NB_TEACHER"] == ""
    assert env["NB_UMASK"] == "0027"
    assert env["LTI_CTR_ID"] == "3"
    assert env["LTI_ID"] == "7"
    assert env["LTI_COURSE"] == "Data Science 1"
    assert env["LTI_NAME"] == "Week 1"
    assert env["PRJCT_DIR"] == "jupyter"
    assert env["WORK_DIR"] == "works"
    assert env["VOLUME_DIR"] == ".volumes"
    assert env["GRANT_SUDO"] == "no"
    assert env["CONDA_DIR"] == "/opt/conda"
    assert env["TZ"] == "UTC"
    assert plan.image == "jupyterhub/base:latest"
    assert plan.default_url == "/lab"
    assert plan.cpu_limit == 2.0 and plan.mem_limit == 4 * GIB  # nothing asked: hub max
    assert not plan.is_teacher and not plan.grant_sudo
    assert plan.home_dir == "/home/others/alice"
    assert plan.mounts == {}


def test_plan_is_frozen_and_holds_no_secret(make_plan: PlanFactory) -> None:
    plan = make_plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.image = "evil"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.environment["NB_UID"] = "0"  # type: ignore[index]
    assert all("0123456789abcdef" not in value for value in plan.environment.values())


def test_container_name(make_plan: PlanFactory) -> None:
    plan = make_plan(moodle_launch(username="bob@uni.example"), username="bob@uni.example")
    assert plan.container_name("ab12cd34") == (
        "jupyterhub-12-7-moodle.example.test-ab12cd34-bob-uni.example"
    )
    assert plan.container_name_parts == (
        "jupyterhub",
        "12",
        "7",
        "moodle.example.test",
        "bob-uni.example",
    )


# -- Moodle host, ids, session info, text fields ------------------------------------------


def test_moodle_host_falls_back_to_serverurl_then_policy(make_plan: PlanFactory) -> None:
    launch = moodle_launch()
    del launch["lis_outcome_service_url"]
    launch["custom_lms_serverurl"] = "http://Other.Example.Test:8080"
    assert make_plan(launch).lms_host == "other.example.test"
    del launch["custom_lms_serverurl"]
    assert make_plan(launch).lms_host == "localhost"


@pytest.mark.parametrize("url", ["https://bad_host!/x", "https://[::1]/mod/lti", "not a url"])
def test_bad_moodle_host_refused(make_plan: PlanFactory, url: str) -> None:
    launch = moodle_launch()
    launch["lis_outcome_service_url"] = url
    refused(make_plan, launch)


def test_session_info(make_plan: PlanFactory) -> None:
    plan = make_plan(moodle_launch(lms_sessioninfo=" 10 , 22 "))
    assert (plan.lticontainer_id, plan.lti_id) == ("10", "22")
    launch = moodle_launch()
    del launch["custom_lms_sessioninfo"]
    assert make_plan(launch).environment["LTI_ID"] == "0"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("custom_lms_sessioninfo", "3;7"),
        ("custom_lms_sessioninfo", "a,b"),
        ("context_id", "12abc"),
        ("user_id", "4x2"),
        ("ext_user_userid", "-5"),
        ("ext_user_groupid", "1e3"),
        ("custom_lms_actlimit", "1h"),
        ("custom_lms_sub_exam_close", "tomorrow"),
    ],
)
def test_non_numeric_values_refused(make_plan: PlanFactory, field: str, value: str) -> None:
    launch = moodle_launch(lms_sub_exam="Exam")
    launch[field] = value
    refused(make_plan, launch)


def test_text_fields_cleaned(make_plan: PlanFactory) -> None:
    plan = make_plan(moodle_launch(lms_course="A\nB\\C\x00", lms_ltiname="課題 1"))
    assert plan.environment["LTI_COURSE"] == "ABC"
    assert plan.environment["LTI_NAME"] == "課題 1"


def test_options_and_iframe(make_plan: PlanFactory) -> None:
    plan = make_plan(moodle_launch(lms_options="doubleargs", lms_iframe="1"))
    assert plan.environment["NB_OPTION"] == "doubleargs"
    assert plan.iframe
    assert not make_plan().iframe
    cleaned = make_plan(moodle_launch(lms_options="x; rm -rf /"))
    assert cleaned.environment["NB_OPTION"] == "xrm-rf"
    assert any("lms_options cleaned" in note for note in cleaned.notes)


# -- image ---------------------------------------------------------------------------


def test_image_repo_colon_tag_spacing(make_plan: PlanFactory) -> None:
    assert make_plan(moodle_launch(lms_image="jupyterhub/scipy : 2024")).image == (
        "jupyterhub/scipy:2024"
    )
    image = "registry.example.test/course-ds : v1"
    assert make_plan(moodle_launch(lms_image=image)).image == ("registry.example.test/course-ds:v1")


def test_image_without_tag_matches_latest(make_plan: PlanFactory, policy: HubPolicy) -> None:
    pol = dataclasses.replace(policy, allowed_images=("jupyterhub/scipy:latest",))
    assert make_plan(moodle_launch(lms_image="jupyterhub/scipy"), pol=pol).image == (
        "jupyterhub/scipy"
    )


def test_patterns_only_mode(make_plan: PlanFactory, policy: HubPolicy) -> None:
    """any_present_image off: the default image and the patterns, nothing else."""
    pol = dataclasses.replace(policy, allowed_images=(), any_present_image=False)
    assert make_plan(moodle_launch(lms_image="jupyterhub/base : latest"), pol=pol).image == (
        "jupyterhub/base:latest"
    )
    message = refused(make_plan, moodle_launch(lms_image="jupyterhub/other:1"), pol=pol)
    assert "does not offer" in message
    pol = dataclasses.replace(policy, any_present_image=False)
    assert make_plan(moodle_launch(lms_image="jupyterhub/other:1"), pol=pol).image
    refused(make_plan, moodle_launch(lms_image="evil/miner:latest"), pol=pol)
    # an ID cannot be matched by name here: the spawner checks it against the engine
    plan = make_plan(moodle_launch(lms_image="0123456789ab"), pol=pol)
    assert plan.image == "0123456789ab" and plan.image_from_activity


def test_any_image_name_passes_the_planner(make_plan: PlanFactory) -> None:
    """By default the engine decides (present or not); the planner checks the syntax."""
    plan = make_plan(moodle_launch(lms_image="Evil/Miner : Latest"))
    assert plan.image == "evil/miner:latest" and plan.image_from_activity
    assert not make_plan().image_from_activity


@pytest.mark.parametrize(
    "image", ["jupyterhub/x;rm", "../x", "x/", "-x", "a:b:c", "UPPER/..", "sha256:", "a" * 300]
)
def test_bad_image_refused(make_plan: PlanFactory, image: str) -> None:
    message = refused(make_plan, moodle_launch(lms_image=image))
    assert "image" in message


def test_no_image_at_all_refused(make_plan: PlanFactory, policy: HubPolicy) -> None:
    refused(make_plan, moodle_launch(), pol=dataclasses.replace(policy, default_image=""))


# -- cpu, memory, activity limit, guarantees ----------------------------------------------


def test_cpu_values(make_plan: PlanFactory, policy: HubPolicy) -> None:
    assert make_plan(moodle_launch(lms_cpulimit="0.5")).cpu_limit == 0.5
    assert make_plan(moodle_launch(lms_cpulimit="0.0")).cpu_limit == 2.0  # no limit -> max
    assert make_plan(moodle_launch(lms_cpulimit="0")).cpu_limit == 2.0
    unlimited = dataclasses.replace(policy, max_cpu=None)
    assert make_plan(moodle_launch(lms_cpulimit="0"), pol=unlimited).cpu_limit is None
    assert make_plan(moodle_launch(lms_cpulimit="16"), pol=unlimited).cpu_limit == 16


def test_cpu_over_limit_clamp_and_refuse(make_plan: PlanFactory, policy: HubPolicy) -> None:
    plan = make_plan(moodle_launch(lms_cpulimit="8"))
    assert plan.cpu_limit == 2.0
    assert any("clamped" in note for note in plan.notes)
    pol = dataclasses.replace(policy, over_limit="refuse")
    message = refused(make_plan, moodle_launch(lms_cpulimit="8"), pol=pol)
    assert "8 CPUs" in message and "2 CPUs" in message


@pytest.mark.parametrize("value", ["abc", "-1", "1e3", "nan", "inf", "1,5", "0.001"])
def test_bad_cpu_refused(make_plan: PlanFactory, value: str) -> None:
    refused(make_plan, moodle_launch(lms_cpulimit=value))


def test_memory_with_commas(make_plan: PlanFactory) -> None:
    assert make_plan(moodle_launch(lms_memlimit="1,073,741,824")).mem_limit == GIB
    assert make_plan(moodle_launch(lms_memlimit="209715200")).mem_limit == 209715200
    assert make_plan(moodle_launch(lms_memlimit="0")).mem_limit == 4 * GIB


def test_memory_over_limit(make_plan: PlanFactory, policy: HubPolicy) -> None:
    assert make_plan(moodle_launch(lms_memlimit="17,179,869,184")).mem_limit == 4 * GIB
    pol = dataclasses.replace(policy, over_limit="refuse")
    message = refused(make_plan, moodle_launch(lms_memlimit="17,179,869,184"), pol=pol)
    assert "16 GiB" in message and "4 GiB" in message


@pytest.mark.parametrize("value", ["1,0737,41824", "1.5", "512M", "-1", ",123", "1000"])
def test_bad_memory_refused(make_plan: PlanFactory, value: str) -> None:
    refused(make_plan, moodle_launch(lms_memlimit=value))


def test_defaults_when_not_given(make_plan: PlanFactory, policy: HubPolicy) -> None:
    pol = dataclasses.replace(policy, default_cpu=1.0, default_mem=GIB)
    plan = make_plan(moodle_launch(), pol=pol)
    assert (plan.cpu_limit, plan.mem_limit) == (1.0, GIB)


def test_actlimit(make_plan: PlanFactory, policy: HubPolicy) -> None:
    assert make_plan(moodle_launch(lms_actlimit="600")).environment["NB_ACTLIMIT"] == "600"
    assert make_plan(moodle_launch(lms_actlimit="0")).actlimit == 7200  # none -> hub max
    assert make_plan(moodle_launch(lms_actlimit="99999")).actlimit == 7200
    no_max = dataclasses.replace(policy, max_actlimit=None)
    assert make_plan(moodle_launch(lms_actlimit="0"), pol=no_max).actlimit == 0
    pol = dataclasses.replace(policy, over_limit="refuse")
    refused(make_plan, moodle_launch(lms_actlimit="99999"), pol=pol)


def test_guarantees(make_plan: PlanFactory, policy: HubPolicy) -> None:
    plan = make_plan(moodle_launch(lms_cpulimit="1", lms_cpugrnt="0.5", lms_memgrnt="524,288,000"))
    assert plan.cpu_guarantee == 0.5
    assert plan.mem_guarantee == 524288000
    capped = make_plan(moodle_launch(lms_cpulimit="1", lms_cpugrnt="1.5"))
    assert capped.cpu_guarantee == 1.0  # never above the limit
    none = make_plan(moodle_launch(lms_cpugrnt="0", lms_memgrnt="0"))
    assert none.cpu_guarantee is None and none.mem_guarantee is None
    pol = dataclasses.replace(policy, over_limit="refuse")
    refused(make_plan, moodle_launch(lms_memgrnt="8,589,934,592"), pol=pol)
    refused(make_plan, moodle_launch(lms_cpugrnt="x"))


# -- default URL ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "url"), [("/lab", "/lab"), ("/tree", "/tree"), ("", "/lab")])
def test_defurl(make_plan: PlanFactory, value: str, url: str) -> None:
    assert make_plan(moodle_launch(lms_defurl=value)).default_url == url


@pytest.mark.parametrize("value", ["/notebooks", "/lab/../hub", "https://evil.example/", "lab"])
def test_unknown_defurl_gets_the_hub_default(make_plan: PlanFactory, value: str) -> None:
    plan = make_plan(moodle_launch(lms_defurl=value))
    assert plan.default_url == "/lab"
    assert any("lms_defurl" in note for note in plan.notes)


# -- teachers -------------------------------------------------------------------------


def test_teacher(make_plan: PlanFactory, policy: HubPolicy) -> None:
    launch = moodle_launch(username="tom", lms_teachers="Tom, ann")
    plan = make_plan(launch)
    assert plan.is_teacher
    assert plan.environment["NB_TEACHER"] == "tom"
    assert plan.environment["NB_UMASK"] == "0033"
    assert plan.environment["GRANT_SUDO"] == "no"
    sudo = make_plan(launch, pol=dataclasses.replace(policy, allow_teacher_sudo=True))
    assert sudo.grant_sudo and sudo.environment["GRANT_SUDO"] == "yes"


def test_star_in_teachers_makes_nobody_a_teacher(make_plan: PlanFactory) -> None:
    assert not make_plan(moodle_launch(lms_teachers="*")).is_teacher


# -- volumes --------------------------------------------------------------------------


def vol_launch(username: str = "alice", **custom: str) -> dict[str, str]:
    base = {"lms_teachers": "tom", "lms_users": "alice bob"}
    base.update(custom)
    return moodle_launch(username=username, **base)


def test_task_volume_for_listed_user(make_plan: PlanFactory) -> None:
    plan = make_plan(vol_launch(lms_vol_data="Data"))
    name = "lms_vol_data_12_moodle.example.test"
    path = f"/home/others/alice/jupyter/works/.volumes/{name}"
    assert plan.mounts == {name: path}
    assert plan.environment["NB_VOLUMES"] == f".volumes/{name}:Data"


def test_volume_rule(make_plan: PlanFactory) -> None:
    # not in lms_users, no own list: nothing
    assert make_plan(vol_launch("carol", lms_vol_data="Data")).mounts == {}
    # lms_users = * : everyone
    assert make_plan(vol_launch("carol", lms_users="*", lms_vol_data="Data")).mounts
    # teachers always, when the volume has no own list
    assert make_plan(vol_launch("tom", lms_vol_data="Data")).mounts
    # own list wins over lms_users, in both directions
    own = {"lms_vol_data": "Data:carol,dave"}
    assert make_plan(vol_launch("carol", **own)).mounts
    assert not make_plan(vol_launch("alice", **own)).mounts
    assert not make_plan(vol_launch("tom", **own)).mounts
    assert make_plan(vol_launch("zed", lms_vol_data="Data:*")).mounts
    assert make_plan(vol_launch("zed", lms_vol_data="Data: zed  yan")).mounts


def test_several_volumes_space_separated(make_plan: PlanFactory) -> None:
    plan = make_plan(vol_launch(lms_vol_a="A", lms_vol_b="B", lms_sub_s="Submit"))
    assert plan.environment["NB_VOLUMES"] == (
        ".volumes/lms_vol_a_12_moodle.example.test:A .volumes/lms_vol_b_12_moodle.example.test:B"
    )
    assert plan.environment["NB_SUBMITS"] == ".volumes/lms_sub_s_12_moodle.example.test:Submit"
    assert len(plan.mounts) == 3


def test_submit_close_time(make_plan: PlanFactory) -> None:
    past, future = str(int(NOW) - 60), str(int(NOW) + 60)
    closed = vol_launch(lms_sub_exam="Exam", lms_sub_exam_close=past)
    assert make_plan(closed).environment["NB_SUBMITS"] == ""
    assert any("closed" in note for note in make_plan(closed).notes)
    assert make_plan(vol_launch(lms_sub_exam="Exam", lms_sub_exam_close=future)).mounts
    teacher = vol_launch("tom", lms_sub_exam="Exam", lms_sub_exam_close=past)
    assert make_plan(teacher).environment["NB_SUBMITS"].endswith(":Exam")
    no_close = vol_launch(lms_sub_exam="Exam", lms_sub_exam_close="0")
    assert make_plan(no_close).mounts
    # the close time is taken from 'now'
    assert make_plan(closed, now=NOW - 3600).mounts


def test_submit_close_time_reaches_the_image(make_plan: PlanFactory) -> None:
    future = int(NOW) + 60
    launch = vol_launch(
        lms_sub_exam="Exam",
        lms_sub_exam_close=str(future),
        lms_sub_hw="Homework",
        lms_vol_data="Data",
    )
    env = make_plan(launch).environment
    exam = "lms_sub_exam_12_moodle.example.test"
    assert env["NB_SUBMIT_CLOSE"] == f"{exam}:{future}"
    # read back as the image's submit tool reads it
    closes = nbenv.parse_close_times(env["NB_SUBMIT_CLOSE"])
    assert nbenv.close_time(closes, exam) == future
    assert nbenv.close_time(closes, "lms_sub_hw_12_moodle.example.test") is None
    # a teacher still gets a closed folder, and its close time with it
    past = int(NOW) - 60
    teacher = vol_launch("tom", lms_sub_exam="Exam", lms_sub_exam_close=str(past))
    assert make_plan(teacher).environment["NB_SUBMIT_CLOSE"] == f"{exam}:{past}"


@pytest.mark.parametrize(
    "custom",
    [
        {},
        {"lms_sub_exam": "Exam"},
        {"lms_sub_exam": "Exam", "lms_sub_exam_close": "0"},
        {"lms_sub_exam": "Exam", "lms_sub_exam_close": ""},
        {"lms_sub_exam": "Exam", "lms_sub_exam_close": str(int(NOW) - 60)},  # closed, dropped
        {"lms_sub_exam_close": str(int(NOW) + 60)},  # a close time without its volume
    ],
)
def test_no_submit_close_variable_without_a_close_time(
    make_plan: PlanFactory, custom: dict[str, str]
) -> None:
    assert "NB_SUBMIT_CLOSE" not in make_plan(vol_launch(**custom)).environment


def test_personal_volume_is_env_only(make_plan: PlanFactory) -> None:
    plan = make_plan(vol_launch(lms_vol_data="Data", lms_prs_data="Mine"))
    assert plan.environment["NB_PRSNALS"] == ".volumes/lms_prs_data_12_moodle.example.test:Mine"
    assert list(plan.mounts) == ["lms_vol_data_12_moodle.example.test"]


def test_teachers_only_access_name(make_plan: PlanFactory) -> None:
    launch = vol_launch(lms_vol_key="-Answers", lms_users="*")
    teacher = make_plan(vol_launch("tom", lms_vol_key="-Answers"))
    assert teacher.environment["NB_VOLUMES"].endswith(":-Answers")
    assert teacher.volumes[0].teachers_only
    student = make_plan(launch)
    assert student.mounts == {} and student.environment["NB_VOLUMES"] == ""


@pytest.mark.parametrize(
    "key",
    [
        "lms_vol_Data",
        "lms_vol_a-b",
        "lms_sub_x_y",
        "lms_prs_a.b",
        "lms_sub_____________1_close_1893452",
    ],
)
def test_unparseable_volume_keys_are_ignored(make_plan: PlanFactory, key: str) -> None:
    plan = make_plan(vol_launch(lms_vol_data="Data", **{key: "Data"}))
    assert list(plan.mounts) == ["lms_vol_data_12_moodle.example.test"]
    assert plan.ignored == (repr(key),)


def test_empty_volume_name_is_mounted_as_upstream_names_it(make_plan: PlanFactory) -> None:
    plan = make_plan(vol_launch(lms_vol_="課題", lms_sub_="提出", lms_sub__close="0"))
    assert sorted(plan.mounts) == [
        "lms_sub__12_moodle.example.test",
        "lms_vol__12_moodle.example.test",
    ]
    assert plan.environment["NB_VOLUMES"] == ".volumes/lms_vol__12_moodle.example.test:課題"
    assert plan.environment["NB_SUBMITS"] == ".volumes/lms_sub__12_moodle.example.test:提出"


@pytest.mark.parametrize("access", ["", " ", ".", "..", "-", "-..", "/", "../", "*", "-./"])
def test_access_names_left_empty_or_dots_are_refused(make_plan: PlanFactory, access: str) -> None:
    message = refused(make_plan, vol_launch(lms_vol_data=access))
    assert "folder name" in message


@pytest.mark.parametrize(
    ("access", "link"),
    [
        ("../x", "..x"),
        ("a/b", "ab"),
        ("a b", "ab"),
        ("x\n", "x"),
        ("tab\there", "tabhere"),
        ("x--", "x--"),
        (".hidden", ".hidden"),
        ("a..b", "a..b"),
        ("課題(1)", "課題1"),
        ("Data!$`;&|", "Data"),
        ("x:y", "x"),  # "x" with the user list "y"
    ],
)
def test_access_names_sanitised_as_upstream(make_plan: PlanFactory, access: str, link: str) -> None:
    plan = make_plan(vol_launch("y", lms_users="*", lms_vol_data=access))
    assert plan.volumes[0].access_name == link
    assert plan.environment["NB_VOLUMES"] == f".volumes/lms_vol_data_12_moodle.example.test:{link}"


@pytest.mark.parametrize("access", ["Data", "task-1.v2", "_x", "課題", "-Teachers_only", "--x"])
def test_good_access_names(access: str) -> None:
    name, teachers_only = sanitise_access_name(access)
    assert name == access
    assert teachers_only == access.startswith("-")


def test_long_access_name_cut_to_a_file_name() -> None:
    name, _ = sanitise_access_name("課" * 100)
    assert len(name.encode()) <= 255 and name == "課" * 85


# -- users, uid and gid ---------------------------------------------------------------


def test_uid_gid_from_host_account(make_plan: PlanFactory) -> None:
    plan = make_plan(moodle_launch(username="hostuser", ext_user_userid="5000"))
    assert (plan.uid, plan.gid, plan.group) == (1500, 1600, "staff")
    assert plan.home_dir == "/home/staff/hostuser"


def test_uid_gid_from_ext_fields(make_plan: PlanFactory) -> None:
    launch = moodle_launch()
    launch.update(ext_user_userid="5000", ext_user_groupid="5100", ext_user_groupname="lab1")
    plan = make_plan(launch)
    assert (plan.uid, plan.gid, plan.group) == (5000, 5100, "lab1")
    assert plan.environment["NB_DIR"] == "/home/lab1/alice"


def test_host_group_name_wins_for_ext_gid(make_plan: PlanFactory) -> None:
    launch = moodle_launch()
    launch.update(ext_user_groupid="1600", ext_user_groupname="lab1")
    assert make_plan(launch).group == "staff"


def test_uid_from_moodle_user_id_and_default_group(make_plan: PlanFactory) -> None:
    plan = make_plan(moodle_launch(user_id="7"))
    assert (plan.uid, plan.gid, plan.group) == (30007, 30000, "others")
    host_others = StaticAccounts(groups={"others": 2000})
    assert make_plan(moodle_launch(), accts=host_others).gid == 2000


def test_missing_user_id_refused(make_plan: PlanFactory) -> None:
    launch = moodle_launch()
    del launch["user_id"]
    refused(make_plan, launch)


@pytest.mark.parametrize(
    ("username", "extra"),
    [
        ("root", {}),
        ("alice", {"ext_user_userid": "0"}),
        ("alice", {"ext_user_groupid": "10"}),
        ("alice", {"ext_user_userid": "65534"}),
    ],
)
def test_reserved_ids_refused(make_plan: PlanFactory, username: str, extra: dict[str, str]) -> None:
    launch = moodle_launch(username=username)
    launch.update(extra)
    refused(make_plan, launch)


def test_bad_group_name_refused(make_plan: PlanFactory) -> None:
    launch = moodle_launch()
    launch.update(ext_user_groupid="5100", ext_user_groupname="../etc")
    refused(make_plan, launch)


@pytest.mark.parametrize("name", ["../x", "a/b", "Alice", "al ice", "", "-x", "a..b", "x" * 65])
def test_bad_usernames_refused(make_plan: PlanFactory, name: str) -> None:
    refused(make_plan, moodle_launch(username=name), username=name)


def test_username_defaults_to_ext_user_username(policy: HubPolicy) -> None:
    plan = build_plan(moodle_launch(username="Bob"), policy, now=NOW, accounts=StaticAccounts())
    assert plan.username == "bob"


# -- policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"over_limit": "ignore"},
        {"default_cpu": 4.0},
        {"home_root": "relative"},
        {"default_umask": "777x"},
        {"volumes_dir": "a/b"},
        {"default_url": "/x"},
        {"max_mem": 0},
        {"pids_limit": 0},
        {"pids_limit": 63},
        {"capabilities": ("CHOWN", "NET_RAW")},
        {"capabilities": ("ALL",)},
        {"capabilities": ("SYS_ADMIN",)},
        {"capabilities": ("CAP_NET_ADMIN",)},
    ],
)
def test_bad_policy(changes: dict[str, object]) -> None:
    base = HubPolicy(max_cpu=2.0, max_mem=GIB)
    with pytest.raises(ValueError, match="invalid hub policy"):
        dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# -- confinement of the notebook containers ---------------------------------------------


def test_confinement_drops_every_capability_but_the_start_scripts() -> None:
    settings = HubPolicy().container_confinement(grant_sudo=False)
    assert settings["cap_drop"] == ["ALL"]
    assert settings["cap_add"] == sorted(START_CAPABILITIES)
    assert "NET_RAW" not in settings["cap_add"]
    assert "AUDIT_WRITE" not in settings["cap_add"]
    assert settings["pids_limit"] == 512


def test_confinement_with_sudo_adds_only_what_sudo_needs() -> None:
    settings = HubPolicy().container_confinement(grant_sudo=True)
    assert set(settings["cap_add"]) - set(START_CAPABILITIES) == {"AUDIT_WRITE"}


def test_confinement_takes_the_operators_settings_in_dockers_spelling() -> None:
    policy = HubPolicy(pids_limit=200, capabilities=("cap_setuid", "CAP_SETGID", "chown"))
    settings = policy.container_confinement(grant_sudo=False)
    assert settings == {
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "SETGID", "SETUID"],
        "pids_limit": 200,
    }


def test_refused_capability_is_named() -> None:
    with pytest.raises(ValueError, match="'NET_RAW' is not allowed"):
        HubPolicy(capabilities=("NET_RAW",))
