"""Shared fixtures: the spec's vectors (tests/vectors) and hypothesis profiles."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from external_tools import in_ci
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"

# CI runs every property with at least 5,000 examples (issue 2); a developer's run stays quick.
settings.register_profile(
    "ci", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=500, deadline=None)
# make mutate: fewer examples, and the same ones every run, so a mutant is killed or not for good.
settings.register_profile(
    "mutation", max_examples=200, derandomize=True, deadline=None, database=None
)
settings.load_profile("ci" if in_ci() else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# The files tests/vectors must hold (docs/protocol.md's vectors). A checkout without one of them
# fails at collection: a vector-driven test must never turn into an empty, skipped parameter set.
HANDSHAKE_VECTORS = (
    "dhe-ffdhe2048-0x1301-ed25519.json",
    "dhe-secp256r1-0x1301-anonymous.json",
    "dhe-x25519-0x1301-ed25519.json",
    "dhe-x25519-0x1302-rsa-pss.json",
    "psk-0x1301.json",
    "rsa-0x1301.json",
)
OTHER_VECTORS = ("keys.json", "rfc8448-key-schedule.json")


def check_vectors(folder: Path = VECTORS) -> None:
    """Fail (AssertionError) unless ``folder`` holds every expected vector file."""
    assert folder.is_dir(), f"test vectors not found: {folder} is missing (a broken checkout?)"
    missing = [n for n in (*HANDSHAKE_VECTORS, *OTHER_VECTORS) if not (folder / n).is_file()]
    assert not missing, f"test vectors missing from {folder}: {', '.join(missing)}"


def load_vector(name: str) -> dict[str, Any]:
    """One JSON file from tests/vectors."""
    check_vectors()
    with open(VECTORS / name, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def handshake_vector_names() -> list[str]:
    """Every handshake vector file (all but keys.json and the RFC 8448 file); never empty."""
    check_vectors()
    return sorted(p.name for p in VECTORS.glob("*.json") if p.name not in OTHER_VECTORS)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The vectors folder; its absence is a setup error, not a skip."""
    check_vectors()
    return VECTORS
