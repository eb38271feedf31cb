"""The engine guard passes Moodle's calls to a (fake) engine and refuses everything else."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientResponse, ClientSession, UnixConnector, web
from yarl import URL

from ltihub.engine_guard import REFUSED, Guard

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "jupyterhub-3-5-moodle1-abcdefgh-alice"
NOTEBOOK_ID = "a" * 64
OTHER = "postgres"
OTHER_ID = "b" * 64
VOLUME = "lms_vol_x_1_moodle1"


# ---- a fake engine on a Unix socket ------------------------------------------------------


@dataclass
class FakeEngine:
    """Answers like Docker/Podman and records every call it gets."""

    calls: list[tuple[str, str, bytes]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.calls.append((request.method, request.path_qs, body))
        tail = request.path.split("/libpod", 1)[-1]
        if tail.startswith("/v1."):
            tail = "/" + tail.split("/", 2)[2]
        headers = {"Api-Version": "1.41", "Ostype": "linux"}
        if tail == "/_ping":
            return web.Response(text="OK", headers=headers)
        if tail == "/images/json":
            # Streamed in pieces, without a length, as a big listing would be.
            resp = web.StreamResponse(headers=headers)
            resp.content_type = "application/json"
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for piece in (b'[{"Id":"sha256:1",', b'"RepoTags":["jupyterhub/nb:1"]}', b"]"):
                await resp.write(piece)
            await resp.write_eof()
            return resp
        for name, cid in ((NOTEBOOK, NOTEBOOK_ID), (OTHER, OTHER_ID)):
            asked = tail.removeprefix("/containers/").removesuffix("/json")
            if tail.endswith("/json") and (asked == name or cid.startswith(asked)):
                return web.json_response({"Id": cid, "Name": "/" + name})
        inspect = tail.startswith("/containers/") and tail.endswith("/json")
        if inspect and tail != "/containers/json":
            return web.json_response({"message": "No such container"}, status=404)
        if request.method == "DELETE" or tail.endswith("/stop"):
            return web.Response(status=204)
        if tail == "/volumes/create":
            return web.json_response(json.loads(body), status=201)
        return web.json_response({"ok": tail}, headers=headers)

    def saw(self, method: str, path_qs: str) -> bool:
        return any(m == method and p == path_qs for m, p, _ in self.calls)


@dataclass
class Rig:
    client: ClientSession
    engine: FakeEngine

    async def call(
        self, method: str, path: str, body: bytes | None = None, **kwargs: Any
    ) -> tuple[ClientResponse, bytes]:
        url = URL("http://docker" + path, encoded=True)  # sent as written, not normalised
        async with self.client.request(method, url, data=body, **kwargs) as resp:
            return resp, await resp.read()


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="eg", dir="/tmp")  # short: Unix socket paths <= 107
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def rig(sockdir: str, max_body: int = 64 * 1024) -> AsyncIterator[Rig]:
    engine = FakeEngine()
    engine_runner = web.AppRunner(engine.app())
    await engine_runner.setup()
    await web.UnixSite(engine_runner, f"{sockdir}/engine.sock").start()
    guard = Guard(f"{sockdir}/engine.sock", "jupyterhub", max_body)
    guard_runner = web.AppRunner(guard.app())
    await guard_runner.setup()
    await web.UnixSite(guard_runner, f"{sockdir}/guard.sock").start()
    client = ClientSession(connector=UnixConnector(path=f"{sockdir}/guard.sock"))
    try:
        yield Rig(client, engine)
    finally:
        await client.close()
        await guard_runner.cleanup()
        await engine_runner.cleanup()


def run(sockdir: str, method: str, path: str, body: bytes | None = None, **kwargs: Any) -> Any:
    """One call through the guard: (status, headers, body bytes, calls the engine saw)."""

    async def go() -> Any:
        async with rig(sockdir) as r:
            resp, data = await r.call(method, path, body, **kwargs)
            return resp.status, resp.headers, data, r.engine.calls

    return asyncio.run(go())


def docker_volume_body(name: str | None, /, **extra: Any) -> bytes:
    """What the docker CLI sends for `docker volume create NAME`."""
    data: dict[str, Any] = {"Driver": "local", "DriverOpts": {}, "Labels": {}}
    if name is not None:
        data["Name"] = name
    data.update(extra)
    return json.dumps(data).encode()


def podman_volume_body(name: str) -> bytes:
    """What podman-remote sends for `podman volume create NAME` (libpod API)."""
    return json.dumps(
        {"Name": name, "Driver": "", "Label": {}, "Options": {}, "IgnoreIfExists": False,
         "UID": None, "GID": None}
    ).encode()


# ---- what mod_lticontainer does gets through ---------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("HEAD", "/_ping"),
        ("GET", "/_ping"),
        ("GET", "/v1.41/_ping"),
        ("GET", "/version"),
        ("GET", "/v1.41/version"),
        ("GET", "/v1.41/images/json"),
        ("GET", "/v1.45/images/json?filters=%7B%22dangling%22%3A%7B%22false%22%3Atrue%7D%7D"),
        ("GET", "/v1.41/volumes"),
        ("GET", "/v1.41/volumes?filters=%7B%7D"),
        ("GET", "/v1.41/containers/json?all=1"),
        ("GET", "/v5.0.0/libpod/_ping"),
        ("GET", "/v5.0.0/libpod/version"),
        ("GET", "/v5.0.0/libpod/images/json"),
        ("GET", "/v5.0.0/libpod/volumes/json"),
        ("GET", "/v5.0.0/libpod/containers/json?all=true"),
    ],
)
def test_read_calls_pass_unchanged(sockdir: str, method: str, path: str) -> None:
    status, _headers, body, calls = run(sockdir, method, path)
    assert status == 200, body
    assert calls == [(method, path, b"")], "the engine got another call than the client made"


def test_ping_headers_reach_the_client(sockdir: str) -> None:
    # The CLI negotiates its API version from these.
    status, headers, body, _calls = run(sockdir, "GET", "/_ping")
    assert (status, body) == (200, b"OK")
    assert headers["Api-Version"] == "1.41"
    assert headers["Ostype"] == "linux"
    status, headers, body, _calls = run(sockdir, "HEAD", "/_ping")
    assert status == 200 and body == b""
    assert headers["Api-Version"] == "1.41"


def test_streamed_responses_pass_through_chunked(sockdir: str) -> None:
    status, headers, body, _calls = run(sockdir, "GET", "/v1.41/images/json")
    assert status == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in headers
    assert json.loads(body) == [{"Id": "sha256:1", "RepoTags": ["jupyterhub/nb:1"]}]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1.41/volumes/create", docker_volume_body(VOLUME)),
        ("/v1.41/volumes/create", docker_volume_body("lms_sub_report_12_moodle.example.org")),
        ("/v1.41/volumes/create", docker_volume_body("lms_prs_x_1_moodle1", Labels={"a": "b"})),
        ("/v1.41/volumes/create", docker_volume_body("lms_vol_")),  # all-Japanese name
        ("/v5.0.0/libpod/volumes/create", podman_volume_body(VOLUME)),
    ],
)
def test_lms_volume_create_passes(sockdir: str, path: str, body: bytes) -> None:
    status, _headers, answer, calls = run(
        sockdir, "POST", path, body, headers={"Content-Type": "application/json"}
    )
    assert status == 201, answer
    [(method, seen_path, seen_body)] = calls
    assert (method, seen_path) == ("POST", path)
    assert json.loads(seen_body) == json.loads(body)


@pytest.mark.parametrize(
    "path",
    [
        f"/v1.41/volumes/{VOLUME}",
        f"/v1.41/volumes/{VOLUME}?force=1",
        f"/v5.0.0/libpod/volumes/{VOLUME}",
    ],
)
def test_lms_volume_remove_passes(sockdir: str, path: str) -> None:
    status, _headers, _body, calls = run(sockdir, "DELETE", path)
    assert status == 204
    assert calls == [("DELETE", path, b"")]


@pytest.mark.parametrize("which", [NOTEBOOK, NOTEBOOK_ID, NOTEBOOK_ID[:12]])
def test_stop_of_a_notebook_container_passes_by_full_id(sockdir: str, which: str) -> None:
    status, _headers, _body, calls = run(sockdir, "POST", f"/v1.41/containers/{which}/stop?t=5")
    assert status == 204
    # The container is stopped by the id the engine gave, not by the name asked for.
    assert ("POST", f"/v1.41/containers/{NOTEBOOK_ID}/stop?t=5", b"") in calls
    assert [c for c in calls if c[1].endswith("/stop?t=5")] == [
        ("POST", f"/v1.41/containers/{NOTEBOOK_ID}/stop?t=5", b"")
    ]


# ---- everything else is refused, and the engine never sees it ----------------------------

REFUSALS = [
    # docker run / create (the attack of issue 13: a root container with /etc mounted)
    ("POST", "/v1.41/containers/create",
     json.dumps({"Image": "x", "User": "0", "HostConfig": {"Binds": ["/etc:/host-etc"]}})),
    ("POST", "/v1.41/containers/create?name=jupyterhub-evil", json.dumps({"Image": "x"})),
    ("POST", f"/v1.41/containers/{NOTEBOOK}/start", None),
    ("POST", f"/v1.41/containers/{NOTEBOOK}/attach?stream=1&stdout=1", None),
    ("POST", f"/v1.41/containers/{NOTEBOOK}/wait", None),
    # exec
    ("POST", f"/v1.41/containers/{NOTEBOOK}/exec", json.dumps({"Cmd": ["id"]})),
    ("POST", "/v1.41/exec/abc/start", json.dumps({"Detach": False})),
    # build, pull, push, load, tag, delete images
    ("POST", "/v1.41/build?t=x", "FROM scratch"),
    ("POST", "/session", None),
    ("POST", "/v1.41/images/create?fromImage=busybox&tag=latest", None),
    ("POST", "/v1.41/images/x/push", None),
    ("POST", "/v1.41/images/load", None),
    ("POST", "/v1.41/images/x/tag?repo=y", None),
    ("DELETE", "/v1.41/images/x", None),
    # cp (archive), commit, export, logs, inspect, top, changes, kill, rm, update, rename
    ("GET", f"/v1.41/containers/{NOTEBOOK}/archive?path=/etc/shadow", None),
    ("HEAD", f"/v1.41/containers/{NOTEBOOK}/archive?path=/etc", None),
    ("PUT", f"/v1.41/containers/{NOTEBOOK}/archive?path=/", "tar"),
    ("POST", f"/v1.41/commit?container={NOTEBOOK}", None),
    ("GET", f"/v1.41/containers/{NOTEBOOK}/export", None),
    ("GET", f"/v1.41/containers/{NOTEBOOK}/logs?stdout=1", None),
    ("GET", f"/v1.41/containers/{NOTEBOOK}/json", None),
    ("POST", f"/v1.41/containers/{NOTEBOOK}/kill", None),
    ("DELETE", f"/v1.41/containers/{NOTEBOOK}?force=1", None),
    ("POST", f"/v1.41/containers/{NOTEBOOK}/update", json.dumps({"Memory": 0})),
    ("POST", f"/v1.41/containers/{NOTEBOOK}/rename?name=x", None),
    # volume inspect/prune, networks, system prune, swarm, plugins, secrets, info, events
    ("GET", f"/v1.41/volumes/{VOLUME}", None),
    ("POST", "/v1.41/volumes/prune", None),
    ("GET", "/v1.41/networks", None),
    ("POST", "/v1.41/networks/create", json.dumps({"Name": "x"})),
    ("POST", "/v1.41/containers/prune", None),
    ("POST", "/v1.41/images/prune", None),
    ("POST", "/v1.41/build/prune", None),
    ("POST", "/v1.41/swarm/init", json.dumps({"ListenAddr": "eth0"})),
    ("GET", "/v1.41/swarm", None),
    ("GET", "/v1.41/plugins", None),
    ("POST", "/v1.41/plugins/pull?remote=x", None),
    ("GET", "/v1.41/secrets", None),
    ("GET", "/v1.41/info", None),
    ("GET", "/v1.41/events", None),
    ("GET", "/v1.41/system/df", None),
    # Podman's own API: play kube, system reset, generate systemd
    ("POST", "/v5.0.0/libpod/play/kube", "apiVersion: v1"),
    ("POST", "/v5.0.0/libpod/system/reset", None),
    ("POST", "/v5.0.0/libpod/containers/create", json.dumps({"image": "x"})),
    # allowed paths with the wrong method, and paths that only look allowed
    ("POST", "/v1.41/images/json", None),
    ("DELETE", "/v1.41/volumes/create", None),
    ("GET", "/v1.41/volumes/create", None),
    ("PUT", "/_ping", None),
    ("GET", "/v1.41/images/json/x", None),
    ("GET", "//v1.41/images/json", None),
    ("GET", "/v1.41/../images/json", None),
    ("GET", "/vX/images/json", None),
    # read calls with a body
    ("GET", "/v1.41/images/json", "{}"),
]


@pytest.mark.parametrize(("method", "path", "body"), REFUSALS)
def test_other_calls_are_refused(
    sockdir: str, caplog: pytest.LogCaptureFixture, method: str, path: str, body: str | None
) -> None:
    caplog.set_level(logging.INFO, logger="ltihub.engine_guard")
    status, headers, answer, calls = run(
        sockdir, method, path, body.encode() if body is not None else None
    )
    assert status == 403
    assert calls == [], "a refused call reached the engine"
    if method != "HEAD":
        assert headers["Content-Type"] == "application/json"  # what the docker CLI parses
        message = json.loads(answer)["message"]
        assert message.startswith(f"{REFUSED}: "), message
    assert f"refused {method} " in caplog.text


def test_upgrades_are_refused_even_on_allowed_paths(sockdir: str) -> None:
    for headers in ({"Connection": "Upgrade", "Upgrade": "tcp"}, {"Upgrade": "h2c"}):
        status, _headers, answer, calls = run(sockdir, "GET", "/_ping", headers=headers)
        assert status == 403
        assert "upgrade" in json.loads(answer)["message"]
        assert calls == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (docker_volume_body("foo"), "not 'foo'"),
        (docker_volume_body(None), "(no name)"),
        (docker_volume_body(""), "(no name)"),
        (docker_volume_body("lms_vol_x_1_moodle1/../../etc"), "lms_vol_"),
        (docker_volume_body("lms_xyz_x_1_moodle1"), "lms_vol_"),
        (docker_volume_body("xlms_vol_x"), "lms_vol_"),
        (docker_volume_body(VOLUME, DriverOpts={"type": "none", "o": "bind", "device": "/etc"}),
         "driver options"),
        (podman_volume_body(VOLUME).replace(b'"Options": {}', b'"Options": {"device": "/"}'),
         "driver options"),
        (docker_volume_body(VOLUME, Driver="rexray"), "local driver"),
        (docker_volume_body(VOLUME, Labels={"a": 1}), "Labels"),
        (docker_volume_body(VOLUME, UID=0), "UID"),
        (docker_volume_body(VOLUME, ClusterVolumeSpec={}), "ClusterVolumeSpec"),
        (docker_volume_body(VOLUME, name="foo"), "'name'"),  # Go: keys case-blind
        (b'{"Name": "lms_vol_x_1_m", "Name": "foo"}', "repeats a key"),
        (b'{"Name": "lms_vol_x_1_m"', "not valid JSON"),
        (b"", "not valid JSON"),
        (b'\xff\xfe{"Name": 1}', "not valid JSON"),
        (b'["lms_vol_x_1_moodle1"]', "not a JSON object"),
        (b'"lms_vol_x_1_moodle1"', "not a JSON object"),
        (b'{"Name": 7}', "Name must be a string"),
    ],
)
def test_volume_create_bodies_are_checked(sockdir: str, body: bytes, why: str) -> None:
    status, _headers, answer, calls = run(sockdir, "POST", "/v1.41/volumes/create", body)
    assert status == 403
    message = json.loads(answer)["message"]
    assert message.startswith(REFUSED) and why in message, message
    assert calls == []


@pytest.mark.parametrize("name", ["foo", "lms_volx", "my_lms_vol_x", "mjp-pgdata"])
def test_volume_remove_of_other_volumes_is_refused(sockdir: str, name: str) -> None:
    status, _headers, answer, calls = run(sockdir, "DELETE", f"/v1.41/volumes/{name}")
    assert status == 403
    assert repr(name) in json.loads(answer)["message"]
    assert calls == []


@pytest.mark.parametrize("which", [OTHER, OTHER_ID, "missing"])
def test_stop_of_other_containers_is_refused(sockdir: str, which: str) -> None:
    status, _headers, answer, calls = run(sockdir, "POST", f"/v1.41/containers/{which}/stop")
    assert status == 403
    assert REFUSED in json.loads(answer)["message"]
    # Only the guard's own inspection reached the engine; no stop did.
    assert [c for c in calls if c[0] != "GET"] == []


def test_lookalike_prefix_is_not_a_notebook(sockdir: str) -> None:
    guard = Guard("/nonexistent", "jupyterhub")
    assert guard.notebook_name.fullmatch(NOTEBOOK)
    for name in ("jupyterhubx-1", "jupyterhub", "jupyterhub-", "xjupyterhub-1", "jupyterhub-a/b"):
        assert not guard.notebook_name.fullmatch(name), name


def test_oversize_bodies_are_refused_unread(sockdir: str) -> None:
    async def go() -> None:
        async with rig(sockdir, max_body=1024) as r:
            big = docker_volume_body(VOLUME, Labels={"pad": "x" * 2000})
            resp, answer = await r.call("POST", "/v1.41/volumes/create", big)
            assert resp.status == 403
            assert "larger than 1024 bytes" in json.loads(answer)["message"]

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
                for _ in range(40):
                    yield b" " * 100

            resp, answer = await r.call("POST", "/v1.41/volumes/create", chunks())  # type: ignore[arg-type]
            assert resp.status == 403
            assert "larger than 1024 bytes" in json.loads(answer)["message"]
            assert r.engine.calls == []

    asyncio.run(go())


def test_refusals_are_logged_without_bodies_or_queries(
    sockdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ltihub.engine_guard")
    body = json.dumps({"Image": "x", "Env": ["DB_PASSWORD=hunter2-secret"]}).encode()
    status, *_ = run(sockdir, "POST", "/v1.41/containers/create?name=token-s3cr3t", body)
    assert status == 403
    assert "refused POST '/v1.41/containers/create'" in caplog.text
    assert "hunter2" not in caplog.text
    assert "s3cr3t" not in caplog.text


def test_changes_are_logged(sockdir: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ltihub.engine_guard")
    run(sockdir, "POST", "/v1.41/volumes/create", docker_volume_body(VOLUME))
    run(sockdir, "POST", f"/v1.41/containers/{NOTEBOOK}/stop")
    assert f"allowed create volume {VOLUME}" in caplog.text
    assert f"allowed stop container {NOTEBOOK}" in caplog.text


# ---- the program itself, started the way systemd starts it -------------------------------


def test_runs_under_socket_activation(sockdir: str) -> None:
    """systemd-socket-activate hands the guard its socket as fd 3, as the .socket unit does."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("systemd-socket-activate is not installed")

    async def engine() -> web.AppRunner:
        runner = web.AppRunner(FakeEngine().app())
        await runner.setup()
        await web.UnixSite(runner, f"{sockdir}/engine.sock").start()
        return runner

    def client(sock_path: str, request: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(10)
            conn.connect(sock_path)
            conn.sendall(request)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            return data

    async def go() -> tuple[bytes, bytes]:
        runner = await engine()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = await asyncio.create_subprocess_exec(
            activate, "-l", f"{sockdir}/guard.sock", sys.executable, "-m",
            "ltihub.engine_guard", "--engine", f"{sockdir}/engine.sock",
            env=env, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(f"{sockdir}/guard.sock"):
                assert time.monotonic() < deadline, "no socket"
                await asyncio.sleep(0.1)
            ping = await asyncio.to_thread(
                client, f"{sockdir}/guard.sock",
                b"GET /v1.41/_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n",
            )
            run_ = await asyncio.to_thread(
                client, f"{sockdir}/guard.sock",
                b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\n"
                b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
            )
        finally:
            proc.terminate()
            _out, err = await proc.communicate()
            await runner.cleanup()
        assert proc.returncode == 0, err.decode()
        assert b"refused POST '/v1.41/containers/create'" in err
        return ping, run_

    ping, refused = asyncio.run(go())
    assert ping.startswith(b"HTTP/1.1 200") and ping.endswith(b"OK")
    assert refused.startswith(b"HTTP/1.1 403")
    assert REFUSED.encode() in refused


def test_refuses_to_start_without_a_socket() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ltihub.engine_guard", "--engine", "/nonexistent"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "no socket from systemd and no --listen path" in result.stderr


# ---- the hubs run the version of aiohttp this package is tested with ---------------------


def test_role_installs_the_pinned_aiohttp() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in project["project"]["dependencies"] if d.startswith("aiohttp")]
    defaults = yaml.safe_load(
        (ROOT / "roles" / "lticontainer_ssh_target" / "defaults" / "main.yml").read_text()
    )
    assert pins == [f"aiohttp=={defaults['lticontainer_ssh_target_aiohttp_version']}"]


def test_an_engine_that_is_down_gives_a_clear_error(sockdir: str) -> None:
    async def go() -> None:
        async with rig(sockdir) as r:
            os.unlink(f"{sockdir}/engine.sock")  # the engine went away
            resp, answer = await r.call("GET", "/v1.41/images/json")
            assert resp.status == 502
            assert "did not answer" in json.loads(answer)["message"]
            resp, answer = await r.call("POST", f"/v1.41/containers/{NOTEBOOK}/stop")
            assert resp.status == 502

    asyncio.run(go())
