"""``kexlab keygen``: make a server key pair (PKCS#8 PEM, 0600, and FILE.pub) and show its fingerprint."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from keystore.keys import (
    RSA_BITS,
    KeyFileError,
    fingerprint,
    generate_private_key,
    long_fingerprint,
    write_private_key,
)


class KeyType(enum.StrEnum):
    """Key types ``--type`` accepts."""

    rsa = "rsa"
    ed25519 = "ed25519"


def _check_type(value: str) -> str:
    """A usage error (exit 2) for a key type other than rsa or ed25519 (any case)."""
    if value.lower() not in KeyType.__members__:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(KeyType)}")
    return value.lower()


def _check_bits(value: int | None) -> int | None:
    """A usage error (exit 2) for a size other than 2048, 3072 or 4096."""
    if value is not None and value not in RSA_BITS:
        raise typer.BadParameter(f"{value} is not one of 2048, 3072, 4096")
    return value


def keygen(
    *,
    type: Annotated[
        str,
        typer.Option(
            "--type",
            "-t",
            metavar="rsa|ed25519",
            callback=_check_type,
            help="rsa (for --rsa-key: transport and dhe signatures) or ed25519 (dhe signatures only).",
        ),
    ],
    bits: Annotated[
        int | None,
        typer.Option(
            "--bits",
            metavar="BITS",
            callback=_check_bits,
            show_default=False,
            help="RSA modulus size: 2048 (default), 3072 or 4096.",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            dir_okay=False,
            help="Private key file to write (PKCS#8 PEM, mode 0600); the public key goes to FILE.pub.",
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite FILE and FILE.pub if they exist.")
    ] = False,
) -> None:
    """Make a key pair and print its fingerprint. The fingerprint is the SHA-256 of the DER SubjectPublicKeyInfo."""
    kind = KeyType(type)
    if kind is KeyType.ed25519 and bits is not None:
        raise typer.BadParameter("applies to rsa keys only", param_hint="'--bits'")
    try:
        key = generate_private_key("rsa" if kind is KeyType.rsa else "ed25519", bits or 2048)
        priv_path, pub_path = write_private_key(key, out, overwrite=force)
    except KeyFileError as exc:
        hint = " (--force replaces it)" if str(exc).endswith("not overwriting it") else ""
        typer.echo(f"error: {exc}{hint}", err=True)
        raise typer.Exit(1) from None
    size = f"RSA-{bits or 2048}" if kind is KeyType.rsa else "Ed25519"
    typer.echo(f"private key: {priv_path} ({size}, PKCS#8 PEM, mode 0600)")
    typer.echo(f"public key:  {pub_path} (SubjectPublicKeyInfo PEM)")
    typer.echo(f"fingerprint: {long_fingerprint(fingerprint(key))}")
