"""The one module that reaches inside third-party packages, each reach with its reason.

Checked against the versions pyproject.toml pins: aiomqtt 2.5 (over paho-mqtt 2.x) and
amqtt 0.12. Each function names the attribute it touches; when an upgrade moves one, this
file and its tests (tests/test_oob_*.py) are where it shows.
"""

from __future__ import annotations

from typing import Any

import aiomqtt


def bound_connect(client: aiomqtt.Client, seconds: float) -> None:
    """Bound paho's blocking connect (``Client._client.connect_timeout``).

    paho's connect runs in an executor thread that asyncio cannot cancel: bounded below
    our own deadline, it never opens a socket after we have given up.
    """
    client._client.connect_timeout = seconds


def drop_sockets(client: aiomqtt.Client) -> None:
    """Close paho's sockets (``Client._client._reset_sockets``) of a connect that failed.

    aiomqtt leaves the socket, its reader callback and its housekeeping task behind when
    CONNACK never comes (timeout or cancellation); this removes all three at once,
    without waiting on a broker that is not answering.
    """
    paho = client._client
    if paho.socket() is not None:
        paho._reset_sockets()


def settle_disconnect(client: aiomqtt.Client) -> None:
    """Read the exception aiomqtt's disconnect future holds (``Client._disconnected``).

    A connection that dropped while nobody was reading leaves it there; asyncio would
    log it at garbage collection as never retrieved.
    """
    done = client._disconnected
    if done.done() and not done.cancelled():
        done.exception()


def abort_broker_clients(broker: Any) -> None:
    """Abort every client connection of an amqtt broker (``Broker._sessions``).

    amqtt's shutdown cancels each client's reader task and waits for it; on Python 3.11
    asyncio.wait_for can swallow that cancel when a packet arrives at the same moment,
    and shutdown then hangs on an idle client. Aborting the connections first ends every
    reader by EOF instead (clients see the same dropped connection).
    """
    for _session, handler in list(broker._sessions.values()):
        stream = getattr(getattr(handler, "writer", None), "_writer", None)
        transport = getattr(stream, "transport", None)
        if transport is not None:
            transport.abort()


def broker_port(broker: Any) -> int:
    """The port an amqtt broker bound for port 0 (``Broker._servers``: amqtt keeps them private)."""
    server = broker._servers["default"].instance
    port: int = server.sockets[0].getsockname()[1]
    return port
