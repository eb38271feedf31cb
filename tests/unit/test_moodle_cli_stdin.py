"""The moodle role keeps secrets out of process arguments and config.php locked down.

- roles/moodle/files/moodle_cli_stdin.php (the runner the role starts Moodle's CLI scripts
  with) hands options read from standard input to a Moodle admin/cli script, whose
  cli_get_params() (here: the test stand-in's, which parses $_SERVER['argv'] as Moodle does)
  sees them, while the process's own /proc/<pid>/cmdline never holds them.
- No command or shell task of any role names a password, passphrase, secret or token.
- The config.php template always ends with $CFG->preventexecpath = true.

The PHP tests need `php` (the CLI) and skip without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "roles/moodle/files/moodle_cli_stdin.php"
CLILIB = REPO / "tests/moodle_standin/src/lib/clilib.php"
PHP = shutil.which("php")
needs_php = pytest.mark.skipif(PHP is None, reason="needs the php CLI")

# A Moodle-like admin/cli script: the options of install_database.php, parsed by the
# stand-in's cli_get_params(), and what any user sees of this process in /proc.
PROBE = """<?php
define('CLI_SCRIPT', true);
require '{clilib}';
[$options, $unrecognised] = cli_get_params(
    ['lang' => 'en', 'adminuser' => 'admin', 'adminpass' => '', 'agree-license' => false],
    ['h' => 'help']);
file_put_contents(__DIR__ . '/ran', 'yes');
echo json_encode([
    'options' => $options,
    'unrecognised' => $unrecognised,
    'cmdline' => file_get_contents('/proc/' . getmypid() . '/cmdline'),
    'script' => $_SERVER['SCRIPT_FILENAME'],
    'argv0' => $_SERVER['argv'][0],
]);
exit(7);
"""

SECRET = "S3cret pass'word\"$(x)"  # noqa: S105 -- a test value


@pytest.fixture()
def probe(tmp_path: Path) -> Path:
    cli = tmp_path / "moodle/admin/cli"
    cli.mkdir(parents=True)
    script = cli / "probe_install.php"
    script.write_text(PROBE.format(clilib=CLILIB))
    return script


def run(script: Path | str, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    assert PHP is not None
    return subprocess.run(  # noqa: S603 -- our own runner on test files
        [PHP, str(RUNNER), str(script), *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )


@needs_php
def test_secret_reaches_moodle_options_but_not_the_process_arguments(probe: Path) -> None:
    done = run(probe, json.dumps({"adminpass": SECRET}), "--lang=de", "--agree-license")
    assert done.returncode == 7, done.stderr  # the Moodle script's own exit code
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["options"]["adminpass"] == SECRET
    assert report["options"]["lang"] == "de"
    assert report["options"]["agree-license"] is True
    assert report["unrecognised"] == []
    assert SECRET not in report["cmdline"]
    assert "adminpass" not in report["cmdline"]
    assert str(probe) in report["cmdline"].split("\0")
    # Moodle's scripts see themselves as the script PHP runs.
    assert report["script"] == report["argv0"] == str(probe)


@needs_php
def test_secret_still_counts_when_the_arguments_have_a_double_dash(probe: Path) -> None:
    done = run(probe, json.dumps({"adminpass": SECRET}), "--agree-license", "--", "--lang=xx")
    assert done.returncode == 7, done.stderr
    options = json.loads(done.stdout)["options"]
    assert options["adminpass"] == SECRET
    assert options["lang"] == "en"  # after "--": ignored, as cli_get_params does


@needs_php
def test_no_secret_options_is_an_empty_object(probe: Path) -> None:
    done = run(probe, "{}", "--agree-license")
    assert done.returncode == 7, done.stderr
    assert json.loads(done.stdout)["options"]["adminpass"] == ""


@needs_php
@pytest.mark.parametrize(
    "stdin",
    ["", "not json", '["--adminpass=x"]', '{"adminpass": 5}', '{"adminpass": {"a": "b"}}',
     '{"--adminpass": "x"}', '{"Admin pass": "x"}'],
)
def test_bad_input_is_refused_before_moodle_runs(probe: Path, stdin: str) -> None:
    done = run(probe, stdin, "--agree-license")
    assert done.returncode == 2
    assert "moodle_cli_stdin.php:" in done.stderr
    assert not (probe.parent / "ran").exists()


@needs_php
def test_only_admin_cli_scripts_are_run(tmp_path: Path) -> None:
    other = tmp_path / "evil.php"
    other.write_text("<?php file_put_contents(__DIR__ . '/ran', 'yes');")
    for target in (other, tmp_path / "moodle/admin/cli/missing.php", "admin/cli/relative.php"):
        done = run(target, "{}")
        assert done.returncode == 2, target
        assert "not a Moodle admin/cli script" in done.stderr
    assert not (tmp_path / "ran").exists()


@needs_php
def test_runner_is_valid_php() -> None:
    assert PHP is not None
    lint = subprocess.run(  # noqa: S603 -- php -l of a repository file
        [PHP, "-l", str(RUNNER)], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


COMMAND_MODULES = {
    "command", "shell", "raw", "ansible.builtin.command", "ansible.builtin.shell",
    "ansible.builtin.raw",
}
SECRET_VARIABLE = re.compile(r"\{\{[^}]*(password|passphrase|secret|token)[^}]*\}\}", re.I)


def _tasks(items: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        found.append(item)
        for key in ("block", "rescue", "always"):
            found.extend(_tasks(item.get(key)))
    return found


def test_no_role_puts_a_secret_into_a_command_line() -> None:
    offenders = []
    task_files = sorted(REPO.glob("roles/*/tasks/*.yml"))
    task_files += sorted(REPO.glob("roles/*/handlers/*.yml"))
    assert task_files
    for path in task_files:
        for task in _tasks(yaml.safe_load(path.read_text())):
            for module in COMMAND_MODULES & task.keys():
                args = task[module]
                # stdin is not part of the command line; everything else of the module is.
                if isinstance(args, dict):
                    args = {k: v for k, v in args.items() if k != "stdin"}
                if SECRET_VARIABLE.search(json.dumps(args)):
                    offenders.append(f"{path.relative_to(REPO)}: {task.get('name')}")
    assert not offenders, offenders


def test_install_task_passes_the_admin_password_on_standard_input() -> None:
    tasks = _tasks(yaml.safe_load((REPO / "roles/moodle/tasks/deploy.yml").read_text()))
    install = [t for t in tasks if "install_database.php" in json.dumps(t)]
    assert len(install) == 1
    task = install[0]
    argv = task["ansible.builtin.command"]["argv"]
    assert not [a for a in argv if "adminpass" in a or "password" in a]
    assert "moodle_admin_password" in task["ansible.builtin.command"]["stdin"]
    assert "{{ moodle_cli_stdin_script }}" in argv
    assert task["no_log"] is True


def _render_config(extra: dict[str, Any]) -> str:
    env = jinja2.Environment(  # noqa: S701 -- renders PHP, not HTML, as Ansible does
        loader=jinja2.FileSystemLoader(REPO / "roles/moodle/templates/srv"),
        undefined=jinja2.StrictUndefined, trim_blocks=True,
    )
    env.filters["bool"] = bool  # Ansible's filter, for the values used here
    return env.get_template("config.php.j2").render(
        ansible_managed="Ansible managed", moodle_colour="blue", moodle_release_id="r1",
        moodle_dbtypes={"mariadb": "mariadb"}, moodle_db_engine="mariadb",
        moodle_db_host="localhost", moodle_db_name="moodle_blue", moodle_db_user="moodle",
        moodle_db_password="pw'\\x",  # noqa: S106 -- a test value
        moodle_db_prefix="mdl_",
        moodle_db_socket="/run/mysqld/mysqld.sock", moodle_wwwroot="https://moodle.test",
        moodle_dataroot="/srv/moodledata/blue", moodle_sslproxy=True,
        moodle_config_extra=extra,
    )


def test_config_php_prevents_executable_paths_from_the_web() -> None:
    text = _render_config({"preventexecpath": False, "pathtophp": "/usr/bin/php"})
    lines = [line for line in text.splitlines() if "preventexecpath" in line and "//" not in line]
    # An extra setting cannot turn it off: the role's line comes after the extras.
    assert lines[-1] == "$CFG->preventexecpath = true;"
    setup = text.index("require_once(__DIR__ . '/lib/setup.php');")
    assert text.index("$CFG->preventexecpath = true;") < setup
    assert "$CFG->pathtophp = '/usr/bin/php';" in text


@needs_php
def test_config_php_template_renders_valid_php(tmp_path: Path) -> None:
    assert PHP is not None
    config = tmp_path / "config.php"
    config.write_text(_render_config({"debug": 0}))
    lint = subprocess.run(  # noqa: S603 -- php -l of the rendered test file
        [PHP, "-l", str(config)], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
