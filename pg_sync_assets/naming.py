"""Asset names from table names.

Dagster asset keys must match `^[A-Za-z0-9_]+$`. A table name that already does is used
as is; otherwise Hangul is romanized (Revised Romanization, syllable by syllable, no
sound-change rules), accents are stripped, and any other run of characters becomes `_`:
`raw_data_인포맥스종목마스터` -> `raw_data_inpomaekseujongmokmaseuteo`. The real table
name stays in the asset's description and `dagster/table_name`.
"""

from __future__ import annotations

import re
import unicodedata

VALID_NAME = re.compile(r"^[A-Za-z0-9_]+$")

_INITIALS = [
    "g",
    "kk",
    "n",
    "d",
    "tt",
    "r",
    "m",
    "b",
    "pp",
    "s",
    "ss",
    "",
    "j",
    "jj",
    "ch",
    "k",
    "t",
    "p",
    "h",
]
_MEDIALS = [
    "a",
    "ae",
    "ya",
    "yae",
    "eo",
    "e",
    "yeo",
    "ye",
    "o",
    "wa",
    "wae",
    "oe",
    "yo",
    "u",
    "wo",
    "we",
    "wi",
    "yu",
    "eu",
    "ui",
    "i",
]
_FINALS = [
    "",
    "k",
    "k",
    "k",
    "n",
    "n",
    "n",
    "t",
    "l",
    "k",
    "m",
    "l",
    "l",
    "l",
    "p",
    "l",
    "m",
    "p",
    "p",
    "t",
    "t",
    "ng",
    "t",
    "t",
    "k",
    "t",
    "p",
    "t",
]
_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3


def romanize_hangul(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if _HANGUL_FIRST <= code <= _HANGUL_LAST:
            index = code - _HANGUL_FIRST
            initial, rest = divmod(index, 21 * 28)
            medial, final = divmod(rest, 28)
            out.append(_INITIALS[initial] + _MEDIALS[medial] + _FINALS[final])
        else:
            out.append(ch)
    return "".join(out)


def derive_asset_name(table_name: str) -> str | None:
    """A valid asset name for `table_name`, or None when nothing usable remains."""
    if VALID_NAME.match(table_name):
        return table_name
    text = unicodedata.normalize("NFKD", romanize_hangul(table_name))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9_]+", "_", text).strip("_")
    if not text:
        return None
    return f"t_{text}" if text[0].isdigit() else text
