"""The wire protocol of ``semdraw-serve``, as values: what a client and a server say to each other.

One WebSocket per painter. Control messages are JSON text; frames are binary: a 16-byte header
(:data:`FRAME_HEADER`: magic ``SDFR``, frame number, the session's last edit sequence number the frame
reflects, image format) followed by JPEG or PNG bytes. Edits are the request contract's edit values
(``semdraw.edits``); compositions are ``semdraw.Composition`` JSON. docs/protocol.md describes the same
thing for people writing a client; this module is what the server and the Python client run.

Nothing here imports Ray or a web framework: the protocol is pure data, tested on its own.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from semdraw.api import Composition, ContractError, StreamConfig, read_json
from semdraw.edits import Edit, edit_from_dict, edit_to_dict

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 << 20  # the largest message: uvicorn's own WebSocket limit under Serve (16 MiB)
FRAME_HEADER = struct.Struct("<4sIIB3x")  # magic, frame number, edit seq, format; little-endian, 16 bytes
FRAME_MAGIC = b"SDFR"
FORMATS = {"jpeg": 0, "png": 1}
MAX_CONTROL_BYTES = 64 << 10  # a message's JSON beside the images it carries (mask PNGs, a background image)
PAYLOAD_KEYS = frozenset({"mask", "image"})  # the fields that carry base64 images (api.py's contract)
MAX_IN_FLIGHT = 2  # frames sent and not yet acknowledged: more and the server drops frames for the client


class Close:
    """WebSocket close codes. 1001 and 4002/4003 mean "reconnect" (elsewhere, after a backoff); the
    4000-range others mean "do not retry as is"."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the replica shuts down: reconnect, another one takes the painter
    INTERNAL = 1011  # the replica failed: reconnect
    BAD_HELLO = 4000  # a handshake the server cannot read, or another protocol version
    UNAUTHORIZED = 4001  # a wrong server token or session token
    FULL = 4002  # no room for this painter here: retry with backoff
    UNAVAILABLE = 4003  # the replica is not ready (networks failing, shutting down): retry
    BAD_MESSAGE = 4004  # a message too large or not of the protocol
    TOO_MANY = 4005  # this address already has as many painters on the replica as it may: close one

    RETRY = frozenset({GOING_AWAY, INTERNAL, FULL, UNAVAILABLE, 1006, 1012, 1013})


class ProtocolError(ContractError):
    """A message that is not of the protocol; the message says which and why."""


@dataclass(frozen=True)
class Hello:
    """The client's first message: the server's access ``token``, the protocol version, the painter's
    composition and stream settings, a ``session`` to join (id and token of a shared canvas; None: a new
    session) and the frame format it wants."""

    token: str
    composition: Composition
    stream: StreamConfig = StreamConfig()
    session: str | None = None
    session_token: str | None = None
    frame_format: str = "jpeg"
    protocol: int = PROTOCOL_VERSION

    def to_json(self) -> str:
        return json.dumps({"type": "hello", "protocol": self.protocol, "token": self.token,
                           "composition": self.composition.to_dict(), "stream": self.stream.to_dict(),
                           "session": self.session, "session_token": self.session_token,
                           "frame_format": self.frame_format}, allow_nan=False)  # fmt: skip

    @staticmethod
    def from_message(message: dict[str, Any]) -> Hello:
        if message.get("protocol") != PROTOCOL_VERSION:
            raise ProtocolError(f"this server speaks protocol {PROTOCOL_VERSION}, the client "
                                f"{message.get('protocol')!r}: update the client")  # fmt: skip
        if message.get("frame_format", "jpeg") not in FORMATS:
            raise ProtocolError(f"frame_format must be one of {', '.join(FORMATS)}")
        for key in ("token", "session", "session_token"):
            if message.get(key) is not None and not isinstance(message[key], str):
                raise ProtocolError(f"{key} must be text")
        return Hello(message.get("token") or "", Composition.from_dict(message.get("composition")),
                     StreamConfig.from_dict(message.get("stream") or {}), message.get("session"),
                     message.get("session_token"), message.get("frame_format", "jpeg"))  # fmt: skip


def parse(text: str | bytes) -> dict[str, Any]:
    """A text message as a dict with a ``type``; anything else is one :class:`ProtocolError`."""
    message = read_json(text, "a message", MAX_MESSAGE_BYTES, ProtocolError)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message is a JSON object with a \"type\"")
    return message


def mask_png_limit(height: int, width: int) -> int:
    """The most bytes a mask PNG of a ``height`` x ``width`` canvas may take: the canvas's raw 8-bit mask,
    plus PNG's per-row filter byte and a little for headers and zlib's blocks (a PNG that compresses
    nothing, random noise, stays under it; a mask is never noise)."""
    raw = height * (width + 1)
    return raw + raw // 1000 + 1024


def check_sizes(message: dict[str, Any], size: int, canvas: tuple[int, int]) -> None:
    """The wire's limits beyond the contract's: a message's JSON beside its images at most
    :data:`MAX_CONTROL_BYTES`, each mask PNG at most :func:`mask_png_limit` of the canvas. ``size``: the
    message's length as received."""
    images = _payloads(message)
    control = size - sum(len(text) for _, text in images)
    if control > MAX_CONTROL_BYTES:
        raise ProtocolError(f"a message's JSON (beside its images) is {control} bytes, over the "
                            f"{MAX_CONTROL_BYTES >> 10} KB limit")  # fmt: skip
    limit = mask_png_limit(*canvas)
    for key, text in images:
        if key == "mask" and len(text) * 3 // 4 > limit:  # base64: 4 characters carry 3 bytes
            raise ProtocolError(f"a mask PNG of {len(text) * 3 // 4} bytes is larger than a raw "
                                f"{canvas[0]}x{canvas[1]} mask ({limit} bytes): send a PNG of the canvas's size")  # fmt: skip


def _payloads(message: Any) -> list[tuple[str, str]]:
    """Every (key, base64 text) under a :data:`PAYLOAD_KEYS` key, anywhere in the message (no recursion:
    a parsed message may nest as deep as the JSON parser allowed)."""
    found, todo = [], [message]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in PAYLOAD_KEYS and isinstance(value, str):
                    found.append((key, value))
                else:
                    todo.append(value)
        elif isinstance(node, list):
            todo.extend(node)
    return found


def edit_message(edit: Edit, seq: int) -> str:
    """A client's edit with its own sequence number (the server acknowledges it with the session's)."""
    return json.dumps({"type": "edit", "seq": seq, "edit": edit_to_dict(edit)}, allow_nan=False)


def read_edit(message: dict[str, Any]) -> tuple[int, Edit]:
    seq = message.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ProtocolError("an edit carries a whole, non-negative seq")
    return seq, edit_from_dict(message.get("edit"))


def message(kind: str, **fields: Any) -> str:
    """A control message of ``kind`` (server side: welcome, ack, edit, status, error, reconnect)."""
    return json.dumps({"type": kind, **fields}, allow_nan=False)


# ------------------------------------------------------------------------------------------ frames
def pack_frame(number: int, seq: int, image: bytes, fmt: str) -> bytes:
    return FRAME_HEADER.pack(FRAME_MAGIC, number & 0xFFFFFFFF, seq & 0xFFFFFFFF, FORMATS[fmt]) + image


def unpack_frame(data: bytes) -> tuple[int, int, str, bytes]:
    """(frame number, edit seq, format, image bytes) of a binary frame message."""
    if len(data) < FRAME_HEADER.size:
        raise ProtocolError(f"a frame is at least {FRAME_HEADER.size} bytes, got {len(data)}")
    magic, number, seq, code = FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC or code not in FORMATS.values():
        raise ProtocolError("not a semdraw frame (bad magic or format)")
    fmt = next(k for k, v in FORMATS.items() if v == code)
    return number, seq, fmt, data[FRAME_HEADER.size :]


def encode_image(frame: Any, fmt: str, quality: int = 90) -> bytes:
    """An HxWx3 uint8 frame as JPEG or PNG bytes (PNG: lossless, what tests compare exactly)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    if fmt == "png":
        Image.fromarray(frame).save(out, format="PNG", compress_level=1)
    else:
        Image.fromarray(frame).save(out, format="JPEG", quality=quality)
    return out.getvalue()
