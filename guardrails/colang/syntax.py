"""Colang syntax errors in the author's terms: the line at fault and what is wrong with it.

NeMo's parsers report some errors with no line (a 2.x dedent), at the wrong one (1.0 reads expressions with
Python's parser, which counts lines from the expression), or in their own terms (`'list' object has no
attribute 'keys'`, `Unexpected token Token('_INDENT', '    ')`). This module reads the file's layout
(indentation, brackets, strings) to say where and why. It runs only after a parser failed, to explain that
error; where it finds no explanation, the parser's own words stand.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TAB = 8  # columns of a tab, as the 2.x parser (lark's PythonIndenter) counts them
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_CLOSING = {closing: opening for opening, closing in _PAIRS.items()}
_LONG_QUOTES = ('"""', "'''")
_DEDENT = re.compile(r"dedent to column (\d+)\.")
_V1_LINE = re.compile(r"^Error parsing line (\d+) in [^:]*: ")
# Statements that open a block: the line after one must be indented deeper.
_V2_OPENS = re.compile(r"^(?:flow|if|elif|else|while|when|or\s+when|and\s+when)\b")
# Colang 1.0 statements that never open a block: a deeper line after one is out of place.
_V1_SIMPLE = re.compile(r"^(?:\$\w+\s*=|execute\b|stop\b|abort\b|return\b|break\b|continue\b)")
_TOKEN_WORDS = {"_NEWLINE": "end of line", "_DEDENT": "end of block", "$END": "end of file"}

Problem = tuple[str, int | None]  # what is wrong, and the line (1-based) where known


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    code: str  # without its comment and surrounding blanks; "" for a blank or comment-only line
    indent: int  # width of the leading blanks
    continued: bool  # starts inside brackets or a long string: part of the statement above
    open_quote: int | None  # column (1-based) of a string the line leaves unterminated

    @property
    def statement(self) -> bool:
        return bool(self.code) and not self.continued


@dataclass(frozen=True, slots=True)
class Layout:
    lines: tuple[Line, ...]
    unclosed: tuple[tuple[int, int, str], ...]  # brackets never closed: (line, column, bracket)

    def statement_before(self, number: int) -> Line | None:
        return next((line for line in reversed(self.lines[:number - 1]) if line.statement), None)


def layout(content: str, first_line: int = 1) -> Layout:
    """Each line's indentation, code and unterminated string; the brackets left open at the end."""
    lines: list[Line] = []
    brackets: list[tuple[int, int, str]] = []
    long_quote: list[str] = []  # the triple quote of a string still open, if any
    for number, text in enumerate(content.splitlines(), first_line):
        continued = bool(brackets or long_quote)
        code_end, open_quote = _scan_line(text, number, brackets, long_quote)
        blanks = text[:len(text) - len(text.lstrip(" \t"))]
        lines.append(Line(number, text[:code_end].strip(), blanks.count(" ") + blanks.count("\t") * TAB,
                          continued, open_quote))
    return Layout(tuple(lines), tuple(brackets))


def _scan_line(text: str, number: int, brackets: list[tuple[int, int, str]],
               long_quote: list[str]) -> tuple[int, int | None]:
    """Where the line's code ends (its comment starts), and the column of a string left open; updates the
    open brackets and long string carried from line to line."""
    quote, quote_column, i = "", None, 0
    while i < len(text):
        char = text[i]
        if long_quote:
            if text.startswith(long_quote[0], i):
                long_quote.clear()
                i += 2
        elif quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char == "#":
            return i, None
        elif text.startswith(_LONG_QUOTES, i):
            long_quote.append(text[i:i + 3])
            i += 2
        elif char in "\"'":
            quote, quote_column = char, i + 1
        elif char in _PAIRS:
            brackets.append((number, i + 1, char))
        elif char in _CLOSING and brackets and brackets[-1][2] == _CLOSING[char]:
            brackets.pop()
        i += 1
    return len(text), quote_column if quote else None


# --- Colang 2.x (lark) ------------------------------------------------------------------------------


def v2_problem(exc: Exception, content: str) -> Problem | None:
    """The author's version of a 2.x parser error; None where the parser's own words are as good."""
    found = layout(content)
    if type(exc).__name__ == "DedentError":
        return _inconsistent_dedent(found, str(exc))
    token = getattr(exc, "token", None)
    line = getattr(exc, "line", None)
    if getattr(token, "type", None) == "_INDENT":  # positioned at the newline before the indented line
        return _unexpected_indent(found, token.end_line)
    unterminated = next((b for b in found.lines if b.open_quote is not None), None)
    if unterminated is not None and _explains(unterminated, line, getattr(exc, "column", None)):
        # It comes before what the parser tripped on, and swallowed the brackets and quotes after it.
        return f"unterminated string: the quote at column {unterminated.open_quote} is never closed", \
            unterminated.number
    unclosed = next((b for b in found.unclosed if not isinstance(line, int) or b[0] <= line), None)
    if unclosed is not None and (unterminated is None or unterminated.number > unclosed[0]):
        return f"{unclosed[2]!r} at column {unclosed[1]} is never closed", unclosed[0]
    if not isinstance(line, int) or line > len(found.lines):
        return None
    here = found.lines[line - 1]
    return _missing_block(found, here, token) or _unexpected(token, getattr(exc, "char", None),
                                                             getattr(exc, "column", None), line)


def _explains(unterminated: Line, line: int | None, column: int | None) -> bool:
    """Whether a string left open on `unterminated` comes before the parser's error (so may be its cause)."""
    if not isinstance(line, int) or unterminated.number < line:
        return True
    return unterminated.number == line and (not isinstance(column, int) or unterminated.open_quote <= column)


def _inconsistent_dedent(found: Layout, message: str) -> Problem | None:
    """The line lark's indenter stopped at: it lines up with no block that is open above it."""
    levels = [0]
    for line in found.lines:
        if not line.statement:
            continue
        if line.indent > levels[-1]:
            levels.append(line.indent)
            continue
        above = list(levels)
        while line.indent < levels[-1]:
            levels.pop()
        if line.indent != levels[-1]:
            return (f"inconsistent indentation: this line is indented {line.indent} spaces, which lines up "
                    f"with no block above it (those are indented {_spaces(above)})"), line.number
    matched = _DEDENT.search(message)
    return (f"inconsistent indentation: a line is indented {matched.group(1)} spaces, which lines up with no "
            f"block above it", None) if matched else None


def _unexpected_indent(found: Layout, number: int) -> Problem:
    above = found.statement_before(number)
    if above is None:
        return "unexpected indentation: a flow starts at the beginning of its line", number
    # An opener the parser did not take as one: an `else` without its `if`, say.
    why = "cannot open a block here" if _V2_OPENS.match(above.code) else "does not open a block"
    return (f"unexpected indentation: this line is indented deeper than line {above.number} "
            f"(`{above.code}`), which {why}"), number


def _missing_block(found: Layout, here: Line, token: object) -> Problem | None:
    """A block statement (`if`, `when`, ...) with nothing indented under it."""
    if getattr(token, "type", None) == "_DEDENT" and _V2_OPENS.match(here.code):
        opener = here  # the block (or the file) ends right after the statement
    else:
        opener = found.statement_before(here.number)
        if opener is None or not _V2_OPENS.match(opener.code) or here.indent > opener.indent:
            return None
    return f"expected an indented block under `{opener.code}` (line {opener.number})", here.number


def _unexpected(token: object, char: str | None, column: int | None, line: int) -> Problem:
    at = f" at column {column}" if column else ""
    if token is None:
        return (f"unexpected character {char!r}{at}" if char else "unexpected end of file"), line
    kind = getattr(token, "type", "")
    return f"unexpected {_TOKEN_WORDS.get(kind) or repr(str(token))}{at}", line


def _spaces(levels: Sequence[int]) -> str:
    words = [str(level) for level in levels]
    return (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]) + " spaces"


# --- Colang 1.0 ------------------------------------------------------------------------------------


def v1_problem(exc: Exception, block: str, first_line: int) -> Problem:
    """The author's version of a 1.0 parser error raised by one top-level block (`define ...` up to the
    next), whose text starts at `first_line` of its file."""
    found = layout(block, first_line)
    if isinstance(exc, SyntaxError):  # Python's parser on one expression: its line is the expression's
        return _unclosed_in_expression(found, exc) or _v1_indentation(found) or _bad_expression(found, exc)
    reported = _V1_LINE.match(str(exc))
    detail = str(exc)[reported.end():] if reported else str(exc).strip().splitlines()[0]
    return _v1_indentation(found) or (detail, int(reported.group(1)) if reported else first_line)


def _unclosed_in_expression(found: Layout, exc: SyntaxError) -> Problem | None:
    if "unterminated string" in (exc.msg or ""):
        line = next((line for line in found.lines if line.open_quote is not None), None)
        if line is not None:
            return f"unterminated string: the quote at column {line.open_quote} is never closed", line.number
    if "never closed" in (exc.msg or "") and found.unclosed:
        number, column, bracket = found.unclosed[0]
        return f"{bracket!r} at column {column} is never closed", number
    return None


def _bad_expression(found: Layout, exc: SyntaxError) -> Problem:
    fragment = (exc.text or "").strip()
    statements = [line for line in found.lines if line.code]
    line = next((line for line in statements if fragment and fragment in line.code), None)
    where = line.number if line else statements[0].number if statements else None
    return (f"invalid expression {fragment!r}: {exc.msg}" if fragment else str(exc.msg)), where


def _v1_indentation(found: Layout) -> Problem | None:
    """A line indented deeper than a statement that opens no block, or back to a column no block is at."""
    levels: list[int] = []
    above: Line | None = None
    for line in found.lines:
        if not line.statement:
            continue
        if above is not None and line.indent > levels[-1] and _V1_SIMPLE.match(above.code):
            return (f"unexpected indentation: this line is indented deeper than line {above.number} "
                    f"(`{above.code}`), which does not open a block"), line.number
        open_levels = list(levels)
        while levels and line.indent < levels[-1]:
            levels.pop()
        if levels and line.indent != levels[-1] and line.indent < open_levels[-1]:
            return (f"inconsistent indentation: this line is indented {line.indent} spaces, which lines up "
                    f"with no block above it (those are indented {_spaces(open_levels)})"), line.number
        if not levels or line.indent > levels[-1]:
            levels.append(line.indent)
        above = line
    return None
