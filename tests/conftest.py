"""Shared fixtures: the spec's vectors (tests/vectors) and hypothesis profiles."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
VECTORS = REPO / "tests" / "vectors"

# CI runs every property with at least 5,000 examples (issue 2); a developer's run stays quick.
settings.register_profile(
    "ci", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=500, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def load_vector(name: str) -> dict[str, Any]:
    """One JSON file from tests/vectors."""
    with open(VECTORS / name, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def handshake_vector_names() -> list[str]:
    """Every handshake vector file (all but keys.json and the RFC 8448 file)."""
    return sorted(
        p.name
        for p in VECTORS.glob("*.json")
        if p.name not in ("keys.json", "rfc8448-key-schedule.json")
    )


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """The vectors folder; its absence is a setup error, not a skip."""
    assert VECTORS.is_dir(), f"test vectors not found at {VECTORS}"
    return VECTORS
