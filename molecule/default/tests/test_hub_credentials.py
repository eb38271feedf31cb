"""Each hub accepts launches signed with its own LTI credentials only."""

from __future__ import annotations

import json
import os
import shlex

testinfra_hosts = ["ansible://moodle"]

LAUNCH = "/opt/jupyterhub/bin/ltihub-launch"
CA = "/etc/jupyterhub/tls/hub.crt"


def _secret(host, hub: str, name: str) -> str:
    inventory = host.backend.ansible_inventory  # molecule passes the inventory folder
    base = inventory if os.path.isdir(inventory) else os.path.dirname(inventory)
    secrets = os.path.join(base, "secrets", hub)
    with open(os.path.join(secrets, name)) as handle:
        return handle.read().split()[0]


def _launch(host, on_hub: str, signed_by: str, user: str) -> tuple[int, dict[str, object]]:
    hub = host.get_host(f"ansible://{on_hub}", ansible_inventory=host.backend.ansible_inventory)
    key = _secret(host, signed_by, "lti_consumer_key.txt")
    secret = _secret(host, signed_by, "lti_consumer_secret.txt")
    cmd = shlex.join([
        LAUNCH, "--url", "https://localhost/hub/lti/launch", "--ca-file", CA,
        "--key", key, "--user", user, "--timeout", "240",
    ])
    result = hub.run(f"LTIHUB_SECRET={shlex.quote(secret)} {cmd}")
    assert result.stdout.strip(), result.stderr
    return result.rc, json.loads(result.stdout)


def test_launch_signed_for_hub1_works_on_hub1_and_is_refused_by_hub2(host):
    hubs = sorted(host.ansible.get_variables()["groups"]["jupyterhub"])
    first, second = hubs[0], hubs[1]
    rc, report = _launch(host, first, signed_by=first, user="crosscheck1")
    assert rc == 0, report
    rc, report = _launch(host, second, signed_by=first, user="crosscheck2")
    assert rc == 1, f"{second} accepted a launch signed with {first}'s credentials: {report}"
