"""Student containers are confined (issue 13 item 4): no traffic between them, none to
the hub host but its API, none to link-local addresses, no raw sockets, no capabilities
for the user, and a fork bomb stays inside its container's pids limit.

Runs on the hub with users of its own. Every connection attempt goes to the test hub's
own containers or addresses (169.254.169.254 only as a connect with a short timeout that
must fail); the "blocked" cases must time out (a drop), which a closed port (refused)
would not: so each test fails if the rule is missing. Each has a positive control.
"""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

import pytest
import yaml
from hubtest import CONNECT_SCRIPT, Hub


def _first_hub() -> str:
    with open(os.environ["MOLECULE_INVENTORY_FILE"]) as handle:
        inventory = yaml.safe_load(handle)
    return str(next(iter(inventory["jupyterhub"]["hosts"])))


testinfra_hosts = [f"ansible://{_first_hub()}"]

NETWORK = "jupyterhub"  # jupyterhub_docker_network
PYTHON = "/opt/conda/bin/python3"  # jupyterhub_conda_dir
FIRST, FIRST_ID = "cfone", "301"
SECOND, SECOND_ID = "cftwo", "302"
PIDS_LIMIT = 512  # jupyterhub_notebook_pids_limit (default)

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
