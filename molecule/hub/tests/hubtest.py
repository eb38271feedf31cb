"""Helpers for test_hub.py (run by the hub and the default scenario): signed launches
run ON the hub with ltihub-launch.

Every launch goes to https://localhost (the hub's own proxy) and verifies the hub's
certificate against /etc/jupyterhub/tls/hub.crt. Credentials are read from the hub's
own jupyterhub_config.py (root-only), so the tests use what the role deployed.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
VENV = "/opt/jupyterhub"
CONFIG = "/etc/jupyterhub/jupyterhub_config.py"
HUB = "https://localhost"
CA = "/etc/jupyterhub/tls/hub.crt"

# A TCP connect (address, port, seconds to wait); prints one word: open, refused, timeout
# or the error's name.
CONNECT_SCRIPT = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except ConnectionRefusedError: print("refused")
except (TimeoutError, socket.timeout): print("timeout")
except OSError as e: print(type(e).__name__)
"""

_READ_CONFIG = """
import json
from traitlets.config.loader import PyFileConfigLoader
cfg = PyFileConfigLoader("jupyterhub_config.py", path="/etc/jupyterhub").load_config()
key, secret = next(iter(cfg.LTI11Authenticator.consumers.items()))
services = {s["name"]: s.get("api_token") for s in cfg.JupyterHub.services}
print(json.dumps({
    "key": key, "secret": secret,
    "service_token": services["moodle-lticontainer"],
    "over_limit": cfg.LTIContainerSpawner.over_limit,
    "max_mem": cfg.LTIContainerSpawner.max_mem,
    "max_cpu": cfg.LTIContainerSpawner.max_cpu,
    "allowed": list(cfg.LTIContainerSpawner.allowed_image_patterns),
    "image": cfg.DockerSpawner.image,
}))
"""

# Logs in with a signed launch (like ltihub-launch), waits for the server, then talks to
# JupyterLab through the proxy with the browser's cookies (OAuth dance included).
_LAB_STATUS = f"""
import json, os, sys, requests
from ltihub.launch import build_launch_params, run_launch, sign_launch
user = sys.argv[1]
s = requests.Session(); s.verify = "{CA}"
params = build_launch_params(username=user, user_id=sys.argv[2], teacher=False, course_id="2",
    course_title="T", resource_link_id="1", moodle_url="https://moodle.example.test",
    custom={{"lms_sessioninfo": "3,7"}})
form = sign_launch("{HUB}/hub/lti/launch", os.environ["K"], os.environ["S"], params)
report = run_launch(s, url="{HUB}/hub/lti/launch", hub="{HUB}", form=form, timeout=180,
                    poll_interval=1)
out = {{"launch": report.result}}
lab = s.get("{HUB}/user/" + user + "/lab", timeout=60)
out["lab_status"] = lab.status_code
out["csp"] = lab.headers.get("Content-Security-Policy", "")
api = s.get("{HUB}/user/" + user + "/api/status", timeout=60)
out["api_status"] = api.status_code
out["api"] = api.json() if api.status_code == 200 else api.text[:300]
print(json.dumps(out))
"""


class Hub:
    def __init__(self, host: Any) -> None:
        self.host = host
        out = host.check_output(f"{VENV}/bin/python - <<'EOF'\n{_READ_CONFIG}\nEOF")
        self.cfg: dict[str, Any] = json.loads(out)

    # -- launches ------------------------------------------------------------------------
    def launch(
        self,
        user: str,
        *args: str,
        key: str | None = None,
        secret: str | None = None,
        timeout: int = 180,
    ) -> dict[str, Any]:
        """Run ltihub-launch on the hub; return its JSON report plus the exit code."""
        cmd = [
            f"{VENV}/bin/ltihub-launch",
            "--url", f"{HUB}/hub/lti/launch",
            "--ca-file", CA,
            "--key", key or self.cfg["key"],
            "--user", user,
            "--timeout", str(timeout),
            *args,
        ]
        env = f"LTIHUB_SECRET={shlex.quote(secret or self.cfg['secret'])}"
        result = self.host.run(f"{env} {shlex.join(cmd)}")
        assert result.stdout.strip(), result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        report["rc"] = result.rc
        return report

    def lab_status(self, user: str, user_id: str) -> dict[str, Any]:
        env = f"K={shlex.quote(self.cfg['key'])} S={shlex.quote(self.cfg['secret'])}"
        out = self.host.check_output(
            f"{env} {VENV}/bin/python - {shlex.quote(user)} {user_id} <<'EOF'\n{_LAB_STATUS}\nEOF"
        )
        return json.loads(out)  # type: ignore[no-any-return]

    def api(self, path: str, method: str = "GET") -> tuple[int, Any]:
        """Call the hub REST API with the Moodle module's service token."""
        cmd = (
            f"curl -s -o /tmp/api.json -w '%{{http_code}}' --cacert {CA} -X {method} "
            f"-H 'Authorization: token {self.cfg['service_token']}' {HUB}/hub/api{path}"
        )
        status = int(self.host.check_output(cmd))
        body = self.host.file("/tmp/api.json").content_string
        return status, (json.loads(body) if body.strip().startswith(("{", "[")) else body)

    # -- containers -------------------------------------------------------------------------
    def containers(self) -> dict[str, str]:
        """Name -> id of every running container."""
        out = self.host.check_output("docker ps --format '{{.Names}} {{.ID}}'")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def container_of(self, user: str) -> str:
        names = [n for n in self.containers() if n.endswith("-" + user)]
        assert len(names) == 1, f"expected one container for {user}, got {names}"
        return names[0]

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self.host.check_output(f"docker inspect {shlex.quote(name)}"))[0]  # type: ignore[no-any-return]

    def exec(self, name: str, cmd: str) -> str:
        return self.host.check_output(f"docker exec {shlex.quote(name)} sh -c {shlex.quote(cmd)}")

    def wait_api(self, seconds: int = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.host.run(f"curl -sf --cacert {CA} {HUB}/hub/api/ >/dev/null").rc == 0:
                return
            time.sleep(1)
        raise AssertionError("the hub did not answer again")


def env_of(info: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in info["Config"]["Env"])


def byte_size(value: int | float | str) -> int:
    """A memory setting as the spawner's config holds it (bytes, or '512M', '1G' with
    JupyterHub's 1024-based suffixes) in bytes, as Docker reports HostConfig.Memory."""
    if isinstance(value, int | float):
        return int(value)
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    text = value.strip().upper()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


def run_play(
    tmp_path: Path, text: str, *args: str, molecule_config: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run a play of a test (``text``, YAML) against the scenario's inventory with our roles.

    ``molecule_config``: use molecule's own ansible.cfg (its connection and fact cache) when
    the scenario has one; otherwise, and always without it, the repository's. Colours off,
    so tests can read the output.
    """
    playbook = tmp_path / "play.yml"
    playbook.write_text(text)
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(REPO / "roles"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    ephemeral = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
    if molecule_config and (ephemeral / "ansible.cfg").is_file():
        env["ANSIBLE_CONFIG"] = str(ephemeral / "ansible.cfg")
    env.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))
    return subprocess.run(  # noqa: S603 - our own roles, argument list
        [str(ANSIBLE_PLAYBOOK), "-i", os.environ["MOLECULE_INVENTORY_FILE"], *args, str(playbook)],
        capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=timeout,
    )
