"""protocol.methods, protocol.observed and protocol.dissect: the facts each method states, the
passive observer's key checks, and the dissection's edges (docs/protocol.md §2, §4, §5)."""

from __future__ import annotations

import pytest
from conftest import load_vector
from kxp_sessions import PSK, PSK_IDENTITY, lab_keys, trust_all

from protocol import (
    METHODS,
    AlertCode,
    ClientConfig,
    ClientConnection,
    Connection,
    FrameDecoder,
    Kex,
    LocalProtocolError,
    ServerConfig,
    ServerConnection,
)
from protocol.dissect import dissect_frame
from protocol.messages import KeyTransport
from protocol.observed import ObservedHandshake


def test_each_method_states_the_facts_of_its_flights() -> None:
    """§4 flight order, §5 forward secrecy and what each method's server key is for."""
    rsa, dhe, psk = METHODS[Kex.RSA], METHODS[Kex.DHE], METHODS[Kex.PSK]
    assert (rsa.name, dhe.name, psk.name) == ("rsa", "dhe", "psk")
    assert [m.client_finishes_first for m in (rsa, dhe, psk)] == [True, False, False]
    assert [m.forward_secret for m in (rsa, dhe, psk)] == [False, True, False]
    assert [m.server_key_role for m in (rsa, dhe, psk)] == ["transport", "identity", ""]
    assert [m.server_signs for m in (rsa, dhe, psk)] == [False, True, False]
    assert [m.needs_psk for m in (rsa, dhe, psk)] == [False, False, True]
    assert [m.uses_group for m in (rsa, dhe, psk)] == [False, True, False]
    assert [m.trust_before_secret for m in (rsa, dhe, psk)] == [True, False, False]
    assert set(METHODS) == set(Kex)


def test_what_a_passive_holder_of_each_long_term_secret_recovers() -> None:
    keys = lab_keys()
    vec = load_vector("rsa-0x1301.json")
    kt_hex = next(f["hex"] for f in vec["frames"] if f["name"] == "KEY_TRANSPORT")
    kt = KeyTransport.decode(bytes.fromhex(kt_hex)[8:])
    rsa, dhe, psk = METHODS[Kex.RSA], METHODS[Kex.DHE], METHODS[Kex.PSK]
    assert rsa.passive_secret(kt, keys.rsa, None) == bytes.fromhex(vec["inputs"]["premaster"])
    assert rsa.passive_secret(None, keys.rsa, None) is None  # nothing recorded to unwrap
    assert rsa.passive_secret(KeyTransport(b"\x00" * 256), keys.rsa, None) is None
    assert psk.passive_secret(None, None, PSK) == PSK  # the key is the secret
    assert dhe.passive_secret(kt, keys.rsa, PSK) is None  # forward secret: nothing opens it


@pytest.mark.parametrize("kex", [Kex.DHE, Kex.PSK])
def test_only_rsa_takes_a_key_transport(kex: Kex) -> None:
    with pytest.raises(LocalProtocolError) as refused:
        METHODS[kex].server_secret(
            KeyTransport(b"x"), ServerConfig(kex_methods=frozenset({kex})), bytes
        )
    assert refused.value.alert is AlertCode.INTERNAL_ERROR


def _handshake_frames(kex: Kex) -> tuple[list[bytes], list[bytes]]:
    """(client frames, server frames) of one in-memory handshake."""
    keys = lab_keys()
    client = ClientConnection(
        ClientConfig(kex=kex, trust=trust_all, psk_identity=PSK_IDENTITY, psk=PSK)
    )
    server = ServerConnection(
        ServerConfig(rsa_key=keys.rsa, sign_key=keys.ed25519, psk_lookup={PSK_IDENTITY: PSK}.get)
    )
    sent: dict[int, list[bytes]] = {id(client): [], id(server): []}
    client.start()
    for _ in range(4):
        pairs: tuple[tuple[Connection, Connection], ...] = ((client, server), (server, client))
        for src, dst in pairs:
            data = src.data_to_send()
            if data:
                decoder = FrameDecoder()
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    sent[id(src)].append(frame.encode())
                dst.receive_data(data)
                while dst.next_event() is not None:
                    pass
    return sent[id(client)], sent[id(server)]


def _observe(client: list[bytes], server: list[bytes]) -> ObservedHandshake:
    frames = []
    for raw in (*client, *server):
        decoder = FrameDecoder()
        decoder.feed(raw)
        frame = decoder.next_frame()
        assert frame is not None
        frames.append(frame)
    hs = ObservedHandshake(frames[0])
    for frame in frames[1 : len(client)]:
        hs.add("client", frame)
    for frame in frames[len(client) :]:
        hs.add("server", frame)
    return hs


def test_an_observer_checks_a_psk_against_the_servers_finished() -> None:
    client, server = _handshake_frames(Kex.PSK)
    hs = _observe(client, server)
    assert hs.complete
    assert hs.secrets(PSK) is not None
    assert hs.secrets(bytes(32)) is None  # a wrong guess is told apart offline
    # Without the server's FINISHED in the capture, nothing can be checked: as derived.
    hs.server_finished = None
    assert hs.secrets(bytes(32)) is not None


def test_an_observer_of_a_strange_hello_agrees_no_keys() -> None:
    client, _ = _handshake_frames(Kex.DHE)
    hs = _observe(client[:1], [])
    assert hs.method is METHODS[Kex.DHE]
    assert hs.sh is None and not hs.complete
    assert hs.secrets(PSK) is None  # no SERVER_HELLO: nothing was agreed


def test_dissection_of_a_frame_cut_inside_its_header() -> None:
    d = dissect_frame(b"KX\x01")
    assert d.frame_type is None and d.length is None
    assert d.payload_end == 3  # no declared length: the frame's own end
    assert [s.name for s in d.log.spans] == ["magic", "ver"]
    assert d.log.shortfall is not None and d.log.shortfall.name == "type"


def test_a_client_has_no_random_before_start() -> None:
    client = ClientConnection(ClientConfig(trust=trust_all))
    assert client.client_random == b""
    client.start()
    assert len(client.client_random) == 32
    server = ServerConnection(ServerConfig(rsa_key=lab_keys().rsa))
    assert server.client_hello is None
    server.receive_data(client.data_to_send())
    assert server.next_event() is None
    assert server.client_hello is not None
    assert server.client_hello.random == client.client_random
