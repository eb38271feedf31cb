"""Kernel websocket message decoding: JSON text, binary v1, legacy binary, bad frames."""

from __future__ import annotations

import json
import struct

import pytest

from ltihub.logproxy_wire import (
    V1_PROTOCOL,
    WireError,
    could_be,
    decode_frame,
    decode_legacy_binary,
    decode_text,
    decode_v1,
    encode_legacy_binary,
    encode_v1,
)

HEADER = {
    "msg_id": "m1",
    "msg_type": "execute_request",
    "session": "s1",
    "date": "2026-01-01T00:00:00Z",
}
META = {"cellId": "c-1", "tags": ["filename: a.py"]}
CONTENT = {"code": "print('日本語')", "silent": False}


def test_text_frame_gives_every_part() -> None:
    message = {
        "channel": "shell",
        "header": HEADER,
        "parent_header": {},
        "metadata": META,
        "content": CONTENT,
    }
    frame = decode_frame(json.dumps(message), "")
    assert frame.channel == "shell"
    assert frame.msg_type() == "execute_request"
    assert frame.header() == HEADER
    assert frame.metadata() == META
    assert frame.content() == CONTENT
    assert frame.parent_header() == {}


def test_v1_frame_round_trip_with_buffers() -> None:
    data = encode_v1("shell", HEADER, {"msg_id": "p"}, META, CONTENT, (b"\x00\x01", b"xyz"))
    frame = decode_frame(data, V1_PROTOCOL)
    assert frame.channel == "shell"
    assert frame.header() == HEADER
    assert frame.parent_header() == {"msg_id": "p"}
    assert frame.metadata() == META
    assert frame.content() == CONTENT


def test_v1_layout_is_jupyterlabs() -> None:
    """Offset count, offsets (first = end of table, last = frame length), then parts."""
    data = encode_v1("iopub", {}, {}, {}, {})
    (count,) = struct.unpack_from("<Q", data)
    offsets = struct.unpack_from("<" + "Q" * count, data, 8)
    assert count == 6
    assert offsets[0] == 8 * (count + 1)
    assert offsets[-1] == len(data)
    assert data[offsets[0] : offsets[1]] == b"iopub"
    assert data[offsets[1] : offsets[2]] == b"{}"


def test_legacy_binary_frame() -> None:
    message = {
        "channel": "shell",
        "header": HEADER,
        "parent_header": {},
        "metadata": META,
        "content": {},
    }
    data = encode_legacy_binary(message, (b"buf1",))
    assert decode_frame(data, "").header() == HEADER
    assert decode_legacy_binary(encode_legacy_binary(message, ())).metadata() == META


def test_binary_frame_without_subprotocol_is_not_read_as_v1() -> None:
    with pytest.raises(WireError):
        decode_frame(encode_v1("shell", HEADER, {}, META, CONTENT), "")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00",
        struct.pack("<Q", 1) + struct.pack("<Q", 16),  # too few parts
        struct.pack("<Q", 10**9),  # absurd count
        struct.pack("<Q", 6) + struct.pack("<6Q", 56, 57, 58, 59, 60, 999),  # past the end
        struct.pack("<Q", 6) + struct.pack("<6Q", 56, 60, 58, 59, 60, 61) + b"x" * 5,  # order
        struct.pack("<Q", 6) + struct.pack("<6Q", 50, 57, 58, 59, 60, 61) + b"x" * 5,  # first
    ],
)
def test_bad_v1_frames_raise_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_v1(data)


def test_bad_json_parts_raise_wire_error() -> None:
    frame = decode_v1(encode_v1("shell", {}, {}, {}, {})[:-2] + b"[]")  # content = []
    with pytest.raises(WireError):
        frame.content()
    broken = bytearray(encode_v1("shell", {"a": 1}, {}, {}, {}))
    broken[broken.index(b'{"a"')] = ord("x")
    with pytest.raises(WireError):
        decode_v1(bytes(broken)).header()
    with pytest.raises(WireError):
        decode_text("not json")
    with pytest.raises(WireError):
        decode_text("[1, 2]")
    with pytest.raises(WireError):
        decode_text(b"\xff\xfe")
    with pytest.raises(WireError):
        decode_text(json.dumps({"channel": 5}))


def test_could_be_checks_the_type_name_in_any_encoding() -> None:
    v1 = encode_v1("shell", HEADER, {}, META, CONTENT)
    assert could_be(v1, "execute_request")
    assert not could_be(v1, "execute_reply")
    assert could_be(json.dumps({"header": HEADER}), "execute_request")
    assert not could_be("{}", "execute_request")
