"""Variables a flow reads that nothing sets: a misspelt check variable (`$bot_mesage`), or a name from elsewhere
(`$last_bot_message`, which NeMo's dialog fills but a check does not).

Neither Colang version complains: such a variable is empty (None), so `"Chase" in $bot_mesage` is never true and
the flow silently never blocks. `guardrails policy validate` warns about each, with the closest check variable.
A text scan, run after NeMo's parser accepted the files:

* Colang 2.x: a flow's variables are its own unless declared `global`; one it reads is set when the flow assigns
  it (`$x = ...`, `... as $x`, `for $x in`), takes it as a parameter, or declares it `global`.
* Colang 1.0: variables are shared by the flows of a check; one is set when any flow of the bundle assigns it.
  NeMo sets others too (`$relevant_chunks`, ...), so 1.0 only reports names close to a check variable.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

_HEADER = re.compile(r"^(?:define\s+(?:sub)?flow|flow)\s+(.+?)\s*$")
_TOP_LEVEL = re.compile(r"^\S")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_INTERPOLATED = re.compile(r"\{\s*\$([A-Za-z_]\w*)")
_VARIABLE = re.compile(r"\$([A-Za-z_]\w*)")
# What sets a variable on a line: `$x = ...` (also `+=`), `... as $x`, `for $x in ...`.
_TARGETS = (re.compile(r"^\$([A-Za-z_]\w*)\s*[-+*/]?=(?!=)"), re.compile(r"\bas\s+\$([A-Za-z_]\w*)"),
            re.compile(r"^for\s+\$([A-Za-z_]\w*)\s+in\b"))
_NAMED_ARGUMENT = re.compile(r"\$[A-Za-z_]\w*\s*=(?!=)")
_GLOBAL = re.compile(r"^global\s+(.*)$")
# Set by NeMo's 2.x runtime in every flow.
RUNTIME_VARIABLES_2X = frozenset({"system", "self", "config"})
# Close enough to a check variable to read as a misspelling of it (`bot_mesage`, `last_bot_message`).
SUGGEST_CUTOFF = 0.75


@dataclass(frozen=True, slots=True)
class UnsetRead:
    name: str
    flow: str
    file: Path
    line: int
    suggestion: str | None  # the check variable it probably means


@dataclass(slots=True)
class _Flow:
    name: str
    header: str
    lines: list[tuple[int, str]]  # (line number, code without comments and string contents)
    reads: list[tuple[int, str]]


def unset_reads(files: list[Path], version: str, check_variables: Collection[str]) -> list[UnsetRead]:
    """Each variable a flow reads (first read per flow) that nothing sets, in file and line order."""
    flows = [flow for file in files for flow in _flows(file)]
    shared = set(check_variables) | (
        {n for _, flow in flows for n in _assigned(flow)} if version == "1.0" else RUNTIME_VARIABLES_2X)
    found: list[UnsetRead] = []
    for file, flow in flows:
        known = shared if version == "1.0" else shared | _assigned(flow) | _declared(flow)
        reported: set[str] = set()
        for number, name in flow.reads:
            if name in known or name in reported:
                continue
            close = difflib.get_close_matches(name, list(check_variables), n=1, cutoff=SUGGEST_CUTOFF)
            if version == "1.0" and not close:
                continue  # NeMo may set it
            reported.add(name)
            found.append(UnsetRead(name, flow.name, file, number, close[0] if close else None))
    return found


def _flows(file: Path) -> Iterator[tuple[Path, _Flow]]:
    flow: _Flow | None = None
    for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        code = _code(raw)
        if _TOP_LEVEL.match(raw) and code:
            if flow is not None:
                yield file, flow
            header = _HEADER.match(code)
            flow = _Flow(header.group(1).split("$")[0].split("->")[0].strip(), code, [], []) if header else None
            if flow is not None:  # parameters are the flow's own: set by the caller
                flow.lines.append((number, code))
            continue
        if flow is None or not code:
            continue
        flow.lines.append((number, code))
        if not _GLOBAL.match(code):
            names = [*_INTERPOLATED.findall(raw), *_VARIABLE.findall(_untargeted(code))]
            flow.reads += [(number, name) for name in names]
    if flow is not None:
        yield file, flow


def _code(line: str) -> str:
    """The line without its comment and with its strings emptied (`"costs $5"` reads no variable)."""
    emptied = _STRING.sub('""', line)
    return emptied.split("#", 1)[0].strip()


def _targets(code: str) -> set[str]:
    return {name for pattern in _TARGETS for name in pattern.findall(code)}


def _untargeted(code: str) -> str:
    """The line without the variables it sets, nor the parameter names of a 2.x flow call (`$limit=15`): what
    is left of them is read."""
    for pattern in _TARGETS:
        code = pattern.sub(lambda match: match.group(0).replace("$" + match.group(1), ""), code)
    return _NAMED_ARGUMENT.sub("=", code)


def _assigned(flow: _Flow) -> set[str]:
    names = {name for _, code in flow.lines[1:] for name in _targets(code)}
    if flow.lines and _HEADER.match(flow.lines[0][1]):
        names |= set(_VARIABLE.findall(flow.lines[0][1]))  # parameters and return values
    return names


def _declared(flow: _Flow) -> set[str]:
    return {name for _, code in flow.lines for match in [_GLOBAL.match(code)] if match
            for name in _VARIABLE.findall(match.group(1))}
