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
from .psk import loose_key_file, parse_psk_spec, read_psk_file
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
    "loose_key_file",
    "parse_psk_spec",
    "parse_trust",
    "read_psk_file",
    "short_fingerprint",
    "write_private_key",
]
