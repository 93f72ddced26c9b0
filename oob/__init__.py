"""The out-of-band channel over MQTT (docs/protocol.md §8): the only package that speaks MQTT.

- ``MqttSettings``: broker URL, credentials, CA (also from KEXLAB_MQTT_* variables).
- Server side: ``ServerChannel`` (PSK table fed from ``psk/+``, retained ``fingerprint``).
- Client side: ``publish_psk``, ``fetch_fingerprint``; both sides: ``exchange_sas`` (oob/sas.py).
- ``EmbeddedBroker``: an amqtt broker for machines without Mosquitto.
"""

from .broker import EmbeddedBroker, is_loopback
from .channel import (
    DEFAULT_TTL,
    PUBACK_CAVEAT,
    REFUSED_PUBLISH_HINT,
    PskPublication,
    fetch_fingerprint,
    generate_identity,
    generate_psk,
    publish_psk,
    unknown_psk_message,
)
from .forger import SasForger
from .payloads import (
    Fingerprint,
    MalformedPayload,
    PskMessage,
    fingerprint_topic,
    format_shared_psk,
    psk_topic,
    sas_topic,
)
from .psk_table import PskTable
from .sas import DEFAULT_SAS_TIMEOUT, SAS_MISMATCH, SasComparison, describe_match, exchange_sas
from .settings import (
    CONNECT_TIMEOUT,
    DEFAULT_URL,
    BrokerUnavailable,
    MqttSettings,
    OobError,
    OobTimeout,
)
from .subscriber import DEFAULT_PSK_WAIT, ServerChannel

__all__ = [
    "CONNECT_TIMEOUT",
    "DEFAULT_PSK_WAIT",
    "DEFAULT_SAS_TIMEOUT",
    "DEFAULT_TTL",
    "DEFAULT_URL",
    "PUBACK_CAVEAT",
    "REFUSED_PUBLISH_HINT",
    "SAS_MISMATCH",
    "BrokerUnavailable",
    "EmbeddedBroker",
    "Fingerprint",
    "MalformedPayload",
    "MqttSettings",
    "OobError",
    "OobTimeout",
    "PskMessage",
    "PskPublication",
    "PskTable",
    "SasComparison",
    "SasForger",
    "ServerChannel",
    "describe_match",
    "exchange_sas",
    "fetch_fingerprint",
    "fingerprint_topic",
    "format_shared_psk",
    "generate_identity",
    "generate_psk",
    "is_loopback",
    "psk_topic",
    "publish_psk",
    "sas_topic",
    "unknown_psk_message",
]
