#!/usr/bin/env python3
"""Print what `make demo` left running: URLs, where the credentials are, a test launch.

Secrets are never printed, only the controller paths of the files that hold them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = ROOT / "inventories" / "demo"
HOSTS_FILE = Path(__file__).resolve().parent / "vars" / "demo_hosts.yml"
# Role defaults the print-out relies on (roles/jupyterhub, roles/moodle, roles/moodle_lti_tools).
HUB_VENV = "/opt/jupyterhub"
HUB_CA = "/etc/jupyterhub/tls/hub.crt"
MOODLE_ADMIN_USER = "admin"
TOOL_PREFIX = "JupyterHub"
TEST_USER = "demo-student"


@dataclass
class Host:
    name: str  # inventory name
    container: str
    public_name: str  # the name in URLs (jupyterhub_public_name / moodle_proxy host)
    address: str = "not running"


@dataclass
class Demo:
    moodle: Host
    hubs: list[Host]
    secrets: Path


def _group(inventory: dict[str, Any], group: str) -> dict[str, dict[str, Any]]:
    hosts = inventory["all"]["children"].get(group, {}).get("hosts") or {}
    return {name: dict(hvars or {}) for name, hvars in hosts.items()}


def read_demo(inventory_dir: Path) -> Demo:
    """The demo's hosts from its inventory (hosts.yml), as site.yml will name them."""
    inventory = yaml.safe_load((inventory_dir / "hosts.yml").read_text())
    every: dict[str, dict[str, Any]] = {}
    for group in inventory["all"]["children"]:
        for name, hvars in _group(inventory, group).items():
            every.setdefault(name, {}).update(hvars)
    moodle_name = next(iter(_group(inventory, "moodle")))
    proxy_name = next(iter(_group(inventory, "moodle_proxy")), moodle_name)
    moodle = Host(moodle_name, every[moodle_name].get("ansible_host", moodle_name), proxy_name)
    hubs = [
        Host(name, every[name].get("ansible_host", name),
             every[name].get("jupyterhub_public_name", name))
        for name in _group(inventory, "jupyterhub")
    ]
    return Demo(moodle, hubs, inventory_dir / "secrets")


def container_address(container: str, network: str) -> str:
    result = subprocess.run(  # noqa: S603
        ["docker", "inspect", container],  # noqa: S607
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        return "not running"
    networks = json.loads(result.stdout)[0]["NetworkSettings"]["Networks"]
    return str(networks.get(network, {}).get("IPAddress") or "no address")


def _path(path: Path) -> str:
    note = "" if path.is_file() else "   (missing: did site.yml finish?)"
    return f"{path}{note}"


def launch_command(demo: Demo, hub: Host) -> str:
    """One shell command: a signed LTI launch against the hub, run on the hub's host
    (where its name resolves and its certificate is at hand), that opens JupyterLab."""
    secrets = demo.secrets / hub.name
    args = shlex.join([
        "docker", "exec", "-i", hub.container, f"{HUB_VENV}/bin/ltihub-launch",
        "--url", f"https://{hub.public_name}/hub/lti/launch", "--ca-file", HUB_CA,
        "--moodle-url", f"https://{demo.moodle.public_name}", "--user", TEST_USER, "--open",
        "--secret-file", "/dev/stdin",
    ])
    key = shlex.quote(str(secrets / "lti_consumer_key.txt"))
    secret = shlex.quote(str(secrets / "lti_consumer_secret.txt"))
    return f'{args} --key "$(cat {key})" < {secret}'


def render(demo: Demo, real_archive: str, seconds: int | None) -> str:
    moodle = demo.moodle
    lines = ["", "The demo platform is up.", ""]
    lines.append(f"  {'host':<10} {'container':<20} address")
    for host in [moodle, *demo.hubs]:
        lines.append(f"  {host.name:<10} {host.container:<20} {host.address}")
    lines += ["", f"Moodle:   https://{moodle.public_name}/"]
    if real_archive:
        lines.append(f"          a real Moodle, from {real_archive}")
    else:
        lines += [
            "          This is the TEST STAND-IN for Moodle (tests/moodle_standin), NOT Moodle.",
            "          For a real Moodle: MJP_MOODLE_ARCHIVE=/path/moodle-4.5.tgz "
            "MJP_MOODLE_VERSION=4.5 make demo",
            "          (+ MJP_LTICONTAINER_ARCHIVE=/path/mod_lticontainer.tgz; see "
            "inventories/demo/group_vars/moodle.yml)",
        ]
    lines += [
        f"  admin user:     {MOODLE_ADMIN_USER}",
        f"  admin password: in {_path(demo.secrets / 'moodle-admin-password')}",
        "  browse from this machine (self-signed certificates): add to /etc/hosts",
        *(f"    {h.address} {h.public_name}" for h in [moodle, *demo.hubs]),
        "",
        "JupyterHubs (one LTI 1.1 external tool each in Moodle):",
    ]
    for hub in demo.hubs:
        lines += [
            f"  https://{hub.public_name}/   tool \"{TOOL_PREFIX} {hub.public_name}\"",
            "    API token for mod_lticontainer: in "
            + _path(demo.secrets / hub.name / "moodle_api_token.txt"),
        ]
    lines += [
        "  mod_lticontainer takes the hub per activity: in the activity's settings paste the hub",
        "  URL into \"JupyterHub (container host) URL\" and that hub's token into its",
        "  \"JupyterHub API Token\" field.",
        "  Learning log (the module's dashboard and charts): each hub's log proxy posts the",
        "  cells students run to Moodle's web service with the activity's RPC token; paste the",
        "  token in " + _path(demo.secrets / "moodle-webservice-token"),
        "  into the activity's \"RPC Token\" setting.",
    ]
    if demo.hubs:
        hub = demo.hubs[0]
        lines += [
            "",
            f"Test launch against {hub.name}, signed as Moodle signs it "
            '("page_title": "JupyterLab" in the report = it arrived):',
            f"  {launch_command(demo, hub)}",
        ]
    lines += [
        "",
        f"Reach a host:      docker exec -it {moodle.container} bash",
        "Run Ansible again: .venv/bin/ansible-playbook -i inventories/demo playbooks/site.yml",
        "Tear it down:      make demo-down",
    ]
    if seconds is not None:
        lines += ["", f"make demo took {seconds} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, help="wall time of the demo run")
    parser.add_argument("--inventory", type=Path, default=INVENTORY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    network = str(yaml.safe_load(HOSTS_FILE.read_text())["testbed_network"])
    demo = read_demo(args.inventory)
    for host in [demo.moodle, *demo.hubs]:
        host.address = container_address(host.container, network)
    print(render(demo, os.environ.get("MJP_MOODLE_ARCHIVE", "").strip(), args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
