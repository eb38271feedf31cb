"""OAuth 1.0a signing against known vectors, and the ltihub-launch CLI against a fake hub."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import pytest

from ltihub import launch as cli
from ltihub.htmltext import error_message_from_page
from ltihub.launch import build_launch_params, moodle_custom_name, sign_launch
from ltihub.oauth1 import (
    base_string_uri,
    hmac_sha1,
    normalize_parameters,
    percent_encode,
    signature_base_string,
)

KEY = "consumer-key"
SHARED = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

# -- RFC 5849 / OAuth Core 1.0 vectors ---------------------------------------------------


def test_oauth_core_appendix_vector() -> None:
    """OAuth Core 1.0 Appendix A.5 (photos.example.net), with a token secret."""
    params = [
        ("oauth_consumer_key", "dpf43f3p2l4k3l03"),
        ("oauth_token", "nnch734d00sl2jdk"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "1191242096"),
        ("oauth_nonce", "kllo9940pd9333jh"),
        ("oauth_version", "1.0"),
    ]
    url = "http://photos.example.net/photos?file=vacation.jpg&size=original"
    base = signature_base_string("GET", url, params)
    assert base == (
        "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26"
        "oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26"
        "oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1191242096%26"
        "oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26size%3Doriginal"
    )
    assert hmac_sha1(base, "kd94hf93k423kf44", "pfkkdhi9sl3r4s00") == (
        "tR3+Ty81lMeYAr/Fid0kMTYa/WM="
    )


def test_rfc5849_parameter_normalisation() -> None:
    """RFC 5849 section 3.4.1.3.2 example."""
    params = [
        ("b5", "=%3D"),
        ("a3", "a"),
        ("c@", ""),
        ("a2", "r b"),
        ("oauth_consumer_key", "9djdj82h48djs9d2"),
        ("oauth_token", "kkk9d7dh3k39sjv7"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "137131201"),
        ("oauth_nonce", "7d8f3e4a"),
        ("c2", ""),
        ("a3", "2 q"),
    ]
    assert normalize_parameters(params) == (
        "a2=r%20b&a3=2%20q&a3=a&b5=%3D%253D&c%40=&c2=&oauth_consumer_key=9djdj82h48djs9d2"
        "&oauth_nonce=7d8f3e4a&oauth_signature_method=HMAC-SHA1&oauth_timestamp=137131201"
        "&oauth_token=kkk9d7dh3k39sjv7"
    )


def test_percent_encoding_and_base_uri() -> None:
    assert percent_encode("a b+c/~é") == "a%20b%2Bc%2F~%C3%A9"
    assert base_string_uri("HTTPS://Hub.Example.Test:443/hub/lti/launch?x=1") == (
        "https://hub.example.test/hub/lti/launch"
    )
    assert base_string_uri("http://h.test:8000/a") == "http://h.test:8000/a"


def launch_form(**custom: str) -> dict[str, str]:
    params = build_launch_params(
        username="alice",
        user_id="42",
        teacher=False,
        course_id="12",
        course_title="Kurs ä & b",
        resource_link_id="5",
        moodle_url="https://moodle.example.test",
        custom=custom,
    )
    return params


def test_sign_launch_matches_oauthlib() -> None:
    sig = pytest.importorskip("oauthlib.oauth1.rfc5849.signature")
    url = "https://hub.example.test/hub/lti/launch"
    form = sign_launch(url, KEY, SHARED, launch_form(lms_image="a : b"), nonce="n1", timestamp=1)
    params = sig.collect_parameters(body=list(form.items()))
    base = sig.signature_base_string(
        "POST", sig.base_string_uri(url), sig.normalize_parameters(params)
    )
    client = pytest.importorskip("oauthlib.oauth1").Client(KEY, client_secret=SHARED)
    assert form["oauth_signature"] == sig.sign_hmac_sha1_with_client(base, client)
    assert form["oauth_nonce"] == "n1" and form["oauth_timestamp"] == "1"


def test_ltiauthenticator_accepts_and_rejects_replay() -> None:
    validator_mod = pytest.importorskip("ltiauthenticator.lti11.validator")
    web = pytest.importorskip("tornado.web")
    validator = validator_mod.LTI11LaunchValidator({KEY: SHARED})
    url = "https://hub.example.test/hub/lti/launch"
    form = sign_launch(url, KEY, SHARED, launch_form())
    assert validator.validate_launch_request(url, {}, dict(form))
    with pytest.raises(web.HTTPError) as replay:
        validator.validate_launch_request(url, {}, dict(form))
    assert replay.value.status_code == 401
    old = sign_launch(url, KEY, SHARED, launch_form(), timestamp=int(time.time()) - 3600)
    with pytest.raises(web.HTTPError):
        validator.validate_launch_request(url, {}, dict(old))
    bad = sign_launch(url, KEY, "wrong", launch_form())
    with pytest.raises(web.HTTPError):
        validator.validate_launch_request(url, {}, dict(bad))


def test_sign_launch_is_deterministic_with_forced_nonce() -> None:
    url = "https://hub.example.test/hub/lti/launch"
    one = sign_launch(url, KEY, SHARED, launch_form(), nonce="abc", timestamp="1700000000")
    two = sign_launch(url, KEY, SHARED, launch_form(), nonce="abc", timestamp="1700000000")
    assert one == two
    assert one["oauth_signature_method"] == "HMAC-SHA1"
    assert one["oauth_version"] == "1.0"
    assert one != sign_launch(url, KEY, SHARED, launch_form(), nonce="abd", timestamp=1700000000)


# -- launch fields -----------------------------------------------------------------------


def test_moodle_field_names() -> None:
    form = launch_form(lms_vol_data="Data:*")
    assert form["lti_message_type"] == "basic-lti-launch-request"
    assert form["lti_version"] == "LTI-1p0"
    assert form["roles"] == "Learner"
    assert form["ext_user_username"] == "alice"
    assert form["tool_consumer_info_product_family_code"] == "moodle"
    assert form["lis_outcome_service_url"] == "https://moodle.example.test/mod/lti/service.php"
    assert form["custom_lms_vol_data"] == "Data:*"
    for field in (
        "resource_link_id",
        "user_id",
        "context_id",
        "context_title",
        "lis_person_name_full",
        "launch_presentation_return_url",
    ):
        assert form[field]


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("lms_image", "custom_lms_image"),
        ("LMS-Vol Data", "custom_lms_vol_data"),
        ("custom_lms_users", "custom_lms_users"),
    ],
)
def test_custom_names(name: str, field: str) -> None:
    assert moodle_custom_name(name) == field


def test_custom_file_formats() -> None:
    assert cli.parse_custom_text('{"lms_image": "a:b", "lms_cpulimit": 1}') == {
        "lms_image": "a:b",
        "lms_cpulimit": "1",
    }
    text = "# comment\r\nlms_image=jupyterhub/x : 1\r\nlms_vol_data=Data:a,b\n\n"
    assert cli.parse_custom_text(text) == {
        "lms_image": "jupyterhub/x : 1",
        "lms_vol_data": "Data:a,b",
    }
    with pytest.raises(ValueError):
        cli.parse_custom_text("no equals sign")
    with pytest.raises(ValueError):
        cli.parse_custom_pairs(["=x"])


def test_hub_base() -> None:
    assert cli.hub_base_from_launch_url("https://h.test/hub/lti/launch") == "https://h.test"
    assert cli.hub_base_from_launch_url("https://h.test/jh/hub/lti/launch/") == (
        "https://h.test/jh"
    )


def test_error_page_message() -> None:
    page = (
        "<html><head><title>JupyterHub</title></head><body><div class='container'>"
        '<div class="error"><h1>403 : Forbidden</h1>\n<p>This activity asks for the image '
        "&#39;x&#39;, which this JupyterHub does not offer.</p></div></div></body></html>"
    )
    assert error_message_from_page(page) == (
        "This activity asks for the image 'x', which this JupyterHub does not offer."
    )
    assert error_message_from_page('{"status": 400, "message": "nope"}', "application/json") == (
        "nope"
    )
    assert error_message_from_page("<div class='error'><h1>500 : Oops</h1></div>") == ("500 : Oops")


# -- the CLI against a fake hub on the loopback interface ------------------------------


class FakeHub(BaseHTTPRequestHandler):
    mode: ClassVar[str] = "ok"
    polls: ClassVar[int] = 0
    spawned: ClassVar[bool] = False
    forms: ClassVar[list[dict[str, str]]] = []

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        return

    def _send(self, status: int, body: str, ctype: str = "text/html", **headers: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)

    def _logged_in(self) -> bool:
        return "hub=alice" in (self.headers.get("Cookie") or "")

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        FakeHub.forms.append(form)
        url = f"http://{self.headers['Host']}{self.path}"
        expected = sign_launch(url, KEY, SHARED, form, form["oauth_nonce"], form["oauth_timestamp"])
        if form.get("oauth_signature") != expected["oauth_signature"]:
            self._send(
                401,
                "<div class='error'><h1>401 : Unauthorized</h1>"
                "<p>Invalid oauth_signature</p></div>",
            )
            return
        self._send(302, "", Location="/hub/spawn", Set_Cookie="hub=alice; Path=/hub/")

    def _user_server(self) -> None:
        """JupyterLab behind the proxy: an OAuth round trip through the hub, then /lab."""
        if self.path == "/user/alice/":
            self._send(302, "", Location="/hub/api/oauth2/authorize?client_id=alice")
        elif self.path == "/user/alice/oauth_callback":
            self._send(302, "", Location="/user/alice/lab",
                       Set_Cookie="lab=alice; Path=/user/alice/")
        elif "lab=alice" not in (self.headers.get("Cookie") or ""):
            self._send(403, "<div class='error'><h1>403 : Forbidden</h1></div>")
        elif FakeHub.mode == "lab-down":
            self._send(503, "<html><head><title>503</title></head></html>")
        else:
            self._send(200, "<html><head>\n<title>\n  JupyterLab\n</title></head></html>")

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.startswith("/user/alice/"):
            self._user_server()
        elif not self._logged_in():
            self._send(403, '{"status": 403, "message": "not logged in"}', "application/json")
        elif self.path == "/hub/api/user":
            self._send(200, json.dumps({"name": "alice"}), "application/json")
        elif self.path == "/hub/spawn":
            if FakeHub.mode == "refuse":
                self._send(
                    403,
                    "<div class='error'><h1>403 : Forbidden</h1><p>This activity "
                    "asks for 8 CPUs, but this JupyterHub allows at most 2 CPUs. "
                    "Please tell your teacher.</p></div>",
                )
            else:
                FakeHub.spawned = True
                self._send(302, "", Location="/hub/spawn-pending/alice")
        elif self.path == "/hub/api/users/alice":
            FakeHub.polls += 1
            server: dict[str, Any] = {}
            if FakeHub.spawned and FakeHub.mode == "fail" and FakeHub.polls > 1:
                servers: dict[str, Any] = {}
            elif FakeHub.spawned:
                ready = FakeHub.mode in ("ok", "lab-down") and FakeHub.polls > 2
                server = {
                    "ready": ready,
                    "pending": None if ready else "spawn",
                    "url": "/user/alice/",
                }
                servers = {"": server}
            else:
                servers = {}
            self._send(200, json.dumps({"name": "alice", "servers": servers}), "application/json")
        elif self.path == "/hub/api/oauth2/authorize?client_id=alice":
            self._send(302, "", Location="/user/alice/oauth_callback")
        elif self.path == "/hub/api/users/alice/server/progress":
            event = {"progress": 100, "failed": True, "message": "Spawn failed: no image"}
            self._send(200, f"data: {json.dumps(event)}\n\n", "text/event-stream")
        else:
            self._send(404, "<div class='error'><h1>404 : Not Found</h1></div>")


@pytest.fixture
def fake_hub() -> Iterator[str]:
    FakeHub.mode, FakeHub.polls, FakeHub.spawned, FakeHub.forms = "ok", 0, False, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hub/lti/launch"
    finally:
        server.shutdown()
        server.server_close()


def run_cli(
    url: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, Any]]:
    code = cli.main(
        [
            "--url",
            url,
            "--key",
            KEY,
            "--user",
            "alice",
            "--poll-interval",
            "0.01",
            "--timeout",
            "5",
            *extra,
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def test_cli_ok_with_secret_from_env(
    fake_hub: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTIHUB_SECRET", SHARED)
    code, report = run_cli(fake_hub, capsys, "--custom", "lms_image=jupyterhub/x : 1", "--teacher")
    assert code == 0
    assert report["result"] == "ok"
    assert report["user"] == "alice"
    assert report["server_url"].endswith("/user/alice/")
    assert isinstance(report["seconds"], float)
    form = FakeHub.forms[0]
    assert form["custom_lms_image"] == "jupyterhub/x : 1"
    assert form["roles"] == "Instructor"
    assert form["custom_lms_teachers"] == "alice"


def test_cli_open_follows_the_oauth_round_trip_to_jupyterlab(
    fake_hub: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTIHUB_SECRET", SHARED)
    code, report = run_cli(fake_hub, capsys, "--open")
    assert code == 0, report
    assert report["page_status"] == 200
    assert report["page_url"].endswith("/user/alice/lab")
    assert report["page_title"] == "JupyterLab"


def test_cli_open_reports_a_server_page_that_fails(
    fake_hub: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTIHUB_SECRET", SHARED)
    code, report = run_cli(fake_hub, capsys)
    assert report["page_status"] is None, "without --open the page is not loaded"
    FakeHub.mode, FakeHub.polls = "lab-down", 0
    code, report = run_cli(fake_hub, capsys, "--open")
    assert (code, report["result"], report["page_status"]) == (2, "failed", 503)
    assert "503" in report["message"]


def test_cli_refused_shows_message(
    fake_hub: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    FakeHub.mode = "refuse"
    secret_file = tmp_path / "secret"
    secret_file.write_text(SHARED + "\n")
    custom = tmp_path / "custom.txt"
    custom.write_text("lms_cpulimit=8\n")
    code, report = run_cli(
        fake_hub, capsys, "--secret-file", str(secret_file), "--custom-file", str(custom)
    )
    assert code == 1
    assert report["result"] == "refused"
    assert report["http_status"] == 403
    assert report["message"].startswith("This activity asks for 8 CPUs")
    assert FakeHub.forms[0]["custom_lms_cpulimit"] == "8"


def test_cli_bad_secret_is_refused(fake_hub: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_cli(fake_hub, capsys, "--secret", "wrong")
    assert (code, report["http_status"], report["message"]) == (1, 401, "Invalid oauth_signature")


def test_cli_timeout_and_failure(
    fake_hub: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTIHUB_SECRET", SHARED)
    FakeHub.mode = "slow"
    code, report = run_cli(fake_hub, capsys, "--timeout", "0.2")
    assert (code, report["result"]) == (2, "timeout")
    FakeHub.mode, FakeHub.polls, FakeHub.spawned = "fail", 0, False
    code, report = run_cli(fake_hub, capsys)
    assert (code, report["result"], report["message"]) == (2, "failed", "Spawn failed: no image")


def test_cli_without_secret_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LTIHUB_SECRET", raising=False)
    code, report = run_cli("http://127.0.0.1:9/hub/lti/launch", capsys)
    assert code == 2 and "secret" in report["message"]


def test_cli_connection_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LTIHUB_SECRET", SHARED)
    code, report = run_cli("http://127.0.0.1:9/hub/lti/launch", capsys)
    assert code == 2 and report["result"] == "error"
