"""Launch bindings, the three record kinds and the write_nblogs REST call."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from ltihub.logproxy_records import (
    LaunchInfo,
    LaunchRegistry,
    LaunchRejected,
    client_record,
    hub_user_name,
    launch_from_form,
    ltictr_record,
    rest_body,
    server_record,
)
from ltihub.logproxy_wire import V1_PROTOCOL, decode_frame, encode_v1

TOKEN = "0123456789abcdef0123456789abcdef"  # noqa: S105 - test value
FORM = {
    "ext_user_username": "Alice",
    "custom_lms_sessioninfo": "7,12",
    "custom_lms_serverurl": "https://moodle.example.edu",
    "custom_lms_serverpath": "/moodle",
    "custom_lms_rpctoken": TOKEN,
}
LAUNCH = LaunchInfo("7", "12", "https://moodle.example.edu", "/moodle", TOKEN)


def test_launch_values_from_the_launch_form() -> None:
    assert launch_from_form(FORM) == LAUNCH
    assert hub_user_name(FORM, "ext_user_username") == "alice"


def test_launch_without_token_or_server_logs_nothing() -> None:
    assert launch_from_form({**FORM, "custom_lms_rpctoken": ""}) is None
    assert launch_from_form({k: v for k, v in FORM.items() if k != "custom_lms_serverurl"}) is None


@pytest.mark.parametrize(
    "url",
    ["ftp://moodle", "moodle.example.edu", "https://", "https://u:p@moodle", "https://m/?x=1",
     "https://m:x", "https://m:99999"],
)
def test_launch_with_unusable_server_url_is_rejected(url: str) -> None:
    with pytest.raises(LaunchRejected):
        launch_from_form({**FORM, "custom_lms_serverurl": url})


def test_allowed_moodle_urls() -> None:
    assert launch_from_form(FORM, ["https://moodle.example.edu/"]) == LAUNCH
    with pytest.raises(LaunchRejected, match="not allowed"):
        launch_from_form(FORM, ["https://moodle.example.edu.evil"])
    with pytest.raises(LaunchRejected):
        launch_from_form(
            {**FORM, "custom_lms_serverurl": "https://moodle.example.edu.evil"},
            ["https://moodle.example.edu"],
        )


def test_the_module_spelling_with_the_port_is_the_same_site() -> None:
    # mod_lticontainer 1.6.3 sends scheme://host:port (lti_edit.class.php); operators list
    # the site as users see it.
    real = {**FORM, "custom_lms_serverurl": "https://moodle.example.edu:443"}
    assert launch_from_form(real, ["https://moodle.example.edu"]) is not None
    assert launch_from_form(FORM, ["https://Moodle.Example.edu:443/"]) == LAUNCH
    assert launch_from_form(
        {**FORM, "custom_lms_serverurl": "http://moodle.example.edu:80"},
        ["http://moodle.example.edu"],
    ) is not None


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://moodle.example.edu:8443", "https://moodle.example.edu"),  # another port
        ("http://moodle.example.edu:443", "https://moodle.example.edu"),  # another scheme
        ("https://moodle.example.edu:443", "http://moodle.example.edu"),
        ("https://moodle.example.edu", "https://moodle.example.edu/moodle"),  # above the path
        ("https://moodle.example.edu/moodle2", "https://moodle.example.edu/moodle"),
        ("https://moodle.example.edu:x", "https://moodle.example.edu"),  # not a port
        ("https://moodle.example.edu", "https://"),  # an allowed entry without a host
        ("https://moodle.example.edu", "https://moodle.example.edu:x"),
    ],
)
def test_other_sites_stay_refused(url: str, allowed: str) -> None:
    with pytest.raises(LaunchRejected):
        launch_from_form({**FORM, "custom_lms_serverurl": url}, [allowed])


def test_rest_url_and_endpoint() -> None:
    assert LAUNCH.endpoint() == "https://moodle.example.edu/moodle/webservice/rest/server.php"
    url = urlsplit(LAUNCH.rest_url())
    assert url.path == "/moodle/webservice/rest/server.php"
    assert parse_qs(url.query) == {
        "wsfunction": ["mod_lticontainer_write_nblogs"],
        "wstoken": [TOKEN],
    }
    root = LaunchInfo("1", "2", "http://m:8080/", "", TOKEN)
    assert root.endpoint() == "http://m:8080/webservice/rest/server.php"
    assert TOKEN not in repr(LAUNCH)


def test_ltictr_record() -> None:
    assert ltictr_record(LAUNCH, "sess-1") == {
        "host": "ltictr",
        "inst_id": "7",
        "lti_id": "12",
        "session": "sess-1",
    }


def _request(metadata: dict[str, object], msg_type: str = "execute_request") -> bytes:
    header = {
        "msg_id": "msg-1",
        "msg_type": msg_type,
        "session": "sess-1",
        "username": "alice",
        "date": "2026-05-01T10:00:00.123Z",
    }
    return encode_v1("shell", header, {}, metadata, {"code": "1/0"})


def test_client_record_from_an_execute_request() -> None:
    frame = decode_frame(
        _request({"cellId": "cell-9", "tags": ["filename: a.py", "codenum: 2"]}), V1_PROTOCOL
    )
    record = client_record(frame)
    assert record == {
        "host": "client",
        "session": "sess-1",
        "message": "msg-1",
        "cell_id": "cell-9",
        "tags": '["filename: a.py","codenum: 2"]',
        "date": "2026-05-01T10:00:00.123Z",
    }
    assert "1/0" not in json.dumps(record)  # the code itself is never recorded


def test_client_record_needs_a_cell_and_an_execute_request() -> None:
    assert client_record(decode_frame(_request({"cellId": "c"}), V1_PROTOCOL))["tags"] == ""  # type: ignore[index]
    assert client_record(decode_frame(_request({}), V1_PROTOCOL)) is None
    assert (
        client_record(decode_frame(_request({"cellId": "c"}, "kernel_info_request"), V1_PROTOCOL))
        is None
    )


def test_server_record_from_an_execute_reply() -> None:
    message = {
        "channel": "shell",
        "header": {
            "msg_id": "r-1",
            "msg_type": "execute_reply",
            "session": "k-sess",
            "username": "kernel-user",
            "date": "2026-05-01T10:00:01Z",
        },
        "parent_header": {"msg_id": "msg-1", "session": "sess-1"},
        "metadata": {},
        "content": {"status": "error", "ename": "ZeroDivisionError"},
    }
    assert server_record(decode_frame(json.dumps(message), "")) == {
        "host": "server",
        "status": "error",
        "username": "kernel-user",
        "session": "sess-1",
        "message": "msg-1",
        "date": "2026-05-01T10:00:01Z",
    }
    message["header"]["msg_type"] = "execute_input"  # type: ignore[index]
    assert server_record(decode_frame(json.dumps(message), "")) is None


def test_rest_body_is_nb_logs_zero() -> None:
    body = rest_body({"host": "client", "tags": '["filename: 日本.py"]', "cell_id": "a&b"})
    assert body.startswith("nb_logs%5B0%5D%5Bhost%5D=client&")
    assert parse_qsl(body) == [
        ("nb_logs[0][host]", "client"),
        ("nb_logs[0][tags]", '["filename: 日本.py"]'),
        ("nb_logs[0][cell_id]", "a&b"),
    ]


def test_registry_binds_expires_and_forgets() -> None:
    now = [1000.0]
    registry = LaunchRegistry(ttl=60, clock=lambda: now[0])
    registry.remember("alice", LAUNCH)
    now[0] += 50
    assert registry.lookup("alice") == LAUNCH  # refreshes
    now[0] += 50
    assert registry.lookup("alice") == LAUNCH
    now[0] += 61
    assert registry.lookup("alice") is None
    registry.remember("bob", LAUNCH)
    registry.remember("bob", None)  # a later launch without log settings
    assert registry.lookup("bob") is None


def test_registry_state_file_is_private_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "launches.json"
    registry = LaunchRegistry(state_file=state)
    registry.remember("alice", LAUNCH)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert LaunchRegistry(state_file=state).lookup("alice") == LAUNCH
    state.write_text("garbage")
    assert len(LaunchRegistry(state_file=state)) == 0
