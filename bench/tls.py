"""The bench's TLS 1.3 and plain TCP peers: asyncio streams as a user would write them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from .keys import cert_path, key_path
from .scenarios import END_MARK, MODE_BULK, MODE_PING, READ_SIZE


def server_context(directory: Path, kind: str, group: str) -> ssl.SSLContext:
    """TLS 1.3 only, the self-signed certificate of ``kind``, key exchange pinned to ``group``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_path(directory, kind), key_path(directory, kind))
    ctx.set_ecdh_curve(group)
    return ctx


def client_context(directory: Path, kind: str, group: str) -> ssl.SSLContext:
    """TLS 1.3 only, trusting exactly the run's certificate of ``kind``, hostname checked."""
    ctx = ssl.create_default_context(cafile=str(cert_path(directory, kind)))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    # The same group on both sides: a mismatch would cost a HelloRetryRequest round trip.
    ctx.set_ecdh_curve(group)
    return ctx


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The bench server for one TLS or TCP connection: echo or count as the first byte says."""
    try:
        mode = await reader.read(1)
        if mode == MODE_PING:
            while data := await reader.read(READ_SIZE):
                writer.write(data)
        elif mode == MODE_BULK:
            count = 0
            while data := await reader.read(READ_SIZE):
                count += len(data)
                if data[-1] == END_MARK:
                    writer.write(count.to_bytes(8, "big"))
                    count = 0
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
