"""Decode Jupyter kernel messages as they cross a kernel websocket (/api/kernels/<id>/channels).

Three encodings reach the proxy (websocket framing itself, masking, fragmentation and
control frames are the websocket library's business, not this module's):

- JSON text frames: one whole message ``{"channel", "header", "parent_header",
  "metadata", "content", "buffers"?}`` (no subprotocol negotiated).
- Legacy binary frames (no subprotocol, message with buffers): a big-endian uint32
  part count ``n``, ``n`` big-endian uint32 offsets, then the JSON message and buffers.
- JupyterLab 4's ``v1.kernel.websocket.jupyter.org`` subprotocol, every frame binary:
  a little-endian uint64 offset count ``n``, ``n`` little-endian uint64 offsets (the first
  one is where the channel name starts, the last one is the frame length), then the
  channel name, header, parent_header, metadata, content and any buffers, each part
  running from its offset to the next.

The learning log needs only a few fields, so decoding is lazy: :func:`peek_msg_type`
answers from the header alone, and the content (the cell's code for a request) is
never parsed unless a caller asks for it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"

# Sanity bounds for the offset tables (a real message has 6 + buffers parts).
_MAX_PARTS = 4096


class WireError(ValueError):
    """A frame that is not a well-formed kernel message in the expected encoding."""


def _as_dict(value: Any, part: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{part} is not a JSON object")
    return value


def _load(raw: bytes | str, part: str) -> dict[str, Any]:
    try:
        return _as_dict(json.loads(raw), part)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"{part} is not valid JSON") from exc


@dataclass(frozen=True)
class KernelFrame:
    """One kernel message as framed on the websocket; parts parsed on demand."""

    channel: str
    raw_header: bytes | str
    raw_parent_header: bytes | str
    raw_metadata: bytes | str
    raw_content: bytes | str
    # A text frame is parsed whole at once; these hold its parsed parts.
    parsed: dict[str, Any] | None = None

    def _part(self, name: str, raw: bytes | str) -> dict[str, Any]:
        if self.parsed is not None:
            return _as_dict(self.parsed.get(name, {}), name)
        return _load(raw, name)

    def header(self) -> dict[str, Any]:
        return self._part("header", self.raw_header)

    def parent_header(self) -> dict[str, Any]:
        return self._part("parent_header", self.raw_parent_header)

    def metadata(self) -> dict[str, Any]:
        return self._part("metadata", self.raw_metadata)

    def content(self) -> dict[str, Any]:
        return self._part("content", self.raw_content)

    def msg_type(self) -> str:
        value = self.header().get("msg_type", "")
        return value if isinstance(value, str) else ""


def _read_offsets(data: bytes, width: int, fmt: str, min_count: int) -> list[int]:
    if len(data) < width:
        raise WireError("frame shorter than its offset count")
    (count,) = struct.unpack_from(fmt, data, 0)
    if count < min_count or count > _MAX_PARTS:
        raise WireError(f"implausible offset count {count}")
    table_end = width * (count + 1)
    if len(data) < table_end:
        raise WireError("frame shorter than its offset table")
    offsets = list(struct.unpack_from(fmt[0] + fmt[1] * count, data, width))
    previous = table_end
    for offset in offsets:
        if offset < previous or offset > len(data):
            raise WireError("offsets out of order or past the end of the frame")
        previous = offset
    return offsets


def decode_v1(data: bytes) -> KernelFrame:
    """Split a ``v1.kernel.websocket.jupyter.org`` frame into its parts (not parsed yet)."""
    offsets = _read_offsets(data, 8, "<Q", 6)
    if offsets[0] != 8 * (len(offsets) + 1):
        raise WireError("first offset does not follow the offset table")
    if offsets[-1] != len(data):
        raise WireError("last offset is not the frame length")
    parts = [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    try:
        channel = parts[0].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("channel name is not UTF-8") from exc
    return KernelFrame(channel, parts[1], parts[2], parts[3], parts[4])


def decode_legacy_binary(data: bytes) -> KernelFrame:
    """The message of a legacy (no subprotocol) binary frame: JSON first, then buffers."""
    offsets = _read_offsets(data, 4, "!I", 1)
    if offsets[0] != 4 * (len(offsets) + 1):
        raise WireError("first offset does not follow the offset table")
    end = offsets[1] if len(offsets) > 1 else len(data)
    return decode_text(data[offsets[0] : end])


def decode_text(data: str | bytes) -> KernelFrame:
    """A whole message as one JSON document (a text frame)."""
    message = _load(data, "message")
    channel = message.get("channel", "")
    if not isinstance(channel, str):
        raise WireError("channel is not a string")
    return KernelFrame(channel, "", "", "", "", parsed=message)


def decode_frame(data: str | bytes, protocol: str) -> KernelFrame:
    """Decode one websocket message of a kernel channel negotiated with ``protocol``."""
    if isinstance(data, str):
        return decode_text(data)
    if protocol == V1_PROTOCOL:
        return decode_v1(data)
    return decode_legacy_binary(data)


def could_be(data: str | bytes, msg_type: str) -> bool:
    """Cheap pre-check: can this frame be a message of ``msg_type`` at all?

    Every encoding carries the header as JSON text, so the type name appears verbatim.
    """
    if isinstance(data, str):
        return msg_type in data
    return msg_type.encode("ascii") in data


def _dump(part: dict[str, Any]) -> bytes:
    return json.dumps(part, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_v1(
    channel: str,
    header: dict[str, Any],
    parent_header: dict[str, Any],
    metadata: dict[str, Any],
    content: dict[str, Any],
    buffers: tuple[bytes, ...] = (),
) -> bytes:
    """Build a v1 frame as JupyterLab 4 and jupyter_server do (tests and benchmarks)."""
    parts = [
        channel.encode("utf-8"),
        _dump(header),
        _dump(parent_header),
        _dump(metadata),
        _dump(content),
        *buffers,
    ]
    count = len(parts) + 1
    offsets = [8 * (count + 1)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack("<" + "Q" * (count + 1), count, *offsets) + b"".join(parts)


def encode_legacy_binary(message: dict[str, Any], buffers: tuple[bytes, ...]) -> bytes:
    """Build a legacy binary frame (JSON message followed by buffers) for tests."""
    parts = [_dump(message), *buffers]
    offsets = [4 * (len(parts) + 1)]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + len(part))
    return struct.pack("!" + "I" * (len(parts) + 1), len(parts), *offsets) + b"".join(parts)
