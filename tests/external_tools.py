"""One rule for the programs tests run (tshark, tcpdump, openssl, mosquitto, docker, ...).

Under ``CI`` a missing program is a failure: .ci/run installs every one, so its absence means the
run checks less than it claims. Elsewhere the test skips and says which program it needs.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path
from typing import Any, NoReturn

import pytest

# Debian puts daemons (mosquitto) in sbin, which a non-root PATH often lacks.
SBIN = ("/usr/sbin", "/usr/local/sbin")


def in_ci() -> bool:
    """True when the CI variable is set to anything but empty, 0 or false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_tool(name: str) -> str | None:
    """The program's path on PATH or in an sbin folder, or None."""
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def unavailable(reason: str) -> NoReturn:
    """What a test does when something it needs is missing: fail under CI, else skip saying why."""
    if in_ci():
        pytest.fail(
            f"{reason}; under CI everything a test needs is required (.ci/run sets it up)", False
        )
    pytest.skip(reason)


def require_tool(name: str, why: str = "") -> str:
    """The program's path; if it is missing, fail under CI and skip (with the reason) elsewhere."""
    found = find_tool(name)
    if found is not None:
        return found
    unavailable(f"{name} is not installed" + (f" (needed for {why})" if why else ""))


def require_module(name: str, why: str = "") -> Any:
    """An optional Python package (installed by the test extra); the same rule as programs."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(
            f"the Python package {name} is not installed" + (f" (needed for {why})" if why else "")
        )
