"""Property test of the launch planner (issue 13 item 6) over arbitrary launches.

Whatever Moodle (or someone holding a consumer secret) sends as custom parameter names
and values, user names and course ids, build_plan either returns a plan or raises a
LaunchRefused with a sentence; never another exception, never a mount outside the
allowed roots, never an environment value with a control character.
"""

from __future__ import annotations

import posixpath
import re

from conftest import NOW, moodle_launch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltihub.accounts import StaticAccounts
from ltihub.errors import LaunchRefused
from ltihub.params import build_plan
from ltihub.policy import HubPolicy

POLICY = HubPolicy(
    allowed_images=("jupyterhub/*",),
    default_image="jupyterhub/base:latest",
    max_cpu=2.0,
    max_mem=4 * 1024**3,
    default_actlimit=6000,
)
ACCOUNTS = StaticAccounts(users={"hostuser": (1500, 1600)}, groups={"staff": 1600})
VOLUME_RE = re.compile(r"lms_(vol|sub)_[a-z0-9]*_[0-9]+_[a-z0-9.-]+")

# Text that reaches the odd corners: path syntax, separators, multibyte, controls.
_odd = st.sampled_from(["/", "..", ".", ":", ",", "*", "-", " ", "\n", "\x00", "\t", "\u2028"])
text = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(_odd, st.text(max_size=3)), max_size=12).map("".join),
    st.sampled_from(["", "0", "0.0", "1,073,741,824", "課題", "-解答", "../../etc", "*"]),
)
known_names = st.sampled_from(
    [
        "lms_image",
        "lms_cpulimit",
        "lms_memlimit",
        "lms_cpugrnt",
        "lms_memgrnt",
        "lms_actlimit",
        "lms_defurl",
        "lms_users",
        "lms_teachers",
        "lms_sessioninfo",
        "lms_options",
        "lms_course",
        "lms_ltiname",
        "lms_iframe",
        "lms_serverurl",
    ]
)
volume_names = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(["lms_vol_", "lms_sub_", "lms_prs_"]),
    st.one_of(
        text,
        st.builds(
            "{}{}".format, st.text(alphabet="ab01", max_size=4), st.sampled_from(["", "_close"])
        ),
    ),
)
names = st.one_of(known_names, volume_names, text)
# Mostly user names and course ids that pass, so that most examples reach the volumes.
usernames = st.one_of(
    st.sampled_from(["alice", "tom", "hostuser", "root"]),
    st.text(alphabet="abcxyz019_.@-", min_size=1, max_size=10),
    st.text(alphabet="abcxyz019_.@-", min_size=1, max_size=10),
    text,
)
numbers = st.integers(min_value=0, max_value=10**12).map(str)


@settings(
    max_examples=120,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    custom=st.dictionaries(st.one_of(names, volume_names), text, max_size=6),
    volumes=st.dictionaries(
        st.builds(
            "{}{}".format,
            st.sampled_from(["lms_vol_", "lms_sub_", "lms_prs_"]),
            st.text(alphabet="ab01", max_size=4),
        ),
        st.one_of(
            text,
            st.builds("{}:{}".format, st.text(min_size=1, max_size=8), text),
            st.sampled_from(["Data", "課題", "-解答:tom", "a/../b", "x:*", ".:alice"]),
        ),
        max_size=4,
    ),
    username=usernames,
    course_id=st.one_of(numbers, numbers, numbers, text),
    teachers=st.sampled_from(["", "tom", "*", "alice, tom"]),
)
def test_planner_returns_a_plan_or_a_clear_refusal(
    custom: dict[str, str],
    volumes: dict[str, str],
    username: str,
    course_id: str,
    teachers: str,
) -> None:
    launch = moodle_launch(username="x", lms_teachers=teachers, lms_users="*")
    launch["context_id"] = course_id
    launch.update({f"custom_{k}": v for k, v in {**volumes, **custom}.items()})
    try:
        plan = build_plan(launch, POLICY, username=username, now=NOW, accounts=ACCOUNTS)
    except LaunchRefused as exc:
        message = str(exc)
        assert message.endswith(".") and len(message) < 400
        assert all(ch.isprintable() for ch in message)
        return

    root = POLICY.home_root.rstrip("/") + "/"
    paths = [plan.home_dir, plan.work_dir, *plan.mounts.values()]
    paths += [vol.mount_path for vol in plan.volumes]
    for path in paths:
        assert posixpath.normpath(path) == path, path
        assert path.startswith(root), path
    for volume, path in plan.mounts.items():
        assert VOLUME_RE.fullmatch(volume), volume
        assert path == f"{plan.work_dir}/{POLICY.volumes_dir}/{volume}"
    for vol in plan.volumes:
        assert vol.access_name.lstrip("-") not in ("", ".", "..")
        assert "/" not in vol.access_name and ":" not in vol.access_name
        assert " " not in vol.access_name
    for key, value in plan.environment.items():
        assert all(ch.isprintable() for ch in value), (key, value)
    assert all(all(ch.isprintable() for ch in note) for note in plan.notes)
    assert all(all(ch.isprintable() for ch in key) for key in plan.ignored)
