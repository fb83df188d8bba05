"""``visible``: user text with its control characters shown, for every page and file people read.

Prompts, ids and error texts come from users and from run folders made elsewhere. A NUL byte,
an escape sequence or a right-to-left override must not reach an HTML page, a Markdown comment,
a CSV cell or a JUnit file raw (invalid XML, spoofed text, terminal tricks): C0 controls become
their Unicode "control picture" (U+2400 + code: NUL -> ␀, newline -> ␊), DEL becomes ␡, and C1
controls, bidirectional overrides and line/paragraph separators become ``\\xNN``/``\\uNNNN``.
"""

from __future__ import annotations

import re

__all__ = ["visible"]

_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _picture(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)
    if code == 0x7F:
        return "\u2421"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` with control, bidi-override and line-separator characters made visible."""
    return _HIDDEN.sub(_picture, text)
