"""Read the flow names, and the actions and flows they call, out of a policy's Colang files, with file and line.

Uses nemoguardrails' own parser, imported on first use: a policy without `.co` files never pays for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardrails.colang.syntax import (
    Line,
    layout,
    nemo_words,
    v1_empty_block,
    v1_misaligned_else,
    v1_problem,
    v1_unexplained,
    v2_problem,
)

# Colang 1.0: the parser also turns `bot ...` and `stop` into actions (`utter`); only `execute` is the author's.
_V1_EXECUTE = re.compile(r"^\s*(?:\$\w+\s*=\s*)?execute\b")
# Colang 2.x: these statements start the actions they name; `match`/`send` only refer to events.
_V2_STARTING_OPS = frozenset({"await", "start"})
_V2_BRANCHES = ("elements", "then_elements", "else_elements")
_GLOBAL = re.compile(r"^global\s+\$")
_VARIABLE = re.compile(r"\$(\w+)")


@dataclass(frozen=True, slots=True)
class ActionCall:
    """An action a flow calls (`execute name(...)` in 1.0, `await NameAction(...)` in 2.x)."""

    name: str
    flow: str
    file: Path
    line: int | None
    arguments: Mapping[str, str] = field(default_factory=dict)  # argument -> its source text (`"pii"`, `$x`)


@dataclass(frozen=True, slots=True)
class FlowCall:
    """A flow another flow runs: `do name` in 1.0; `await`/`start`/`activate`/`when`/`match name` in 2.x."""

    name: str
    flow: str  # the flow that calls it
    file: Path
    line: int | None


@dataclass(frozen=True, slots=True)
class GlobalUse:
    """A check variable (`$bot_message`) a Colang 2.x flow uses before declaring it `global`."""

    name: str
    flow: str
    file: Path
    line: int
    assigns: bool  # the first use assigns it; else it reads it


class ColangSyntaxError(Exception):
    def __init__(self, message: str, file: Path, line: int | None) -> None:
        super().__init__(message)
        self.message, self.file, self.line = message, file, line

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


def quiet_nemoguardrails() -> None:
    """Telemetry off before the first import (it phones home by default); no INFO chatter."""
    import logging

    os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
    logging.getLogger("nemoguardrails").setLevel(logging.ERROR)


def flows_in(files: list[Path], version: str) -> dict[str, Path]:
    """Flow name -> the file that defines it (the last definition wins, as in NeMo)."""
    quiet_nemoguardrails()
    from nemoguardrails.colang import parse_colang_file

    flows: dict[str, Path] = {}
    overriding: set[str] = set()  # 2.x flows marked `@override`: a second definition is meant
    for file in files:
        content = file.read_text(encoding="utf-8")
        try:
            parsed = parse_colang_file(file.name, content=content, version=version)
        except Exception as exc:
            raise _syntax_error(exc, file, content, version) from None
        if version == "1.0":  # NeMo accepts these, and silently runs something other than the layout says
            found = layout(content, multiline_brackets=False)
            accepted = v1_empty_block(found) or v1_misaligned_else(found)
            if accepted is not None:
                raise ColangSyntaxError(f"Colang syntax error: {accepted[0]}", file, accepted[1])
        for flow in parsed.get("flows", []):
            name = flow.get("id") if isinstance(flow, dict) else getattr(flow, "name", None)
            if not name:
                continue
            if any(d.name == "override" for d in getattr(flow, "decorators", None) or ()):
                overriding.add(str(name))
            if str(name) in flows and str(name) not in overriding:
                raise _duplicate_flow(str(name), flows[str(name)], file)
            flows[str(name)] = file
    return flows


def _duplicate_flow(name: str, first: Path, second: Path) -> ColangSyntaxError:
    """Two definitions of one flow: NeMo's 1.0 runtime silently keeps one (a stale copy in `rails_old.co` can
    replace the flow the author edits), and its 2.x runtime refuses them without saying where."""
    first_lines, second_lines = _header_lines(first, name), _header_lines(second, name)
    first_line = first_lines[0] if first_lines else None
    line = (second_lines[1] if first == second and len(second_lines) > 1 else
            second_lines[0] if second_lines else None)
    where = f"{first.name}:{first_line}" if first_line else first.name
    return ColangSyntaxError(f"flow {name!r} is defined twice (first at {where}); only one of them would run: "
                             "remove or rename the other", second, line)


def _header_lines(file: Path, name: str) -> list[int]:
    header = re.compile(rf"^(?:define\s+(?:sub)?flow|flow)\s+{re.escape(name)}\s*(?:[$#].*)?$")
    return [n for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1) if header.match(line)]


def flow_line(file: Path, name: str) -> int | None:
    """The line of the header that defines flow `name` in `file` (the last one, as in `flows_in`)."""
    header = re.compile(rf"^(?:define\s+(?:sub)?flow|flow)\s+{re.escape(name)}\s*(?:[$#].*)?$")
    lines = file.read_text(encoding="utf-8").splitlines()
    return next((n for n in range(len(lines), 0, -1) if header.match(lines[n - 1])), None)


def _syntax_error(exc: Exception, file: Path, content: str, version: str) -> ColangSyntaxError:
    """The parser's error as the author needs it: the line at fault and what is wrong there."""
    if version == "1.0":
        return _v1_syntax_error(exc, file, content)
    try:
        message, line = v2_problem(exc, content) or _parser_words(exc)
    except Exception:  # explaining the error must never hide it
        message, line = _parser_words(exc)
    return ColangSyntaxError(f"Colang syntax error: {message}", file, line)


def _v1_syntax_error(exc: Exception, file: Path, content: str) -> ColangSyntaxError:
    """NeMo's 1.0 parser fails in its own terms (`'NoneType' object is not subscriptable`, `Incorrect params
    str: ...`), often at no line or the wrong one: the error in Colang's terms, else the statement it failed on
    with its words behind a "Colang 1.0 syntax error" lead; never its words alone."""
    failed, first_line, block = exc, 1, content
    try:
        failed, first_line, block = _v1_failing_block(file.name, content) or (exc, 1, content)
        located = None if isinstance(getattr(failed, "line", None), int) else _v1_failing_element(
            file.name, block, first_line)
        said = nemo_words(exc) if _v1_within(exc, failed, first_line, block) else None
        explained = v1_problem(failed, block, first_line, located, said)
        if explained is not None:
            return ColangSyntaxError(f"Colang syntax error: {explained[0]}", file, explained[1])
        message, line = v1_unexplained(failed, block, first_line, located, said)
    except Exception:  # explaining the error must never hide it
        line = _parser_words(failed)[1] or first_line
        message = f"NeMo's parser failed: {nemo_words(failed)}"
    return ColangSyntaxError(f"Colang 1.0 syntax error: {message}", file, line)


def _parser_words(exc: Exception) -> tuple[str, int | None]:
    line = getattr(exc, "line", None)  # lark's errors carry it; Python's SyntaxError's `lineno` is the expression's
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first, line if isinstance(line, int) and line > 0 else None


def _v1_failing_block(file_name: str, content: str) -> tuple[Exception, int, str] | None:
    """(error, first line, text) of the first top-level block (`define ...` up to the next) that fails to parse
    on its own. NeMo's 1.0 parser names no line, or a wrong one, for errors inside an expression or an
    indentation it does not expect: the block narrows the search to one flow. Parsed at its own line numbers."""
    from nemoguardrails.colang import parse_colang_file

    lines = content.splitlines()
    starts = [i for i, text in enumerate(lines) if text[:1] not in ("", " ", "\t", "#")]
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        block = "\n".join(lines[start:end]) + "\n"
        try:
            parse_colang_file(file_name, content="\n" * start + block, version="1.0")
        except Exception as exc:
            return exc, start + 1, block
    return None


def _v1_within(exc: Exception, failed: Exception, first_line: int, block: str) -> bool:
    """Whether NeMo's error for the whole file is about the block that fails on its own (the author sees the
    former; parsed alone, a block may fail in other words)."""
    line = getattr(exc, "line", None)
    if isinstance(line, int):
        return first_line <= line < first_line + len(block.splitlines())
    return not isinstance(getattr(failed, "line", None), int)


def _v1_failing_element(file_name: str, block: str, first_line: int) -> int | None:
    """The line of the flow element NeMo's 1.0 parser fails on after reading the lines (an action's arguments
    it cannot split or evaluate): each element parsed on its own, the deepest that fails."""
    from nemoguardrails.colang.v1_0.lang.colang_parser import (
        parse_coflows_to_yml_flows,
        parse_snippets_and_imports,
    )

    content = "\n" * (first_line - 1) + block
    snippets, _ = parse_snippets_and_imports(file_name, content)
    parsed = parse_coflows_to_yml_flows(file_name, content, include_source_mapping=True, snippets=snippets)
    return next((line for items in parsed["flows"].values() if (line := _deepest_failing(items)) is not None),
                None)


def _deepest_failing(node: Any) -> int | None:
    from nemoguardrails.colang.v1_0.lang.coyml_parser import parse_flow_elements

    children = node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else []
    for child in children:
        if not isinstance(child, (list, dict)):
            continue
        deeper = _deepest_failing(child)
        if deeper is not None:
            return deeper
        source = child.get("_source_mapping") if isinstance(child, dict) else None
        if isinstance(source, dict):
            try:
                parse_flow_elements([child])
            except Exception:
                return source.get("line_number")
    return None


def action_calls(files: list[Path], version: str) -> list[ActionCall]:
    """Every action call in the files' flows, in file order. The files must parse (see `flows_in`)."""
    calls: list[ActionCall] = []
    for file, lines, flow in _parsed_flows(files, version):
        found = _v1_calls(flow, file) if version == "1.0" else _v2_calls(flow, file, lines)
        calls.extend(sorted(found, key=lambda call: call.line or 0))  # a `when` lists its specs first
    return calls


def flow_calls(files: list[Path], version: str) -> list[FlowCall]:
    """Every flow the files' flows run, in file order. The files must parse (see `flows_in`)."""
    calls: list[FlowCall] = []
    for file, lines, flow in _parsed_flows(files, version):
        found = _v1_flow_calls(flow, file) if version == "1.0" else _v2_flow_calls(flow, file, lines)
        calls.extend(sorted(found, key=lambda call: call.line or 0))
    return calls


def undeclared_globals(files: list[Path], names: Collection[str]) -> list[GlobalUse]:
    """Colang 2.x: each of `names` (the check's variables) a flow uses before its `global $name`. There it is
    the flow's own variable, empty until assigned, and what the flow assigns to it stays in the flow. A flow's
    parameters are its own by design. The files must parse (see `flows_in`)."""
    uses: list[GlobalUse] = []
    for file, _, flow in _parsed_flows(files, "2.x"):
        own = {member.name for member in [*flow.parameters, *flow.return_members]}
        first_line = flow._source.line if flow._source else 1
        found = _first_uses(layout(flow.source_code or "", first_line).lines, set(names) - own)
        uses.extend(GlobalUse(name, flow.name, file, line, assigns) for name, (line, assigns) in found.items())
    return sorted(uses, key=lambda use: use.line)


def _first_uses(lines: Sequence[Line], names: set[str]) -> dict[str, tuple[int, bool]]:
    """Name -> (line, whether it assigns) of its first use before a `global` declares it."""
    declared: set[str] = set()
    uses: dict[str, tuple[int, bool]] = {}
    for line in lines:
        if not line.code or line.code.startswith(("@", "flow ")):  # the header names parameters only
            continue
        if _GLOBAL.match(line.code):
            declared.update(_VARIABLE.findall(line.code))
            continue
        for name in _VARIABLE.findall(line.code):
            if name in names and name not in declared and name not in uses:
                uses[name] = (line.number, bool(re.match(rf"\${name}\s*[-+*/]?=(?!=)", line.code)))
    return uses


def _parsed_flows(files: list[Path], version: str) -> Iterator[tuple[Path, list[str], Any]]:
    """(file, its lines, flow) for each flow NeMo's parser finds: a dict in 1.0, a `Flow` in 2.x."""
    quiet_nemoguardrails()
    from nemoguardrails.colang import parse_colang_file

    for file in files:
        content = file.read_text(encoding="utf-8")
        parsed = parse_colang_file(file.name, content=content, version=version)
        lines = content.splitlines()
        for flow in parsed.get("flows", []):
            yield file, lines, flow


def _v1_calls(flow: Mapping[str, Any], file: Path) -> Iterator[ActionCall]:
    for element in flow.get("elements", []):
        source = element.get("_source_mapping") or {}
        if element.get("_type") == "run_action" and _V1_EXECUTE.match(source.get("line_text") or ""):
            arguments = {str(k): str(v) for k, v in (element.get("action_params") or {}).items()}
            yield ActionCall(str(element["action_name"]), str(flow["id"]), file, source.get("line_number"),
                             arguments)


def _v1_flow_calls(flow: Mapping[str, Any], file: Path) -> Iterator[FlowCall]:
    for element in flow.get("elements", []):
        name = element.get("flow_name") if element.get("_type") == "flow" else None  # `do name`
        if name and not str(name).startswith("$"):
            line = (element.get("_source_mapping") or {}).get("line_number")
            yield FlowCall(str(name), str(flow["id"]), file, line)


def _v2_calls(flow: Any, file: Path, lines: list[str]) -> Iterator[ActionCall]:
    from nemoguardrails.colang.v2_x.lang.colang_ast import SpecType

    flow_line = flow._source.line if flow._source else 1
    for spec, line, starting in _v2_specs(flow.elements, None, starting=False):
        if starting and spec.spec_type is SpecType.ACTION and spec.name:
            arguments = {str(k): str(v) for k, v in (spec.arguments or {}).items()}
            yield ActionCall(spec.name, flow.name, file, line or _line_naming(lines, spec.name, flow_line),
                             arguments)


def awaited_events(files: list[Path]) -> list[ActionCall]:
    """Colang 2.x: each `await X(...)` / `start X(...)` whose X the parser read as an event, not an action or a
    flow: an action's name must end in `Action` (`await TransferLimitActoin()` is neither). The runtime cannot
    start an event, and its error fails every flow of the check. The files must parse (see `flows_in`)."""
    from nemoguardrails.colang.v2_x.lang.colang_ast import SpecOp, SpecType

    calls: list[ActionCall] = []
    for file, lines, flow in _parsed_flows(files, "2.x"):
        flow_line = flow._source.line if flow._source else 1
        for op in _v2_ops(flow.elements):
            spec = op.spec
            if (isinstance(op, SpecOp) and op.op in _V2_STARTING_OPS and getattr(spec, "spec_type", None)
                    is SpecType.EVENT and spec.name):
                line = op._source.line if op._source else _line_naming(lines, spec.name, flow_line)
                calls.append(ActionCall(spec.name, flow.name, file, line))
    return calls


def _v2_ops(node: Any) -> Iterator[Any]:
    """Every statement of a flow that names a spec (`await`, `start`, `match`, ...), at any depth."""
    from nemoguardrails.colang.v2_x.lang.colang_ast import SpecOp

    if isinstance(node, list):
        for child in node:
            yield from _v2_ops(child)
    elif isinstance(node, SpecOp):
        yield node
    elif not isinstance(node, dict):
        for branch in _V2_BRANCHES:
            yield from _v2_ops(getattr(node, branch, None) or [])


def _v2_flow_calls(flow: Any, file: Path, lines: list[str]) -> Iterator[FlowCall]:
    from nemoguardrails.colang.v2_x.lang.colang_ast import SpecType

    flow_line = flow._source.line if flow._source else 1
    for spec, line, _ in _v2_specs(flow.elements, None, starting=False):
        if spec.spec_type is SpecType.FLOW and spec.name:  # any statement: `match (x).Finished()` needs x too
            yield FlowCall(spec.name, flow.name, file, line or _line_naming(lines, spec.name, flow_line))


def _v2_specs(node: Any, line: int | None, starting: bool) -> Iterator[tuple[Any, int | None, bool]]:
    """(spec, line where known, whether its statement starts it: `await`, `start`, `when`) for every spec a
    flow's statements name, at any depth."""
    from nemoguardrails.colang.v2_x.lang.colang_ast import Spec, SpecOp, When

    if isinstance(node, list):
        for child in node:
            yield from _v2_specs(child, line, starting)
    elif isinstance(node, dict):  # `A and B`, `A or B`
        yield from _v2_specs(node.get("elements", []), line, starting)
    elif isinstance(node, Spec):
        yield node, line, starting
    elif isinstance(node, SpecOp):
        yield from _v2_specs(node.spec, node._source.line if node._source else line, node.op in _V2_STARTING_OPS)
    else:
        if isinstance(node, When):  # `when X` starts X, like `await X`
            yield from _v2_specs(node.when_specs, line, starting=True)
        for branch in _V2_BRANCHES:
            yield from _v2_specs(getattr(node, branch, None) or [], line, starting=False)


def _line_naming(lines: list[str], name: str, start: int) -> int | None:
    """The first line from `start` (1-based) that names `name` outside a comment: the parser keeps no line for
    the specs of a `when`."""
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    return next((number for number, text in enumerate(lines[start - 1:], start)
                 if pattern.search(text.split("#", 1)[0])), None)
