"""KXP/1 as a sans-I/O library: no sockets, no event loop, no clock, no environment.

Feed bytes in, take events and bytes out. See ``docs/protocol.md``.
"""

from .alerts import (
    AlertCode,
    KexlabError,
    LocalProtocolError,
    PeerAlert,
    ProtocolError,
    RemoteProtocolError,
    alert_name,
)
from .client_connection import ClientConnection
from .config import (
    ClientConfig,
    ServerConfig,
    ServerIdentity,
    TrustDecision,
    TrustVerdict,
    trust_nobody,
)
from .connection import Connection, State
from .constants import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PORT,
    GROUP_NAMES,
    KEX_NAMES,
    SCHEME_NAMES,
    SUITE_NAMES,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    Kex,
    SignatureScheme,
)
from .events import (
    AlertReceived,
    ConnectionClosed,
    DataReceived,
    Event,
    FrameTraced,
    HandshakeComplete,
    KeyUpdateReceived,
    PskNeeded,
)
from .frames import Frame, FrameDecoder, encode_frame
from .kex import sha256_hex
from .keyschedule import keylog_lines, parse_keylog, sas_display
from .methods import (
    METHODS,
    KexMethod,
    check_client_config,
    check_psk_identity,
    check_server_config,
)
from .server_connection import ServerConnection

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "DEFAULT_PORT",
    "GROUP_NAMES",
    "KEX_NAMES",
    "METHODS",
    "SCHEME_NAMES",
    "SUITE_NAMES",
    "AlertCode",
    "AlertReceived",
    "CipherSuite",
    "ClientConfig",
    "ClientConnection",
    "Connection",
    "ConnectionClosed",
    "ContentType",
    "DataReceived",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameTraced",
    "FrameType",
    "Group",
    "HandshakeComplete",
    "Kex",
    "KexMethod",
    "KexlabError",
    "KeyUpdateReceived",
    "LocalProtocolError",
    "PeerAlert",
    "ProtocolError",
    "PskNeeded",
    "RemoteProtocolError",
    "ServerConfig",
    "ServerConnection",
    "ServerIdentity",
    "SignatureScheme",
    "State",
    "TrustDecision",
    "TrustVerdict",
    "alert_name",
    "check_client_config",
    "check_psk_identity",
    "check_server_config",
    "encode_frame",
    "keylog_lines",
    "parse_keylog",
    "sas_display",
    "sha256_hex",
    "trust_nobody",
]
