"""Run a policy's custom Colang flows on nemoguardrails' runtime, after the detectors.

Built once per policy version (importing nemoguardrails and building `LLMRails` costs about a second), then
reused for every check. Every detector is registered as an action (`detect_pii` in Colang 1.0,
`DetectPiiAction` in 2.x), the exchange is handed to flows as context variables (see `variables.py`), and a
flow's block or warn becomes a `custom` finding named after the flow.

* Colang 1.0: one `generate_async(options={"rails": [<rail type>], "log": ...})` per rail type with content,
  concurrently. The generation log says which flow stopped (block) and which executed `warn`/`block`.
* Colang 2.x: NeMo has no rail options or log there, so the bridge adds a `main` flow that matches one
  `GuardrailsCheck` event, sets the variables as globals and awaits each listed flow between
  `GuardrailsRailStarted`/`GuardrailsRailDone` events; a flow that aborts never sends its "done" (block).

NeMo turns failures into a polite assistant message; the bridge fails closed instead: an action error, a
missing "done" event or a timeout becomes a `detector_error` finding (the policy's `on_detector_error`).
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from guardrails.colang.bundle_actions import ACTIONS_DIR, action_files, load_actions
from guardrails.colang.catalog import BUILTIN_FLOWS, LIBRARY_FILES, RAIL_TYPES, action_names
from guardrails.colang.parse import (
    ActionCall,
    ColangSyntaxError,
    FlowCall,
    GlobalUse,
    action_calls,
    awaited_events,
    flow_calls,
    flow_line,
    flows_in,
    quiet_nemoguardrails,
    undeclared_globals,
)
from guardrails.colang.unset import UnsetRead, unset_reads
from guardrails.colang.variables import VARIABLE_NAMES, RailSegments, flow_variables
from guardrails.detector import Detector, ScanContext, Scope, SegmentDetector
from guardrails.exchange import TRUST_BY_KIND, Exchange, Segment, SegmentKind
from guardrails.findings import Action, Category, Finding, Severity, strictest
from guardrails.policy import NEMO_KEYS, POLICY_FILE, TESTS_DIR, Policy, PolicyError

if TYPE_CHECKING:
    from guardrails.engine import Engine

INTERNAL_ERROR = "I'm sorry, an internal error has occurred."
# Colang 1.0: NeMo answers a flow's call to an action nobody registered with this bot message, then stops.
_UNKNOWN_ACTION = re.compile(r"^Action '(.+)' not found\.$")
DISPATCH_FILE = "_guardrails_dispatch.co"
BLOCK_ACTIONS = ("block", "BlockAction")
RUN_DETECTOR_ACTIONS = ("run_detector", "RunDetectorAction")
WARN_ACTIONS = ("warn", "WarnAction")
_KIND_BY_VARIABLE = {"user_message": SegmentKind.USER, "bot_message": SegmentKind.ASSISTANT,
                     "bot_thinking": SegmentKind.REASONING, "tool_message": SegmentKind.TOOL_RESULT}
_LITERAL_NAME = re.compile(r"""(["']?)([A-Za-z_][\w.-]*)\1""")
_FLOW_HEADER = re.compile(r"^(?:define (?:sub)?flow|flow) (.+?)\s*$", re.MULTILINE)


@dataclass(slots=True)
class _Outcome:
    flow: str
    rail_type: str
    action: Action
    reason: str
    findings: list[dict[str, Any]] = field(default_factory=list)  # detector findings the flow looked at
    error: str | None = None  # the runtime error that aborted the flow


@dataclass(slots=True)
class _Check:
    """One check's state, visible to the actions through a context variable."""

    exchange: Exchange
    findings: list[Finding]
    signals: dict[str, Any]
    variables: dict[str, Any] = field(default_factory=dict)
    recorded: list[tuple[str | None, Action, str]] = field(default_factory=list)  # (flow, action, reason)
    looked_at: dict[str | None, list[dict[str, Any]]] = field(default_factory=dict)  # flow -> findings
    errors: list[str] = field(default_factory=list)


_CURRENT: ContextVar[_Check | None] = ContextVar("guardrails_colang_check", default=None)


class ColangRails:
    def __init__(self, engine: Engine) -> None:
        policy = engine.policy
        self.engine = engine
        self.policy = policy
        self.version = policy.rails.colang_version
        self.custom = policy.rails.custom
        self.timeout_s = policy.rails.timeout_s
        self._extra: dict[str, tuple[Detector, Scope]] = {}
        self._detector_actions: set[str] = set()
        quiet_nemoguardrails()
        from nemoguardrails import LLMRails, RailsConfig

        # Imported here, not by NeMo, which would go on without a file that fails to import (see bundle_actions).
        try:
            bundle_actions = load_actions(action_files(policy.path)) if policy.path is not None else {}
        except PolicyError as exc:
            raise _with_import_hint(exc, policy.path) from exc.__cause__
        # NeMo reads a directory; the staged copy holds only what NeMo should see, and lives as long as we do.
        self._staging = tempfile.TemporaryDirectory(prefix=f"guardrails-{policy.id}-")
        try:
            _stage(policy, Path(self._staging.name))
            self.rails = LLMRails(RailsConfig.from_path(self._staging.name), verbose=False)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError(f"NeMo Guardrails rejected the policy: {type(exc).__name__}: {exc}",
                              policy.path) from exc
        self._register_bundle_actions(bundle_actions)
        self._register_actions()
        self._watch_action_failures()
        # Read with the files this version is built from (not at check time, after an edit): see `_unset_hints`.
        self._unset = _unset_reads(policy)

    # --- per check --------------------------------------------------------------------------------
    async def run(self, exchange: Exchange, findings: list[Finding],
                  signals: dict[str, Any]) -> list[Finding]:
        rails = RailSegments.of(exchange)
        pending = [(t, self.custom[t]) for t in RAIL_TYPES if self.custom.get(t) and rails.has(t)]
        if not pending:
            return []
        check = _Check(exchange, findings, signals)
        check.variables = flow_variables(exchange, rails, findings, signals)
        token = _CURRENT.set(check)
        try:
            runner = self._run_v1 if self.version == "1.0" else self._run_v2
            outcomes = await asyncio.wait_for(runner(pending, check), self.timeout_s)
        except TimeoutError:
            check.errors.append(f"custom flows timed out after {self.timeout_s:g} s")
            outcomes = []
        except Exception as exc:
            failed = f"the Colang runtime failed: {type(exc).__name__}: {exc}"
            check.errors.append("; ".join([failed, *self._unset_hints(str(exc))]))
            outcomes = []
        finally:
            _CURRENT.reset(token)
        result = [self._finding(o, rails) for o in outcomes]
        result += [_error_finding(message) for message in dict.fromkeys(check.errors)]
        return result

    async def _run_v1(self, pending: list[tuple[str, tuple[str, ...]]], check: _Check) -> list[_Outcome]:
        per_rail = await asyncio.gather(*(self._v1_rail(rail_type, check) for rail_type, _ in pending))
        return [o for outcomes in per_rail for o in outcomes]

    async def _v1_rail(self, rail_type: str, check: _Check) -> list[_Outcome]:
        response = await self.rails.generate_async(
            messages=_v1_messages(rail_type, check.variables),
            options={"rails": [rail_type], "log": {"activated_rails": True}},
        )
        content = (response.response[0].get("content") or "") if response.response else ""
        unknown = _UNKNOWN_ACTION.match(content)
        if unknown:
            check.errors.append(self._unknown_action_error(f"a flow on the {rail_type} rails", unknown.group(1)))
        elif content == INTERNAL_ERROR and not check.errors:
            check.errors.append(f"the Colang runtime reported an internal error on the {rail_type} rails")
        # After a failed or unknown action NeMo stops the rail itself: that stop is no verdict of the flow.
        runtime_stopped = bool(unknown) or content == INTERNAL_ERROR
        outcomes = []
        for rail in response.log.activated_rails if response.log else ():
            if rail.name not in self.custom[rail_type]:
                continue
            action, reason, looked_at = None, "", []
            for executed in rail.executed_actions:
                name, value = executed.action_name, executed.return_value
                if name in BLOCK_ACTIONS:
                    action, reason = Action.BLOCK, str(value or "")
                elif name in WARN_ACTIONS and action is None:
                    action, reason = Action.WARN, str(value or "")
                elif name in self._detector_actions and isinstance(value, dict):
                    looked_at.extend(value.get("findings") or ())
            if rail.stop and not runtime_stopped:
                action, reason = Action.BLOCK, reason or content
            if action is not None:
                outcomes.append(_Outcome(rail.name, rail_type, action, reason, looked_at))
        return outcomes

    async def _run_v2(self, pending: list[tuple[str, tuple[str, ...]]], check: _Check) -> list[_Outcome]:
        rail_type_of = {flow: rail_type for rail_type, flows in pending for flow in flows}
        event = {"type": "GuardrailsCheck", "rails": list(rail_type_of), **check.variables}
        response = await self.rails.generate_async(messages=[{"role": "event", "event": event}])
        events = response.get("events", []) if isinstance(response, dict) else []
        started = [e.get("rail") for e in events if e.get("type") == "GuardrailsRailStarted"]
        done = {e.get("rail") for e in events if e.get("type") == "GuardrailsRailDone"}
        unfinished = [flow for flow in started if flow not in done]
        # NeMo hands an action nobody registered to the caller as a tool call and waits for it forever:
        # the flow that called it did not abort, it is stuck.
        unknown = [(c.get("function") or {}).get("name") for c in
                   (response.get("tool_calls") or [] if isinstance(response, dict) else [])]
        for name in unknown:
            flow = f"flow {unfinished[-1]!r}" if unfinished else "a flow"
            check.errors.append(self._unknown_action_error(flow, str(name)))
        aborted = [] if unknown else unfinished
        if not unfinished and not any(e.get("type") == "GuardrailsCheckDone" for e in events):
            check.errors.append("the Colang runtime did not finish the check")
        verdicts: dict[str, tuple[Action, str]] = {}
        for flow, action, reason in check.recorded:
            if flow in rail_type_of and (flow not in verdicts or action is Action.BLOCK):
                verdicts[flow] = (action, reason)
        errors = {flow: error for flow, error in _runtime_errors(events).items() if flow in aborted}
        for flow in aborted:
            reason = self._abort_reason(flow, errors[flow]) if flow in errors else verdicts.get(flow, (None, ""))[1]
            verdicts[flow] = (Action.BLOCK, reason or "the flow aborted")
        return [_Outcome(flow, rail_type_of[flow], action, reason, check.looked_at.get(flow, []), errors.get(flow))
                for flow, (action, reason) in verdicts.items()]

    def _unknown_action_error(self, caller: str, name: str) -> str:
        """`flow 'x' called unknown action 'y'; did you mean 'z'?`: the name and the closest known one, nothing
        of NeMo's own message."""
        try:
            hint = self._did_you_mean(name).strip()
        except (OSError, ColangSyntaxError):  # the .co files edited since this version was built
            hint = ""
        return f"{caller} called unknown action {name!r}" + (f"; {hint}" if hint else "")

    def _abort_reason(self, flow: str, error: str) -> str:
        """The runtime's error, and its usual causes, which `guardrails policy validate` warns about before the
        policy runs: a variable nothing sets (`global $bot_mesage`), and the check variables the flow (or the
        error) names without `global`."""
        hints = [*self._unset_hints(error, flow),
                 *(f"${use.name} is not declared `global ${use.name}` in flow {use.flow!r} "
                   f"({use.file.name}:{use.line}), so there it is the flow's own variable, empty, not the check's"
                   for use in self._undeclared if use.flow == flow or f"${use.name}" in error)]
        return f"the flow aborted on a Colang error: {error}" + "".join(f"; {hint}" for hint in hints)

    def _unset_hints(self, error: str, flow: str | None = None) -> list[str]:
        """The variables nothing sets that the runtime's error names (else those `flow` reads), each with the
        line `unset_warnings` reports it at: NeMo's error says only that None does not support the expression."""
        named = [read for read in self._unset if re.search(rf"\${re.escape(read.name)}\b", error)]
        named.sort(key=lambda read: read.flow != flow)  # a name read in several flows: the aborting flow's line
        hints: dict[str, str] = {}
        for read in named or [read for read in self._unset if read.flow == flow]:
            guess = f" (did you mean ${read.suggestion}?)" if read.suggestion else ""
            hints.setdefault(read.name, f"${read.name} is never set{guess}, so it is None: `guardrails policy "
                                        f"validate` warns about it at {read.file.name}:{read.line}")
        return list(hints.values())

    def _finding(self, outcome: _Outcome, rails: RailSegments) -> Finding:
        pointer, start, end = "", None, None
        located = next((f["location"] for f in outcome.findings if f["location"].get("pointer")), None)
        if located is not None:
            pointer, start, end = located["pointer"], located.get("start"), located.get("end")
        else:
            segment = rails.first(outcome.rail_type)
            if segment is not None:
                pointer = segment.locate(0, len(segment.text)).pointer
        verb = "blocked" if outcome.action is Action.BLOCK else "warned"
        return Finding(
            category=Category.CUSTOM,
            detector=outcome.flow,
            severity=Severity.HIGH if outcome.action is Action.BLOCK else Severity.MEDIUM,
            message=f"flow {outcome.flow!r} {verb}" + (f": {outcome.reason}" if outcome.reason else ""),
            pointer=pointer,
            start=start,
            end=end,
            evidence={"flow": outcome.flow, "rail": outcome.rail_type, "reason": outcome.reason,
                      "colang_version": self.version, "detector_findings": len(outcome.findings),
                      **({"colang_error": outcome.error} if outcome.error else {})},
            action=outcome.action,
        )

    # --- actions ------------------------------------------------------------------------------------
    def call_problems(self) -> list[PolicyError]:
        """Calls in the policy's flows that would fail at check time, in file and line order: an action nothing
        registered (not a detector action, not NeMo's, not in the bundle's actions.py), a `run_detector` of a
        detector that is not installed, or a flow the runtime does not have (`do check secrts`). For
        `guardrails policy validate`; the check path reports them as detector errors or aborted flows."""
        files = list(self.policy.rails.colang_files)
        found = [*self._action_problems(files), *self._flow_problems(files)]
        order = {str(file): index for index, file in enumerate(files)}
        return sorted(found, key=lambda problem: (order.get(problem.file or "", len(order)), problem.line or 0))

    def _action_problems(self, files: list[Path]) -> list[PolicyError]:
        problems = []
        for call in action_calls(files, self.version):
            message = self._unknown_detector(call) if self._is_registered(call.name) else self._unknown_action(call)
            if message:
                problems.append(PolicyError(f"flow {call.flow!r}: {message}", call.file, call.line))
        if self.version != "1.0":
            problems += [PolicyError(f"flow {call.flow!r}: {self._awaited_event(call)}", call.file, call.line)
                         for call in awaited_events(files)]
        return problems

    def _awaited_event(self, call: ActionCall) -> str:
        hint = self._did_you_mean(call.name).rstrip() or "check its spelling against the bundle's actions.py"
        return (f"calls {call.name!r}, which is neither an action (an action's name ends in `Action`) nor a flow, "
                f"so Colang reads it as an event, which cannot be awaited or started: at check time the runtime "
                f"fails and no custom flow of the policy runs; {hint}")

    def _flow_problems(self, files: list[Path]) -> list[PolicyError]:
        defined = self.rails.runtime.flow_configs  # the bundle's, the built-in rails, NeMo's library or imports
        return [PolicyError(f"flow {call.flow!r}: {self._unknown_flow(call)}", call.file, call.line)
                for call in flow_calls(files, self.version) if call.name not in defined]

    def _unknown_flow(self, call: FlowCall) -> str:
        message = f"calls unknown flow {call.name!r}; "
        module = _nemo_library_flows().get(call.name) if self.version != "1.0" else None
        if module is not None:  # 2.x loads NeMo's library flows only when imported
            return f"{message}NeMo's library defines it in `{module}`: add `import {module}` to a .co file"
        where = ("a flow of NeMo's library" if self.version == "1.0" else "a library the bundle imports")
        return (f"{message}{self._did_you_mean_flow(call.name)}not a built-in rail (guardrails/colang/library), "
                f"{where}, nor a flow defined in the bundle's .co files")

    def _did_you_mean_flow(self, name: str) -> str:
        """The closest flow, else the closest action (`do detect secret` for `execute detect_secret`)."""
        flows = [flow for flow in self.rails.runtime.flow_configs if not flow.startswith("_")]
        flow = difflib.get_close_matches(name, flows, n=1, cutoff=0.8)
        if flow:
            return f"did you mean {flow[0]!r}? "
        as_action = name.replace(" ", "_") if self.version == "1.0" else _camel(name.replace(" ", "_"))
        action = difflib.get_close_matches(as_action, self._action_names(), n=1, cutoff=0.8)
        if not action:
            return ""
        call = f"execute {action[0]}()" if self.version == "1.0" else f"await {action[0]}()"
        return f"did you mean the action {action[0]!r} (`{call}`)? "

    def global_warnings(self) -> list[PolicyError]:
        """Colang 2.x: each check variable a flow uses before declaring it `global` (`$bot_message` read or
        assigned as the flow's own variable). Warnings for `guardrails policy validate`: reading it aborts
        the flow, which the check reports as a block; assigning it changes nothing the check sees."""
        return [PolicyError(_global_warning(use), use.file, use.line) for use in self._undeclared]

    @functools.cached_property
    def _undeclared(self) -> list[GlobalUse]:
        files = list(self.policy.rails.colang_files)
        return undeclared_globals(files, VARIABLE_NAMES) if self.version != "1.0" and files else []

    def _is_registered(self, name: str) -> bool:
        # The runtime's own lookup (it maps `FooBarAction` to `foo_bar`), plus 2.x's instant actions (bot says).
        return self.rails.runtime.action_dispatcher.has_registered(name) or (
            self.version != "1.0" and name in self._instant_actions())

    def _instant_actions(self) -> list[str]:
        return list(self.rails.config.rails.actions.instant_actions or ("UtteranceBotAction",))

    def _unknown_action(self, call: ActionCall) -> str:
        pattern = "detect_<detector>" if self.version == "1.0" else "Detect<Detector>Action"
        return (f"calls unknown action {call.name!r}; {self._did_you_mean(call.name)}not a detector action "
                f"({pattern}), a built-in action, nor an action defined in the bundle's actions.py")

    def _did_you_mean(self, name: str) -> str:
        """The closest action, else the closest flow (`execute check_secrets` for the flow `check secrets`)."""
        action = difflib.get_close_matches(name, self._action_names(), n=1, cutoff=0.8)
        if action:
            return f"did you mean {action[0]!r}? "
        flows = [*BUILTIN_FLOWS, *flows_in(list(self.policy.rails.colang_files), self.version)]
        flow = difflib.get_close_matches(_as_words(name), flows, n=1, cutoff=0.8)
        verb = "do" if self.version == "1.0" else "await"
        return f"did you mean the flow {flow[0]!r} (`{verb} {flow[0]}`)? " if flow else ""

    def _action_names(self) -> list[str]:
        """The names a flow may call an action by."""
        registered = list(self.rails.runtime.action_dispatcher.registered_actions)
        if self.version != "1.0":  # 2.x calls `refund_over_limit` as `RefundOverLimitAction`
            registered += [*self._instant_actions(), *(_camel(n) for n in registered if not n.endswith("Action"))]
        return registered

    def _unknown_detector(self, call: ActionCall) -> str | None:
        detector = _literal_name(call.arguments.get("detector", "")) if call.name in RUN_DETECTOR_ACTIONS else None
        if detector is None or detector in self.engine.registry:
            return None
        return f"{call.name} names detector {detector!r}, which is not installed; known: {self.engine.registry.names()}"

    def _register_bundle_actions(self, actions: dict[str, Any]) -> None:
        """The bundle's actions, with the precedence NeMo gives them when it loads them: over its library's
        actions, under the runtime's own (which it registers after a config's)."""
        dispatcher = self.rails.runtime.action_dispatcher
        own = {name for name, action in dispatcher.registered_actions.items()
               if getattr(action, "__self__", None) is self.rails.runtime}
        for name, action in actions.items():
            if name not in own:
                self.rails.register_action(action, name=name)

    def _register_actions(self) -> None:
        for name in self.engine.registry.names():
            action = self._detector_action(name)
            for action_name in action_names(name):
                self.rails.register_action(action, name=action_name)
                self._detector_actions.add(action_name)

        async def run_detector(detector: str, text: str | None = None, kind: str | None = None,
                               context: dict[str, Any] | None = None) -> dict[str, Any]:
            return await self._detector_action(detector)(text=text, kind=kind, context=context)

        for action_name in RUN_DETECTOR_ACTIONS:
            self.rails.register_action(run_detector, name=action_name)
            self._detector_actions.add(action_name)
        for names, verdict in ((BLOCK_ACTIONS, Action.BLOCK), (WARN_ACTIONS, Action.WARN)):
            for action_name in names:
                self.rails.register_action(_verdict_action(verdict), name=action_name)

    def _watch_action_failures(self) -> None:
        """NeMo logs an action that raised and hands the flow None (2.x goes on with it: fail open); record
        the failure on the check instead, so it becomes a detector_error."""
        dispatcher = self.rails.runtime.action_dispatcher
        execute = dispatcher.execute_action

        async def execute_action(action_name: str, params: dict[str, Any]) -> Any:
            result = await execute(action_name, params)
            check = _CURRENT.get()
            if check is not None and isinstance(result, tuple) and result[-1] == "failed":
                check.errors.append(f"action {action_name!r} failed (its error is in the service log)")
            return result

        dispatcher.execute_action = execute_action

    def _detector_action(self, name: str) -> Any:
        async def detector_action(text: str | None = None, kind: str | None = None,
                                  context: dict[str, Any] | None = None) -> dict[str, Any]:
            check = _CURRENT.get()
            if check is None:
                return _action_result([], "no check in progress")
            try:
                found = await self._detect(check, name, text, kind, context or {})
            except Exception as exc:  # NeMo would swallow it; record it so the check fails closed
                message = f"detector action {name!r} failed: {type(exc).__name__}: {exc}"
                check.errors.append(message)
                return _action_result([], message)
            result = _action_result(found)
            check.looked_at.setdefault((context or {}).get("guardrails_rail"), []).extend(result["findings"])
            return result

        return detector_action

    async def _detect(self, check: _Check, name: str, text: str | None, kind: str | None,
                      context: dict[str, Any]) -> list[Finding]:
        slot = next((s for s in self.engine.slots if s.detector.name == name), None)
        if slot is not None:
            detector, scope = slot.detector, slot.scope
        else:
            detector, scope = self._extra_detector(name)
        if text is not None and isinstance(detector, SegmentDetector):
            segment = _segment_for(check, str(text), kind, context)
            found = [detector.finding(segment, hit) for hit in detector.analyze(segment)]
        elif slot is not None:  # the engine already ran it on this exchange
            return [f for f in check.findings if f.detector == name]
        else:
            segments = [s for s in check.exchange.segments if scope.matches(s)]
            ctx = ScanContext(segments=segments, signals=check.signals, policy_id=self.policy.id)
            found = await detector.scan(check.exchange, ctx)
        for f in found:
            f.action = f.action or self.engine._action_for(f)
        return found

    def _extra_detector(self, name: str) -> tuple[Detector, Scope]:
        """A detector the policy does not enable, built on first use with the policy's settings (if any)."""
        built = self._extra.get(name)
        if built is None:
            cls = self.engine.registry.get(name)
            config = self.policy.detector(name)
            detector = cls(config.settings if config else {}, self.engine.services)
            built = self._extra[name] = (detector, (config.scope if config else None) or cls.default_scope)
        return built


@functools.cache
def _nemo_library_flows() -> dict[str, str]:
    """Flow name -> the module of NeMo's Colang 2.x library that defines it (`bot say` -> `core`)."""
    import nemoguardrails

    library = Path(nemoguardrails.__file__).resolve().parent / "colang" / "v2_x" / "library"
    try:
        flows = flows_in(sorted(library.glob("*.co")), "2.x")
    except ColangSyntaxError:  # another NeMo release: the hint is a nicety, never a reason to fail
        return {}
    return {flow: file.stem for flow, file in flows.items()}


def _unset_reads(policy: Policy) -> list[UnsetRead]:
    files = list(policy.rails.colang_files)
    try:
        return unset_reads(files, policy.rails.colang_version, VARIABLE_NAMES) if files else []
    except (OSError, ValueError):  # a hint for abort reasons, never a reason to refuse the policy
        return []


def _runtime_errors(events: list[dict[str, Any]]) -> dict[str, str]:
    """Rail flow -> the first Colang error raised while it ran (the dispatcher's `GuardrailsRailError`)."""
    errors: dict[str, str] = {}
    for event in events:
        if event.get("type") == "GuardrailsRailError" and isinstance(event.get("rail"), str):
            errors.setdefault(event["rail"], f"{event.get('error_type')}: {event.get('error')}")
    return errors


def _global_warning(use: GlobalUse) -> str:
    verb, effect = (("assigns", "what it assigns stays in the flow, unseen by the check and the flows it calls")
                    if use.assigns else ("reads", f"it is empty there: an expression on it (`\"x\" in ${use.name}`) "
                                                  "aborts the flow (a block), and an action given it gets None, "
                                                  "so the flow judges nothing (an allow)"))
    return (f"flow {use.flow!r} {verb} ${use.name} without declaring `global ${use.name}` first: in Colang 2.x "
            f"it is then the flow's own variable, not the check's, so {effect}")


def _camel(action_name: str) -> str:
    """A 1.0-style action name as Colang 2.x calls it: `refund_over_limit` -> `RefundOverLimitAction`."""
    return "".join(part.capitalize() for part in action_name.split("_")) + "Action"


def _as_words(action_name: str) -> str:
    """`check_secrets` or `CheckSecretsAction` -> `check secrets`, to compare with flow names."""
    name = action_name.removesuffix("Action")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").lower()


def _literal_name(source: str) -> str | None:
    """The name a literal argument holds (`"pii"` in 2.x, `pii` once 1.0 dropped the quotes); None for an
    expression (`$name`), which only the check can resolve."""
    found = _LITERAL_NAME.fullmatch(source.strip())
    return found.group(2) if found else None


def _verdict_action(verdict: Action) -> Any:
    async def verdict_action(reason: str = "", context: dict[str, Any] | None = None) -> str:
        check = _CURRENT.get()
        if check is not None:
            check.recorded.append(((context or {}).get("guardrails_rail"), verdict, str(reason or "")))
        return str(reason or verdict.value)

    return verdict_action


def _action_result(found: list[Finding], error: str | None = None) -> dict[str, Any]:
    scores = [f.score for f in found if f.score is not None]
    result: dict[str, Any] = {
        "verdict": strictest([f.action for f in found if f.action is not None]).value,
        "count": len(found),
        "score": max(scores) if scores else None,
        "message": found[0].message if found else "",
        "categories": sorted({f.category.value for f in found}),
        "findings": [f.to_dict() for f in found],
    }
    if error:
        result["error"] = error
    return result


def _segment_for(check: _Check, text: str, kind: str | None, context: dict[str, Any]) -> Segment:
    """The exchange segment holding exactly `text` (so findings point into the body), else a detached one."""
    by_variable = (k for var, k in _KIND_BY_VARIABLE.items() if check.variables.get(var) == text)
    wanted = SegmentKind(kind) if kind else next(by_variable, SegmentKind.ASSISTANT)
    same = [s for s in check.exchange.segments if s.text == text]
    match = next((s for s in same if s.kind is wanted), same[0] if same else None)
    if match is not None:
        return match
    return Segment(index=-1, kind=wanted, role=wanted.value, trust=TRUST_BY_KIND[wanted], turn=0,
                   phase=check.exchange.phase, text=text, pointer="")


def _error_finding(message: str) -> Finding:
    return Finding(category=Category.DETECTOR_ERROR, detector="colang", severity=Severity.MEDIUM,
                   message=message, pointer="", evidence={"error_type": "colang"})


def _v1_messages(rail_type: str, variables: dict[str, Any]) -> list[dict[str, Any]]:
    context = {k: v for k, v in variables.items() if k not in ("user_message", "bot_message")}
    messages: list[dict[str, Any]] = [{"role": "context", "content": context},
                                      {"role": "user", "content": variables["user_message"]}]
    if rail_type == "output":
        messages.append({"role": "assistant", "content": variables["bot_message"]})
    elif rail_type == "tool_output":
        messages.append({"role": "assistant", "content": "", "tool_calls": variables["tool_calls"]})
    elif rail_type == "tool_input":
        results = variables["tool_results"]
        ids = [r["tool_call_id"] or f"call_{i}" for i, r in enumerate(results)]
        messages.append({"role": "assistant", "content": "", "tool_calls": [
            {"id": i, "type": "function", "function": {"name": r["name"] or "tool", "arguments": "{}"}}
            for i, r in zip(ids, results, strict=True)]})
        messages += [{"role": "tool", "content": r["content"], "tool_call_id": i, "name": r["name"] or "tool"}
                     for i, r in zip(ids, results, strict=True)]
    return messages


# --- staging: what NeMo sees of a policy --------------------------------------------------------------


def _stage(policy: Policy, target: Path) -> None:
    """Copy the policy's Colang and other files (not its actions: see `_not_for_nemo`); add a NeMo-only
    config.yml, the library, the dispatcher."""
    if policy.path is not None:
        shutil.copytree(policy.path, target, dirs_exist_ok=True, ignore=_not_for_nemo(policy.path))
        folder = target / ACTIONS_DIR
        if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
            shutil.rmtree(folder)  # NeMo would log an error for an actions folder with no actions
    rails = policy.rails
    config = {k: v for k, v in policy.config.items() if k in NEMO_KEYS}
    config.setdefault("models", [])
    config["colang_version"] = rails.colang_version
    if rails.colang_version == "1.0":
        sections = dict(config.get("rails") or {})
        for rail_type in RAIL_TYPES:
            flows = list(rails.custom.get(rail_type, ()))
            sections[rail_type] = {**(sections.get(rail_type) or {}), "flows": flows}
        config["rails"] = sections
    else:
        config.pop("rails", None)  # NeMo 2.x would generate deprecated rail flows from it
    (target / POLICY_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    own_flows = flows_in(list(rails.colang_files), rails.colang_version) if rails.colang_files else {}
    (target / f"_guardrails_library{LIBRARY_FILES[rails.colang_version].suffix}").write_text(
        _library_without(rails.colang_version, set(own_flows)), encoding="utf-8")
    if rails.colang_version != "1.0":
        if "main" in own_flows:
            raise PolicyError("a Colang 2.x policy must not define `flow main`: the service provides it (it runs "
                              "the flows listed in rails.*.flows); rename this flow and list it there",
                              own_flows["main"], flow_line(own_flows["main"], "main"))
        flows = list(dict.fromkeys(f for t in RAIL_TYPES for f in rails.custom.get(t, ())))
        (target / DISPATCH_FILE).write_text(_dispatcher(flows, VARIABLE_NAMES), encoding="utf-8")


def _not_for_nemo(bundle: Path) -> Callable[[str, list[str]], set[str]]:
    """What the staged copy leaves out: our files (config, tests) and the Python actions, imported by us. Of the
    `actions/` folder only Colang files are staged: NeMo searches a staged folder for actions, and one with none
    (an `__init__.py`, a helper, a data file) made it log an error with the staging path and `NoneType: None`."""
    ours = shutil.ignore_patterns(TESTS_DIR, "__pycache__", "*.yml", "*.yaml")
    actions = set(action_files(bundle))
    folder = bundle / ACTIONS_DIR

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        in_actions = here == folder or folder in here.parents
        return set(ours(directory, names)) | {
            name for name in names if Path(directory, name) in actions
            or (in_actions and not name.endswith(".co") and not (here / name).is_dir())}

    return ignore


def _with_import_hint(error: PolicyError, bundle: Path | None) -> PolicyError:
    """An actions file that imports another file of its bundle (`import helpers`) does not import: each is imported
    on its own, with nothing of the bundle on the import path (bundles are not packages, and two bundles' `helpers`
    would be one module). Said so, since Python's "No module named 'helpers'" reads like a missing package."""
    cause = error.__cause__
    if error.line is None and error.file is not None and cause is not None:
        # Python names the file by its absolute path in tracebacks: a bundle given by a relative path lost the line.
        here = Path(error.file).resolve()
        line = next((frame.lineno for frame in reversed(traceback.extract_tb(cause.__traceback__))
                     if Path(frame.filename) == here), None)
        error = PolicyError(error.message, error.file, line)
        error.__cause__ = cause
    if bundle is None or not isinstance(cause, ImportError):
        return error
    name = (cause.name or "").split(".")[0]
    # `from . import x` in actions/deploy.py (imported as the module `deploy.py`) looks for a package `deploy`.
    relative = "relative import" in str(cause) or (error.file is not None and name == Path(error.file).stem)
    siblings = [path for folder in (bundle, bundle / ACTIONS_DIR) for path in (folder / f"{name}.py", folder / name)
                if name and not relative and path.exists()]
    if not siblings and not relative:
        return error
    what = f"{siblings[0].relative_to(bundle)} is a file of the bundle, but" if siblings else "a relative import:"
    return PolicyError(f"{error.message} ({what} an actions file cannot import the bundle's other files: each is "
                       "imported on its own, without the bundle on the import path; keep the code it needs in it, "
                       "or install shared code as a package)", error.file, error.line)


def _library_without(version: str, overridden: set[str]) -> str:
    """The built-in library, minus the flows the policy redefines (its own definition wins)."""
    text = LIBRARY_FILES[version].read_text(encoding="utf-8")
    blocks = text.split("\n\n")
    kept = [b for b in blocks if not any(m.group(1) in overridden for m in _FLOW_HEADER.finditer(b))]
    return "\n\n".join(kept)


def _dispatcher(flows: list[str], variables: tuple[str, ...]) -> str:
    lines = ["# Generated by the guardrails service: runs the policy's rails for one GuardrailsCheck event.",
             "flow main", "  activate _guardrails report errors", "  activate _guardrails serve checks", "",
             # A flow that fails aborts with no word of why: the runtime's error goes with the rail's events.
             "flow _guardrails report errors", "  global $guardrails_rail", "  match ColangError() as $error",
             "  send GuardrailsRailError(rail=$guardrails_rail, error_type=$error.type, error=$error.error)", "",
             "flow _guardrails serve checks", "  match GuardrailsCheck() as $req"]
    for name in variables:
        lines += [f"  global ${name}", f'  ${name} = $req.arguments["{name}"]']
    lines.append("  global $guardrails_rail")
    for flow in flows:
        lines += [f'  if "{flow}" in $req.arguments["rails"]',
                  f'    $guardrails_rail = "{flow}"',
                  f'    send GuardrailsRailStarted(rail="{flow}")',
                  f"    await {flow}",
                  f'    send GuardrailsRailDone(rail="{flow}")']
    lines.append("  send GuardrailsCheckDone()")
    return "\n".join(lines) + "\n"
