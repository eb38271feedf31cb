"""What an operator checks on every host after `site.yml` ran the common role."""

from __future__ import annotations

import glob
import re

import pytest

CONTROLLER_CAS = sorted(glob.glob("/usr/local/share/ca-certificates/*.crt"))

# Where each OS family keeps what the common role manages.
FAMILY = {
    "debian": {"chrony_conf": "/etc/chrony/chrony.conf", "chrony": "chrony",
               "bundle": "/etc/ssl/certs/ca-certificates.crt"},
    "redhat": {"chrony_conf": "/etc/chrony.conf", "chrony": "chronyd",
               "bundle": "/etc/pki/tls/certs/ca-bundle.crt"},
}


def _family(host) -> dict[str, str]:
    distro = host.system_info.distribution.lower()
    return FAMILY["redhat" if distro in ("rocky", "redhat", "centos", "almalinux") else "debian"]


def _pem_body(text: str) -> str:
    match = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    assert match, "not a PEM certificate"
    return "".join(match.group(1).split())


def test_systemd_is_running(host):
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state == "running", host.run("systemctl --failed --no-pager").stdout


@pytest.mark.parametrize("package", ["acl", "ca-certificates", "curl", "rsync", "tzdata", "chrony"])
def test_base_packages(host, package):
    assert host.package(package).is_installed


def test_time_zone(host):
    wanted = host.ansible.get_variables()["common_timezone"]
    assert host.file("/etc/localtime").linked_to.endswith("/" + wanted)


def test_chrony_configured_and_enabled(host):
    conf = host.file(_family(host)["chrony_conf"])
    assert re.search(r"^(pool|server) \S+ iburst$", conf.content_string, re.M)
    assert conf.mode == 0o644
    assert host.service(_family(host)["chrony"]).is_enabled


@pytest.mark.parametrize("ca_path", CONTROLLER_CAS or [None])
def test_controller_cas_are_trusted(host, ca_path):
    if ca_path is None:
        pytest.skip("this controller has no extra CA certificates to pass on")
    with open(ca_path) as handle:
        body = _pem_body(handle.read())
    bundle = "".join(host.file(_family(host)["bundle"]).content_string.split())
    assert body in bundle, f"{ca_path} is not in the host's CA bundle"


def test_pip_uses_system_bundle(host):
    assert host.file("/etc/pip.conf").contains(f"^cert = {_family(host)['bundle']}$")


def test_hosts_resolve_each_other(host):
    for name in ("moodle1", "hub1", "hub2"):
        assert host.run(f"getent hosts {name}").rc == 0, f"{name} is not reachable by name"
