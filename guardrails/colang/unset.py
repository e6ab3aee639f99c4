"""Variables a flow reads that nothing sets: a misspelt check variable (`$bot_mesage`), or a name from elsewhere
(`$last_bot_message`, which NeMo's dialog fills but a check does not).

Neither Colang version complains: such a variable is empty (None), so `"Chase" in $bot_mesage` is never true and
the flow silently never blocks. `guardrails policy validate` warns about each, with the closest check variable.
A text scan, run after NeMo's parser accepted the files:

* Colang 2.x: a flow's variables are its own unless declared `global`; one it reads is set when the flow assigns
  it (`$x = ...`, `... as $x`, `for $x in`), takes it as a parameter, or declares it `global`. A `global` one is
  set when it is a check variable, some flow both declares it `global` and assigns it, or a bundle action
  returns it in `ActionResult(context_updates={...})`; else it is empty (`global $bot_mesage`).
* Colang 1.0: variables are shared by the flows of a check; one is set when any flow of the bundle assigns it.
  NeMo sets others too (`$relevant_chunks`, ...), so 1.0 only reports names close to a check variable.
"""

from __future__ import annotations

import ast
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
# Globals the service's 2.x dispatcher sets besides the check variables (see bridge._dispatcher).
SERVICE_GLOBALS_2X = frozenset({"guardrails_rail"})
# Close enough to a check variable to read as a misspelling of it (`bot_mesage`, `last_bot_message`).
SUGGEST_CUTOFF = 0.75


@dataclass(frozen=True, slots=True)
class UnsetRead:
    name: str
    flow: str
    file: Path
    line: int
    suggestion: str | None  # the check variable it probably means
    declared: bool = False  # 2.x: a `global` nothing sets, reported at its declaration
    local_in: str | None = None  # 2.x: a flow that assigns it without declaring it `global`


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
    known_globals: set[str] = set()
    dynamic = False
    if version != "1.0":  # what sets a global: the service, a flow that declares and assigns it, an action
        by_actions, dynamic = _action_updates(files)
        known_globals = (set(check_variables) | RUNTIME_VARIABLES_2X | SERVICE_GLOBALS_2X | by_actions
                         | {name for _, flow in flows for name in _assigned(flow) & _declared(flow)})
    found: list[UnsetRead] = []
    for file, flow in flows:
        known = shared if version == "1.0" else shared | _assigned(flow) | _declared(flow)
        reported: set[str] = set()
        in_flow: list[UnsetRead] = []
        for number, name in flow.reads:
            if name in known or name in reported:
                continue
            close = difflib.get_close_matches(name, list(check_variables), n=1, cutoff=SUGGEST_CUTOFF)
            if version == "1.0" and not close:
                continue  # NeMo may set it
            reported.add(name)
            in_flow.append(UnsetRead(name, flow.name, file, number, close[0] if close else None))
        if version != "1.0":
            in_flow += _unset_globals(file, flow, flows, known_globals, dynamic)
        found += sorted(in_flow, key=lambda read: read.line)
    return found


def _unset_globals(file: Path, flow: _Flow, flows: list[tuple[Path, _Flow]], known: set[str],
                   dynamic: bool) -> list[UnsetRead]:
    """The globals `flow` declares that nothing sets (none of `known`). Where an action's `context_updates` are
    not literal names (`dynamic`), only a name close to a known one is reported: the action may set any other."""
    found = []
    for name in sorted(_declared(flow) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=SUGGEST_CUTOFF)
        if dynamic and not close:
            continue
        line = next(n for n, code in flow.lines if _GLOBAL.match(code) and name in _VARIABLE.findall(code))
        local = next((other.name for _, other in flows
                      if any(name in _targets(code) for _, code in other.lines[1:])), None)
        found.append(UnsetRead(name, flow.name, file, line, close[0] if close else None, True, local))
    return found


def _action_updates(colang_files: list[Path]) -> tuple[set[str], bool]:
    """(names the bundle's actions set through `context_updates={"name": ...}`, whether one sets names this
    cannot read: a dict built elsewhere, a file that does not parse)."""
    from guardrails.colang.bundle_actions import action_files
    from guardrails.policy import POLICY_FILE

    bundles = {next((d for d in file.parents if (d / POLICY_FILE).is_file()), None) for file in colang_files}
    names: set[str] = set()
    dynamic = False
    for file in [f for bundle in sorted(b for b in bundles if b) for f in action_files(bundle)]:
        text = file.read_text(encoding="utf-8", errors="replace")
        if "context_updates" not in text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return names, True
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "context_updates":
                keys = _literal_keys(node.value)
                names |= keys or set()
                dynamic = dynamic or keys is None
            elif _names(node, "context_updates") or (  # `result.context_updates[k] = v`, a positional dict
                    isinstance(node, ast.Call) and _names(node.func, "ActionResult") and len(node.args) > 2):
                dynamic = True
    return names, dynamic


def _names(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Name) and node.id == name) or (isinstance(node, ast.Attribute) and node.attr == name)


def _literal_keys(value: ast.expr) -> set[str] | None:
    """The keys of `{"name": ...}` or `dict(name=...)`; None for anything else."""
    if isinstance(value, ast.Dict) and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                           for k in value.keys):
        return {str(k.value) for k in value.keys if isinstance(k, ast.Constant)}
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict" \
            and not value.args and all(k.arg for k in value.keywords):
        return {str(k.arg) for k in value.keywords}
    return None


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
