"""Shell text read the way the shell expands it, for obfuscations a parser alone reads as harmless words.

`rm${IFS}-rf${IFS}/`, `{rm,-rf,/}`, `X=rm; $X -rf /` and `$(echo rm) -rf /` all run `rm -rf /`, but a parser
sees one odd word, or a command named `$X`. `expand()` rewrites those forms into the words the shell would run,
so the rules can judge the result too. `plain_words()` is the cheap view the pre-filter reads: the same
expansions, and quotes and backslashes dropped (`r''m`, `\\rm`, `"/etc/"shadow`).
"""

from __future__ import annotations

import re

# `$IFS`, `${IFS}` and its trimmed forms (`${IFS%??}`) expand to whitespace: a space that is not a space.
IFS = re.compile(r"\$\{IFS[^}]*\}|\$IFS(?![A-Za-z0-9_])")
# `{a,b,c}` as a whole word expands to the words a b c (only as a word: `x{a,b}` rewritten wrong is still harmless).
# Items and commas are read apart (`[^,]` in the items): a pattern whose items could hold commas tried every comma
# as the last one, and an unclosed `{a,a,a,...` of 20 KB took a second.
BRACE_LIST = re.compile(r"(?<![^\s;&|(])\{([^{}\s,]*(?:,[^{}\s,]*)+)\}(?![^\s;&|)])")
# NAME=value, optionally after export/declare/local/readonly, at the start of a command.
ASSIGNMENT = re.compile(r"(?<![^\s;&|(])(?:(?:export|declare|local|readonly|typeset)\s+(?:-\w+\s+)*)?"
                        r"([A-Za-z_]\w*)=(\"[^\"]*\"|'[^']*'|[^\s;&|)]*)")
REFERENCE = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
# `$(echo rm)`, `` `printf rm` ``: a substitution whose output is its literal argument.
ECHOED = re.compile(r"\$\(\s*(?:echo|printf)\s+(['\"]?)([^()'\"`$]*)\1\s*\)"
                    r"|`\s*(?:echo|printf)\s+(['\"]?)([^'\"`$]*)\3\s*`")
# bashlex cannot read a quoted here-document delimiter (`<<'EOF'`); quoting only stops expansion in the body.
QUOTED_HEREDOC = re.compile(r"(?<!<)<<(-?)[ \t]*(['\"])([^'\"\n]+)\2")  # (not a `<<<` here-string)
PASSES = 3  # `a=r; b=$a; $b` needs two; a self-reference (`PATH=$PATH:x`) must not loop
MAX_GROWTH = 4  # `a=<10 KB>; $a$a$a...` must not expand into megabytes: past this factor, expansion stops


def expand(text: str) -> str:
    """`text` with IFS, whole-word brace lists, literal echo substitutions and variables assigned in the text
    itself expanded; the same text when it uses none of them."""
    if "$" not in text and "{" not in text and "`" not in text:
        return text
    text = IFS.sub(" ", text)
    text = BRACE_LIST.sub(lambda m: " ".join(m.group(1).split(",")), text)
    text = ECHOED.sub(lambda m: m.group(2) if m.group(2) is not None else m.group(4), text)
    limit = MAX_GROWTH * len(text) + 256
    for _ in range(PASSES):
        expanded = _substitute_variables(text)
        if expanded == text or len(expanded) > limit:
            break
        text = expanded
    return text


def _substitute_variables(text: str) -> str:
    values = {name: value[1:-1] if value[:1] in "'\"" else value for name, value in ASSIGNMENT.findall(text)}
    if not values:
        return text
    return REFERENCE.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def plain_words(text: str) -> str:
    """The text expanded, without quotes and backslashes: the words a pre-filter should see."""
    return expand(text).replace("'", "").replace('"', "").replace("\\", "")


def unquote_heredocs(text: str) -> str:
    return QUOTED_HEREDOC.sub(r"<<\1\3", text) if "<<" in text else text
