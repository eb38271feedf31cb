"""In-place upgrades (playbooks/moodle.yml again with a newer pinned release, no blue-green),
the side effect of the scenario `moodle`, proven here in CI instead: this file sorts after
the blue-green, backup and remote-proxy tests and runs last.

The in-place steps of molecule/moodle/upgrade.yml that are an upgrade from what is live run,
each followed by its own checks, then the operator's checks of
molecule/moodle/tests/test_moodle.py run again on the upgraded site (the moodle scenario
verified before and after its upgrades; here the verifier's first pass was the "before").

By then test_bluegreen.py's last upgrade left v2 (4.5.1) live on one colour and v1 frozen on
the other: only the second step runs (molecule/moodle/upgrade_to_5_1.yml, v2 -> v3-public
5.1 with the code under public/, a schema change), on the live colour. Run alone on a fresh
site (v1 live), this file runs the whole of upgrade.yml (v1 -> v2 first, as in the moodle
scenario).
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
# What is live -> the playbook of the in-place steps from there to 5.1, and their check plays.
STEPS = {
    V1: ("upgrade.yml", ["Check the upgrade to 4.5.1", "Check the upgrade to 5.1"]),
    V2: ("upgrade_to_5_1.yml", ["Check the upgrade to 5.1"]),
}
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
    """Rows noted, then the in-place steps from the live release to 5.1; what was before."""
    status, body = front_page(host)
    live = [release for release in STEPS if f"Moodle {release}" in body]
    assert status == 200 and live, "neither 4.5 nor 4.5.1 is live before the upgrades"
    playbook, checks = STEPS[live[0]]
    before = fact(host)
    rows = [r["content"] for r in content(host)["rows"]]
    dumps = _dumps(host)
    started = _host_time(host)

    run = run_playbook(str(REPO / "molecule" / "moodle" / playbook))

    assert run.rc == 0, run.output[-4000:]
    return {"fact": before, "rows": rows, "dumps": dumps, "started": started, "run": run,
            "checks": checks}


def test_every_step_and_its_checks_ran(upgraded: dict[str, Any]) -> None:
    output, checks = upgraded["run"].output, upgraded["checks"]
    # Imported plays print their own names: playbooks/moodle.yml's "Moodle host", once a step.
    assert output.count("PLAY [Moodle host]") == len(checks)
    for play in checks:
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
    assert len(new_dumps) == len(upgraded["checks"]), new_dumps  # one before each step
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
