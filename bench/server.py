"""``python -m bench.server --impl kexlab|tls|tcp --dir D``: the bench's server process.

Prints one JSON line ``{"ports": {...}}`` once it listens, then serves until its
stdin closes (the orchestrator going away ends it too).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from protocol import ServerConfig, ServerConnection
from transport import start_server

from . import kxp, tls
from .keys import load_psk, load_server_key
from .procs import LOOPS, raise_fd_limit, run, stdin_lines
from .scenarios import CROWD_CLIENTS, HOST, IDLE_CONNECTIONS, PAIRINGS, PSK_IDENTITY

BACKLOG = 1024


def kexlab_config(directory: Path) -> ServerConfig:
    """Every kex, suite and group; RSA-2048 transport key, Ed25519 identity key, one PSK."""
    psk = load_psk(directory)
    rsa_key = load_server_key(directory, "rsa")
    assert isinstance(rsa_key, rsa.RSAPrivateKey)
    return ServerConfig(
        rsa_key=rsa_key,
        sign_key=load_server_key(directory, "ed25519"),
        psk_lookup=lambda identity: psk if identity == PSK_IDENTITY else None,
    )


async def _listen(impl: str, directory: Path) -> tuple[list[asyncio.Server], dict[str, int]]:
    servers: list[asyncio.Server] = []
    ports: dict[str, int] = {}

    async def add(name: str, server: asyncio.Server) -> None:
        servers.append(server)
        ports[name] = server.sockets[0].getsockname()[1]

    if impl == "kexlab":
        config = kexlab_config(directory)
        make = functools.partial(ServerConnection, config)
        await add("kexlab", await start_server(kxp.serve, HOST, 0, make, backlog=BACKLOG))
    elif impl == "tcp":
        await add("tcp", await asyncio.start_server(tls.serve, HOST, 0, backlog=BACKLOG))
    else:
        for pairing in PAIRINGS:
            if pairing.tls_key is None or pairing.tls_group is None:
                continue
            ctx = tls.server_context(directory, pairing.tls_key, pairing.tls_group)
            server = await asyncio.start_server(tls.serve, HOST, 0, ssl=ctx, backlog=BACKLOG)
            await add(pairing.name, server)
    return servers, ports


async def serve(impl: str, directory: Path) -> None:
    """Listen, announce the ports, serve until stdin closes."""
    servers, ports = await _listen(impl, directory)
    print(json.dumps({"ports": ports}), flush=True)
    stdin = await stdin_lines()
    await stdin.read()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the server process."""
    parser = argparse.ArgumentParser(prog="python -m bench.server")
    parser.add_argument("--impl", choices=("kexlab", "tls", "tcp"), required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    args = parser.parse_args(argv)
    raise_fd_limit(max(IDLE_CONNECTIONS, CROWD_CLIENTS) * 2 + 256)
    try:
        run(serve(args.impl, args.dir), args.loop)
    except KeyboardInterrupt:  # pragma: no cover - interactive use
        sys.exit(130)


if __name__ == "__main__":
    main()
