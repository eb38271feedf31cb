"""A front proxy on a host of its own (inventory group moodle_proxy, not the Moodle host):
the blue-green upgrade and rollback switch it over ssh with the role's key, and that key
can run nothing but the proxy agent (ltihub.upgrade.proxyagent).

Runs only when the scenario has such a host (skipped otherwise), after test_bluegreen.py,
whose upgrades and rollbacks switch it with the other proxy.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml
from conftest import HOST, PUBLIC, fact, front_page

testinfra_hosts = [f"ansible://{HOST}"]

V1 = "4.5 (Build: 20241007)"
V2 = "4.5.1 (Build: 20241209)"
CONFIG = "/var/lib/mjp-moodle/bluegreen/config.json"
UPSTREAMS = "/etc/nginx/moodle-upstreams"
LINK = "/etc/nginx/conf.d/moodle-upstream.conf"
KEY = "/root/.ssh/mjp_bluegreen_ed25519"
HISTORY = "/var/lib/mjp-moodle/bluegreen/history"


def _group_hosts(tree: Any, group: str) -> list[str]:
    """Hosts of ``group`` anywhere in an Ansible YAML inventory."""
    found: list[str] = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == group and isinstance(value, dict):
                found += list((value.get("hosts") or {}).keys())
            found += _group_hosts(value, group)
    return found


def _remote_proxies() -> list[str]:
    inventory = os.environ.get("MOLECULE_INVENTORY_FILE", "")
    if not inventory or not Path(inventory).is_file():
        return []
    tree = yaml.safe_load(Path(inventory).read_text(encoding="utf-8"))
    return sorted({h for h in _group_hosts(tree, "moodle_proxy") if h != HOST})


REMOTE = _remote_proxies()
pytestmark = pytest.mark.skipif(not REMOTE, reason="the scenario has no remote front proxy")


@pytest.fixture(scope="module")
def proxy() -> Any:
    return testinfra.get_host(f"ansible://{REMOTE[0]}",
                              ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


@pytest.fixture(scope="module")
def proxy_ip(proxy: Any) -> str:
    return str(proxy.run("hostname -I").stdout.split()[0])


def _served_link(proxy: Any) -> str:
    return str(proxy.file(LINK).linked_to)


def _through_proxy(host: Any, ip: str) -> tuple[int, str]:
    """(HTTP status, Moodle version) of the public front page fetched through the remote
    proxy (its address, the public name for TLS and Host), from the Moodle host."""
    name = PUBLIC.removeprefix("https://")
    result = host.run(
        f"curl -sk --max-time 20 -o /tmp/rp.html -w '%{{http_code}}' "
        f"--resolve {shlex.quote(name)}:443:{shlex.quote(ip)} {shlex.quote(PUBLIC)}/")
    assert result.rc == 0, result.stderr
    body = host.file("/tmp/rp.html").content_string
    version = V2 if f"Moodle {V2}" in body else V1 if f"Moodle {V1}" in body else "?"
    return int(result.stdout), version


def _prefix(host: Any) -> list[str]:
    """How the program reaches the remote proxy (from its settings on the Moodle host)."""
    settings = json.loads(host.file(CONFIG).content_string)
    remote = next(p for p in settings["proxies"] if p["name"] == REMOTE[0])
    return [str(x) for x in remote["prefix"]]


def test_the_remote_proxy_followed_every_switch(host: Any, proxy: Any, proxy_ip: str) -> None:
    """The upgrades, rollbacks, restores and killed runs of the tests before this one all
    switched both proxies (the program checks the public URL through each before it calls a
    switch done); at the end the remote one serves what the Moodle host's own proxy does."""
    live = fact(host)["active_colour"]
    assert _served_link(proxy) == f"{UPSTREAMS}/{live}.conf"
    status, body = front_page(host)
    assert status == 200
    assert _through_proxy(host, proxy_ip) == (200, V2 if f"Moodle {V2}" in body else V1)
    switched = host.run(f"cat {HISTORY}/*.jsonl 2>/dev/null | grep -c '\"step\": \"switch\"'")
    print(f"\nswitch records in the program's history: {switched.stdout.strip() or 0}")


def test_the_key_runs_only_the_proxy_agent(host: Any, proxy: Any) -> None:
    prefix = _prefix(host)
    assert prefix[:3] == ["ssh", "-i", KEY] and prefix[-1].startswith("root@")
    before = _served_link(proxy)
    colour = before.rsplit("/", 1)[1].removesuffix(".conf")

    shown = host.run(shlex.join([*prefix, "show"]))
    assert shown.rc == 0 and shown.stdout.strip() == colour, shown.stderr

    for request in (["id"], ["point", "purple"], ["point blue; id"], ["cat", "/etc/shadow"],
                    []):
        refused = host.run(shlex.join([*prefix, *request]))
        assert refused.rc == 2, (request, refused.stdout, refused.stderr)
        assert "proxyagent: refused" in refused.stderr
        assert refused.stdout == ""
    assert _served_link(proxy) == before

    line = proxy.file("/root/.ssh/authorized_keys").content_string
    entry = next(x for x in line.splitlines() if "mjp-bluegreen@" in x)
    assert entry.startswith("restrict,") and 'from="' in entry
    assert 'command="/usr/bin/python3 -I /usr/local/lib/mjp/python/ltihub/upgrade/proxyagent.py' \
        in entry
    assert host.file(KEY).mode == 0o600 and host.file(KEY).user == "root"
    assert not proxy.file(KEY).exists  # the private key stays on the Moodle host
    agent_dir = proxy.file("/usr/local/lib/mjp/python")
    assert agent_dir.user == "root" and agent_dir.mode == 0o700
