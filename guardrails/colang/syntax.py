"""Colang syntax errors in the author's terms: the line at fault and what is wrong with it.

NeMo's parsers report some errors with no line (a 2.x dedent), at the wrong one (1.0 reads expressions with
Python's parser, which counts lines from the expression), or in their own terms (`'list' object has no
attribute 'keys'`, `Unexpected token Token('_INDENT', '    ')`). This module reads the file's layout
(indentation, brackets, strings) to say where and why. It runs after a parser failed, to explain that error;
where it finds no explanation, the parser's own words stand (in 1.0, behind the statement it failed on). On
Colang 1.0 files NeMo accepts, it also finds a block statement with nothing under it (`v1_empty_block`) and an
`else` that does not line up with its `if` or `when` (`v1_misaligned_else`).
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

TAB = 8  # columns of a tab, as the 2.x parser (lark's PythonIndenter) counts them
_PAIRS = {"(": ")", "[": "]", "{": "}"}
_CLOSING = {closing: opening for opening, closing in _PAIRS.items()}
_LONG_QUOTES = ('"""', "'''")
_DEDENT = re.compile(r"dedent to column (\d+)\.")
_V1_LINE = re.compile(r"^Error parsing line (\d+) in [^:]*:\s*")
# NeMo's 1.0 parser errors, in its words: a statement it does not know, a `define` of something else, an
# action's arguments it cannot split (raised with no line, by the step after the line-by-line parse).
_V1_MAIN_TOKEN = re.compile(r"Unknown main token '(.*)' on line \d+$")
_V1_DEFINE_TOKEN = re.compile(r'^Unknown token: "(.*)"$')
_V1_PARAMS = re.compile(r"^Incorrect params str: ")
_V1_SPLIT_ARGS = re.compile(r"^Invalid syntax for string: (.*); "
                            r"(?:unexpected closing '(.)'|expecting (.) and got (.))$")
# Colang 1.0 statements that open a block (`define user` may have no examples under it).
_V1_OPENS = re.compile(r"^(?:(?:if|else\s+if|while|when|else\s+when)\b|(?:else|any|infer):?$|define\s+(?!user\b))")
_V1_STATEMENTS = ("if", "else", "while", "when", "execute", "do", "bot", "user", "stop", "abort", "return", "break",
                  "continue")
_V1_DEFINES = ("flow", "subflow", "user", "bot")
# Keywords NeMo's parser reads an operand after, with no check that there is one.
_V1_OPERANDS = {"if": "a condition, e.g. `if $result[\"count\"] > 0`", "while": "a condition, e.g. `while $n < 3`",
                "do": "the name of the flow to run, e.g. `do check pii`", "goto": "the name of a label"}
_MAX_WORDS = 200
# Statements that open a block: the line after one must be indented deeper.
_V2_OPENS = re.compile(r"^(?:flow|if|elif|else|while|when|or\s+when|and\s+when)\b")
# Colang 1.0 branches that belong to the `if` or `when` above them at their own column (`else:` as `else`).
_V1_ELSE = re.compile(r"^else(?:\s+(if|when)\b.*|\s*:?)$")
_V1_IF = re.compile(r"^(?:if|else\s+if)\b")
_V1_WHEN = re.compile(r"^(?:when|else\s+when)\b")
_V1_FLOW = re.compile(r"^def(?:ine)?\s+(?:sub)?flow\b")
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


def layout(content: str, first_line: int = 1, multiline_brackets: bool = True) -> Layout:
    """Each line's indentation, code and unterminated string; the brackets left open at the end. Without
    `multiline_brackets` (Colang 1.0, whose statements are one line each), a bracket a line leaves open is
    never closed, and the next line is a statement of its own."""
    lines: list[Line] = []
    brackets: list[tuple[int, int, str]] = []
    left_open: list[tuple[int, int, str]] = []
    long_quote: list[str] = []  # the triple quote of a string still open, if any
    for number, text in enumerate(content.splitlines(), first_line):
        continued = bool(brackets or long_quote)
        code_end, open_quote = _scan_line(text, number, brackets, long_quote)
        blanks = text[:len(text) - len(text.lstrip(" \t"))]
        lines.append(Line(number, text[:code_end].strip(), blanks.count(" ") + blanks.count("\t") * TAB,
                          continued, open_quote))
        if not multiline_brackets:
            left_open += brackets
            brackets.clear()
    return Layout(tuple(lines), tuple(left_open + brackets))


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


def v1_problem(exc: Exception, block: str, first_line: int, located: int | None = None,
               said: str | None = None) -> Problem | None:
    """The author's version of a 1.0 parser error raised by one top-level block (`define ...` up to the
    next), whose text starts at `first_line` of its file. `located`: the line of the flow element the error
    came from, where its text names none; `said`: NeMo's words for the whole file, where they are about this
    block (the detail). None where no explanation fits (see `v1_unexplained`)."""
    found = layout(block, first_line, multiline_brackets=False)
    if isinstance(exc, SyntaxError):  # Python's parser on one expression: its line is the expression's
        return _unclosed_in_expression(found, exc) or _v1_indentation(found) or _bad_expression(found, exc)
    reported = _V1_LINE.match(str(exc))
    line = int(reported.group(1)) if reported else located
    cause = exc.__context__ if reported else exc  # NeMo re-raises the error of a line as a bare Exception
    nemo = said or nemo_words(exc)
    problem = (_v1_tabs(block, found) or _v1_outside_flow(found, line) or _v1_misaligned_else(found, line)
               or _v1_indentation(found) or v1_empty_block(found) or _v1_statement(found, nemo, line, cause))
    return (f"{problem[0]} (NeMo's parser: {nemo})", problem[1]) if problem else None


def v1_unexplained(exc: Exception, block: str, first_line: int, located: int | None = None,
                   said: str | None = None) -> Problem:
    """A 1.0 parser error `v1_problem` has no words for: the statement NeMo failed on, and its words."""
    found = layout(block, first_line, multiline_brackets=False)
    reported = _V1_LINE.match(str(exc))
    here = _statement_at(found, int(reported.group(1)) if reported else located) or next(
        (line for line in found.lines if line.statement), None)
    if here is None:
        return f"NeMo's parser failed: {said or nemo_words(exc)}", first_line
    return f"NeMo's parser cannot read `{here.code}`: {said or nemo_words(exc)}", here.number


def nemo_words(exc: BaseException) -> str:
    """The first line of a parser error, without NeMo's "Error parsing line N in file:" (the line is ours)."""
    reported = _V1_LINE.match(str(exc))
    text = (str(exc)[reported.end():] if reported else str(exc)).strip()
    cause = exc.__context__ if reported and exc.__context__ is not None else exc
    first = re.sub(r" at 0x[0-9a-f]+", "", text.splitlines()[0]) if text else type(cause).__name__
    return first if len(first) <= _MAX_WORDS else first[:_MAX_WORDS] + "..."


def v1_empty_block(found: Layout) -> Problem | None:
    """A statement that opens a block (`if`, `else`, `while`, `when`, `define flow`) with nothing indented
    under it. NeMo's parser fails on one that ends the file, in its own terms (`'NoneType' object is not
    subscriptable`), and elsewhere takes the next statement as the block whatever its indentation: `if $x`
    over `stop`, both at one depth, stops only when $x is true."""
    statements = _v1_statements(found)
    for opener, after in zip(statements, [*statements[1:], None], strict=True):
        if not _V1_OPENS.match(opener.code) or (after is not None and after.indent > opener.indent):
            continue
        where = f"expected an indented block under `{opener.code}` (line {opener.number})"
        if opener.indent == 0:  # a `define` with nothing under it
            return f"{where}: the flow has no statements", opener.number
        if after is None or after.indent == 0:
            return f"{where}: the flow ends there", opener.number
        return where, after.number
    return None


def v1_misaligned_else(found: Layout) -> Problem | None:
    """An `else`, `else if` or `else when` that does not line up with the `if` or `when` it belongs to, a second
    `else` of one `if`, or an `else` block indented less than its `if`'s block. NeMo's 1.0 parser accepts
    them and silently changes the flow: it gives a misaligned `else` to the innermost open `if` whose column is
    left of it (`else` at the column of a `while` inside an `if` becomes that outer `if`'s else), reads a
    misaligned `else when` as a branch of its own or as part of the `when`'s block, keeps only the last of two
    `else`s, and ends an `else` block at the first line left of its `if`'s block."""
    return _v1_misaligned_else(found, None)


def _v1_misaligned_else(found: Layout, failed: int | None) -> Problem | None:
    """`v1_misaligned_else`; where NeMo's parser failed (`failed`: its line), only the `else` on that line."""
    for flow in _v1_flows(found):
        for index, line in enumerate(flow):
            matched = _V1_ELSE.match(line.code)
            if matched is None or index == 0 or (failed is not None and line.number != failed):
                continue
            problem = (_v1_else_of_when(flow, index) if matched.group(1) == "when"
                       else _v1_else_of_if(flow, index, accepted=failed is None))
            if problem is not None:
                return problem
    return None


def _v1_flows(found: Layout) -> list[list[Line]]:
    """The statements of each `define flow` / `define subflow`, its header first."""
    flows: list[list[Line]] = []
    for line in _v1_statements(found):
        if line.indent == 0:
            flows.append([line] if _V1_FLOW.match(line.code) else [])  # `define bot`, `define user`: no flow
        elif flows:
            flows[-1].append(line)
    return [flow for flow in flows if flow]


def _v1_else_of_if(flow: Sequence[Line], index: int, accepted: bool) -> Problem | None:
    line = flow[index]
    keyword = _v1_else_keyword(line.code)
    above = next((s for s in reversed(flow[:index]) if s.indent <= line.indent), None)
    if above is not None and above.indent == line.indent and _V1_IF.match(above.code):
        return _v1_short_else_block(flow, index, above)
    owner = _nemo_if(flow, index)
    if above is not None and above.indent == line.indent and _V1_ELSE.match(above.code) and owner is not None:
        return (f"`{keyword}` follows the `else` at line {above.number} of the `if` at line {owner.number}: NeMo's "
                f"parser silently drops the block under line {above.number}: an `if` has one `else`; merge the "
                f"two blocks, or make the first an `else if`"), line.number
    meant = owner or _open(flow, index, _V1_IF)
    if meant is None:
        return None  # no `if` to line up with: NeMo's own error says so (see `_unknown_statement`)
    message = (f"`{keyword}` at column {line.indent + 1} does not line up with the `if` at line {meant.number} "
               f"column {meant.indent + 1}")
    if accepted:
        message += (": NeMo's parser silently makes it the else of that `if` (the innermost open `if` left of "
                    "it), which may not be the `if` meant")
    return f"{message}; start the `{keyword}` at the column of its `if`", line.number


def _v1_short_else_block(flow: Sequence[Line], index: int, owner: Line) -> Problem | None:
    """An `else` whose block is indented less than its `if`'s: NeMo's parser ends the `else` at that line, so
    the block runs after the `if`/`else`, whatever the condition."""
    line = flow[index]
    after = flow[index + 1] if index + 1 < len(flow) else None
    then = flow[flow.index(owner) + 1]
    if after is None or _v1_else_keyword(line.code) != "else" or not line.indent < after.indent < then.indent:
        return None
    return (f"the block under `else` (line {line.number}) is indented {after.indent} spaces, less than the block "
            f"under its `if` (line {owner.number}, {then.indent} spaces): NeMo's parser leaves the `else` empty "
            f"and runs this line after it, whatever the condition; indent both blocks alike"), after.number


def _v1_else_of_when(flow: Sequence[Line], index: int) -> Problem | None:
    line = flow[index]
    above = next((s for s in reversed(flow[:index]) if s.indent <= line.indent), None)
    if above is not None and above.indent == line.indent and _V1_WHEN.match(above.code):
        return None
    meant = _open(flow, index, _V1_WHEN)
    if meant is None:
        return ("`else when` has no `when` right above it at the same indentation: NeMo's parser silently reads "
                "it as a branch of its own, not as an alternative to a `when`"), line.number
    read = ("part of that `when`'s block" if line.indent > meant.indent
            else "a branch of its own, not as an alternative to that `when`")
    return (f"`else when` at column {line.indent + 1} does not line up with the `when` at line {meant.number} "
            f"column {meant.indent + 1}: NeMo's parser silently reads it as {read}; start the `else when` at the "
            f"column of its `when`"), line.number


def _v1_else_keyword(code: str) -> str:
    kind = _V1_ELSE.match(code)
    return f"else {kind.group(1)}" if kind and kind.group(1) else "else"


def _open(flow: Sequence[Line], index: int, opener: re.Pattern[str]) -> Line | None:
    """The innermost statement matching `opener` whose block is still open at `flow[index]`: every statement
    between them is indented deeper than it."""
    shallowest = None  # the least indentation of the statements between
    for line in reversed(flow[1:index]):
        if opener.match(line.code) and (shallowest is None or line.indent < shallowest):
            return line
        shallowest = line.indent if shallowest is None else min(shallowest, line.indent)
    return None


def _nemo_if(flow: Sequence[Line], index: int) -> Line | None:
    """The `if` NeMo's 1.0 parser gives the `else` at `flow[index]`: it keeps a stack of open `if`s (column,
    block column), drops those whose block a line leaves (an `else` only those right of it), and takes the top
    one. None where it fails instead: no `if` left, or a bare `else` at or right of the top one's block column
    (read as `else when flow resuming`)."""
    ifs: list[tuple[Line, int]] = []
    for position, line in enumerate(flow[1:index + 1], 1):
        is_else = _V1_ELSE.match(line.code) is not None and not _V1_WHEN.match(line.code)
        if position == index and _v1_else_keyword(line.code) == "else" and (not ifs or ifs[-1][1] <= line.indent):
            return None
        while ifs and line.indent < ifs[-1][1] and (not is_else or line.indent < ifs[-1][0].indent):
            ifs.pop()
        if position == index:
            return ifs[-1][0] if ifs else None
        if _V1_IF.match(line.code) and position + 1 < len(flow):
            ifs.append((line, flow[position + 1].indent))
    return None


def _v1_statements(found: Layout) -> list[Line]:
    """The statements, without the lines of a multi-line string: NeMo's 1.0 parser reads a line that starts
    with `"` and does not end with one, and the lines after it up to one that does, as one string."""
    statements: list[Line] = []
    in_string = False
    for line in found.lines:
        if not line.statement:
            continue
        if in_string:
            in_string = not line.code.endswith('"')
            continue
        statements.append(line)
        in_string = line.code.startswith('"') and not line.code.startswith('"""') and (
            line.code == '"' or not line.code.endswith('"'))
    return statements


def _statement_at(found: Layout, number: int | None) -> Line | None:
    """The statement on line `number`, or the one it continues."""
    if number is None or not found.lines or not found.lines[0].number <= number <= found.lines[-1].number:
        return None
    line = found.lines[number - found.lines[0].number]
    return line if line.statement else found.statement_before(number - found.lines[0].number + 1)


def _v1_tabs(block: str, found: Layout) -> Problem | None:
    """A statement indented with a tab: NeMo's 1.0 parser counts only spaces, so it reads the line as
    starting a new flow."""
    for text, line in zip(block.splitlines(), found.lines, strict=True):
        blanks = text[:len(text) - len(text.lstrip(" \t"))]
        if "\t" in blanks and line.statement:
            spaces = len(blanks) - len(blanks.lstrip(" "))
            return (f"this line is indented with a tab, which NeMo's Colang 1.0 parser does not count (it reads "
                    f"the line as indented {spaces} spaces): indent with spaces"), line.number
    return None


def _v1_outside_flow(found: Layout, number: int | None) -> Problem | None:
    """A statement at the start of its line (the block's first, or the one NeMo's parser failed on): the parser
    reads it as outside any flow."""
    line = _statement_at(found, number) or next((line for line in found.lines if line.statement), None)
    if line is None or line.indent > 0 or re.match(r"(?:define|def|import|include)\b", line.code):
        return None
    return f"`{line.code}` starts at column 1, outside any flow: indent it under its flow's `define`", line.number


def _v1_statement(found: Layout, nemo: str, number: int | None, cause: BaseException | None) -> Problem | None:
    """What is wrong with the statement NeMo's parser failed on, from its error."""
    here = _statement_at(found, number)
    if here is None:
        return _v1_unplaced(found, nemo)
    code = here.code
    token = _V1_MAIN_TOKEN.search(nemo)
    defined = _V1_DEFINE_TOKEN.match(nemo)
    if re.fullmatch(r"def(?:ine)?", code):
        message = f"`{code}` names nothing to define: write {_words(_V1_DEFINES, 'define ')} and a name"
    elif token:
        message = _unknown_statement(code, token.group(1))
    elif defined:
        message = (f"unknown definition `define {defined.group(1)}`: a top-level block is "
                   f"{_words(_V1_DEFINES, 'define ')}{_did_you_mean(defined.group(1), _V1_DEFINES, 'define ')}")
    elif isinstance(cause, IndexError) and code in _V1_OPERANDS:  # `split(" ", 1)[1]` of a bare keyword
        message = f"`{code}` needs {_V1_OPERANDS[code]}"
    elif _V1_PARAMS.match(nemo):
        message = _unclosed_arguments(found, here)
    elif _V1_SPLIT_ARGS.match(nemo):
        message = _unbalanced_arguments(code, _V1_SPLIT_ARGS.match(nemo))
    elif isinstance(cause, ValueError) and "malformed node or string" in nemo:  # ast.literal_eval
        message = _not_a_value(code)
    elif any(bracket[0] == here.number for bracket in found.unclosed):  # `do check pii(`: its own words
        message = _unclosed_arguments(found, here)
    else:
        return None
    return (message, here.number) if message else None


def _v1_unplaced(found: Layout, nemo: str) -> Problem | None:
    """An error of the flow's elements whose line NeMo's parser does not say: an unclosed call's arguments."""
    if _V1_PARAMS.match(nemo) and found.unclosed:
        number, column, bracket = found.unclosed[0]
        here = _statement_at(found, number)
        return (_unclosed_arguments(found, here) if here else f"{bracket!r} at column {column} is never closed"), \
            number
    return None


def _unknown_statement(code: str, token: str) -> str:
    if re.fullmatch(r"exec(?:ute)?", code):
        return "`execute` names no action: write `execute <action>(...)`, e.g. `execute warn(reason=\"...\")`"
    if token.startswith("$"):
        if re.fullmatch(r"\$[\w.]+\s*=", code):
            return f"`{code}` assigns nothing: a value or `execute <action>(...)` must follow the `=`"
        if re.match(r"\$[\w.]+(?:=(?!=)|\s*=(?![=\s]))", code):  # `$x=1`, `$x =1`; not `$x == 1`
            return f"`{code}`: Colang 1.0 needs a space on each side of the `=` (`$name = value`)"
        return f"`{code}` is not a statement: a line that starts with a variable assigns it (`$name = value`)"
    if token == "flow" and code.startswith("else"):  # NeMo reads an `else` no `if` owns as `else when flow`
        return f"`{code}` has no `if` above it at the same indentation"
    if token != code.split()[0]:
        return ""
    close = _did_you_mean(token, _V1_STATEMENTS, "")
    return f"`{token}` is not a Colang 1.0 statement" + (
        close or f"; statements start with {_words(_V1_STATEMENTS, '')}, or `$name = `")


def _unclosed_arguments(found: Layout, here: Line) -> str:
    """`execute block(reason="x"`: NeMo's parser says "Incorrect params str: reason="x"", at no line."""
    unclosed = next((b for b in found.unclosed if b[0] == here.number), None)
    if unclosed is not None:
        return f"the arguments of `{here.code}` are never closed: {unclosed[2]!r} at column {unclosed[1]} has no " \
               f"{_PAIRS[unclosed[2]]!r}"
    closing = _closing_bracket(here.code)
    if closing is not None and here.code[closing + 1:].strip():
        return f"unexpected `{here.code[closing + 1:].strip()}` after the arguments of `{here.code[:closing + 1]}`"
    return ""


def _unbalanced_arguments(code: str, found: re.Match[str]) -> str:
    unexpected, expected, got = found.group(2), found.group(3), found.group(4)
    if unexpected:
        return f"the arguments of `{code}` close a bracket never opened: an unexpected {unexpected!r}"
    if expected not in _PAIRS.values():
        return f"the arguments of `{code}` leave a string open: a {expected!r} is never closed"
    return f"the arguments of `{code}` close {_CLOSING[expected]!r} with {got!r} (expected {expected!r})"


def _not_a_value(code: str) -> str:
    """An argument NeMo's parser reads with `ast.literal_eval`: neither a literal nor a `$variable`."""
    closing = _closing_bracket(code)
    opening = code.find("(")
    for argument in _top_level_split(code[opening + 1:closing] if opening >= 0 and closing is not None else ""):
        name, _, value = argument.rpartition("=")
        value = value.strip()
        if value.startswith("$"):
            continue
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError):
            key = f"{name.strip()}=" if name.strip() else ""
            return (f"the argument `{argument.strip()}` of `{code}` is not a value: quote a string "
                    f"(`{key}\"{value}\"`) or write a variable with `$` (`{key}${value}`)")
    return f"an argument of `{code}` is not a value: quote strings and write variables with `$`"


def _outside_strings(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, bracket depth after it) of each char of `text` outside string literals (quotes left out)."""
    depth, quote = 0, ""
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        else:
            depth += 1 if char in _PAIRS else -1 if char in _CLOSING else 0
            yield index, char, depth


def _closing_bracket(code: str) -> int | None:
    """The index of the bracket that closes the first `(` of `code`, outside strings."""
    return next((index for index, char, depth in _outside_strings(code) if char in _CLOSING and depth == 0), None)


def _top_level_split(text: str) -> list[str]:
    """`a=1, b=[1, 2]` -> [`a=1`, ` b=[1, 2]`]: commas outside brackets and strings."""
    parts, start = [], 0
    for index, char, depth in _outside_strings(text):
        if char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    return [*parts, text[start:]] if text.strip() else parts


def _did_you_mean(word: str, choices: Sequence[str], prefix: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean `{prefix}{close[0]}`?" if close else ""


def _words(choices: Sequence[str], prefix: str) -> str:
    words = [f"`{prefix}{choice}`" for choice in choices]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _unclosed_in_expression(found: Layout, exc: SyntaxError) -> Problem | None:
    if "unterminated string" in (exc.msg or ""):
        line = next((line for line in found.lines if line.open_quote is not None), None)
        if line is not None:
            return f"unterminated string: the quote at column {line.open_quote} is never closed", line.number
    if "never closed" in (exc.msg or "") and found.unclosed:
        named = re.match(r"'(.)' was never closed", exc.msg or "")  # the bracket Python names, if open here
        number, column, bracket = next((b for b in found.unclosed if named and b[2] == named.group(1)),
                                       found.unclosed[0])
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
