"""How kexlab writes an address: ``host:port``, an IPv6 address in brackets (``[::1]:9700``).

One spelling everywhere: logs, errors, pages, and the keys of the known_hosts file, which
must match what the client looks up.
"""

from __future__ import annotations


def host_port(host: str, port: int) -> str:
    """``host:port``; ``[host]:port`` when the host is an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
