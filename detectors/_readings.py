"""Other readings of a folded text that a model still understands, each mapped back to the original characters.

A model reads through what a pattern does not: base64, hex or percent-encoded runs (an agent told to exfiltrate a
key sends it encoded; a planted "decode this and follow it"), markup between or inside words (`<b>Ig</b>nore`,
`**pipe** **bomb**`, `_Ignore_ all`, `&#73;gnore`), letters spelled out one by one (`n-a-p-a-l-m`), and a value
split into string literals joined again (`"sk-proj-ab" + "cd…"`, two JSON string values). Each function here takes
the folded view a detector scans (detectors/_fold.py) and returns another view whose spans map back to the
segment's original text (`FoldedText.original_span`), or None when the reading is the text itself, so a detector
pays for a second pass only on text that reads differently. Readings never replace the folded view: a detector
scans both.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice

from detectors._fold import FoldedText, compose, fold_with_offsets, rewritten

# A run of base64 (standard or URL-safe alphabet) or hex digits long enough to hold a credential or a sentence.
# (No lookbehind: finditer meets a run at its first character; a pattern opening with a character class is scanned
# for in C, one opening with a lookaround is tried at every position.)
_ENCODED_RUN = re.compile(r"[A-Za-z0-9+/_\-]{20,}={0,2}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_PERCENT_ESCAPE = re.compile(r"%([2-6][0-9A-Fa-f]|7[0-9A-Ea-e])")  # printable ASCII
MAX_RUN_CHARS = 16_384  # a longer run is a file (an image, an archive), not a typed secret or sentence
MAX_DECODED_CHARS = 65_536  # per text: bounds the work on a text made of encoded runs
# Per reading of a text: bounds the work on a text made of markup, escapes or spelled-out letters (each rewrite is a
# piece mapped back, built in Python: a megabyte of `&amp;` took most of a second per reading). Past it, the rest of
# the text reads as it is written.
MAX_REWRITES = 65_536
_LINE_BREAKS = str.maketrans("", "", "\t\n\r")

# Inline elements join the text around them ("Ig<b>no</b>re"); other tags and comments separate it.
_INLINE_TAGS = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em", "font", "i", "ins", "kbd",
    "mark", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var", "wbr"})
# (HTML comments are found apart, with str.find: see _comments.)
_MARKUP = re.compile(
    r"</?(?P<tag>[A-Za-z][A-Za-z0-9-]*)(?:\s[^<>]{0,1000})?/?>"
    r"|&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
    # Markdown emphasis touching a word (`**Ignore**`, `Ig*nore*`; not `a * b`), and a pair of `_` or `__` around
    # words (not `snake_case` or `_id`). Backticks and `~~` are not letters: they never join or split a word.
    # A run of `*` is tried from its first one only: from each of them, a long run was quadratic (40 KB: 37 s).
    r"|\*(?<=\w\*)\**|(?<!\*)\*++(?=\w)"
    r"|_(?<![^\W_]_)(?P<double>_?)(?=[^\W_])[^\n_]{1,200}?(?<=[^\W_])_(?P=double)(?![^\W_])"
)
# Three or more letters each followed by the same one separator: `n a p a l m`, `n.a.p.a.l.m`, `n-a-p-a-l-m`.
# The match starts at the first separator (a pattern opening with a character class is scanned for in C), and
# checks the letter before it stands alone only once a second letter and separator follow (the cheap test first).
_SPACED_LETTERS = re.compile(
    r"([ .\-_*·/|•])[^\W\d_]\1(?<=(?<![^\W_])[^\W\d_]...)(?:[^\W\d_]\1)*[^\W\d_](?![^\W_])")
# What joins two string literals: `"a" + "b"` (quotes of any kind, or escaped in raw JSON arguments), and, in JSON,
# the glue between two string values of an object or an array.
_QUOTE = r"""(?:["'`]|\\")"""
_CONCATENATION = re.compile(rf"{_QUOTE}\s*\+\s*{_QUOTE}")
_JSON_VALUE_GLUE = re.compile(r'"\s*,\s*(?:"[^"\\]{0,200}"\s*:\s*)?"')


def decoded(view: FoldedText, *, percent: bool = False) -> FoldedText | None:
    """`view` with its base64 and hex runs that decode to printable text read as that text (and, with `percent`,
    its `%XX` escapes of printable ASCII read as their characters, before the runs): None if nothing decodes."""
    reading = (percent_decoded(view) or view) if percent else view
    runs = list(_decoded_runs(reading.text))
    if runs:
        reading = compose(rewritten(reading.text, (piece for run in runs for piece in run)), reading)
    return reading if reading is not view else None


def percent_decoded(view: FoldedText) -> FoldedText | None:
    """`view` with its `%XX` escapes of printable ASCII read as their characters (a URL as it reads): None if it
    has none."""
    if "%" not in view.text:
        return None
    escapes = [(m.start(), m.end(), chr(int(m.group(1), 16)))
               for m in islice(_PERCENT_ESCAPE.finditer(view.text), MAX_REWRITES)]
    return compose(rewritten(view.text, escapes), view) if escapes else None


def _decoded_runs(text: str) -> Iterator[list[tuple[int, int, str]]]:
    """Per run that decodes: its replacements, as small as the encoding allows (3 bytes per 4 base64 characters,
    1 per 2 hex digits), so a finding covers the encoded characters of what it found, not the whole run."""
    budget = MAX_DECODED_CHARS
    for match in _ENCODED_RUN.finditer(text):
        run = match.group()
        if len(run) > MAX_RUN_CHARS:
            continue
        budget -= len(run)
        if budget < 0:
            return
        start = match.start()
        if _HEX.fullmatch(run):
            plain = _readable(bytes.fromhex(run))
            if plain is not None:
                yield _groups(start, match.end(), plain, 2, 1)
            continue
        plain = _base64(run)
        if plain is not None:
            yield _groups(start, match.end(), plain, 4, 3)


def _base64(run: str) -> str | None:
    body = run.rstrip("=")
    url_safe = "-" in body or "_" in body
    if (url_safe and ("+" in body or "/" in body)) or len(body) % 4 == 1:
        return None
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _readable(raw)


def _readable(raw: bytes) -> str | None:
    """The text `raw` encodes, if it is printable UTF-8 (random bytes, an image, a hash are not)."""
    try:
        plain = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return plain if plain.translate(_LINE_BREAKS).isprintable() else None


def _groups(start: int, end: int, plain: str, width: int, size: int) -> list[tuple[int, int, str]]:
    """Replacements of an encoded run by `plain`: each `size` characters for the `width` encoded ones they came
    from (the last group takes the padding). A multi-byte character breaks that alignment: one replacement."""
    if not plain.isascii():
        return [(start, end, plain)]
    groups = [(start + width * k, start + width * (k + 1), plain[size * k : size * (k + 1)])
              for k in range((len(plain) + size - 1) // size)]
    groups[-1] = (groups[-1][0], end, groups[-1][2])
    return groups


def without_markup(view: FoldedText, *, casefold: bool = False) -> FoldedText | None:
    """`view` as a renderer shows it: HTML comments and tags left out (inline ones joined to the text around them,
    the others a space), character references read as their (folded) characters, Markdown emphasis left out.
    None when the text has none."""
    text = view.text
    if not any(mark in text for mark in "<&*_"):
        return None
    replacements = list(islice(_markup_rewrites(text, casefold), MAX_REWRITES))
    return compose(rewritten(text, replacements), view) if replacements else None


def _markup_rewrites(text: str, casefold: bool) -> Iterator[tuple[int, int, str]]:
    """The replacements of `text`'s markup, in order: what is between comments, then the comment (a space)."""
    done = 0
    for start, end in _comments(text):
        yield from (r for m in _MARKUP.finditer(text, done, start) for r in _rendered(m, casefold))
        yield start, end, " "
        done = end
    yield from (r for m in _MARKUP.finditer(text, done) for r in _rendered(m, casefold))


def _comments(text: str) -> Iterator[tuple[int, int]]:
    """The spans of the HTML comments in `text`. An unclosed `<!--` is text, and so is every one after it (a regex
    looked for the end from each one: a text of `<!--` repeated was quadratic, 100 KB took 10 s)."""
    done = 0
    while (start := text.find("<!--", done)) >= 0:
        end = text.find("-->", start + 4)
        if end < 0:
            return
        yield start, end + 3
        done = end + 3


def _rendered(markup: re.Match[str], casefold: bool) -> list[tuple[int, int, str]]:
    """What a piece of markup renders as: replacements of its characters."""
    start, end = markup.span()
    first = markup.group()[0]
    if first == "&":
        return [(start, end, _character_reference(markup.group(), casefold))]
    if first == "_":  # the two markers of `_word_`, not the words between them
        width = 1 + len(markup.group("double"))
        return [(start, start + width, ""), (end - width, end, "")]
    if first == "<" and markup.group("tag").lower() not in _INLINE_TAGS:  # a block
        return [(start, end, " ")]
    return [(start, end, "")]


@lru_cache(maxsize=1024)  # a page repeats the same few references (`&nbsp;`, `&amp;`)
def _character_reference(reference: str, casefold: bool) -> str:
    return fold_with_offsets(html.unescape(reference), casefold=casefold).text


def letters_joined(view: FoldedText) -> FoldedText | None:
    """`view` with words spelled out letter by letter (`n a p a l m`, `n.a.p.a.l.m`) read as words."""
    replacements = list(islice(((k, k + 1, "") for m in _SPACED_LETTERS.finditer(view.text)
                                for k in range(m.start(), m.end(), 2)), MAX_REWRITES))
    return compose(rewritten(view.text, replacements), view) if replacements else None


def literals_joined(view: FoldedText, *, json_values: bool = False) -> FoldedText | None:
    """`view` with string literals joined by `+` read as one string, and with `json_values` (raw JSON arguments)
    the string values of an object or array too (`{"a": "sk-proj-ab", "b": "cd…"}` reads `sk-proj-abcd…`).
    `view` keeps JSON escapes as they are (`folded_view` without blanking): an escaped quote is a quote here."""
    text = view.text
    glue = [m.span() for m in islice(_CONCATENATION.finditer(text), MAX_REWRITES)] if "+" in text else []
    if json_values:
        glue += [m.span() for m in islice(_JSON_VALUE_GLUE.finditer(text), MAX_REWRITES)]
    if not glue:
        return None
    glue.sort()
    replacements, done = [], 0
    for start, end in glue[:MAX_REWRITES]:  # the two patterns may overlap on a `"` they share
        if start >= done:
            replacements.append((start, end, ""))
            done = end
    return compose(rewritten(text, replacements), view)
