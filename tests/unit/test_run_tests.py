"""The stage runner of `make test`: order, parallel jobs, failures, and the closing table."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed"))

import run_tests  # noqa: E402
from run_tests import Runner, Stage  # noqa: E402


def py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


@pytest.fixture(autouse=True)
def _logs_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_tests, "LOG_DIR", tmp_path / "logs")


def test_all_stages_pass_and_the_table_closes_the_output() -> None:
    out = io.StringIO()
    stages = [Stage("a", py("print('from a')")), Stage("b", py("print('from b')"), ("a",))]
    assert Runner(stages, jobs=2, out=out).run()
    text = out.getvalue()
    assert "from a" in text and "from b" in text  # each log is printed when its stage ends
    assert text.index("from a") < text.index("from b")  # b waited for a
    lines = text.strip().splitlines()
    assert lines[-1] == "stages: 2 passed, 0 failed"
    assert any(line.split()[:1] == ["a"] and "passed" in line for line in lines)


def test_two_jobs_run_side_by_side(tmp_path: Path) -> None:
    # Each stage waits until the other has written its file: only possible in parallel.
    flag_a, flag_b = tmp_path / "a", tmp_path / "b"
    wait = (
        "import pathlib, sys, time\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "end = time.time() + 20\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.05)\n"
        "    if time.time() > end: sys.exit(1)\n"
    )
    stages = [
        Stage("a", (*py(wait), str(flag_a), str(flag_b))),
        Stage("b", (*py(wait), str(flag_b), str(flag_a))),
    ]
    assert Runner(stages, jobs=2, out=io.StringIO()).run()


def test_a_failure_stops_new_stages_and_fails_the_run() -> None:
    out = io.StringIO()
    stages = [
        Stage("bad", py("import sys; print('boom'); sys.exit(3)")),
        Stage("later", py("print('must not run')"), ("bad",)),
        Stage("other", py("print('must not run either')")),
    ]
    assert not Runner(stages, jobs=1, out=out).run()
    text = out.getvalue()
    assert "bad FAILED (exit 3)" in text
    assert "must not run" not in text
    assert text.strip().splitlines()[-1] == "stages: 0 passed, 3 failed"
    assert "not run" in text


def test_default_plan_has_every_scenario_and_the_checks() -> None:
    names = [s.name for s in run_tests.default_stages(["default", "moodle_ops", "moodle"])]
    assert sorted(names) == sorted(["host image", "lint", "unit", "notebook base",
                                    "molecule default", "molecule moodle_ops", "molecule moodle"])
    assert [s.name for s in run_tests.default_stages(["default"])] == [
        "host image", "notebook base", "molecule default", "unit", "lint",
    ]
    assert [s.name for s in run_tests.default_stages(["moodle_ops"])] == [
        "host image", "molecule moodle_ops", "unit", "lint",
    ]


def test_the_host_image_of_the_distribution_comes_first_and_everything_else_waits() -> None:
    plan = run_tests.default_stages(["default", "moodle_ops"], "debian13")
    assert plan[0].name == "host image" and plan[0].after == ()
    assert plan[0].argv[-2:] == (str(run_tests.REPO / "testbed" / "build_image.py"), "debian13")
    assert all("host image" in s.after for s in plan if s.name not in ("host image",
                                                                       "notebook base"))


def test_only_the_scenarios_with_hubs_wait_for_the_notebook_base() -> None:
    plan = {s.name: s for s in run_tests.default_stages(["default", "moodle_ops", "hub"])}
    assert plan["notebook base"].argv[-1].endswith("testbed/build_notebook_base.py")
    assert plan["notebook base"].after == ()
    assert plan["molecule default"].after == ("host image", "notebook base")
    assert plan["molecule hub"].after == ("host image", "notebook base")
    assert plan["molecule moodle_ops"].after == ("host image",)
    assert plan["unit"].after == ("host image",) and plan["lint"].after == ("host image",)


def test_on_a_new_machine_nothing_takes_the_slot_the_notebook_base_frees() -> None:
    # The host image (a debootstrap on a new machine) takes longer than the notebook base:
    # when the base ends, nothing may start before the scenarios, the longest path.
    plan = run_tests.default_stages(["default", "moodle_ops"])
    images = {"host image", "notebook base"}

    def ready(done: set[str]) -> list[str]:
        return [s.name for s in plan if s.name not in images and set(s.after) <= done]

    assert ready({"notebook base"}) == []
    assert ready(images) == ["molecule default", "molecule moodle_ops", "unit", "lint"]


def _makespan(order: list[str], minutes: dict[str, int], jobs: int = 2) -> int:
    """When the last stage ends if stages start in list order as slots free."""
    slots = [0] * jobs
    for name in order:
        slot = slots.index(min(slots))
        slots[slot] += minutes[name]
    return max(slots)


def test_default_plan_balances_two_slots() -> None:
    # Stage times (minutes) of the last two green pre-checks: the longest stages go first.
    plan = [s.name for s in run_tests.default_stages(["default", "moodle_ops", "moodle"])
            if s.name not in ("host image", "notebook base")]
    checks_first = ["lint", "molecule moodle_ops", "unit", "molecule default", "molecule moodle"]
    default_first = ["molecule default", "unit", "molecule moodle_ops", "molecule moodle", "lint"]
    earlier = {"lint": 2, "unit": 3, "molecule default": 36, "molecule moodle_ops": 27,
               "molecule moodle": 8}
    assert _makespan(plan, earlier) == 38  # default + lint | ops + moodle + unit
    assert _makespan(checks_first, earlier) == 41
    now = {"lint": 3, "unit": 4, "molecule default": 37, "molecule moodle_ops": 32,
           "molecule moodle": 9}
    assert _makespan(plan, now) == 44  # default + unit + lint | ops + moodle
    assert _makespan(default_first, now) == 45


def test_the_digest_before_the_table_names_the_failed_test(tmp_path: Path) -> None:
    # A molecule log: a playbook a test expected to fail, then pytest's summary wrapped at
    # 80 columns inside molecule's frame, then a lot of other output.
    log = tmp_path / "scenario-output.txt"
    log.write_text(
        "  \u2502 fatal: [host]: FAILED! => a playbook the test expected to fail\n"
        "  \u2502 ========== short test summary info\n"
        "  \u2502   ==========\n"
        "  \u2502 \x1b[31mFAILED\x1b[0m\n"
        "  \u2502   tests/test_x.py::test_backup - AssertionError:\n"
        "  \u2502   no rows\n"
        "  \u2502 ===== 1 failed, 3 passed in 1.00s =====\n"
        + "".join(f"noise {i}\n" for i in range(500)),
        encoding="utf-8",
    )
    out = io.StringIO()
    cat_and_fail = py("import sys; print(open(sys.argv[1]).read()); sys.exit(1)")
    stages = [Stage("ok", py("print('fine')")), Stage("scenario", (*cat_and_fail, str(log)))]
    assert not Runner(stages, jobs=2, out=out).run()
    tail = out.getvalue().strip().splitlines()[-10:]  # what a CI that keeps the tail shows
    assert "  FAILED tests/test_x.py::test_backup - AssertionError: no rows" in tail
    assert not any("noise" in line or "expected to fail" in line for line in tail)


def test_without_failed_tests_the_digest_shows_the_fatal_tasks() -> None:
    lines = ["PLAY [x]\n", "fatal: [hub1]: FAILED! => {\"msg\": \"no space left\"}\n", "ok\n"]
    assert run_tests.failure_causes(lines) == ['fatal: [hub1]: FAILED! => {"msg": "no space left"}']


def test_a_crashed_tool_is_named_by_its_traceback() -> None:
    lines = [
        "ERROR    moodle_ops \u279c verify: Executed: Failed\n",
        "  \u2502 Traceback (most recent call last):\n",
        "  \u2502   File \"shlex.py\", line 329, in quote\n",
        "  \u2502 TypeError: expected string or bytes-like object, got 'int'\n",
    ]
    assert run_tests.failure_causes(lines) == [
        "ERROR    moodle_ops \u279c verify: Executed: Failed",
        "TypeError: expected string or bytes-like object, got 'int'",
    ]
