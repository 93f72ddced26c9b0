"""The shipped hardened Mosquitto config (oob/mosquitto/hardened.conf + kexlab.acl), and TLS.

MQTT hides refusals: a subscription the ACL denies is still granted and simply never
delivers, and a denied publish is still acknowledged. So these tests assert on what
does (not) arrive within a bounded wait, never on an error.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from oob_brokers import (
    CLIENT_USER,
    GUEST_USER,
    SERVER_USER,
    Mosquitto,
    assert_no_stray_tasks,
    running,
    subscriber,
)

from oob import (
    PUBACK_CAVEAT,
    REFUSED_PUBLISH_HINT,
    BrokerUnavailable,
    Fingerprint,
    MqttSettings,
    ServerChannel,
    exchange_sas,
    fetch_fingerprint,
    generate_identity,
    generate_psk,
    publish_psk,
    sas_topic,
    unknown_psk_message,
)
from oob.settings import connect

SID = "lab-server"
FAST = {"backoff_initial": 0.05, "backoff_max": 0.2}
# Long enough for a broker on one machine to deliver what it is going to deliver.
QUIET = 0.5


@pytest.fixture
async def hardened(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """Mosquitto with the shipped hardened config, ACL and a fresh password file."""
    async with running(Mosquitto(tmp_path, "hardened.conf")) as broker:
        yield broker
    await assert_no_stray_tasks()


async def test_eavesdropper_reads_nothing_while_the_server_gets_the_key(
    hardened: Mosquitto,
) -> None:
    identity, key = generate_identity(), generate_psk()
    client = hardened.settings(CLIENT_USER)
    async with (
        ServerChannel(hardened.settings(SERVER_USER), SID, **FAST) as channel,
        subscriber(client) as eve_as_client,
        subscriber(hardened.settings(GUEST_USER)) as eve_as_guest,
    ):
        assert await channel.wait_ready(5)
        await publish_psk(client, SID, identity, key, ttl=60)
        assert await channel.wait_for(identity, 5) == key
        await asyncio.sleep(QUIET)
    assert eve_as_client == []
    assert eve_as_guest == []


async def test_anonymous_and_wrong_password_are_refused_at_login(
    hardened: Mosquitto, tmp_path: Path
) -> None:
    with pytest.raises(BrokerUnavailable, match="login refused"):
        await publish_psk(hardened.settings(), SID, "anon", generate_psk())
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    settings = MqttSettings.from_url(
        hardened.url, username=CLIENT_USER, password_file=wrong, env={}
    )
    with pytest.raises(BrokerUnavailable, match=f"as '{CLIENT_USER}' unavailable: login refused"):
        await publish_psk(settings, SID, "wrong", generate_psk())


async def test_acl_denied_publish_is_not_reported_as_delivered(hardened: Mosquitto) -> None:
    """The guest may log in but write nothing: the broker still answers PUBACK."""
    identity, key = generate_identity(), generate_psk()
    async with ServerChannel(hardened.settings(SERVER_USER), SID, **FAST) as channel:
        assert await channel.wait_ready(5)
        publication = await publish_psk(hardened.settings(GUEST_USER), SID, identity, key)
        # Positive control: an allowed account's publish, sent after the guest's, arrives; the
        # broker routes publishes in the order it takes them, so the guest's would be in by now.
        control, control_key = generate_identity(), generate_psk()
        await publish_psk(hardened.settings(CLIENT_USER), SID, control, control_key)
        assert await channel.wait_for(control, 5) == control_key
        assert channel.lookup(identity) is None
    summary = publication.summary()
    assert PUBACK_CAVEAT in summary
    assert "delivered" not in summary
    message = unknown_psk_message(identity, hardened.settings(GUEST_USER), SID)
    assert REFUSED_PUBLISH_HINT in message
    assert "may have refused the publish" in message
    assert f"as '{GUEST_USER}'" in message and f"kexlab/v1/{SID}/psk/#" in message


async def test_only_the_server_may_write_the_fingerprint(hardened: Mosquitto) -> None:
    genuine = Fingerprint(SID, "11" * 32, "127.0.0.1:9700")
    forged = Fingerprint(SID, "66" * 32, "127.0.0.1:6666")
    async with ServerChannel(
        hardened.settings(SERVER_USER), SID, fingerprint=genuine, **FAST
    ) as channel:
        assert await channel.wait_ready(5)
    # A client that tries to pin everyone to its own key: acknowledged, and dropped.
    async with connect(hardened.settings(CLIENT_USER)) as attacker:
        await attacker.publish(f"kexlab/v1/{SID}/fingerprint", forged.encode(), qos=1, retain=True)
    assert await fetch_fingerprint(hardened.settings(CLIENT_USER), SID, 5) == genuine


async def test_sas_exchange_works_through_the_acl(hardened: Mosquitto) -> None:
    client_random, sas = os.urandom(32), os.urandom(48)
    results = await asyncio.gather(
        exchange_sas(hardened.settings(CLIENT_USER), SID, client_random, "client", sas, 5),
        exchange_sas(hardened.settings(SERVER_USER), SID, client_random, "server", sas, 5),
    )
    assert [r.match for r in results] == [True, True]
    # The ACL dropped each side's probe on the other's topic: the client may say
    # "verified"; the server never does (any client account may write sas/+/client).
    assert [r.peer_topic_open for r in results] == [False, False]


async def test_a_client_cannot_speak_for_the_server_in_the_sas_exchange(
    hardened: Mosquitto,
) -> None:
    """A man in the middle with client credentials cannot publish the server's SAS.

    Positive control: the client is known to listen (its own SAS arrived, and it subscribes
    before it publishes), the forgery differs from the real SAS, and the genuine server's
    publish right after it does arrive. So the client answers True only if the forgery never
    reached it; a late subscriber would time out and fail this test instead of passing it.
    """
    client_random, sas = os.urandom(32), os.urandom(32)
    to_server = sas_topic(SID, client_random, "server")
    async with connect(hardened.settings(SERVER_USER)) as server:
        await server.subscribe(sas_topic(SID, client_random, "client"), qos=1)
        waiting = asyncio.create_task(
            exchange_sas(hardened.settings(CLIENT_USER), SID, client_random, "client", sas, 10)
        )
        async with asyncio.timeout(5):
            await anext(aiter(server.messages))  # the client's own SAS: it is subscribed now
        async with connect(hardened.settings(CLIENT_USER)) as mitm:
            forged = json.dumps({"role": "server", "sas": os.urandom(32).hex()}).encode()
            await mitm.publish(to_server, forged, qos=1)  # acknowledged, and dropped by the ACL
        genuine = json.dumps({"role": "server", "sas": sas.hex()}).encode()
        await server.publish(to_server, genuine, qos=1)
        result = await waiting
    assert result.match is True and result.values == 1  # the forgery never arrived
    assert result.peer_topic_open is False  # nor did the client's own probe: the ACL held


# --------------------------------------------------------------------------- TLS


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a broker certificate for 127.0.0.1 (ca.pem, broker.pem, broker.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kexlab test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "broker.pem", folder / "broker.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_mqtts_with_the_ca_works_and_without_it_is_refused(tmp_path: Path) -> None:
    ca, cert, key = _tls_files(tmp_path)
    async with running(Mosquitto(tmp_path, "open.conf", tls=(cert, key))) as broker:
        url = f"mqtts://127.0.0.1:{broker.port}"
        settings = MqttSettings.from_url(url, env={"KEXLAB_MQTT_CA": str(ca)})
        identity, psk = generate_identity(), generate_psk()
        async with ServerChannel(settings, SID, **FAST) as channel:
            assert await channel.wait_ready(5)
            await publish_psk(settings, SID, identity, psk, ttl=60)
            assert await channel.wait_for(identity, 5) == psk
        with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await publish_psk(MqttSettings.from_url(url, env={}), SID, identity, psk)
    await assert_no_stray_tasks()
