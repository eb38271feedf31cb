"""What `make demo` prints at the end: URLs, credential paths (never secrets), a launch."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed"))

import demo_info  # noqa: E402

SENTINEL = "s3cr3t-never-printed"


@pytest.fixture
def demo(tmp_path: Path) -> demo_info.Demo:
    """The real demo inventory, with generated secret files next to it."""
    shutil.copy(demo_info.INVENTORY / "hosts.yml", tmp_path / "hosts.yml")
    secrets = tmp_path / "secrets"
    (secrets / "hub1").mkdir(parents=True)
    (secrets / "moodle-admin-password").write_text(SENTINEL + "\n")
    for name in ("lti_consumer_key.txt", "lti_consumer_secret.txt", "moodle_api_token.txt"):
        (secrets / "hub1" / name).write_text(SENTINEL + "\n")
    return demo_info.read_demo(tmp_path)


def test_hosts_come_from_the_demo_inventory(demo: demo_info.Demo) -> None:
    assert (demo.moodle.name, demo.moodle.container) == ("moodle1", "mjp-demo-moodle1")
    assert [(h.name, h.container, h.public_name) for h in demo.hubs] == [
        ("hub1", "mjp-demo-hub1", "hub1"),
        ("hub2", "mjp-demo-hub2", "hub2"),
    ]


def test_print_out_names_urls_tools_and_credential_files(demo: demo_info.Demo) -> None:
    text = demo_info.render(demo, real_archive="", seconds=42)
    assert "https://moodle1/" in text
    assert "admin user:     admin" in text
    assert str(demo.secrets / "moodle-admin-password") in text
    for hub in ("hub1", "hub2"):
        assert f'https://{hub}/   tool "JupyterHub {hub}"' in text
        assert str(demo.secrets / hub / "moodle_api_token.txt") in text
    assert '"JupyterHub API Token" field' in text
    assert str(demo.secrets / "moodle-webservice-token") in text and "RPC Token" in text
    assert "missing" in text.split("hub2/moodle_api_token.txt")[1].splitlines()[0]
    assert "make demo took 42 s" in text
    assert SENTINEL not in text


def test_stand_in_is_named_unless_a_real_archive_was_given(demo: demo_info.Demo) -> None:
    standin = demo_info.render(demo, real_archive="", seconds=None)
    assert "TEST STAND-IN" in standin and "MJP_MOODLE_ARCHIVE=" in standin
    real = demo_info.render(demo, real_archive="/srv/moodle-4.5.tgz", seconds=None)
    assert "STAND-IN" not in real and "/srv/moodle-4.5.tgz" in real


def test_launch_command_is_one_shell_command_reading_the_secret_on_stdin(
    demo: demo_info.Demo,
) -> None:
    command = demo_info.launch_command(demo, demo.hubs[0])
    words = shlex.split(command)
    assert words[:4] == ["docker", "exec", "-i", "mjp-demo-hub1"]
    assert words[words.index("--url") + 1] == "https://hub1/hub/lti/launch"
    assert "--open" in words and words[words.index("--secret-file") + 1] == "/dev/stdin"
    assert words[-2:] == ["<", str(demo.secrets / "hub1" / "lti_consumer_secret.txt")]
    assert SENTINEL not in command
