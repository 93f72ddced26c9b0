"""The ``--deterministic`` teaching mode at the terminal: a red line on each output the seed touched.

Each line also says DETERMINISTIC in words (stderr may not show colours), and comes just
before what it flags: the handshake summary, and with ``--explain`` every frame table.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from protocol import METHODS, Event, FrameTraced, HandshakeComplete
from protocol.constants import HEADER_LEN, FrameType
from protocol.dissect import dissect_frame

from .console import stderr_console

_SEEDED = {
    FrameType.CLIENT_HELLO: "random and key_share",
    FrameType.SERVER_HELLO: "random and key_share",
    FrameType.KEY_TRANSPORT: "premaster (inside encrypted_secret)",
    FrameType.SERVER_SIGNATURE: "signed content",
    FrameType.FINISHED: "verify_data",
    FrameType.RECORD: "ciphertext and tag (keys and nonce)",
}


class SeedFlags:
    """Red lines on stderr for the values a ``--deterministic`` seed produced."""

    def __init__(
        self,
        seed: str,
        role: str,
        *,
        frames: bool,
        label: str = "",
        console: Console | None = None,
    ) -> None:
        self.seed = seed
        self.role = role
        self.frames = frames
        self.label = label
        self.console = console or stderr_console()

    def line(self, text: str) -> None:
        """One flagged line."""
        self.console.print(
            Text(f"{self.label}DETERMINISTIC (seed {self.seed!r}, insecure): {text}", "bold red"),
            soft_wrap=True,
            highlight=False,
        )

    def start(self) -> None:
        """What the mode does, once, before anything is drawn from the seed."""
        self.line(
            f"every random value this {self.role} draws comes from the seed: anyone who knows"
            " it can decrypt the sessions. RSA-OAEP padding and RSA-PSS salts still come from"
            " OpenSSL, so rsa sessions and RSA signatures differ from run to run."
        )

    def on_event(self, event: Event) -> None:
        """Flag the output an event is about to produce."""
        if isinstance(event, FrameTraced) and self.frames:
            ft = dissect_frame(event.frame[:HEADER_LEN]).frame_type
            what = _SEEDED.get(ft) if ft is not None else None
            if what is not None:
                self.line(f"the {what} of the next frame follow from the seed")
        elif isinstance(event, HandshakeComplete):
            method = METHODS[event.kex]
            drawn = "randoms"
            if method.server_key_role == "transport":
                drawn = "randoms and premaster"
            elif method.uses_group:
                drawn = "randoms and DH private values"
            self.line(f"this handshake's {drawn}, so its keys and SAS, follow from the seed")
