"""Shared fixtures: a Moodle-like launch, a hub policy, fixed host accounts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

# Test this checkout's package, not whichever copy the (possibly shared) venv installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from ltihub.accounts import StaticAccounts
from ltihub.params import SpawnPlan, build_plan
from ltihub.policy import HubPolicy

NOW = 1_800_000_000.0
GIB = 1024**3

PlanFactory = Callable[..., SpawnPlan]


def moodle_launch(username: str = "alice", user_id: str = "42", **custom: str) -> dict[str, str]:
    """What ltiauthenticator stores in auth_state for a Moodle launch (oauth_* removed)."""
    data = {
        "lti_message_type": "basic-lti-launch-request",
        "lti_version": "LTI-1p0",
        "resource_link_id": "5",
        "user_id": user_id,
        "roles": "Learner",
        "context_id": "12",
        "context_title": "Data Science 1",
        "ext_user_username": username,
        "lis_outcome_service_url": "https://moodle.example.test/mod/lti/service.php",
        "tool_consumer_info_product_family_code": "moodle",
        "custom_lms_sessioninfo": "3,7",
        "custom_lms_serverurl": "https://moodle.example.test:443",
        "custom_lms_serverpath": "/",
        "custom_lms_course": "Data Science 1",
        "custom_lms_ltiname": "Week 1",
        "custom_lms_rpctoken": "0123456789abcdef0123456789abcdef",
    }
    data.update({f"custom_{k}": v for k, v in custom.items()})
    return data


@pytest.fixture
def policy() -> HubPolicy:
    return HubPolicy(
        allowed_images=("jupyterhub/*", "registry.example.test/course-*:*"),
        default_image="jupyterhub/base:latest",
        max_cpu=2.0,
        max_mem=4 * GIB,
        max_actlimit=7200,
        default_actlimit=3600,
    )


@pytest.fixture
def accounts() -> StaticAccounts:
    return StaticAccounts(
        users={"hostuser": (1500, 1600), "root": (0, 0)},
        groups={"staff": 1600, "wheel": 10},
    )


@pytest.fixture
def make_plan(policy: HubPolicy, accounts: StaticAccounts) -> PlanFactory:
    def make(
        launch: Mapping[str, Any] | None = None,
        *,
        pol: HubPolicy | None = None,
        now: float = NOW,
        username: str | None = None,
        accts: StaticAccounts | None = None,
    ) -> SpawnPlan:
        return build_plan(
            moodle_launch() if launch is None else launch,
            policy if pol is None else pol,
            username=username,
            now=now,
            accounts=accounts if accts is None else accts,
        )

    return make
