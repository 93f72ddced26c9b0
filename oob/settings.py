"""Where the broker is and how to log in to it, and one way to connect that fails cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from protocol import KexlabError

from .internals import bound_connect, drop_sockets, settle_disconnect

DEFAULT_URL = "mqtt://localhost:1883"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# Issue 4: with the broker down, psk over MQTT fails within 5 s with one clear line.
CONNECT_TIMEOUT = 5.0
ENV_USERNAME = "KEXLAB_MQTT_USERNAME"
ENV_PASSWORD_FILE = "KEXLAB_MQTT_PASSWORD_FILE"
ENV_CA = "KEXLAB_MQTT_CA"


class OobError(KexlabError):
    """Root of every out-of-band failure; ``str()`` is one line a user can act on."""


class BrokerUnavailable(OobError):
    """The broker could not be reached, refused the login, or dropped us."""


class OobTimeout(OobError):
    """The broker worked but what we waited for did not arrive in time."""


@dataclass(frozen=True)
class MqttSettings:
    """A broker address (``mqtt://`` or ``mqtts://``) and optional credentials and CA."""

    host: str = "localhost"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password_file: Path | None = None
    """The password is read from a file so that it never shows in ``ps`` or shell history."""
    ca_file: Path | None = None
    """PEM CA bundle that signs the broker's certificate (mqtts only); default: system CAs."""

    @classmethod
    def from_url(
        cls,
        url: str = DEFAULT_URL,
        *,
        username: str | None = None,
        password_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> MqttSettings:
        """Parse ``mqtt[s]://HOST[:PORT]``; unset options fall back to the KEXLAB_MQTT_* variables."""
        env = os.environ if env is None else env
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise OobError(f"{url!r}: the broker URL must start with mqtt:// or mqtts://")
        if parts.username is not None or parts.password is not None:
            raise OobError(
                f"{url!r}: put no credentials in the URL; use --mqtt-username and "
                "--mqtt-password-file (a password in a URL ends up in shell history)"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise OobError(f"{url!r}: a broker URL is mqtt://HOST:PORT, nothing after it")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            raise OobError(f"{url!r}: bad port") from None
        if not parts.hostname:
            raise OobError(f"{url!r}: no host")
        username = username or env.get(ENV_USERNAME) or None
        password_file = password_file or env.get(ENV_PASSWORD_FILE) or None
        ca_file = ca_file or env.get(ENV_CA) or None
        if password_file is not None and username is None:
            raise OobError("a password file needs a username (--mqtt-username)")
        if ca_file is not None and scheme != "mqtts":
            raise OobError("a CA file is for TLS: use an mqtts:// URL with --mqtt-ca")
        return cls(
            host=parts.hostname,
            port=port,
            tls=scheme == "mqtts",
            username=username,
            password_file=Path(password_file) if password_file is not None else None,
            ca_file=Path(ca_file) if ca_file is not None else None,
        )

    @property
    def url(self) -> str:
        """The broker URL, without credentials (safe to print)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def describe(self) -> str:
        """The URL and the user we log in as, for messages."""
        return f"{self.url} as {self.username!r}" if self.username else self.url

    def password(self) -> str | None:
        """The first line of the password file (None without one)."""
        if self.password_file is None:
            return None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise OobError(f"cannot read the MQTT password file: {exc}") from None
        return text.splitlines()[0] if text else ""

    def tls_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context for mqtts (None for mqtt)."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise OobError(f"cannot load the MQTT CA file {self.ca_file}: {exc}") from None
        context.sslsocket_class = _ClosingSSLSocket
        return context


class _ClosingSSLSocket(ssl.SSLSocket):
    """paho drops the socket without closing it when the TLS handshake fails (bad CA)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _new_client(settings: MqttSettings, timeout: float) -> aiomqtt.Client:
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password(),
        tls_context=settings.tls_context(),
        timeout=timeout,
        keepalive=15,
    )
    bound_connect(client, max(0.1, timeout * 0.8))  # below our own deadline
    return client


def broker_error(settings: MqttSettings, exc: BaseException) -> BrokerUnavailable:
    """One line for a failed connection: where, as whom, what went wrong and what to do."""
    detail = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__  # aiomqtt keeps the socket's error there
    if isinstance(exc, TimeoutError):
        detail = "did not answer"
    elif isinstance(exc, MqttConnectError):
        detail = f"login refused ({detail})"
    elif isinstance(cause, ssl.SSLCertVerificationError):
        detail = _certificate_refused(settings, cause)
    elif isinstance(cause, OSError) and cause.errno in _SOCKET_HINTS:
        detail = f"{os.strerror(cause.errno).lower()}: {_SOCKET_HINTS[cause.errno](settings)}"
    return BrokerUnavailable(f"MQTT broker {settings.describe()} unavailable: {detail}")


_SOCKET_HINTS = {
    errno.ECONNREFUSED: lambda s: (
        "is the broker running? kexlab broker, or mosquitto -c"
        " oob/mosquitto/open.conf"
        + (f"; its TLS listener is usually on {DEFAULT_PORTS['mqtts']}" if s.tls else "")
    ),
    errno.ECONNRESET: lambda s: (
        f"is port {s.port} a TLS listener? mqtts:// needs one,"
        f" {DEFAULT_PORTS['mqtts']} in the lab; mqtt:// needs a plain one"
        if s.tls
        else "the broker hung up"
    ),
}


def _certificate_refused(settings: MqttSettings, exc: ssl.SSLCertVerificationError) -> str:
    """Why the broker's certificate was not accepted, and the option that fixes it."""
    why = f"CERTIFICATE_VERIFY_FAILED: {exc.verify_message or exc}"
    if exc.verify_code in (_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH):
        return (
            f"the broker's TLS certificate is not for {settings.host!r} ({why}): connect with"
            " a name the certificate holds (make-lab-broker.sh's: localhost, 127.0.0.1, ::1)"
        )
    if settings.ca_file is None:
        return (
            f"the broker's TLS certificate is not signed by a CA this machine trusts ({why}):"
            " give the CA that signed it with --mqtt-ca FILE (or KEXLAB_MQTT_CA)"
        )
    return (
        f"the broker's TLS certificate is not signed by the CA in {settings.ca_file} ({why}):"
        " is it the CA that signed this broker's certificate?"
    )


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_X509_HOSTNAME_MISMATCH, _X509_IP_MISMATCH = 62, 64


@contextlib.asynccontextmanager
async def connect(
    settings: MqttSettings, timeout: float = CONNECT_TIMEOUT
) -> AsyncIterator[aiomqtt.Client]:
    """A connected client; connecting fails with ``BrokerUnavailable`` within ``timeout``."""
    client = _new_client(settings, timeout)
    try:
        async with asyncio.timeout(timeout):
            await client.__aenter__()
    except (aiomqtt.MqttError, TimeoutError) as exc:
        drop_sockets(client)
        raise broker_error(settings, exc) from None
    except BaseException:
        drop_sockets(client)
        raise
    try:
        yield client
    except aiomqtt.MqttError as exc:
        # The connection broke mid-use: aiomqtt already knows, __aexit__ only tidies up.
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
        raise broker_error(settings, exc) from None
    except BaseException as exc:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    else:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)
    finally:
        settle_disconnect(client)


CANCEL_AGAIN = 0.1
"""Seconds a cancelled task gets to end before it is cancelled once more."""


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again while it goes on.

    aiomqtt awaits every acknowledgement (CONNACK, SUBACK, PUBACK) through
    ``asyncio.wait_for``, which on Python 3.11 swallows a cancellation that arrives in the
    same loop step as the result (CPython gh-86296, fixed in 3.12): one ``cancel()`` can
    be lost and a ``while True`` of publishes go on for ever. Raises what the task raised,
    other than its cancellation.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN)
    if not task.cancelled():
        task.result()


def message_bytes(message: aiomqtt.Message) -> bytes:
    """A received message's payload as bytes (aiomqtt also types it str, int, float or None;
    what the broker hands us is bytes, and anything else reads as empty)."""
    return message.payload if isinstance(message.payload, bytes) else b""
