"""Application conventions on top of KXP records (not part of KXP/1; see docs/application.md).

An application_data record is a message, except a *control record*: one whose content
starts with a NUL byte, followed by a UTF-8 JSON object with an ``op`` field. File
transfer uses control records around the file's raw bytes.
"""

from __future__ import annotations

import json
from typing import Any

from protocol import KexlabError
from protocol.json_payload import KIND_JSON, JsonPayloadError, load_object

CONTROL_PREFIX = b"\x00"
MAX_CONTROL = 4096
"""Bytes of JSON a control record may carry: its objects are a few fields each."""
FILE_CHUNK = 65536
"""File bytes travel in records of at most this size (one KXP record's content limit)."""

OP_FILE = "file"
"""client -> server: {"op": "file", "name": str, "size": int, "sha256": hex}, then the bytes."""
OP_FILE_OK = "file-ok"
"""server -> client: {"op": "file-ok", "name": stored name, "size": int, "sha256": hex}."""
OP_FILE_ERROR = "file-error"
"""server -> client: {"op": "file-error", "reason": str}."""
OP_ERROR = "error"
"""server -> client: a control record it could not use: {"op": "error", "reason": str}."""


class ControlError(KexlabError):
    """A control record that does not follow the convention."""


def is_control(record: bytes) -> bool:
    """Whether a record is a control record (leading NUL) rather than a message."""
    return record[:1] == CONTROL_PREFIX


def encode_control(op: str, **fields: Any) -> bytes:
    """NUL || compact JSON {"op": op, ...fields}."""
    body = json.dumps({"op": op, **fields}, separators=(",", ":"), sort_keys=True)
    return CONTROL_PREFIX + body.encode("utf-8")


def decode_control(record: bytes) -> dict[str, Any]:
    """The JSON object of a control record; ControlError when it is not one."""
    if not is_control(record):
        raise ControlError("not a control record")
    try:
        # Bounded: a nesting bomb here used to cost the connection an internal_error.
        obj = load_object(record[1:], max_bytes=MAX_CONTROL)
    except JsonPayloadError as exc:
        if exc.kind != KIND_JSON:  # too big, or a nesting bomb
            raise ControlError(f"control record refused: {exc}") from None
        if "object" not in str(exc):
            raise ControlError("control record is not UTF-8 JSON") from None
        obj = {}
    if not isinstance(obj.get("op"), str):
        raise ControlError('control record is not a JSON object with an "op" string')
    return obj
