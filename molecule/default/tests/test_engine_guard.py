"""Through the real tunnel, as the web user: Moodle may do on a hub only what
mod_lticontainer does (issue 13), and everything else is refused with nothing changed.

Run on the Moodle host; the hub's state is read on the hub itself, as root, through its
own engine socket (not through the guard).
"""

from __future__ import annotations

import shlex

import pytest

testinfra_hosts = ["ansible://moodle"]

WEB_USER = "www-data"
REFUSED = "refused by the platform's engine guard"
NOTEBOOK = "jupyterhub-9-9-moodle1-guardtst-student1"  # as the spawner names them
OTHER = "guardtest-not-a-notebook"
KEEP_VOLUME = "guardtest_keep"


def _hub(host) -> str:
    return sorted(host.ansible.get_variables()["groups"]["jupyterhub"])[0]


def _hub_host(host, hub: str):
    return host.get_host(f"ansible://{hub}", ansible_inventory=host.backend.ansible_inventory)


def _tunnel(host, hub: str, args: str):
    docker = f"docker -H unix:///tmp/lticontainer_{hub}.sock"
    return host.run(f"runuser -u {WEB_USER} -- {docker} {args}")


def _state(hub_host) -> dict[str, str]:
    """What a refused call could have changed on the hub."""
    commands = {
        "containers": "docker ps -a --no-trunc --format '{{.ID}} {{.Names}} {{.State}}'",
        "images": "docker images -a --no-trunc -q",
        "volumes": "docker volume ls -q",
        "networks": "docker network ls -q --no-trunc",
        "plugins": "docker plugin ls -q --no-trunc",
        "swarm": "docker info --format '{{.Swarm.LocalNodeState}}'",
    }
    return {
        key: "\n".join(sorted(hub_host.check_output(command).splitlines()))
        for key, command in commands.items()
    }


@pytest.fixture(scope="module")
def hub_setup(host):
    """A notebook-named and another container, and a non-lms volume, made on the hub."""
    hub = _hub(host)
    hub_host = _hub_host(host, hub)
    image = hub_host.check_output(
        "docker images --format '{{.Repository}}:{{.Tag}}' | grep -v '<none>' | head -n1"
    )
    assert image, "no image on the hub"
    for name in (NOTEBOOK, OTHER):
        hub_host.run(f"docker rm -f {name}")
        hub_host.check_output(
            f"docker run -d --name {name} --entrypoint sleep {shlex.quote(image)} 3600"
        )
    hub_host.check_output(f"docker volume create {KEEP_VOLUME}")
    yield hub, hub_host, image
    hub_host.run(f"docker rm -f {NOTEBOOK} {OTHER}")
    hub_host.run(f"docker volume rm {KEEP_VOLUME}")


# ---- what mod_lticontainer does works --------------------------------------------------


def test_images_volumes_and_containers_are_listed(host, hub_setup):
    hub, _hub_host_, _image = hub_setup
    images = _tunnel(host, hub, "images")
    assert images.rc == 0, images.stderr
    assert "REPOSITORY" in images.stdout
    volumes = _tunnel(host, hub, "volume ls")
    assert volumes.rc == 0, volumes.stderr
    assert KEEP_VOLUME in volumes.stdout
    containers = _tunnel(host, hub, "ps -a")
    assert containers.rc == 0, containers.stderr
    assert NOTEBOOK in containers.stdout and OTHER in containers.stdout


def test_lms_volume_is_created_and_removed(host, hub_setup):
    hub, hub_host, _image = hub_setup
    name = "lms_vol_x_1_moodle1"
    created = _tunnel(host, hub, f"volume create {name}")
    assert created.rc == 0, created.stderr
    assert hub_host.run(f"docker volume inspect {name}").rc == 0
    removed = _tunnel(host, hub, f"volume rm {name}")
    assert removed.rc == 0, removed.stderr
    assert hub_host.run(f"docker volume inspect {name}").rc != 0


def test_notebook_container_is_stopped_by_its_id(host, hub_setup):
    hub, hub_host, image = hub_setup
    # The module stops the ids it read from `ps -a`.
    cid = _tunnel(host, hub, f"ps -a -q --filter name=^{NOTEBOOK}$").stdout.strip()
    assert cid, "the notebook container is not listed"
    stopped = _tunnel(host, hub, f"stop {cid}")
    assert stopped.rc == 0, stopped.stderr
    state = hub_host.check_output(f"docker inspect -f '{{{{.State.Running}}}}' {NOTEBOOK}")
    assert state == "false"
    hub_host.check_output(f"docker start {NOTEBOOK}")


# ---- everything else is refused, the CLI says so, and nothing changes ------------------

REFUSED_COMMANDS = [
    "run --rm -u 0 -v /etc:/host-etc {image} id",
    "create {image}",
    f"exec {NOTEBOOK} id",
    "build -t guardtest-build -",
    "pull busybox:latest",
    f"cp {NOTEBOOK}:/etc/hostname /tmp/guardtest-copy",
    f"commit {NOTEBOOK} guardtest-commit",
    "volume create foo",
    "volume create",  # no name: the engine would pick one
    "volume create --opt type=none --opt o=bind --opt device=/etc lms_vol_etc_1_moodle1",
    f"volume rm {KEEP_VOLUME}",
    f"stop {OTHER}",
    f"kill {NOTEBOOK}",
    f"rm -f {OTHER}",
    "network ls",
    "network create guardtest-net",
    "system prune -a -f --volumes",
    "swarm init",
    "plugin ls",
    "info",
]


@pytest.mark.parametrize("command", REFUSED_COMMANDS)
def test_other_commands_are_refused_and_change_nothing(host, hub_setup, command):
    hub, hub_host, image = hub_setup
    before = _state(hub_host)
    args = command.format(image=shlex.quote(image))
    if args.startswith("build"):
        args = f"{args} <<< 'FROM scratch'"
        result = host.run(
            f"runuser -u {WEB_USER} -- bash -c "
            # (a scratch client config: newer CLIs write ~/.docker, which the web user lacks)
            + shlex.quote(
                "export DOCKER_CONFIG=$(mktemp -d); "
                f"docker -H unix:///tmp/lticontainer_{hub}.sock {args}"
            )
        )
    else:
        result = _tunnel(host, hub, args)
    assert result.rc != 0, result.stdout
    assert REFUSED in result.stderr + result.stdout, result.stderr
    assert _state(hub_host) == before, f"`docker {args}` changed the hub"
    assert not host.file("/tmp/guardtest-copy").exists


def test_refusals_are_in_the_hubs_journal(host, hub_setup):
    hub, hub_host, _image = hub_setup
    _tunnel(host, hub, "network ls")
    journal = hub_host.check_output(
        "journalctl -u ltiforward-engine.service --since '-2min' --no-pager -o cat"
    )
    assert "refused GET '/v" in journal and "/networks'" in journal


def test_guard_runs_unprivileged(host, hub_setup):
    hub, hub_host, _image = hub_setup
    _tunnel(host, hub, "version")  # socket activation: make sure it runs
    pid = hub_host.check_output("systemctl show -p MainPID --value ltiforward-engine.service")
    assert pid != "0"
    status = hub_host.file(f"/proc/{pid}/status").content_string
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] != ["0", "0", "0", "0"], "the guard runs as root"
    cap_eff = next(line for line in status.splitlines() if line.startswith("CapEff:"))
    assert int(cap_eff.split()[1], 16) == 0, cap_eff
    assert hub_host.user("ltiforward-guard").exists
    # The forwarding account itself has no access to the engine socket.
    assert "docker" not in hub_host.user("ltiforward").groups
