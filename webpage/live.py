"""The page of a live session, from its own connection's events (``kexlab client|server --html``).

``LiveSession.on_event`` takes the events of one connection in order (``FrameTraced`` needs
the connection's ``trace``); each frame is annotated at once by the ``--explain``
annotator, so only what the page shows is kept.
"""

from __future__ import annotations

from explain.annotator import Annotator
from explain.secrets import epoch_keys
from protocol.constants import (
    GROUP_NAMES,
    KEX_NAMES,
    SUITE_NAMES,
    CipherSuite,
    FrameType,
    Group,
    Kex,
)
from protocol.dissect import dissect_frame
from protocol.events import ConnectionClosed, Event, FrameTraced, HandshakeComplete
from protocol.keyschedule import TrafficKeys
from protocol.messages import ClientHello, ServerHello
from protocol.methods import METHODS

from .claims import claims
from .model import Leg, Party, Story
from .schedule import Known, ScheduleBuilder, Transcript
from .steps import StepLog, frame_type_of, make_step

MAX_HANDSHAKE_FRAMES = 8
"""A handshake has at most 5 frames; the transcript kept for the page never grows past this."""


def _names(ch: ClientHello) -> str:
    """kex/group/suite of a CLIENT_HELLO in the programs' names (codes §2 does not define too)."""
    parts = []
    for table, enum_type, value in (
        (KEX_NAMES, Kex, ch.kex),
        (GROUP_NAMES, Group, ch.group),
        (SUITE_NAMES, CipherSuite, ch.cipher_suite),
    ):
        try:
            parts.append(table[enum_type(value)])  # type: ignore[index]
        except (ValueError, KeyError):
            parts.append(f"unknown ({value})")
    return "/".join(p for p in parts if p != GROUP_NAMES[Group.NONE])


class LiveSession:
    """Collects one connection's frames and handshake as a page (``story``)."""

    def __init__(
        self,
        role: str,
        *,
        peer: str,
        show_secrets: bool,
        seed: str | None = None,
        source: str = "",
    ) -> None:
        self.role = role
        self.peer = peer
        self.show_secrets = show_secrets
        self.seed = seed
        self.source = source
        self.annotator = Annotator(role, show_secrets=show_secrets)
        self.log = StepLog()
        self.transcript: list[tuple[FrameType, bytes, str]] = []
        self.hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.complete: HandshakeComplete | None = None
        self.closed: ConnectionClosed | None = None
        self.ending = ""
        self.epochs = {"client": 0, "server": 0}
        self._keys: dict[tuple[str, int], TrafficKeys] = {}

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        """Feed every event of the connection, in order."""
        if isinstance(event, FrameTraced):
            self._frame(event)
        elif isinstance(event, HandshakeComplete):
            self.complete = event
            self.annotator.handshake_complete(event)
        elif isinstance(event, ConnectionClosed):
            self.closed = event

    def finish(self, ending: str) -> None:
        """How the program saw the connection end (an error line), if the events do not say."""
        self.ending = ending

    def _sides(self, event: FrameTraced) -> tuple[str, str]:
        client_sends = (self.role == "client") == (event.direction == "sent")
        return ("client", "server") if client_sends else ("server", "client")

    def _frame(self, event: FrameTraced) -> None:
        sender, receiver = self._sides(event)
        rows = self.annotator.rows(event)
        number = self.log.count + 1
        keys = self._sender_keys(sender, event.epoch)
        # A plaintext ALERT holds nothing random; every other frame follows from the seed.
        seeded = self.seed is not None and frame_type_of(rows) is not FrameType.ALERT
        step = make_step(
            number,
            event,
            rows,
            sender,
            receiver,
            keys=keys,
            seeded=seeded,
        )
        if step.frame_type in FrameType.__members__ and step.kind == "handshake":
            self._handshake_frame(FrameType[step.frame_type], event.frame, sender)
        if step.record is not None and step.record.epoch is not None:
            bump = 1 if step.kind == "key_update" else 0
            self.epochs[sender] = max(self.epochs[sender], step.record.epoch + bump)
        self.log.add(step)

    def _handshake_frame(self, ft: FrameType, frame: bytes, sender: str) -> None:
        if len(self.transcript) >= MAX_HANDSHAKE_FRAMES:
            return
        self.transcript.append((ft, frame, sender))
        message = dissect_frame(frame).message
        if isinstance(message, ClientHello) and self.hello is None:
            self.hello = message
        elif isinstance(message, ServerHello) and self.server_hello is None:
            self.server_hello = message

    def _sender_keys(self, sender: str, epoch: int | None) -> TrafficKeys | None:
        """The sender's key and iv for ``epoch``: only for a page made with secrets."""
        if not self.show_secrets or self.complete is None or epoch is None:
            return None
        keys = self._keys.get((sender, epoch))
        if keys is None:
            s = self.complete.secrets
            secret = s.c_ap_0 if sender == "client" else s.s_ap_0
            keys = self._keys[(sender, epoch)] = epoch_keys(
                self.complete.cipher_suite, secret, epoch
            )
        return keys

    # ------------------------------------------------------------------ the page

    def story(self) -> Story:
        """The page as it stands."""
        me = "client" if self.role == "client" else "server"
        if me == "client":
            parties = [Party("client", "client (this program)"), Party("server", self.peer)]
        else:
            parties = [Party("client", self.peer), Party("server", "server (this program)")]
        leg = self._leg()
        what = self.complete.summary if self.complete is not None else "handshake"
        story = Story(
            title=f"kexlab {what} session, as the {me} saw it",
            source=self.source or f"live, recorded by the {me}",
            parties=parties,
            legs=[leg],
            steps=self.log.steps(),
            with_secrets=self.show_secrets,
            seed=self.seed,
            frames=self.log.count,
        )
        if self.seed is not None:
            story.notes.append(
                f"The {me} drew every random value from the seed {self.seed!r}"
                " (--deterministic, --insecure): anyone who knows it can decrypt this session."
            )
        return story

    def _leg(self) -> Leg:
        leg = Leg(1, "client", "server")
        hc, ch, sh = self.complete, self.hello, self.server_hello
        if ch is not None:
            leg.facts.append(("client proposed", _names(ch)))
            leg.facts.append(("client_random", ch.random.hex()))
        if sh is not None:
            leg.facts.append(("server_random", sh.random.hex()))
        if hc is not None:
            leg.facts.append(("agreed", hc.summary))
            if hc.server_key_sha256:
                leg.facts.append(("server key SHA-256", hc.server_key_sha256))
            if hc.psk_identity:
                leg.facts.append(("PSK identity", hc.psk_identity))
            method = METHODS[hc.kex]
            group = GROUP_NAMES.get(hc.group, "")
            leg.claims = claims(method, bool(hc.server_key), group)
            leg.sas = hc.sas_display
            other = "server" if self.role == "client" else "client"
            leg.sas_from = (
                f"the {self.role} displayed it; the {other} displays its own: read them to each"
                " other"
            )
            leg.opened = True
            known = Known(hc.secrets, sas=hc.sas)
            builder = ScheduleBuilder(
                hc.cipher_suite,
                method,
                Transcript(self.transcript),
                known,
                show=self.show_secrets,
                seeded=self.seed is not None,
                group=group,
                psk_identity=hc.psk_identity,
            )
            leg.schedule = builder.build(self.epochs)
            if not self.show_secrets:
                leg.schedule_note = (
                    "Secret values are hidden: make the page with --show-secrets to see them."
                )
        else:
            leg.sas_from = "no SAS: the handshake did not complete"
            leg.sealed_reason = "The handshake did not complete: no keys were agreed."
        leg.outcome = self._outcome()
        return leg

    def _outcome(self) -> str:
        alerts = [s for s in self.log.whole() if s.kind == "alert"]
        if alerts:
            first = alerts[0]
            return f"ended by the {first.sender}'s alert: {first.note}"
        if self.closed is not None and self.closed.clean:
            return "closed cleanly: both sides sent close_notify"
        if self.ending:
            return self.ending
        if self.closed is not None and self.closed.reason:
            return self.closed.reason
        return "the program stopped before the connection closed"
