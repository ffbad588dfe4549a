"""Full-text search text handling: folding, the query parser, highlights. Pure functions.

The index (table `message_search`, FTS5 with the unicode61 tokenizer) holds a *folded* copy of
each message: casefolded, NFKD with combining marks removed, recomposed (NFC), and with every
CJK character (Han, kana, Hangul syllables) set apart by spaces, so that each is a token of its
own and a CJK word is found as a phrase of its characters (unicode61 would otherwise make a whole
run of CJK text one token). Queries are folded the same way. Why unicode61 and not trigram:
see docs/search.md (measured: a smaller index, faster queries, and words of one or two
characters are findable, which trigram cannot do).

User text never reaches FTS5's query language as such: `parse` reads words, "quoted phrases",
`prefix*` and `-excluded` terms and writes each as a double-quoted FTS5 string (a quote inside
doubled), joined by AND / NOT. Anything else raises `QueryError` (the route's 400).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MAX_QUERY_CHARS = 512  # a search's `content`, as sent
MAX_TERMS = 16  # words, phrases and exclusions in one query
# Kana voicing marks are letters' identity in Japanese (か is not が): kept, unlike accents.
_KEPT_MARKS = frozenset({"\u3099", "\u309a"})


def _is_cjk(ch: str) -> bool:
    """One character that is a word of its own for the index (see the module docstring)."""
    o = ord(ch)
    return (
        0x3040 <= o <= 0x30FF  # hiragana, katakana
        or 0x3400 <= o <= 0x4DBF  # Han extension A
        or 0x4E00 <= o <= 0x9FFF  # Han
        or 0xAC00 <= o <= 0xD7AF  # Hangul syllables
        or 0xF900 <= o <= 0xFAFF  # Han compatibility
        or 0x20000 <= o <= 0x3FFFF  # Han extensions B and later
    )


def _is_token_char(ch: str) -> bool:
    # unicode61's default: letters, numbers and private-use characters make tokens.
    cat = unicodedata.category(ch)
    return cat[0] in "LN" or cat == "Co"


def _marks() -> dict[int, None]:
    # Built once (about 30 ms): str.translate with it runs in C, unlike a loop over characters.
    ranges = (range(0x20000), range(0xE0000, 0xE1000))
    drop = {cp: None for r in ranges for cp in r if unicodedata.category(chr(cp)) == "Mn"}
    for kept in _KEPT_MARKS:
        drop.pop(ord(kept), None)
    drop[0] = None  # NUL: never useful in the index, and best kept out of SQL text
    return drop


_MARKS = _marks()
_CJK = re.compile(
    "([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff])"
)


def normalize(text: str) -> str:
    """`text` casefolded, without accents, NFC: `fold` without setting CJK characters apart."""
    if text.isascii():
        return text.lower().replace("\x00", "")  # casefold and NFKD change nothing else here
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return unicodedata.normalize("NFC", decomposed.translate(_MARKS))


def fold(text: str) -> str:
    """The index's copy of `text` (and of a query term): see the module docstring."""
    folded = normalize(text)
    return folded if folded.isascii() else _CJK.sub(" \\1 ", folded)


def index_text(text: str) -> str:
    """What the index stores of `text`: its folded tokens separated by single spaces. FTS5 makes
    the same tokens of it as of `fold(text)`; PostgreSQL's index (relay.storage.postgres.search)
    takes the tokens as they are, without a parser of its own, so both hold the same words."""
    return " ".join(tokens(fold(text)))


def tokens(folded: str) -> list[str]:
    """The tokens unicode61 makes of folded text (the same rule, for terms and highlights)."""
    found: list[str] = []
    current: list[str] = []
    for ch in folded:
        if _is_token_char(ch):
            current.append(ch)
        elif current:
            found.append("".join(current))
            current = []
    if current:
        found.append("".join(current))
    return found


class QueryError(ValueError):
    """A search query that cannot be searched for (the route answers 400)."""


@dataclass(frozen=True)
class Term:
    tokens: tuple[str, ...]  # folded; a word may be several (`e-mail`: e, mail)
    prefix: bool = False  # the last token is a prefix

    def fts(self) -> str:
        quoted = '"' + " ".join(self.tokens).replace('"', '""') + '"'
        return quoted + ("*" if self.prefix else "")


@dataclass(frozen=True)
class Query:
    include: tuple[Term, ...]
    exclude: tuple[Term, ...]

    def fts(self) -> str:
        """The FTS5 MATCH expression: every included term, none of the excluded ones."""
        expression = " AND ".join(term.fts() for term in self.include)
        if self.exclude:
            expression = f"({expression})" + "".join(f" NOT {t.fts()}" for t in self.exclude)
        return expression


def _term(text: str, prefix: bool) -> Term | None:
    found = tuple(tokens(fold(text)))
    if not found:
        return None  # only punctuation or spaces: nothing the index could hold
    return Term(found, prefix)


def parse(text: str) -> Query:
    """Read a search query: `word`, `"a phrase"`, `prefix*`, `-excluded` (a word or a phrase).
    A quote left open runs to the end. Raises QueryError if it is too long, has too many terms,
    or nothing to look for (no word, or only excluded ones)."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"at most {MAX_QUERY_CHARS} characters")
    include: list[Term] = []
    exclude: list[Term] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        negate = text[i] == "-" and i + 1 < n and not text[i + 1].isspace()
        if negate:
            i += 1
        if text[i] == '"':
            end = text.find('"', i + 1)
            end = n if end < 0 else end
            term = _term(text[i + 1 : end], prefix=False)
            i = end + 1
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != '"':
                i += 1
            word = text[start:i]
            prefix = word.endswith("*")
            term = _term(word.rstrip("*"), prefix=prefix)
        if term is not None:
            (exclude if negate else include).append(term)
        if len(include) + len(exclude) > MAX_TERMS:
            raise QueryError(f"at most {MAX_TERMS} terms")
    if not include:
        raise QueryError("nothing to search for: give at least one word that is not excluded")
    return Query(tuple(include), tuple(exclude))


def _folded_tokens(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) of `text` folded, with start/end offsets into `text` itself."""
    found: list[tuple[str, int, int]] = []
    current: list[str] = []
    start = 0
    for i, ch in enumerate(text):
        piece = normalize(ch)
        if _is_cjk(ch) or (len(piece) == 1 and _is_cjk(piece)):
            if current:
                found.append(("".join(current), start, i))
                current = []
            found.append((piece, i, i + 1))
            continue
        if not piece and current and unicodedata.category(ch) == "Mn":
            continue  # a combining accent inside a word
        if piece and all(_is_token_char(c) for c in piece):
            if not current:
                start = i
            current.append(piece)
        elif current:
            found.append(("".join(current), start, i))
            current = []
    if current:
        found.append(("".join(current), start, len(text)))
    return found


def highlights(content: str, query: Query) -> list[tuple[int, int]]:
    """The [start, end) code point ranges of `content` that the query's included terms match,
    in order, merged where they touch."""
    found = _folded_tokens(content)
    words = [t[0] for t in found]
    ranges: list[tuple[int, int]] = []
    for term in query.include:
        size = len(term.tokens)
        for i in range(len(words) - size + 1):
            head = all(words[i + k] == term.tokens[k] for k in range(size - 1))
            last = words[i + size - 1]
            wanted = term.tokens[-1]
            if head and (last.startswith(wanted) if term.prefix else last == wanted):
                ranges.append((found[i][1], found[i + size - 1][2]))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
