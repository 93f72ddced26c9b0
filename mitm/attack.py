"""One intercepted connection: a server leg facing the client, a client leg facing the server.

The attacker is not a second implementation of KXP: it runs the core's own
``ServerConnection`` towards the victim client and ``ClientConnection`` towards the real
server, back to back over the transport pump, each with keys of its own. It is honest on
each leg; what it gets depends only on what each victim accepts:

- rsa and dhe: it shows its own RSA key, or signs its own share with its own identity
  key (or answers anonymously). A client that accepts that key (``--trust none``, or
  tofu on first contact) has agreed a session key with the attacker, who agrees another
  with the server: it reads and may change every record. A pinned or known key refuses it.
- psk: it needs the key. Sniffed from an open MQTT broker (``--oob``), it wins; without
  it, it answers with a guess and the client's FINISHED check refuses (decrypt_error).

The upstream CLIENT_HELLO reuses the client's random, so both legs carry the same
client_random: on the out-of-band channel they look like one session, and a SAS
comparison over an honest broker sees the two different SAS values meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from capture.pcap import PcapWriter
from capture.tap import PcapTap, tap_connection
from explain.console import describe_error
from explain.words import preview
from protocol import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    KEX_NAMES,
    METHODS,
    AlertCode,
    ClientConfig,
    ClientConnection,
    HandshakeComplete,
    Kex,
    KexlabError,
    PeerAlert,
    ServerConfig,
    ServerConnection,
    ServerIdentity,
    TrustVerdict,
)
from protocol.kex import ServerPrivateKey, available_groups
from transport import ConnectionLost, KxpStream
from transport.address import host_port

CLOSE_WAIT = 2.0
"""Seconds the other leg has to answer our close_notify once one end has closed."""
Report = Callable[[str], None]
"""Where the attacker's lines go (one per event, already readable)."""
PskSource = Callable[[str], Awaitable[bytes | None]]
"""identity -> the key sniffed for it (waiting a bounded time), or None."""
SasForger = Callable[[bytes, str, bytes], Awaitable[str]]
"""(client_random, the side to deceive, the SAS of its leg) -> a line saying what was done."""


@dataclass
class MitmOptions:
    """What the attacker holds and does."""

    upstream: tuple[str, int]
    rsa_key: rsa.RSAPrivateKey | None
    """Shown to rsa clients as the server's transport key (None: relaying, no keys)."""
    sign_key: ServerPrivateKey | None
    """Signs dhe shares; None answers dhe anonymously (only ``--trust none`` accepts that)."""
    rewrites: list[tuple[bytes, bytes]] = field(default_factory=list)
    """Each record's OLD bytes replaced by NEW, in both directions (``--rewrite``)."""
    psk_source: PskSource | None = None
    """PSKs sniffed on the out-of-band channel (``--oob``)."""
    forge_sas: SasForger | None = None
    """Publish each leg's SAS as if the other end had sent it (``--forge-sas``)."""
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    pcap: PcapWriter | None = None
    """Both legs of every connection go into this capture (``--pcap``); the caller closes it."""


@dataclass
class Verdict:
    """How one interception ended."""

    won: bool
    line: str
    """``WON: read 4 records, rewrote 1`` or ``FAILED: ...``."""
    kex: str = "?"
    client_sas: str = ""
    server_sas: str = ""
    records: int = 0
    rewritten: int = 0


def _trust_anything(identity: ServerIdentity) -> TrustVerdict:
    """The attacker takes whatever key the real server shows: it only wants the session."""
    return TrustVerdict(True)


class _Replay:
    """An rng whose first draw is the client's random: the upstream hello reuses it."""

    def __init__(self, first: bytes) -> None:
        self._first: bytes | None = first

    def __call__(self, n: int) -> bytes:
        first, self._first = self._first, None
        if first is not None and len(first) == n:
            return first
        return secrets.token_bytes(n)


class Interception:
    """Intercept one accepted client connection."""

    def __init__(self, number: int, client_leg: KxpStream, options: MitmOptions, report: Report):
        self.number = number
        self.client_leg = client_leg
        self.options = options
        self.report = report
        self.server_leg: KxpStream | None = None
        self.psk_used: dict[str, bytes] = {}
        self.guessed = False
        self.records = 0
        self.rewritten = 0
        self.taps: list[PcapTap | None] = []

    def say(self, text: str) -> None:
        """One line about this connection."""
        self.report(f"[{self.number}] {text}")

    # ------------------------------------------------------------------ legs

    @staticmethod
    def server_config(options: MitmOptions) -> ServerConfig:
        """What the attacker serves on the client leg: every method, its own keys.

        It holds no PSK up front: each identity is asked of ``psk_for`` (a PskNeeded).
        """
        assert options.rsa_key is not None, "intercepting needs keys of our own"
        return ServerConfig(
            groups=tuple(available_groups()), rsa_key=options.rsa_key, sign_key=options.sign_key
        )

    async def psk_for(self, identity: str) -> bytes | None:
        """The key for the client's PSK identity: sniffed, or a guess that will fail."""
        key = None
        if self.options.psk_source is not None:
            key = await self.options.psk_source(identity)
        if key is None:
            self.guessed = True
            key = secrets.token_bytes(32)
            self.say(
                f"no PSK for identity {identity!r}: answering with a guess"
                " (the client will refuse our FINISHED)"
            )
        else:
            self.say(f"PSK for identity {identity!r} sniffed on the broker: {key.hex()}")
        self.psk_used[identity] = key
        return key

    async def run(self) -> Verdict:
        """Both handshakes, then relay records until either end closes."""
        try:
            client_hc = await self.client_leg.do_handshake(self.options.timeout)
        except KexlabError as exc:
            return self._refused_by_client(exc)
        kex = KEX_NAMES[client_hc.kex]
        self.say(
            f"client leg: {client_hc.summary}: the client accepted our"
            f" {self._what_we_showed(client_hc)}"
        )
        if self.options.forge_sas is not None:
            self.say(await self.options.forge_sas(client_hc.client_random, "client", client_hc.sas))
        try:
            server_hc = await self._open_server_leg(client_hc)
        except KexlabError as exc:
            reason = f"upstream {self._upstream}: {describe_error(exc, 'server')}"
            self.client_leg.abort(AlertCode.INTERNAL_ERROR, "upstream unavailable")
            self.say(f"server leg failed: {reason}")
            return Verdict(False, f"FAILED: {reason}", kex, client_hc.sas_display)
        if self.options.forge_sas is not None:
            self.say(await self.options.forge_sas(server_hc.client_random, "server", server_hc.sas))
        who = (
            f"server key {server_hc.server_key_sha256[:16]}…"
            if server_hc.server_key_sha256
            else f"psk identity {server_hc.psk_identity}"
        )
        self.say(f"server leg: {server_hc.summary}, {who}")
        self.say(
            f"SAS the client sees {client_hc.sas_display} | SAS the server sees"
            f" {server_hc.sas_display}: they differ, read them aloud to catch us"
        )
        ended, clean = await self._relay()
        if not clean and self.records == 0:
            # Both keys were ours, but an end refused to go on before a record crossed
            # (a SAS compared over an honest channel): caught.
            line = f"FAILED: caught before a record crossed ({ended})"
            return Verdict(False, line, kex, client_hc.sas_display, server_hc.sas_display)
        line = f"WON: read {self.records} records, rewrote {self.rewritten} ({ended})"
        return Verdict(
            True,
            line,
            kex,
            client_hc.sas_display,
            server_hc.sas_display,
            self.records,
            self.rewritten,
        )

    @property
    def _upstream(self) -> str:
        return host_port(*self.options.upstream)

    async def _open_server_leg(self, client_hc: HandshakeComplete) -> HandshakeComplete:
        """The same proposal as the client's, to the real server, with the same client_random."""
        identity = client_hc.psk_identity
        config = ClientConfig(
            kex=client_hc.kex,
            cipher_suite=client_hc.cipher_suite,
            group=client_hc.group,
            psk_identity=identity,
            psk=self.psk_used.get(identity, b""),
            trust=_trust_anything,
            allow_anonymous=True,
            rng=_Replay(client_hc.client_random),
        )
        host, port = self.options.upstream
        stream = await KxpStream.connect(
            host, port, ClientConnection(config), timeout=self.options.timeout
        )
        self.server_leg = stream
        self.taps.append(tap_connection(self.options.pcap, stream.extra, initiated_by_local=True))
        stream.on_bytes = self.taps[-1].on_bytes if self.taps[-1] is not None else None
        try:
            return await stream.do_handshake(self.options.timeout)
        except BaseException:
            await stream.wait_closed()
            raise

    def _what_we_showed(self, hc: HandshakeComplete) -> str:
        method = METHODS[hc.kex]
        if method.needs_psk:
            return "FINISHED (we hold the PSK)"
        if method.server_key_role == "transport":
            return "RSA key"
        return "identity key" if hc.server_key else "anonymous dhe answer (no key at all)"

    def _refused_by_client(self, exc: KexlabError) -> Verdict:
        """The client leg failed: which defence caught us."""
        conn = self.client_leg.conn
        assert isinstance(conn, ServerConnection)
        hello = conn.client_hello
        kex = "?"
        if hello is not None and hello.kex in METHODS:  # IntEnum keys compare as ints
            kex = METHODS[Kex(hello.kex)].name
        if isinstance(exc, PeerAlert):
            if exc.alert is AlertCode.BAD_CERTIFICATE:
                why = f"client refused our key ({exc.name})"
            elif exc.alert is AlertCode.DECRYPT_ERROR and self.guessed:
                why = f"client refused our FINISHED: we do not hold the PSK ({exc.name})"
            else:
                why = f"client sent alert {exc.alert_text}"
            detail = f": {exc.reason}" if exc.reason else ""
            self.say(f"client leg failed: {why}{detail}")
            return Verdict(False, f"FAILED: {why}", kex)
        reason = describe_error(exc, "client")
        self.say(f"client leg failed: {reason}")
        return Verdict(False, f"FAILED: {reason}", kex)

    # ------------------------------------------------------------------ records

    async def _relay(self) -> tuple[str, bool]:
        """Relay records both ways until both legs are closed: how it ended, and if cleanly.

        Each leg is read by one task only; when one end closes (or fails), the other leg
        is sent close_notify and its task ends when that end answers (or the wait runs out).
        """
        assert self.server_leg is not None
        pumps = [
            asyncio.create_task(self._pump(self.client_leg, self.server_leg, "client")),
            asyncio.create_task(self._pump(self.server_leg, self.client_leg, "server")),
        ]
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        ended = next(iter(done)).result()
        _, late = await asyncio.wait(pumps, timeout=CLOSE_WAIT)
        for task in late:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        return ended

    async def _pump(self, src: KxpStream, dst: KxpStream, who: str) -> tuple[str, bool]:
        """Read ``who``'s records from ``src``, show them, change them, send them on ``dst``."""
        arrow = "client → server" if who == "client" else "server → client"
        try:
            while (record := await src.recv()) is not None:
                self.records += 1
                changed = self._rewrite(record)
                shown = f"{arrow} {preview(record, 120)}"
                if changed != record:
                    self.rewritten += 1
                    shown += f" rewritten to {preview(changed, 120)}"
                self.say(shown)
                if not dst.close_sent:
                    await dst.send(changed)
        except KexlabError as exc:
            dst.send_close()
            return f"{who} leg ended: {describe_error(exc, who)}", False
        dst.send_close()
        return f"the {who} closed (close_notify)", True

    def _rewrite(self, record: bytes) -> bytes:
        for old, new in self.options.rewrites:
            record = record.replace(old, new)
        return record


async def close_quietly(stream: KxpStream | None) -> None:
    """Close a leg whatever state it is in (an attacker cleans up after itself)."""
    if stream is None:
        return
    with contextlib.suppress(KexlabError, ConnectionLost, OSError):
        stream.send_close()
    await stream.wait_closed()
