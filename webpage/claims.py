"""What a session's method proves and what it does not, one sentence each (asked of ``METHODS``)."""

from __future__ import annotations

from protocol.methods import KexMethod

from .model import Claim


def claims(method: KexMethod, server_key: bool, group: str = "") -> list[Claim]:
    """Forward secrecy, who is authenticated, the SAS and the records, for one session."""
    out = [_forward_secrecy(method, group), _authentication(method, server_key)]
    out.append(
        Claim(
            "The SAS",
            "partly",
            "Both sides derive it from the master secret and every handshake byte: if the two"
            " people read the same SAS to each other, nobody ran a different handshake with each"
            " of them; it proves nothing unless it is compared over a channel the attacker"
            " cannot change.",
        )
    )
    out.append(
        Claim(
            "The records",
            "yes",
            "AES-GCM: each tag covers the header, the sequence number and the ciphertext, so a"
            " record that is changed, replayed, dropped or reordered is refused, never read.",
        )
    )
    return out


def _forward_secrecy(method: KexMethod, group: str) -> Claim:
    if method.forward_secret:
        return Claim(
            "Forward secrecy",
            "yes",
            f"The key came from ephemeral {group or 'DH'} shares whose private halves were"
            " thrown away after the handshake: no key that leaks later opens this recording;"
            " only a key log written during the session does.",
        )
    if method.needs_psk:
        return Claim(
            "Forward secrecy",
            "no",
            "Whoever learns the PSK, today or years from now, opens every recorded session"
            " that used it.",
        )
    return Claim(
        "Forward secrecy",
        "no",
        "The premaster travelled wrapped to the server's RSA key: whoever obtains that"
        " private key, even years later, decrypts it from a recording and reads every record.",
    )


def _authentication(method: KexMethod, server_key: bool) -> Claim:
    if method.needs_psk:
        return Claim(
            "Who is authenticated",
            "partly",
            "Both sides, as holders of the PSK (each FINISHED proves it): but so is anyone"
            " else who holds it, such as whoever read it on its way out of band.",
        )
    if not server_key:
        return Claim(
            "Who is authenticated",
            "no",
            "Nobody: the server sent no key (anonymous dhe), so a man in the middle can run"
            " one handshake with each side; only a SAS compared out of band can tell.",
        )
    how = (
        "only the holder of its RSA private key could unwrap the premaster and so compute"
        " the server's FINISHED"
        if method.server_key_role == "transport"
        else "with its identity key it signed TH(CH, SH): both hellos, its key_share included"
    )
    return Claim(
        "Who is authenticated",
        "partly",
        f"The server, if the client had reason to trust its key: {how}. The client is not"
        " authenticated at all.",
    )
