"""docs/protocol.md stays true to the code: its code-point tables, limits, section titles and
byte-by-byte walk-through are checked against protocol/ and tests/vectors, so the spec cannot drift."""

from __future__ import annotations

import enum
import re

import pytest
from conftest import REPO, handshake_vector_names, load_vector

from protocol import constants
from protocol.alerts import AlertCode
from protocol.constants import (
    SUITES,
    CipherSuite,
    ContentType,
    FrameType,
    Group,
    Kex,
    SignatureScheme,
)
from protocol.kex import GROUPS

DOC = REPO / "docs" / "protocol.md"
TEXT = DOC.read_text(encoding="utf-8")

# Code docstrings cite "docs/protocol.md §N": these numbers and titles must not move.
SECTIONS = [
    "Transport and frames",
    "Key exchange methods, cipher suites, groups",
    "Handshake messages",
    "Flights",
    "Key schedule",
    "Records",
    "Alerts",
    "The out-of-band channel (MQTT)",
    "Key log",
]


def _cells(line: str) -> list[str]:
    """The cells of one table row, split at unescaped pipes, without backticks."""
    inner = line.strip()[1:-1]
    return [c.strip().replace("\\|", "|").strip("`") for c in re.split(r"(?<!\\)\|", inner)]


def _tables(text: str) -> dict[str, list[list[str]]]:
    """Each markdown table's body rows, keyed by its header's first cell."""
    tables: dict[str, list[list[str]]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        is_table = i + 1 < len(lines) and re.fullmatch(r"\|(\s*-+\s*\|)+", lines[i + 1].strip())
        if lines[i].startswith("|") and is_table:
            key = _cells(lines[i])[0]
            assert key not in tables, (
                f"two tables start with {key!r}: the checks would be ambiguous"
            )
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables[key] = rows
        else:
            i += 1
    return tables


TABLES = _tables(TEXT)


def _code_points(key: str) -> dict[int, str]:
    """First column (a code point) -> second column (its name) of one table."""
    return {int(row[0], 0): row[1] for row in TABLES[key]}


def _enum(cls: type[enum.IntEnum]) -> dict[int, str]:
    return {int(m): m.name for m in cls}


def test_section_numbers_and_titles() -> None:
    """§1-§9 exist, in order, under the titles the code's docstrings rely on."""
    found = re.findall(r"^## (\d+)\. (.+)$", TEXT, flags=re.MULTILINE)
    assert found == [(str(n), title) for n, title in enumerate(SECTIONS, start=1)]


@pytest.mark.parametrize(
    ("key", "cls"),
    [
        ("type", FrameType),
        ("kex", Kex),
        ("group", Group),
        ("scheme", SignatureScheme),
        ("content_type", ContentType),
        ("code", AlertCode),
    ],
)
def test_code_point_table_matches_the_enum(key: str, cls: type[enum.IntEnum]) -> None:
    """Every code point of the enum is in the doc's table under its name, and nothing else is."""
    documented = {code: name.lower() for code, name in _code_points(key).items()}
    assert documented == {code: name.lower() for code, name in _enum(cls).items()}


def test_cipher_suite_table_matches_suites() -> None:
    """§2: key_len, Hash and HashLen of each suite."""
    rows = {int(row[0], 0): row for row in TABLES["cipher_suite"]}
    assert set(rows) == {int(s) for s in CipherSuite}
    for suite, params in SUITES.items():
        _, aead, key_len, hash_name, hash_len = rows[int(suite)]
        assert aead == f"AES-{params.key_len * 8}-GCM"
        assert int(key_len) == params.key_len
        assert hash_name.replace("-", "").lower() == params.hash_name
        assert int(hash_len) == params.hash_len


def test_group_table_share_lengths() -> None:
    """§2: the key_share length of each group is the one the code checks."""
    for row in TABLES["group"]:
        group = Group(int(row[0], 0))
        expected = 0 if group is Group.NONE else GROUPS[group].share_len
        assert int(row[3]) == expected, row


def test_limits_table_matches_constants() -> None:
    """§1: each limit's value is the constant the code uses, by name."""
    assert TABLES["limit"], "the limits table is empty"
    for _, value, name in TABLES["limit"]:
        assert int(value.split()[0]) == getattr(constants, name), name


def test_vector_table_lists_every_handshake_vector() -> None:
    """The test-vector table names exactly the handshake vectors in tests/vectors."""
    assert sorted(row[0] for row in TABLES["file"]) == handshake_vector_names()


def test_walk_through_is_the_vector() -> None:
    """Each frame of the byte-by-byte walk-through is the vector's frame, byte for byte."""
    blocks = re.findall(
        r"^### (C->S|S->C) (\w+) \((\d+) bytes\)\n```\n(.*?)```", TEXT, re.MULTILINE | re.DOTALL
    )
    assert blocks, "no walk-through found"
    vector = load_vector("dhe-x25519-0x1301-ed25519.json")
    frames = vector["frames"]
    assert len(blocks) <= len(frames)
    for (direction, name, size, body), frame in zip(blocks, frames, strict=False):
        hex_bytes = "".join(
            m.group(1) for m in re.finditer(r"^(?:[0-9a-f]{4}|    )  ([0-9a-f]+)", body, re.M)
        )
        assert (direction, name) == (frame["dir"], frame["name"])
        assert hex_bytes == frame["hex"], name
        assert int(size) == len(hex_bytes) // 2


def test_no_reference_outside_the_repository() -> None:
    """The spec is this repository's: no page points at a spec or vectors beside it."""
    pages = [REPO / "README.md", *REPO.glob("docs/**/*.md"), *REPO.glob("oob/**/*.md")]
    outside = ("PROTOCOL" + ".md", "../" + "shared")
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for needle in outside:
            assert needle not in text, f"{page.relative_to(REPO)} mentions {needle}"
