"""The proxy agent (ltihub.upgrade.proxyagent), the forced command of the blue-green
switch's ssh key on a remote front proxy: it does exactly point/test/reload/show and refuses
everything else without touching anything."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from ltihub.upgrade import proxyagent


class Proxy:
    """A proxy's nginx folders in tmp_path, and a record of the commands the agent runs."""

    def __init__(self, root: Path, rc: int = 0) -> None:
        self.up = root / "moodle-upstreams"
        self.up.mkdir()
        (root / "conf.d").mkdir()
        for colour in ("blue", "green"):
            (self.up / f"{colour}.conf").write_text(f"upstream {colour}\n")
        self.link = root / "conf.d" / "moodle-upstream.conf"
        os.symlink(self.up / "blue.conf", self.link)
        self.ran: list[list[str]] = []
        self.rc = rc

    def run(self, argv: Sequence[str]) -> int:
        self.ran.append(list(argv))
        return self.rc

    def agent(self, request: str | None) -> int:
        env = {} if request is None else {"SSH_ORIGINAL_COMMAND": request}
        return proxyagent.main(["--upstream-dir", str(self.up), "--link", str(self.link)],
                               env, self.run)

    def served(self) -> str:
        return os.readlink(self.link)


def test_point_moves_the_link_in_one_rename(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path)
    assert proxy.agent("point green") == 0
    assert proxy.served() == str(proxy.up / "green.conf")
    assert not os.path.lexists(f"{proxy.link}.mjp-new")
    assert proxy.agent("point blue") == 0
    assert proxy.served() == str(proxy.up / "blue.conf")
    assert proxy.ran == []


def test_point_replaces_a_leftover_temporary_link(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path)
    os.symlink("/nowhere", f"{proxy.link}.mjp-new")
    assert proxy.agent("point green") == 0
    assert proxy.served() == str(proxy.up / "green.conf")


def test_point_refuses_a_missing_colour_file(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    proxy = Proxy(tmp_path)
    (proxy.up / "green.conf").unlink()
    assert proxy.agent("point green") == 2
    assert proxy.served() == str(proxy.up / "blue.conf")
    assert "green.conf is missing" in capsys.readouterr().err


def test_test_and_reload_run_nginx_and_systemctl(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path)
    assert proxy.agent("test") == 0
    assert proxy.agent("reload") == 0
    assert proxy.ran == [["nginx", "-t"], ["systemctl", "reload", "nginx"]]


def test_a_failing_nginx_check_fails(tmp_path: Path) -> None:
    proxy = Proxy(tmp_path, rc=1)
    assert proxy.agent("test") == 1
    assert proxy.agent("reload") == 1


def test_show_prints_the_colour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proxy = Proxy(tmp_path)
    assert proxy.agent("show") == 0
    assert capsys.readouterr().out == "blue\n"
    proxy.link.unlink()
    os.symlink("/etc/passwd", proxy.link)
    assert proxy.agent("show") == 1


@pytest.mark.parametrize("request_text", [
    None, "", "id", "point", "point purple", "point Blue", "point blue green", "point  blue",
    " point blue", "point blue ", "point\tblue", "point blue\n", "point ../blue",
    "point blue; id", "point blue && id", "test; reboot", "test -c /tmp/x", "reload nginx",
    "show $(id)", "`id`", "show | sh", "restart", "point /etc/passwd", "test" * 20,
    "point blüe",
])
def test_everything_else_is_refused_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request_text: str | None
) -> None:
    proxy = Proxy(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert proxy.agent(request_text) == 2
    err = capsys.readouterr()
    assert err.out == ""
    assert err.err.startswith("proxyagent: refused: ") and err.err.count("\n") == 1
    assert proxy.served() == str(proxy.up / "blue.conf")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert proxy.ran == []


def test_the_paths_come_only_from_the_forced_command(tmp_path: Path) -> None:
    """A client cannot name a path: the request has no room for one, and the agent's own
    options are read from its argv, never from the environment ssh hands over."""
    proxy = Proxy(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "green.conf").write_text("evil")
    env = {"SSH_ORIGINAL_COMMAND": "point green", "UPSTREAM_DIR": str(other)}
    rc = proxyagent.main(["--upstream-dir", str(proxy.up), "--link", str(proxy.link)], env,
                         proxy.run)
    assert rc == 0
    assert proxy.served() == str(proxy.up / "green.conf")


def test_runs_as_a_script_in_isolated_mode(tmp_path: Path) -> None:
    """As the forced command runs it: python3 -I <file> (no package around it)."""
    proxy = Proxy(tmp_path)
    script = Path(proxyagent.__file__)
    args = [sys.executable, "-I", str(script), "--upstream-dir", str(proxy.up),
            "--link", str(proxy.link)]

    def ssh(request: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "SSH_ORIGINAL_COMMAND": request}
        return subprocess.run(args, env=env, capture_output=True, text=True,  # noqa: S603
                              check=False)

    done = ssh("point green")
    assert done.returncode == 0, done.stderr
    assert proxy.served() == str(proxy.up / "green.conf")
    done = ssh("show")
    assert done.stdout == "green\n"
    done = ssh("id")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("proxyagent: refused")
