"""Topics and payloads of the out-of-band channel (docs/protocol.md §8): pure functions, no MQTT.

Everything that arrives from a broker is untrusted input: each parser either returns a
well-formed value or raises ``MalformedPayload`` with one human line saying why.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from protocol import KexlabError, check_psk_identity
from protocol.constants import MIN_PSK_LEN
from protocol.json_payload import KIND_DEPTH, KIND_JSON, KIND_SIZE, JsonPayloadError, load_object

TOPIC_ROOT = "kexlab/v1"
QOS = 1
# §8 payloads are tiny JSON objects; anything larger is refused before json.loads sees it.
MAX_PAYLOAD = 4096
# The spec sets only a floor (§5); a ceiling keeps the server's table bounded in bytes too.
MAX_PSK_LEN = 1024
ROLES = ("client", "server")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SAS_HEX = re.compile(r"(?:[0-9a-f]{2}){16,64}")
_PROBE = re.compile(r"[0-9a-f]{32}")


# The classes of hostile input a receiver counts separately (logged at most once a minute
# each): KIND_SIZE (over MAX_PAYLOAD), KIND_DEPTH (a nesting bomb), KIND_JSON (not a UTF-8
# JSON object), and these.
KIND_FIELD = "field"
"""A member missing, of the wrong type, or with a value the rules refuse."""
KIND_EXPIRED = "expired"
KIND_RETAINED = "retained"
"""A retained message where §8 publishes none (psk, sas): someone planted it."""
KIND_WORDS = {
    KIND_SIZE: "oversized messages",
    KIND_DEPTH: "nesting bombs",
    KIND_JSON: "messages that are not a JSON object",
    KIND_FIELD: "messages with a missing or bad member",
    KIND_EXPIRED: "expired keys",
    KIND_RETAINED: "retained messages",
}
"""Each class of hostile input in words, for the summary lines."""


class MalformedPayload(KexlabError):
    """A §8 message that does not parse; ``str()`` is one line, ``kind`` its class."""

    def __init__(self, reason: str, kind: str = KIND_FIELD) -> None:
        super().__init__(reason)
        self.kind = kind


def check_server_id(server_id: str) -> str:
    """A server id is one MQTT topic level: the same rules as a PSK identity (§3)."""
    try:
        return check_psk_identity(server_id.encode("utf-8"))
    except ValueError as exc:
        raise ValueError(str(exc).replace("a PSK identity", "a server id")) from None


def psk_topic(server_id: str, identity: str) -> str:
    """kexlab/v1/<server_id>/psk/<identity>."""
    return f"{TOPIC_ROOT}/{check_server_id(server_id)}/psk/{check_identity(identity)}"


def psk_filter(server_id: str) -> str:
    """The server's subscription: kexlab/v1/<server_id>/psk/+."""
    return f"{TOPIC_ROOT}/{check_server_id(server_id)}/psk/+"


def fingerprint_topic(server_id: str) -> str:
    """kexlab/v1/<server_id>/fingerprint (retained)."""
    return f"{TOPIC_ROOT}/{check_server_id(server_id)}/fingerprint"


def sas_topic(server_id: str, client_random: bytes, role: str) -> str:
    """kexlab/v1/<server_id>/sas/<client_random hex>/<client|server>."""
    if role not in ROLES:
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")
    if len(client_random) != 32:
        raise ValueError("client_random is 32 bytes")
    return f"{TOPIC_ROOT}/{check_server_id(server_id)}/sas/{client_random.hex()}/{role}"


def check_identity(identity: str) -> str:
    """§3 identity rules, for a str."""
    return check_psk_identity(identity.encode("utf-8"))


# --------------------------------------------------------------------------- psk


@dataclass(frozen=True)
class PskMessage:
    """A key handed to a server: ``{"identity", "key" (base64), "expires_at" (unix s)}``."""

    identity: str
    key: bytes
    expires_at: float

    def encode(self) -> bytes:
        """The §8 JSON payload."""
        return _dump(
            {
                "identity": self.identity,
                "key": base64.b64encode(self.key).decode("ascii"),
                # Whole seconds when they are whole: §8 says "unix seconds".
                "expires_at": int(self.expires_at)
                if float(self.expires_at).is_integer()
                else self.expires_at,
            }
        )


def parse_psk(topic: str, payload: bytes, now: float) -> PskMessage:
    """Validate one message from psk/+; expired keys are refused like malformed ones."""
    obj = _load(payload)
    identity, key_text, expires_at = obj.get("identity"), obj.get("key"), obj.get("expires_at")
    if not isinstance(identity, str):
        raise MalformedPayload('"identity" is missing or not a string')
    try:
        check_identity(identity)
    except ValueError as exc:
        raise MalformedPayload(f"bad identity {identity[:40]!r}: {exc}") from None
    topic_identity = topic.rsplit("/", 1)[-1]
    if identity != topic_identity:
        raise MalformedPayload(
            f"identity {identity!r} does not match the topic's {topic_identity!r}"
        )
    if not isinstance(key_text, str):
        raise MalformedPayload('"key" is missing or not a string')
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedPayload('"key" is not valid base64') from None
    if len(key) < MIN_PSK_LEN:
        raise MalformedPayload(f"key is {len(key)} bytes, under the {MIN_PSK_LEN}-byte minimum")
    if len(key) > MAX_PSK_LEN:
        raise MalformedPayload(f"key is {len(key)} bytes, over {MAX_PSK_LEN}")
    if isinstance(expires_at, bool) or not isinstance(expires_at, int | float):
        raise MalformedPayload('"expires_at" is missing or not a number')
    if not math.isfinite(expires_at):
        raise MalformedPayload('"expires_at" is not finite')
    if expires_at <= now:
        raise MalformedPayload(f"key expired {now - expires_at:.0f} s ago", KIND_EXPIRED)
    return PskMessage(identity, key, float(expires_at))


# --------------------------------------------------------------------------- fingerprint


@dataclass(frozen=True)
class Fingerprint:
    """The server's retained announcement: which key it serves and where."""

    server_id: str
    key_sha256: str
    """Hex SHA-256 of the server key's DER SPKI (what ``--trust mqtt`` pins)."""
    address: str
    """"host:port" of the KXP listener."""

    def encode(self) -> bytes:
        """The §8 JSON payload."""
        return _dump(
            {"server_id": self.server_id, "key_sha256": self.key_sha256, "address": self.address}
        )


def parse_fingerprint(server_id: str, payload: bytes) -> Fingerprint:
    """Validate a fingerprint message read from ``fingerprint_topic(server_id)``."""
    obj = _load(payload)
    sid, digest, address = obj.get("server_id"), obj.get("key_sha256"), obj.get("address")
    if sid != server_id:
        raise MalformedPayload(f"server_id {sid!r} does not match the topic's {server_id!r}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise MalformedPayload('"key_sha256" is not 64 lowercase hex digits')
    if not isinstance(address, str) or not address:
        raise MalformedPayload('"address" is missing or not a string')
    return Fingerprint(server_id, digest, address)


# --------------------------------------------------------------------------- sas


@dataclass(frozen=True)
class SasMessage:
    """A message on a ``sas/...`` topic: a full SAS, or a probe (kexlab's own, see below)."""

    role: str
    """The publisher's role as it states it; a receiver ignores one unequal to the topic's."""
    sas: bytes | None = None
    probe: str | None = None
    """A nonce a side publishes on the *peer's* topic to learn whether the broker lets it."""


def encode_sas(sas: bytes, role: str) -> bytes:
    """``{"role": role, "sas": hex of the full sas}``: bound to the publisher's role (§8)."""
    _check_role(role)
    return _dump({"role": role, "sas": sas.hex()})


def encode_probe(nonce: str, role: str) -> bytes:
    """``{"probe": nonce, "role": role}``, published on the peer's topic (receivers ignore it)."""
    _check_role(role)
    return _dump({"probe": nonce, "role": role})


def parse_sas_message(payload: bytes) -> SasMessage:
    """A sas/... message: ``role`` and either ``sas`` (HashLen bytes of hex) or ``probe``."""
    obj = _load(payload)
    role, value, probe = obj.get("role"), obj.get("sas"), obj.get("probe")
    if role not in ROLES:
        raise MalformedPayload('"role" is missing or not "client" or "server"')
    if isinstance(probe, str) and _PROBE.fullmatch(probe) and value is None:
        return SasMessage(role, probe=probe)
    if not isinstance(value, str) or not _SAS_HEX.fullmatch(value):
        raise MalformedPayload('"sas" is not lowercase hex of 16..64 bytes')
    return SasMessage(role, sas=bytes.fromhex(value))


def sas_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two full SAS values."""
    return hmac.compare_digest(a, b)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be 'client' or 'server', not {role!r}")


# --------------------------------------------------------------------------- json


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _load(payload: bytes) -> dict[str, Any]:
    # Size before decoding, depth before parsing: a nesting bomb is one more malformed message.
    try:
        return load_object(payload, max_bytes=MAX_PAYLOAD)
    except JsonPayloadError as exc:
        raise MalformedPayload(str(exc), exc.kind) from None


# --------------------------------------------------------------------------- copy-paste


def format_shared_psk(identity: str, key: bytes) -> str:
    """``IDENTITY=HEX``: how ``kexlab psk send`` prints a key for the other side."""
    check_identity(identity)
    if "=" in identity:
        # The reader splits at the first '=' (keystore.parse_psk_spec).
        raise ValueError("an identity that is pasted as IDENTITY=HEX may not contain '='")
    return f"{identity}={key.hex()}"
