"""The one rule for experiment names and variants: standard library only, shared by the API and the reporter.

A name or variant is the same experiment however it was typed, and what the dashboard's box can show and type:
- it is kept in Unicode NFC form, so the NFD and NFC spellings of `café` are one name;
- it must not start or end with whitespace (`"trail "` is refused, not quietly made `"trail"`: a name stored
  before this rule would otherwise be unreachable), nor be blank;
- it must not hold invisible or control characters: Unicode categories Cc (controls, NUL included), Cf (format
  characters such as zero-width spaces and direction marks), Zl and Zp (line and paragraph separators), and Cs
  (lone surrogates, which PostgreSQL cannot store).

The API's models (reports and query parameters) and `scripts/report_k6_result.py` call `experiment_label`, so a
name the reporter sends is one the API accepts, and one the queries find.
"""

from __future__ import annotations

import unicodedata

REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cs": "a lone surrogate (not valid Unicode)",
}


def experiment_label(text: str) -> str:
    """`text` in NFC form, if it is a valid name or variant (see the module docstring); else ValueError."""
    for char in text:
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            raise ValueError(f"must not contain {REFUSED_CATEGORIES[category]} (U+{ord(char):04X})")
    normal = unicodedata.normalize("NFC", text)
    if not normal.strip():
        raise ValueError("must not be blank")
    if normal != normal.strip():
        raise ValueError("must not start or end with whitespace")
    return normal
