"""Moodle's mod_lticontainer reaches every hub's container engine through a tunnel.

Run on the Moodle host (and, for the account checks, on the hubs): what an operator
would try by hand after site.yml.
"""

from __future__ import annotations

import shlex
import time

import pytest

testinfra_hosts = ["ansible://moodle"]

WEB_USER = "www-data"
ACCOUNT = "ltiforward"


def _hubs(host) -> list[str]:
    groups = host.ansible.get_variables()["groups"]
    return sorted(groups["jupyterhub"])


def _hub_host(host, hub: str):
    return host.get_host(f"ansible://{hub}", ansible_inventory=host.backend.ansible_inventory)


def _as_web_user(host, command: str):
    return host.run(f"runuser -u {WEB_USER} -- {command}")


def _wait_for_images(host, hub: str, seconds: int = 10) -> float:
    """Seconds until `docker images` works through the tunnel again (the module's call)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if _as_web_user(host, f"docker -H unix:///tmp/lticontainer_{hub}.sock images").rc == 0:
            return time.monotonic() - start
        time.sleep(0.5)
    raise AssertionError(f"the tunnel to {hub} did not come back within {seconds} s")


def _tunnel_ssh_pid(host, hub: str) -> int:
    """The tunnel's ssh: the child of the unit's main process (the socket watcher)."""
    unit = f"lticontainer-tunnel@{hub}.service"
    watcher = host.check_output(f"systemctl show -p MainPID --value {unit}")
    children = host.check_output(f"cat /proc/{watcher}/task/{watcher}/children").split()
    assert len(children) == 1, children
    assert host.check_output(f"cat /proc/{children[0]}/comm") == "ssh"
    return int(children[0])


def test_each_hub_lists_its_images(host):
    for hub in _hubs(host):
        result = _as_web_user(host, f"docker -H unix:///tmp/lticontainer_{hub}.sock images")
        assert result.rc == 0, result.stderr
        assert "REPOSITORY" in result.stdout


def test_each_socket_leads_to_its_own_hub(host):
    # `docker info` is refused by the engine guard: a volume made through the tunnel of
    # one hub must appear on that hub's engine and on no other.
    hubs = _hubs(host)
    for hub in hubs:
        name = f"lms_vol_whoami_1_{hub}"
        docker = f"docker -H unix:///tmp/lticontainer_{hub}.sock"
        assert _as_web_user(host, f"{docker} volume create {name}").rc == 0
        try:
            for other in hubs:
                found = _hub_host(host, other).run(f"docker volume inspect {name}").rc == 0
                assert found == (other == hub), f"{name} made through {hub}'s tunnel on {other}"
        finally:
            _as_web_user(host, f"{docker} volume rm {name}")


def test_volume_create_list_remove(host):
    for hub in _hubs(host):
        docker = f"docker -H unix:///tmp/lticontainer_{hub}.sock"
        name = "lms_vol_tunneltest_1_moodle"
        assert _as_web_user(host, f"{docker} volume create {name}").rc == 0
        assert name in _as_web_user(host, f"{docker} volume ls -q").stdout.split()
        assert _as_web_user(host, f"{docker} volume rm {name}").rc == 0


def test_sockets_belong_to_the_web_user_only(host):
    for hub in _hubs(host):
        sock = host.file(f"/tmp/lticontainer_{hub}.sock")
        assert sock.is_socket
        assert sock.user == WEB_USER
        assert sock.mode & 0o077 == 0, oct(sock.mode)
        docker = f"docker -H unix:///tmp/lticontainer_{hub}.sock"
        nobody = host.run(f"runuser -u nobody -- {docker} images")
        assert nobody.rc != 0


def test_host_keys_are_pinned(host):
    config = host.file("/etc/lticontainer-tunnel/ssh_config").content_string
    assert "StrictHostKeyChecking yes" in config
    assert "StrictHostKeyChecking no" not in config
    known = host.file("/etc/lticontainer-tunnel/known_hosts").content_string
    for hub in _hubs(host):
        assert f"\n{hub} ssh-ed25519 " in "\n" + known


def test_tunnel_heals_after_its_socket_is_deleted(host):
    # mod_lticontainer's fallback (sh/container_rsock.sh) runs `rm -f` on the socket, as
    # the web user, whenever a command printed nothing.
    hub = _hubs(host)[0]
    before = _tunnel_ssh_pid(host, hub)
    assert _as_web_user(host, f"rm -f /tmp/lticontainer_{hub}.sock").rc == 0
    seconds = _wait_for_images(host, hub, seconds=10)
    print(f"tunnel to {hub} back {seconds:.1f} s after its socket was deleted")
    assert _tunnel_ssh_pid(host, hub) != before, "the old ssh was left running"
    assert host.file(f"/tmp/lticontainer_{hub}.sock").user == WEB_USER


def test_tunnel_heals_after_its_ssh_is_killed(host):
    hub = _hubs(host)[0]
    host.run(f"kill -9 {_tunnel_ssh_pid(host, hub)}")
    seconds = _wait_for_images(host, hub, seconds=10)
    print(f"tunnel to {hub} back {seconds:.1f} s after its ssh was killed")


def test_tunnel_heals_after_sshd_restart_on_the_hub(host):
    hub = _hubs(host)[-1]
    _hub_host(host, hub).run("systemctl restart ssh")
    seconds = _wait_for_images(host, hub, seconds=10)
    print(f"tunnel to {hub} works {seconds:.1f} s after sshd restarted on it")


def _probe_forward(host, hub: str, forward: str, client: str) -> str:
    """Open a forward as the tunnel would, try it, and return what ssh and the client said."""
    err = "/tmp/probe-ssh.err"
    script = (
        f"timeout 15 ssh -F /etc/lticontainer-tunnel/ssh_config -N -v "
        f"-L {forward} {hub} 2>{err} & sleep 4; {client}; echo client-rc=$?; "
        f"kill %1 2>/dev/null; wait; cat {err}; rm -f {err}"
    )
    return _as_web_user(host, f"bash -c {shlex.quote(script)}").stdout


@pytest.mark.parametrize(
    "remote",
    [
        "/run/dbus/system_bus_socket",  # a world-writable Unix socket on the hub
        "/var/run/docker.sock",  # the engine socket itself, outside the chroot
    ],
)
def test_account_cannot_forward_to_other_sockets(host, remote):
    hub = _hubs(host)[0]
    local = "/tmp/probe-forward.sock"
    out = _probe_forward(
        host, hub, f"{local}:{remote}",
        f"curl -s --max-time 5 --unix-socket {local} http://x/version; rm -f {local}",
    )
    assert "open failed" in out, out
    assert "ApiVersion" not in out


def test_account_cannot_forward_tcp_ports(host):
    hub = _hubs(host)[0]
    out = _probe_forward(
        host, hub, "127.0.0.1:18022:127.0.0.1:22",
        "timeout 5 bash -c 'head -c 7 < /dev/tcp/127.0.0.1/18022'",
    )
    assert "SSH-2.0" not in out.split("client-rc")[0]
    assert "open failed" in out, out


@pytest.mark.parametrize("command", ["id", "/bin/sh -c id", ""])
def test_account_cannot_run_commands_or_get_a_shell(host, command):
    hub = _hubs(host)[0]
    result = _as_web_user(
        host, f"timeout 15 ssh -F /etc/lticontainer-tunnel/ssh_config -T {hub} {command}"
    )
    assert result.rc != 0
    assert "uid=" not in result.stdout


def test_forwarding_account_has_no_password_and_no_shell(host):
    for hub in _hubs(host):
        hub_host = _hub_host(host, hub)
        entry = hub_host.user(ACCOUNT)
        assert entry.shell.endswith("nologin")
        assert hub_host.check_output(f"getent shadow {ACCOUNT} | cut -d: -f2") in ("*", "!*")
