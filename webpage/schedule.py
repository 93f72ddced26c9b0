"""The §5 key schedule of one session as the spec writes it, with the values a page may show.

Every derivation names what it derives, from which secret, with which HKDF label and
context; the contexts (transcript hashes) are public and always shown, the secrets only
on a page made with them. The values come from the core (``KeySchedule``, the session's
``HandshakeSecrets``, ``explain.secrets.epoch_keys``): this module only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from explain.secrets import epoch_keys
from protocol.constants import SUITES, CipherSuite, FrameType
from protocol.keyschedule import HandshakeSecrets, KeySchedule, TranscriptHash, hkdf_label
from protocol.methods import KexMethod

from .model import Derivation

_FRAME_SHORT = {
    FrameType.CLIENT_HELLO: "CH",
    FrameType.SERVER_HELLO: "SH",
    FrameType.KEY_TRANSPORT: "KT",
    FrameType.SERVER_SIGNATURE: "SS",
}


@dataclass
class Known:
    """The secrets a page could learn: all of §5, or only the traffic secrets of a key log."""

    handshake: HandshakeSecrets | None = None
    c_ap_0: bytes | None = None
    s_ap_0: bytes | None = None
    sas: bytes | None = None
    """The full SAS, when an endpoint computed it (a live page)."""

    def __post_init__(self) -> None:
        if self.handshake is not None:
            self.c_ap_0 = self.c_ap_0 or self.handshake.c_ap_0
            self.s_ap_0 = self.s_ap_0 or self.handshake.s_ap_0


@dataclass
class Transcript:
    """The handshake frames in wire order (docs/protocol.md §4) and the hashes §5 takes of them."""

    frames: list[tuple[FrameType, bytes, str]]
    """(type, whole frame, sender "client" or "server")."""

    def names(self, upto: int) -> str:
        """``CH, SH, KT`` for the first ``upto`` frames (a FINISHED as SF or CF)."""
        return ", ".join(
            _FRAME_SHORT.get(ft) or ("CF" if sender == "client" else "SF")
            for ft, _, sender in self.frames[:upto]
        )

    def th(self, suite: CipherSuite, upto: int) -> bytes:
        """TH of the first ``upto`` frames."""
        transcript = TranscriptHash(SUITES[suite].hash())
        for _, frame, _ in self.frames[:upto]:
            transcript.update(frame)
        return transcript.digest()

    def keys_upto(self, method: KexMethod) -> int:
        """How many frames TH_keys covers: CH, SH, and KT for a method whose client finishes first."""
        want = {FrameType.CLIENT_HELLO, FrameType.SERVER_HELLO}
        if method.client_finishes_first:
            want.add(FrameType.KEY_TRANSPORT)
        count = 0
        for ft, _, _ in self.frames:
            if ft not in want:
                break
            count += 1
        return count


def _source(method: KexMethod, group: str, psk_identity: str) -> str:
    if method.server_key_role == "transport":
        return (
            "the premaster: 32 random bytes the client drew and sent in KEY_TRANSPORT,"
            " wrapped with RSA-OAEP under the server's key"
        )
    if method.uses_group:
        return (
            f"the {group} Diffie-Hellman output: each side's private value with the other's"
            " key_share; it never crossed the wire"
        )
    return f"the PSK of identity {psk_identity!r}, handed over out of band"


class ScheduleBuilder:
    """The derivations of one session, top to bottom."""

    def __init__(
        self,
        suite: CipherSuite,
        method: KexMethod,
        transcript: Transcript,
        known: Known,
        *,
        show: bool,
        seeded: bool = False,
        group: str = "",
        psk_identity: str = "",
    ) -> None:
        self.suite = suite
        self.params = SUITES[suite]
        self.method = method
        self.transcript = transcript
        self.known = known
        self.show = show
        self.seeded = seeded
        self.group = group
        self.psk_identity = psk_identity
        self.out: list[Derivation] = []

    def why_hidden(self, value: bytes | None) -> str:
        """Why a value is not on the page."""
        if value is not None and not self.show:
            return "hidden: the page was made without secrets (--show-secrets)"
        if value is None and (self.known.c_ap_0 or self.known.s_ap_0):
            return "not known: a key log holds only the traffic secrets c_ap_0 and s_ap_0"
        return "" if value is not None else "not known: no key for this session"

    def add(self, name: str, formula: str, value: bytes | None, **kw: object) -> None:
        """One derivation; ``value`` is dropped unless the page shows secrets."""
        secret = bool(kw.pop("secret", True))
        shown = value if (self.show or not secret) else None
        self.out.append(
            Derivation(
                name,
                formula,
                value=shown,
                secret=secret,
                why_hidden="" if shown is not None else self.why_hidden(value),
                seeded=self.seeded,
                **kw,  # type: ignore[arg-type]
            )
        )

    @staticmethod
    def expand(label: str, context: str, ctx: bytes, length: int) -> dict[str, object]:
        """The label, context and HkdfLabel of an HKDF-Expand-Label derivation."""
        return {
            "label": label,
            "context": context or '"" (empty)',
            "context_value": ctx or None,
            "hkdf_label": hkdf_label(label.encode("ascii"), ctx, length),
        }

    def build(self, epochs: dict[str, int]) -> list[Derivation]:
        """shared secret → master → traffic and finished secrets → keys and ivs → SAS."""
        n, hs, known = self.params.hash_len, self.known.handshake, self.known
        self.add(
            "shared_secret",
            _source(self.method, self.group, self.psk_identity),
            hs.shared_secret if hs else None,
        )
        self.add(
            "master",
            f"HKDF-Extract(salt = {n} zero bytes, IKM = shared_secret)",
            hs.master if hs else None,
        )
        upto = self.transcript.keys_upto(self.method)
        th_keys = self.transcript.th(self.suite, upto) if upto >= 2 else None
        names = self.transcript.names(upto)
        self.add(
            "TH_keys",
            f"TH({names}): {self.params.hash().name.upper()} of those frames, header and payload",
            th_keys,
            secret=False,
        )
        for name, label, value in (
            ("c_ap_0", "c ap traffic", known.c_ap_0),
            ("s_ap_0", "s ap traffic", known.s_ap_0),
            ("c_finished", "c finished", hs.c_finished if hs else None),
            ("s_finished", "s finished", hs.s_finished if hs else None),
        ):
            self.add(
                name,
                f'HKDF-Expand-Label(master, "{label}", TH_keys, {n})',
                value,
                **self.expand(label, "TH_keys", th_keys or b"", n),
            )
        for side, secret_0 in (("c", known.c_ap_0), ("s", known.s_ap_0)):
            self._epochs(side, secret_0, epochs.get("client" if side == "c" else "server", 0))
        self._sas()
        return self.out

    def _epochs(self, side: str, secret_0: bytes | None, last: int) -> None:
        n, key_len = self.params.hash_len, self.params.key_len
        sender = "client" if side == "c" else "server"
        for epoch in range(last + 1):
            keys = epoch_keys(self.suite, secret_0, epoch) if secret_0 is not None else None
            name = f"{side}_ap_{epoch}"
            if epoch:
                self.add(
                    name,
                    f'HKDF-Expand-Label({side}_ap_{epoch - 1}, "traffic upd", "", {n}):'
                    f" after the {sender}'s key_update number {epoch}",
                    keys.secret if keys else None,
                    **self.expand("traffic upd", "", b"", n),
                )
            self.add(
                f"{name}.key",
                f'HKDF-Expand-Label({name}, "key", "", {key_len}): the AES-GCM key of'
                f" {sender} → peer records in epoch {epoch}",
                keys.key if keys else None,
                **self.expand("key", "", b"", key_len),
            )
            self.add(
                f"{name}.iv",
                f'HKDF-Expand-Label({name}, "iv", "", 12): nonce = iv XOR (0^4 || seq)',
                keys.iv if keys else None,
                **self.expand("iv", "", b"", 12),
            )

    def _sas(self) -> None:
        n = self.params.hash_len
        count = len(self.transcript.frames)
        th_all = self.transcript.th(self.suite, count) if count else None
        names = self.transcript.names(count)
        self.add("TH_all", f"TH({names}): every handshake frame", th_all, secret=False)
        sas = self.known.sas
        hs = self.known.handshake
        if sas is None and hs is not None and th_all is not None:
            sas = KeySchedule(self.params).sas(hs.master, th_all)
        self.add(
            "sas",
            f'HKDF-Expand-Label(master, "sas", TH_all, {n}): people read its first 8 bytes',
            sas,
            secret=False,
            **self.expand("sas", "TH_all", th_all or b"", n),
        )
