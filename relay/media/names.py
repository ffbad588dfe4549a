"""File names as shown to others: no path, no control or bidi characters, bounded length."""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 100
FALLBACK = "file"
_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"COM{i}" for i in range(10)),
    *(f"LPT{i}" for i in range(10)),
}


def clean_filename(name: str) -> str:
    """A safe display and download name for `name` (never empty).

    Path separators keep only the last part; control, format (bidi overrides, zero-width) and
    unassigned characters go; white space collapses; leading dots go (no hidden files or "..");
    the stem is cut so the whole fits MAX_NAME_CHARS with its extension kept."""
    name = unicodedata.normalize("NFC", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    kept = []
    for ch in name:
        category = unicodedata.category(ch)
        if category[0] == "C":  # Cc control, Cf format (bidi, zero-width), Cs, Co, Cn
            continue
        kept.append(" " if category[0] == "Z" else ch)
    name = " ".join("".join(kept).split())
    name = name.lstrip(". ").rstrip(". ")
    for bad in '<>:"|?*':
        name = name.replace(bad, "_")
    if not name or name.split(".", 1)[0].upper() in _RESERVED:
        name = f"{FALLBACK}_{name}" if name else FALLBACK
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(". ") + "." + ext
        else:
            name = name[:MAX_NAME_CHARS].rstrip(". ")
    return name or FALLBACK
