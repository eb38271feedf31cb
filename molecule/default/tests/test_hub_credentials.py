"""Each hub accepts launches signed with its own LTI credentials only."""

from __future__ import annotations

import json
import shlex

testinfra_hosts = ["ansible://moodle"]

LAUNCH = "/opt/jupyterhub/bin/ltihub-launch"
CA = "/etc/jupyterhub/tls/hub.crt"


def _launch(
    host, secret_of, on_hub: str, signed_by: str, user: str
) -> tuple[int, dict[str, object]]:
    hub = host.get_host(f"ansible://{on_hub}", ansible_inventory=host.backend.ansible_inventory)
    key = secret_of(signed_by, "lti_consumer_key.txt")
    secret = secret_of(signed_by, "lti_consumer_secret.txt")
    cmd = shlex.join([
        LAUNCH, "--url", "https://localhost/hub/lti/launch", "--ca-file", CA,
        "--key", key, "--user", user, "--timeout", "240",
    ])
    result = hub.run(f"LTIHUB_SECRET={shlex.quote(secret)} {cmd}")
    assert result.stdout.strip(), result.stderr
    return result.rc, json.loads(result.stdout)


def test_launch_signed_for_hub1_works_on_hub1_and_is_refused_by_hub2(host, controller_secret):
    hubs = sorted(host.ansible.get_variables()["groups"]["jupyterhub"])
    first, second = hubs[0], hubs[1]
    rc, report = _launch(host, controller_secret, first, signed_by=first, user="crosscheck1")
    assert rc == 0, report
    rc, report = _launch(host, controller_secret, second, signed_by=first, user="crosscheck2")
    assert rc == 1, f"{second} accepted a launch signed with {first}'s credentials: {report}"
