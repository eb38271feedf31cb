#!/usr/bin/env python3
"""Print how to reach the demo hosts that `make demo` left running."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

HOSTS_FILE = Path(__file__).resolve().parent / "vars" / "demo_hosts.yml"


def container_address(container: str, network: str) -> str:
    result = subprocess.run(  # noqa: S603
        ["docker", "inspect", container],  # noqa: S607
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        return "not running"
    networks = json.loads(result.stdout)[0]["NetworkSettings"]["Networks"]
    return str(networks.get(network, {}).get("IPAddress") or "no address")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, help="wall time of the demo run")
    args = parser.parse_args(argv)
    config = yaml.safe_load(HOSTS_FILE.read_text())
    print("\nThe demo platform is up:\n")
    print(f"  {'host':<10} {'container':<20} address")
    for host in config["testbed_hosts"]:
        address = container_address(host["container"], config["testbed_network"])
        print(f"  {host['name']:<10} {host['container']:<20} {address}")
    print("\nReach a host:      docker exec -it mjp-demo-moodle1 bash")
    print("Run Ansible again: .venv/bin/ansible-playbook -i inventories/demo playbooks/site.yml")
    print("Tear it down:      make demo-down")
    if args.seconds is not None:
        print(f"\nmake demo took {args.seconds} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
