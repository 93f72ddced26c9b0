"""Teaching mode: every random value a connection draws comes from a seed (INSECURE on purpose).

A connection draws its random, its DH private value, rsa's premaster and the server's
fallback premaster from the ``rng`` of its configuration (§5 "Freshness"). ``SeededRandom``
is such an ``rng`` whose bytes follow from a seed a person chose, so a class, a lesson
and an instructor's answer key get the same handshakes byte for byte. Anyone who knows
the seed knows every private value and can decrypt the session: the programs refuse it
without ``--insecure`` and flag what it touched.

Not from the seed, because OpenSSL draws it inside ``cryptography``: the RSA-OAEP padding
of KEY_TRANSPORT and the salt of RSA-PSS signatures. So rsa sessions (whose keys hash
KEY_TRANSPORT) and RSA signatures still differ from run to run; psk, and dhe signed with
Ed25519 or anonymous, repeat exactly.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_CONTEXT = b"kexlab/1 deterministic teaching mode"


class SeededRandom:
    """A ``RandomSource`` that is a ChaCha20 keystream keyed by (seed, role): one per program."""

    def __init__(self, seed: str, role: str) -> None:
        # The role keeps a client and a server started with the same seed from drawing the
        # same randoms and the same DH private values.
        h = hashes.Hash(hashes.SHA256())
        for part in (_CONTEXT, role.encode("utf-8"), seed.encode("utf-8")):
            h.update(len(part).to_bytes(2, "big") + part)
        self.seed = seed
        self.role = role
        self._stream = Cipher(algorithms.ChaCha20(h.finalize(), bytes(16)), mode=None).encryptor()

    def __call__(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        return self._stream.update(bytes(n))
