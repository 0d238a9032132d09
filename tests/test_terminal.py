"""What the CLI does to daemon text before a terminal sees it."""

from __future__ import annotations

import io

from devsupervisor.cli.terminal import escape, for_stream


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_control_characters_are_written_out() -> None:
    """C0, DEL and C1 controls (ESC, BEL, the 8-bit CSI) become visible escapes."""
    assert escape("a\x1b[2Jb\x07c\x7fd\x9be\x00") == "a\\x1b[2Jb\\x07c\\x7fd\\x9be\\x00"
    assert escape("line\nnext\r") == "line\\x0anext\\x0d"


def test_bidi_overrides_are_written_out() -> None:
    """Characters that reorder how a line displays are shown as escapes."""
    assert escape("abc\u202edef\u2066") == "abc\\u202edef\\u2066"


def test_tabs_and_ordinary_text_are_kept() -> None:
    """Tabs, non-ASCII letters and emoji pass through unchanged (tabs only when asked)."""
    assert escape("a\tb ünï 😀") == "a\tb ünï 😀"
    assert escape("a\tb", keep_tabs=False) == "a\\x09b"


def test_only_terminals_get_escaped_text() -> None:
    """A pipe or file gets the text as sent; a terminal gets it escaped."""
    assert for_stream("x\x1by", io.StringIO()) == "x\x1by"
    assert for_stream("x\x1by", Tty()) == "x\\x1by"
