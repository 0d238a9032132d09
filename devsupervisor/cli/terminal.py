"""Text from the daemon, made safe to print on a terminal.

Whatever the daemon sends (service names, build errors, log lines of the platform) could carry
escape sequences that retitle the window, rewrite the screen or, on some terminals, answer back
into the input. The CLI prints such text through `escape`, which shows every control character
as a visible `\\xNN` (or `\\uNNNN`) instead of sending it to the terminal.
"""

from __future__ import annotations

# `typing` costs client commands ~3 ms of start-up; annotations only need it for mypy.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

# C0 controls, DEL and C1 controls (ESC and CSI among them), plus the bidirectional overrides
# and isolates that make a line display in a different order than it reads.
_CONTROLS = (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))
_BIDI = (*range(0x202A, 0x202F), *range(0x2066, 0x206A))
_TABLE = {
    **{code: f"\\x{code:02x}" for code in _CONTROLS},
    **{code: f"\\u{code:04x}" for code in _BIDI},
}
# A tab is harmless and common in log lines.
_KEEP_TAB = {**_TABLE, ord("\t"): "\t"}


def escape(text: str, *, keep_tabs: bool = True) -> str:
    """`text` with every control character written out as an escape (tabs kept by default)."""
    return text.translate(_KEEP_TAB if keep_tabs else _TABLE)


def for_stream(text: str, stream: TextIO) -> str:
    """`text` escaped when `stream` is a terminal, as is otherwise (a file or a pipe gets the
    bytes the daemon sent, e.g. `devsup logs > file` keeps the platform's own output)."""
    return escape(text) if stream.isatty() else text
