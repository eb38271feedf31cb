"""In-place upgrades (playbooks/moodle.yml again with a newer pinned release, no blue-green),
the side effect of the scenario `moodle`, proven here in CI instead: this file sorts after
the blue-green, backup and remote-proxy tests and runs last.

molecule/moodle/upgrade.yml runs as it is (stand-in v2 4.5.1, then v3-public 5.1 with the
code under public/, each step followed by its own checks), then the operator's checks of
molecule/moodle/tests/test_moodle.py run again on the upgraded site (the moodle scenario
verified before and after its upgrades; here the verifier's first pass was the "before").

By then test_bluegreen.py's last upgrade left v2 (4.5.1) live on one colour and v1 frozen on
the other. The operator's rollback first puts v1 back live, so that the first step is a real
v1 -> v2 in-place upgrade, as in the moodle scenario, not a re-converge of 4.5.1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import HOST, REPO, content, db, fact, front_page, run_playbook

testinfra_hosts = [f"ansible://{HOST}"]

V1 = "4.5 (Build: 20241007)"
V2 = "4.5.1 (Build: 20241209)"
V3 = "5.1 (Build: 20251006)"
UPGRADE_PLAYBOOK = REPO / "molecule" / "moodle" / "upgrade.yml"
MOODLE_CHECKS = REPO / "molecule" / "moodle" / "tests" / "test_moodle.py"
DUMPS = "/srv/moodle-backups/*-before-*.sql.gz"

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MJP_MOODLE_ARCHIVE")), reason="the stand-in's releases are named here"
)


def _dumps(host: Any) -> set[str]:
    return set(host.run(f"ls {DUMPS} 2>/dev/null").stdout.split())


def _host_time(host: Any) -> int:
    return int(host.run("date +%s").stdout.strip())


def _lastcron(host: Any, db_name: str) -> int:
    value = db(host, f"SELECT value FROM {db_name}.mdl_config WHERE name = 'lastcron'")
    return int(value) if value.isdigit() else 0


@pytest.fixture(scope="module")
def upgraded(host: Any) -> dict[str, Any]:
    """v1 live again (rollback if v2 is), rows noted, then upgrade.yml; what was before."""
    status, body = front_page(host)
    if f"Moodle {V2}" in body:
        rollback = run_playbook("moodle_rollback.yml")
        assert rollback.rc == 0, rollback.output[-3000:]
        status, body = front_page(host)
    assert status == 200 and f"Moodle {V1}" in body, "v1 is not live before the upgrades"
    before = fact(host)
    rows = [r["content"] for r in content(host)["rows"]]
    dumps = _dumps(host)
    started = _host_time(host)

    run = run_playbook(str(UPGRADE_PLAYBOOK))

    assert run.rc == 0, run.output[-4000:]
    return {"fact": before, "rows": rows, "dumps": dumps, "started": started, "run": run}


def test_both_steps_and_their_checks_ran(upgraded: dict[str, Any]) -> None:
    output = upgraded["run"].output
    # Imported plays print their own names: playbooks/moodle.yml's "Moodle host", twice.
    assert output.count("PLAY [Moodle host]") == 2
    for play in ("Check the first upgrade", "Check the second upgrade"):
        assert f"PLAY [{play}]" in output, play
    assert "TASK [Check the 5.1 layout was found (stand-in)]" in output
    assert not re.search(r"\bfailed=[1-9]", output.split("PLAY RECAP", 1)[-1])


def test_the_front_page_shows_5_1_with_every_row(host: Any, upgraded: dict[str, Any]) -> None:
    status, body = front_page(host)
    assert status == 200 and f"Moodle {V3}" in body, body[-600:]
    listing = content(host)
    assert listing["release"] == V3
    assert [r["content"] for r in listing["rows"]] == upgraded["rows"]
    assert all(f["ondisk"] and f["intact"] for f in listing["files"])


def test_same_colour_new_release_with_the_public_layout(
    host: Any, upgraded: dict[str, Any]
) -> None:
    before, after = upgraded["fact"], fact(host)
    colour = before["active_colour"]
    assert after["active_colour"] == colour, "an in-place upgrade must not switch colours"
    entry = after["colours"][colour]
    assert entry["release"] == "5.1"
    assert entry["public_layout"] is True
    assert entry["release_dir"] != before["colours"][colour]["release_dir"]
    assert host.file(f"/srv/moodle/{colour}").linked_to == entry["release_dir"]
    assert host.file(entry["release_dir"] + "/public/version.php").exists
    assert host.file(entry["release_dir"] + "/public/mod/lticontainer/version.php").exists
    assert not host.file(entry["release_dir"] + "/version.php").exists
    unit = host.file(f"/etc/systemd/system/moodle-cron-{colour}.service").content_string
    assert f"/srv/moodle/{colour}/public/admin/cli/cron.php" in unit
    assert not host.file(entry["dataroot"] + "/climaintenance.html").exists


def test_database_in_step_and_dumped_before_each_step(
    host: Any, upgraded: dict[str, Any]
) -> None:
    entry = fact(host)["colours"][upgraded["fact"]["active_colour"]]
    version = db(host, f"SELECT value FROM {entry['db_name']}.mdl_config WHERE name = 'version'")
    assert float(version) == float(entry["code_version"])
    new_dumps = sorted(_dumps(host) - upgraded["dumps"])
    assert len(new_dumps) == 2, new_dumps  # one before each step
    for dump in new_dumps:
        assert host.file(dump).size > 0, dump
        assert host.run(f"gzip -t {dump}").rc == 0, dump


def test_cron_runs_the_new_code(host: Any, upgraded: dict[str, Any]) -> None:
    colour = upgraded["fact"]["active_colour"]
    assert host.service(f"moodle-cron-{colour}.timer").is_running
    db_name = fact(host)["colours"][colour]["db_name"]
    lastcron = 0
    for _ in range(36):  # the timer fires every minute
        lastcron = _lastcron(host, db_name)
        if lastcron > upgraded["started"]:
            break
        time.sleep(5)
    assert lastcron > upgraded["started"], "cron has not run since the upgrades began"


def test_the_moodle_checks_pass_on_the_upgraded_site(upgraded: dict[str, Any]) -> None:
    """test_moodle.py again, as the verifier runs it, on the 5.1 site."""
    inventory = Path(os.environ["MOLECULE_INVENTORY_FILE"])
    argv = [sys.executable, "-m", "pytest", "--connection=ansible",
            f"--ansible-inventory={inventory.parent}", "-p", "no:cacheprovider", "-v",
            "--color=no", "--durations=5", str(MOODLE_CHECKS)]
    # plain text (make test sets PY_COLORS=1): the summary line is read below
    env = {**os.environ, "PY_COLORS": "0"}
    proc = subprocess.run(  # noqa: S603 - our own test file, argument list
        argv, env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=1800,
    )
    output = proc.stdout + proc.stderr
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    print(f"\ntest_moodle.py after the in-place upgrades: {summary}")
    assert proc.returncode == 0, output[-8000:]
    assert re.search(r"\b\d+ passed\b", summary) and "failed" not in summary, output[-8000:]
