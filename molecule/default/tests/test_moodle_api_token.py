"""The hub API token that mod_lticontainer is given does what its user page needs, no more.

From the Moodle host, as the module calls it: `GET <hub>/hub/api/users`, then for a user
to delete `DELETE .../users/<name>/server` and `DELETE .../users/<name>`, with the token
the run generated on the controller (`<inventory>/secrets/<hub>/moodle_api_token.txt`).
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any

testinfra_hosts = ["ansible://moodle"]

LAUNCH = "/opt/jupyterhub/bin/ltihub-launch"
HUB_CA = "/etc/jupyterhub/tls/hub.crt"


def _first_hub(host) -> str:
    return sorted(host.ansible.get_variables()["groups"]["jupyterhub"])[0]


def _hub_host(host, hub: str):
    return host.get_host(f"ansible://{hub}", ansible_inventory=host.backend.ansible_inventory)


def _api(host, hub: str, token: str, path: str, method: str = "GET") -> tuple[int, Any]:
    """Call <hub>/hub/api<path> from the Moodle host, trusting the hub's own certificate."""
    ca = f"/tmp/{hub}-ca.crt"
    if not host.file(ca).exists:
        pem = _hub_host(host, hub).file(HUB_CA).content_string
        host.run(f"printf %s {shlex.quote(pem)} > {ca}")
    out = f"/tmp/{hub}-api.out"
    cmd = (
        f"curl -s -o {out} -w '%{{http_code}}' --cacert {ca} -X {method} "
        f"-H {shlex.quote('Authorization: token ' + token)} https://{hub}/hub/api{path}"
    )
    status = int(host.check_output(cmd))
    body = host.file(out).content_string
    return status, (json.loads(body) if body.strip().startswith(("{", "[")) else body)


def test_token_lists_the_hubs_users(host, controller_secret):
    hub = _first_hub(host)
    status, users = _api(host, hub, controller_secret(hub, "moodle_api_token.txt"), "/users")
    assert status == 200, users
    assert isinstance(users, list)


def test_token_is_refused_outside_its_scopes(host, controller_secret):
    hub = _first_hub(host)
    token = controller_secret(hub, "moodle_api_token.txt")
    status, body = _api(host, hub, token, "/proxy")  # the routing table: scope `proxy`
    assert status == 403, f"the Moodle token may read the proxy's routes: {body}"
    status, _ = _api(host, hub, "0" * 64, "/users")
    assert status == 403, "a made-up token lists the users"


def test_token_stops_a_server_and_deletes_its_user(host, controller_secret):
    """The module's "delete user": stop the server first, then remove the user."""
    hub, user = _first_hub(host), "tokencheck"
    key = controller_secret(hub, "lti_consumer_key.txt")
    secret = controller_secret(hub, "lti_consumer_secret.txt")
    launch = shlex.join([
        LAUNCH, "--url", "https://localhost/hub/lti/launch", "--ca-file", HUB_CA,
        "--key", key, "--user", user, "--timeout", "240",
    ])
    result = _hub_host(host, hub).run(f"LTIHUB_SECRET={shlex.quote(secret)} {launch}")
    assert result.rc == 0, result.stdout + result.stderr

    token = controller_secret(hub, "moodle_api_token.txt")
    status, body = _api(host, hub, token, f"/users/{user}/server", "DELETE")
    assert status in (202, 204), f"the Moodle token cannot stop a server: {status} {body}"
    deadline = time.monotonic() + 60
    while True:
        status, info = _api(host, hub, token, f"/users/{user}")
        assert status == 200 and "servers" in info, info
        if not info["servers"]:
            break
        assert time.monotonic() < deadline, f"the server of {user} did not stop: {info}"
        time.sleep(2)
    status, body = _api(host, hub, token, f"/users/{user}", "DELETE")
    assert status == 204, body
    assert _api(host, hub, token, f"/users/{user}")[0] == 404
