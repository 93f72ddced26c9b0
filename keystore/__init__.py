"""Keys on disk and client trust policies (the I/O side of server identity)."""

from .keys import (
    KeyFileError,
    ServerKeys,
    data_dir,
    ensure_private_dir,
    ensure_server_keys,
    fingerprint,
    generate_private_key,
    load_private_key,
    load_public_key,
    long_fingerprint,
    short_fingerprint,
    write_private_key,
)
from .psk import PskSpec, parse_psk_spec, psk_note, read_psk_spec
from .trust import (
    KnownHosts,
    MqttPinPolicy,
    NonePolicy,
    PinPolicy,
    TofuPolicy,
    TrustPolicy,
    known_hosts_path,
    parse_trust,
)

__all__ = [
    "KeyFileError",
    "KnownHosts",
    "MqttPinPolicy",
    "NonePolicy",
    "PinPolicy",
    "PskSpec",
    "ServerKeys",
    "TofuPolicy",
    "TrustPolicy",
    "data_dir",
    "ensure_private_dir",
    "ensure_server_keys",
    "fingerprint",
    "generate_private_key",
    "known_hosts_path",
    "load_private_key",
    "load_public_key",
    "long_fingerprint",
    "parse_psk_spec",
    "parse_trust",
    "psk_note",
    "read_psk_spec",
    "short_fingerprint",
    "write_private_key",
]
