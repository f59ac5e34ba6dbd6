"""Text from files, made safe to print: control characters escaped, very long values cut.

A model bundle comes from someone else. Its notes, channel names, provenance
and even its tensor names reach the terminal (``segloop info``) and the napari
docks; an escape sequence in a note could rewrite what the terminal shows, a
right-to-left override could reverse a line, and a megabyte-long "name" could
flood it. :func:`printable` is applied to every value read from a file before
it is shown.
"""

from __future__ import annotations

import unicodedata
from typing import Any

__all__ = ["MAX_TEXT", "printable"]

#: Values longer than this many characters are cut (with the number of characters left out).
MAX_TEXT = 300


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(ch: str, keep_newlines: bool) -> bool:
    if ch == " ":
        return False
    if keep_newlines and ch == "\n":
        return False
    # Cc: control (ESC, BEL, CR, DEL, C1 controls); Cf: format (bidi overrides, zero-width);
    # Zl/Zp: line and paragraph separators; Cs/Co/Cn: surrogates, private use, unassigned.
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn") or (
        ch.isspace() and ch != " "
    )


def printable(value: Any, limit: int | None = MAX_TEXT, *, keep_newlines: bool = False) -> str:
    """Return ``value`` as text that is safe to print on a terminal or in a label.

    Parameters
    ----------
    value : object
        Anything; converted with ``str`` first.
    limit : int or None
        Cut the result after this many characters and say how many were left
        out; None: never cut.
    keep_newlines : bool
        Keep ``\\n`` (for multi-line text); otherwise it is escaped too.

    Returns
    -------
    str
        Control and format characters (escape sequences, carriage returns,
        bidirectional overrides, zero-width characters) as visible ``\\x1b``-style
        escapes; tabs and other unusual whitespace escaped as well.

    Examples
    --------
    >>> printable("ok\\x1b[2Jcleared")
    'ok\\\\x1b[2Jcleared'
    >>> printable("x" * 10, limit=4)
    'xxxx... (6 more characters)'
    """
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        cut = text[:limit]
        rest = len(text) - limit
    else:
        cut, rest = text, 0
    if any(_unsafe(ch, keep_newlines) for ch in cut):
        cut = "".join(_escape(ch) if _unsafe(ch, keep_newlines) else ch for ch in cut)
    if rest:
        cut += f"... ({rest} more characters)"
    return cut
