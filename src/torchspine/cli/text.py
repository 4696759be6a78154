"""Help texts: module docstrings shown as plain text in ``--help`` (no reStructuredText markup)."""

from __future__ import annotations

import re

_LITERAL = re.compile(r"``([^`]+)``|`([^`]+)`")


def plain(text: str | None) -> str:
    """`text` with RST literals (double and single backquotes) replaced by their content, stripped."""
    return _LITERAL.sub(lambda m: m.group(1) or m.group(2), text or "").strip()
