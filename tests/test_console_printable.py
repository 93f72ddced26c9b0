"""explain.console.printable: what a peer sends is shown, never obeyed by the terminal."""

from __future__ import annotations

import pytest

from explain.console import printable, printable_bytes


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hello, world", "hello, world"),
        ("café 日本 ✓", "café 日本 ✓"),  # printable text stays as it is
        ("\x1b[2Jcleared", "\\x1b[2Jcleared"),  # ANSI: clear screen
        ("line\nforged: SAS verified", "line\\nforged: SAS verified"),
        ("over\rwrite", "over\\rwrite"),
        ("tab\there", "tab\\there"),
        ("bell\x07", "bell\\x07"),
        ("rtl\u202eevil", "rtl\\u202eevil"),  # bidi override
        ("\x85next line", "\\x85next line"),  # C1 control
        ("a\u2028b", "a\\u2028b"),  # line separator
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_bytes_that_are_not_utf8_are_shown_as_escapes() -> None:
    assert printable_bytes(b"ok\xff\xfe bad \xc3\xa9") == "ok\\xff\\xfe bad é"
    assert printable_bytes(b"\x1b]0;title\x07") == "\\x1b]0;title\\x07"
