"""Hubs get a firewall too (issue 13 item 3): from the Moodle host only SSH and the hub's
HTTPS port answer; the notebook containers still reach the hub API and, through the
engine's own forwarding and NAT, other networks; Docker's rules survive.

Run on the Moodle host against the first hub. Every connection goes to the test hosts'
own addresses. A port the firewall closes must time out (dropped), which a port nobody
listens on (refused) would not, and the listener behind it is checked from the hub itself:
so the test fails if the rule is missing.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hub" / "tests"))
from hubtest import CONNECT_SCRIPT, Hub  # noqa: E402

testinfra_hosts = ["ansible://moodle"]

CLOSED_PORT = 18765  # nothing of the platform uses it; the test listens there itself
LISTENER = "mjp-firewall-test-listener"
NETWORK = "jupyterhub"  # jupyterhub_docker_network
HUB_PORT = 8081  # jupyterhub_hub_port
HTTPS_PORT = 443  # jupyterhub_https_port
NB_PYTHON = "/opt/conda/bin/python3"  # jupyterhub_conda_dir
USER, USER_ID = "fwcheck", "401"

_LISTEN = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {CLOSED_PORT})); s.listen(8)
while True:
    c, _ = s.accept(); c.close()
"""

# The hub API's root answers anyone with its version (what jupyterhub-singleuser asks).
_HUB_API = """
import json, sys, urllib.request
with urllib.request.urlopen(f"http://{sys.argv[1]}:{sys.argv[2]}/hub/api/", timeout=10) as r:
    print(json.dumps({"status": r.status, "body": json.loads(r.read())}))
"""


def connect(on: Any, addr: str, port: int, wait: int = 3, python: str = "python3") -> str:
    script = f"{python} -c {shlex.quote(CONNECT_SCRIPT)} {shlex.quote(addr)} {port} {wait}"
    return str(on.check_output(script))


def _hub_name(host: Any) -> str:
    return sorted(host.ansible.get_variables()["groups"]["jupyterhub"])[0]


@pytest.fixture(scope="module")
def hub_host(host: Any) -> Any:
    return host.get_host(
        f"ansible://{_hub_name(host)}", ansible_inventory=host.backend.ansible_inventory
    )


@pytest.fixture(scope="module")
def hub_address(host: Any) -> str:
    """The hub's address as the Moodle host resolves it (what the tunnel uses)."""
    return str(host.check_output(f"getent ahostsv4 {_hub_name(host)} | head -n1 | cut -d' ' -f1"))


def test_the_hub_runs_our_table_beside_the_engines_rules(hub_host: Any) -> None:
    ours = hub_host.check_output("nft list table inet mjp_firewall")
    assert "hook input" in ours and "policy drop" in ours
    tables = hub_host.check_output("nft list tables")
    assert "inet mjp_notebooks" in tables  # the confinement of the jupyterhub role
    assert "DOCKER" in hub_host.check_output("iptables -t nat -S")  # the engine's NAT
    conf = hub_host.file("/etc/nftables.conf").content_string
    rules = [line.strip() for line in conf.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in rules if line.startswith("flush")], conf
    # stopping nftables.service would remove our table only
    unit = hub_host.check_output("systemctl cat nftables.service")
    assert "ExecStop=-/usr/sbin/nft delete table inet mjp_firewall" in unit


def test_ssh_and_https_answer_from_the_moodle_host(host: Any, hub_address: str) -> None:
    assert connect(host, hub_address, 22) == "open"
    assert connect(host, hub_address, HTTPS_PORT) == "open"


def test_a_port_not_opened_is_dropped(host: Any, hub_host: Any, hub_address: str) -> None:
    hub_host.run(f"systemctl stop {LISTENER}")
    hub_host.check_output(
        f"systemd-run --unit={LISTENER} -p RuntimeMaxSec=300 /usr/bin/python3 -c "
        + shlex.quote(_LISTEN)
    )
    try:
        # its address on the hosts' network (hostname -I may list a bridge first)
        own = hub_host.check_output("hostname -i").split()[0]
        for _ in range(20):  # control: the listener is up (the hub's own traffic passes)
            if connect(hub_host, own, CLOSED_PORT) == "open":
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the test listener did not come up on the hub")
        assert connect(host, hub_address, CLOSED_PORT, wait=4) == "timeout"
        # the hub API listens on the notebook bridge only and is not opened either
        assert connect(host, hub_address, HUB_PORT, wait=4) == "timeout"
    finally:
        hub_host.run(f"systemctl stop {LISTENER}")


@pytest.fixture(scope="module")
def notebook(hub_host: Any) -> tuple[Hub, str]:
    hub = Hub(hub_host)
    # A launch succeeds only if jupyterhub-singleuser in the container reached the hub API.
    report = hub.launch(USER, "--user-id", USER_ID, "--custom", "lms_users=*")
    assert report["result"] == "ok", report
    return hub, hub.container_of(USER)


def test_a_notebook_container_reaches_the_hub_api(notebook: tuple[Hub, str]) -> None:
    hub, container = notebook
    gateway = hub.inspect(container)["NetworkSettings"]["Networks"][NETWORK]["Gateway"]
    out = hub.exec(container, f"{NB_PYTHON} -c {shlex.quote(_HUB_API)} {gateway} {HUB_PORT}")
    answer = json.loads(out)
    assert answer["status"] == 200 and "version" in answer["body"], answer


def test_a_notebook_container_still_reaches_other_networks(
    host: Any, notebook: tuple[Hub, str]
) -> None:
    """Egress (forwarded and masqueraded by the engine) is not the firewall's business:
    the Moodle host's HTTPS port, outside the hub, answers a student's container."""
    hub, container = notebook
    # the Moodle host's address on the hosts' network (`hostname -I` lists its own Docker
    # bridge first, whose address the hub's bridge shares)
    moodle = host.check_output("hostname -i").split()[0]
    assert hub.exec(container, _connect_cmd(moodle, HTTPS_PORT)) == "open"


def _connect_cmd(addr: str, port: int) -> str:
    return f"{NB_PYTHON} -c {shlex.quote(CONNECT_SCRIPT)} {shlex.quote(addr)} {port} 5"
