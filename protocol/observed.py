"""A handshake as a passive observer sees it: both directions' frames, no secrets (§4, §5).

``ObservedHandshake`` takes the handshake frames of one session from a capture, decodes
them with the connections' own decoders, and knows from the method (``METHODS``) which
frames make TH_keys and which FINISHED comes first. Given a shared secret obtained some
other way (a leaked RSA key, a PSK: ``KexMethod.passive_secret``) it derives the session's
secrets exactly as the endpoints did and checks them against that FINISHED, so a wrong
key is reported as wrong rather than turning records into garbage.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.constant_time import bytes_eq

from .constants import SUITES, CipherSuite, FrameType, Kex
from .frames import Frame
from .keyschedule import HandshakeSecrets, KeySchedule, TranscriptHash
from .messages import ClientHello, Finished, KeyTransport, ServerHello, ServerSignature
from .methods import METHODS, KexMethod

_KEX = {int(k): k for k in Kex}
_SUITES = {int(s): s for s in CipherSuite}


class ObservedHandshake:
    """The handshake frames of one session, decoded; ``ProtocolError`` if one does not decode."""

    def __init__(self, client_hello: Frame) -> None:
        self.ch = ClientHello.decode(client_hello.payload)
        self._ch_frame = client_hello.encode()
        kex, suite = _KEX.get(self.ch.kex), _SUITES.get(self.ch.cipher_suite)
        self.method: KexMethod | None = METHODS[kex] if kex is not None else None
        """None for a kex code §2 does not define."""
        self.suite: CipherSuite | None = suite
        """None for a cipher suite §2 does not define (no keys can then be agreed)."""
        self.sh: ServerHello | None = None
        self.signature: ServerSignature | None = None
        self.kt: KeyTransport | None = None
        self.client_finished: bytes | None = None
        self.server_finished: bytes | None = None
        self._server_frames: list[bytes] = []  # SH, [SS]: the server's flight before FINISHED
        self._kt_frame = b""

    def add(self, sender: str, frame: Frame) -> None:
        """One more frame from ``sender`` ("client" or "server"); repeats and others are ignored."""
        hash_len = SUITES[self.suite].hash_len if self.suite is not None else None
        t = frame.type
        if sender == "server":
            if t is FrameType.SERVER_HELLO and self.sh is None:
                self.sh = ServerHello.decode(frame.payload)
                self._server_frames.append(frame.encode())
            elif t is FrameType.SERVER_SIGNATURE and self.signature is None:
                self.signature = ServerSignature.decode(frame.payload)
                self._server_frames.append(frame.encode())
            elif t is FrameType.FINISHED and self.server_finished is None:
                self.server_finished = Finished.decode(frame.payload, hash_len).verify_data
        elif t is FrameType.KEY_TRANSPORT and self.kt is None:
            self.kt = KeyTransport.decode(frame.payload)
            self._kt_frame = frame.encode()
        elif t is FrameType.FINISHED and self.client_finished is None:
            self.client_finished = Finished.decode(frame.payload, hash_len).verify_data

    @property
    def complete(self) -> bool:
        """SERVER_HELLO and both FINISHED frames are in."""
        return (
            self.sh is not None
            and self.client_finished is not None
            and self.server_finished is not None
        )

    def secrets(self, shared_secret: bytes) -> HandshakeSecrets | None:
        """The session's secrets from ``shared_secret``; None if the first FINISHED disagrees.

        Without that FINISHED in the capture the secrets cannot be checked and are returned
        as derived.
        """
        if self.method is None or self.suite is None or self.sh is None:
            return None
        schedule = KeySchedule(SUITES[self.suite])
        keys_frames = [self._ch_frame, self._server_frames[0]]  # TH(CH, SH) ...
        if self.kt is not None and self.method.client_finishes_first:
            keys_frames.append(self._kt_frame)  # ... and KEY_TRANSPORT for rsa (§5)
        secrets = schedule.derive(shared_secret, self._th(keys_frames))
        if self.method.client_finishes_first:
            # rsa: the client's FINISHED covers exactly TH_keys.
            first, key, covered = self.client_finished, secrets.c_finished, keys_frames
        else:
            # The server's FINISHED covers CH and its own flight: anyone who saw the handshake
            # can test a guessed PSK against it offline (§5).
            first, key = self.server_finished, secrets.s_finished
            covered = [self._ch_frame, *self._server_frames]
        if first is None:
            return secrets
        expected = schedule.verify_data(key, self._th(covered))
        return secrets if bytes_eq(expected, first) else None

    def _th(self, frames: list[bytes]) -> bytes:
        assert self.suite is not None
        th = TranscriptHash(SUITES[self.suite].hash())
        for frame in frames:
            th.update(frame)
        return th.digest()
