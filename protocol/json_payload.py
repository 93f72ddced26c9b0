"""Small JSON objects from strangers (§8 payloads, application control records), bounded.

``json.loads`` recurses once per nesting level, so a few kilobytes of ``[[[[...`` raise
``RecursionError``, which is not a ``ValueError`` and escaped every caller's check
(issue 13: a retained bomb restarted the server's MQTT subscriber in a loop). Here the
size is checked before decoding and the depth before parsing; every failure is one
``JsonPayloadError`` whose ``kind`` says which rule it broke.
"""

from __future__ import annotations

import json
from typing import Any

from .alerts import KexlabError

DEFAULT_MAX_DEPTH = 8
"""Nesting levels allowed: kexlab's objects are flat, so this is generous."""

# What a receiver did not like, for logs that count hostile input by class.
KIND_SIZE = "size"
KIND_DEPTH = "depth"
KIND_JSON = "json"


class JsonPayloadError(KexlabError):
    """Not a bounded JSON object; ``str()`` is one line, ``kind`` names the rule."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


def nesting_depth(text: str) -> int:
    """The deepest ``[``/``{`` nesting outside strings (a linear scan, no recursion)."""
    if text.count("[") + text.count("{") <= 1:
        return min(1, text.count("[") + text.count("{"))
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def load_object(
    data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH
) -> dict[str, Any]:
    """The JSON object in ``data``: at most ``max_bytes`` long and ``max_depth`` levels deep."""
    if len(data) > max_bytes:
        raise JsonPayloadError(f"payload of {len(data)} bytes is over {max_bytes}", KIND_SIZE)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise JsonPayloadError("payload is not UTF-8 JSON", KIND_JSON) from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonPayloadError(
            f"payload is nested {depth} levels deep, over {max_depth}", KIND_DEPTH
        )
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: belt and braces, see above
        raise JsonPayloadError("payload is not UTF-8 JSON", KIND_JSON) from None
    if not isinstance(obj, dict):
        raise JsonPayloadError("payload is not a JSON object", KIND_JSON)
    return obj
