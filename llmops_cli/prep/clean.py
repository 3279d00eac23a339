"""Text cleaning and PII detection. Pure functions: easy to test, cheap to call per row."""

from __future__ import annotations

import re
import unicodedata

# Control and format characters (zero-width spaces, BOMs) except newline and tab.
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# International or national numbers with separators: +1 415-555-0132, (415) 555-0199, 020 7946 0958.
PHONE = re.compile(r"(?<![\w#])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}\b")

PII_PATTERNS = {"email": EMAIL, "phone": PHONE}
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]"}


def normalize_text(text: str) -> str:
    """NFKC (folds fullwidth forms and NBSP), drop control characters, collapse runs of spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


def dedup_key(text: str) -> str:
    """Key for exact dedup: case-folded, punctuation and spacing ignored."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def find_pii(text: str) -> dict[str, int]:
    return {kind: n for kind, pattern in PII_PATTERNS.items() if (n := len(pattern.findall(text)))}


def redact_pii(text: str, kinds: list[str]) -> str:
    for kind in kinds:
        text = PII_PATTERNS[kind].sub(PLACEHOLDERS[kind], text)
    return text
