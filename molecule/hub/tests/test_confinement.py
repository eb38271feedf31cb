"""Student containers are confined (issue 13 item 4): no traffic between them, none to
the hub host but its API, none to link-local addresses, none to the networks the operator
lists (jupyterhub_blocked_networks), none at all beyond the hub API in exam mode
(jupyterhub_student_egress: false), no raw sockets, no capabilities for the user, and a
fork bomb stays inside its container's pids limit.

Runs on the hub with users of its own. Every connection attempt goes to the test hub's
own containers or addresses (169.254.169.254 only as a connect with a short timeout that
must fail), to a network namespace the test builds on the hub ("outside": the
documentation networks 192.0.2.0/24, listed in inventories/demo, and 198.51.100.0/24,
not listed, routed into it and nowhere else) or, in the default scenario, to the Moodle
host. The "blocked" cases must time out (a drop), which a closed port (refused) would
not: so each test fails if the rule is missing. Each has a positive control.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hubtest import CONNECT_SCRIPT, Hub, run_play


def _inventory() -> dict[str, Any]:
    with open(os.environ["MOLECULE_INVENTORY_FILE"]) as handle:
        return yaml.safe_load(handle)  # type: ignore[no-any-return]


def _first_hub() -> str:
    return str(next(iter(_inventory()["jupyterhub"]["hosts"])))


testinfra_hosts = [f"ansible://{_first_hub()}"]

NETWORK = "jupyterhub"  # jupyterhub_docker_network
PYTHON = "/opt/conda/bin/python3"  # jupyterhub_conda_dir
FIRST, FIRST_ID = "cfone", "301"
SECOND, SECOND_ID = "cftwo", "302"
PIDS_LIMIT = 512  # jupyterhub_notebook_pids_limit (default)
HUB_PORT = 8081  # jupyterhub_hub_port
EXAM, EXAM_ID = "cfexam", "304"


# "Outside" the hub: a network namespace on the hub behind a veth pair, reached from the
# notebook containers the way any other network is (forwarded, NAT by the engine). The
# listed network (inventories/demo/group_vars/jupyterhub.yml) and a control network that
# is not listed are both routed into it, and only there.
NETNS, VETH, PEER = "mjpconf", "mjpconf0", "mjpconf1"
LISTED_NET, LISTED_ADDR = "192.0.2.0/24", "192.0.2.2"  # TEST-NET-1: jupyterhub_blocked_networks
LINK_HUB, UNLISTED_ADDR = "198.51.100.1", "198.51.100.2"  # TEST-NET-2: not listed
OUTSIDE_PORT = 18766
LISTENER = "mjp-confinement-test-listener"

_LISTEN = f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {OUTSIDE_PORT})); s.listen(16)
while True:
    c, _ = s.accept(); c.close()
"""

_OUTSIDE_UP = f"""set -e
ip netns add {NETNS}
ip link add {VETH} type veth peer name {PEER}
ip link set {PEER} netns {NETNS}
ip addr add {LINK_HUB}/24 dev {VETH}
ip link set {VETH} up
ip -n {NETNS} link set lo up
ip -n {NETNS} addr add {UNLISTED_ADDR}/24 dev {PEER}
ip -n {NETNS} addr add {LISTED_ADDR}/32 dev {PEER}
ip -n {NETNS} link set {PEER} up
ip -n {NETNS} route add default via {LINK_HUB}
ip route add {LISTED_NET} via {UNLISTED_ADDR} dev {VETH}
"""

_OUTSIDE_DOWN = f"""
systemctl stop {LISTENER}; systemctl reset-failed {LISTENER}
ip route del {LISTED_NET}; ip link del {VETH}; ip netns del {NETNS}
true
"""

# The jupyterhub role's own confinement tasks (template, unit, handler), on one hub, with
# the inventory's settings plus the extra variables of the run.
_CONFINEMENT_PLAYBOOK = """\
- name: Apply the notebook confinement rules as the jupyterhub role does
  hosts: "{{ target }}"
  gather_facts: false
  tasks:
    - name: The role's confinement tasks
      ansible.builtin.include_role:
        name: jupyterhub
        tasks_from: confinement
"""

_RAW = """
import socket
try:
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("allowed")
except PermissionError: print("PermissionError")
"""

# Every non-root process running jupyterhub-singleuser, with its uid and capability sets.
_SERVER_CAPS = """
import json, os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    except OSError:
        continue
    if any(os.path.basename(a) == b"jupyterhub-singleuser" for a in argv[:2]):
        info = {k: v.split()[0] for k, v in status.items() if k == "Uid" or k.startswith("Cap")}
        if info["Uid"] != "0":
            print(json.dumps(info))
"""

# Forks until the kernel says no; the children sleep, then exit on their own.
_FORK = """
import os, time
n = 0
try:
    while n < 100000:
        if os.fork() == 0:
            time.sleep(40); os._exit(0)
        n += 1
    print("unbounded", n)
except OSError as e:
    print("stopped", n, e.errno)
"""


def uid(user_id: str) -> int:
    return 30000 + int(user_id)


def as_user(hub: Hub, user: str, user_id: str, cmd: str) -> str:
    drop = f"setpriv --reuid={uid(user_id)} --regid=30000 --init-groups"
    return hub.exec(hub.container_of(user), f"cd /tmp && {drop} {cmd}")


def py(script: str, *args: str) -> str:
    return f"{PYTHON} -c {shlex.quote(script)} {shlex.join(args)}"


def connect_from(hub: Hub, user: str, user_id: str, addr: str, port: int, wait: int = 3) -> str:
    return as_user(hub, user, user_id, py(CONNECT_SCRIPT, addr, str(port), str(wait)))


def network_of(hub: Hub, user: str) -> dict[str, Any]:
    info = hub.inspect(hub.container_of(user))
    return info["NetworkSettings"]["Networks"][NETWORK]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def hub(host: Any) -> Hub:
    hub = Hub(host)
    for user, user_id in ((FIRST, FIRST_ID), (SECOND, SECOND_ID)):
        report = hub.launch(user, "--user-id", user_id, "--custom", "lms_users=*")
        assert report["result"] == "ok", report
    return hub


def test_containers_are_created_confined(hub: Hub) -> None:
    config = hub.inspect(hub.container_of(FIRST))["HostConfig"]
    assert config["PidsLimit"] == PIDS_LIMIT
    assert [c.upper().removeprefix("CAP_") for c in config["CapDrop"]] == ["ALL"]
    kept = {c.upper().removeprefix("CAP_") for c in config["CapAdd"]}
    assert "NET_RAW" not in kept and "SYS_ADMIN" not in kept
    assert "no-new-privileges:true" in (config["SecurityOpt"] or [])
    assert config["Privileged"] is False


def test_network_has_no_inter_container_traffic(host: Any) -> None:
    options = json.loads(host.check_output(f"docker network inspect {NETWORK}"))[0]["Options"]
    assert options.get("com.docker.network.bridge.enable_icc") == "false"
    table = host.check_output("nft list table inet mjp_notebooks")
    assert "169.254.0.0/16" in table


def test_student_cannot_reach_another_students_server(host: Any, hub: Hub) -> None:
    other = network_of(hub, SECOND)["IPAddress"]
    # control: the hub's proxy (on the host) reaches that server
    control = py(CONNECT_SCRIPT, other, "8888", "5").replace(PYTHON, "python3")
    assert host.check_output(control) == "open"
    assert connect_from(hub, FIRST, FIRST_ID, other, 8888) == "timeout"


def test_student_reaches_the_hub_api_but_no_other_host_port(host: Any, hub: Hub) -> None:
    gateway = network_of(hub, FIRST)["Gateway"]
    assert connect_from(hub, FIRST, FIRST_ID, gateway, 8081) == "open"  # jupyterhub_hub_port
    # dropped, not refused: the proxy's HTTPS port and SSH
    assert connect_from(hub, FIRST, FIRST_ID, gateway, 443) == "timeout"
    assert connect_from(hub, FIRST, FIRST_ID, gateway, 22) == "timeout"


def test_student_cannot_reach_link_local_addresses(hub: Hub) -> None:
    assert connect_from(hub, FIRST, FIRST_ID, "169.254.169.254", 80, wait=2) != "open"


# ---- the operator's blocked networks and exam mode -------------------------------------
@dataclass
class Outside:
    """Addresses outside the hub that a student container tries to reach."""

    listed: tuple[str, int]  # in jupyterhub_blocked_networks
    unlisted: list[tuple[str, int]]  # not listed: open unless exam mode is on


def _connect_here(host: Any, addr: str, port: int) -> str:
    return str(host.check_output(f"python3 -c {shlex.quote(CONNECT_SCRIPT)} {addr} {port} 3"))


@pytest.fixture(scope="module")
def outside(host: Any) -> Iterator[Outside]:
    host.run(_OUTSIDE_DOWN)  # leftovers of an interrupted run
    up = host.run(_OUTSIDE_UP)
    try:
        assert up.rc == 0, up.stderr
        # both test networks lead into the namespace and nowhere else
        for addr in (LISTED_ADDR, UNLISTED_ADDR):
            assert f"dev {VETH}" in host.check_output(f"ip route get {addr}")
        host.check_output(
            f"systemd-run --unit={LISTENER} -p RuntimeMaxSec=1800 "
            f"/usr/bin/nsenter --net=/run/netns/{NETNS} /usr/bin/python3 -c {shlex.quote(_LISTEN)}"
        )
        # control: the hub host's own traffic reaches the listener at both addresses
        for addr in (LISTED_ADDR, UNLISTED_ADDR):
            for _ in range(20):
                if _connect_here(host, addr, OUTSIDE_PORT) == "open":
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"the test listener does not answer at {addr}")
        unlisted = [(UNLISTED_ADDR, OUTSIDE_PORT)]
        moodle = next(iter(_inventory().get("moodle", {}).get("hosts") or {}), None)
        if moodle:  # the full site: the Moodle host's HTTPS, a real host outside the hub
            address = host.check_output(f"getent ahostsv4 {moodle} | head -n1 | cut -d' ' -f1")
            assert address, f"{moodle} does not resolve on the hub"
            unlisted.append((address, 443))
        yield Outside(listed=(LISTED_ADDR, OUTSIDE_PORT), unlisted=unlisted)
    finally:
        host.run(_OUTSIDE_DOWN)


def apply_confinement(tmp_path: Path, **extra_vars: Any) -> str:
    """Run the role's confinement tasks on the first hub; return the output (rc 0 asserted)."""
    extra = {"target": _first_hub(), **extra_vars}
    run = run_play(tmp_path, _CONFINEMENT_PLAYBOOK, "-e", json.dumps(extra))
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    return output


def test_student_cannot_reach_a_listed_network(host: Any, hub: Hub, outside: Outside) -> None:
    blocked = host.ansible.get_variables().get("jupyterhub_blocked_networks", [])
    assert LISTED_NET in blocked, "inventories/demo lists the test network"
    assert LISTED_NET in host.check_output("nft list table inet mjp_notebooks")
    # control: the same listener behind a network that is not listed answers the student
    assert connect_from(hub, FIRST, FIRST_ID, *outside.unlisted[0]) == "open"
    assert connect_from(hub, FIRST, FIRST_ID, *outside.listed) == "timeout"


def test_exam_mode_cuts_egress_but_keeps_the_hub_api(
    hub: Hub, outside: Outside, tmp_path: Path
) -> None:
    for target in outside.unlisted:  # control: reachable before the exam
        assert connect_from(hub, FIRST, FIRST_ID, *target) == "open", target
    try:
        apply_confinement(tmp_path, jupyterhub_student_egress=False)
        for target in [*outside.unlisted, outside.listed]:
            assert connect_from(hub, FIRST, FIRST_ID, *target) == "timeout", target
        # the running server still reaches the hub API, and a student starts a new server
        # and uses JupyterLab (the server checks the user's login with the hub API)
        gateway = network_of(hub, FIRST)["Gateway"]
        assert connect_from(hub, FIRST, FIRST_ID, gateway, HUB_PORT) == "open"
        out = hub.lab_status(EXAM, EXAM_ID)
        assert out["launch"] == "ok" and out["lab_status"] == 200, out
        assert out["api_status"] == 200, out
        assert connect_from(hub, EXAM, EXAM_ID, *outside.unlisted[0]) == "timeout"
    finally:
        # exam over: the inventory's settings again
        apply_confinement(tmp_path)
    for target in outside.unlisted:
        assert connect_from(hub, FIRST, FIRST_ID, *target) == "open", target
    assert connect_from(hub, EXAM, EXAM_ID, *outside.unlisted[0]) == "open"
    assert connect_from(hub, FIRST, FIRST_ID, *outside.listed) == "timeout"  # still listed


def test_raw_sockets_are_refused(hub: Hub) -> None:
    assert as_user(hub, FIRST, FIRST_ID, py(_RAW)) == "PermissionError"
    # root in the container (the start script's side) has no NET_RAW either
    assert hub.exec(hub.container_of(FIRST), py(_RAW)) == "PermissionError"


def test_the_users_processes_have_no_capabilities(hub: Hub) -> None:
    status = as_user(hub, FIRST, FIRST_ID, "grep -E '^Cap(Eff|Prm|Amb)' /proc/self/status")
    assert all(line.split()[1] == "0" * 16 for line in status.splitlines()), status
    # the running server itself (started by the image's start script); `timeout`, its
    # root parent when the activity has a time limit, keeps KILL and is left out
    found = hub.exec(hub.container_of(FIRST), py(_SERVER_CAPS))
    servers = [json.loads(line) for line in found.splitlines()]
    assert servers, "no jupyterhub-singleuser process found"
    for server in servers:
        assert server["Uid"] != "0", server
        assert {server[k] for k in ("CapEff", "CapPrm", "CapAmb", "CapBnd")} == {"0" * 16}, server


def test_fork_bomb_is_contained_and_the_hub_keeps_answering(hub: Hub) -> None:
    out = as_user(hub, SECOND, SECOND_ID, f"timeout 120 {py(_FORK)}")
    word, count, *_ = out.split()
    assert word == "stopped", out
    assert int(count) < PIDS_LIMIT
    # while the forked children still sleep: the hub answers and starts a new server
    hub.wait_api(30)
    report = hub.launch("cfthree", "--user-id", "303", "--custom", "lms_users=*")
    assert report["result"] == "ok", report
